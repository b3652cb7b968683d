"""The Llama-style decoder in Flax linen: one readable file.

Shapes in names: B batch, T sequence, D d_model, H query heads, K kv heads, Dh head_dim, F d_ff,
V vocab, L layers. Parameters are float32; matmul operands are cast to `cfg.compute_dtype` and
accumulate in float32; the residual stream, norms, softmax and logits stay float32.

Every parameter carries logical axis names (see `seedcoder_jax.sharding.LOGICAL_RULES`).
Parameter tree (scanned layers stack a leading `layers` axis under "layers"; unscanned ones are
"layers_0", "layers_1", ... without it):

  embed/embedding [V, D]                        ("vocab", "embed")
  layers/attn_norm/scale [L, D]                 ("layers", "embed")
  layers/attn/{q,k,v}_proj/kernel [L, D, H|K, Dh]  ("layers", "embed", "q_heads"|"kv_heads", "head_dim")
  layers/attn/o_proj/kernel [L, H, Dh, D]       ("layers", "q_heads", "head_dim", "embed")
  layers/mlp_norm/scale [L, D]
  layers/mlp/{gate,up}_proj/kernel [L, D, F]    ("layers", "embed", "mlp")
  layers/mlp/down_proj/kernel [L, F, D]         ("layers", "mlp", "embed")
  final_norm/scale [D]
  lm_head/kernel [D, V]                         ("embed", "vocab"); absent with tied embeddings
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from seedcoder_jax.model import attention as attention_lib
from seedcoder_jax.model import linear
from seedcoder_jax.model import rope
from seedcoder_jax.model.config import ModelConfig

REMAT_POLICIES = {
    "full": jax.checkpoint_policies.nothing_saveable,
    # Matmul outputs: plain dots, and the projections (custom VJPs, opaque to the dot rule).
    "dots": jax.checkpoint_policies.save_from_both_policies(
        jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
        jax.checkpoint_policies.save_only_these_names(linear.CHECKPOINT_NAME)),
}


def _dtype(name: str):
  return jnp.bfloat16 if name == "bfloat16" else jnp.float32


TIED_HEAD = "tied_head"  # compute_params' extra entry: the tied head's table in the compute dtype


def compute_params(cfg: ModelConfig, params):
  """params with every projection kernel already in the compute dtype, for programs that apply the
  same parameters many times without differentiating them (decoding).

  DenseGeneral casts its float32 kernel to the compute dtype on every application; inside a decode
  loop XLA:CPU does that cast on every step, reading every float32 kernel (and, for a tied head,
  the [V, D] table) and writing its bfloat16 copy. Casting once beforehand gives the same operands,
  so the same logits to the last bit (tests/test_sampling.py), with half the bytes to read a step.
  A tied head gets its own cast copy (TIED_HEAD): the embedding lookup keeps reading float32.
  float32 compute returns params unchanged. Not for training: gradients need the float32 leaves.
  """
  dtype = _dtype(cfg.compute_dtype)
  if dtype == jnp.float32:
    return params
  cast = jax.tree_util.tree_map_with_path(
      lambda path, x: x.astype(dtype) if getattr(path[-1], "key", None) == "kernel" else x,
      params)
  if cfg.tie_embeddings:
    cast = {**cast, TIED_HEAD: params["embed"]["embedding"].astype(dtype)}
  return cast


class DenseGeneral(nn.Module):
  """A bias-free projection: einsum of x with a float32 kernel cast to the compute dtype."""

  shape: Sequence[int]
  axes: Sequence[str]
  equation: str
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x):
    init = nn.initializers.normal(stddev=self.cfg.init_std)
    kernel = self.param("kernel", nn.with_logical_partitioning(init, tuple(self.axes)),
                        tuple(self.shape), jnp.float32)
    dtype = _dtype(self.cfg.compute_dtype)
    return linear.projection(self.equation, x.astype(dtype), kernel.astype(dtype))


class Embed(nn.Module):
  """The token embedding table [V, D]; the forward gathers rows, a tied head reuses it."""

  cfg: ModelConfig

  @nn.compact
  def __call__(self):
    init = nn.with_logical_partitioning(nn.initializers.normal(self.cfg.init_std), ("vocab", "embed"))
    return self.param("embedding", init, (self.cfg.vocab_size, self.cfg.d_model), jnp.float32)


class RMSNorm(nn.Module):
  eps: float

  @nn.compact
  def __call__(self, x_BTD):
    scale_D = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
                         (x_BTD.shape[-1],), jnp.float32)
    x = x_BTD.astype(jnp.float32)
    return x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + self.eps) * scale_D


class Attention(nn.Module):
  """Grouped-query attention. `mode` "train" is the plain forward; "prefill" also returns this
  layer's keys and values (for a KV cache); "decode" attends T=1 new queries to a cache
  (k_cache_BKSD, v_cache_BKSD, whose valid entries cache_valid_BS marks) plus themselves."""

  cfg: ModelConfig
  mode: str = "train"

  @nn.compact
  def __call__(self, x_BTD, segment_ids_BT, positions_BT, index_BT, k_cache_BKSD=None,
               v_cache_BKSD=None, cache_valid_BS=None):
    c = self.cfg
    d, h, k, dh = c.d_model, c.n_heads, c.n_kv_heads, c.head_dim
    q_BTHD = DenseGeneral((d, h, dh), ("embed", "q_heads", "head_dim"), "btd,dhk->bthk", c,
                          name="q_proj")(x_BTD)
    k_BTKD = DenseGeneral((d, k, dh), ("embed", "kv_heads", "head_dim"), "btd,dhk->bthk", c,
                          name="k_proj")(x_BTD)
    v_BTKD = DenseGeneral((d, k, dh), ("embed", "kv_heads", "head_dim"), "btd,dhk->bthk", c,
                          name="v_proj")(x_BTD)
    inv_freq = rope.inverse_frequencies(dh, c.rope_theta, c.rope_scaling)
    dtype = _dtype(c.compute_dtype)
    q_BTHD = rope.apply_rope(q_BTHD, positions_BT, inv_freq).astype(dtype)
    k_BTKD = rope.apply_rope(k_BTKD, positions_BT, inv_freq).astype(dtype)
    v_BTKD = v_BTKD.astype(dtype)
    q_BTHD = nn.with_logical_constraint(q_BTHD, ("batch", "length", "q_heads", "head_dim"))
    k_BTKD = nn.with_logical_constraint(k_BTKD, ("batch", "length", "kv_heads", "head_dim"))
    v_BTKD = nn.with_logical_constraint(v_BTKD, ("batch", "length", "kv_heads", "head_dim"))
    if self.mode == "decode":
      out_BTHD = attention_lib.cached_attention(q_BTHD, k_BTKD, v_BTKD, k_cache_BKSD, v_cache_BKSD,
                                                cache_valid_BS)
    else:
      out_BTHD = attention_lib.attention(
          q_BTHD, k_BTKD, v_BTKD, q_segment_ids_BT=segment_ids_BT, kv_segment_ids_BS=segment_ids_BT,
          q_index_BT=index_BT, kv_index_BS=index_BT, impl=c.attention_impl)
    out_BTHD = nn.with_logical_constraint(out_BTHD, ("batch", "length", "q_heads", "head_dim"))
    out_BTD = DenseGeneral((h, dh, d), ("q_heads", "head_dim", "embed"), "bthk,hkd->btd", c,
                           name="o_proj")(out_BTHD)
    if self.mode == "train":
      return out_BTD
    return out_BTD, (k_BTKD, v_BTKD)


class MLP(nn.Module):
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x_BTD):
    c = self.cfg
    gate_BTF = DenseGeneral((c.d_model, c.d_ff), ("embed", "mlp"), "btd,df->btf", c,
                            name="gate_proj")(x_BTD)
    up_BTF = DenseGeneral((c.d_model, c.d_ff), ("embed", "mlp"), "btd,df->btf", c,
                          name="up_proj")(x_BTD)
    hidden_BTF = nn.with_logical_constraint(linear.swiglu(gate_BTF, up_BTF), ("batch", "length", "mlp"))
    return DenseGeneral((c.d_ff, c.d_model), ("mlp", "embed"), "btf,fd->btd", c,
                        name="down_proj")(hidden_BTF)


class Block(nn.Module):
  """Pre-norm transformer block; the signature fits `nn.scan` (carry, *xs) -> (carry, ys).

  In "train" mode ys is None; in "prefill" and "decode" it is this layer's new (keys, values),
  which the scan stacks over layers (the KV cache's leading axis)."""

  cfg: ModelConfig
  mode: str = "train"

  @nn.compact
  def __call__(self, x_BTD, segment_ids_BT, positions_BT, index_BT, k_cache_BKSD=None,
               v_cache_BKSD=None, cache_valid_BS=None):
    x_BTD = nn.with_logical_constraint(x_BTD, ("batch", "length", "embed"))
    h_BTD = RMSNorm(self.cfg.rms_norm_eps, name="attn_norm")(x_BTD)
    attn = Attention(self.cfg, self.mode, name="attn")
    if self.mode == "train":
      attn_BTD, new_kv = attn(h_BTD, segment_ids_BT, positions_BT, index_BT), None
    else:
      attn_BTD, new_kv = attn(h_BTD, segment_ids_BT, positions_BT, index_BT, k_cache_BKSD,
                              v_cache_BKSD, cache_valid_BS)
    x_BTD = x_BTD + attn_BTD
    h_BTD = RMSNorm(self.cfg.rms_norm_eps, name="mlp_norm")(x_BTD)
    x_BTD = x_BTD + MLP(self.cfg, name="mlp")(h_BTD)
    return nn.with_logical_constraint(x_BTD, ("batch", "length", "embed")), new_kv


class Decoder(nn.Module):
  """The decoder. `mode` "train": logits [B, T, V] (or hidden states) of every position.

  "prefill" and "decode" (the sampler's path, see model/kv_cache.py) return the logits of the
  last position only, [B, 1, V], with the stacked new keys and values ([L, B, T, K, Dh] each);
  "decode" takes the cache as `kv_cache` = (k_LBKSD, v_LBKSD, valid_BS).
  """

  cfg: ModelConfig
  mode: str = "train"

  @nn.compact
  def __call__(self, tokens_BT, segment_ids_BT, positions_BT, return_hidden: bool = False,
               kv_cache=None):
    c = self.cfg
    embed_VD = Embed(c, name="embed")()
    # The lookup stays sharded over d_model (fsdp), as the table is: each device gathers its
    # d_model slice for every row of its data group (token ids all-gathered over fsdp, 4 bytes a
    # token), then one all-to-all gives it its own rows whole; the gradient goes back the same
    # way into the d_model-sharded table. No device holds (or all-gathers, or reduce-scatters)
    # the whole float32 [V, D] table: 2.5 GB for Seed-Coder-8B (docs/benchmarks.md).
    tokens_BT = nn.with_logical_constraint(tokens_BT, ("data_batch", None))
    x_BTD = jnp.take(nn.with_logical_constraint(embed_VD, (None, "embed")), tokens_BT, axis=0)
    x_BTD = nn.with_logical_constraint(x_BTD, ("data_batch", None, "embed"))
    x_BTD = nn.with_logical_constraint(x_BTD, ("batch", "length", "embed"))  # the all-to-all
    index_BT = jnp.broadcast_to(jnp.arange(tokens_BT.shape[1]), tokens_BT.shape)
    layer_args = (x_BTD, segment_ids_BT, positions_BT, index_BT)
    if self.mode == "decode":
      k_cache_LBKSD, v_cache_LBKSD, valid_BS = kv_cache

    block = Block
    if c.remat != "none" and self.mode == "train":
      block = nn.remat(Block, policy=REMAT_POLICIES[c.remat], prevent_cse=not c.scan_layers)
    if c.scan_layers:
      in_axes = (nn.broadcast, nn.broadcast, nn.broadcast)
      if self.mode == "decode":
        in_axes += (0, 0, nn.broadcast)
        layer_args += (k_cache_LBKSD, v_cache_LBKSD, valid_BS)
      layers = nn.scan(
          block, variable_axes={"params": 0}, split_rngs={"params": True},
          in_axes=in_axes, length=c.n_layers,
          metadata_params={nn.PARTITION_NAME: "layers"})(c, self.mode, name="layers")
      x_BTD, new_kv = layers(*layer_args)
    else:
      new = []
      for i in range(c.n_layers):
        cache_args = ()
        if self.mode == "decode":
          cache_args = (k_cache_LBKSD[i], v_cache_LBKSD[i], valid_BS)
        x_BTD, kv = block(c, self.mode, name=f"layers_{i}")(x_BTD, *layer_args[1:], *cache_args)
        new.append(kv)
      new_kv = None if self.mode == "train" else jax.tree.map(lambda *xs: jnp.stack(xs), *new)

    if self.mode != "train":
      x_BTD = x_BTD[:, -1:]  # the sampler reads the next-token logits of the last position only
    x_BTD = RMSNorm(c.rms_norm_eps, name="final_norm")(x_BTD)
    if return_hidden:  # the final-normed hidden states (a scorer or value head reads these)
      return nn.with_logical_constraint(x_BTD, ("batch", "length", "embed"))
    if c.tie_embeddings:
      dtype = _dtype(c.compute_dtype)
      # compute_params may have cast the table for the head once, for many decode steps
      head_VD = (self.get_variable("params", TIED_HEAD) if self.has_variable("params", TIED_HEAD)
                 else embed_VD.astype(dtype))
      logits_BTV = linear.projection("btd,vd->btv", x_BTD.astype(dtype), head_VD)
    else:
      logits_BTV = DenseGeneral((c.d_model, c.vocab_size), ("embed", "vocab"), "btd,dv->btv", c,
                                name="lm_head")(x_BTD)
    logits_BTV = nn.with_logical_constraint(logits_BTV, ("batch", "length", "vocab"))
    if self.mode == "train":
      return logits_BTV
    return logits_BTV, new_kv
