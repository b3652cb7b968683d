"""The decoder's behaviour: shapes, causality and packing by gradient, remat/scan equivalence,
mixed precision, config validation and presets."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from numerics import assert_close_to_scale, f32_rtol
from seedcoder_jax import model

CFG = model.preset("tiny")
# Jitted forward (the config is a frozen, hashable dataclass): eager linen dispatch is slow.
forward = jax.jit(model.forward, static_argnums=0)


def _tokens(b=2, t=16, seed=0, vocab=CFG.vocab_size):
  return jax.random.randint(jax.random.key(seed), (b, t), 0, vocab)


@pytest.fixture(scope="module")
def params():
  return model.init_params(CFG, seed=1)


def test_forward_shape_and_dtype(params):
  logits = forward(CFG, params, _tokens())
  assert logits.shape == (2, 16, CFG.vocab_size)
  assert logits.dtype == jnp.float32
  assert np.isfinite(np.asarray(logits)).all()


def test_hidden_states_are_what_the_head_reads(params):
  tokens = _tokens()
  hidden_BTD = jax.jit(model.hidden_states, static_argnums=0)(CFG, params, tokens)
  assert hidden_BTD.shape == (2, 16, CFG.d_model) and hidden_BTD.dtype == jnp.float32
  logits = hidden_BTD @ params["lm_head"]["kernel"]
  # The same head matmul, outside the jitted forward: float32 reassociation over d_model.
  assert_close_to_scale(logits, forward(CFG, params, tokens), terms=CFG.d_model)


def _input_grad_norms(cfg, params, t, out_index, **kw):
  """|d logits[0, out_index] / d embedding(input t)| for every position t.

  Tokens are 0..T-1, all distinct, so the gradient of embedding row t is that of position t.
  """
  tokens = jnp.arange(t)[None]

  def f(embedding):
    p = dict(params, embed={"embedding": embedding})
    return forward(cfg, p, tokens, **kw)[0, out_index].sum()

  g_VD = jax.jit(jax.grad(f))(params["embed"]["embedding"])
  return np.asarray(jnp.linalg.norm(g_VD[:t], axis=-1))


def test_causality_by_gradient(params):
  for out in (0, 5, 11):
    g = _input_grad_norms(CFG, params, 12, out)
    assert (g[out + 1:] == 0).all(), f"output {out} depends on a later position: {g}"
    assert (g[:out + 1] > 0).all(), f"output {out} ignores an earlier position: {g}"


def test_packed_segments_do_not_attend_across_documents(params):
  segment_ids = jnp.array([[1, 1, 1, 1, 2, 2, 2, 2, 2, 3, 3, 0]])
  positions = jnp.array([[0, 1, 2, 3, 0, 1, 2, 3, 4, 0, 1, 0]])
  g = _input_grad_norms(CFG, params, 12, 7, segment_ids=segment_ids, positions=positions)
  assert (g[:4] == 0).all() and (g[8:] == 0).all()
  assert (g[4:8] > 0).all()


def test_packed_row_equals_separate_documents(params):
  a, b = _tokens(1, 5, seed=2), _tokens(1, 7, seed=3)
  packed = jnp.concatenate([a, b], 1)
  seg = jnp.array([[1] * 5 + [2] * 7])
  pos = jnp.array([list(range(5)) + list(range(7))])
  out = forward(CFG, params, packed, segment_ids=seg, positions=pos)
  # Other shapes, other kernels and summation orders (d_ff the longest contraction): float32
  # reassociation relative to the logits' scale; a leak across documents moves them by O(1e-2+).
  assert_close_to_scale(out[:, :5], forward(CFG, params, a), terms=CFG.d_ff)
  assert_close_to_scale(out[:, 5:], forward(CFG, params, b), terms=CFG.d_ff)


def _loss_and_grads(cfg, params, tokens):
  def loss(p):
    logits = forward(cfg, p, tokens[:, :-1])
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), tokens[:, 1:, None], -1))
  return jax.value_and_grad(loss)(params)


@pytest.mark.parametrize("remat", ["none", "full", "dots"])
@pytest.mark.parametrize("scan", [True, False])
def test_remat_and_scan_equal_plain_model(params, remat, scan):
  tokens = _tokens(2, 17)
  ref_loss, ref_grads = _loss_and_grads(CFG.replace(scan_layers=False),
                                        model.unstack_layers(params, CFG.n_layers), tokens)
  cfg = CFG.replace(remat=remat, scan_layers=scan)
  p = params if scan else model.unstack_layers(params, CFG.n_layers)
  loss, grads = jax.jit(lambda p: _loss_and_grads(cfg, p, tokens))(p)
  if scan:
    grads = model.unstack_layers(grads, CFG.n_layers)
  # Remat recomputes and scan reorders the same float32 ops: reassociation relative to each
  # tensor's scale (the vocabulary's 512 the longest reduction), not a raw atol, which sits near
  # or under one ulp of these gradients' largest entries on some leaves.
  np.testing.assert_allclose(loss, ref_loss, rtol=f32_rtol(CFG.vocab_size))
  for (path, g), r in zip(jax.tree_util.tree_leaves_with_path(grads), jax.tree.leaves(ref_grads)):
    assert_close_to_scale(g, r, terms=CFG.vocab_size, err_msg=jax.tree_util.keystr(path))


def test_scan_compile_size_does_not_grow_with_depth():
  """With scanned layers the compiled program has one copy of the block, whatever the depth."""
  sizes = []
  for n_layers in (2, 8):
    cfg = CFG.replace(n_layers=n_layers)
    p = model.abstract_params(cfg)
    hlo = jax.jit(lambda p, t: model.forward(cfg, p, t)).lower(
        p, jax.ShapeDtypeStruct((1, 8), jnp.int32)).as_text()
    sizes.append(hlo.count("dot_general"))
  assert sizes[0] == sizes[1], sizes


def test_bfloat16_compute_close_to_float32(params):
  tokens = _tokens(2, 16)
  ref = forward(CFG, params, tokens)
  out = forward(CFG.replace(compute_dtype="bfloat16"), params, tokens)
  assert out.dtype == jnp.float32
  # bf16 operands carry ~3 significant digits; logits of this init are O(1). Bounds of bf16
  # rounding, far above any float32 kernel difference between CPUs.
  assert float(jnp.max(jnp.abs(out - ref))) < 5e-2
  assert float(jnp.mean(jnp.abs(out - ref))) < 1e-2


def test_rope_scaling_changes_only_long_wavelengths():
  from seedcoder_jax.model import rope
  base = rope.inverse_frequencies(128, 500_000.0, None)
  scaled = rope.inverse_frequencies(128, 500_000.0, model.RopeScaling(factor=8.0))
  assert np.allclose(scaled[:8], base[:8])  # high frequencies kept
  assert np.allclose(scaled[-4:], base[-4:] / 8.0)  # low frequencies slowed by the factor


def test_tied_embeddings_have_no_head():
  cfg = CFG.replace(tie_embeddings=True)
  p = model.init_params(cfg)
  assert "lm_head" not in p
  logits = forward(cfg, p, _tokens())
  x = p["embed"]["embedding"]
  assert logits.shape[-1] == x.shape[0]
  assert sum(v.size for v in jax.tree.leaves(p)) == cfg.n_params


def test_presets_and_parameter_counts():
  assert model.preset("seed_coder_8b") == model.preset("8b")
  c = model.preset("8b")
  assert (c.n_layers, c.d_model, c.d_ff, c.n_heads, c.n_kv_heads, c.head_dim) == (32, 4096, 14336, 32, 8, 128)
  assert (c.vocab_size, c.rope_theta, c.rms_norm_eps, c.tie_embeddings) == (155_136, 500_000.0, 1e-6, False)
  assert round(c.n_params / 1e9, 1) == 8.3  # 8.25B: the paper's "8.2B"
  assert abs(model.preset("smollm2_135m").n_params - 134_515_008) == 0
  for name in model.PRESETS:
    abstract = model.abstract_params(model.preset(name))
    assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract)) == model.preset(name).n_params


@pytest.mark.parametrize("change, message", [
    (dict(n_heads=6, n_kv_heads=4), "not a multiple of n_kv_heads"),
    (dict(attention_impl="flashy"), "attention_impl"),
    (dict(remat="some"), "remat"),
    (dict(head_dim=15), "even"),
    (dict(d_model=0), "d_model=0"),
])
def test_invalid_config_is_refused(change, message):
  with pytest.raises(ValueError, match=message):
    CFG.replace(**change)


def test_unknown_preset_is_refused():
  with pytest.raises(ValueError, match="unknown model preset 'nope'"):
    model.preset("nope")
