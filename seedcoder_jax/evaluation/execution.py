"""Runs completions' programs in the sandbox, many at once, and says which passed.

A program passes when the sandbox ran it to completion with exit status 0: the tests are asserts
(HumanEval, MBPP, MultiPL-E; Java runs with -ea) that raise, abort or exit non-zero on a wrong
answer.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional, Sequence

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
    passed: it ran to the end and exited 0.
    status: the sandbox's status (seedcoder_jax.sandbox.STATUSES: ok, error, timeout, memory,
      output_limit, compile_error, sandbox_error), or "exact_match" for FIM scoring.
    isolation: the isolation the sandbox gave this run ("bwrap" or "rlimits").
    returncode: the exit status, None if it never ran.
    detail: the end of stderr, to see why it failed.
  """
  passed: bool
  status: str
  isolation: str
  returncode: Optional[int]
  detail: str = ""


def _job(problem: Problem, completion: str, timeout_s, memory_mb) -> dict:
  return {"source": problem.program(completion), "language": problem.language,
          "timeout_s": timeout_s or DEFAULT_TIMEOUT_S[problem.language],
          "memory_mb": memory_mb or DEFAULT_MEMORY_MB[problem.language]}


def _execution(result) -> Execution:
  passed = result.status == "ok" and result.returncode == 0
  return Execution(passed=passed, status=result.status, isolation=result.isolation,
                   returncode=result.returncode, detail="" if passed else result.stderr[-500:])


def run_many(jobs: Sequence[tuple[Problem, str]], *, workers: int = 4,
             timeout_s: Optional[float] = None, memory_mb: Optional[int] = None,
             progress: Optional[Callable[[int], None]] = None) -> list[Execution]:
  """Runs (problem, completion) jobs through seedcoder_jax.sandbox.run_many, in job order."""
  from seedcoder_jax import sandbox  # imported on first use: scoring FIM needs no sandbox
  out = []
  for start in range(0, len(jobs), _CHUNK):
    chunk = [_job(p, c, timeout_s, memory_mb) for p, c in jobs[start:start + _CHUNK]]
    out.extend(_execution(r) for r in sandbox.run_many(chunk, workers=workers))
    if progress is not None:
      progress(len(out))
  return out
