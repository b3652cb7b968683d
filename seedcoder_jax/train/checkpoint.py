"""Training checkpoints: train state, Grain iterator state and a little metadata, with Orbax.

Layout of `DIR` (one folder per saved step, written by orbax's CheckpointManager):
  DIR/<step>/state/   the TrainState (params, optimizer state, step), each shard from its host
  DIR/<step>/data/    the Grain iterator state, one JSON file per process
  DIR/<step>/meta/    JSON: step, wall time, anything the trainer adds (e.g. the model config)

Saves are asynchronous: device arrays are copied to host memory, then written by a background
thread while training continues; a step folder appears under its final name only once every item
of it is written (orbax's atomic rename), so a run killed mid-save leaves a temporary folder that
is never read. Once a save is finished, process 0 adds DIR/<step>/files.json: every file's size.

Restore decides from the files alone, so every process reaches the same verdict:
  - corrupt (a file of files.json missing or of another size, an item or orbax's metadata missing
    or unreadable): the step is skipped with a loud warning, the previous one is tried, and the
    skipped folder is renamed `DIR/corrupt-<step>-<time>` with its reason in `why.txt`;
  - intact but not this run's (another tree structure or shape, Grain iterator state of another
    process count): CheckpointMismatchError naming what differs; nothing is skipped;
  - intact by its files but failing to restore (e.g. flipped bits): RestoreError, never skipped;
  - checkpoints exist but all are corrupt: NoRestorableCheckpointError, unless
    `ckpt.allow_fresh_start` lets the run start over.

DIR may be gs:// (paths are epath, seedcoder_jax/storage.py; orbax writes array bytes with
tensorstore's gcs driver and, as Cloud Storage has no atomic rename, marks a finished step with
commit_success.txt instead; setting a corrupt step aside copies it).

Preemption: `PreemptionGuard` turns SIGTERM into a flag that the loop polls, so the trainer
saves and exits cleanly; on multi-process runs JAX's preemption sync point (JAX's own SIGTERM
notifier) makes every process agree on the step to save at.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import signal
import threading
import time
from typing import Any, Optional

import grain.checkpoint as grain_ckpt
import jax
import orbax.checkpoint as ocp
from etils import epath
from jax.experimental import multihost_utils

from seedcoder_jax import storage

log = logging.getLogger(__name__)

STATE, DATA, META = "state", "data", "meta"
MANIFEST = "files.json"  # {path relative to the step folder: size in bytes}, of a finished save
REQUIRED = ("_CHECKPOINT_METADATA", f"{STATE}/_METADATA", f"{STATE}/manifest.ocdbt", f"{META}/metadata")


class CheckpointMismatchError(ValueError):
  """An intact checkpoint that another config or topology wrote; the message names what differs."""


class RestoreError(RuntimeError):
  """An intact-looking checkpoint that failed to restore; never skipped silently."""


class NoRestorableCheckpointError(RuntimeError):
  """Checkpoints exist but every one is corrupt, and ckpt.allow_fresh_start is off."""


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
  """When and how many checkpoints; `every_steps` 0 saves only at the end and on preemption."""

  every_steps: int = 100
  keep: int = 3
  async_save: bool = True
  allow_fresh_start: bool = False  # start over when checkpoints exist but all are corrupt

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
  skipped: dict = dataclasses.field(default_factory=dict)  # newer corrupt step -> why


def _abstract_with_shardings(abstract_tree, shardings):
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                      abstract_tree, shardings)


def _files(folder: epath.Path) -> list[epath.Path]:
  """Every file under `folder` (iterdir, not walk: gcsfs's walk drops the gs:// of its paths)."""
  out = []
  for p in folder.iterdir():
    out.extend(_files(p) if p.is_dir() else [p])
  return sorted(out)


def write_manifest(step_dir: epath.Path) -> None:
  """Records the size of every file of a finished save (process 0; written atomically)."""
  files = {str(f.relative_to(step_dir)): f.stat().length
           for f in _files(step_dir) if f.name != MANIFEST}
  storage.write_atomic(step_dir / MANIFEST, json.dumps(files, indent=0))


def _state_metadata(step_dir: epath.Path):
  return ocp.StandardCheckpointHandler().metadata(step_dir / STATE).tree


def corruption(step_dir: epath.Path, with_data: bool) -> Optional[str]:
  """Why the saved step in `step_dir` is corrupt, judged from its files alone (the same answer on
  every process); None when it looks intact."""
  manifest = step_dir / MANIFEST
  if manifest.exists():
    try:
      sizes = json.loads(manifest.read_text())
    except ValueError:
      return f"{MANIFEST} is unreadable"
    for name, size in sizes.items():
      f = step_dir / name
      if not f.is_file():
        return f"{name} is missing"
      if f.stat().length != size:
        return f"{name} has {f.stat().length} bytes, {size} when saved"
  missing = [name for name in REQUIRED if not (step_dir / name).is_file()]
  if with_data and not list((step_dir / DATA).glob("process_*-of-*.json")):
    missing.append(f"{DATA}/process_*-of-*.json")
  if missing:
    return f"{', '.join(missing)} missing"
  try:
    _state_metadata(step_dir)
  except Exception as e:  # pylint: disable=broad-except
    return f"its state metadata is unreadable ({type(e).__name__})"
  return None


def _path(keys) -> str:
  return "/".join(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in keys)


def check_matches(step_dir: epath.Path, target, with_data: bool) -> None:
  """Raises CheckpointMismatchError naming each difference between the saved step and this run:
  leaves missing or extra, shapes, and the process count of the Grain iterator state (saved as
  one file per process, which cannot be re-split over another number of processes)."""
  saved = {_path(p): tuple(m.shape) for p, m in jax.tree_util.tree_leaves_with_path(
      _state_metadata(step_dir))}
  want = {_path(p): tuple(t.shape) for p, t in jax.tree_util.tree_leaves_with_path(target)}
  diffs = [f"{k}: checkpoint {saved[k]}, this run {want[k]}" for k in want
           if k in saved and saved[k] != want[k]]
  if set(saved) != set(want):
    diffs += [f"tree structure: only in the checkpoint {sorted(set(saved) - set(want))[:5]}, only "
              f"in this run {sorted(set(want) - set(saved))[:5]}"]
  if with_data:
    counts = {re.fullmatch(r"process_\d+-of-(\d+)\.json", f.name).group(1)
              for f in (step_dir / DATA).glob("process_*-of-*.json")}
    if counts != {str(jax.process_count())}:
      diffs.append(f"Grain iterator state saved by {'/'.join(sorted(counts))} processes, this "
                   f"run has {jax.process_count()} (resume with as many processes as saved it)")
  if diffs:
    raise CheckpointMismatchError(
        f"checkpoint {step_dir} does not match this run's config or topology: "
        + "; ".join(diffs[:10]) + (f"; and {len(diffs) - 10} more" if len(diffs) > 10 else "")
        + ". Restore it with the config that wrote it, or train in another workdir.")


class Checkpointer:
  """An Orbax CheckpointManager over (train state, Grain iterator, metadata)."""

  def __init__(self, directory, cfg: CheckpointConfig = CheckpointConfig()):
    self.directory = storage.path(directory)  # local ones absolute: orbax requires it
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
    self._mgr.wait_until_finished()  # orbax's save would wait for the previous one here anyway
    self._write_manifests()
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
    self._write_manifests()

  def close(self) -> None:
    self.wait()
    self._mgr.close()

  def _write_manifests(self) -> None:
    """files.json for every finished step that lacks one (process 0)."""
    if jax.process_index() != 0:
      return
    for step in self._mgr.all_steps():
      step_dir = self.directory / str(step)
      if not (step_dir / MANIFEST).exists():
        try:
          write_manifest(step_dir)
        except OSError:  # deleted meanwhile (orbax's keep-N cleanup)
          pass

  def restore_latest(self, abstract_state, shardings, data_iterator=None) -> Optional[Restored]:
    """The newest intact checkpoint, restored into `shardings`; None when there is none.

    Corrupt steps (see the module docstring) are skipped loudly, newest first, and set aside once
    an older one is restored; a mismatch or a failed restore of an intact step raises. If every
    step is corrupt: NoRestorableCheckpointError unless ckpt.allow_fresh_start (then None).
    `data_iterator` is set to the saved position in place.
    """
    target = _abstract_with_shardings(abstract_state, shardings)
    with_data = data_iterator is not None
    skipped = {}
    for step in reversed(self.all_steps()):
      step_dir = self.directory / str(step)
      why = corruption(step_dir, with_data)
      if why is not None:
        skipped[step] = why
        log.error("checkpoint %s is corrupt (%s); falling back to the previous one", step_dir, why)
        print(f"WARNING: checkpoint {step_dir} is corrupt ({why}); falling back to the previous "
              f"one", flush=True)
        continue
      check_matches(step_dir, target, with_data)
      try:
        restored = self._restore(step, target, data_iterator)
      except Exception as e:  # pylint: disable=broad-except
        raise RestoreError(
            f"checkpoint {step_dir} looks intact but failed to restore ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:300]}); if its bytes are bad, move it aside (mv {step_dir} "
            f"{self.directory}/corrupt-{step}) and the run resumes from the one before") from e
      self._set_aside(skipped)
      restored.skipped = skipped
      return restored
    if skipped and not self.cfg.allow_fresh_start:
      raise NoRestorableCheckpointError(
          f"{self.directory} has checkpoints but none can be restored: "
          + "; ".join(f"step {k}: {v}" for k, v in skipped.items())
          + ". Set config.ckpt.allow_fresh_start=True to start over from step 0 (they are then "
          "moved aside), or point --workdir elsewhere.")
    if skipped:
      print(f"WARNING: no checkpoint of {self.directory} can be restored; starting over as "
            f"config.ckpt.allow_fresh_start allows", flush=True)
      self._set_aside(skipped)
    return None

  def _restore(self, step: int, target, data_iterator) -> Restored:
    items = {STATE: ocp.args.StandardRestore(target), META: ocp.args.JsonRestore()}
    if data_iterator is not None:
      items[DATA] = grain_ckpt.CheckpointRestore(data_iterator)
    out = self._mgr.restore(step, args=ocp.args.Composite(**items))
    return Restored(step=step, state=out[STATE], meta=dict(out[META] or {}))

  def _set_aside(self, skipped: dict) -> None:
    """Renames corrupt step folders to corrupt-<step>-<time>, with the reason in why.txt, so that
    they are neither restored nor overwritten later and the skip stays on record."""
    if not skipped:
      return
    if jax.process_index() == 0:
      for step, why in skipped.items():
        src = self.directory / str(step)
        if src.exists():
          dst = self.directory / f"corrupt-{step}-{int(time.time())}"
          src.rename(dst)
          (dst / "why.txt").write_text(f"skipped at restore on {time.ctime()}: {why}\n")
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f"checkpoint_set_aside_{min(skipped)}")
    self._mgr.reload()


def restore_params(directory, abstract_params, shardings) -> tuple[int, Any, dict]:
  """(step, params, meta) of the newest intact checkpoint under `directory` (a previous phase's
  checkpoints): parameters only, e.g. to start continued pretraining with a fresh optimizer whose
  state need not match the old one's structure. Corrupt steps are skipped loudly; any other
  failure raises."""
  directory = storage.path(directory)
  target = {"params": _abstract_with_shardings(abstract_params, shardings)}
  restore_args = jax.tree.map(lambda t: ocp.ArrayRestoreArgs(sharding=t.sharding), target)
  steps = sorted((int(p.name) for p in directory.iterdir() if p.name.isdigit()), reverse=True) \
      if directory.is_dir() else []
  for step in steps:
    why = corruption(directory / str(step), with_data=False)
    if why is not None:
      print(f"WARNING: checkpoint {directory}/{step} is corrupt ({why}); trying the previous one",
            flush=True)
      continue
    out = ocp.PyTreeCheckpointer().restore(
        directory / str(step) / STATE,
        args=ocp.args.PyTreeRestore(item=target, restore_args=restore_args, partial_restore=True))
    meta = ocp.JsonCheckpointHandler().restore(directory / str(step) / META)
    return step, out["params"], dict(meta or {})
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
