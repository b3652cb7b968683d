"""The curation pipeline: every stage chained in Apache Beam passes, resumable, fully accounted.

  run(config, workdir, beam_args=()) -> stats dict

Passes (configs/curation.py describes the config groups):

  filter  (Beam)   ingest -> syntax -> dedup (repo, exact, near); commits and web records join
                   (web pages deduplicated among themselves, exact and near);
                   the oracle's sample drawn (a Beam combiner)
  scorer  (driver) the oracle labels the sample and the quality scorer trains on it
  score   (Beam)   score every record, drop the bottom scorer.drop_percentile % of files (Beam's
                   approximate quantiles) and the web pages under their category's threshold
                   (web.thresholds), decontaminate, build repository-level records
  output  (Beam)   DIR/corpus (files + web pages), DIR/commit_corpus, DIR/repo_corpus through the
                   corpus sink (curation.corpus_sink), DIR/decontamination.jsonl, the counts
          (driver) DIR/stats.json and DIR/report.html from those counts

The driver holds no records: it reads counts, the oracle's sample and small metadata, never a
pass's output (dedup clusters, the percentile cut and the corpus order are all resolved by Beam
transforms). Each pass writes DIR/stages/<pass>/ and, last, DIR/stages/<pass>/DONE; a rerun skips
passes whose DONE exists, and refuses a workdir made with a different config. The runner comes
from the pass-through options (`--runner=DataflowRunner`, Flink, Spark; without one, the
in-process FnApiRunner). DIR and every artifact under it (the web classifier, the scorer
checkpoint, stats, report) go through Beam's FileSystems, so DIR may be a gs:// URL that driver
and workers share; only the oracle's answer cache (SQLite) stays local to the driver
(DIR/oracle_cache.sqlite for a local DIR).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
import shutil
import sys
import tempfile
import time
from typing import Any, Sequence

from seedcoder_jax.curation import (decontam, dedup, ingest, minhash, records, repo_records,
                                    report, stats as stats_lib, syntax)
from seedcoder_jax.input import source_files

PASSES = ("filter", "scorer", "score", "output")  # output: a Beam pass, then stats + report
GROUPS = ("ingest", "syntax", "dedup", "oracle", "scorer", "repo", "commits", "web",
          "decontam", "output")


class ConfigError(ValueError):
  """A curation config that cannot run: unknown or misspelled keys, bad values, missing inputs."""


@dataclasses.dataclass(frozen=True)
class Plan:
  """The validated config: one field per stage, None where the stage is switched off."""
  inputs: tuple[str, ...]
  ingest: ingest.IngestConfig
  syntax: syntax.SyntaxConfig | None
  dedup: dedup.DedupConfig | None
  oracle: Any
  scorer: Any
  drop_percentile: float
  repo: repo_records.RepoConfig | None
  commits: Any
  web: Any
  decontam: decontam.DecontamConfig | None
  num_shards: int
  report: bool
  tfds: bool = False


def _as_dict(group) -> dict:
  return dict(group.to_dict() if hasattr(group, "to_dict") else group)


def _fields(cls) -> set[str]:
  return {f.name for f in dataclasses.fields(cls)}


def _check_keys(where: str, d: dict, known: set[str]) -> None:
  unknown = sorted(set(d) - known)
  if unknown:
    raise ConfigError(f"unknown config key(s) {', '.join(f'{where}.{k}' for k in unknown)} "
                      f"(known in {where}: {', '.join(sorted(known))})")


def _build(cls, where: str, d: dict, extra: Sequence[str] = ()):
  _check_keys(where, d, _fields(cls) | set(extra))
  try:
    return cls(**{k: v for k, v in d.items() if k not in extra})
  except (TypeError, ValueError) as e:
    raise ConfigError(f"{where}: {e}") from e


def _optional_module(name: str):
  import importlib
  try:
    return importlib.import_module(f"seedcoder_jax.curation.{name}")
  except ModuleNotFoundError as e:
    if e.name == f"seedcoder_jax.curation.{name}":
      return None
    raise


def _external(where: str, d: dict, module: str, cls_name: str, own: Sequence[str] = ("enabled",)):
  """A stage config owned by another module (E's, F's) via its `from_dict`; None when off."""
  enabled = bool(d.get("enabled", False))
  mod = _optional_module(module)
  rest = {k: v for k, v in d.items() if k not in own}
  if mod is None:
    if enabled:
      raise ConfigError(f"{where}.enabled=True but seedcoder_jax.curation.{module} is not "
                        "available in this checkout")
    _check_keys(where, rest, set())
    return None
  cls = getattr(mod, cls_name)
  try:
    cfg = cls.from_dict(rest)
  except (TypeError, ValueError) as e:
    raise ConfigError(f"{where}: {e}") from e
  return cfg if enabled else None


def make_plan(config, inputs: Sequence[str] | None = None) -> Plan:
  """Validates a curation ConfigDict (or dict) before any work; `inputs` replaces ingest.inputs."""
  c = _as_dict(config)
  _check_keys("config", c, set(GROUPS))
  missing = [g for g in GROUPS if g not in c]
  if missing:
    raise ConfigError(f"config lacks group(s) {missing}")
  ing = dict(c["ingest"])
  paths = tuple(str(p) for p in (inputs if inputs else ing.pop("inputs", ())))
  ing.pop("inputs", None)
  ingest_cfg = _build(ingest.IngestConfig, "config.ingest", ing)

  def enabled(where, d, known):
    _check_keys(where, d, set(known) | {"enabled"})
    return bool(d.get("enabled", True))

  syn = dict(c["syntax"])
  syntax_cfg = _build(syntax.SyntaxConfig, "config.syntax", syn, ("enabled",)) \
      if enabled("config.syntax", syn, _fields(syntax.SyntaxConfig)) else None
  dd = dict(c["dedup"])
  _check_keys("config.dedup", dd, {"exact", "near", "repo"})
  mh = {}
  for name in ("near", "repo"):
    g = dict(dd[name])
    mh[name] = _build(minhash.MinHashConfig, f"config.dedup.{name}", g, ("enabled",))
    mh[name + "_on"] = bool(g.get("enabled", True))
  dedup_cfg = dedup.DedupConfig(exact=bool(dd["exact"]), near=mh["near_on"], repo=mh["repo_on"],
                                near_cfg=mh["near"], repo_cfg=mh["repo"])
  if not (dedup_cfg.exact or dedup_cfg.near or dedup_cfg.repo):
    dedup_cfg = None
  sc = dict(c["scorer"])
  drop = float(sc.get("drop_percentile", 0.0))
  if not 0.0 <= drop < 100.0:
    raise ConfigError(f"config.scorer.drop_percentile={drop} must be in [0, 100)")
  oracle_cfg = _external("config.oracle", dict(c["oracle"]), "oracle", "OracleConfig")
  scorer_cfg = _external("config.scorer", sc, "scorer", "ScorerConfig",
                         ("enabled",) if _optional_module("scorer") else ("enabled", "drop_percentile"))
  if scorer_cfg is not None and oracle_cfg is None:  # the scorer learns the oracle's labels
    raise ConfigError("config.scorer.enabled=True needs config.oracle.enabled=True (its labels)")
  rp = dict(c["repo"])
  repo_cfg = _build(repo_records.RepoConfig, "config.repo", rp, ("enabled",)) \
      if enabled("config.repo", rp, _fields(repo_records.RepoConfig)) else None
  commits_cfg = _external("config.commits", dict(c["commits"]), "commits", "CommitsConfig")
  web_cfg = _external("config.web", dict(c["web"]), "web", "WebConfig")
  dc = dict(c["decontam"])
  decontam_cfg = _build(decontam.DecontamConfig, "config.decontam", dc, ("enabled",)) \
      if enabled("config.decontam", dc, _fields(decontam.DecontamConfig)) else None
  out = dict(c["output"])
  _check_keys("config.output", out, {"num_shards", "report", "tfds"})
  num_shards = int(out.get("num_shards", 1))
  if num_shards < 1:
    raise ConfigError(f"config.output.num_shards={num_shards} must be >= 1")
  try:
    paths = tuple(ingest.check_inputs(paths))
  except ingest.IngestError as e:
    raise ConfigError(f"config.ingest.inputs: {e}") from e
  for name, cfg in (("commits", commits_cfg), ("web", web_cfg)):
    if cfg is not None:
      try:
        _optional_module(name).check_inputs(cfg)
      except (FileNotFoundError, ValueError) as e:  # missing paths, a repository given twice
        raise ConfigError(f"config.{name}: {e}") from e
  return Plan(inputs=paths, ingest=ingest_cfg, syntax=syntax_cfg,
              dedup=dedup_cfg, oracle=oracle_cfg, scorer=scorer_cfg, drop_percentile=drop,
              repo=repo_cfg, commits=commits_cfg, web=web_cfg, decontam=decontam_cfg,
              num_shards=num_shards, report=bool(out.get("report", True)),
              tfds=bool(out.get("tfds", False)))


# ---------------------------------------------------------------------------------------------
# Beam helpers.

def _progress(msg: str) -> None:
  print(f"[curate] {time.strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)


def _count(pcoll, label: str, key_fn):
  import apache_beam as beam
  return (pcoll | f"{label}Key" >> beam.Map(lambda x: (key_fn(x), 1))
          | f"{label}Sum" >> beam.CombinePerKey(sum))


def _rejection_key(r: dict) -> str:
  return f"rejected/{records.rejection_key(r)}"


def _write_jsonl(pcoll, prefix: str, label: str, single: bool = False):
  import apache_beam as beam
  kwargs = dict(num_shards=1, shard_name_template="") if single else {}
  return (pcoll | f"{label}Json" >> beam.Map(lambda r: json.dumps(r, ensure_ascii=False,
                                                                     sort_keys=True))
          | f"{label}Write" >> beam.io.WriteToText(prefix, file_name_suffix=".jsonl", **kwargs))


def _read_jsonl(p, pattern: str, label: str):
  import apache_beam as beam
  return (p | f"{label}Read" >> beam.io.ReadFromText(pattern)
          | f"{label}Parse" >> beam.Map(json.loads))


def _finish_counts(counts: list, stage_dir: str):
  """All (key, n) PCollections of a pass -> stage_dir/counts.jsonl."""
  import apache_beam as beam
  merged = (tuple(counts) | "AllCounts" >> beam.Flatten()
            | "CountsTotal" >> beam.CombinePerKey(sum))
  _write_jsonl(merged | "CountsList" >> beam.MapTuple(lambda k, n: [k, n]), f"{stage_dir}/counts",
               "Counts", single=True)


def _fs():
  from apache_beam.io.filesystems import FileSystems
  return FileSystems


def _read_lines(pattern: str) -> list[dict]:
  """The JSON records of every file matching `pattern`, one per line.

  Split on "\\n" only: str.splitlines() also splits at U+2028, U+2029 and U+0085, which
  json.dumps(ensure_ascii=False) leaves raw inside strings (it escapes the ASCII control
  characters, "\\r" included, so Beam's ReadFromText, which also splits at "\\r\\n", is safe).
  """
  fs = _fs()
  out = []
  for m in sorted((md.path for r in fs.match([pattern]) for md in r.metadata_list)):
    with fs.open(m, compression_type="uncompressed") as f:
      out.extend(json.loads(line) for line in f.read().decode("utf-8").split("\n") if line.strip())
  return out


def _write_text(path: str, text: str) -> None:
  with _fs().create(path) as f:
    f.write(text.encode("utf-8"))


def _read_text(path: str) -> str:
  with _fs().open(path, compression_type="uncompressed") as f:
    return f.read().decode("utf-8")


def _is_local(path: str) -> bool:
  return _fs().get_scheme(path) is None


def _mkdirs(path: str) -> None:
  if _is_local(path):  # object stores (gs://) have no directories
    pathlib.Path(path).mkdir(parents=True, exist_ok=True)


def _rmtree(path: str) -> None:
  if _is_local(path):
    shutil.rmtree(path, ignore_errors=True)
    return
  found = [m.path for r in _fs().match([f"{path}/**"]) for m in r.metadata_list]
  if found:
    _fs().delete(found)


def read_counts(stage_dir: str) -> dict[str, int]:
  return dict(sorted((k, int(n)) for k, n in _read_lines(f"{stage_dir}/counts.jsonl")))


# ---------------------------------------------------------------------------------------------
# Passes.

def _filter_pass(p, plan: Plan, stage_dir: str) -> None:
  import apache_beam as beam
  counts, rejected, kept = [], [], []
  files = p | "Ingest" >> ingest.ingest_transform(list(plan.inputs), plan.ingest)
  all_inputs = (files["kept"], files[records.REJECTED]) | "IngestAll" >> beam.Flatten()
  counts.append(_count(all_inputs, "InputFiles", lambda _: "input/files"))
  counts.append(_count(files["kept"], "IngestLang", lambda r: f"stage/ingest/kept/{r['language']}"))
  rejected.append(files[records.REJECTED])
  recs = files["kept"]
  if plan.syntax is not None:
    out = recs | "Syntax" >> syntax.syntax_transform(plan.syntax)
    recs = out["kept"]
    rejected.append(out[records.REJECTED])
    counts.append(_count(recs, "SyntaxKind", lambda r: f"stage/syntax/{r['syntax']}/{r['language']}"))
  if plan.dedup is not None:
    out = recs | "Dedup" >> dedup.dedup_transform(plan.dedup)
    recs = out["kept"]
    rejected.append(out[records.REJECTED])
  kept.append(recs)
  # Commits and web pages skip the file filters (their text is no single file of one language,
  # and their stages filter them by their own rules); they join the kept records here.
  for name, mod_name, cls_name, cfg in (("commits", "commits", "CommitRecords", plan.commits),
                                        ("web", "web", "WebRecords", plan.web)):
    if cfg is None:
      continue
    transform = getattr(_optional_module(mod_name), cls_name)(cfg)
    out = p | name.capitalize() >> transform
    both = (out["kept"], out[records.REJECTED]) | f"{name}All" >> beam.Flatten()
    counts.append(_count(both, f"Input{name}", lambda _, n=name: f"input/{n}"))
    rejected.append(out[records.REJECTED])
    if name == "web" and plan.dedup is not None and (plan.dedup.exact or plan.dedup.near):
      # Web pages are deduplicated among themselves (exact, then near, with the files' MinHash
      # settings); their duplicates count as web/exact_duplicate and web/near_duplicate.
      web_dedup = dedup.DedupConfig(exact=plan.dedup.exact, near=plan.dedup.near, repo=False,
                                    near_cfg=plan.dedup.near_cfg)
      out = out["kept"] | "WebDedup" >> dedup.dedup_transform(web_dedup, stage="web")
      rejected.append(out[records.REJECTED])
    kept.append(out["kept"])
  kept = tuple(kept) | "Kept" >> beam.Flatten()
  rejected = tuple(rejected) | "Rejected" >> beam.Flatten()
  counts.append(_count(kept, "KeptKind", lambda r: f"kept/{r['kind']}"))
  counts.append(_count(rejected, "RejectedKey", _rejection_key))
  if plan.oracle is not None:
    # The oracle's sample (the sample_size smallest oracle.sample_key over the kept files: the
    # same sample as oracle.select_sample) drawn by a Beam combiner: only the sample reaches
    # the driver's oracle + scorer step.
    from seedcoder_jax.curation import oracle as oracle_lib
    sample = (kept | "OracleFiles" >> beam.Filter(lambda r: r["kind"] == "file")
              | "OracleSample" >> oracle_lib.OracleSample(plan.oracle))
    _write_jsonl(sample, f"{stage_dir}/{ORACLE_SAMPLE}", "OracleSampleOut", single=True)
  _write_jsonl(kept, f"{stage_dir}/records", "Records")
  _write_jsonl(rejected, f"{stage_dir}/rejected", "Rejections")
  _finish_counts(counts, stage_dir)


ORACLE_SAMPLE = "oracle_sample"  # DIR/stages/filter/oracle_sample.jsonl
TFDS_DIR = "tfds"  # output.tfds: DIR/tfds/seedcoder_corpus/1.0.0 (curation/tfds_corpus.py)


def _scorer_step(plan: Plan, workdir: str) -> dict:
  """The oracle + scorer step (driver). Returns how records are scored in the next pass.

  The oracle labels a deterministic sample of the filtered files, drawn by the filter pass
  (DIR/stages/filter/oracle_sample.jsonl: only the sample is read here; answers cached in
  DIR/oracle_cache.sqlite, so a rerun never pays twice), the scorer trains on the labels and is
  saved under DIR/stages/scorer/model (or scorer.checkpoint_dir), which the score pass loads
  once per worker. With oracle.planted_pairs > 0, oracle, scorer and heuristic also rate
  planted-defect pairs (curation/planted.py): "planted" in stats.json and the report.
  """
  heuristic = {"score_source": "heuristic", "score": source_files.SCORE_DESCRIPTION}
  if plan.oracle is None:
    return heuristic
  from seedcoder_jax.curation import oracle as oracle_lib
  from seedcoder_jax.curation import oracle_backends, planted
  ocfg = plan.oracle
  if not ocfg.cache_path:  # SQLite needs a local file: a gs:// DIR keeps it in the temp dir
    local = workdir if _is_local(workdir) else os.path.join(
        tempfile.gettempdir(), "seedcoder_oracle_cache",
        hashlib.sha256(workdir.encode()).hexdigest()[:16])
    _mkdirs(local)
    ocfg = dataclasses.replace(ocfg, cache_path=f"{local}/oracle_cache.sqlite")
  sample_path = f"{workdir}/stages/filter/{ORACLE_SAMPLE}.jsonl"
  if not _fs().exists(sample_path):
    raise ConfigError(f"{sample_path} is missing (a filter pass from an older version?): delete "
                      f"{workdir}/stages to start over")
  sample = oracle_lib.select_sample(_read_lines(sample_path), ocfg)  # sorted as before
  n_files = read_counts(f"{workdir}/stages/filter").get("kept/file", 0)
  _progress(f"oracle ({ocfg.backend}, {ocfg.model}): labelling {len(sample)} of {n_files} files")
  t0 = time.time()
  annotated = oracle_lib.annotate(sample, oracle_backends.make_backend(ocfg), ocfg,
                                  template=oracle_lib.load_prompt_template(ocfg.prompt_path),
                                  cache=oracle_lib.OracleCache(ocfg.cache_path))
  summary = {**oracle_lib.summarize(annotated), "seconds": round(time.time() - t0, 1)}
  _progress(f"oracle done: {json.dumps(summary)}")
  _write_text(f"{workdir}/stages/scorer/oracle.jsonl", "".join(
      json.dumps({k: v for k, v in r.items() if k != "text"}, ensure_ascii=False) + "\n"
      for r in annotated))
  if plan.scorer is None:  # labels only (e.g. to check the oracle); scores stay heuristic
    return {**heuristic, "oracle": summary, **planted.pipeline_check(ocfg, sample)}
  if summary["labelled"] == 0:
    # Nothing to train on (a judge that never writes the rating format, a dead endpoint): the run
    # goes on with heuristic scores and stats.json says why, rather than dying in the scorer.
    reason = "oracle_parsed_nothing" if summary["n"] else "oracle_sample_empty"
    detail = (f"0 of {summary['n']} oracle answers usable (statuses: "
              f"{', '.join(f'{k} {v}' for k, v in summary['statuses'].items()) or 'none'}); "
              f"scores fall back to the heuristic")
    _progress(f"WARNING: {reason}: {detail}")
    return {**heuristic, "oracle": summary, "score_fallback": {"reason": reason, "detail": detail},
            **planted.pipeline_check(ocfg, sample)}
  from seedcoder_jax.curation import scorer as scorer_lib
  scfg = plan.scorer
  if not scfg.checkpoint_dir:
    scfg = dataclasses.replace(scfg, checkpoint_dir=f"{workdir}/stages/scorer/model")
  scorer, train_report = scorer_lib.train_scorer(annotated, scfg)
  scorer.save(scfg.checkpoint_dir)
  _progress(f"scorer trained: held-out MAE {train_report['mae']:.2f} (mean baseline "
            f"{train_report['mae_mean_baseline']:.2f}) on {train_report['n_heldout']} files")
  return {"score_source": "scorer",
          "score": f"quality scorer ({scfg.backbone}, {scfg.n_layers} layers) trained on "
                   f"{ocfg.backend} oracle labels of {ocfg.model}",
          "checkpoint_dir": scfg.checkpoint_dir, "scorer_config": scfg.to_dict(),
          "oracle": summary, "scorer": train_report,
          **planted.pipeline_check(ocfg, sample, scorer)}


def _score_pass(p, plan: Plan, workdir: str, scoring: dict, index: dict | None) -> None:
  import apache_beam as beam
  from apache_beam.transforms.stats import ApproximateQuantiles
  stage_dir = f"{workdir}/stages/score"
  counts, rejected = [], []
  recs = _read_jsonl(p, f"{workdir}/stages/filter/records*.jsonl", "Filtered")
  if scoring["score_source"] == "scorer":
    from seedcoder_jax.curation import scorer as scorer_lib
    scfg = scorer_lib.ScorerConfig.from_dict(scoring["scorer_config"])
    scored = recs | "Score" >> scorer_lib.ScoreFiles(scfg)
  else:
    scored = recs | "Score" >> beam.Map(
        lambda r: {**r, "score": float(source_files.heuristic_score(r["text"])),
                   "score_source": "heuristic"})
  if plan.drop_percentile > 0:
    # The paper's filter drops the bottom of the *files*; commits are scored but not dropped,
    # web pages meet their per-category thresholds below.
    q = int(round(plan.drop_percentile * 10))
    threshold = (scored | "FileScores" >> beam.FlatMap(
                     lambda r: [r["score"]] if r["kind"] == "file" else [])
                 | "Quantiles" >> ApproximateQuantiles.Globally(1001)
                 | "Threshold" >> beam.Map(lambda qs: float(qs[q]) if qs else float("-inf")))

    def drop(r, thr):
      if r["kind"] == "file" and r["score"] < thr:
        return records.tagged_rejection(records.reject(
            r, "scorer", "low_quality",
            f"score={r['score']:.3f} < p{plan.drop_percentile:g}={thr:.3f}"))
      return r

    out = scored | "DropLow" >> beam.Map(drop, beam.pvalue.AsSingleton(threshold)).with_outputs(
        records.REJECTED, main="kept")
    scored = out["kept"]
    rejected.append(out[records.REJECTED])
    counts.append(threshold | "ThresholdKey" >> beam.FlatMap(
        lambda t: [("stage/scorer/threshold_x1000", int(round(t * 1000)))] if t > -1 else []))
  if plan.web is not None:
    # Web pages: the same rating as the files (scorer or heuristic, 0-10) against the
    # per-category thresholds (web.threshold_kind: minimum scores, or per-category percentiles).
    from seedcoder_jax.curation import web as web_lib
    split = scored | "WebOrNot" >> beam.Map(
        lambda r: beam.pvalue.TaggedOutput("web", r) if r["kind"] == "web" else r
    ).with_outputs("web", main="other")
    out = split.web | "WebRate" >> web_lib.RateScoredPages(plan.web)
    scored = (split.other, out["kept"]) | "WithWeb" >> beam.Flatten()
    rejected.append(out["rejected"])
  if plan.decontam is not None:
    out = scored | "Decontam" >> decontam.decontam_transform(plan.decontam, index)
    scored = out["kept"]
    rejected.append(out[records.REJECTED])
    _write_jsonl(out["matches"], f"{stage_dir}/decontamination", "Matches", single=True)
  if plan.repo is not None:
    out = scored | "Repo" >> repo_records.repo_records_transform(plan.repo)
    _write_jsonl(out["repos"], f"{stage_dir}/repo_records", "RepoRecords")
    counts.append(_count(out["outcome"], "RepoOutcome", lambda why: f"stage/repo/{why}"))
  counts.append(_count(scored, "KeptKind", lambda r: f"kept/{r['kind']}"))
  if rejected:
    rejected = tuple(rejected) | "Rejected" >> beam.Flatten()
    counts.append(_count(rejected, "RejectedKey", _rejection_key))
    _write_jsonl(rejected, f"{stage_dir}/rejected", "Rejections")
  _write_jsonl(scored, f"{stage_dir}/records", "Records")
  _finish_counts(counts, stage_dir)


def beam_options(beam_args: Sequence[str] = ()):
  """PipelineOptions from pass-through flags; without --runner, the in-process FnApiRunner.

  Beam 2.77's DirectRunner first tries the Prism runner, which downloads a binary from GitHub:
  offline that costs a failed fetch per pass before it falls back to FnApiRunner anyway.
  """
  from apache_beam.options.pipeline_options import PipelineOptions
  args = list(beam_args)
  if not any(a == "--runner" or a.startswith("--runner=") for a in args):
    args.append("--runner=FnApiRunner")
  options = PipelineOptions(args)
  # Beam only logs and discards flags it does not know: a misspelled flag must not vanish.
  unknown = sorted(set(options.get_all_options(retain_unknown_options=True))
                   - set(PipelineOptions([]).get_all_options()))
  if unknown:
    raise ConfigError(f"unknown flag(s) {', '.join('--' + u for u in unknown)}: neither "
                      "data/curate.py's nor a Beam pipeline option")
  return options


def _run_beam(name: str, build, beam_args: Sequence[str]) -> float:
  import apache_beam as beam
  t0 = time.time()
  with beam.Pipeline(options=beam_options(beam_args)) as p:
    build(p)
  return time.time() - t0


def _snapshot(config) -> str:
  return json.dumps(_as_dict(config) if not hasattr(config, "to_json") else json.loads(
      config.to_json()), sort_keys=True, indent=1, default=str)


def run(config, workdir: str, *, inputs: Sequence[str] | None = None,
        beam_args: Sequence[str] = ()) -> dict:
  """Runs (or resumes) the curation into `workdir`; returns the stats.json dict.

  `workdir` is any Beam filesystem path (local, gs://): every output and artifact goes through
  `FileSystems`."""
  plan = make_plan(config, inputs)
  beam_options(beam_args)  # refuses unknown flags before any work
  wd = workdir.rstrip("/")
  _mkdirs(wd)
  snap = json.dumps({"config": json.loads(_snapshot(config)), "inputs": list(plan.inputs)},
                    sort_keys=True, indent=1)
  snap_path = f"{wd}/config.json"
  if _fs().exists(snap_path) and _read_text(snap_path) != snap:
    raise ConfigError(f"{wd} was curated with a different config or inputs ({snap_path}); use a "
                      f"new --workdir, or delete {wd}/stages to start over")
  _write_text(snap_path, snap)
  stages = f"{wd}/stages"
  index = decontam.benchmark_index(plan.decontam) if plan.decontam is not None else None

  def done(name):
    return f"{stages}/{name}/DONE"

  def start(name):
    # A pass killed midway leaves shards that its rerun might not overwrite (another shard
    # count): a pass always starts from an empty folder.
    _rmtree(f"{stages}/{name}")
    _mkdirs(f"{stages}/{name}")
    for later in PASSES[PASSES.index(name) + 1:]:  # they read this pass's output: redo them
      if _fs().exists(done(later)):
        _fs().delete([done(later)])

  def beam_pass(name, build, then=lambda: None):
    _progress(f"pass {name}")
    start(name)
    secs = _run_beam(name, build, beam_args)
    then()
    _write_text(done(name), json.dumps({"seconds": secs}) + "\n")
    _progress(f"pass {name} done in {secs:.1f}s")

  if not _fs().exists(done("filter")):
    _progress(f"pass filter: {len(plan.inputs)} input path(s)")
    plan_f = plan
    if plan.web is not None and not plan.web.model_path:  # workers load it from the workdir
      plan_f = dataclasses.replace(plan, web=dataclasses.replace(
          plan.web, model_path=f"{stages}/filter/web_classifier.npz"))
    beam_pass("filter", lambda p: _filter_pass(p, plan_f, f"{stages}/filter"))
    c = read_counts(f"{stages}/filter")
    stats_lib.check_pass("filter", c, sum(v for k, v in c.items() if k.startswith("input/")))
    _progress("filter counts: " + json.dumps(
        {k: v for k, v in c.items() if not k.startswith("stage/")}))
  else:
    _progress("pass filter: already done, skipped")
  if not _fs().exists(done("scorer")):
    _progress("step oracle + scorer")
    start("scorer")
    t0 = time.time()
    scoring = _scorer_step(plan, wd)
    _write_text(f"{stages}/scorer/scoring.json", json.dumps(scoring, indent=1) + "\n")
    _write_text(done("scorer"), json.dumps({"seconds": time.time() - t0}) + "\n")
  scoring = json.loads(_read_text(f"{stages}/scorer/scoring.json"))
  if not _fs().exists(done("score")):
    beam_pass("score", lambda p: _score_pass(p, plan, wd, scoring, index))
  else:
    _progress("pass score: already done, skipped")
  if not _fs().exists(done("output")):
    from seedcoder_jax.curation import corpus_sink
    from seedcoder_jax.curation import output as output_lib
    for name in (*output_lib.OUTPUT_CORPORA, output_lib.REPO_CORPUS):
      corpus_sink.clear_corpus(f"{wd}/{name}")
    for name in (output_lib.DECONTAMINATION, "stats.json"):
      if _fs().exists(f"{wd}/{name}"):
        _fs().delete([f"{wd}/{name}"])

    _rmtree(f"{wd}/{TFDS_DIR}")

    def stats_and_report():
      counts = {name: read_counts(f"{stages}/{name}") for name in ("filter", "score", "output")}
      output_lib.output_step(plan, wd, scoring, counts)
      if plan.tfds:  # the corpus again, as a TFDS dataset (DIR/tfds/seedcoder_corpus/1.0.0)
        from seedcoder_jax.curation import tfds_corpus
        _progress(f"TFDS dataset of {wd}/corpus -> {wd}/{TFDS_DIR}")
        tfds_corpus.prepare(f"{wd}/corpus", f"{wd}/{TFDS_DIR}", beam_args=beam_args)

    beam_pass("output", lambda p: output_lib.output_pass(p, plan, wd, scoring),
              then=stats_and_report)
  else:
    _progress("pass output: already done, skipped")
  stats = json.loads(_read_text(f"{wd}/stats.json"))
  _progress(f"done: {stats['input']} inputs -> {stats['kept']} kept, "
            f"{sum(stats['rejected'].values())} rejected; corpus in {wd}/corpus")
  return stats

