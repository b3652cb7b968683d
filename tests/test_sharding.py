"""Mesh construction, clear errors, and sharded execution equal to a single device."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from numerics import assert_close_to_scale, f32_rtol
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
  # Sharding splits the contractions (d_ff 384 the longest in the forward pass, the vocabulary's
  # 512 in the backward pass) and the batch's 128 tokens across devices and sums the pieces in
  # another order: float32 reassociation, relative to each tensor's scale (tests/numerics.py).
  # The gradients are small (a mean loss), so this is stricter than the fixed atol of 1e-6 it
  # replaces, and independent of the machine's kernels.
  assert_close_to_scale(logits, model.forward(CFG, params, batch["inputs"]), terms=CFG.d_ff)
  np.testing.assert_allclose(out_loss, ref_loss, rtol=f32_rtol(CFG.vocab_size))
  for (path, g), r in zip(jax.tree_util.tree_leaves_with_path(grads), jax.tree.leaves(ref_grads)):
    assert_close_to_scale(g, r, terms=CFG.vocab_size, err_msg=jax.tree_util.keystr(path))


@pytest.mark.parametrize("loss_chunk", [0, 8])
def test_train_step_on_mesh_with_accumulation_equals_single_device(loss_chunk):
  """3 updates on a 2x2x2 mesh with 2 microbatches equal 3 plain single-device updates (with
  loss_chunk: the sharded step's chunked loss against the single device's whole logits).

  Compared before the optimizer (loss and gradient norm of every step: a wrong microbatch weight
  or scale shows there, while Adam's update is blind to a gradient's scale) and after it relative
  to the size of the update. Not entry by entry with a raw atol: Adam divides by sqrt(v) + eps,
  and where a gradient entry is near 0 (v tiny) the float32 reassociation noise of sharding and
  accumulation (~1e-7 of the gradients' scale) moves that entry's update by a sizeable part of the
  learning rate. Which entries those are depends on XLA:CPU's kernels: an AVX-512 BF16/FP16
  machine had 1 of 32,768 parameters 1.6e-5 off, another CPU 9e-6, with lr 3e-4 per step."""
  opt_cfg = opt_lib.OptimizerConfig(warmup_steps=1, total_steps=10)
  optimizer = opt_lib.make_optimizer(opt_cfg)
  batch = _batch()
  state = step_lib.init_state(CFG, optimizer, seed=2)
  initial = state.params
  plain = jax.jit(lambda s, b: step_lib.train_step(CFG, optimizer, s, b))
  cfg = CFG.replace(loss_chunk=loss_chunk)
  ref_metrics = []
  for _ in range(3):
    state, m = plain(state, batch)
    ref_metrics.append(m)

  mesh = sh.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  sharded = step_lib.init_sharded_state(cfg, optimizer, mesh, seed=2)
  step = step_lib.jit_train_step(cfg, optimizer, mesh, grad_accum_steps=2)
  got_metrics = []
  with sh.activate(mesh):
    b = sh.place_batch(batch, mesh)
    for _ in range(3):
      sharded, m = step(sharded, b)
      got_metrics.append(m)
  # Loss and gradient norm, float32: reassociation as for the gradients above (the vocabulary's
  # 512 the longest reduction; the norm's sum of squares has no cancellation to amplify it).
  for key in ("loss", "grad_norm"):
    np.testing.assert_allclose([float(m[key]) for m in got_metrics],
                               [float(m[key]) for m in ref_metrics],
                               rtol=f32_rtol(CFG.vocab_size), err_msg=key)
  assert float(got_metrics[2]["loss"]) < float(got_metrics[0]["loss"])
  # Updated parameters: each leaf's total update (3 steps, each entry moved by about the LR) to
  # 1e-3 of its norm; measured 1e-4 at most. A wrong update moves most entries, i.e. O(1).
  lr_sum = sum(float(opt_lib.learning_rate_schedule(opt_cfg)(i)) for i in range(3))
  for (path, a), r, p0 in zip(jax.tree_util.tree_leaves_with_path(sharded.params),
                              jax.tree.leaves(state.params), jax.tree.leaves(initial)):
    got_update = np.asarray(a, np.float64) - np.asarray(p0, np.float64)
    want_update = np.asarray(r, np.float64) - np.asarray(p0, np.float64)
    assert np.linalg.norm(want_update) > 0.1 * lr_sum * np.sqrt(want_update.size)  # it moved
    error = np.linalg.norm(got_update - want_update) / np.linalg.norm(want_update)
    assert error <= 1e-3, f"{jax.tree_util.keystr(path)}: update differs by {error:.3g} of its norm"


CLUSTER_VARS = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID", "SLURM_JOB_ID",
                "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID",
                "TPU_WORKER_HOSTNAMES", "TPU_PROCESS_ADDRESSES", "TPU_SKIP_MDS_QUERY",
                "MEGASCALE_NUM_SLICES")
GCE_WORKERS = "t1v-n-0:0:10.0.0.2,t1v-n-1:1:10.0.0.3,t1v-n-2:2:10.0.0.4,t1v-n-3:3:10.0.0.5"


@pytest.fixture
def cluster_env(monkeypatch):
  """A simulated host: no cluster variables, not a TPU VM, the metadata server out of reach and
  jax.distributed.initialize recorded instead of run. Returns (set env, TPU VM metadata, calls)."""
  for var in CLUSTER_VARS + ("JAX_PLATFORMS",):  # JAX_PLATFORMS=cpu would switch on gloo
    monkeypatch.delenv(var, raising=False)
  metadata, calls = {}, []
  monkeypatch.setattr(sh, "_on_cloud_tpu_vm", lambda: bool(metadata))
  def query(key):
    assert metadata, "asked the metadata server off a Cloud TPU VM"
    return metadata.get(key, "")
  monkeypatch.setattr(sh, "_gce_metadata", query)
  monkeypatch.setattr(jax.distributed, "is_initialized", lambda: False)
  monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: calls.append(kw))
  return (lambda **env: [monkeypatch.setenv(k, v) for k, v in env.items()]), metadata, calls


def test_laptop_is_not_a_cluster(cluster_env):
  setenv, _, calls = cluster_env
  assert sh.detect_cluster() is None and sh.maybe_initialize_distributed() is False
  setenv(SLURM_JOB_ID="7", SLURM_STEP_NODELIST="n1", SLURM_NTASKS="1", SLURM_PROCID="0",
         SLURM_LOCALID="0")  # a one-task Slurm job
  assert sh.detect_cluster() is None
  setenv(TPU_WORKER_HOSTNAMES="localhost")  # off a TPU VM the TPU variables mean nothing
  assert sh.detect_cluster() is None and calls == []


def test_gce_tpu_vm_slice_detected_from_the_metadata_server(cluster_env, monkeypatch):
  """launch/tpu/create_and_run.sh's slice: no TPU_WORKER_HOSTNAMES, workers in the metadata."""
  _, metadata, calls = cluster_env
  metadata.update({"worker-network-endpoints": GCE_WORKERS, "agent-worker-number": "2"})
  assert sh.detect_cluster() == "gcetpu"
  assert sh.maybe_initialize_distributed() is True and calls == [{}]  # JAX finds the rest
  metadata["worker-network-endpoints"] = "t1v-n-0:0:10.0.0.2"  # a one-host TPU VM (v5e-8)
  assert sh.detect_cluster() is None
  monkeypatch.setenv("TPU_SKIP_MDS_QUERY", "1")
  metadata["worker-network-endpoints"] = GCE_WORKERS
  assert sh.detect_cluster() is None


def test_gke_tpu_detected_from_worker_hostnames(cluster_env):
  setenv, metadata, calls = cluster_env
  metadata["agent-worker-number"] = "0"  # a TPU VM, but GKE's variables decide
  setenv(TPU_WORKER_HOSTNAMES="w-0.svc,w-1.svc,w-2.svc,w-3.svc", TPU_WORKER_ID="1")
  assert sh.detect_cluster() == "gketpu"
  assert sh.maybe_initialize_distributed() is True and calls == [{}]
  setenv(TPU_WORKER_HOSTNAMES="localhost")
  assert sh.detect_cluster() is None
  setenv(MEGASCALE_NUM_SLICES="2")  # one host per slice, two slices
  assert sh.detect_cluster() == "gketpu"


def test_slurm_detected_inside_srun(cluster_env):
  setenv, _, calls = cluster_env
  setenv(SLURM_JOB_ID="7", SLURM_NTASKS="2")  # sbatch's script itself: no step yet
  assert sh.detect_cluster() is None
  setenv(SLURM_STEP_NODELIST="gpu[01-02]", SLURM_PROCID="1", SLURM_LOCALID="0")
  assert sh.detect_cluster() == "slurm"
  assert sh.maybe_initialize_distributed() is True and calls == [{}]


def test_explicit_coordinator_passes_the_process_count_and_id(cluster_env):
  setenv, _, calls = cluster_env
  setenv(JAX_COORDINATOR_ADDRESS="127.0.0.1:1234", JAX_NUM_PROCESSES="2", JAX_PROCESS_ID="1")
  assert sh.detect_cluster() == "explicit"
  assert sh.maybe_initialize_distributed() is True
  assert calls == [{"num_processes": 2, "process_id": 1}]


# --- per-process batch rows, with processes simulated by a device -> process map -------------------

def _hosts(chips_per_host):
  return lambda d: d.id // chips_per_host


@pytest.mark.parametrize("shape, process_of, shards", [
    # the batch axes alone span hosts: shard = process
    ({"fsdp": -1}, _hosts(4), {0: (0, 2), 1: (1, 2)}),
    ({"data": 2, "fsdp": 2, "tensor": 2}, _hosts(2), {p: (p, 4) for p in range(4)}),
    # the tensor axis crosses hosts (fsdp:16,tensor:8 on v5p's 4-chip hosts, scaled down):
    # the hosts of one tensor group share a shard and load the same rows
    ({"fsdp": 2, "tensor": 4}, _hosts(2), {0: (0, 2), 1: (0, 2), 2: (1, 2), 3: (1, 2)}),
    ({"tensor": 8}, _hosts(4), {0: (0, 1), 1: (0, 1)}),
])
def test_data_shards_follow_the_mesh_and_place_each_process_rows(shape, process_of, shards):
  mesh = sh.make_mesh(shape)
  assert sh.data_shards(mesh, process_of) == shards
  # Each device takes its rows from its own process's local batch only (what
  # make_array_from_process_local_data does on each host): the assembled array is the global batch.
  b = 16
  global_batch = np.arange(b * 3, dtype=np.int32).reshape(b, 3)
  local = {p: np.split(global_batch, count)[index] for p, (index, count) in shards.items()}
  sharding = sh.batch_sharding(mesh)
  pieces = []
  for device, (rows, _) in sharding.devices_indices_map(global_batch.shape).items():
    index, count = shards[process_of(device)]
    start = index * b // count
    lo, hi, _ = rows.indices(b)
    lo, hi = lo - start, hi - start
    assert 0 <= lo < hi <= b // count, "a device holds rows outside its process's shard"
    pieces.append(jax.device_put(local[process_of(device)][lo:hi], device))
  placed = jax.make_array_from_single_device_arrays(global_batch.shape, sharding, pieces)
  np.testing.assert_array_equal(np.asarray(placed), global_batch)


def test_non_contiguous_process_rows_refused_by_name():
  mesh = sh.make_mesh({"fsdp": 8})
  with pytest.raises(sh.MeshError, match=r"process 0 holds blocks \[0, 2, 4, 6\]"):
    sh.data_shards(mesh, lambda d: d.id % 2)


def test_trainer_refuses_a_mesh_whose_process_rows_it_cannot_load(tmp_path, monkeypatch):
  from seedcoder_jax.train import trainer  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(sh, "_process_of", lambda d: d.id % 2)  # two simulated hosts, interleaved
  sh.data_shard.cache_clear()
  cfg = {"model": {"preset": "tiny"}, "data": {"batch_size": 8, "seq_len": 16},
         "opt": {"total_steps": 2, "warmup_steps": 1}, "mesh": {"fsdp": -1}}
  try:
    with pytest.raises(trainer.ConfigError, match="config.mesh=.*holds blocks"):
      trainer.run(cfg, tmp_path, data=trainer.DataSource(train=None))
  finally:
    sh.data_shard.cache_clear()
  assert not (tmp_path / "checkpoints").exists()


# --- multi-slice (DCN) meshes: CPU devices have no slice_index, so slices are simulated ---------

def _two_slices(d):
  return d.id // 4  # devices 0-3: slice 0, 4-7: slice 1


@pytest.mark.parametrize("shape, sizes", [
    ({"fsdp": -1}, {"data": 2, "fsdp": 4, "tensor": 1}),
    ({"fsdp": -1, "tensor": 2}, {"data": 2, "fsdp": 2, "tensor": 2}),
    ({"data": 2, "fsdp": -1, "dcn_data": 2}, {"data": 4, "fsdp": 2, "tensor": 1}),
])
def test_multi_slice_mesh_puts_only_the_data_axis_across_slices(shape, sizes):
  mesh = sh.make_mesh(shape, slice_of=_two_slices)
  assert dict(mesh.shape) == sizes
  per_slice_data = sizes["data"] // 2
  for i, block in enumerate(mesh.devices):  # the data axis: outer DCN factor x inner ICI part
    assert {_two_slices(d) for d in block.flat} == {i // per_slice_data}
  # Every fsdp/tensor group (what parameters are sharded over) lies inside one slice.
  for d in range(sizes["data"]):
    assert len({_two_slices(x) for x in mesh.devices[d].flat}) == 1
  # Each slice's batch rows are one contiguous half of the batch (data is the outer batch axis).
  blocks = sh.process_batch_blocks(mesh, process_of=_two_slices)
  n = sizes["data"] * sizes["fsdp"]
  assert blocks == {0: list(range(n // 2)), 1: list(range(n // 2, n))}


def test_single_slice_mesh_is_unchanged_by_dcn_data():
  for shape in ({"fsdp": -1, "tensor": 2, "dcn_data": 1}, {"fsdp": -1, "tensor": 2, "dcn_data": -1}):
    mesh = sh.make_mesh(shape)
    assert dict(mesh.shape) == {"data": 1, "fsdp": 4, "tensor": 2}
    assert (mesh.devices == sh.make_mesh({"fsdp": -1, "tensor": 2}).devices).all()


@pytest.mark.parametrize("shape, slice_of, message", [
    ({"fsdp": -1, "dcn_data": 2}, None, r"dcn_data=2 asks for 2 slices .* 8 devices form one slice"),
    ({"fsdp": -1, "dcn_data": 4}, _two_slices, r"dcn_data=4 asks for 4 slices .* form 2 slices"),
    ({"fsdp": -1, "dcn_data": 0}, _two_slices, r"dcn_data=0 must be a positive number of slices"),
    ({"fsdp": -1}, lambda d: int(d.id >= 3), r"unequal numbers of devices \[3, 5\]"),
    ({"fsdp": 8}, _two_slices, r"has 8 devices but 4 are available \(per slice: the 8 devices "
                               r"form 2 slices"),
])
def test_impossible_multi_slice_mesh_is_refused(shape, slice_of, message):
  with pytest.raises(sh.MeshError, match=message):
    sh.make_mesh(shape, slice_of=slice_of)


def test_trainer_config_accepts_dcn_data():
  from seedcoder_jax.train import config as config_lib
  assert "dcn_data" in config_lib.MESH_KEYS
