"""Making the verifiable problem set from CodeI/O entries, writing it and reading it back.

`make_problems(entries, ...)` runs every check of problems.py in order (cheap static ones first,
the benchmark decontamination, then two sandboxed harness runs, then the reference through the
sealed test path) and returns the kept problems with stats that account for every entry:
`input == kept + sum(rejected.values())`. `build(out_dir, ...)` writes `problems.jsonl` and
`stats.json` under temporary names and renames them at the end, so a directory holds a whole set
or none; `load(out_dir)` reads it back with errors naming the file and line.
`build(..., source="synthetic")` writes the same files from problem_sources.py's templated tasks
instead (the RL demo's set).
"""

from __future__ import annotations

import collections
import json
import os
import pathlib
from typing import Iterable, Optional

from seedcoder_jax.posttrain import problems as P

PROBLEMS_FILE = "problems.jsonl"
STATS_FILE = "stats.json"
_FIELDS = ("id", "prompt", "tests", "reference", "split", "provenance")


def make_problems(entries: Iterable[dict], *, seed: int = 0, n_tests: int = 5,
                  heldout_fraction: float = 0.1, workers: int = 2, timeout_s: float = 10.0,
                  memory_mb: int = 1024, max_test_chars: int = 20_000,
                  decontam_cfg=None) -> tuple[list[P.Problem], dict]:
  """(kept problems, stats) from CodeI/O entries (problems.load_codeio's dicts).

  Args:
    entries: dicts with task_description, input_output_spec, code_sample, input_generator and
      optionally file / index / difficulty (provenance).
    seed: the input generator's seed (test i uses Random(seed + i)).
    n_tests: tests per problem.
    heldout_fraction: share of problems (by id hash) in the held-out split.
    workers: parallel sandbox runs.
    timeout_s, memory_mb: limits of one harness run (all n_tests inputs together).
    max_test_chars: problems whose tests' JSON is longer are rejected (prompt-sized programs).
    decontam_cfg: curation.decontam.DecontamConfig (default: every evaluated benchmark).
  """
  from seedcoder_jax import sandbox
  from seedcoder_jax.curation import decontam
  entries = list(entries)
  cfg = decontam_cfg or decontam.DecontamConfig()
  index = decontam.benchmark_index(cfg)
  rejected: collections.Counter = collections.Counter()
  overlaps = {}
  seen, pending = set(), []
  for entry in entries:
    pid = P.problem_id(entry["code_sample"])
    if pid in seen:
      rejected["duplicate"] += 1
      continue
    seen.add(pid)
    reason, signature = P.static_reason(entry["code_sample"], entry["input_generator"])
    if reason is None:
      prompt = P.make_prompt(entry, signature)
      text = "\n".join((prompt, entry["code_sample"], entry["input_generator"]))
      hits = decontam.find_matches(text, index, cfg.n)
      if hits:
        reason, overlaps[pid] = "benchmark_overlap", sorted(hits)
    if reason is not None:
      rejected[reason] += 1
      continue
    pending.append((pid, prompt, entry))

  # Two runs of the harness per entry, in separate processes (separate hash seeds).
  jobs = [{"source": P.harness(e, seed=seed, n_tests=n_tests), "timeout_s": timeout_s,
           "memory_mb": memory_mb} for _, _, e in pending]
  results = sandbox.run_many(jobs + jobs, workers=workers)
  candidates = []
  for k, (pid, prompt, entry) in enumerate(pending):
    reason, tests = P.judge_runs(results[k], results[len(pending) + k],
                                 max_test_chars=max_test_chars)
    if reason is not None:
      rejected[reason] += 1
      continue
    provenance = {"source": P.SOURCE, "file": entry.get("file"), "index": entry.get("index"),
                  "difficulty": entry.get("difficulty"), "seed": seed}
    candidates.append(P.Problem(
        id=pid, prompt=prompt, tests=tuple((kw, out) for kw, out in tests),
        reference=entry["code_sample"], split=P.split_of(pid, heldout_fraction),
        provenance=provenance))

  # The reference must pass its own tests through the very path rewards will take.
  verdicts = P.check([(p, p.reference) for p in candidates], workers=workers,
                     timeout_s=timeout_s, memory_mb=memory_mb)
  kept = []
  for problem, verdict in zip(candidates, verdicts):
    if verdict.passed:
      kept.append(problem)
    else:
      rejected["reference_fails_tests"] += 1
  stats = {"input": len(entries), "kept": len(kept),
           "rejected": {r: rejected[r] for r in P.REASONS if rejected[r]},
           "splits": {s: sum(p.split == s for p in kept) for s in P.SPLITS},
           "seed": seed, "n_tests": n_tests, "heldout_fraction": heldout_fraction,
           "source": P.SOURCE, "benchmarks": list(cfg.benchmarks), "benchmark_overlaps": overlaps}
  assert stats["input"] == stats["kept"] + sum(stats["rejected"].values()), stats
  return kept, stats


def _write_atomic(path: pathlib.Path, text: str):
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_text(text, encoding="utf-8")
  os.replace(tmp, path)


SOURCES = ("codeio", "synthetic")


def build(out_dir, *, limit: Optional[int] = None, seed: int = 0,
          heldout_fraction: Optional[float] = None, workers: int = 2, n_tests: int = 5,
          data_dir=None, source: str = "codeio", **kwargs) -> dict:
  """Writes OUT/problems.jsonl and OUT/stats.json from the first `limit` candidates of `source`.

  source: "codeio" (reasoning-gym's CodeI/O entries, make_problems) or "synthetic"
  (problem_sources.make_problems: templated tasks SmolLM2-135M already solves sometimes).
  heldout_fraction: default 0.1 for codeio, 0.25 for synthetic (>= 64 held-out problems).

  problems.jsonl is renamed into place before stats.json, and stats.json is what marks a finished
  set (removed first): an interrupted build leaves no stats.json, and load() refuses the directory.
  Returns the stats.
  """
  if source not in SOURCES:
    raise ValueError(f"source={source!r}: expected one of {SOURCES}")
  if heldout_fraction is None:
    heldout_fraction = 0.25 if source == "synthetic" else 0.1
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  # An older set's stats must not vouch for a problems file this build may half replace.
  (out / STATS_FILE).unlink(missing_ok=True)
  if source == "synthetic":
    from seedcoder_jax.posttrain import problem_sources
    kept, stats = problem_sources.make_problems(seed=seed, n_tests=n_tests, limit=limit,
                                                heldout_fraction=heldout_fraction,
                                                workers=workers, **kwargs)
  else:
    entries = P.load_codeio(data_dir)
    if limit is not None:
      entries = entries[:limit]
    kept, stats = make_problems(entries, seed=seed, n_tests=n_tests,
                                heldout_fraction=heldout_fraction, workers=workers, **kwargs)
  stats["limit"] = limit
  lines = [json.dumps({f: getattr(p, f) for f in _FIELDS}) for p in kept]
  _write_atomic(out / PROBLEMS_FILE, "".join(line + "\n" for line in lines))
  _write_atomic(out / STATS_FILE, json.dumps(stats, indent=1) + "\n")
  return stats


def load(out_dir, split: Optional[str] = None, *,
         skipped: Optional[dict] = None) -> list[P.Problem]:
  """The problems of a built set (optionally one split), checked field by field.

  A bad line is an error naming the file and line, unless `skipped` (a dict) is given: then the
  line is left out and counted there under its reason ("not_json", "bad_fields", "no_tests",
  "bad_split"), e.g. for RL, which must not stop for one broken problem but must say so.
  """
  path = pathlib.Path(out_dir) / PROBLEMS_FILE
  if not (pathlib.Path(out_dir) / STATS_FILE).exists() or not path.exists():
    raise P.ProblemsError(f"{path}: missing or unfinished (no {STATS_FILE} beside it); "
                          "run data/make_problems.py")
  if split is not None and split not in P.SPLITS:
    raise ValueError(f"split={split!r}: expected one of {P.SPLITS}")
  out = []

  def bad(reason: str, message: str) -> None:
    if skipped is None:
      raise P.ProblemsError(message)
    skipped[reason] = skipped.get(reason, 0) + 1

  for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
    where = f"{path}:{n}"
    try:
      row = json.loads(line)
    except json.JSONDecodeError as e:
      bad("not_json", f"{where}: not JSON ({e})")
      continue
    if not isinstance(row, dict):
      bad("bad_fields", f"{where}: expected an object, got {type(row).__name__}")
      continue
    missing = [f for f in _FIELDS if f not in row]
    unknown = sorted(set(row) - set(_FIELDS))
    if missing or unknown:
      bad("bad_fields", f"{where}: missing field(s) {missing}, unknown field(s) {unknown}")
      continue
    tests = row["tests"]
    if (not isinstance(tests, list) or not tests or
        not all(isinstance(t, list) and len(t) == 2 and isinstance(t[0], dict) for t in tests)):
      bad("no_tests", f"{where}: 'tests' must be a non-empty list of [kwargs, expected]")
      continue
    if row["split"] not in P.SPLITS:
      bad("bad_split", f"{where}: split {row['split']!r} not in {P.SPLITS}")
      continue
    problem = P.Problem(**{**row, "tests": tuple((kw, want) for kw, want in tests)})
    if split is None or problem.split == split:
      out.append(problem)
  return out
