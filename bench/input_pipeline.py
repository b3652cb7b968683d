"""Throughput of the input pipeline alone (no model): tokens/s, one JSON line.

  python bench/input_pipeline.py --preset=tiny                       # seq 512, batch 8, vocab 512
  python bench/input_pipeline.py --preset=100m --num_workers=2       # seq 1024, batch 4, vocab 32768

Shapes default to those of `bench/forward_backward.py --preset=...`, so the figure compares with
that benchmark's tokens/s (the train step's consumption). Without --corpus/--tokenizer, the CPython
stdlib corpus (data/make_corpus.py) and a SentencePiece model with the preset's vocabulary size
(data/train_tokenizer.py) are built once under --cache_dir. The pipeline runs as phase 1 of
pretraining does: FIM rate 0.5 in SPM order, bottom 10% of scores dropped. `tokens_per_s` counts
every position of the [B, T] rows delivered (what the train step consumes); `loss_tokens_per_s`
counts positions with weight 1 (padding excluded).
"""

import json
import os
import pathlib
import time

from absl import app, flags

from seedcoder_jax import perf, tokenizer
from seedcoder_jax.input import InputConfig, corpus, make_iterator, source_files

PRESETS = {  # preset -> (seq_len, batch_size, vocab_size), as bench/forward_backward.py and model presets
    "tiny": (512, 8, 512),
    "100m": (1024, 4, 32768),
}

_PRESET = flags.DEFINE_enum("preset", "tiny", sorted(PRESETS), "shapes and vocabulary to match")
_SEQ = flags.DEFINE_integer("seq_len", None, "tokens per row (default: the preset's)")
_BATCH = flags.DEFINE_integer("batch_size", None, "rows per batch (default: the preset's)")
_WORKERS = flags.DEFINE_integer("num_workers", 0, "Grain worker processes (0: in-process)")
_THREADS = flags.DEFINE_integer("read_threads", 2, "reader threads per process")
_CORPUS = flags.DEFINE_string("corpus", None, "corpus directory (default: stdlib corpus in cache)")
_TOKENIZER = flags.DEFINE_string("tokenizer", None, "tokenizer spec (default: spm trained in cache)")
_CACHE = flags.DEFINE_string("cache_dir", "/tmp/seedcoder_bench", "where default inputs are built")
_REPO = flags.DEFINE_bool("repo_level", False, "repository-level documents")
_FIM_LEVEL = flags.DEFINE_enum("fim_level", "context", ["context", "document"],
                               "FIM per row-sized window or per document (input/fim.py)")
_BATCHES = flags.DEFINE_integer("batches", 200, "timed batches")
_WARMUP = flags.DEFINE_integer("warmup", 10, "untimed batches first (worker start, caches)")


def _default_inputs(vocab_size: int) -> tuple[str, str]:
  cache = pathlib.Path(_CACHE.value)
  corpus_dir = cache / "stdlib_corpus"
  if not (corpus_dir / corpus.METADATA_FILE).exists():
    corpus.write_corpus(source_files.iter_source_records(source_files.default_source_dir()),
                        corpus_dir, overwrite=True,
                        metadata={"score": source_files.SCORE_DESCRIPTION, "score_kind": "heuristic"})
  model = cache / f"spm_{vocab_size}.model"
  if not model.exists():
    tokenizer.train_sentencepiece(source_files.sample_texts(corpus_dir, max_chars=20_000_000),
                                  model, vocab_size=vocab_size)
  return str(corpus_dir), f"spm:{model}"


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  seq_len, batch_size, vocab_size = PRESETS[_PRESET.value]
  seq_len, batch_size = _SEQ.value or seq_len, _BATCH.value or batch_size
  corpus_dir, tok_spec = _CORPUS.value, _TOKENIZER.value
  if not (corpus_dir and tok_spec):
    default_corpus, default_tok = _default_inputs(vocab_size)
    corpus_dir, tok_spec = corpus_dir or default_corpus, tok_spec or default_tok
  cfg = InputConfig(corpora=(corpus_dir,), tokenizer=tok_spec, seq_len=seq_len,
                    global_batch_size=batch_size, score_drop_fraction=0.1, fim_rate=0.5,
                    fim_spm_fraction=1.0, fim_level=_FIM_LEVEL.value, repo_level=_REPO.value, num_workers=_WORKERS.value,
                    read_threads=_THREADS.value)
  it = make_iterator(cfg)
  for _ in range(_WARMUP.value):
    next(it)
  loss_tokens = 0.0
  start = time.perf_counter()
  for _ in range(_BATCHES.value):
    loss_tokens += float(next(it)["weights"].sum())
  seconds = time.perf_counter() - start
  tokens = _BATCHES.value * batch_size * seq_len
  print(json.dumps({
      "bench": "input_pipeline",
      "preset": _PRESET.value,
      "tokens_per_s": round(tokens / seconds, 1),
      "loss_tokens_per_s": round(loss_tokens / seconds, 1),
      "padding_fraction": round(1 - loss_tokens / tokens, 4),
      "seq_len": seq_len, "batch_size": batch_size, "num_workers": cfg.num_workers,
      "read_threads": cfg.read_threads, "repo_level": _REPO.value, "fim_rate": cfg.fim_rate, "fim_level": cfg.fim_level,
      "tokenizer": tok_spec, "vocab_size": tokenizer.load(tok_spec).vocab_size,
      "batches": _BATCHES.value, "seconds": round(seconds, 3),
      "machine": {**perf.machine(), "cpu_count": os.cpu_count()},
  }))


if __name__ == "__main__":
  app.run(main)
