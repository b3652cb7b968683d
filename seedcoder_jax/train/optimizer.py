"""AdamW with a weight-decay mask, learning-rate schedules and global-norm clipping (optax)."""

from __future__ import annotations

import dataclasses

import jax
import optax

SCHEDULES = ("cosine", "wsd", "constant")


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  """Pretraining defaults follow Seed-Coder's phase 1 (peak LR 3e-4)."""

  peak_lr: float = 3e-4
  end_lr: float = 3e-5
  warmup_steps: int = 100
  total_steps: int = 1000
  schedule: str = "cosine"  # "cosine": warmup + cosine to end_lr; "wsd": warmup-stable-decay.
  decay_fraction: float = 0.1  # wsd: the last fraction of steps decays linearly to end_lr.
  b1: float = 0.9
  b2: float = 0.95
  eps: float = 1e-8
  weight_decay: float = 0.1
  clip_norm: float = 1.0  # 0 disables clipping.

  def __post_init__(self):
    if self.schedule not in SCHEDULES:
      raise ValueError(f"opt.schedule={self.schedule!r} is not one of {SCHEDULES}")
    if not 0 <= self.warmup_steps <= self.total_steps:
      raise ValueError(f"opt.warmup_steps={self.warmup_steps} must be in [0, opt.total_steps="
                       f"{self.total_steps}]")
    if not 0 < self.decay_fraction <= 1:
      raise ValueError(f"opt.decay_fraction={self.decay_fraction} must be in (0, 1]")


def learning_rate_schedule(c: OptimizerConfig) -> optax.Schedule:
  warmup = optax.linear_schedule(0.0, c.peak_lr, max(c.warmup_steps, 1))
  rest = max(c.total_steps - c.warmup_steps, 1)
  if c.schedule == "cosine":
    main = optax.cosine_decay_schedule(c.peak_lr, rest, alpha=c.end_lr / c.peak_lr)
  elif c.schedule == "wsd":
    decay_steps = max(int(round(rest * c.decay_fraction)), 1)
    main = optax.join_schedules(
        [optax.constant_schedule(c.peak_lr),
         optax.linear_schedule(c.peak_lr, c.end_lr, decay_steps)], [rest - decay_steps])
  else:
    main = optax.constant_schedule(c.peak_lr)
  return optax.join_schedules([warmup, main], [c.warmup_steps])


def decay_mask(params):
  """Weight decay on matrices only: not on norm scales (1-D per layer) nor on embeddings."""
  def decays(path, leaf):
    names = [getattr(k, "key", str(k)) for k in path]
    return not (names[-1] == "scale" or "embed" in names)
  return jax.tree_util.tree_map_with_path(decays, params)


def make_optimizer(c: OptimizerConfig) -> optax.GradientTransformation:
  parts = [optax.clip_by_global_norm(c.clip_norm)] if c.clip_norm > 0 else []
  parts.append(optax.adamw(learning_rate_schedule(c), b1=c.b1, b2=c.b2, eps=c.eps,
                           weight_decay=c.weight_decay, mask=decay_mask))
  return optax.chain(*parts)
