"""Runs completions' programs in the sandbox, many at once, and says which passed.

A program passes when it exited with status 0 AND its stdout proves its tests ran to their end:
each run's program is sealed with a fresh random token, printed after the last test
(seedcoder_jax.evaluation.verdict). An exit before that point (`sys.exit(0)`, `os._exit(0)`,
an exit hook, `System.exit(0)`, `exit(0)`) is status "exited_early", a failure. The tests are
asserts (HumanEval, MultiPL-E; Java runs with -ea) that raise, abort or exit non-zero on a wrong
answer.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional, Sequence

from seedcoder_jax.evaluation import verdict
from seedcoder_jax.evaluation.benchmarks import Problem

# Run-step limits (the sandbox gives compilers their own 60 s). memory_mb is the address space
# for Python and C++, the heap for Java (seedcoder_jax.sandbox.languages).
DEFAULT_TIMEOUT_S = {"python": 10.0, "cpp": 10.0, "java": 15.0}
DEFAULT_MEMORY_MB = {"python": 1024, "cpp": 1024, "java": 1024}
# Jobs per pool call: results (and progress) come back between calls.
_CHUNK = 64


@dataclasses.dataclass(frozen=True)
class Execution:
  """The outcome of one program.

  Attributes:
    passed: its tests ran to their end (the run's token was printed) and it exited 0.
    status: the sandbox's status (seedcoder_jax.sandbox.STATUSES: ok, error, timeout, memory,
      output_limit, compile_error, sandbox_error); EXITED_EARLY when it exited 0 without reaching
      the end of its tests; "match"/"mismatch" for FIM scoring.
    isolation: the isolation the sandbox gave this run ("bwrap" or "rlimits").
    returncode: the exit status, None if it never ran.
    detail: the end of stderr, to see why it failed.
  """
  passed: bool
  status: str
  isolation: str
  returncode: Optional[int]
  detail: str = ""


EXITED_EARLY = "exited_early"


def _job(problem: Problem, completion: str, token: str, timeout_s, memory_mb) -> dict:
  job = {"source": problem.program(completion, token), "language": problem.language,
         "timeout_s": timeout_s or DEFAULT_TIMEOUT_S[problem.language],
         "memory_mb": memory_mb or DEFAULT_MEMORY_MB[problem.language]}
  files = problem.sandbox_files()
  if files:
    job["files"] = files
  return job


def verdict_of(result, token: str) -> Execution:
  """The verdict on one sandbox Result of a program sealed with `token`."""
  completed = verdict.tests_completed(result.stdout, token)
  passed = result.status == "ok" and result.returncode == 0 and completed
  status = EXITED_EARLY if result.status == "ok" and not completed else result.status
  detail = ""
  if status == EXITED_EARLY:
    detail = "exited with status 0 before its tests ended (no proof they ran)"
  elif not passed:
    detail = result.stderr[-500:]
  return Execution(passed=passed, status=status, isolation=result.isolation,
                   returncode=result.returncode, detail=detail)


def run_many(jobs: Sequence[tuple[Problem, str]], *, workers: int = 4,
             timeout_s: Optional[float] = None, memory_mb: Optional[int] = None,
             progress: Optional[Callable[[int], None]] = None) -> list[Execution]:
  """Runs (problem, completion) jobs through seedcoder_jax.sandbox.run_many, in job order."""
  from seedcoder_jax import sandbox  # imported on first use: scoring FIM needs no sandbox
  out = []
  for start in range(0, len(jobs), _CHUNK):
    part = jobs[start:start + _CHUNK]
    tokens = [verdict.new_token() for _ in part]
    chunk = [_job(p, c, t, timeout_s, memory_mb) for (p, c), t in zip(part, tokens)]
    results = sandbox.run_many(chunk, workers=workers)
    out.extend(verdict_of(r, t) for r, t in zip(results, tokens))
    if progress is not None:
      progress(len(out))
  return out
