"""Packing tokenized documents into fixed-length rows of the trainer's batch format.

A document of n token ids (BOS ... EOS) gives n-1 (input, target) pairs: targets are the next
token within the same document, so no loss ever crosses a document boundary. Documents longer than
a row are cut into chunks of at most `seq_len` pairs, each its own segment with positions from 0
(every pair is kept; the model sees a chunk without the text before it). Chunks are then packed
first-fit into rows by Grain's FirstFitPackIterDataset, which numbers segments from 1 and pads
with segment 0; `weights` is 1 exactly on the non-padding positions.
"""

from __future__ import annotations

import grain
import numpy as np

# The trainer's keys (seedcoder_jax.train.step.BATCH_KEYS; a test checks they agree). Not imported
# from there: Grain workers unpickle this module and should not import JAX, Flax and optax.
BATCH_KEYS = ("inputs", "targets", "segment_ids", "positions", "weights")


def chunk_pairs(ids, seq_len: int) -> list[dict]:
  """[{"inputs": [<=seq_len] int32, "targets": [<=seq_len] int32}, ...] for one document."""
  ids = np.asarray(ids, np.int32)
  inputs, targets = ids[:-1], ids[1:]
  return [{"inputs": inputs[s:s + seq_len], "targets": targets[s:s + seq_len]}
          for s in range(0, len(inputs), seq_len)]


class Chunks(grain.experimental.FlatMapTransform):
  """Flattens the per-document chunk lists into single chunks."""

  max_fan_out = 1 << 20  # unused by FlatMapIterDataset; long repositories give many chunks

  def flat_map(self, chunks):
    return chunks


class ToBatchFormat(grain.transforms.Map):
  """Grain's packed features -> the trainer's BATCH_KEYS."""

  def map(self, packed: dict) -> dict:
    segment_ids = packed["inputs_segment_ids"].astype(np.int32)
    return {"inputs": packed["inputs"].astype(np.int32),
            "targets": packed["targets"].astype(np.int32),
            "segment_ids": segment_ids,
            "positions": packed["inputs_positions"].astype(np.int32),
            "weights": (segment_ids > 0).astype(np.float32)}


def pack(ds: grain.IterDataset, seq_len: int, num_bins: int) -> grain.IterDataset:
  """Rows of exactly `seq_len` from an IterDataset of per-document chunk lists."""
  chunks = grain.experimental.FlatMapIterDataset(ds, Chunks())
  packed = grain.experimental.FirstFitPackIterDataset(
      chunks, length_struct={"inputs": seq_len, "targets": seq_len}, num_packing_bins=num_bins,
      shuffle_bins=False)
  return packed.map(ToBatchFormat())


def empty_rows(n: int, seq_len: int) -> dict:
  """`n` all-padding rows (weights 0): fills the last, partial held-out batch."""
  return {k: np.zeros((n, seq_len), np.float32 if k == "weights" else np.int32) for k in BATCH_KEYS}


def pad_batch(batch: dict, batch_size: int) -> dict:
  """Pads a [b, T] batch with all-padding rows to [batch_size, T]."""
  b, t = batch["inputs"].shape
  if b == batch_size:
    return batch
  pad = empty_rows(batch_size - b, t)
  return {k: np.concatenate([batch[k], pad[k]]) for k in BATCH_KEYS}
