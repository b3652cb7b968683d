"""Loss maths as small pure functions (float32 throughout)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


def cross_entropy(logits_BTV, targets_BT, weights_BT, *, z_loss: float = 0.0):
  """Token-weighted next-token cross entropy.

  Returns (loss_sum, z_loss_sum, weight_sum): sums, not means, so that gradient accumulation and
  data-parallel reductions divide once by the global token count. The z-loss (PaLM) is
  z_loss * logsumexp(logits)^2 per token and keeps the softmax normaliser near 1.
  """
  logits_BTV = logits_BTV.astype(jnp.float32)
  weights_BT = weights_BT.astype(jnp.float32)
  lse_BT = jax.nn.logsumexp(logits_BTV, axis=-1)
  target_logit_BT = jnp.take_along_axis(logits_BTV, targets_BT[..., None], axis=-1)[..., 0]
  nll_BT = lse_BT - target_logit_BT
  z_BT = z_loss * jnp.square(lse_BT)
  return jnp.sum(nll_BT * weights_BT), jnp.sum(z_BT * weights_BT), jnp.sum(weights_BT)


def chunked_cross_entropy(hidden_BTD, head_DV, targets_BT, weights_BT, *, chunk: int,
                          z_loss: float = 0.0, compute_dtype=jnp.float32):
  """cross_entropy(hidden_BTD @ head_DV, ...) without ever holding the [B, T, V] logits.

  A scan over T/chunk slices computes each slice's logits (operands in compute_dtype, float32
  accumulation, as the model's head does) and its loss sums; the slice body is rematerialised, so
  the backward pass recomputes one [B, chunk, V] block at a time instead of saving them all.
  """
  b, t, d = hidden_BTD.shape
  if chunk <= 0 or t % chunk:
    raise ValueError(f"loss chunk {chunk} must be positive and divide the sequence length {t}")
  n = t // chunk
  split = lambda x: x.reshape(b, n, chunk, *x.shape[2:]).swapaxes(0, 1)  # [N, B, C, ...]
  head_DV = head_DV.astype(compute_dtype)

  @functools.partial(jax.checkpoint, policy=jax.checkpoint_policies.nothing_saveable)
  def body(sums, xs):
    h_BCD, targets_BC, weights_BC = xs
    logits_BCV = jnp.einsum("bcd,dv->bcv", h_BCD.astype(compute_dtype), head_DV,
                            preferred_element_type=jnp.float32)
    return jax.tree.map(jnp.add, sums, cross_entropy(logits_BCV, targets_BC, weights_BC,
                                                     z_loss=z_loss)), None

  zeros = (jnp.zeros((), jnp.float32),) * 3
  sums, _ = jax.lax.scan(body, zeros, (split(hidden_BTD), split(targets_BT), split(weights_BT)))
  return sums
