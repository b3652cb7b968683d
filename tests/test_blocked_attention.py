"""Block-skipping causal self-attention equals the reference attention, values and gradients.

float32 tolerances: the block-wise softmax (running max and sum) reassociates sums over up to T
keys, so results are compared against each tensor's scale with T terms (tests/numerics.py), not
with an absolute tolerance tuned to one CPU's kernels."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from numerics import assert_close_to_scale, f32_rtol
from seedcoder_jax.model import attention, blocked_attention


def _inputs(b=2, t=256, h=4, k=2, d=8, seed=0):
  keys = jax.random.split(jax.random.key(seed), 3)
  q = jax.random.normal(keys[0], (b, t, h, d))
  kk = jax.random.normal(keys[1], (b, t, k, d))
  v = jax.random.normal(keys[2], (b, t, k, d))
  # Packed rows: documents of uneven lengths that straddle block boundaries, then padding (0).
  seg = np.zeros((b, t), np.int32)
  seg[0, :100], seg[0, 100:170], seg[0, 170:250] = 1, 2, 3
  seg[1, :] = 1
  return q, kk, v, jnp.asarray(seg)


def _reference(q, kk, v, seg):
  index = jnp.broadcast_to(jnp.arange(q.shape[1]), seg.shape)
  return attention.xla_attention(q, kk, v, attention.make_mask(seg, seg, index, index))


@pytest.mark.parametrize("block", [64, 128])
def test_blocked_equals_reference_with_packing(block):
  q, kk, v, seg = _inputs()
  want = _reference(q, kk, v, seg)
  got = jax.jit(blocked_attention.blocked_self_attention, static_argnames="block")(
      q, kk, v, seg, block=block)
  assert_close_to_scale(got, want, terms=q.shape[1])


def test_blocked_gradients_equal_reference():
  q, kk, v, seg = _inputs(t=256)
  w = jax.random.normal(jax.random.key(9), q.shape)

  def loss(fn):
    return jax.jit(jax.grad(lambda a, b, c: (fn(a, b, c) * w).sum(), argnums=(0, 1, 2)))

  want = loss(lambda a, b, c: _reference(a, b, c, seg))(q, kk, v)
  got = loss(lambda a, b, c: blocked_attention.blocked_self_attention(a, b, c, seg, block=64))(
      q, kk, v)
  for g, r in zip(got, want):
    assert_close_to_scale(g, r, terms=q.shape[1])


def test_block_size_choice():
  assert blocked_attention.block_size(20) is None         # shorter than a block
  assert blocked_attention.block_size(32) is None         # one block: nothing to skip
  assert blocked_attention.block_size(64) == 32           # 2 blocks of the minimum
  assert blocked_attention.block_size(256) == 32          # 8 blocks (the tiny preset's rows)
  assert blocked_attention.block_size(512) == 64          # at most 8 blocks
  assert blocked_attention.block_size(8192) == 1024
  assert blocked_attention.block_size(300) is None        # not divisible


def test_mismatched_shapes_are_refused():
  q, kk, v, seg = _inputs(t=256)
  with pytest.raises(ValueError, match="T == S divisible"):
    blocked_attention.blocked_self_attention(q, kk[:, :128], v[:, :128], seg, block=64)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_flash_values_and_gradients_equal_reference(dtype):
  q, kk, v, seg = _inputs(t=256)
  q, kk, v = (x.astype(dtype) for x in (q, kk, v))
  w = jax.random.normal(jax.random.key(9), q.shape)

  def value_and_grads(fn):
    f = lambda a, b, c: (fn(a, b, c).astype(jnp.float32) * w).sum()
    return jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2)))(q, kk, v)

  want_v, want_g = value_and_grads(lambda a, b, c: _reference(a, b, c, seg))
  got_v, got_g = value_and_grads(
      lambda a, b, c: blocked_attention.flash_self_attention(a, b, c, seg, 64))
  for g, r in zip(got_g, want_g):
    assert g.dtype == r.dtype
  if dtype == jnp.float32:
    # The value is sum(out * w): each output entry may differ by f32_rtol(T) * max|out| (as in
    # the tests above); weighted by w and summed with independent signs, ||w||_2 times that.
    out_scale = float(jnp.max(jnp.abs(_reference(q, kk, v, seg))))
    tol = f32_rtol(q.shape[1]) * out_scale * float(jnp.linalg.norm(w))
    assert abs(float(got_v) - float(want_v)) <= tol, (float(got_v), float(want_v), tol)
    for g, r in zip(got_g, want_g):
      assert_close_to_scale(g, r, terms=q.shape[1])
    return
  # bfloat16: outputs and gradients are rounded to 8 significant bits at different points (per
  # block vs per row); 0.05 relative (~6 ulps) plus 0.05 absolute for entries small by cancellation.
  tol = dict(rtol=0.05, atol=0.05)
  np.testing.assert_allclose(got_v, want_v, **tol)
  for g, r in zip(got_g, want_g):
    np.testing.assert_allclose(np.asarray(g, np.float32), np.asarray(r, np.float32), **tol)


def test_decoder_with_flash_equals_xla_reference():
  """The default implementation in the model: logits and parameter gradients at T=256 (2 blocks)."""
  from seedcoder_jax import model
  cfg = model.preset("tiny", attention_impl="flash")
  params = model.init_params(cfg, seed=3)
  tokens = jax.random.randint(jax.random.key(4), (2, 256), 0, cfg.vocab_size)
  _, _, _, seg = _inputs(t=256)

  def loss(cfg):
    return jax.jit(jax.value_and_grad(
        lambda p: model.forward(cfg, p, tokens, segment_ids=seg).std()))(params)

  got_value, got_grads = loss(cfg)
  want_value, want_grads = loss(cfg.replace(attention_impl="xla"))
  # The std of the logits, and its gradients: reassociation relative to each tensor's scale, the
  # vocabulary's 512 logits the longest reduction (rtol 1e-3 per entry let a small-by-cancellation
  # entry be off by a machine's last bits only up to 1e-6 absolute, under one ulp of the largest).
  np.testing.assert_allclose(got_value, want_value, rtol=f32_rtol(cfg.vocab_size))
  for (path, g), r in zip(jax.tree_util.tree_leaves_with_path(got_grads),
                          jax.tree.leaves(want_grads)):
    assert_close_to_scale(g, r, terms=cfg.vocab_size, err_msg=jax.tree_util.keystr(path))
