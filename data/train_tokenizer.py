"""Trains the project's SentencePiece BPE tokenizer for code.

  python data/train_tokenizer.py --input=/tmp/corpus --vocab_size=32768 --output=/tmp/tok/spm.model
  python data/train_tokenizer.py --vocab_size=512 --output=/tmp/tok/tiny.model   # from the stdlib

--input is a corpus directory (data/make_corpus.py, data/curate.py) or any directory of source
files. A seeded random sample of its documents (up to --max_chars characters) trains a BPE model
with byte fallback, split digits, whitespace-preserving pieces and the reserved special tokens of
seedcoder_jax.tokenizer.SPECIAL_TOKENS at ids 0..17. Use the result as `spm:OUTPUT` wherever a
tokenizer spec is asked for. Prints one JSON line: output, vocab_size, chars, seconds.
"""

import json
import time

from absl import app, flags

from seedcoder_jax import tokenizer
from seedcoder_jax.input import source_files

_INPUT = flags.DEFINE_string("input", None, "corpus directory or directory of source files "
                             "(default: this interpreter's stdlib)")
_OUTPUT = flags.DEFINE_string("output", None, "path of the .model file to write", required=True)
_VOCAB = flags.DEFINE_integer("vocab_size", 32768, "vocabulary size (>= 275: specials + 256 bytes)")
_MAX_CHARS = flags.DEFINE_integer("max_chars", 50_000_000, "characters sampled for training")
_COVERAGE = flags.DEFINE_float("character_coverage", 0.9995,
                               "share of characters given their own piece; rarer ones use bytes")
_SEED = flags.DEFINE_integer("seed", 0, "sampling seed")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  start = time.time()
  src = _INPUT.value or source_files.default_source_dir()
  chars = 0

  def texts():
    nonlocal chars
    for t in source_files.sample_texts(src, max_chars=_MAX_CHARS.value, seed=_SEED.value):
      chars += len(t)
      yield t

  tok = tokenizer.train_sentencepiece(texts(), _OUTPUT.value, vocab_size=_VOCAB.value,
                                      character_coverage=_COVERAGE.value)
  print(json.dumps({"output": _OUTPUT.value, "spec": tok.spec, "vocab_size": tok.vocab_size,
                    "chars": chars, "seconds": round(time.time() - start, 1)}))


if __name__ == "__main__":
  app.run(main)
