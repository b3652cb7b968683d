"""Rewards of RL rollouts: the reply's code against the problem's tests in the sandbox.

Per rollout: the first Python code block of the decoded reply (problems.python_code) runs
against the problem's tests through problems.check, the sealed path evaluation uses (an early
`sys.exit(0)` is not a pass). reward = 1 when it passed, else 0; a reply without a code block is
a format error (reward 0, flagged). DAPO's soft overlong penalty (optional) subtracts
  penalty * (len - (L_max - buffer)) / buffer   for L_max - buffer < len <= L_max
from the reward (L_max = the stage's max_new_tokens). A reward that cannot be computed (the
sandbox itself failing, an exception) marks the rollout `skipped` with its reason: it gets no
loss and is counted in the step's metrics, never silently scored 0.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Sequence

import numpy as np

from seedcoder_jax.posttrain import problems as problems_lib
from seedcoder_jax.posttrain.problems import python_code


@dataclasses.dataclass
class Rewards:
  reward: np.ndarray         # [N] float32 (pass, minus the overlong penalty)
  passed: np.ndarray         # [N] bool: the tests ran to their end and passed
  format_error: np.ndarray   # [N] bool: no Python code block in the reply
  skipped: np.ndarray        # [N] bool: no reward could be computed (excluded from the loss)
  reasons: dict              # skip reason -> count
  statuses: dict             # sandbox status -> count (what the failing programs did)


def overlong_penalty(lengths_N: np.ndarray, max_new_tokens: int, buffer: int,
                     penalty: float) -> np.ndarray:
  """DAPO's soft overlong punishment (eq. 13), as a non-negative amount to subtract."""
  if buffer <= 0 or penalty <= 0:
    return np.zeros(len(lengths_N), np.float32)
  start = max_new_tokens - buffer
  over = np.clip((np.asarray(lengths_N, np.float64) - start) / buffer, 0.0, 1.0)
  return (penalty * over).astype(np.float32)


def compute(problem_list: Sequence[problems_lib.Problem], texts: Sequence[str],
            lengths_N: np.ndarray, *, max_new_tokens: int, overlong_buffer: int = 0,
            overlong_penalty_value: float = 1.0, workers: int = 2,
            timeout_s: float = 10.0, check=problems_lib.check) -> Rewards:
  """Rewards of N (problem, reply text) rollouts. `check` is problems.check (tests pass their
  own to plant failures of the sandbox itself)."""
  n = len(texts)
  reward = np.zeros(n, np.float32)
  passed = np.zeros(n, bool)
  skipped = np.zeros(n, bool)
  reasons: collections.Counter = collections.Counter()
  statuses: collections.Counter = collections.Counter()
  codes = [python_code(t or "") for t in texts]
  format_error = np.array([c is None for c in codes], bool)
  jobs = [k for k in range(n) if codes[k] is not None]
  if jobs:
    try:
      verdicts = check([(problem_list[k], codes[k]) for k in jobs], workers=workers,
                       timeout_s=timeout_s)
    except Exception as e:  # pylint: disable=broad-except
      # The reward function itself failed: no rollout of this batch has a reward.
      skipped[jobs] = True
      reasons[f"reward_error:{type(e).__name__}"] += len(jobs)
      verdicts = []
    for k, v in zip(jobs, verdicts):
      if v.status == "sandbox_error":
        skipped[k] = True
        reasons["sandbox_error"] += 1
        continue
      passed[k] = bool(v.passed)
      statuses[v.status] += 1
  reward[passed] = 1.0
  reward -= overlong_penalty(lengths_N, max_new_tokens, overlong_buffer, overlong_penalty_value)
  return Rewards(reward=reward, passed=passed, format_error=format_error, skipped=skipped,
                 reasons=dict(reasons), statuses=dict(statuses))
