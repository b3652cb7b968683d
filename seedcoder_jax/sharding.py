"""Device mesh, logical-axis rules, sharded initialisation and batch placement.

Parameters and key activations carry logical axis names (see model/decoder.py); LOGICAL_RULES
maps them onto the mesh axes `data`, `fsdp` and `tensor`:
  - data:   pure data parallelism (parameters replicated);
  - fsdp:   data parallelism with parameters and optimizer state sharded over their `embed` dim;
  - tensor: Megatron-style tensor parallelism over heads, MLP hidden units and the vocabulary.
A logical name whose mesh axis is already used by an earlier dimension stays unsharded (Flax's
rule), so activations [batch, length, embed] shard batch over (data, fsdp) and leave embed whole.
The mesh states its axis types (Auto) so jit's in/out-shardings recipe works on JAX >= 0.10.

Multi-slice TPU jobs (xpk --num-slices, MEGASCALE_NUM_SLICES; slices joined by the data-centre
network, DCN): the `data` axis is split into an outer DCN factor, one block per slice, and its
inner (ICI) part; fsdp and tensor stay inside each slice, so only the gradient all-reduce of data
parallelism crosses DCN (`dcn_data` below, JAX's create_hybrid_device_mesh layout).
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
from typing import Mapping, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from seedcoder_jax import model as model_lib
from seedcoder_jax.model.config import ModelConfig

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

LOGICAL_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    ("batch", BATCH_AXES),
    ("data_batch", "data"),  # a batch dim replicated over fsdp (the embedding lookup's ids)
    ("length", None),
    ("embed", "fsdp"),
    ("vocab", "tensor"),
    ("q_heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("mlp", "tensor"),
    ("layers", None),
)


class MeshError(ValueError):
  """A mesh or batch that cannot work with the devices or the model; the message names the numbers."""


def resolve_mesh_shape(shape: Mapping[str, int], n_devices: int) -> dict[str, int]:
  """Fills at most one -1 entry with the remaining devices; checks the product."""
  unknown = [k for k in MESH_AXES if k not in shape]
  extra = [k for k in shape if k not in MESH_AXES]
  if extra:
    raise MeshError(f"unknown mesh axes {extra}; the mesh axes are {MESH_AXES}")
  sizes = {k: int(shape.get(k, 1)) for k in MESH_AXES}
  del unknown
  free = [k for k, v in sizes.items() if v == -1]
  if len(free) > 1:
    raise MeshError(f"at most one mesh axis may be -1, got {free} in {dict(shape)}")
  if any(v == 0 or v < -1 for v in sizes.values()):
    raise MeshError(f"mesh axis sizes must be positive or -1, got {dict(shape)}")
  known = math.prod(v for v in sizes.values() if v != -1)
  if free:
    if n_devices % known:
      raise MeshError(f"mesh {dict(shape)}: the fixed axes' product {known} does not divide the "
                      f"{n_devices} devices")
    sizes[free[0]] = n_devices // known
  if math.prod(sizes.values()) != n_devices:
    raise MeshError(f"mesh {sizes} has {math.prod(sizes.values())} devices but {n_devices} are "
                    f"available")
  return sizes


DCN_KEY = "dcn_data"  # in a mesh shape: slices along the data axis (-1: as many as there are)


def _slice_of(device) -> int:
  # Multi-slice TPU devices carry slice_index; CPU, GPU and single-slice TPU devices have none.
  return getattr(device, "slice_index", 0) or 0


def slice_groups(devices: Sequence, slice_of=None) -> list[list]:
  """The devices grouped by slice (device.slice_index; `slice_of(device)` simulates one), slices
  in index order, each slice's devices in the given order."""
  slice_of = slice_of or _slice_of
  groups: dict[int, list] = {}
  for d in devices:
    groups.setdefault(int(slice_of(d)), []).append(d)
  return [groups[k] for k in sorted(groups)]


def resolve_dcn(shape: Mapping[str, int], groups: Sequence[Sequence]) -> int:
  """The number of slices along the data axis: shape's `dcn_data` (-1 or absent: every slice
  the devices span), which must equal that count; slices must hold equally many devices."""
  dcn = int(shape.get(DCN_KEY, -1))
  n_slices = len(groups)
  if dcn == 0 or dcn < -1:
    raise MeshError(f"mesh {DCN_KEY}={dcn} must be a positive number of slices or -1 (every slice)")
  if dcn != -1 and dcn != n_slices:
    what = ("one slice (no device has a slice_index > 0: not a multi-slice TPU job)"
            if n_slices == 1 else f"{n_slices} slices")
    raise MeshError(f"mesh {DCN_KEY}={dcn} asks for {dcn} slices along the data axis, but the "
                    f"{sum(map(len, groups))} devices form {what}; use {DCN_KEY}=-1 (as many as "
                    f"the job has, e.g. xpk --num-slices) or {n_slices}")
  sizes = sorted({len(g) for g in groups})
  if len(sizes) > 1:
    raise MeshError(f"the {n_slices} slices hold unequal numbers of devices {sizes}; a multi-slice "
                    f"mesh needs identical slices")
  return n_slices


def device_array(shape: Mapping[str, int], devices: Sequence, slice_of=None,
                 layout: bool = False) -> tuple[dict[str, int], np.ndarray]:
  """(axis sizes, devices arranged [data, fsdp, tensor]) for `shape` over `devices`.

  One slice: the devices reshaped in order (layout=True: mesh_utils.create_device_mesh, which lays
  the axes along a TPU torus). Several slices (DCN): `shape`'s data/fsdp/tensor describe one slice
  (one -1 fills the slice), each slice is laid out alone, and the slices are stacked along the data
  axis, so the mesh's data axis is dcn_data x the per-slice data size and nothing but the data
  axis crosses slices (jax.experimental.mesh_utils.create_hybrid_device_mesh's arrangement)."""
  ici = {k: v for k, v in shape.items() if k != DCN_KEY}
  groups = slice_groups(devices, slice_of)
  n_slices = resolve_dcn(shape, groups)
  try:
    sizes = resolve_mesh_shape(ici, len(groups[0]))
  except MeshError as e:
    if n_slices == 1:
      raise
    raise MeshError(f"{e} (per slice: the {len(devices)} devices form {n_slices} slices, and "
                    f"data/fsdp/tensor describe one slice)") from e
  axis_shape = tuple(sizes[k] for k in MESH_AXES)

  def arrange(group):
    if layout:
      from jax.experimental import mesh_utils  # pylint: disable=g-import-not-at-top
      return mesh_utils.create_device_mesh(axis_shape, group)
    return np.asarray(group, dtype=object).reshape(axis_shape)

  array = np.concatenate([arrange(g) for g in groups], axis=0)
  sizes["data"] *= n_slices
  return sizes, array


def make_mesh(shape: Mapping[str, int], devices: Sequence[jax.Device] | None = None, *,
              slice_of=None, layout: bool | None = None) -> Mesh:
  """A mesh over all (or the given) devices, axes (data, fsdp, tensor), all of type Auto.

  `shape` may hold dcn_data (see device_array): on a multi-slice job the data axis spans the
  slices. layout: lay the axes along the TPU torus (default: when all devices are used; given
  devices are otherwise taken in order). `slice_of(device)` simulates slices (tests)."""
  all_devices = devices is None or list(devices) == list(jax.devices())
  devices = list(jax.devices() if devices is None else devices)
  layout = all_devices if layout is None else layout
  groups = slice_groups(devices, slice_of)
  axis_types = (AxisType.Auto,) * len(MESH_AXES)
  if len(groups) == 1 and resolve_dcn(shape, groups) == 1 and all_devices and layout:
    sizes = resolve_mesh_shape({k: v for k, v in shape.items() if k != DCN_KEY}, len(devices))
    return jax.make_mesh(tuple(sizes[k] for k in MESH_AXES), MESH_AXES, axis_types=axis_types)
  _, array = device_array(shape, devices, slice_of, layout=layout)
  return Mesh(array, MESH_AXES, axis_types=axis_types)


@contextlib.contextmanager
def activate(mesh: Mesh, rules=LOGICAL_RULES):
  """Enters the mesh and the logical-axis rules, so the model's activation constraints apply."""
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    yield


def logical_to_sharding(logical_tree, mesh: Mesh, rules=LOGICAL_RULES):
  """A tree of logical PartitionSpecs -> NamedShardings on `mesh`."""
  return nn.logical_to_mesh_sharding(logical_tree, mesh, rules)


def param_shardings(cfg: ModelConfig, mesh: Mesh, rules=LOGICAL_RULES):
  return logical_to_sharding(model_lib.logical_axes(cfg), mesh, rules)


def check_params_fit(cfg: ModelConfig, mesh: Mesh, rules=LOGICAL_RULES) -> None:
  """Raises MeshError naming each parameter dimension that its mesh axes do not divide."""
  shapes = model_lib.abstract_params(cfg)
  shardings = param_shardings(cfg, mesh, rules)
  problems = []
  for (path, leaf), sharding in zip(jax.tree_util.tree_leaves_with_path(shapes),
                                    jax.tree.leaves(shardings)):
    for dim, (size, axes) in enumerate(zip(leaf.shape, sharding.spec)):
      if axes is None:
        continue
      axes = (axes,) if isinstance(axes, str) else axes
      n = math.prod(mesh.shape[a] for a in axes)
      if size % n:
        problems.append(f"{jax.tree_util.keystr(path)} dim {dim} of size {size} over mesh axes "
                        f"{axes} of {n} devices")
  if problems:
    hint = (f" (n_heads={cfg.n_heads}, n_kv_heads={cfg.n_kv_heads}, d_ff={cfg.d_ff}, "
            f"vocab_size={cfg.vocab_size}, d_model={cfg.d_model}; mesh {dict(mesh.shape)})")
    raise MeshError("parameters do not divide evenly over the mesh: " + "; ".join(problems) + hint)


def check_batch_fits(global_batch_size: int, mesh: Mesh) -> None:
  n = math.prod(mesh.shape[a] for a in BATCH_AXES)
  if global_batch_size % n:
    raise MeshError(f"global batch size {global_batch_size} is not divisible by data*fsdp = "
                    f"{mesh.shape['data']}*{mesh.shape['fsdp']} = {n}")


def init_sharded(cfg: ModelConfig, mesh: Mesh, seed: int = 0, rules=LOGICAL_RULES):
  """Initialises parameters directly into their shards: eval_shape -> shardings -> jit(out_shardings)."""
  check_params_fit(cfg, mesh, rules)
  shardings = param_shardings(cfg, mesh, rules)
  init = jax.jit(lambda: model_lib.init_params(cfg, seed), out_shardings=shardings)
  with activate(mesh, rules):
    return init()


def batch_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
  """Leading (batch) dim over (data, fsdp), the rest replicated."""
  return NamedSharding(mesh, P(BATCH_AXES, *([None] * (ndim - 1))))


def _process_of(device) -> int:
  return device.process_index


def process_batch_blocks(mesh: Mesh, process_of=None) -> dict[int, list[int]]:
  """{process: the batch blocks its devices hold}: the global batch cut into data*fsdp equal
  blocks, block i on the devices at batch-sharding index i (all tensor-axis devices of it).
  `process_of(device)` defaults to device.process_index (tests pass a simulated map)."""
  process_of = process_of or _process_of
  n = math.prod(mesh.shape[a] for a in BATCH_AXES)
  blocks: dict[int, set] = {}
  for device, (rows,) in batch_sharding(mesh, 1).devices_indices_map((n,)).items():
    blocks.setdefault(process_of(device), set()).update(range(*rows.indices(n)))
  return {p: sorted(b) for p, b in sorted(blocks.items())}


def data_shards(mesh: Mesh, process_of=None) -> dict[int, tuple[int, int]]:
  """{process: (index, count)}: process p loads rows [index * B/count, (index+1) * B/count) of
  each global batch of B rows, i.e. shard `index` of `count`, as the input pipeline's
  (process_index, process_count) arguments. Processes whose devices differ only along the tensor
  axis (which may cross hosts: fsdp:16,tensor:8 on v5p, 4 chips a host) share a shard and load
  the same rows. Raises MeshError, the same on every process, when some process's devices hold
  rows that are not one such block (e.g. blocks 0 and 2 of 4), or blocks of unequal sizes."""
  n = math.prod(mesh.shape[a] for a in BATCH_AXES)
  out, bad = {}, []
  for p, blocks in process_batch_blocks(mesh, process_of).items():
    size = len(blocks)
    if blocks != list(range(blocks[0], blocks[0] + size)) or blocks[0] % size or n % size:
      bad.append(f"process {p} holds blocks {blocks}")
    else:
      out[p] = (blocks[0] // size, n // size)
  counts = {c for _, c in out.values()}
  if bad or len(counts) > 1:
    shown = bad or [f"process {p} holds 1/{c} of the batch" for p, (_, c) in out.items()]
    raise MeshError(
        f"mesh {dict(mesh.shape)}: each process must hold one contiguous, equal share of the "
        f"batch (the batch is cut into data*fsdp={n} blocks), but " + "; ".join(shown[:8])
        + ". Order the devices so that each host's chips are adjacent along data/fsdp, or "
        "change the mesh")
  return out


@functools.lru_cache(maxsize=16)
def data_shard(mesh: Mesh) -> tuple[int, int]:
  """This process's (index, count) of data_shards: what its input pipeline loads."""
  return data_shards(mesh)[jax.process_index()]


def place_batch(local_batch, mesh: Mesh):
  """Builds global arrays from each process's rows: shard `index` of `count` (data_shard), the
  same rows on the processes that share a shard (multi-host safe)."""
  _, count = data_shard(mesh)

  def place(x):
    x = np.asarray(x)
    return jax.make_array_from_process_local_data(batch_sharding(mesh, x.ndim), x,
                                                  (x.shape[0] * count, *x.shape[1:]))
  return jax.tree.map(place, local_batch)


def _on_cloud_tpu_vm() -> bool:
  """JAX's own verdict, made at import from the PCI bus and libtpu (no network)."""
  from jax._src import cloud_tpu_init  # pylint: disable=g-import-not-at-top
  return cloud_tpu_init.running_in_cloud_tpu_vm


def _gce_metadata(key: str) -> str:
  """An attribute of this Cloud TPU VM from the GCE metadata server (JAX's query, with retries)."""
  from jax._src.clusters import cloud_tpu_cluster  # pylint: disable=g-import-not-at-top
  text, code = cloud_tpu_cluster.get_metadata(key)
  return text if code == 200 else ""


def _count(names: str) -> int:
  return len([n for n in names.split(",") if n.strip()])


def detect_cluster() -> str | None:
  """The kind of multi-process cluster this process is one of, or None when it runs alone.

  The same environments as JAX's own detection (jax._src.clusters), which
  `jax.distributed.initialize()` then uses to find the coordinator, process count and id, but
  only when there is more than one process, so that a laptop, the CPU tests, a one-host TPU VM or
  a one-task Slurm job never start the distributed runtime:
    explicit  JAX_COORDINATOR_ADDRESS (plus JAX_NUM_PROCESSES, JAX_PROCESS_ID off cluster managers)
    slurm     inside `srun` (SLURM_JOB_ID, SLURM_STEP_NODELIST, SLURM_PROCID...) with SLURM_NTASKS > 1
    gketpu    a Cloud TPU VM whose TPU_WORKER_HOSTNAMES / TPU_PROCESS_ADDRESSES name several workers
    gcetpu    a Cloud TPU VM whose metadata server lists several worker-network-endpoints (a slice
              made by `gcloud compute tpus tpu-vm create`, launch/tpu/create_and_run.sh), or
              several slices (MEGASCALE_NUM_SLICES)
  The metadata server is asked only on a Cloud TPU VM without TPU_SKIP_MDS_QUERY, as JAX does.
  """
  env = os.environ
  if env.get("JAX_COORDINATOR_ADDRESS"):
    return "explicit"
  slurm_vars = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID",
                "SLURM_LOCALID")
  if all(v in env for v in slurm_vars) and int(env["SLURM_NTASKS"]) > 1:
    return "slurm"
  if not _on_cloud_tpu_vm():
    return None
  if int(env.get("MEGASCALE_NUM_SLICES") or 1) > 1:
    return "gketpu" if "TPU_WORKER_HOSTNAMES" in env else "gcetpu"
  workers = env.get("TPU_PROCESS_ADDRESSES") or env.get("TPU_WORKER_HOSTNAMES")
  if workers is not None:
    return "gketpu" if _count(workers) > 1 else None
  if env.get("TPU_SKIP_MDS_QUERY") is None and _count(_gce_metadata("worker-network-endpoints")) > 1:
    return "gcetpu"
  return None


def maybe_initialize_distributed() -> bool:
  """Calls jax.distributed.initialize() when detect_cluster() finds several processes; returns
  whether this is a multi-process run.

  JAX finds the coordinator, process count and id itself (from Slurm, the TPU environment or its
  metadata server); only JAX_NUM_PROCESSES and JAX_PROCESS_ID, which JAX does not read, are passed
  on. CPU processes exchange collectives through gloo (JAX's CPU default has none across processes).
  """
  cluster = detect_cluster()
  if cluster is None:
    return False
  if not jax.distributed.is_initialized():
    kwargs = {}
    if "JAX_NUM_PROCESSES" in os.environ:
      kwargs = {"num_processes": int(os.environ["JAX_NUM_PROCESSES"]),
                "process_id": int(os.environ["JAX_PROCESS_ID"])}
    if os.environ.get("JAX_PLATFORMS", "") == "cpu":
      jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(**kwargs)
    if jax.process_index() == 0:
      print(f"[distributed] {cluster} cluster: {jax.process_count()} processes", flush=True)
  return True
