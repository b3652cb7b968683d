"""Metric sinks of the trainers: WORKDIR/metrics.jsonl, TensorBoard event files, a progress bar.

Only process 0 writes. `metrics.jsonl` gets one JSON object per logged step (DESIGN.md contract:
at least step, loss, tokens_per_s, mfu); a resumed run appends to the same file, so a step may
appear twice after a crash (the later line is the resumed run's). The workdir may be gs:// (see
seedcoder_jax/storage.py: metrics.jsonl is then rewritten every 30 s, on `flush` and on close;
tensorboardX writes gs:// event files with google-cloud-storage). Throughput maths are pure
functions below.
"""

from __future__ import annotations

import json
import math
import os
import sys
from typing import Mapping, Optional

import jax

from seedcoder_jax import storage

METRICS_FILE = "metrics.jsonl"


def tokens_per_s(tokens: float, seconds: float) -> float:
  return tokens / seconds if seconds > 0 else float("nan")


def is_finite(metrics: Mapping[str, float], keys=("loss", "grad_norm")) -> bool:
  return all(math.isfinite(float(metrics[k])) for k in keys if k in metrics)


def _jsonable(v):
  v = float(v) if not isinstance(v, (int, str, bool)) else v
  if isinstance(v, float) and not math.isfinite(v):
    return str(v)  # JSON has no NaN/Inf; "nan" keeps the line parseable by strict readers
  return v


def read_metrics(workdir) -> list[dict]:
  """Every line of WORKDIR/metrics.jsonl (for tests and reports)."""
  path = storage.path(workdir) / METRICS_FILE
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _summary_writer(logdir: str):
  """tensorboardX's SummaryWriter; for gs:// its google-cloud-storage record writer, made
  idempotent on close: tensorboardX closes it again from __del__ and atexit, and each close
  re-uploads the whole event file (a 2-minute retry loop once the bucket is out of reach)."""
  from tensorboardX import SummaryWriter, record_writer  # pylint: disable=g-import-not-at-top
  if storage.is_remote(logdir) and not getattr(record_writer.REGISTERED_FACTORIES.get("gs"),
                                               "idempotent", False):
    class Writer(record_writer.GCSRecordWriter):
      closed = False

      def close(self):
        if not self.closed:
          self.closed = True
          self.flush()

    class Factory(record_writer.GCSRecordWriterFactory):
      idempotent = True

      def open(self, path):
        return Writer(path)

    record_writer.register_writer_factory("gs", Factory())
  return SummaryWriter(logdir)


# What a log line shows, when present (post-training adds its headline metrics).
ECHO_KEYS = ("loss", "eval_loss", "rewards/accuracies", "eval_rewards/accuracies", "pass_rate",
             "reward_mean", "eval_pass_rate", "grad_norm", "lr", "tokens_per_s", "mfu")


class MetricWriter:
  """metrics.jsonl + TensorBoard + tqdm, all on process 0; no-ops elsewhere."""

  def __init__(self, workdir, *, initial_step: int, total_steps: int,
               progress_bar: Optional[bool] = None):
    self.active = jax.process_index() == 0
    self._file = self._tb = self._bar = None
    if not self.active:
      return
    workdir = storage.path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    self._file = storage.AppendLog(workdir / METRICS_FILE)
    self._tb = _summary_writer(os.fspath(workdir / "tensorboard"))
    if progress_bar is None:
      progress_bar = sys.stderr.isatty()
    if progress_bar:
      from tqdm import tqdm  # pylint: disable=g-import-not-at-top
      self._bar = tqdm(total=total_steps, initial=initial_step, unit="step", dynamic_ncols=True)

  def write(self, step: int, metrics: Mapping[str, float], *, echo: bool = False) -> None:
    if not self.active:
      return
    row = {"step": int(step), **{k: _jsonable(v) for k, v in metrics.items()}}
    self._file.write(json.dumps(row) + "\n")
    for k, v in metrics.items():
      if isinstance(v, (int, float)) and math.isfinite(float(v)):
        self._tb.add_scalar(k, float(v), step)
    if self._bar is not None:
      self._bar.set_postfix({k: f"{row[k]:.4g}" for k in ("loss", "eval_loss", "pass_rate",
                                                          "eval_pass_rate", "tokens_per_s")
                             if isinstance(row.get(k), float)}, refresh=False)
    elif echo:
      shown = " ".join(f"{k}={row[k]:.4g}" if isinstance(row[k], float) else f"{k}={row[k]}"
                       for k in ECHO_KEYS if k in row)
      print(f"step {step}: {shown}", flush=True)

  def flush(self) -> None:
    """Makes every line written so far durable (a gs:// metrics.jsonl is otherwise rewritten
    every 30 s); the trainer calls it with each checkpoint."""
    if self._file is not None:
      self._file.flush()
      self._tb.flush()

  def advance(self, step: int) -> None:
    if self._bar is not None:
      self._bar.update(step - self._bar.n)

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()
    if self._tb is not None:
      self._tb.close()
    if self._file is not None:
      self._file.close()
