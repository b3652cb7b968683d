"""Ahead-of-time compilation of the train step for a Cloud TPU topology, with no TPU attached.

libtpu (optional: `pip install -r requirements-tpu.txt`) contains the XLA:TPU compiler. JAX can ask it
for the description of any TPU slice (`jax.experimental.topologies.get_topology_desc`), whose
compile-only devices carry a real device assignment; `jit(...).lower(...)` on a mesh of those
devices followed by `.compile()` runs the full TPU pipeline (SPMD partitioning, fusion, memory
assignment) on this machine's CPU. The compiled executable cannot run, but its
`memory_analysis()` gives the per-device HBM the step needs and `cost_analysis()` its FLOPs.

Environment: JAX must not initialise a TPU backend here (on a machine without TPUs libtpu would probe
for chips; on a TPU VM it would lock them), so the caller sets `JAX_PLATFORMS=cpu` before importing
JAX (launch/aot_compile.py does). The TPU plugin is then loaded only to describe the topology.

Cloud TPU names: v5p-N counts TensorCores (2 per chip: v5p-128 is 64 chips, "v5p:4x4x4"); v5e-N
(alias v5litepod-N) and v6e-N count chips ("v6e-256" is "v6e:16x16"). A libtpu topology string
("v5p:4x4x8") is accepted as well. v4 is refused (see UNSUPPORTED).
"""

from __future__ import annotations

import contextlib
import dataclasses
import faulthandler
import importlib.metadata
import importlib.util
import json
import math
import os
import re
import sys
import tempfile
import threading
import time
from typing import Any, Callable, Mapping

import jax
import numpy as np

from seedcoder_jax import config_files
from seedcoder_jax import perf
from seedcoder_jax import sharding as sharding_lib
from seedcoder_jax.model import splash
from seedcoder_jax.model.config import ModelConfig, RopeScaling
from seedcoder_jax.train import optimizer as optimizer_lib
from seedcoder_jax.train import step as step_lib

GIB = 1024 ** 3


@dataclasses.dataclass(frozen=True)
class TpuGeneration:
  """One TPU generation: its libtpu name, torus rank, how Cloud names count it and its HBM."""

  libtpu_name: str
  ndim: int                 # 3-D torus (v5p) or 2-D (v5e, v6e)
  cores_per_name_unit: int  # v5p-N counts TensorCores (2 per chip); v5e-N / v6e-N count chips
  hbm_gib_per_chip: int


GENERATIONS = {
    "v5p": TpuGeneration("v5p", 3, 2, 95),
    "v5e": TpuGeneration("v5e", 2, 1, 16),
    "v6e": TpuGeneration("v6e", 2, 1, 32),
}
GENERATION_ALIASES = {"v5litepod": "v5e"}
UNSUPPORTED = {
    # Checked with libtpu 0.0.50.1: topology "v4:2x2x2" lists 16 devices for 8 chips.
    "v4": "libtpu describes v4 slices with one device per TensorCore, not one per chip (megacore) as "
          "JAX uses on v4 VMs; JAX's TPU mesh layout refuses such devices and the program would not "
          "be the one v4 runs. v4 has 32 GiB of HBM per chip: compare with v6e (also 32 GiB).",
}


class AotError(RuntimeError):
  """A setup problem (libtpu missing, bad topology, bad config); the message says what to do."""


class DoesNotFit(RuntimeError):
  """The compiled step needs more HBM per device than the chip has; `report` holds the numbers."""

  def __init__(self, message: str, report: dict):
    super().__init__(message)
    self.report = report


@dataclasses.dataclass(frozen=True)
class Topology:
  name: str            # as the user wrote it
  generation: str      # key of GENERATIONS
  shape: tuple[int, ...]
  num_slices: int = 1  # identical slices joined by DCN (multi-slice; xpk --num-slices)

  @property
  def n_chips(self) -> int:
    """Chips of one slice."""
    return math.prod(self.shape)

  @property
  def libtpu_string(self) -> str:
    return f"{GENERATIONS[self.generation].libtpu_name}:{'x'.join(map(str, self.shape))}"

  @property
  def hbm_bytes_per_chip(self) -> int:
    return GENERATIONS[self.generation].hbm_gib_per_chip * GIB


def _default_shape(n_chips: int, ndim: int) -> tuple[int, ...]:
  """The shape Cloud TPU gives a power-of-two slice: grow the last of the smallest dims.

  3-D: 4 chips 2x2x1, 8 2x2x2, 16 2x2x4, 32 2x4x4, 64 4x4x4, 128 4x4x8 ...;
  2-D: 1 1x1, 4 2x2, 8 2x4, 16 4x4, 32 4x8, 64 8x8, 128 8x16, 256 16x16.
  """
  shape = [2, 2, 1] if ndim == 3 else [1, 1]
  start = math.prod(shape)
  if n_chips < start or n_chips & (n_chips - 1):
    raise AotError(f"no standard {ndim}-D slice has {n_chips} chips (power-of-two slices from "
                   f"{start} chips); pass an explicit libtpu topology such as 'v5p:4x4x12'")
  while math.prod(shape) < n_chips:
    smallest = min(shape)
    i = max(j for j, s in enumerate(shape) if s == smallest)
    shape[i] *= 2
  return tuple(shape)


def parse_topology(name: str, num_slices: int = 1) -> Topology:
  """'v5p-128' (Cloud name), 'v5litepod-16' or 'v5p:4x4x4' / 'v5p=4x4x4' (libtpu string); a
  'Nx' prefix ('2xv5p-128') or `num_slices` asks for N such slices joined by DCN (multi-slice)."""
  if num_slices < 1:
    raise AotError(f"num_slices={num_slices} must be at least 1")
  m = re.fullmatch(r"\s*(\d+)\s*x\s*([a-z].*)", name.lower())
  if m:
    if num_slices != 1 and num_slices != int(m.group(1)):
      raise AotError(f"topology {name!r} names {m.group(1)} slices but num_slices={num_slices}")
    return dataclasses.replace(parse_topology(m.group(2)), name=name, num_slices=int(m.group(1)))
  if num_slices > 1:
    return dataclasses.replace(parse_topology(name), num_slices=num_slices)
  text = name.strip().lower()
  gen = re.match(r"[a-z0-9]+?(?=[-:=])", text)
  if gen and gen.group(0) in UNSUPPORTED:
    raise AotError(f"{name!r} is not supported: {UNSUPPORTED[gen.group(0)]}")
  m = re.fullmatch(r"([a-z0-9]+?)[:=](\d+(?:x\d+)+)", text)
  if m:
    gen = GENERATION_ALIASES.get(m.group(1), m.group(1))
    if gen not in GENERATIONS:
      raise AotError(f"unknown TPU generation {m.group(1)!r} in {name!r}; known: {sorted(GENERATIONS)}")
    shape = tuple(int(s) for s in m.group(2).split("x"))
    if len(shape) != GENERATIONS[gen].ndim or min(shape) < 1:
      raise AotError(f"{name!r}: a {gen} topology has {GENERATIONS[gen].ndim} positive dims")
    return Topology(name, gen, shape)
  m = re.fullmatch(r"([a-z0-9]+)-(\d+)", text)
  if not m:
    raise AotError(f"cannot parse topology {name!r}: use a Cloud TPU name such as v5p-128, v6e-256, "
                   f"v5e-8, or a libtpu topology string such as v5p:4x4x4")
  gen = GENERATION_ALIASES.get(m.group(1), m.group(1))
  if gen not in GENERATIONS:
    raise AotError(f"unknown TPU generation {m.group(1)!r} in {name!r}; known: "
                   f"{sorted(GENERATIONS) + sorted(GENERATION_ALIASES)}")
  g = GENERATIONS[gen]
  count = int(m.group(2))
  if count % g.cores_per_name_unit:
    raise AotError(f"{name!r}: {gen}-N counts TensorCores ({g.cores_per_name_unit} per chip), so N "
                   f"must be a multiple of {g.cores_per_name_unit}")
  return Topology(name, gen, _default_shape(count // g.cores_per_name_unit, g.ndim))


def parse_mesh(text: str) -> dict[str, int]:
  """'fsdp:-1,tensor:4' -> {'fsdp': -1, 'tensor': 4}; axes not named are 1."""
  shape = {}
  for part in filter(None, (p.strip() for p in text.split(","))):
    axis, sep, size = part.partition(":")
    if not sep or not re.fullmatch(r"-?\d+", size.strip()):
      raise AotError(f"bad mesh entry {part!r} in {text!r}: use AXIS:SIZE, e.g. 'fsdp:-1,tensor:4' "
                     f"(axes {sharding_lib.MESH_AXES}, at most one -1)")
    shape[axis.strip()] = int(size)
  return shape


@dataclasses.dataclass(frozen=True)
class AotSpec:
  """What to compile: the model, the global batch (None: one sequence per batch-sharding device per
  microbatch), the logical mesh, the optimizer and gradient accumulation."""

  model: ModelConfig
  preset: str
  seq_len: int = 8192
  batch_size: int | None = None
  mesh: Mapping[str, int] = dataclasses.field(default_factory=lambda: {"fsdp": -1})
  grad_accum_steps: int = 1
  z_loss: float = 0.0
  opt: optimizer_lib.OptimizerConfig = optimizer_lib.OptimizerConfig()
  # What the step minimises (None: the next-token loss) and how many batch rows one batch_size
  # unit is (DPO: a pair is 2 rows). Post-training's entry points build these (launch/aot_compile).
  objective: Any = None
  rows_per_example: int = 1


# Presets describe the architecture; pretraining at scale runs with these numerics.
TRAINING_MODEL_DEFAULTS = {"remat": "full", "compute_dtype": "bfloat16"}


# --- the process environment and the topology -----------------------------------------------------

def libtpu_version() -> str | None:
  if importlib.util.find_spec("libtpu") is None:
    return None
  return importlib.metadata.version("libtpu")


def _set_libtpu_env(topology: Topology) -> None:
  """Tells libtpu what a TPU VM's metadata server would, so it neither queries GCE's metadata server
  (which hangs or fails slowly off Cloud) nor logs errors; values a TPU VM already set are kept.

  libtpu also takes /tmp/libtpu_lockfile so that one process owns the chips; a compile-only client
  opens no chip, so concurrent compiles (tests, a sweep, a TPU VM's training job) may share it.
  """
  os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  os.environ.setdefault("TPU_ACCELERATOR_TYPE", topology.name)
  os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")


def _time_boxed(fn: Callable[[], Any], seconds: float, what: str):
  """Runs fn(); exits the process with a clear message if it has not returned after `seconds`.

  libtpu's initialisation is C++ that may hold the GIL, so a Python timer alone might never run:
  faulthandler's watchdog is a C thread and exits (with a stack dump) a little later regardless.
  """
  def give_up():
    print(f"aot: {what} did not finish in {seconds:.0f} s; giving up (libtpu hung while "
          f"initialising; with TPU_SKIP_MDS_QUERY unset or 0 it waits for a GCE metadata server)",
          file=sys.stderr, flush=True)
    os._exit(3)
  timer = threading.Timer(seconds, give_up)
  timer.daemon = True
  timer.start()
  faulthandler.dump_traceback_later(seconds + 10, exit=True)
  try:
    return fn()
  finally:
    timer.cancel()
    faulthandler.cancel_dump_traceback_later()


def topology_devices(topology: Topology, timeout_s: float = 120.0) -> list:
  """The compile-only devices of `topology` (libtpu), in the order libtpu lists them."""
  if libtpu_version() is None:
    raise AotError("libtpu is not installed, so there is no TPU compiler here: "
                   "`pip install -r requirements-tpu.txt` (it pins the libtpu that this jax needs)")
  if jax.config.jax_platforms is None or "tpu" in jax.config.jax_platforms:
    raise AotError("JAX_PLATFORMS must be set to 'cpu' before importing jax for AOT compilation "
                   f"(it is {jax.config.jax_platforms!r}): otherwise JAX probes for or locks TPUs")
  _set_libtpu_env(topology)
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
  # libtpu describes several slices (devices with slice_index) when asked for num_slices.
  extra = {"num_slices": topology.num_slices} if topology.num_slices > 1 else {}
  desc = _time_boxed(
      lambda: topologies.get_topology_desc(topology_name=topology.libtpu_string, platform="tpu",
                                           **extra),
      timeout_s, f"creating the TPU topology {topology.num_slices} x {topology.libtpu_string}")
  return list(desc.devices)


def topology_mesh(mesh_shape: Mapping[str, int], devices: list) -> jax.sharding.Mesh:
  """A (data, fsdp, tensor) mesh laid out along the torus (mesh_utils), as on a real slice; over
  several slices (their devices carry slice_index), the data axis crosses them (dcn_data)."""
  return sharding_lib.make_mesh(mesh_shape, devices, layout=True)


# --- capture of XLA's C++ log lines (SPMD partitioner warnings) -----------------------------------

@contextlib.contextmanager
def _capture_native_stderr(sink: list):
  """Copies what C++ code writes to fd 2 while the block runs into `sink` and re-emits it."""
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile(mode="w+b") as tmp:
    os.dup2(tmp.fileno(), 2)
    try:
      yield
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      tmp.seek(0)
      text = tmp.read().decode("utf-8", "replace")
      sink.append(text)
      sys.stderr.write(text)
      sys.stderr.flush()


def involuntary_remats(log_text: str) -> list[str]:
  """The SPMD partitioner's 'Involuntary full rematerialization' lines, one per offending op."""
  lines = [line.strip() for line in log_text.splitlines()
           if "Involuntary full rematerialization" in line]
  return list(dict.fromkeys(lines))  # The exact-FLOPs copy repeats the same warnings.


# --- collectives in the compiled HLO ---------------------------------------------------------------

COLLECTIVE_KINDS = ("all-gather", "reduce-scatter", "all-reduce", "all-to-all", "collective-permute")
_DTYPE_BITS = {"pred": 8, "s2": 2, "u2": 2, "s4": 4, "u4": 4, "s8": 8, "u8": 8, "s16": 16, "u16": 16,
               "f16": 16, "bf16": 16, "s32": 32, "u32": 32, "f32": 32, "s64": 64, "u64": 64,
               "f64": 64, "c64": 64, "c128": 128}
# One HLO instruction: `[ROOT] %name = TYPE opcode(operands), attributes`.
_HLO_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(.*?)\s([a-z][a-z0-9\-]*)\(")
_HLO_ARRAY = re.compile(r"\b([a-z]+[0-9]*(?:e[0-9]m[0-9]\w*)?)\[([0-9,]*)\]")


def _hlo_type_bytes(type_text: str) -> int:
  """Bytes of every array in an HLO result type (`f32[8,4]{1,0}` or a tuple of them)."""
  total = 0
  for dtype, dims in _HLO_ARRAY.findall(type_text):
    bits = 8 if dtype.startswith("f8") else _DTYPE_BITS.get(dtype)
    if bits is None:
      continue  # token[], opaque types
    total += math.prod(int(d) for d in dims.split(",") if d) * bits // 8
  return total


def hlo_collectives(hlo_text: str, top: int = 5) -> dict:
  """Count and result bytes, per kind, of the collectives in an HLO module's text.

  Every instruction is counted once where it appears: a loop body (the microbatch loop, the scanned
  layer stack) counts once, however many times it runs. Asynchronous pairs are counted by their
  `-done` half, whose result is the collective's output (a `-start` returns the operand too); a
  collective wrapped in `async-start`/`async-done` is counted inside its wrapped computation.
  Returns {"per_kind": {kind: {"count", "bytes"}}, "bytes": total, "largest": [top results]}.
  """
  per_kind = {k: {"count": 0, "bytes": 0} for k in COLLECTIVE_KINDS}
  found = []
  for line in hlo_text.splitlines():
    m = _HLO_INSTRUCTION.match(line)
    if not m:
      continue
    name, type_text, opcode = m.groups()
    kind = opcode[:-len("-done")] if opcode.endswith("-done") else opcode
    if kind not in per_kind:
      continue
    size = _hlo_type_bytes(type_text)
    per_kind[kind]["count"] += 1
    per_kind[kind]["bytes"] += size
    found.append((size, kind, name))
  found.sort(key=lambda t: -t[0])
  return {"per_kind": per_kind, "bytes": sum(v["bytes"] for v in per_kind.values()),
          "largest": [{"name": n, "kind": k, "bytes": b} for b, k, n in found[:top]]}


# --- compilation and the report ---------------------------------------------------------------------

def _with_sharding(abstract_tree, sharding_tree):
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                      abstract_tree, sharding_tree)


def _hbm_error(text: str) -> tuple[float, float] | None:
  """(needed, usable) bytes from an XLA:TPU out-of-HBM compile error, or None for other errors.

  libtpu has two forms: "...memory required for HLO temporaries (44.36G) exceeds available HBM
  (15.75G)" when temporaries alone overflow, "Used 50.1G of 15.75G hbm" after memory assignment.
  """
  size = r"([\d.]+)([KMGT])"
  m = (re.search(rf"\({size}\) exceeds available HBM \({size}\)", text)
       or re.search(rf"Used {size} of {size} hbm", text))
  if not m:
    return None
  scale = {"K": 1024, "M": 1024 ** 2, "G": GIB, "T": 1024 * GIB}
  return float(m.group(1)) * scale[m.group(2)], float(m.group(3)) * scale[m.group(4)]


def _advice(spec: AotSpec, mesh_sizes: Mapping[str, int], local_batch: int) -> str:
  tips = []
  if spec.model.remat != "full":
    tips.append("--remat=full")
  if local_batch > 1:
    tips.append(f"--grad_accum_steps={spec.grad_accum_steps * 2} (same global batch, half the "
                f"activations)")
  if mesh_sizes["data"] > 1:
    tips.append("moving the data axis into fsdp (--mesh=fsdp:-1) so parameters and optimizer state "
                "are sharded")
  if mesh_sizes["tensor"] == 1 and spec.model.n_kv_heads % 2 == 0:
    tips.append("a tensor axis, which also splits the attention scores by head (e.g. "
                "--mesh=fsdp:-1,tensor:2)")
  tips.append("a shorter --seq_len or a larger topology")
  return "try " + "; ".join(tips)


def _compile(model: ModelConfig, spec: AotSpec, mesh, batch_size: int, log: list):
  """(lowered-and-compiled step, lower seconds, compile seconds) for `model` on `mesh`."""
  optimizer = optimizer_lib.make_optimizer(spec.opt)
  # The shardings are built outside the mesh context: optax evaluates a placeholder init eagerly,
  # which must run on the host CPU, not on the compile-only TPU devices of the active mesh.
  objective = spec.objective or step_lib.lm_objective(spec.z_loss)
  step_fn = step_lib.jit_train_step(model, optimizer, mesh, grad_accum_steps=spec.grad_accum_steps,
                                    objective=objective)
  state = _with_sharding(step_lib.abstract_state(model, optimizer),
                         step_lib.state_shardings(model, optimizer, mesh))
  batch = jax.tree.map(
      lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype,
                                     sharding=sharding_lib.batch_sharding(mesh, len(a.shape))),
      objective.batch_shapes(batch_size, spec.seq_len))
  t0 = time.perf_counter()
  # Kernels that pick an implementation per platform (splash: Pallas TPU vs interpret mode) must
  # see the target's platform, not this CPU host's.
  with sharding_lib.activate(mesh), splash.target_platform(mesh.devices.flat[0].platform):
    lowered = step_fn.lower(state, batch)
  t1 = time.perf_counter()
  with _capture_native_stderr(log):
    compiled = lowered.compile()
  return compiled, t1 - t0, time.perf_counter() - t1


def _flops(compiled) -> float:
  cost = compiled.cost_analysis()
  # Older JAX returned a list with one dict per computation; 0.12 returns the dict.
  cost = cost[0] if isinstance(cost, (list, tuple)) else (cost or {})
  return float(cost.get("flops", 0.0))


def compile_train_step(spec: AotSpec, topology: Topology, *, timeout_s: float = 120.0,
                       exact_flops: bool = False) -> dict:
  """Compiles the full train step for `topology` and returns the report (a JSON-able dict).

  XLA's cost analysis counts the body of a while loop once, so a scanned layer stack contributes
  one layer's FLOPs. With `exact_flops`, a copy of the step with 2 unrolled layers is compiled as
  well: (2 layers - 1 layer) is one layer's FLOPs, which the scanned count then gets L - 1 more of.
  Raises DoesNotFit (with the report) when the step needs more HBM per device than the chip has.
  """
  devices = topology_devices(topology, timeout_s)
  n_devices = len(devices)
  n_chips = topology.n_chips * topology.num_slices
  if n_devices != n_chips:  # Megacore: JAX sees one device per chip on v5p, v5e, v6e.
    raise AotError(f"libtpu lists {n_devices} devices for the {n_chips} chips of "
                   f"{topology.num_slices} x {topology.libtpu_string}; one device per chip is "
                   f"expected")
  mesh = topology_mesh(spec.mesh, devices)
  mesh_sizes = dict(mesh.shape)
  batch_ways = math.prod(mesh_sizes[a] for a in sharding_lib.BATCH_AXES)
  batch_size = spec.batch_size or batch_ways * spec.grad_accum_steps
  if batch_size % spec.grad_accum_steps:
    raise AotError(f"batch_size={batch_size} is not divisible by grad_accum_steps={spec.grad_accum_steps}")
  micro_batch = batch_size * spec.rows_per_example // spec.grad_accum_steps
  sharding_lib.check_params_fit(spec.model, mesh)
  sharding_lib.check_batch_fits(micro_batch, mesh)
  if spec.seq_len > spec.model.max_seq_len:
    raise AotError(f"seq_len={spec.seq_len} exceeds the model's max_seq_len={spec.model.max_seq_len}")

  report: dict[str, Any] = {
      "topology": topology.name,
      "libtpu_topology": topology.libtpu_string,
      "device_kind": devices[0].device_kind,
      "num_slices": topology.num_slices,
      "n_chips": n_chips,
      "n_devices": n_devices,
      "mesh": mesh_sizes,
      "preset": spec.preset,
      "model": {**spec.model.hf_names(), "n_params": spec.model.n_params},
      "remat": spec.model.remat,
      "compute_dtype": spec.model.compute_dtype,
      "attention_impl": spec.model.attention_impl,
      "scan_layers": spec.model.scan_layers,
      "loss_chunk": spec.model.loss_chunk,
      "trainer": (spec.objective.name if spec.objective is not None else "lm"),
      "batch_size": batch_size,
      "batch_rows": batch_size * spec.rows_per_example,
      "seq_len": spec.seq_len,
      "grad_accum_steps": spec.grad_accum_steps,
      "tokens_per_step": batch_size * spec.rows_per_example * spec.seq_len,
  }
  where = f"{topology.generation} has {topology.hbm_bytes_per_chip / GIB:.0f} GiB per chip"
  advice = _advice(spec, mesh_sizes, micro_batch // batch_ways)
  log: list[str] = []
  try:
    compiled, lower_s, compile_s = _compile(spec.model, spec, mesh, batch_size, log)
  except Exception as e:  # XLA:TPU refuses programs that exceed HBM during memory assignment.
    hbm = _hbm_error(str(e))
    if hbm is None:
      raise
    # The compiler stops at the first overflow, so its figure is a lower bound on the total.
    report.update(fits=False, compiler_error=str(e).splitlines()[0][:500],
                  total_bytes_per_device=int(hbm[0]), total_is_lower_bound=True,
                  hbm_bytes_per_chip=topology.hbm_bytes_per_chip, hbm_usable_bytes=int(hbm[1]))
    raise DoesNotFit(f"does not fit: needs at least {hbm[0] / GIB:.1f} GiB per chip, {where} "
                     f"(XLA:TPU refused to compile, {hbm[1] / GIB:.2f} GiB usable); {advice}",
                     report) from e

  mem = compiled.memory_analysis()
  total = (mem.argument_size_in_bytes + mem.output_size_in_bytes - mem.alias_size_in_bytes
           + mem.temp_size_in_bytes + mem.generated_code_size_in_bytes)
  xla_flops = _flops(compiled)
  collectives = hlo_collectives(compiled.as_text())
  del compiled
  counted_once = spec.model.scan_layers and spec.model.n_layers > 1
  all_layers = None if counted_once else xla_flops
  exact_s = None
  if counted_once and exact_flops:
    two = spec.model.replace(n_layers=2, scan_layers=False)
    compiled2, _, exact_s = _compile(two, spec, mesh, batch_size, log)
    all_layers = xla_flops + (spec.model.n_layers - 1) * (_flops(compiled2) - xla_flops)
    del compiled2
  estimate = (spec.model.flops_per_token(spec.seq_len) * batch_size * spec.rows_per_example
              * spec.seq_len)
  xla_global = None if all_layers is None else all_layers * n_devices
  report.update({
      "argument_bytes": mem.argument_size_in_bytes,
      "output_bytes": mem.output_size_in_bytes,
      "alias_bytes": mem.alias_size_in_bytes,
      "temp_bytes": mem.temp_size_in_bytes,
      "generated_code_bytes": mem.generated_code_size_in_bytes,
      # What the step holds in HBM at its peak: inputs, non-donated outputs, scratch and code.
      "total_bytes_per_device": total,
      "total_gib_per_device": round(total / GIB, 3),
      "hbm_bytes_per_chip": topology.hbm_bytes_per_chip,
      "fits": total <= topology.hbm_bytes_per_chip,
      # cost_analysis() describes the SPMD-partitioned program, i.e. one device's share.
      "xla_flops_per_device": xla_flops,
      "xla_flops_scan_body_counted_once": counted_once,
      "xla_flops_per_device_all_layers": all_layers,
      "xla_flops_global": xla_global,
      "estimate_flops_global": estimate,
      "estimate_formula": "ModelConfig.flops_per_token * tokens: 6*N (N without the input "
                          "embedding) + causal attention; no remat recompute",
      "xla_over_estimate": None if xla_global is None else round(xla_global / estimate, 4),
      # Result bytes of the collectives per device, each HLO instruction once (loop bodies once).
      "collectives": collectives["per_kind"],
      "collective_bytes_per_device": collectives["bytes"],
      "collectives_largest": collectives["largest"],
      "collectives_counted": "static: each HLO instruction once, a loop body once",
      "involuntary_full_rematerializations": involuntary_remats("".join(log)),
      "lower_s": round(lower_s, 1),
      "compile_s": round(compile_s, 1),
      "exact_flops_compile_s": None if exact_s is None else round(exact_s, 1),
      "jax": jax.__version__,
      "libtpu": libtpu_version(),
  })
  if not report["fits"]:
    raise DoesNotFit(f"does not fit: needs {total / GIB:.1f} GiB per chip, {where}; {advice}",
                     report)
  return report


# --- specs from flags and config files ----------------------------------------------------------------

def _lookup(tree, *paths: str):
  """The first of the dotted `paths` present in a ConfigDict / dict tree, else None."""
  for path in paths:
    node = tree
    for key in path.split("."):
      if isinstance(node, Mapping):
        node = node.get(key) if key in node else None
      else:
        node = getattr(node, key, None)
      if node is None:
        break
    if node is not None:
      return node
  return None


def load_config_file(arg: str):
  """'configs/pretrain.py:8b' -> the result of get_config('8b') in that file (imported lazily)."""
  try:
    return config_files.load(arg)
  except FileNotFoundError as e:
    raise AotError(f"{e}; use a configs/*.py file with get_config(arg), or give "
                   f"--preset/--batch_size/--seq_len/--mesh") from e
  except AttributeError as e:
    raise AotError(str(e)) from e


def spec_from_config(config) -> dict:
  """The AotSpec fields a pretrain config provides (missing ones are left to the defaults).

  Read: model (a preset name, or a group with `preset` and ModelConfig overrides), data.batch_size,
  data.seq_len, mesh (a dict or 'fsdp:-1,...'), opt (OptimizerConfig fields plus grad_accum_steps
  and z_loss); top-level batch_size/seq_len/grad_accum_steps/z_loss are accepted too.
  """
  out: dict[str, Any] = {}
  model = _lookup(config, "model")
  if isinstance(model, str):
    out["preset"] = model
  elif model is not None:
    model = model.to_dict() if hasattr(model, "to_dict") else dict(model)
    if "preset" not in model:
      raise AotError("config.model has no `preset` (a name from seedcoder_jax.model.PRESETS)")
    out["preset"] = model.pop("preset")
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    # None: "the preset's value" in the config files; never an override of the defaults here.
    out["model_overrides"] = {k: v for k, v in model.items() if k in fields and v is not None}
    scaling = out["model_overrides"].get("rope_scaling")
    if isinstance(scaling, Mapping):
      scaling = {k: v for k, v in scaling.items() if v is not None}
      if scaling:
        out["model_overrides"]["rope_scaling"] = RopeScaling(**scaling)
      else:
        del out["model_overrides"]["rope_scaling"]
  for key, paths in {"batch_size": ("data.batch_size", "batch_size"),
                     "seq_len": ("data.seq_len", "seq_len"),
                     "grad_accum_steps": ("opt.grad_accum_steps", "train.grad_accum_steps",
                                          "grad_accum_steps"),
                     "z_loss": ("opt.z_loss", "loss.z_loss", "z_loss"),
                     "mesh": ("mesh",)}.items():
    value = _lookup(config, *paths)
    if value is not None:
      out[key] = value
  if isinstance(out.get("mesh"), str):
    out["mesh"] = parse_mesh(out["mesh"])
  elif out.get("mesh") is not None:
    out["mesh"] = {k: int(v) for k, v in dict(out["mesh"]).items()}
  opt = _lookup(config, "opt")
  if opt is not None:
    opt = opt.to_dict() if hasattr(opt, "to_dict") else dict(opt)
    fields = {f.name for f in dataclasses.fields(optimizer_lib.OptimizerConfig)}
    out["opt"] = optimizer_lib.OptimizerConfig(**{k: v for k, v in opt.items() if k in fields})
  return out


def build_spec(*, config: str | None = None, preset: str | None = None,
               model_overrides: Mapping[str, Any] | None = None, **fields) -> AotSpec:
  """Presets < TRAINING_MODEL_DEFAULTS < the config file < explicit arguments (None: not given).

  `fields` are AotSpec fields (seq_len, batch_size, mesh, grad_accum_steps, z_loss, opt);
  `model_overrides` are ModelConfig fields (remat, compute_dtype, attention_impl, ...).
  """
  from seedcoder_jax import model as model_lib  # pylint: disable=g-import-not-at-top
  merged: dict[str, Any] = {"preset": "seed_coder_8b"}
  overrides = dict(TRAINING_MODEL_DEFAULTS)
  if config:
    from_file = spec_from_config(load_config_file(config))
    overrides.update(from_file.pop("model_overrides", {}))
    merged.update(from_file)
  if preset is not None:
    merged["preset"] = preset
  overrides.update({k: v for k, v in (model_overrides or {}).items() if v is not None})
  merged.update({k: v for k, v in fields.items() if v is not None})
  name = merged.pop("preset")
  if "compute_dtype" in overrides:  # "auto": the target is an accelerator, so bfloat16
    overrides["compute_dtype"] = perf.resolve_compute_dtype(overrides["compute_dtype"], "tpu")
  try:
    model = model_lib.preset(name, **overrides)
  except (ValueError, TypeError) as e:
    raise AotError(str(e)) from e
  return AotSpec(model=model, preset=name, **merged)


def to_json_line(report: dict) -> str:
  return json.dumps(report, default=lambda x: x.item() if isinstance(x, np.generic) else str(x))
