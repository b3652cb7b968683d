"""Stage 6, repository-level records: a selected repository's kept files as one document.

Per repository (files that passed every file-level stage, scored): Python files come in
dependency order (seedcoder_jax.input.repo_level.dependency_order: imported modules first), other
files in a random order seeded by the repository name and repo.seed. Repositories are selected by
the mean score of their files: at least repo.min_mean_score (0-10 scale) and, when
repo.select_percentile > 0, at least that percentile of all repositories' means (a threshold
that does not depend on how the scorer happens to be calibrated), and a minimum file count.

The record (kind "repo", id "repo:<name>", path "") is plain text: each file as its path on a line
of its own followed by its content, files separated by FILE_SEPARATOR. Its language is the most
common language of its files (ties: alphabetical), its score the mean file score. Repository
records are derived documents, not inputs: the pipeline writes them to their own corpus
(DIR/repo_corpus/) and counts them in stats.json's stages, outside the input accounting.
"""

from __future__ import annotations

import dataclasses
import zlib

import numpy as np

from seedcoder_jax.curation import records
from seedcoder_jax.input import repo_level

STAGE = "repo"
FILE_SEPARATOR = "\n\n"


@dataclasses.dataclass(frozen=True)
class RepoConfig:
  min_mean_score: float = 5.0  # repositories whose files score lower on average are not emitted
  select_percentile: float = 0.0  # and those below this percentile of all repositories' means
  min_files: int = 2  # a one-file repository is no repository-level document
  seed: int = 0  # the random order of non-Python files (and ties)

  def __post_init__(self):
    if not 0.0 <= self.select_percentile < 100.0:
      raise ValueError(f"repo.select_percentile={self.select_percentile} must be in [0, 100)")
    if self.min_files < 1:
      raise ValueError(f"repo.min_files={self.min_files} must be >= 1")


def mean_threshold(means, cfg: RepoConfig) -> float:
  """The mean file score a repository needs: min_mean_score, raised to the percentile."""
  means = list(means)
  if cfg.select_percentile <= 0 or not means:
    return cfg.min_mean_score
  return max(cfg.min_mean_score, float(np.percentile(np.asarray(means, np.float64),
                                                     cfg.select_percentile)))


def order_files(repo: str, files: list[dict], seed: int) -> list[dict]:
  """The files of one repository in dependency order (Python) / seeded random order (others)."""
  files = sorted(files, key=lambda r: r["path"])
  rng = np.random.default_rng([seed, zlib.crc32(repo.encode("utf-8"))])
  order = repo_level.dependency_order([f["path"] for f in files], [f["text"] for f in files],
                                      [f["language"] for f in files], rng)
  return [files[i] for i in order]


def build_repo_record(repo: str, files: list[dict], cfg: RepoConfig,
                      threshold: float | None = None) -> tuple[dict | None, str]:
  """(kind "repo" record, "selected") or (None, why not: "too_few_files" | "low_score").

  threshold: the mean score needed (mean_threshold over all repositories); default
  cfg.min_mean_score.
  """
  if len(files) < cfg.min_files:
    return None, "too_few_files"
  mean = float(np.mean([f["score"] for f in files]))
  if mean < (cfg.min_mean_score if threshold is None else threshold):
    return None, "low_score"
  ordered = order_files(repo, files, cfg.seed)
  text = FILE_SEPARATOR.join(f"{f['path']}\n{f['text']}" for f in ordered)
  counts: dict[str, int] = {}
  for f in files:
    counts[f["language"]] = counts.get(f["language"], 0) + 1
  language = min(counts, key=lambda k: (-counts[k], k))
  rec = records.make_record(kind="repo", text=text, repo=repo, path="", language=language,
                            score=mean, num_files=len(files),
                            files=[f["path"] for f in ordered])
  return rec, "selected"


def repo_records_transform(cfg: RepoConfig):
  """Beam PTransform: scored file records -> repo records (main) and ("outcome", why) counts."""
  import apache_beam as beam

  def build(repo_files, threshold):
    repo, files = repo_files
    rec, why = build_repo_record(repo, list(files), cfg, threshold)
    yield beam.pvalue.TaggedOutput("outcome", why)
    if rec is not None:
      yield rec

  class _Repo(beam.PTransform):

    def expand(self, recs):
      grouped = (recs | "FilesOnly" >> beam.Filter(lambda r: r["kind"] == "file")
                 | "ByRepo" >> beam.Map(lambda r: (r["repo"], r))
                 | "GroupRepo" >> beam.GroupByKey())
      threshold = (grouped
                   | "Means" >> beam.MapTuple(lambda _, fs: float(np.mean([f["score"] for f in fs])))
                   | "AllMeans" >> beam.combiners.ToList()  # one float per repository
                   | "Threshold" >> beam.Map(mean_threshold, cfg))
      return grouped | "Build" >> beam.FlatMap(
          build, beam.pvalue.AsSingleton(threshold)).with_outputs("outcome", main="repos")

  return _Repo()
