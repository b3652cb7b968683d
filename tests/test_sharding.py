"""Mesh construction, clear errors, and sharded execution equal to a single device."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seedcoder_jax import model
from seedcoder_jax import sharding as sh
from seedcoder_jax.train import optimizer as opt_lib
from seedcoder_jax.train import step as step_lib

CFG = model.preset("tiny")


def test_fake_devices():
  assert jax.device_count() == 8, "tests/conftest.py should give 8 fake CPU devices"


def test_mesh_shape_resolution_and_axis_types():
  mesh = sh.make_mesh({"fsdp": -1, "tensor": 2})
  assert dict(mesh.shape) == {"data": 1, "fsdp": 4, "tensor": 2}
  assert all(t == jax.sharding.AxisType.Auto for t in mesh.axis_types)


@pytest.mark.parametrize("shape, message", [
    ({"fsdp": 3}, "has 3 devices but 8 are available"),
    ({"fsdp": -1, "tensor": 3}, "product 3 does not divide the 8 devices"),
    ({"fsdp": -1, "tensor": -1}, "at most one mesh axis may be -1"),
    ({"model": 8}, "unknown mesh axes"),
])
def test_impossible_mesh_is_refused(shape, message):
  with pytest.raises(sh.MeshError, match=message):
    sh.make_mesh(shape)


def test_heads_not_divisible_by_tensor_axis_is_refused():
  mesh = sh.make_mesh({"fsdp": 1, "tensor": 8})
  with pytest.raises(sh.MeshError, match=r"q_proj.*size 8 .*\('tensor',\) of 8|kv_heads|k_proj.*size 4"):
    sh.check_params_fit(CFG, mesh)


def test_batch_not_divisible_is_refused():
  mesh = sh.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  with pytest.raises(sh.MeshError, match="global batch size 6 is not divisible by data\\*fsdp = 2\\*2 = 4"):
    sh.check_batch_fits(6, mesh)


def _batch(b=8, t=16, seed=0):
  rng = np.random.default_rng(seed)
  tok = rng.integers(0, CFG.vocab_size, (b, t + 1))
  seg = np.ones((b, t), np.int32)
  seg[:, t // 2:] = 2  # two packed documents per row
  pos = np.concatenate([np.arange(t // 2), np.arange(t - t // 2)])[None].repeat(b, 0)
  return {"inputs": tok[:, :-1].astype(np.int32), "targets": tok[:, 1:].astype(np.int32),
          "segment_ids": seg, "positions": pos.astype(np.int32), "weights": np.ones((b, t), np.float32)}


def test_sharded_init_matches_single_device_init():
  mesh = sh.make_mesh({"fsdp": 2, "tensor": 4})
  sharded = sh.init_sharded(CFG, mesh, seed=3)
  plain = model.init_params(CFG, seed=3)
  spec = sharded["layers"]["attn"]["q_proj"]["kernel"].sharding.spec
  assert tuple(spec) == (None, "fsdp", "tensor", None)
  assert tuple(sharded["embed"]["embedding"].sharding.spec) == ("tensor", "fsdp")
  for a, b in zip(jax.tree.leaves(sharded), jax.tree.leaves(plain)):
    np.testing.assert_array_equal(a, b)


def test_forward_and_gradient_on_2x4_mesh_equal_single_device():
  params = model.init_params(CFG, seed=1)
  batch = _batch()

  def loss(p, b):
    nll, _, n = step_lib.losses.cross_entropy(
        model.forward(CFG, p, b["inputs"], segment_ids=b["segment_ids"], positions=b["positions"]),
        b["targets"], b["weights"])
    return nll / n

  ref_loss, ref_grads = jax.jit(jax.value_and_grad(loss))(params, batch)
  mesh = sh.make_mesh({"fsdp": 2, "tensor": 4})
  shardings = sh.param_shardings(CFG, mesh)
  p = jax.device_put(params, shardings)
  b = sh.place_batch(batch, mesh)
  with sh.activate(mesh):
    f = jax.jit(jax.value_and_grad(loss), out_shardings=(None, shardings))
    out_loss, grads = f(p, b)
    logits = jax.jit(lambda p, b: model.forward(CFG, p, b["inputs"]))(p, b)
  expected = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(("data", "fsdp"), None, "tensor"))
  assert logits.sharding.is_equivalent_to(expected, 3), logits.sharding
  np.testing.assert_allclose(logits, model.forward(CFG, params, batch["inputs"]), atol=2e-5)
  np.testing.assert_allclose(out_loss, ref_loss, rtol=1e-6)
  for (path, g), r in zip(jax.tree_util.tree_leaves_with_path(grads), jax.tree.leaves(ref_grads)):
    np.testing.assert_allclose(g, r, atol=1e-6, rtol=1e-5, err_msg=jax.tree_util.keystr(path))


@pytest.mark.parametrize("loss_chunk", [0, 8])
def test_train_step_on_mesh_with_accumulation_equals_single_device(loss_chunk):
  """3 updates on a 2x2x2 mesh with 2 microbatches equal 3 plain single-device updates (with
  loss_chunk: the sharded step's chunked loss against the single device's whole logits)."""
  optimizer = opt_lib.make_optimizer(opt_lib.OptimizerConfig(warmup_steps=1, total_steps=10))
  batch = _batch()
  state = step_lib.init_state(CFG, optimizer, seed=2)
  plain = jax.jit(lambda s, b: step_lib.train_step(CFG, optimizer, s, b))
  cfg = CFG.replace(loss_chunk=loss_chunk)
  ref_losses = []
  for _ in range(3):
    state, m = plain(state, batch)
    ref_losses.append(float(m["loss"]))

  mesh = sh.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  sharded = step_lib.init_sharded_state(cfg, optimizer, mesh, seed=2)
  step = step_lib.jit_train_step(cfg, optimizer, mesh, grad_accum_steps=2)
  losses = []
  with sh.activate(mesh):
    b = sh.place_batch(batch, mesh)
    for _ in range(3):
      sharded, m = step(sharded, b)
      losses.append(float(m["loss"]))
  np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
  assert losses[2] < losses[0]
  for a, r in zip(jax.tree.leaves(sharded.params), jax.tree.leaves(state.params)):
    np.testing.assert_allclose(a, r, atol=1e-5)  # Adam amplifies 1e-7 gradient noise near 0


def test_maybe_initialize_distributed_is_noop_on_one_host(monkeypatch):
  for var in ("TPU_WORKER_HOSTNAMES", "SLURM_NTASKS", "JAX_COORDINATOR_ADDRESS"):
    monkeypatch.delenv(var, raising=False)
  monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "localhost")
  assert sh.maybe_initialize_distributed() is False
