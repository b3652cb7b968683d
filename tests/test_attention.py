"""Every attention implementation equals the "xla" reference: outputs and gradients w.r.t. q, k, v,
with GQA, packed segments and padding, in float32 and bfloat16, on one device and on a 2x4
(fsdp, tensor) mesh; and the decoder's logits do not depend on the implementation.

On CPU "cudnn" runs `jax.nn.dot_product_attention`'s XLA composite (same call, no cuDNN) and
"splash" runs the TPU Pallas kernel in interpret mode (the kernel body as XLA ops, block by block).

Tolerances. float32: the implementations sum in a different order (and splash folds 1/sqrt(Dh)
into q before the product), and XLA:CPU's kernels differ between x86 generations, so results are
compared against each tensor's scale: k * eps32 * sqrt(T) * max|reference| (tests/numerics.py;
measured differences are ~1e-6 on O(1) values). bfloat16: every output and
gradient element is rounded to bfloat16 (8 significant bits, so one ulp at the largest magnitude
is 2^-7..2^-8 of it), and the implementations round probabilities to bfloat16 at different points
(per block vs per row), so results may differ by a few ulps: we allow 2^-5 of the reference's
largest magnitude (about 4 ulps there); measured differences are about 1 ulp.
"""

import functools

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

from numerics import f32_atol
from seedcoder_jax import model, sharding
from seedcoder_jax.model import attention as attention_lib
from seedcoder_jax.model import splash

# Only for the slow splash gradient test, whose gradients (of a mean loss) are ~1e-3: this atol is
# ~1e-2 of their scale, far above any CPU's float32 kernel differences.
F32_ATOL = 1e-5
BF16_REL = 2.0 ** -5


def _tol(want, dtype, t):
  """float32: reassociation over T keys relative to the scale; bfloat16: 2^-5 of the scale."""
  if dtype == jnp.float32:
    return f32_atol(np.asarray(want, np.float32), t)
  return BF16_REL * float(jnp.max(jnp.abs(want.astype(jnp.float32))))


def _segments(b, t, seed):
  """Packed rows: random document lengths per row, ids 1, 2, ..., then padding (id 0) at the end;
  the last row has no padding at all."""
  rng = np.random.default_rng(seed)
  rows = []
  for i in range(b):
    pad = 0 if i == b - 1 else int(rng.integers(1, t // 4))
    cuts = np.sort(rng.choice(np.arange(1, t - pad), size=2, replace=False))
    lengths = np.diff(np.concatenate([[0], cuts, [t - pad]]))
    rows.append(np.concatenate([np.repeat(np.arange(1, len(lengths) + 1), lengths),
                                np.zeros(pad, np.int64)]))
  return jnp.asarray(np.stack(rows), jnp.int32)


def _inputs(b, t, h, k, d, dtype, seed=0):
  keys = jax.random.split(jax.random.key(seed), 4)
  q = jax.random.normal(keys[0], (b, t, h, d), jnp.float32).astype(dtype)
  kk = jax.random.normal(keys[1], (b, t, k, d), jnp.float32).astype(dtype)
  v = jax.random.normal(keys[2], (b, t, k, d), jnp.float32).astype(dtype)
  cotangent = jax.random.normal(keys[3], (b, t, h, d), jnp.float32)
  return q, kk, v, cotangent, _segments(b, t, seed)


def _value_and_grads(attend, q, k, v, cotangent):
  """attend(q, k, v) and the gradients of <attend(q, k, v), cotangent> w.r.t. q, k, v."""
  def loss(q, k, v):
    return jnp.sum(attend(q, k, v).astype(jnp.float32) * cotangent)
  out = attend(q, k, v)
  return (out,) + jax.grad(loss, argnums=(0, 1, 2))(q, k, v)


def _via_dispatch(impl, segment_ids):
  index = jnp.broadcast_to(jnp.arange(segment_ids.shape[1]), segment_ids.shape)
  return lambda q, k, v: attention_lib.attention(
      q, k, v, q_segment_ids_BT=segment_ids, kv_segment_ids_BS=segment_ids, q_index_BT=index,
      kv_index_BS=index, impl=impl)


def _max_diffs(got, want):
  return [float(jnp.max(jnp.abs(g.astype(jnp.float32) - w.astype(jnp.float32))))
          for g, w in zip(got, want)]


def _assert_close(got, want, dtype, what):
  diffs = _max_diffs(got, want)
  names = ("out", "dq", "dk", "dv")
  for name, g, w, diff in zip(names, got, want, diffs):
    assert g.shape == w.shape and g.dtype == w.dtype, (what, name, g.shape, g.dtype, w.dtype)
    assert np.isfinite(np.asarray(g, np.float32)).all(), (what, name)
    tol = _tol(w, dtype, got[0].shape[1])
    assert diff <= tol, f"{what}: {name} differs by {diff:.3g} > {tol:.3g} (all: {diffs})"


def _check_against_reference(impl, dtype, *, b=2, t=200, h=8, k=2, d=16, seed=0, **splash_kw):
  q, kk, v, ct, seg = _inputs(b, t, h, k, d, dtype, seed)
  want = jax.jit(lambda *a: _value_and_grads(_via_dispatch("xla", seg), *a))(q, kk, v, ct)
  if splash_kw:
    attend = lambda q, k, v: splash.splash_attention(q, k, v, seg, seg, **splash_kw)
  else:
    attend = _via_dispatch(impl, seg)
  got = jax.jit(lambda *a: _value_and_grads(attend, *a))(q, kk, v, ct)
  _assert_close(got, want, dtype, f"{impl} {jnp.dtype(dtype).name}")
  return got, want


# T = 200 is not a multiple of 128: splash pads it to 256 (segment 0) and slices the result.
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("impl", ["cudnn", "splash"])
def test_matches_xla_reference(impl, dtype):
  _check_against_reference(impl, dtype)


@pytest.mark.parametrize("use_fused_bwd_kernel", [False, True], ids=["split_bwd", "fused_bwd"])
def test_splash_several_blocks(use_fused_bwd_kernel):
  """128-wide blocks over 384 tokens: 3x3 tiles, the ones above the diagonal skipped, segments
  that cross tile boundaries, and both backward kernels."""
  blocks = splash.default_block_sizes(384, max_block=128, use_fused_bwd_kernel=use_fused_bwd_kernel)
  _check_against_reference("splash", jnp.float32, b=1, t=384, h=4, k=2, d=16, seed=3,
                           block_sizes=blocks)


def test_splash_mha_and_mqa():
  """K == H (plain multi-head) and K == 1 (multi-query) are the two ends of GQA."""
  _check_against_reference("splash", jnp.float32, b=1, t=128, h=2, k=2, d=16, seed=4)
  _check_against_reference("splash", jnp.float32, b=1, t=128, h=4, k=1, d=16, seed=5)


def _find_shard_map(jaxpr):
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "shard_map":
      return eqn
    for sub in jax.extend.core.jaxprs_in_params(eqn.params):
      found = _find_shard_map(sub)
      if found is not None:
        return found
  return None


# K = 4 kv heads split over tensor = 4; K = 2 < 4 takes the path that repeats kv heads per query
# head before splitting.
@pytest.mark.parametrize("n_kv", [4, 2])
def test_splash_under_mesh_matches_reference(n_kv):
  b, t, h, d = 4, 200, 8, 16
  q, k, v, ct, seg = _inputs(b, t, h, n_kv, d, jnp.float32, seed=1)
  want = jax.jit(lambda *a: _value_and_grads(_via_dispatch("xla", seg), *a))(q, k, v, ct)
  mesh = sharding.make_mesh({"fsdp": 2, "tensor": 4})
  run = jax.jit(lambda *a: _value_and_grads(_via_dispatch("splash", seg), *a))
  with sharding.activate(mesh):
    got = run(q, k, v, ct)
    # The kernel runs inside shard_map, on 2 of the 4 examples and 2 of the 8 query heads.
    eqn = _find_shard_map(jax.make_jaxpr(_via_dispatch("splash", seg))(q, k, v).jaxpr)
  assert eqn is not None, "splash attention under a mesh must run inside shard_map"
  q_spec = jax.sharding.PartitionSpec(("data", "fsdp"), "tensor", None, None)
  assert q_spec in eqn.params["in_specs"]
  local_q = [x.aval.shape for x in eqn.params["jaxpr"].invars if len(x.aval.shape) == 4][0]
  assert local_q == (b // 2, h // 4, 256, d)
  _assert_close(got, want, jnp.float32, f"splash on a 2x4 mesh, {n_kv} kv heads")


def test_splash_mesh_errors():
  q, k, v, _, seg = _inputs(3, 128, 8, 4, 16, jnp.float32)
  with sharding.activate(sharding.make_mesh({"fsdp": 2, "tensor": 4})):
    with pytest.raises(ValueError, match="do not divide the batch size 3"):
      splash.splash_attention(q, k, v, seg, seg)


def test_default_block_sizes():
  assert splash.default_block_sizes(128).block_q == 128
  assert splash.default_block_sizes(384).block_kv == 384
  sizes = splash.default_block_sizes(8192)
  assert (sizes.block_q, sizes.block_kv, sizes.block_q_dkv, sizes.block_kv_dq) == (512,) * 4
  assert splash.default_block_sizes(640).block_q == 128  # 640 = 5 x 128: no larger divisor <= 512
  assert splash.default_block_sizes(1024, max_block=256).block_q == 256
  fused = splash.default_block_sizes(512, use_fused_bwd_kernel=True)
  assert fused.use_fused_bwd_kernel and fused.block_q_dq is None and fused.has_backward_blocks
  with pytest.raises(ValueError, match="multiple of 128"):
    splash.default_block_sizes(200)
  with pytest.raises(ValueError, match="max_block"):
    splash.default_block_sizes(256, max_block=100)


def test_splash_input_errors():
  q, k, v, _, seg = _inputs(1, 128, 4, 2, 16, jnp.float32)
  with pytest.raises(ValueError, match="query length 128 must equal key length 64"):
    splash.splash_attention(q, k[:, :64], v[:, :64], seg, seg[:, :64])
  with pytest.raises(ValueError, match="multiple of kv heads"):
    splash.splash_attention(q[:, :, :3], k, v, seg, seg)
  bad = splash.BlockSizes(block_q=256, block_kv=256, block_q_dkv=256,
                                        block_kv_dkv=256, block_q_dq=256, block_kv_dq=256)
  with pytest.raises(ValueError, match="divide the \\(padded\\) sequence length 128"):
    splash.splash_attention(q, k, v, seg, seg, block_sizes=bad)
  with pytest.raises(ValueError, match="backward blocks"):
    splash.splash_attention(q, k, v, seg, seg,
                            block_sizes=splash.BlockSizes(block_q=128, block_kv=128))


def test_cudnn_on_gpu_rejects_float32(monkeypatch):
  """cuDNN's fused attention takes only bf16/fp16; say so before JAX fails deep in tracing.
  (No GPU here: pretend the backend is one, the check comes before any GPU work.)"""
  q, k, v, _, seg = _inputs(1, 16, 4, 2, 16, jnp.float32)
  mask = attention_lib.make_mask(seg, seg, *(jnp.broadcast_to(jnp.arange(16), (1, 16)),) * 2)
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  with pytest.raises(ValueError, match="bfloat16 or float16"):
    attention_lib.cudnn_attention(q, k, v, mask)


def test_cudnn_cross_attention_without_is_causal():
  """With T != S (a query chunk against a longer cache) the mask alone decides: is_causal, which
  cuDNN aligns at the top-left corner, is not passed."""
  b, t, s, h, k, d = 1, 4, 12, 4, 2, 16
  q, _, _, _, _ = _inputs(b, t, h, k, d, jnp.float32)
  _, kk, v, _, _ = _inputs(b, s, h, k, d, jnp.float32, seed=1)
  q_index = jnp.arange(s - t, s)[None]
  kv_index = jnp.arange(s)[None]
  ones = lambda n: jnp.ones((b, n), jnp.int32)
  args = dict(q_segment_ids_BT=ones(t), kv_segment_ids_BS=ones(s), q_index_BT=q_index,
              kv_index_BS=kv_index)
  want = jax.jit(lambda *a: attention_lib.attention(*a, impl="xla", **args))(q, kk, v)
  got = jax.jit(lambda *a: attention_lib.attention(*a, impl="cudnn", **args))(q, kk, v)
  assert float(jnp.max(jnp.abs(got - want))) <= _tol(want, jnp.float32, s)


# The decoder with each implementation. T = 128 is one splash block; packed rows with padding and
# per-document positions, as the input pipeline makes them.
def _model_batch(b=2, t=128, seed=0):
  seg = _segments(b, t, seed)
  starts = jnp.concatenate([jnp.ones((b, 1), bool), seg[:, 1:] != seg[:, :-1]], axis=1)
  index = jnp.broadcast_to(jnp.arange(t), (b, t))
  start_index = jax.lax.cummax(jnp.where(starts, index, 0), axis=1)
  positions = index - start_index
  tokens = jax.random.randint(jax.random.key(seed), (b, t), 0, model.preset("tiny").vocab_size)
  return tokens, seg, positions


@functools.lru_cache(maxsize=None)
def _logits(compute_dtype, impl):
  cfg = model.preset("tiny", compute_dtype=compute_dtype, attention_impl=impl)
  tokens, seg, positions = _model_batch()
  return jax.jit(lambda p: model.forward(cfg, p, tokens, segment_ids=seg, positions=positions))(
      model.init_params(cfg, seed=2))


@pytest.mark.parametrize("compute_dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("impl", ["cudnn", "splash"])
def test_forward_matches_xla(impl, compute_dtype):
  want = _logits(compute_dtype, "xla")
  got = _logits(compute_dtype, impl)
  diff = float(jnp.max(jnp.abs(got - want)))
  # Logits are float32; in bfloat16 a one-ulp difference in an attention output can move a
  # matmul operand's rounding, so allow the bf16 relative tolerance of the logits' scale.
  tol = _tol(want, jnp.float32 if compute_dtype == "float32" else jnp.bfloat16, want.shape[1])
  assert diff <= tol, f"{impl} {compute_dtype}: logits differ by {diff:.3g} > {tol:.3g}"


@pytest.mark.slow
def test_splash_training_gradients_on_mesh_match_xla():
  """Parameter gradients of the tiny model on a 2x4 mesh, scanned and rematerialised layers:
  the kernel's custom VJP composes with nn.scan, nn.remat and shard_map."""
  cfg = model.preset("tiny", remat="full")
  tokens, seg, positions = _model_batch(b=2, t=128, seed=5)
  mesh = sharding.make_mesh({"fsdp": 2, "tensor": 4})
  params = sharding.init_sharded(cfg, mesh, seed=3)

  def grads(c):
    def loss(p):
      logits = model.forward(c, p, tokens, segment_ids=seg, positions=positions)
      return jnp.mean(jax.nn.logsumexp(logits, axis=-1) - jnp.take_along_axis(
          logits, tokens[..., None], axis=-1)[..., 0])
    with sharding.activate(mesh):
      return jax.jit(jax.grad(loss))(params)

  want = grads(cfg)
  got = grads(cfg.replace(attention_impl="splash"))
  diffs = jax.tree.map(lambda g, w: float(jnp.max(jnp.abs(g - w))), got, want)
  worst = max(jax.tree.leaves(diffs))
  assert worst <= F32_ATOL, diffs
