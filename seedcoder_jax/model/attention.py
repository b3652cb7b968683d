"""Grouped-query attention for packed sequences, with selectable implementations.

Every implementation computes softmax(q k^T / sqrt(Dh) + mask) v where a query attends to a key iff
both have the same segment id and the key's index is not after the query's. Segment id 0 is
padding by convention; it only attends to other padding, so no row is ever fully masked.

- "flash":  pure JAX, block by block, skipping future key blocks, saving only the output and the
            row log-sum-exp for the backward pass (`seedcoder_jax.model.blocked_attention`); the
            default. Self-attention whose length is not a multiple of its block runs "xla".
- "xla":    the reference: einsums and a dense mask, softmax in float32.
- "cudnn":  `jax.nn.dot_product_attention` (cuDNN flash attention on NVIDIA GPUs, XLA elsewhere).
- "splash": TPU splash attention through Pallas (`seedcoder_jax.model.splash`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def make_mask(q_segment_ids_BT, kv_segment_ids_BS, q_index_BT, kv_index_BS):
  """Boolean [B, 1, T, S] mask: same segment and causal (key index <= query index)."""
  same_segment = q_segment_ids_BT[:, :, None] == kv_segment_ids_BS[:, None, :]
  causal = kv_index_BS[:, None, :] <= q_index_BT[:, :, None]
  return (same_segment & causal)[:, None, :, :]


def xla_attention(q_BTHD, k_BSKD, v_BSKD, mask_B1TS):
  """Reference attention; operands in their dtype, scores and softmax in float32."""
  b, t, h, d = q_BTHD.shape
  n_kv = k_BSKD.shape[2]
  q_BTKGD = q_BTHD.reshape(b, t, n_kv, h // n_kv, d)
  scores_BKGTS = jnp.einsum("btkgd,bskd->bkgts", q_BTKGD, k_BSKD,
                            preferred_element_type=jnp.float32) * (d ** -0.5)
  scores_BKGTS = jnp.where(mask_B1TS[:, :, None], scores_BKGTS, jnp.finfo(jnp.float32).min)
  probs_BKGTS = jax.nn.softmax(scores_BKGTS, axis=-1)
  out_BTKGD = jnp.einsum("bkgts,bskd->btkgd", probs_BKGTS.astype(v_BSKD.dtype), v_BSKD,
                         preferred_element_type=jnp.float32)
  return out_BTKGD.reshape(b, t, h, d).astype(q_BTHD.dtype)


# cuDNN's fused attention (jax/_src/cudnn/fused_attention_stablehlo.py, check_layout) accepts
# only these operand dtypes; float32 raises there, deep inside tracing.
CUDNN_DTYPES = (jnp.bfloat16, jnp.float16)


def cudnn_attention(q_BTHD, k_BSKD, v_BSKD, mask_B1TS):
  """`jax.nn.dot_product_attention`: cuDNN's fused kernel on GPU, XLA's composite elsewhere.

  Packed sequences: the public API has no segment ids (cuDNN's packed "THD" layout with per-segment
  offsets is only reachable through private JAX modules), and `query_seq_lengths` describes one
  document per row. So the dense boolean mask (same segment and causal, [B, 1, T, S], broadcast
  over heads) is passed; JAX turns it into an additive bias for cuDNN. `is_causal=True` is added
  for self-attention (T == S) so cuDNN skips the tiles above the diagonal; the mask already
  contains causality, so the two agree. GQA (K < H kv heads) is passed through natively.

  On GPU the operands must be bfloat16 or float16 in [B, T, H, Dh] layout, Dh a multiple of 8 and
  at most 128 (256 on Hopper); the bias costs B*T*S bf16 per layer, saved for the backward pass
  unless the layer is rematerialised. Elsewhere (CPU, TPU) the same call runs XLA's composite.
  """
  on_gpu = jax.default_backend() == "gpu"
  if on_gpu and q_BTHD.dtype not in CUDNN_DTYPES:
    raise ValueError(f"cuDNN attention needs bfloat16 or float16 operands, got {q_BTHD.dtype}; set "
                     f"compute_dtype='bfloat16' or attention_impl='xla'")
  self_attention = q_BTHD.shape[1] == k_BSKD.shape[1]
  return jax.nn.dot_product_attention(
      q_BTHD, k_BSKD, v_BSKD, mask=mask_B1TS, is_causal=self_attention,
      implementation="cudnn" if on_gpu else None)


def attention(q_BTHD, k_BSKD, v_BSKD, *, q_segment_ids_BT, kv_segment_ids_BS, q_index_BT,
              kv_index_BS, impl: str = "xla"):
  """Dispatches to the configured implementation; all take and return [B, T, H, Dh]."""
  if impl == "splash":
    # The kernel's causal mask is positional (key position <= query position), so it takes no
    # indices: it is for self-attention over whole rows, indices 0..T-1, as the decoder passes.
    from seedcoder_jax.model import splash  # Pallas import only when asked for.
    return splash.splash_attention(q_BTHD, k_BSKD, v_BSKD, q_segment_ids_BT, kv_segment_ids_BS)
  if impl == "flash":
    # Like splash, for self-attention over whole rows (indices 0..T-1, as the decoder passes).
    from seedcoder_jax.model import blocked_attention
    block = blocked_attention.block_size(q_BTHD.shape[1])
    if block is not None and k_BSKD.shape[1] == q_BTHD.shape[1]:
      return blocked_attention.flash_self_attention(q_BTHD, k_BSKD, v_BSKD, q_segment_ids_BT, block)
    impl = "xla"
  mask_B1TS = make_mask(q_segment_ids_BT, kv_segment_ids_BS, q_index_BT, kv_index_BS)
  if impl == "xla":
    return xla_attention(q_BTHD, k_BSKD, v_BSKD, mask_B1TS)
  if impl == "cudnn":
    return cudnn_attention(q_BTHD, k_BSKD, v_BSKD, mask_B1TS)
  raise ValueError(f"unknown attention implementation {impl!r}")


def cached_attention(q_BTHD, k_BTKD, v_BTKD, k_cache_BKSD, v_cache_BKSD, valid_BS):
  """Decode-step attention: T new queries over the cache's valid entries plus their own keys.

  The cache is head-major ([B, K, S, Dh], model/kv_cache.py), the layout the two matmuls read.
  The new keys and values are not yet in the cache (the caller writes them after the layer
  scan, one in-place update for all layers), so they are scored separately and joined before
  the softmax; this reads the cache once and never copies it. Only T == 1 is supported: with
  several new tokens, causality among them would need a mask. Scores and softmax in float32.
  """
  b, t, h, d = q_BTHD.shape
  if t != 1:
    raise ValueError(f"cached_attention decodes one token per row, got {t} queries")
  n_kv = k_cache_BKSD.shape[1]
  q_BKGD = q_BTHD.reshape(b, n_kv, h // n_kv, d)
  scale = d ** -0.5
  cache_BKGS = jnp.einsum("bkgd,bksd->bkgs", q_BKGD, k_cache_BKSD,
                          preferred_element_type=jnp.float32) * scale
  cache_BKGS = jnp.where(valid_BS[:, None, None, :], cache_BKGS, jnp.finfo(jnp.float32).min)
  self_BKG1 = jnp.einsum("bkgd,bkd->bkg", q_BKGD, k_BTKD[:, 0],
                         preferred_element_type=jnp.float32)[..., None] * scale
  probs_BKGS = jax.nn.softmax(jnp.concatenate([cache_BKGS, self_BKG1], axis=-1), axis=-1)
  s = k_cache_BKSD.shape[2]
  out_BKGD = jnp.einsum("bkgs,bksd->bkgd", probs_BKGS[..., :s].astype(v_cache_BKSD.dtype),
                        v_cache_BKSD, preferred_element_type=jnp.float32)
  out_BKGD += jnp.einsum("bkg,bkd->bkgd", probs_BKGS[..., s].astype(v_BTKD.dtype), v_BTKD[:, 0],
                         preferred_element_type=jnp.float32)
  return out_BKGD.reshape(b, t, h, d).astype(q_BTHD.dtype)
