"""The decoder's functional API: `forward`, `init_params`, parameter layouts.

`forward(cfg, params, tokens, *, segment_ids=None, positions=None)` returns float32 logits
[B, L, V]. It runs under whatever mesh and logical-axis rules the caller has entered
(`seedcoder_jax.sharding.activate`); outside one it is a plain single-device function.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from seedcoder_jax.model.config import PRESETS, ModelConfig, RopeScaling, preset
from seedcoder_jax.model.decoder import Decoder, compute_params

__all__ = [
    "ModelConfig", "RopeScaling", "PRESETS", "preset", "compute_params", "forward", "hidden_states", "init_params", "abstract_params",
    "logical_axes", "stack_layers", "unstack_layers",
]


def forward(cfg: ModelConfig, params, tokens, *, segment_ids=None, positions=None):
  """Float32 logits [B, L, V] for int tokens [B, L].

  segment_ids [B, L]: packed documents (no attention across different ids; 0 marks padding).
  positions [B, L]: RoPE positions (default 0..L-1; packed rows restart them per document).
  """
  return _apply(cfg, params, tokens, segment_ids, positions, return_hidden=False)


def hidden_states(cfg: ModelConfig, params, tokens, *, segment_ids=None, positions=None):
  """Float32 final-normed hidden states [B, L, D] (what the LM head reads): for scorer heads."""
  return _apply(cfg, params, tokens, segment_ids, positions, return_hidden=True)


def head_kernel(cfg: ModelConfig, params):
  """The LM head as [D, V]: logits = hidden_states @ head_kernel (the embedding when tied)."""
  return params["embed"]["embedding"].T if cfg.tie_embeddings else params["lm_head"]["kernel"]


def _apply(cfg, params, tokens, segment_ids, positions, *, return_hidden):
  tokens_BT = jnp.asarray(tokens, jnp.int32)
  if tokens_BT.ndim != 2:
    raise ValueError(f"tokens must be [batch, length], got shape {tokens_BT.shape}")
  if segment_ids is None:
    segment_ids = jnp.ones_like(tokens_BT)
  if positions is None:
    positions = jnp.broadcast_to(jnp.arange(tokens_BT.shape[1], dtype=jnp.int32), tokens_BT.shape)
  return Decoder(cfg).apply({"params": params}, tokens_BT, jnp.asarray(segment_ids, jnp.int32),
                            jnp.asarray(positions, jnp.int32), return_hidden)


def _boxed_init(cfg: ModelConfig, rng):
  tokens = jnp.zeros((1, 1), jnp.int32)
  # Attention has no parameters: initialise through the reference kernel, so that building the
  # parameters never traces a Pallas kernel (which would warn, or need a TPU, for nothing).
  return Decoder(cfg.replace(attention_impl="xla")).init(rng, tokens, tokens, tokens)["params"]


def abstract_params(cfg: ModelConfig):
  """ShapeDtypeStructs of the parameters, with no memory allocated."""
  return nn.unbox(jax.eval_shape(lambda: _boxed_init(cfg, jax.random.key(0))))


def logical_axes(cfg: ModelConfig):
  """A tree of PartitionSpecs of logical axis names, matching the parameter tree."""
  boxed = jax.eval_shape(lambda: _boxed_init(cfg, jax.random.key(0)))
  return nn.get_partition_spec(boxed)


def init_params(cfg: ModelConfig, seed: int = 0):
  """Float32 parameters on the default device (use sharding.init_sharded at scale).

  Jitted: linen's eager init dispatches hundreds of small ops and is slow on CPU. Inside another
  jit (sharded init) this simply inlines.
  """
  return jax.jit(lambda: nn.unbox(_boxed_init(cfg, jax.random.key(seed))))()


def unstack_layers(params, n_layers: int):
  """Scanned layout ("layers" with a leading axis) -> unrolled ("layers_0", ...)."""
  out = {k: v for k, v in params.items() if k != "layers"}
  for i in range(n_layers):
    out[f"layers_{i}"] = jax.tree.map(lambda x, i=i: x[i], params["layers"])
  return out


def stack_layers(params, n_layers: int):
  """Unrolled layout ("layers_0", ...) -> scanned ("layers" with a leading axis)."""
  out = {k: v for k, v in params.items() if not k.startswith("layers_")}
  out["layers"] = jax.tree.map(lambda *xs: jnp.stack(xs), *[params[f"layers_{i}"]
                                                             for i in range(n_layers)])
  return out
