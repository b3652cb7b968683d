"""Loss maths as small pure functions (float32 throughout)."""

from __future__ import annotations

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
