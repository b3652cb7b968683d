"""The server's threads: the batching worker that owns every sampler call, and uvicorn on a
background thread (`BackgroundServer`, for tests, notebooks and in-process clients).

Batching: one worker thread gathers concurrent requests into one `generate` call.

HTTP handlers run on the event loop; every JAX call runs on the worker thread (JAX dispatch from
many threads at once would interleave compilations and device transfers for no gain). The worker
takes the oldest waiting request, then keeps taking requests for up to `window_s` or until
`max_batch` rows are gathered, and calls `generate(prompts, params)` once for all of them; each
request's future receives its own slice of the completions. A request wider than `max_batch` rows
(a large `n`) runs alone: the sampler splits it into chunks itself.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import queue
import socket
import threading
import time
from typing import Callable, Optional, Sequence

import uvicorn

_STOP = object()


class Overloaded(RuntimeError):
  """More rows are waiting than the worker accepts (the server answers 429: retry later)."""


@dataclasses.dataclass
class _Job:
  prompts: list
  params: list
  future: concurrent.futures.Future


@dataclasses.dataclass
class BatchStats:
  """What the worker did so far (the /v1/stats route and the tests read it)."""

  generate_calls: int = 0
  requests: int = 0
  rows: int = 0
  largest_batch_rows: int = 0
  failed_calls: int = 0

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)


class BatchingWorker:
  """Owns the thread that calls `generate_fn(prompts, params) -> list` for batches of requests."""

  def __init__(self, generate_fn: Callable[[list, list], Sequence], *, max_batch: int,
               window_s: float, max_pending_rows: Optional[int] = None):
    if max_batch < 1:
      raise ValueError(f"max_batch={max_batch} must be at least 1")
    if window_s < 0:
      raise ValueError(f"batch window {window_s} s must not be negative")
    self._generate = generate_fn
    self.max_batch = max_batch
    self.window_s = window_s
    self.max_pending_rows = max_pending_rows
    self._pending_rows = 0  # queued and in flight
    self._lock = threading.Lock()
    self.stats = BatchStats()
    self._queue: queue.Queue = queue.Queue()
    self._carry: Optional[_Job] = None  # a job taken that did not fit into the last batch
    self._thread: Optional[threading.Thread] = None

  def start(self) -> None:
    if self._thread is None:
      self._thread = threading.Thread(target=self._run, name="sampler-worker", daemon=True)
      self._thread.start()

  def stop(self, timeout_s: float = 30.0) -> None:
    """Finishes the batch in flight, fails the requests still queued, and joins the thread."""
    if self._thread is None:
      return
    self._queue.put(_STOP)
    self._thread.join(timeout_s)
    self._thread = None

  def submit(self, prompts: list, params: list) -> concurrent.futures.Future:
    """Queues one request (rows of prompts with their SamplingParams); the future gets its rows'
    completions in order, or the exception `generate` raised."""
    if len(prompts) != len(params) or not prompts:
      raise ValueError(f"{len(prompts)} prompts with {len(params)} sampling params")
    if self._thread is None:
      raise RuntimeError("the batching worker is not running")
    with self._lock:
      if (self.max_pending_rows is not None and self._pending_rows
          and self._pending_rows + len(prompts) > self.max_pending_rows):
        raise Overloaded(f"{self._pending_rows} rows are already waiting (limit "
                         f"{self.max_pending_rows}); retry later")
      self._pending_rows += len(prompts)
    job = _Job(list(prompts), list(params), concurrent.futures.Future())
    job.future.add_done_callback(lambda _, n=len(prompts): self._release(n))
    self._queue.put(job)
    return job.future

  def _release(self, rows: int) -> None:
    with self._lock:
      self._pending_rows -= rows

  def _next(self, timeout: Optional[float]):
    if self._carry is not None:
      job, self._carry = self._carry, None
      return job
    return self._queue.get(timeout=timeout) if timeout is not None else self._queue.get()

  def _gather(self) -> tuple[list[_Job], bool]:
    """(jobs of the next batch, whether to stop after it)."""
    first = self._next(None)
    if first is _STOP:
      return [], True
    jobs, rows = [first], len(first.prompts)
    deadline = time.monotonic() + self.window_s
    while rows < self.max_batch:
      remaining = deadline - time.monotonic()
      try:
        job = self._next(max(remaining, 0.0)) if remaining > 0 else self._queue.get_nowait()
      except queue.Empty:
        break
      if job is _STOP:
        return jobs, True
      if rows + len(job.prompts) > self.max_batch:
        self._carry = job
        break
      jobs.append(job)
      rows += len(job.prompts)
    return jobs, False

  def _run(self) -> None:
    stopping = False
    while not stopping:
      jobs, stopping = self._gather()
      # A client that went away cancelled its future: do not spend compute on it.
      jobs = [j for j in jobs if j.future.set_running_or_notify_cancel()]
      if jobs:
        self._serve(jobs)
    self._fail_pending(RuntimeError("the server is shutting down"))

  def _serve(self, jobs: list[_Job]) -> None:
    prompts = [p for j in jobs for p in j.prompts]
    params = [p for j in jobs for p in j.params]
    self.stats.generate_calls += 1
    self.stats.requests += len(jobs)
    self.stats.rows += len(prompts)
    self.stats.largest_batch_rows = max(self.stats.largest_batch_rows, len(prompts))
    try:
      completions = list(self._generate(prompts, params))
      if len(completions) != len(prompts):
        raise RuntimeError(f"generate returned {len(completions)} completions for "
                           f"{len(prompts)} prompts")
    except Exception as e:  # every request of the batch learns why; the worker keeps serving
      self.stats.failed_calls += 1
      logging.exception("generate failed for a batch of %d requests", len(jobs))
      for j in jobs:
        j.future.set_exception(e)
      return
    start = 0
    for j in jobs:
      j.future.set_result(completions[start:start + len(j.prompts)])
      start += len(j.prompts)

  def _fail_pending(self, error: Exception) -> None:
    pending = [self._carry] if self._carry is not None else []
    self._carry = None
    while True:
      try:
        pending.append(self._queue.get_nowait())
      except queue.Empty:
        break
    for job in pending:
      if job is not _STOP and job.future.set_running_or_notify_cancel():
        job.future.set_exception(error)


class BackgroundServer:
  """A uvicorn server on its own thread (tests, notebooks, an in-process oracle)."""

  def __init__(self, app, host: str = "127.0.0.1", port: int = 0):
    # Binding here (port 0 = any free port) means the port is known before the thread starts.
    self._socket = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    self._socket.bind((host, port))
    self.host, self.port = host, self._socket.getsockname()[1]
    self._uvicorn = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    self._thread = threading.Thread(target=self._uvicorn.run, kwargs={"sockets": [self._socket]},
                                    name="openai-server", daemon=True)

  @property
  def base_url(self) -> str:
    return f"http://{self.host}:{self.port}/v1"

  def start(self, timeout_s: float = 60.0) -> "BackgroundServer":
    self._thread.start()
    deadline = time.monotonic() + timeout_s
    while not self._uvicorn.started:
      if not self._thread.is_alive() or time.monotonic() > deadline:
        raise RuntimeError(f"the server on {self.host}:{self.port} did not start")
      time.sleep(0.02)
    return self

  def stop(self, timeout_s: float = 30.0) -> None:
    self._uvicorn.should_exit = True
    self._thread.join(timeout_s)
    self._socket.close()

  def __enter__(self):
    return self.start()

  def __exit__(self, *exc):
    self.stop()
