"""Hand-written backward passes of model/linear.py equal autodiff's."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from numerics import assert_close_to_scale
from seedcoder_jax.model import linear

# (equation, x shape, w shape): every projection the decoder uses.
CASES = [
    ("btd,df->btf", (2, 5, 8), (8, 12)),
    ("btd,dhk->bthk", (2, 5, 8), (8, 3, 4)),
    ("bthk,hkd->btd", (2, 5, 3, 4), (3, 4, 8)),
    ("btd,vd->btv", (2, 5, 8), (16, 8)),
]


def _plain(equation, x, w):
  return jnp.einsum(equation, x, w, preferred_element_type=jnp.float32)


@pytest.mark.parametrize("equation,x_shape,w_shape", CASES)
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_projection_values_and_gradients_equal_autodiff(equation, x_shape, w_shape, dtype):
  kx, kw, kc = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(kx, x_shape).astype(dtype)
  w = jax.random.normal(kw, w_shape).astype(dtype)
  out_shape = jax.eval_shape(lambda: _plain(equation, x, w)).shape
  cot = jax.random.normal(kc, out_shape)  # a non-uniform cotangent

  def loss(f):
    return lambda x, w: jnp.sum(f(equation, x, w) * cot)

  got = jax.grad(loss(linear.projection), argnums=(0, 1))(x, w)
  want = jax.grad(loss(_plain), argnums=(0, 1))(x, w)
  if dtype == jnp.float32:
    # The hand-written VJP contracts the same operands in another layout: float32 reassociation
    # over at most 12 terms, relative to each tensor's scale (tests/numerics.py).
    assert_close_to_scale(linear.projection(equation, x, w), _plain(equation, x, w), terms=12)
    for g, r in zip(got, want):
      assert g.dtype == r.dtype == dtype and g.shape == r.shape
      assert_close_to_scale(g, r, terms=12)
    return
  # bfloat16 results are rounded to 8 significant bits (one ulp is 2^-8..2^-7 of a value) at
  # different points: 2e-2 is a few ulps of each entry, 8e-2 absolute a few ulps of the largest
  # (~8) for entries that are small by cancellation.
  np.testing.assert_allclose(linear.projection(equation, x, w), _plain(equation, x, w), rtol=2e-2)
  for g, r in zip(got, want):
    assert g.dtype == r.dtype == dtype and g.shape == r.shape
    np.testing.assert_allclose(np.asarray(g, np.float32), np.asarray(r, np.float32),
                               rtol=2e-2, atol=8e-2)


def test_swiglu_values_and_gradients_equal_autodiff():
  kg, ku, kc = jax.random.split(jax.random.key(1), 3)
  gate = 3.0 * jax.random.normal(kg, (2, 7, 16))  # both tails of the sigmoid
  up = jax.random.normal(ku, (2, 7, 16))
  cot = jax.random.normal(kc, (2, 7, 16))
  plain = lambda g, u: jax.nn.silu(g) * u
  # Elementwise maths, no reductions: each entry within a few ulps of itself (rtol 1e-6 ~ 8 eps32;
  # the VJP's formula ~80), atol 1e-6 for silu' near its zero, where 1 + g(1 - s) cancels (its
  # absolute error is ~eps32 * |g| with |g| < ~10).
  np.testing.assert_allclose(linear.swiglu(gate, up), plain(gate, up), rtol=1e-6)
  got = jax.grad(lambda g, u: jnp.sum(linear.swiglu(g, u) * cot), argnums=(0, 1))(gate, up)
  want = jax.grad(lambda g, u: jnp.sum(plain(g, u) * cot), argnums=(0, 1))(gate, up)
  for g, r in zip(got, want):
    np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-6)


def test_projection_under_remat_and_scan_equals_autodiff():
  """The decoder's setting: scanned layers, with and without a remat policy."""
  x = jax.random.normal(jax.random.key(2), (2, 4, 8))
  ws = jax.random.normal(jax.random.key(3), (3, 8, 8)) * 0.3

  def net(proj, policy):
    def body(h, w):
      return h + jnp.tanh(proj("btd,df->btf", h, w)), None
    if policy is not None:
      body = jax.checkpoint(body, policy=policy)
    return lambda x, ws: jnp.sum(jax.lax.scan(body, x, ws)[0] ** 2)

  want = jax.grad(net(_plain, None), argnums=(0, 1))(x, ws)
  for policy in (None, jax.checkpoint_policies.nothing_saveable,
                 jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims):
    got = jax.grad(net(linear.projection, policy), argnums=(0, 1))(x, ws)
    for g, r in zip(got, want):
      # Gradients over 3 scanned layers of 8-wide contractions and 2x4 positions: reassociation
      # relative to the tensor's scale (~13 here; a raw atol of 1e-6 is under one ulp of that).
      assert_close_to_scale(g, r, terms=8)


@pytest.mark.parametrize("equation", ["btd,df->bt", "bd,df->bdf", "bdd,df->bf"])
def test_projection_refuses_equations_without_a_plain_transpose(equation):
  with pytest.raises(ValueError, match="exactly two"):
    linear.projection(equation, jnp.ones((2, 3, 4)[:len(equation.split(",")[0])]),
                      jnp.ones((4, 5)))


def test_decoder_dots_policy_still_saves_the_projection_outputs(capsys):
  """A remat policy sees a custom VJP as one opaque call: "dots" must save projections by name."""
  from seedcoder_jax.model import decoder

  x = jnp.ones((2, 4, 8))
  w1, w2 = jnp.ones((8, 16)), jnp.ones((16, 8))

  def net(proj):
    return lambda x, w1, w2: jnp.sum(proj("btf,fd->btd", jnp.sin(proj("btd,df->btf", x, w1)), w2))

  def saved_hidden(proj):  # the saved [2, 4, 16] first-projection outputs (public API: printed)
    f = jax.checkpoint(net(proj), policy=decoder.REMAT_POLICIES["dots"])
    jax.ad_checkpoint.print_saved_residuals(f, x, w1, w2)
    return [line for line in capsys.readouterr().out.splitlines() if "[2,4,16]" in line]

  assert len(saved_hidden(_plain)) == 1
  assert len(saved_hidden(linear.projection)) == 1
