"""Causal self-attention computed block by block, skipping the key blocks that lie in the future.

The reference attention (`attention.xla_attention`) scores every query against every key and masks
the upper triangle afterwards: on CPU (and wherever no fused kernel exists) the [B, H, T, S] score
tensor is memory-bound work, about a dozen elementwise passes forward and backward, and half of it
is masked away. Here the T queries are cut into n blocks; query block i is scored only against keys
0 .. (i+1)*block - 1, so (n+1)/(2n) of the score tensor is computed (62.5% for n = 4), each block
through the same reference kernel and the same packed-sequence mask. Measured on a 2-core CPU
(tiny preset shape, 8x512): attention forward+backward 2.3x faster than the reference.

Valid for self-attention over whole rows, where query and key indices are 0..T-1 (what the decoder
passes in training and prefill, as for splash attention): a skipped block holds only keys with a
larger index than every query of the block, which the causal mask would zero anyway.
"""

from __future__ import annotations

import jax.numpy as jnp

from seedcoder_jax.model import attention as attention_lib

MIN_BLOCK = 128
MAX_BLOCKS = 8  # unrolled per layer: bounds compile time at long sequence lengths


def block_size(length: int) -> int | None:
  """The query block length for a row of `length` tokens, or None when blocking gains nothing."""
  block = max(MIN_BLOCK, length // MAX_BLOCKS)
  if length <= block or length % block:
    return None
  return block


def blocked_self_attention(q_BTHD, k_BTKD, v_BTKD, segment_ids_BT, *, block: int):
  """Equals `xla_attention` with the same-segment causal mask over indices 0..T-1."""
  t = q_BTHD.shape[1]
  if t % block or k_BTKD.shape[1] != t:
    raise ValueError(f"blocked self-attention needs T == S divisible by the block: T={t}, "
                     f"S={k_BTKD.shape[1]}, block={block}")
  index_T = jnp.arange(t)
  outs = []
  for start in range(0, t, block):
    end = start + block
    q_seg_BQ = segment_ids_BT[:, start:end]
    kv_seg_BS = segment_ids_BT[:, :end]
    q_index_BQ = jnp.broadcast_to(index_T[start:end], q_seg_BQ.shape)
    kv_index_BS = jnp.broadcast_to(index_T[:end], kv_seg_BS.shape)
    mask_B1QS = attention_lib.make_mask(q_seg_BQ, kv_seg_BS, q_index_BQ, kv_index_BS)
    outs.append(attention_lib.xla_attention(q_BTHD[:, start:end], k_BTKD[:, :end],
                                            v_BTKD[:, :end], mask_B1QS))
  return jnp.concatenate(outs, axis=1)
