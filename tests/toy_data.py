"""A small real Grain pipeline for trainer tests: learnable token rows, checkpointable iterators.

Each row is an arithmetic progression modulo the vocabulary with a per-row start and stride, so a
model can learn to continue it (the loss visibly drops) and every row differs. The pipeline is a
grain.MapDataset: shuffled per epoch with a seed, sharded per process, batched, so its iterator
has get_state/set_state like the real input pipeline's.
"""

from __future__ import annotations

import time

import grain
import numpy as np

from seedcoder_jax.train.step import BATCH_KEYS


class MakeRow:
  """index -> one packed row dict (a small picklable transform, as Grain expects)."""

  def __init__(self, seq_len: int, vocab_size: int):
    self.seq_len = seq_len
    self.vocab_size = vocab_size

  def __call__(self, index: int) -> dict:
    rng = np.random.default_rng(index)
    start, stride = rng.integers(0, self.vocab_size), rng.integers(1, 8)
    tokens = (start + stride * np.arange(self.seq_len + 1)) % self.vocab_size
    ones = np.ones(self.seq_len, np.int32)
    return {"inputs": tokens[:-1].astype(np.int32), "targets": tokens[1:].astype(np.int32),
            "segment_ids": ones, "positions": np.arange(self.seq_len, dtype=np.int32),
            "weights": ones.astype(np.float32)}


def make_iterator(*, batch_size: int, seq_len: int, vocab_size: int, seed: int = 0,
                  process_index: int = 0, process_count: int = 1, num_rows: int = 4096,
                  nan_after: int | None = None, delay_s: float = 0.0):
  """Iterator over local batches (batch_size // process_count rows each).

  nan_after: rows of batches after that many batches get weights=NaN (to make a loss non-finite).
  delay_s: a slow input pipeline (seconds per batch), so a test can kill a run mid-way.
  """
  local = batch_size // process_count
  ds = (grain.MapDataset.range(num_rows).shuffle(seed=seed).repeat()
        [process_index::process_count].map(MakeRow(seq_len, vocab_size)).batch(local))
  if nan_after is not None:
    ds = ds.map_with_index(PoisonAfter(nan_after))
  if delay_s:
    ds = ds.map(Sleep(delay_s))
  return ds.to_iter_dataset().__iter__()


class Sleep:
  def __init__(self, seconds: float):
    self.seconds = seconds

  def __call__(self, batch: dict) -> dict:
    time.sleep(self.seconds)
    return batch


class PoisonAfter:
  def __init__(self, n: int):
    self.n = n

  def __call__(self, index: int, batch: dict) -> dict:
    if index >= self.n:
      batch = dict(batch, weights=np.full_like(batch["weights"], np.nan))
    return batch


def eval_batches(*, batch_size: int, seq_len: int, vocab_size: int, n: int = 2,
                 process_index: int = 0, process_count: int = 1) -> list[dict]:
  local = batch_size // process_count
  make = MakeRow(seq_len, vocab_size)
  out = []
  for b in range(n):
    rows = [make(10**6 + b * batch_size + process_index * local + i) for i in range(local)]
    out.append({k: np.stack([r[k] for r in rows]) for k in BATCH_KEYS})
  return out


def source(*, batch_size: int, seq_len: int, vocab_size: int, nan_after: int | None = None,
           delay_s: float = 0.0):
  """A trainer.DataSource over this toy pipeline (each process reads its own rows)."""
  from seedcoder_jax.train import trainer  # pylint: disable=g-import-not-at-top
  return trainer.DataSource(
      train=lambda pi, pc: make_iterator(batch_size=batch_size, seq_len=seq_len,
                                         vocab_size=vocab_size, process_index=pi, process_count=pc,
                                         nan_after=nan_after, delay_s=delay_s),
      eval=lambda pi, pc: eval_batches(batch_size=batch_size, seq_len=seq_len,
                                       vocab_size=vocab_size, process_index=pi, process_count=pc))
