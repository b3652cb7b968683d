"""Runs completions' programs in the sandbox, many at once, and says which passed.

A program passes when the sandbox ran it to completion with exit status 0: the tests are asserts
(HumanEval, MBPP, MultiPL-E) that raise, abort or exit non-zero on a wrong answer.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
from typing import Callable, Optional, Sequence

from seedcoder_jax.evaluation.benchmarks import Problem

# Compiled languages include the compiler's time (g++ with bits/stdc++.h, javac + JVM start).
DEFAULT_TIMEOUT_S = {"python": 15.0, "cpp": 60.0, "java": 60.0}
DEFAULT_MEMORY_MB = {"python": 1024, "cpp": 2048, "java": 4096}


@dataclasses.dataclass(frozen=True)
class Execution:
  """The outcome of one program.

  Attributes:
    passed: it ran to the end and exited 0.
    status: the sandbox's status ("ok", "timeout", "error", ...; see seedcoder_jax.sandbox).
    isolation: the isolation the sandbox gave this run (recorded in every report).
    returncode: the exit status, None if it never ran.
    detail: the end of stderr, to see why it failed.
  """
  passed: bool
  status: str
  isolation: str
  returncode: Optional[int]
  detail: str = ""


def default_runner():
  """seedcoder_jax.sandbox.run_code, imported on first use."""
  from seedcoder_jax import sandbox
  return sandbox.run_code


def run_one(problem: Problem, completion: str, *, runner: Optional[Callable] = None,
            timeout_s: Optional[float] = None, memory_mb: Optional[int] = None) -> Execution:
  """Runs prompt + completion + tests of one sample in the sandbox."""
  runner = runner or default_runner()
  result = runner(problem.program(completion), language=problem.language,
                  timeout_s=timeout_s or DEFAULT_TIMEOUT_S[problem.language],
                  memory_mb=memory_mb or DEFAULT_MEMORY_MB[problem.language])
  status = str(getattr(result, "status", "unknown"))
  returncode = getattr(result, "returncode", None)
  passed = status == "ok" and returncode == 0
  stderr = getattr(result, "stderr", "") or ""
  if isinstance(stderr, bytes):
    stderr = stderr.decode("utf-8", "replace")
  return Execution(passed=passed, status=status,
                   isolation=str(getattr(result, "isolation", "unknown")),
                   returncode=returncode, detail="" if passed else stderr[-500:])


def run_many(jobs: Sequence[tuple[Problem, str]], *, workers: int = 4,
             runner: Optional[Callable] = None, timeout_s: Optional[float] = None,
             memory_mb: Optional[int] = None, progress: Optional[Callable[[int], None]] = None
             ) -> list[Execution]:
  """Runs (problem, completion) jobs, `workers` at a time, results in job order.

  Threads suffice: each job waits on a sandboxed child process, which does the work.
  """
  runner = runner or default_runner()
  results: list[Optional[Execution]] = [None] * len(jobs)
  with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
    futures = {pool.submit(run_one, p, c, runner=runner, timeout_s=timeout_s,
                           memory_mb=memory_mb): i for i, (p, c) in enumerate(jobs)}
    for done, future in enumerate(concurrent.futures.as_completed(futures), 1):
      results[futures[future]] = future.result()
      if progress is not None:
        progress(done)
  return results  # type: ignore[return-value]
