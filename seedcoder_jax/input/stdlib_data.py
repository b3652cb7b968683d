"""The tiny variants' data, built on first use: a corpus of this interpreter's standard library and
a SentencePiece tokenizer trained on it (the same as data/make_corpus.py and data/train_tokenizer.py
write), so `launch/train.py --config=configs/pretrain.py:tiny` works on a fresh clone.

A corpus counts as present once its corpus.json exists (written last); a tokenizer once its .model
file exists (written whole at the end of training). A run killed halfway simply builds again.
"""

from __future__ import annotations

import pathlib

from seedcoder_jax.input import corpus as corpus_lib
from seedcoder_jax.input import source_files


def corpus_missing(path: str | pathlib.Path) -> bool:
  return not (pathlib.Path(path) / corpus_lib.METADATA_FILE).exists()


def build_corpus(path: str | pathlib.Path) -> dict:
  """Writes the stdlib corpus to `path` (replacing a partial one); returns its metadata."""
  src = source_files.default_source_dir()
  print(f"[data] {path} is missing: writing a corpus of {src} there (once)", flush=True)
  meta = corpus_lib.write_corpus(
      source_files.iter_source_records(src), path, overwrite=True,
      metadata={"source_dir": str(src), "score": source_files.SCORE_DESCRIPTION,
                "score_kind": "heuristic"})
  return meta


def build_tokenizer(model_path: str | pathlib.Path, corpus: str | pathlib.Path, *, vocab_size: int,
                    max_chars: int, seed: int = 0):
  """Trains a `vocab_size` BPE model on up to `max_chars` characters of `corpus`."""
  from seedcoder_jax import tokenizer as tokenizer_lib  # pylint: disable=g-import-not-at-top
  print(f"[data] {model_path} is missing: training a {vocab_size}-piece tokenizer on {corpus} "
        f"(once)", flush=True)
  tok = tokenizer_lib.train_sentencepiece(
      source_files.sample_texts(corpus, max_chars=max_chars, seed=seed), model_path,
      vocab_size=vocab_size)
  return tok
