"""How often each oracle backend's answers parse, and how two backends (or a backend and any other
score) agree: Pearson and Spearman correlation and mean absolute difference over the files both
rated.

Command line (the figure in the report, real SmolLM2-135M-Instruct on CPython stdlib files):
  python -m seedcoder_jax.curation.oracle_agreement --n=32 --backends=geval,sampler \
      --cache=/tmp/oracle_cache.sqlite
prints one JSON line: per backend the parse rate and statuses, per pair the agreement, plus the
agreement of each backend with source_files.heuristic_score.

Measured 2026-11-25 (this 2-core CPU, shared, load average ~14; 32 stdlib .py files, 600 code
characters, 384-token prompts, sampler greedy with 128 new tokens):
  geval:   parse rate 32/32; scores 2.9-3.9 (mean 3.42, sd 0.24); next-token mass on "0".."9"
           0.2-0.5 (the rest mostly on "X", copied from the prompt's `Rating: [[X]]`); 245 s
  sampler: parse rate 0/32 (all "unparsable": the 135M model loops "Your rating is 0." until
           max_new_tokens); 528 s
  agreement geval~heuristic_score: Spearman -0.01, Pearson -0.06 (n=32); geval~sampler: no
  file rated by both. SmolLM2-135M is too small to be a discriminating oracle; the pipeline works
  the same with a larger model behind the HTTP or sampler backend.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import time
from typing import Mapping, Sequence

import numpy as np


def rankdata(x: Sequence[float]) -> np.ndarray:
  """Ranks 1..n with ties given their average rank (as scipy.stats.rankdata's default)."""
  x = np.asarray(x, np.float64)
  order = np.argsort(x, kind="mergesort")
  ranks = np.empty(len(x), np.float64)
  sorted_x = x[order]
  i = 0
  while i < len(x):
    j = i
    while j + 1 < len(x) and sorted_x[j + 1] == sorted_x[i]:
      j += 1
    ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
    i = j + 1
  return ranks


def pearson(x: Sequence[float], y: Sequence[float]) -> float | None:
  """Pearson's r; None when either side is constant or has fewer than 2 values."""
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  if len(x) < 2:
    return None
  dx, dy = x - x.mean(), y - y.mean()
  denom = np.sqrt(np.sum(dx * dx) * np.sum(dy * dy))
  return float(np.sum(dx * dy) / denom) if denom > 0 else None


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
  """Spearman's rho: Pearson's r of the (tie-averaged) ranks."""
  return pearson(rankdata(x), rankdata(y)) if len(x) >= 2 else None


def parse_rate(answers: Mapping[str, tuple[float | None, str]]) -> dict:
  """answers: id -> (score, status). {"n", "parsed", "parse_rate", "statuses"}."""
  statuses: dict[str, int] = {}
  for _, status in answers.values():
    statuses[status] = statuses.get(status, 0) + 1
  parsed = statuses.get("ok", 0)
  n = len(answers)
  return {"n": n, "parsed": parsed, "parse_rate": parsed / n if n else 0.0,
          "statuses": dict(sorted(statuses.items()))}


def agreement(a: Mapping[str, float | None], b: Mapping[str, float | None]) -> dict:
  """Agreement of two id -> score maps over the ids both scored (None = no score)."""
  both = sorted(k for k in a if k in b and a[k] is not None and b[k] is not None)
  x = [a[k] for k in both]
  y = [b[k] for k in both]
  return {"n_both": len(both), "pearson": pearson(x, y), "spearman": spearman(x, y),
          "mean_abs_diff": float(np.mean(np.abs(np.subtract(x, y)))) if both else None}


def compare_backends(annotated: Mapping[str, Sequence[dict]],
                     others: Mapping[str, Mapping[str, float]] | None = None) -> dict:
  """annotated: backend name -> oracle-annotated records. Parse rate per backend; agreement per
  pair of backends and of each backend with each score map in `others` (e.g. a heuristic)."""
  answers = {name: {r["id"]: (r["oracle_score"], r["oracle_status"]) for r in recs}
             for name, recs in annotated.items()}
  scores = {name: {k: s if st == "ok" else None for k, (s, st) in a.items()}
            for name, a in answers.items()}
  out = {"parse": {name: parse_rate(a) for name, a in answers.items()}, "agreement": {}}
  for x, y in itertools.combinations(sorted(scores), 2):
    out["agreement"][f"{x}~{y}"] = agreement(scores[x], scores[y])
  for name, ref in (others or {}).items():
    for x in sorted(scores):
      out["agreement"][f"{x}~{name}"] = agreement(scores[x], ref)
  return out


def stdlib_sample(n: int, seed: int = 0) -> list[dict]:
  """n Python files of the running interpreter's standard library, a stable hash sample."""
  from seedcoder_jax.curation import oracle as oracle_lib
  from seedcoder_jax.curation import records as records_lib
  from seedcoder_jax.input import source_files
  records = [{**r, "id": records_lib.record_id("file", r["repo"], r["path"])}
             for r in source_files.iter_source_records(source_files.default_source_dir())
             if r["language"] == "python"]
  return sorted(records, key=lambda r: oracle_lib.sample_key(r["id"], seed))[:n]


def planted_main(f) -> dict:
  """--planted: every defect kind on --n stdlib functions, rated by each backend (G-Eval: with
  planted.check_oracle_config's room, so no side is cut), the heuristic and --scorer_dir."""
  import platform
  from seedcoder_jax.curation import oracle as oracle_lib
  from seedcoder_jax.curation import oracle_backends, planted
  cfg = oracle_lib.OracleConfig(model=f.model, cache_path=f.cache, max_code_chars=f.max_code_chars,
                                max_prompt_tokens=384, max_new_tokens=f.max_new_tokens)
  cache = oracle_lib.OracleCache(f.cache) if f.cache else None
  raters = {}
  for name in f.backends:
    ccfg = planted.check_oracle_config(dataclasses.replace(cfg, backend=name))
    raters[name] = planted.oracle_rater(oracle_backends.make_backend(ccfg), ccfg, cache=cache,
                                        template=oracle_lib.load_prompt_template(cfg.prompt_path))
  if f.scorer_dir:
    from seedcoder_jax.curation import scorer as scorer_lib
    raters["scorer"] = planted.scorer_rater(scorer_lib.load_scorer(f.scorer_dir))
  raters["heuristic"] = planted.heuristic_rater
  start = time.perf_counter()
  result = planted.check(planted.stdlib_records(), raters, n_files=f.n,
                         max_chars=planted.snippet_chars(cfg), all_kinds=True)
  return {**result, "model": f.model, "seconds": round(time.perf_counter() - start, 1),
          "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
          "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def main(argv=None):
  from absl import app, flags  # pylint: disable=g-import-not-at-top

  flags.DEFINE_integer("n", 32, "stdlib files to rate")
  flags.DEFINE_list("backends", ["geval", "sampler"], "oracle backends to compare")
  flags.DEFINE_string("model", "gguf:smollm2", "local model spec")
  flags.DEFINE_string("cache", "", "SQLite answer cache ('' = none)")
  flags.DEFINE_integer("max_code_chars", 600, "file characters in the prompt")
  flags.DEFINE_integer("max_new_tokens", 128, "sampler: new tokens per answer")
  flags.DEFINE_bool("planted", False, "rate planted-defect pairs (curation/planted.py) instead: "
                    "--n files x every defect kind, each rater's pairwise accuracy")
  flags.DEFINE_string("scorer_dir", "", "--planted: also rate with this trained scorer "
                      "(e.g. a curation run's DIR/stages/scorer/model)")

  def run(_):
    from seedcoder_jax.curation import oracle as oracle_lib
    from seedcoder_jax.curation import oracle_backends
    f = flags.FLAGS
    if f.planted:
      print(json.dumps(planted_main(f), sort_keys=True))
      return
    records = stdlib_sample(f.n)
    annotated, seconds = {}, {}
    for name in f.backends:
      cfg = oracle_lib.OracleConfig(backend=name, model=f.model, cache_path=f.cache,
                                    max_code_chars=f.max_code_chars,
                                    max_prompt_tokens=384,
                                    max_new_tokens=f.max_new_tokens)
      start = time.perf_counter()
      backend = oracle_backends.make_backend(cfg)
      cache = oracle_lib.OracleCache(cfg.cache_path) if cfg.cache_path else None
      annotated[name] = oracle_lib.annotate(
          records, backend, cfg, template=oracle_lib.load_prompt_template(cfg.prompt_path),
          cache=cache)
      seconds[name] = time.perf_counter() - start
    heuristic = {r["id"]: r["score"] for r in records}
    result = compare_backends(annotated, {"heuristic": heuristic})
    result.update(n_files=len(records), seconds=seconds, model=f.model)
    print(json.dumps(result, sort_keys=True))

  app.run(run, argv)


if __name__ == "__main__":
  main()
