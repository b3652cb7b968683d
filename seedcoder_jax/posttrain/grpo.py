"""GRPO advantages and the clipped policy-gradient loss with DAPO's techniques, as pure functions.

Shapes in names: N sequences (completions; G consecutive ones form a prompt's group), T completion
tokens. Log-probs are per token, float32. The conventions (clamps, clip fractions, aggregation
modes) are verl's `core_algos`, so that runs compare with verl's and tests can check parity.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

AGGREGATIONS = ("token-mean", "seq-mean-token-sum", "seq-mean-token-mean")
SCALES = ("group", "none")
# exp(20) ~ 5e8: a log-ratio beyond +-20 is a broken sample, not a signal; clamping keeps the
# ratio (and KL estimates) finite, as verl does.
_LOG_RATIO_CLAMP = 20.0


def group_advantages(rewards_N, group_size: int, *, eps: float = 1e-6, scale: str = "group"):
  """[N] float32: rows i*G .. i*G+G-1 are one prompt's group; (r - mean) / (unbiased std + eps).

  scale="none": r - mean, no division (Dr. GRPO, Liu et al. 2025: the std division weights
  easy and hard prompts unequally). A group whose rewards are all equal gets exactly 0 (its mean
  can be off by an ulp in float32, and eps would blow that up to ~1e-3 otherwise).
  """
  if scale not in SCALES:
    raise ValueError(f"advantage scale={scale!r} is not one of {SCALES}")
  if group_size < 2:
    raise ValueError(f"group_size={group_size} must be >= 2 (a group's std needs two samples)")
  rewards_N = jnp.asarray(rewards_N, jnp.float32)
  n = rewards_N.shape[0]
  if rewards_N.ndim != 1 or n % group_size:
    raise ValueError(f"rewards of shape {rewards_N.shape} do not split into groups of {group_size}")
  r_PG = rewards_N.reshape(n // group_size, group_size)
  equal_P1 = jnp.max(r_PG, axis=1, keepdims=True) == jnp.min(r_PG, axis=1, keepdims=True)
  centred_PG = jnp.where(equal_P1, 0.0, r_PG - jnp.mean(r_PG, axis=1, keepdims=True))
  if scale == "group":
    std_P1 = jnp.sqrt(jnp.sum(jnp.square(centred_PG), axis=1, keepdims=True) / (group_size - 1))
    centred_PG = centred_PG / (std_P1 + eps)
  return centred_PG.reshape(n)


def policy_loss(logp_NT, old_logp_NT, advantages_N, mask_NT, *, clip_low: float = 0.2,
                clip_high: float = 0.28, clip_c=None, agg: str = "token-mean", num_tokens=None,
                num_seqs=None):
  """(loss, metrics): PPO's clipped surrogate with DAPO's asymmetric bounds, float32.

  Per token, with ratio = exp(logp - old_logp) and A the sequence's advantage:
  max(-A ratio, -A clip(ratio, 1 - clip_low, 1 + clip_high)); with clip_c (> 1), tokens with
  A < 0 are further capped at -A clip_c (dual-clip PPO, Ye et al. 2020: a huge ratio on a bad
  token cannot dominate the batch).

  agg (verl's names):
  - "token-mean": the sum over every unmasked token / their count (DAPO's token-level loss).
  - "seq-mean-token-sum": each sequence's token sum, averaged over sequences with any token.
  - "seq-mean-token-mean": each sequence's token mean, averaged likewise (GRPO's original form).
  Gradient accumulation: pass the global counts over all microbatches, num_tokens (unmasked
  tokens; token-mean and the metrics) and num_seqs (sequences with an unmasked token; the
  seq-mean modes). Then the microbatches' losses, gradients and metrics sum to the full batch's;
  without them each call normalises by its own counts.

  Metrics (token means): clip_frac_low (A < 0 and ratio < 1 - clip_low), clip_frac_high (A > 0
  and ratio > 1 + clip_high): the tokens whose gradient the clip removes; clip_frac_dual (A < 0
  capped at clip_c); approx_kl, the k1 estimate of KL(old || new) = mean(old_logp - logp);
  ratio_mean.
  """
  if agg not in AGGREGATIONS:
    raise ValueError(f"policy loss agg={agg!r} is not one of {AGGREGATIONS}")
  if clip_c is not None and clip_c <= 1.0:
    raise ValueError(f"dual-clip clip_c={clip_c} must be > 1 (or None for no dual clip)")
  logp_NT = jnp.asarray(logp_NT, jnp.float32)
  valid_NT = jnp.asarray(mask_NT) > 0
  mask_NT = valid_NT.astype(jnp.float32)
  adv_N1 = jnp.asarray(advantages_N, jnp.float32)[:, None]

  # Masked entries may hold anything (padding's log-probs, even NaN): zero their log-ratio before
  # any arithmetic, so that neither the sums nor the gradient (0 * NaN = NaN) can see them.
  log_ratio_NT = jnp.where(valid_NT, logp_NT - old_logp_NT, 0.0)
  log_ratio_NT = jnp.clip(log_ratio_NT, -_LOG_RATIO_CLAMP, _LOG_RATIO_CLAMP)
  ratio_NT = jnp.exp(log_ratio_NT)
  unclipped_NT = -adv_N1 * ratio_NT
  clipped_NT = -adv_N1 * jnp.clip(ratio_NT, 1.0 - clip_low, 1.0 + clip_high)
  loss_NT = jnp.maximum(unclipped_NT, clipped_NT)
  dual_NT = jnp.zeros_like(valid_NT)
  if clip_c is not None:
    cap_NT = -adv_N1 * clip_c
    dual_NT = (adv_N1 < 0) & (loss_NT > cap_NT)
    loss_NT = jnp.where(adv_N1 < 0, jnp.minimum(loss_NT, cap_NT), loss_NT)
  loss_NT = jnp.where(valid_NT, loss_NT, 0.0)

  tokens_N = jnp.sum(mask_NT, axis=1)
  n_tokens = jnp.maximum(jnp.sum(tokens_N), 1.0) if num_tokens is None else num_tokens
  if agg == "token-mean":
    loss = jnp.sum(loss_NT) / n_tokens
  else:
    seq_N = jnp.sum(loss_NT, axis=1)
    if agg == "seq-mean-token-mean":
      seq_N = seq_N / jnp.maximum(tokens_N, 1.0)
    has_tokens_N = (tokens_N > 0).astype(jnp.float32)
    n_seqs = jnp.maximum(jnp.sum(has_tokens_N), 1.0) if num_seqs is None else num_seqs
    loss = jnp.sum(seq_N * has_tokens_N) / n_seqs

  token_mean = lambda x_NT: jnp.sum(jnp.where(valid_NT, x_NT, 0.0)) / n_tokens
  stop = jax.lax.stop_gradient
  metrics = {
      "clip_frac_low": token_mean(((adv_N1 < 0) & (ratio_NT < 1.0 - clip_low)).astype(jnp.float32)),
      "clip_frac_high": token_mean(((adv_N1 > 0) & (ratio_NT > 1.0 + clip_high)).astype(jnp.float32)),
      "clip_frac_dual": token_mean(dual_NT.astype(jnp.float32)),
      "approx_kl": stop(token_mean(-log_ratio_NT)),
      "ratio_mean": stop(token_mean(ratio_NT)),
  }
  return loss, metrics


def kl_k3(logp, ref_logp):
  """Per-token k3 estimate of KL(new || ref) (Schulman 2020; verl's "low_var_kl"), float32.

  exp(ref - logp) - (ref - logp) - 1: unbiased, always >= 0, lower variance than k1. Off by
  default in the RL loss (DAPO drops the KL term); kept for ablations. Clamped as verl does.
  """
  kl = jnp.clip(jnp.asarray(ref_logp, jnp.float32) - jnp.asarray(logp, jnp.float32),
                -_LOG_RATIO_CLAMP, _LOG_RATIO_CLAMP)
  return jnp.clip(jnp.exp(kl) - kl - 1.0, -10.0, 10.0)
