"""The RL prompt sampler and curriculum: which problems each step trains on, as checkpointable state.

Problems are visited in epochs, each a seeded permutation of the problems still in the pool; the
position (epoch, offset) is state. Per problem, attempts and passes accumulate over the run; a
problem whose pass rate exceeds `drop_solved_above` (after `min_attempts` attempts) leaves the
pool (the paper drops problems solved more than 87.5% of the time). The whole state is a small
JSON document, saved with every checkpoint (the Grain checkpoint handler's get_state/set_state
protocol), so kill -9 and restart continues with the same prompts and pool.
"""

from __future__ import annotations

import json
from typing import Sequence

import numpy as np


class Curriculum:
  """Prompt order + per-problem pass rates + the pool (a checkpointable iterator-like object)."""

  def __init__(self, problem_ids: Sequence[str], *, seed: int, drop_solved_above: float,
               min_attempts: int):
    if not problem_ids:
      raise ValueError("the RL curriculum needs at least one training problem")
    self.ids = list(problem_ids)
    self.seed, self.drop_above, self.min_attempts = seed, drop_solved_above, min_attempts
    self.attempts = {i: 0 for i in self.ids}
    self.passes = {i: 0 for i in self.ids}
    self.dropped: list[str] = []
    self.epoch, self.offset = 0, 0
    self._order = self._make_order()

  def _pool(self) -> list[str]:
    gone = set(self.dropped)
    return [i for i in self.ids if i not in gone]

  def _make_order(self) -> list[str]:
    pool = self._pool()
    perm = np.random.default_rng((self.seed, self.epoch)).permutation(len(pool))
    return [pool[k] for k in perm]

  @property
  def pool_size(self) -> int:
    return len(self.ids) - len(self.dropped)

  def take(self, n: int) -> list[str]:
    """The next n problem ids (an epoch ends -> a new permutation of the current pool)."""
    out = []
    while len(out) < n:
      if self.pool_size == 0:
        raise RuntimeError("every training problem was dropped as solved: the curriculum is "
                           "exhausted (raise drop_solved_above or add problems)")
      if self.offset >= len(self._order):
        self.epoch, self.offset = self.epoch + 1, 0
        self._order = self._make_order()
        continue
      pid = self._order[self.offset]
      self.offset += 1
      if pid not in self.dropped:
        out.append(pid)
    return out

  def record(self, pid: str, attempts: int, passes: int) -> None:
    """Adds a group's outcome; drops the problem once it is solved too often."""
    self.attempts[pid] += attempts
    self.passes[pid] += passes
    a = self.attempts[pid]
    if (pid not in self.dropped and a >= self.min_attempts and
        self.passes[pid] / a > self.drop_above):
      self.dropped.append(pid)

  def pass_rate(self, pid: str) -> float:
    return self.passes[pid] / max(self.attempts[pid], 1)

  # --- checkpointing (grain's CheckpointHandler protocol for non-Grain items) -------------------

  def get_state(self) -> bytes:
    return json.dumps({"epoch": self.epoch, "offset": self.offset, "attempts": self.attempts,
                       "passes": self.passes, "dropped": self.dropped, "seed": self.seed,
                       "ids": self.ids}).encode()

  def set_state(self, state: bytes) -> None:
    s = json.loads(state)
    if s["ids"] != self.ids or s["seed"] != self.seed:
      raise ValueError("the checkpoint's curriculum was made for another problem list or seed "
                       "(config.rl.problems or config.seed changed): use a fresh workdir")
    self.epoch, self.offset = s["epoch"], s["offset"]
    self.attempts, self.passes, self.dropped = s["attempts"], s["passes"], s["dropped"]
    self._order = self._make_order()

  def start_prefetch(self) -> None:  # called by grain's handler after a restore
    pass
