"""Many sandboxed runs in parallel (evaluation over n samples, RL reward batches).

Each run holds its own sandbox uid (isolation.lease_uid) and its own process tree, so runs never
share a process limit or kill each other's processes; threads are enough because the work happens
in the child processes.
"""

import concurrent.futures
import os

from seedcoder_jax.sandbox.runner import run_code


def default_workers():
  return max(1, len(os.sched_getaffinity(0)))


def run_many(jobs, *, workers=None, **defaults):
  """Runs every job through run_code, `workers` at a time; results in the order of jobs.

  Args:
    jobs: iterable of dicts of run_code keyword arguments, each with at least "source".
    workers: parallel runs (default: the CPUs this process may use).
    **defaults: run_code keyword arguments shared by every job (a job's own keys win).

  Returns:
    list of Result, one per job, in order.
  """
  jobs = [dict(job) for job in jobs]
  for i, job in enumerate(jobs):
    if "source" not in job:
      raise ValueError(f"run_many: job {i} has no 'source' (keys: {sorted(job)})")
  workers = workers or default_workers()
  if workers < 1:
    raise ValueError(f"run_many: workers must be >= 1, got {workers}")

  def one(job):
    kwargs = {**defaults, **job}
    return run_code(kwargs.pop("source"), **kwargs)

  with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
    return list(pool.map(one, jobs))
