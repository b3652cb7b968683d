"""A preallocated KV cache for the decoder: prefill a padded prompt batch, then decode one token.

The cache is a dict of arrays:
  k, v   [L, B, K, S, Dh]   keys (after RoPE) and values of every layer, in the compute dtype
  valid  [B, S] bool        which cache slots hold a real token of that row

Head-major (K before S): each (row, kv head) reads its S x Dh block contiguously, which is the
operand layout of the decode step's attention matmuls, so no layer's cache is transposed per
step (with [L, B, S, K, Dh] XLA:CPU copied every layer's cache to head-major on every step: the
step time grew 3.6x from 256 to 1,024 cache columns at SmolLM2's shape, docs/benchmarks.md).

S is fixed when the cache is made, so every decode step has one shape and compiles once. Rows
may be padded anywhere (the sampler left-pads): a padded slot is simply not `valid`, and each
token's RoPE position is given explicitly, so a padded row computes exactly what it would alone.
Under a mesh (`seedcoder_jax.sharding.activate`) the cache shards like the activations: batch over
(data, fsdp), kv heads over tensor.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from seedcoder_jax.model.config import ModelConfig
from seedcoder_jax.model.decoder import Decoder, compute_params

CACHE_AXES = ("layers", "batch", "kv_heads", "length", "head_dim")


def shape(cfg: ModelConfig, rows: int, length: int) -> tuple[int, ...]:
  """The k and v arrays' shape [L, B, K, S, Dh]; valid is [B, S]."""
  return (cfg.n_layers, rows, cfg.n_kv_heads, length, cfg.head_dim)


def constrain(cache):
  """The cache's logical sharding constraint (batch over (data, fsdp), kv heads over tensor), for
  programs that rewrite rows of a cache (the rollout engine's slot refill)."""
  return {"k": nn.with_logical_constraint(cache["k"], CACHE_AXES),
          "v": nn.with_logical_constraint(cache["v"], CACHE_AXES),
          "valid": nn.with_logical_constraint(cache["valid"], ("batch", "length"))}


@functools.partial(jax.jit, static_argnums=0)
def cast_params(cfg: ModelConfig, params):
  """decoder.compute_params as one program: the parameters for prefill and decode_step, their
  projection kernels cast to the compute dtype once rather than on every step (same logits).
  Jitted, so the cast copies keep the parameters' shardings."""
  return compute_params(cfg, params)


def prefill(cfg: ModelConfig, params, tokens_BT, segment_ids_BT, positions_BT, cache_len: int):
  """Runs the prompt batch; returns (next-token logits [B, V] float32, cache of length cache_len).

  tokens_BT: the prompts, padding where segment_ids_BT is 0 (padding attends only to padding and
  is never valid in the cache). positions_BT: RoPE positions of the real tokens (0, 1, ... per
  row). The logits are those of the last column, so rows must end there (left padding).
  """
  b, t = tokens_BT.shape
  if t > cache_len:
    raise ValueError(f"prompt length {t} exceeds the cache length {cache_len}")
  logits_B1V, (k_LBTKD, v_LBTKD) = Decoder(cfg, "prefill").apply(
      {"params": params}, tokens_BT, segment_ids_BT, positions_BT)
  pad = ((0, 0), (0, 0), (0, 0), (0, cache_len - t), (0, 0))
  head_major = lambda x_LBTKD: jnp.pad(x_LBTKD.transpose(0, 1, 3, 2, 4), pad)
  cache = {"k": head_major(k_LBTKD), "v": head_major(v_LBTKD),
           "valid": jnp.pad(segment_ids_BT != 0, ((0, 0), (0, cache_len - t)))}
  return logits_B1V[:, 0], constrain(cache)


def decode_step(cfg: ModelConfig, params, cache, tokens_B, positions_B, index):
  """Feeds one token per row, written at cache slot `index` (a traced int, the same for all rows).

  Returns (next-token logits [B, V] float32, the updated cache). Every row's slot `index` becomes
  valid, so a row whose output is no longer wanted still decodes (harmlessly) in lockstep.
  """
  tokens_B1 = tokens_B[:, None].astype(jnp.int32)
  positions_B1 = positions_B[:, None].astype(jnp.int32)
  logits_B1V, (k_LB1KD, v_LB1KD) = Decoder(cfg, "decode").apply(
      {"params": params}, tokens_B1, jnp.ones_like(tokens_B1), positions_B1,
      kv_cache=(cache["k"], cache["v"], cache["valid"]))
  zero = jnp.zeros((), jnp.int32)
  start = (zero, zero, zero, jnp.asarray(index, jnp.int32), zero)
  b = tokens_B.shape[0]
  def write(old_LBKSD, new_LB1KD):
    new_LBK1D = new_LB1KD.transpose(0, 1, 3, 2, 4).astype(old_LBKSD.dtype)
    return jax.lax.dynamic_update_slice(old_LBKSD, new_LBK1D, start)
  cache = {"k": write(cache["k"], k_LB1KD), "v": write(cache["v"], v_LB1KD),
           "valid": jax.lax.dynamic_update_slice(cache["valid"], jnp.ones((b, 1), bool),
                                                 (zero, jnp.asarray(index, jnp.int32)))}
  return logits_B1V[:, 0], constrain(cache)
