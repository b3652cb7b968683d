"""Stage 9, decontamination: records sharing an n-gram (n = 10 by default) with a benchmark go.

Benchmarks are every benchmark the evaluation harness scores (seedcoder_jax.evaluation.benchmarks:
HumanEval, MultiPL-E HumanEval in C++ and Java, MultiPL-E's reworded MBPP, FIM HumanEval), each
problem's text being its prompt, canonical solution where it has one, FIM suffix and tests. Text is
tokenised into identifier / number words (`\\w+`), so formatting, comments' punctuation and
indentation do not hide a copy, and an n-gram of words spans a whole line or more of code. A record
containing any benchmark n-gram is rejected "benchmark_overlap" (detail: the task ids); the
pipeline also lists every match in DIR/decontamination.jsonl. The same index serves post-training
data (seedcoder_jax.posttrain), so nothing trained on overlaps what is evaluated.

Generic n-grams would flag innocent files, so two kinds of benchmark n-gram are not used: those
with fewer than half of their words containing a letter (HumanEval/78 lists the digits
"0, 1, 2, ..., 9", which any table of numbers repeats), and those that occur in more than
`max_task_share` of the benchmark's own tasks (boilerplate shared across tasks).
"""

from __future__ import annotations

import dataclasses
import hashlib
import re

from seedcoder_jax.curation import records

STAGE = "decontam"
_WORD = re.compile(r"\w+")


class DecontamError(ValueError):
  """A bad decontamination config or benchmark file."""


def _evaluation_benchmarks() -> tuple[str, ...]:
  from seedcoder_jax.evaluation import benchmarks as eval_benchmarks
  return tuple(eval_benchmarks.BENCHMARKS)


@dataclasses.dataclass(frozen=True)
class DecontamConfig:
  n: int = 10  # n-gram length in words
  # Every benchmark the harness evaluates (MultiPL-E's need `make eval-data`).
  benchmarks: tuple[str, ...] = dataclasses.field(default_factory=_evaluation_benchmarks)
  max_task_share: float = 0.05  # n-grams in more than this share of a benchmark's tasks are ignored

  def __post_init__(self):
    object.__setattr__(self, "benchmarks", tuple(self.benchmarks))
    known = _evaluation_benchmarks()
    unknown = sorted(set(self.benchmarks) - set(known))
    if unknown:
      raise DecontamError(f"decontam.benchmarks: unknown {unknown}; known: {sorted(known)}")
    if self.n < 1:
      raise DecontamError(f"decontam.n={self.n} must be >= 1")


def benchmark_texts(name: str) -> dict[str, str]:
  """task_id -> every text of one evaluation benchmark's problem a model could have memorised."""
  from seedcoder_jax.evaluation import benchmarks as eval_benchmarks
  try:
    problems = eval_benchmarks.get(name).load()
  except eval_benchmarks.BenchmarkError as e:
    raise DecontamError(f"decontam benchmark {name!r}: {e}") from e
  return {p.task_id: "\n".join(t for t in (p.prompt, p.canonical_solution, p.suffix, p.tests) if t)
          for p in problems}


def _informative(words: list[str]) -> bool:
  return 2 * sum(any(c.isalpha() for c in w) for w in words) >= len(words)


def ngram_keys(text: str, n: int, informative_only: bool = False) -> set[str]:
  """Digests of the word n-grams of `text` (a text with fewer words has none)."""
  words = _WORD.findall(text)
  grams = (words[i:i + n] for i in range(len(words) - n + 1))
  return {hashlib.blake2b(" ".join(g).encode("utf-8"), digest_size=10).hexdigest()
          for g in grams if not informative_only or _informative(g)}


def benchmark_index(cfg: DecontamConfig) -> dict[str, tuple[str, ...]]:
  """n-gram digest -> the benchmark task ids containing it (generic n-grams left out)."""
  index: dict[str, list[str]] = {}
  for name in cfg.benchmarks:
    tasks = benchmark_texts(name)
    local: dict[str, list[str]] = {}
    for task_id, text in sorted(tasks.items()):
      for key in ngram_keys(text, cfg.n, informative_only=True):
        local.setdefault(key, []).append(task_id)
    limit = max(1, int(cfg.max_task_share * len(tasks)))
    for key, ids in local.items():
      if len(ids) <= limit:
        index.setdefault(key, []).extend(ids)
  return {k: tuple(sorted(set(v))) for k, v in index.items()}


def find_matches(text: str, index: dict, n: int) -> dict[str, int]:
  """task id -> number of its n-grams found in `text`."""
  hits: dict[str, int] = {}
  for key in ngram_keys(text, n):
    for task_id in index.get(key, ()):
      hits[task_id] = hits.get(task_id, 0) + 1
  return dict(sorted(hits.items()))


def check_record(record: dict, index: dict, cfg: DecontamConfig):
  """(record, None) when clean, else (rejection, match entry for decontamination.jsonl)."""
  hits = find_matches(record["text"], index, cfg.n)
  if not hits:
    return record, None
  match = {"id": record["id"], "kind": record["kind"], "repo": record["repo"],
           "path": record["path"], "task_ids": list(hits), "ngrams": hits}
  return records.reject(record, STAGE, "benchmark_overlap", ",".join(hits)), match


def decontam_transform(cfg: DecontamConfig, index: dict):
  """Beam PTransform: records -> kept, rejections (REJECTED) and matches ("matches")."""
  import apache_beam as beam

  def route(record):
    out, match = check_record(record, index, cfg)
    if match is None:
      yield out
    else:
      yield records.tagged_rejection(out)
      yield beam.pvalue.TaggedOutput("matches", match)

  return beam.FlatMap(route).with_outputs(records.REJECTED, "matches", main="kept")
