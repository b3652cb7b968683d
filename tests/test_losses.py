"""Loss and optimizer maths against hand-computed values."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from seedcoder_jax.train import losses
from seedcoder_jax.train import optimizer as opt_lib


def test_cross_entropy_hand_computed():
  # One row, two tokens, vocab 3. Token 0: logits (0, 0, ln 2) -> p(target=2) = 2/4.
  # Token 1: logits (1, 1, 1) -> p(target=0) = 1/3; its weight is 0, so it must not count.
  logits = jnp.array([[[0.0, 0.0, math.log(2.0)], [1.0, 1.0, 1.0]]])
  targets = jnp.array([[2, 0]])
  weights = jnp.array([[1.0, 0.0]])
  nll, z, n = losses.cross_entropy(logits, targets, weights, z_loss=0.1)
  assert float(n) == 1.0
  np.testing.assert_allclose(float(nll), -math.log(0.5), rtol=1e-6)
  np.testing.assert_allclose(float(z), 0.1 * math.log(4.0) ** 2, rtol=1e-6)


def test_schedules_hand_computed():
  c = opt_lib.OptimizerConfig(peak_lr=1.0, end_lr=0.1, warmup_steps=10, total_steps=110)
  lr = opt_lib.learning_rate_schedule(c)
  assert float(lr(0)) == 0.0 and float(lr(5)) == pytest.approx(0.5)
  assert float(lr(10)) == pytest.approx(1.0)
  assert float(lr(60)) == pytest.approx(0.1 + 0.9 * 0.5, rel=1e-5)  # cosine midpoint
  assert float(lr(110)) == pytest.approx(0.1, rel=1e-5)
  w = opt_lib.learning_rate_schedule(c.__class__(**{**c.__dict__, "schedule": "wsd"}))
  assert float(w(50)) == pytest.approx(1.0) and float(w(99)) == pytest.approx(1.0)
  assert float(w(105)) == pytest.approx(0.55, rel=1e-5) and float(w(110)) == pytest.approx(0.1)


def test_decay_mask_excludes_norms_and_embeddings():
  params = {"embed": {"embedding": 0}, "layers": {"attn_norm": {"scale": 0}, "mlp": {"up_proj": {"kernel": 0}}},
            "lm_head": {"kernel": 0}}
  mask = opt_lib.decay_mask(params)
  assert mask == {"embed": {"embedding": False}, "layers": {"attn_norm": {"scale": False},
                  "mlp": {"up_proj": {"kernel": True}}}, "lm_head": {"kernel": True}}


def test_bad_optimizer_config_is_refused():
  with pytest.raises(ValueError, match="opt.schedule='linear'"):
    opt_lib.OptimizerConfig(schedule="linear")
  with pytest.raises(ValueError, match="opt.warmup_steps=20"):
    opt_lib.OptimizerConfig(warmup_steps=20, total_steps=10)
