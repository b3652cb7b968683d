"""Training checkpoints: train state, Grain iterator state and a little metadata, with Orbax.

Layout of `DIR` (one folder per saved step, written by orbax's CheckpointManager):
  DIR/<step>/state/   the TrainState (params, optimizer state, step), each shard from its host
  DIR/<step>/data/    the Grain iterator state, one JSON file per process
  DIR/<step>/meta/    JSON: step, wall time, anything the trainer adds (e.g. the model config)

Saves are asynchronous: device arrays are copied to host memory, then written by a background
thread while training continues; a step folder appears under its final name only once every item
of it is written (orbax's atomic rename), so a run killed mid-save leaves a temporary folder that
is never read. A step folder that is complete by name but unreadable (truncated or corrupted
files) is renamed `DIR/corrupt-<step>-<time>` with a warning and the previous step is used.

Preemption: `PreemptionGuard` turns SIGTERM into a flag that the loop polls, so the trainer
saves and exits cleanly; on multi-process runs JAX's preemption sync point (JAX's own SIGTERM
notifier) makes every process agree on the step to save at.
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib
import signal
import threading
import time
from typing import Any, Optional

import grain.checkpoint as grain_ckpt
import jax
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

log = logging.getLogger(__name__)

STATE, DATA, META = "state", "data", "meta"


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
  """When and how many checkpoints; `every_steps` 0 saves only at the end and on preemption."""

  every_steps: int = 100
  keep: int = 3
  async_save: bool = True

  def __post_init__(self):
    if self.every_steps < 0:
      raise ValueError(f"ckpt.every_steps={self.every_steps} must be >= 0")
    if self.keep < 1:
      raise ValueError(f"ckpt.keep={self.keep} must be >= 1")


@dataclasses.dataclass
class Restored:
  step: int
  state: Any
  meta: dict


def _abstract_with_shardings(abstract_tree, shardings):
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                      abstract_tree, shardings)


class Checkpointer:
  """An Orbax CheckpointManager over (train state, Grain iterator, metadata)."""

  def __init__(self, directory, cfg: CheckpointConfig = CheckpointConfig()):
    self.directory = pathlib.Path(directory).absolute()  # orbax requires absolute paths
    self.cfg = cfg
    options = ocp.CheckpointManagerOptions(
        max_to_keep=cfg.keep, enable_async_checkpointing=cfg.async_save, create=True,
        cleanup_tmp_directories=True)
    self._mgr = ocp.CheckpointManager(
        self.directory, options=options,
        item_handlers={STATE: ocp.StandardCheckpointHandler(),
                       DATA: grain_ckpt.CheckpointHandler(),
                       META: ocp.JsonCheckpointHandler()})

  def all_steps(self) -> list[int]:
    self._mgr.reload()
    return sorted(self._mgr.all_steps())

  def latest_step(self) -> Optional[int]:
    steps = self.all_steps()
    return steps[-1] if steps else None

  def due(self, step: int) -> bool:
    return self.cfg.every_steps > 0 and step % self.cfg.every_steps == 0

  def save(self, step: int, state, data_iterator=None, meta: Optional[dict] = None) -> None:
    """Starts an (async) save of `state` and the iterator as it is now, i.e. after `step` batches.

    The iterator state is captured synchronously (Grain's handler reads it inside this call), so
    the loop may go on pulling batches right away.
    """
    if step in self._mgr.all_steps():
      return  # e.g. the final save right after a periodic one at the same step
    items = {STATE: ocp.args.StandardSave(state),
             META: ocp.args.JsonSave({"step": int(step), "time": time.time(), **(meta or {})})}
    if data_iterator is not None:
      items[DATA] = grain_ckpt.CheckpointSave(data_iterator)
    self._mgr.save(step, args=ocp.args.Composite(**items), force=True)

  def delete(self, step: int) -> None:
    self._mgr.delete(step)

  def wait(self) -> None:
    """Blocks until every started save is on disk (and old ones beyond `keep` are deleted)."""
    self._mgr.wait_until_finished()

  def close(self) -> None:
    self._mgr.wait_until_finished()
    self._mgr.close()

  def restore_latest(self, abstract_state, shardings, data_iterator=None) -> Optional[Restored]:
    """The newest readable checkpoint, restored into `shardings`; None when there is none.

    A newest checkpoint that fails to restore (truncated, corrupted, missing items) is moved aside
    with a warning and the one before it is tried, and so on. `data_iterator` is set to the saved
    position in place.
    """
    target = _abstract_with_shardings(abstract_state, shardings)
    for step in reversed(self.all_steps()):
      try:
        return self._restore(step, target, data_iterator)
      except Exception as e:  # pylint: disable=broad-except
        # Orbax/tensorstore raise many error types for bad bytes; any of them means "unreadable".
        log.warning("checkpoint %s/%d cannot be restored (%s: %s); falling back to the previous "
                    "one", self.directory, step, type(e).__name__, str(e).splitlines()[0][:300])
        print(f"WARNING: checkpoint {self.directory}/{step} is unreadable "
              f"({type(e).__name__}); falling back to the previous one", flush=True)
        self._move_aside(step)
    return None

  def _restore(self, step: int, target, data_iterator) -> Restored:
    items = {STATE: ocp.args.StandardRestore(target), META: ocp.args.JsonRestore()}
    if data_iterator is not None:
      items[DATA] = grain_ckpt.CheckpointRestore(data_iterator)
    out = self._mgr.restore(step, args=ocp.args.Composite(**items))
    return Restored(step=step, state=out[STATE], meta=dict(out[META] or {}))

  def _move_aside(self, step: int) -> None:
    """Renames an unreadable step folder so that it is neither restored nor overwritten later."""
    if jax.process_index() == 0:
      src = self.directory / str(step)
      if src.exists():
        src.rename(self.directory / f"corrupt-{step}-{int(time.time())}")
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f"checkpoint_move_aside_{step}")
    self._mgr.reload()


def restore_params(directory, abstract_params, shardings) -> tuple[int, Any, dict]:
  """(step, params, meta) of the newest readable checkpoint under `directory` (a previous phase's
  checkpoints): parameters only, e.g. to start continued pretraining with a fresh optimizer whose
  state need not match the old one's structure."""
  directory = pathlib.Path(directory).absolute()
  target = {"params": _abstract_with_shardings(abstract_params, shardings)}
  restore_args = jax.tree.map(lambda t: ocp.ArrayRestoreArgs(sharding=t.sharding), target)
  steps = sorted((int(p.name) for p in directory.iterdir() if p.name.isdigit()), reverse=True) \
      if directory.is_dir() else []
  for step in steps:
    try:
      out = ocp.PyTreeCheckpointer().restore(
          directory / str(step) / STATE,
          args=ocp.args.PyTreeRestore(item=target, restore_args=restore_args, partial_restore=True))
      meta = ocp.JsonCheckpointHandler().restore(directory / str(step) / META)
      return step, out["params"], dict(meta or {})
    except Exception as e:  # pylint: disable=broad-except
      print(f"WARNING: checkpoint {directory}/{step} is unreadable ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:200]}); trying the previous one", flush=True)
  raise FileNotFoundError(f"no readable checkpoint under {directory} (steps found: {steps})")


class PreemptionGuard:
  """SIGTERM -> a flag polled by the training loop, instead of dying mid-step.

  Single process: a Python signal handler (restored on exit). Multi-process: JAX's distributed
  runtime already turns SIGTERM into a preemption notice that every process sees at the same
  step through `reached_preemption_sync_point`, so no Python handler is installed.
  """

  def __init__(self):
    self._flag = threading.Event()
    self._previous = None

  def __enter__(self):
    if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, lambda *_: self._flag.set())
    return self

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
    return False

  def reached(self, step: int) -> bool:
    if jax.process_count() == 1:
      return self._flag.is_set()
    try:
      return bool(multihost_utils.reached_preemption_sync_point(step))
    except RuntimeError:  # the preemption service is disabled
      return False
