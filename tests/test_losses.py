"""Loss and optimizer maths against hand-computed values."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from numerics import assert_close_to_scale, f32_rtol
from seedcoder_jax import model
from seedcoder_jax.train import losses
from seedcoder_jax.train import step as step_lib
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


def test_chunked_cross_entropy_equals_whole_logits():
  kh, kw, kt, km = jax.random.split(jax.random.key(0), 4)
  hidden = jax.random.normal(kh, (2, 12, 8))
  head = jax.random.normal(kw, (8, 40))
  targets = jax.random.randint(kt, (2, 12), 0, 40)
  weights = (jax.random.uniform(km, (2, 12)) > 0.3).astype(jnp.float32)

  def whole(h, w):
    return losses.cross_entropy(jnp.einsum("btd,dv->btv", h, w), targets, weights, z_loss=1e-3)

  def chunked(h, w):
    return losses.chunked_cross_entropy(h, w, targets, weights, chunk=4, z_loss=1e-3)

  # Chunking reorders sums: the loss over 24 positions of 40-logit log-sum-exps, the head's
  # gradient over the 24 positions, the hidden states' over the 40 logits. Allow reassociation
  # error relative to each tensor's scale (tests/numerics.py), not one machine's last bits.
  np.testing.assert_allclose(chunked(hidden, head), whole(hidden, head), rtol=f32_rtol(40))
  grad = lambda f: jax.grad(lambda h, w: f(h, w)[0] + f(h, w)[1], argnums=(0, 1))(hidden, head)
  for g, r in zip(grad(chunked), grad(whole)):
    assert_close_to_scale(g, r, terms=40)
  with pytest.raises(ValueError, match="chunk 5 .* divide the sequence length 12"):
    losses.chunked_cross_entropy(hidden, head, targets, weights, chunk=5)


@pytest.mark.parametrize("tied", [False, True])
def test_train_loss_with_loss_chunk_equals_unchunked(tied):
  """The train step's loss_sums: model.loss_chunk changes the memory plan, not the maths."""
  cfg = model.preset("tiny", tie_embeddings=tied)
  params = model.init_params(cfg)
  tokens = jax.random.randint(jax.random.key(1), (2, 65), 0, cfg.vocab_size)
  batch = {"inputs": tokens[:, :-1], "targets": tokens[:, 1:],
           "segment_ids": jnp.ones((2, 64), jnp.int32).at[1, 40:].set(2),
           "positions": jnp.broadcast_to(jnp.arange(64), (2, 64)),
           "weights": jnp.ones((2, 64)).at[0, 50:].set(0.0)}
  def loss_and_grads(c):
    return jax.value_and_grad(lambda p: step_lib.loss_sums(c, p, batch, 1e-4), has_aux=True)(params)
  (want, want_aux), want_g = loss_and_grads(cfg)
  (got, got_aux), got_g = loss_and_grads(cfg.replace(loss_chunk=16))
  # The chunked and whole-logits paths sum the loss and the weight gradients over the 128
  # positions, and the hidden states' gradient over the 512 logits, in a different order (and
  # XLA:CPU picks other kernels on other x86 generations: an AVX-512 BF16/FP16 machine put one
  # entry 2e-6 off, relative 2e-3, as it is small by cancellation). Compare against each tensor's
  # scale (tests/numerics.py), not entry by entry; measured: under 0.4 of eps32 * sqrt(128) * max.
  np.testing.assert_allclose(got, want, rtol=f32_rtol(cfg.vocab_size))
  assert float(got_aux["tokens"]) == float(want_aux["tokens"]) == 128 - 14
  for (path, g), r in zip(jax.tree_util.tree_leaves_with_path(got_g), jax.tree.leaves(want_g)):
    assert_close_to_scale(g, r, terms=cfg.vocab_size, err_msg=jax.tree_util.keystr(path))
