"""The curation pipeline end to end on Beam (FnApiRunner, in process): real stdlib files plus
planted junk, every input accounted for, the corpus read back through open_corpus and Grain.

The end-to-end tests share one run (two Beam passes, ~30-45 s on 2 cores) and are marked slow;
config validation and the stats accounting run in the fast suite."""

import io
import json
import pathlib
import shutil
import sysconfig
import tarfile

import pytest

from seedcoder_jax.curation import decontam, pipeline, stats as stats_lib
from seedcoder_jax.input import corpus as corpus_lib

STDLIB = pathlib.Path(sysconfig.get_paths()["stdlib"])
ROOT = pathlib.Path(__file__).resolve().parents[1]


def _load_configs():
  import importlib.util
  spec = importlib.util.spec_from_file_location("curation_config", ROOT / "configs" / "curation.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


curation_configs = _load_configs()


def _config(**changes):
  c = curation_configs.base()
  c.commits.enabled = False
  c.dedup.near.threshold = 0.7
  for k, v in changes.items():
    node = c
    *parents, leaf = k.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = v
  return c


# Characters str.splitlines() splits at: json.dumps(ensure_ascii=False) leaves the last three raw.
LINE_BREAKS = "\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
SEPARATORS_PY = "".join(f"# line break {ord(c):#06x}: [{c}]\nS{i} = '[{c}]'\n"
                        for i, c in enumerate(LINE_BREAKS))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
  root = tmp_path_factory.mktemp("repos")
  json_repo = root / "json"
  shutil.copytree(STDLIB / "json", json_repo, ignore=shutil.ignore_patterns("__pycache__"))
  junk = root / "junk"
  junk.mkdir()
  decoder = (STDLIB / "json" / "decoder.py").read_text()
  (junk / "binary.py").write_bytes(next((STDLIB / "json" / "__pycache__").glob("*.pyc")).read_bytes()
                                   if (STDLIB / "json" / "__pycache__").is_dir() else b"\0\1\2")
  (junk / "latin1.py").write_bytes((STDLIB / "test" / "badsyntax_pep3120.py").read_bytes()
                                   if (STDLIB / "test" / "badsyntax_pep3120.py").exists()
                                   else b'print("b\xf6se")\n')
  (junk / "empty.py").write_text("")
  (junk / "huge.py").write_text("x = 1\n" * 40_000)  # 240 KB > max_bytes below
  (junk / "broken.py").write_text(decoder[:decoder.index("(", len(decoder) // 2) + 1])
  (junk / "copy_of_decoder.py").write_text(decoder.replace("\n", "\r\n"))  # exact duplicate
  enc = (STDLIB / "json" / "encoder.py").read_text().splitlines()
  (junk / "encoder_fork.py").write_text("\n".join(enc[:100] + ["# forked"] + enc[100:]))  # near
  (junk / "notes.txt").write_text("a text file\n")
  (junk / "separators.py").write_text(SEPARATORS_PY, encoding="utf-8")
  sol = decontam.benchmark_texts("humaneval")["HumanEval/0"]
  (junk / "contaminated.py").write_text((STDLIB / "textwrap.py").read_text() + "\n\n" + sol)
  # Archives: a good one (stdlib html, in a top-level directory) and a truncated one.
  good = root / "html-main.tar.gz"
  with tarfile.open(good, "w:gz") as tar:
    tar.add(STDLIB / "html", arcname="html-main",
            filter=lambda m: None if "__pycache__" in m.name else m)
  bad = root / "corrupt.tar.gz"
  blob = good.read_bytes()
  bad.write_bytes(blob[:len(blob) // 2])
  return [str(json_repo), str(junk), str(good), str(bad)]


@pytest.fixture(scope="module")
def curated(inputs, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("cur")
  cfg = _config(**{"ingest.max_bytes": 200_000, "repo.min_mean_score": 0.0})
  stats = pipeline.run(cfg, str(workdir), inputs=inputs)
  return cfg, workdir, stats


@pytest.mark.slow
def test_every_input_accounted(curated, inputs):
  _, workdir, stats = curated
  on_disk = sum(1 for p in map(pathlib.Path, inputs[:2]) for f in p.rglob("*") if f.is_file())
  html_files = sum(1 for f in (STDLIB / "html").iterdir() if f.is_file())
  assert stats["input"] == on_disk + html_files + 1  # + the corrupt archive, counted once
  assert stats["input"] == stats["kept"] + sum(stats["rejected"].values())
  assert stats == json.loads((workdir / "stats.json").read_text())
  rej = stats["rejected"]
  for key in ("ingest/binary", "ingest/non_utf8", "ingest/empty", "ingest/too_large",
              "ingest/unknown_language", "ingest/corrupt_archive", "syntax/syntax_error",
              "dedup/exact_duplicate", "dedup/near_duplicate", "decontam/benchmark_overlap"):
    assert rej.get(key, 0) >= 1, (key, rej)
  assert rej["ingest/corrupt_archive"] == 1 and rej["syntax/syntax_error"] == 1
  assert rej["dedup/exact_duplicate"] == 1 and rej["dedup/near_duplicate"] == 1
  rejections = [json.loads(l) for f in sorted((workdir / "stages").glob("*/rejected*.jsonl"))
                for l in f.read_text().splitlines()]
  by_id = {r["id"]: r for r in rejections}
  assert by_id["file:junk/copy_of_decoder.py"]["detail"] == "file:json/decoder.py"
  assert by_id["file:junk/encoder_fork.py"]["detail"] == "file:json/encoder.py"
  assert stats["score_source"] == "heuristic"
  matches = [json.loads(l) for l in (workdir / "decontamination.jsonl").read_text().splitlines()]
  assert [m["id"] for m in matches] == ["file:junk/contaminated.py"]
  # HumanEval/20 reuses some of HumanEval/0's loop, so it matches too, with fewer n-grams.
  ngrams = matches[0]["ngrams"]
  assert "HumanEval/0" in matches[0]["task_ids"] and max(ngrams, key=ngrams.get) == "HumanEval/0"
  with pytest.raises(stats_lib.AccountingError, match="input"):
    stats_lib.check_accounting({**stats, "kept": stats["kept"] + 1})


def test_pass_outputs_keep_unicode_line_breaks(tmp_path):
  """Records holding each character str.splitlines() splits at survive a pass's JSONL output
  (written by Beam's WriteToText) and the driver's reading of it, one record per line."""
  import apache_beam as beam
  recs = [{"id": f"file:r/{i}.py", "text": f"a{c}b\n{c}", "kind": "file"}
          for i, c in enumerate(LINE_BREAKS)]
  with beam.Pipeline(options=pipeline.beam_options([])) as p:
    pipeline._write_jsonl(p | beam.Create(recs), str(tmp_path / "records"), "R")
  written = next(tmp_path.glob("records*.jsonl")).read_bytes()
  assert "\u2028".encode() in written and written.count(b"\n") == len(recs)
  assert sorted(pipeline._read_lines(str(tmp_path / "records*.jsonl")),
                key=lambda r: r["id"]) == sorted(recs, key=lambda r: r["id"])


@pytest.mark.slow
def test_corpus_reads_back_through_grain(curated):
  import grain
  _, workdir, stats = curated
  c = corpus_lib.open_corpus(workdir / "corpus")
  assert len(c) == stats["kept"]
  ds = grain.MapDataset.source(c.source).map(lambda r: (r["path"], r["kind"], r["score"]))
  rows = [ds[i] for i in range(len(ds))]
  assert {"decoder.py", "entities.py"} <= {p for p, _, _ in rows}
  assert all(k == "file" and 0.0 <= s <= 10.0 for _, k, s in rows)
  rec = c.source[[p for p, _, _ in rows].index("decoder.py")]
  assert rec["text"] == (STDLIB / "json" / "decoder.py").read_text() and rec["repo"] == "json"
  assert c.source[[p for p, _, _ in rows].index("separators.py")]["text"] == SEPARATORS_PY
  assert c.metadata["score_kind"] == "heuristic"
  repo = corpus_lib.open_corpus(workdir / "repo_corpus")
  assert {repo.source[i]["repo"] for i in range(len(repo))} >= {"json"}
  assert (workdir / "report.html").read_text().count("<img") == 3
  for png in ("score_histogram.png", "languages.png", "rejections.png"):
    assert (workdir / png).read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_rerun_resumes(curated, inputs, capfd):
  cfg, workdir, stats = curated
  done = {p: p.stat().st_mtime_ns for p in (workdir / "stages").glob("*/DONE")}
  assert len(done) == 4
  assert pipeline.run(cfg, str(workdir), inputs=inputs) == stats
  assert {p: p.stat().st_mtime_ns for p in done} == done
  assert "pass filter: already done, skipped" in capfd.readouterr().err
  # A score pass killed midway (no DONE, a stale shard of another shard count) is redone cleanly.
  (workdir / "stages" / "score" / "DONE").unlink()
  stale = workdir / "stages" / "score" / "records-00000-of-00002.jsonl"
  stale.write_text((workdir / "stages" / "score" / "records-00000-of-00001.jsonl").read_text())
  assert pipeline.run(cfg, str(workdir), inputs=inputs) == stats
  assert not stale.exists()
  assert (workdir / "stages" / "filter" / "DONE").stat().st_mtime_ns == done[workdir / "stages" / "filter" / "DONE"]
  other = _config(**{"ingest.max_bytes": 100})
  with pytest.raises(pipeline.ConfigError, match="different config"):
    pipeline.run(other, str(workdir), inputs=inputs)


def test_bad_configs_refused_up_front(inputs, tmp_path):
  c = _config()
  c.dedup.near.treshold = 0.5  # misspelled
  with pytest.raises(pipeline.ConfigError, match=r"config\.dedup\.near\.treshold"):
    pipeline.make_plan(c, inputs)
  c = _config()
  c.syntax.enable = False
  with pytest.raises(pipeline.ConfigError, match=r"config\.syntax\.enable\b"):
    pipeline.make_plan(c, inputs)
  for group, key in (("oracle", "smaple_size"), ("commits", "max_comits"), ("web", "min_char")):
    c = _config()
    c[group][key] = 3  # other helpers' stage configs refuse unknown keys too, naming them
    with pytest.raises(pipeline.ConfigError, match=f"config.{group}.*{key}"):
      pipeline.make_plan(c, inputs)
  c = _config()
  c.typo_group = 1
  with pytest.raises(pipeline.ConfigError, match=r"config\.typo_group"):
    pipeline.make_plan(c, inputs)
  with pytest.raises(pipeline.ConfigError, match="not found.*missing_repo"):
    pipeline.make_plan(_config(), inputs + [str(tmp_path / "missing_repo")])
  with pytest.raises(pipeline.ConfigError, match="drop_percentile"):
    pipeline.make_plan(_config(**{"scorer.drop_percentile": 100.0}), inputs)
  assert not list(tmp_path.iterdir())  # nothing was written


def test_tiny_config_plan():
  plan = pipeline.make_plan(curation_configs.get_config("tiny"))
  assert 15 <= len(plan.inputs) <= 30 and plan.syntax is not None and plan.decontam is not None
  full = curation_configs.get_config("full")
  assert all(p.startswith("gs://YOUR_BUCKET/") for p in full.ingest.inputs)
  # The oracle runs through http: without an endpoint the run is refused before any work.
  with pytest.raises(pipeline.ConfigError, match=r"config.oracle: .*backend='http' needs base_url"):
    pipeline.make_plan(full)
  full.oracle.base_url = "http://judge:8000/v1"
  # The placeholders are refused up front, naming them (here: no GCS filesystem or bucket).
  with pytest.raises(pipeline.ConfigError, match="gs://YOUR_BUCKET/repos/000000.tar.gz"):
    pipeline.make_plan(full)


def test_full_config_runs_the_oracle_over_http_and_the_scorer(tmp_path):
  """`full`: the oracle over http on a sample, the scorer (whole backbone) on everything, web pages
  against the paper's score thresholds; builds once the endpoint and real inputs are given."""
  full = curation_configs.get_config("full")
  full.oracle.base_url = "http://judge:8000/v1"
  full.oracle.model = "judge-model"
  full.commits.enabled = False
  full.web.inputs = (str(tmp_path),)
  plan = pipeline.make_plan(full, inputs=[str(STDLIB / "json")])
  assert (plan.oracle.backend, plan.oracle.base_url, plan.oracle.model) == (
      "http", "http://judge:8000/v1", "judge-model")
  assert plan.oracle.sample_size == 222_000
  assert plan.scorer is not None and plan.scorer.n_layers == 0 and plan.scorer.shard
  assert plan.drop_percentile == 10.0
  assert plan.web.threshold_kind == "score" and dict(plan.web.thresholds)["qa"] == 5.0


def test_stats_accounting_from_pass_counts():
  filt = {"input/files": 10, "input/commits": 2, "kept/file": 6, "kept/commit": 2,
          "rejected/ingest/binary": 1, "rejected/ingest/corrupt_archive": 1,
          "rejected/dedup/exact_duplicate": 2, "stage/syntax/ok/python": 6}
  score = {"kept/file": 5, "kept/commit": 2, "rejected/scorer/low_quality": 1,
           "stage/repo/selected": 1}
  s = stats_lib.build_stats({"filter": filt, "score": score})
  assert s["input"] == 12 and s["kept"] == 7
  assert s["rejected"] == {"dedup/exact_duplicate": 2, "ingest/binary": 1,
                           "ingest/corrupt_archive": 1, "scorer/low_quality": 1}
  assert s["passes"]["score"] == {"in": 8, "kept": 7, "rejected": 1}
  assert s["stages"] == {"repo": {"selected": 1}, "syntax": {"ok": {"python": 6}}}
  with pytest.raises(stats_lib.AccountingError, match="pass 'score': 8 records in"):
    stats_lib.build_stats({"filter": filt, "score": {**score, "kept/file": 4}})
  with pytest.raises(stats_lib.AccountingError, match="pass 'filter'"):
    stats_lib.build_stats({"filter": {**filt, "input/files": 11}, "score": score})


def test_beam_options_pass_through():
  from apache_beam.options.pipeline_options import DirectOptions, StandardOptions
  default = pipeline.beam_options([])
  assert default.view_as(StandardOptions).runner == "FnApiRunner"  # never the Prism download
  opts = pipeline.beam_options(["--runner=DataflowRunner", "--project=p", "--direct_num_workers=2"])
  assert opts.view_as(StandardOptions).runner == "DataflowRunner"
  assert opts.get_all_options()["project"] == "p"
  assert opts.view_as(DirectOptions).direct_num_workers == 2
  with pytest.raises(pipeline.ConfigError, match="--inptu"):
    pipeline.beam_options(["--inptu=/data/repo"])


@pytest.mark.slow
def test_oracle_and_scorer_between_passes(tmp_path):
  """The driver step between the Beam passes: G-Eval labels from the packaged SmolLM2 on a
  sample, a 1-layer scorer trained on them, every record scored by it, the bottom 10% of files
  dropped, oracle, scorer and heuristic rating planted-defect pairs; a rerun reuses everything."""
  c = _config(**{"oracle.enabled": True, "oracle.sample_size": 12, "oracle.max_code_chars": 400,
                 "oracle.max_prompt_tokens": 320, "oracle.geval_min_digit_mass": 0.05,
                 "oracle.planted_pairs": 8,
                 "scorer.enabled": True, "scorer.n_layers": 1, "scorer.max_tokens": 64,
                 "scorer.buckets": (64,), "repo.min_mean_score": 0.0})
  inputs = [str(STDLIB / p) for p in ("json", "html", "email")]
  stats = pipeline.run(c, str(tmp_path), inputs=inputs)
  assert stats["score_source"] == "scorer"
  assert stats["oracle"]["n"] == 12 and stats["oracle"]["labelled"] >= 4, stats["oracle"]
  assert stats["scorer"]["n_train"] + stats["scorer"]["n_heldout"] == stats["oracle"]["labelled"]
  files = stats["input_by_source"]["files"] - sum(
      n for k, n in stats["rejected"].items() if not k.startswith("scorer/"))
  assert stats["rejected"]["scorer/low_quality"] == pytest.approx(0.1 * files, abs=1.5)
  corpus = corpus_lib.open_corpus(tmp_path / "corpus")
  assert corpus.metadata["score_kind"] == "scorer"
  assert 0.0 <= corpus.scores.min() and corpus.scores.max() <= 10.0 and corpus.scores.std() > 0
  oracle_lines = (tmp_path / "stages" / "scorer" / "oracle.jsonl").read_text().splitlines()
  assert len(oracle_lines) == 12
  planted = stats["planted"]
  assert planted["n_pairs"] == 8 and list(planted["raters"]) == ["oracle", "scorer", "heuristic"]
  for rater in planted["raters"].values():
    assert rater["overall"]["n"] + rater["overall"]["unrated"] == 8
    assert rater["sentence"] in (tmp_path / "report.html").read_text()
  assert pipeline.run(c, str(tmp_path), inputs=inputs) == stats


@pytest.mark.slow
def test_oracle_that_parses_nothing_falls_back_to_the_heuristic(tmp_path, monkeypatch):
  """A judge whose every answer is garbage (no rating) does not abort the run: the scorer is not
  trained, records keep heuristic scores and stats.json names the reason."""
  from seedcoder_jax.curation import oracle as oracle_lib
  from seedcoder_jax.curation import oracle_backends

  class Garbage:
    name, model = "garbage", "fake"

    def rate(self, prompts):
      text = "What a lovely file! I would not change a thing."
      return [oracle_lib.Answer(*oracle_lib.parse_rating(text), text) for _ in prompts]

  monkeypatch.setattr(oracle_backends, "make_backend", lambda cfg: Garbage())
  c = _config(**{"oracle.enabled": True, "oracle.sample_size": 4, "scorer.enabled": True,
                 "decontam.enabled": False, "repo.enabled": False, "output.report": True})
  stats = pipeline.run(c, str(tmp_path / "cur"), inputs=[str(STDLIB / "json")])
  assert stats["score_source"] == "heuristic"
  assert stats["oracle"]["labelled"] == 0 and stats["oracle"]["statuses"] == {"unparsable": 4}
  assert stats["score_fallback"]["reason"] == "oracle_parsed_nothing"
  assert "0 of 4 oracle answers usable (statuses: unparsable 4)" in stats["score_fallback"]["detail"]
  assert json.loads((tmp_path / "cur" / "stats.json").read_text()) == stats
  assert "oracle_parsed_nothing" in (tmp_path / "cur" / "report.html").read_text()
  assert stats["planted"]["raters"]["oracle"]["sentence"] == \
      "The oracle rated no planted pair on both sides (16 unrated)."
  corpus = corpus_lib.open_corpus(tmp_path / "cur" / "corpus")
  assert corpus.metadata["score_kind"] == "heuristic" and len(corpus) == stats["kept"] > 0
