"""XLA:CPU's HLO scheduler, chosen per process (it acts only when set before JAX's backend starts).

XLA:CPU orders each program's operations with one of two schedulers
(`--xla_cpu_enable_concurrency_optimized_scheduler`):
  "bfs"  XLA's default: breadth-first, keeping independent operations together so its runtime can
         run them at once, at the cost of more live memory;
  "dfs"  the memory-minimising depth-first scheduler (the flag set to false);
  ""     leave XLA_FLAGS as the environment has it.

On this project's 2-core x86 box "dfs" decodes ~1.3x faster at batch 16 and runs the RL demo's
rollouts 1.2-1.3x faster, but slows the tiny model's training step (docs/benchmarks.md, "XLA:CPU's
scheduler"). So the sampling entry points (serve, eval, the data builders that decode, the
sampling benches) default to "dfs" through `--xla_cpu_scheduler`, configs/rl.py sets
`config.xla_cpu_scheduler = "dfs"` (launch/train.py applies it), and the other trainers and the
recipe keep XLA's default. A TPU or GPU program is not affected.

The option must travel in XLA_FLAGS, which XLA reads once when the first backend starts, so
`set_scheduler` must run before anything touches a device. (`jax.jit(compiler_options=...)`
accepts the option but, in jaxlib 0.12, compiles the same schedule as without it: checked by
comparing the compiled HLO text.) A value already in XLA_FLAGS wins
(the environment is the outer, explicit choice) and is reported. Nothing here imports jax at
module level, so entry points can call it first.
"""

from __future__ import annotations

import os
import sys

FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler"
SCHEDULERS = {"": None, "bfs": "true", "dfs": "false"}


def _flag_value(xla_flags: str):
  """The value XLA_FLAGS gives the scheduler flag (the last one wins, as in XLA), or None."""
  value = None
  for item in xla_flags.split():
    if item == FLAG:
      value = "true"
    elif item.startswith(FLAG + "="):
      value = item.split("=", 1)[1].lower()
  return value


def current() -> str:
  """The scheduler XLA will use (or is using) in this process: "bfs" or "dfs"."""
  value = _flag_value(os.environ.get("XLA_FLAGS", ""))
  return "dfs" if value in ("false", "0") else "bfs"


def _backend_started() -> bool:
  if "jax" not in sys.modules:
    return False
  from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top
  return xla_bridge.backends_are_initialized()


def set_scheduler(name: str) -> str:
  """Asks XLA:CPU for scheduler `name` ("bfs", "dfs" or "" for no change); returns the one in
  effect. Refuses an unknown name, and a change once the backend has started (it would be
  silently ignored)."""
  if name not in SCHEDULERS:
    raise ValueError(f"xla_cpu_scheduler={name!r} is not one of {sorted(SCHEDULERS)}")
  if not name:
    return current()
  xla_flags = os.environ.get("XLA_FLAGS", "")
  given = _flag_value(xla_flags)
  if given is not None:
    if current() != name:
      print(f"[xla_cpu] XLA_FLAGS sets {FLAG}={given}, which wins over xla_cpu_scheduler="
            f"{name!r}: scheduler {current()!r}", file=sys.stderr, flush=True)
    return current()
  if _backend_started():
    raise RuntimeError(f"xla_cpu_scheduler={name!r} must be set before JAX's backend starts "
                       "(call xla_cpu.set_scheduler first thing in the entry point)")
  os.environ["XLA_FLAGS"] = f"{xla_flags} {FLAG}={SCHEDULERS[name]}".strip()
  return name


def define_flag(default: str = "dfs"):
  """The `--xla_cpu_scheduler` absl flag of a sampling entry point (call set_scheduler with its
  value first thing in main)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  return flags.DEFINE_enum(
      "xla_cpu_scheduler", default, list(SCHEDULERS),
      "XLA:CPU's HLO scheduler for this process: dfs (memory-minimising; faster decoding on the "
      "CPUs measured, docs/benchmarks.md), bfs (XLA's default) or empty (XLA_FLAGS decides)")
