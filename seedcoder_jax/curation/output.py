"""The output pass of the curation pipeline (Beam) and the stats/report step after it (driver).

  output_pass: DIR/corpus (files + web pages), DIR/commit_corpus and DIR/repo_corpus through
               the corpus sink (curation.corpus_sink), DIR/decontamination.jsonl (sorted by id
               on one worker: matches are the contaminated few), and as counts: records, kept
               per language, the score histogram, records per corpus
  output_step: DIR/stats.json and DIR/report.html from those counts; no record is read
"""

from __future__ import annotations

import io
import json
import pathlib
import tempfile

from seedcoder_jax.curation import pipeline as pl
from seedcoder_jax.curation import report, stats as stats_lib

OUTPUT_CORPORA = {"corpus": ("file", "web"), "commit_corpus": ("commit",)}
REPO_CORPUS = "repo_corpus"
DECONTAMINATION = "decontamination.jsonl"


def _corpus_metadata(scoring: dict) -> dict:
  return {"score_kind": scoring["score_source"], "score": scoring["score"],
          "made_by": "data/curate.py (seedcoder_jax.curation.pipeline)"}


def _matched(pattern: str) -> bool:
  return any(r.metadata_list for r in pl._fs().match([pattern]))


def _write_sorted_matches(matches: list[dict], path: str) -> int:
  """DIR/decontamination.jsonl in id order (one worker: matches are the contaminated few)."""
  matches = sorted(matches, key=lambda m: m["id"])
  with pl._fs().create(path) as f:
    f.write("".join(json.dumps(m, ensure_ascii=False) + "\n" for m in matches).encode("utf-8"))
  return len(matches)


def output_pass(p, plan, workdir: str, scoring: dict) -> None:
  """The corpora written by Beam sinks (curation.corpus_sink), plus the figures the stats and
  the report need (kept per language, the score histogram, counts) as stage counts."""
  import apache_beam as beam
  from seedcoder_jax.curation import corpus_sink  # imports Beam
  stage_dir = f"{workdir}/stages/output"
  meta = _corpus_metadata(scoring)
  counts = []
  recs = pl._read_jsonl(p, f"{workdir}/stages/score/records*.jsonl", "Scored")
  # Commits train only in continued pretraining (the paper): they get a corpus of their own, so
  # phase 1 reads files and web pages and phase 2 mixes commit records in by weight.
  for name, kinds in OUTPUT_CORPORA.items():
    part = recs | f"{name}Kinds" >> beam.Filter(lambda r, ks=kinds: r["kind"] in ks)
    written = part | f"{name}Write" >> corpus_sink.WriteCorpus(
        f"{workdir}/{name}", num_shards=plan.num_shards, metadata=meta)
    counts.append(written | f"{name}Count" >> beam.Map(
        lambda m, n=name: (f"output/{n}", m["num_records"])))
  counts.append(pl._count(recs, "Records", lambda _: "records"))
  counts.append(pl._count(recs, "Language", lambda r: f"language/{r['language']}"))
  counts.append(pl._count(recs, "ScoreBin", lambda r: f"score_bin/{report.score_bin(r['score'])}"))
  if _matched(f"{workdir}/stages/score/repo_records*.jsonl"):
    repos = pl._read_jsonl(p, f"{workdir}/stages/score/repo_records*.jsonl", "RepoRecords")
    written = repos | "RepoWrite" >> corpus_sink.WriteCorpus(f"{workdir}/{REPO_CORPUS}",
                                                             metadata=meta)
    counts.append(written | "RepoCount" >> beam.Map(
        lambda m: (f"output/{REPO_CORPUS}", m["num_records"])))
  if _matched(f"{workdir}/stages/score/decontamination*.jsonl"):
    matches = pl._read_jsonl(p, f"{workdir}/stages/score/decontamination*.jsonl", "Matches")
    counts.append(matches | "AllMatches" >> beam.combiners.ToList()
                  | "WriteMatches" >> beam.Map(
                      lambda ms: ("decontamination_matches",
                                  _write_sorted_matches(ms, f"{workdir}/{DECONTAMINATION}"))))
  pl._finish_counts(counts, stage_dir)


def _read_head(path: str, limit: int) -> list[dict]:
  """The first `limit` JSON lines of a file (the report lists a bounded number of matches)."""
  out = []
  if not pl._fs().exists(path):
    return out
  with pl._fs().open(path, compression_type="uncompressed") as f:
    for line in io.TextIOWrapper(f, encoding="utf-8", newline="\n"):
      if len(out) >= limit:
        break
      if line.strip():
        out.append(json.loads(line))
  return out


REPORT_MATCHES = 200  # decontamination matches listed in report.html (all are in the jsonl)


def output_step(plan, workdir: str, scoring: dict, pass_counts: dict) -> dict:
  """stats.json and report.html from the output pass's counts: no record is read here."""
  out = pass_counts["output"]
  languages = {k.split("/", 1)[1]: v for k, v in out.items() if k.startswith("language/")}
  outputs = {name: {"path": f"{workdir}/{name}", "records": out[f"output/{name}"]}
             for name in (*OUTPUT_CORPORA, REPO_CORPUS) if out.get(f"output/{name}")}
  n_matches = out.get("decontamination_matches", 0)
  if not pl._fs().exists(f"{workdir}/{DECONTAMINATION}"):  # no decontamination stage: empty file
    _write_sorted_matches([], f"{workdir}/{DECONTAMINATION}")
  stats = stats_lib.build_stats(
      {"filter": pass_counts["filter"], "score": pass_counts["score"]},
      extra={"score_source": scoring["score_source"],
             **{k: scoring[k] for k in ("oracle", "planted", "scorer", "score_fallback")
                if k in scoring},
             "kept_by_language": languages,
             "repo_records": out.get(f"output/{REPO_CORPUS}", 0),
             "decontamination_matches": n_matches, "outputs": outputs})
  if out.get("records", 0) != stats["kept"]:
    raise stats_lib.AccountingError(f"{out.get('records', 0)} records read back for the corpus, "
                                    f"but the score pass counted {stats['kept']} kept")
  pl._write_text(f"{workdir}/stats.json", json.dumps(stats, indent=2, sort_keys=False) + "\n")
  if plan.report:
    hist = [out.get(f"score_bin/{i}", 0) for i in range(report.SCORE_BINS)]
    with tempfile.TemporaryDirectory(prefix="curation_report_") as tmp:
      report.write_report(tmp, stats, hist, languages,
                          _read_head(f"{workdir}/{DECONTAMINATION}", REPORT_MATCHES))
      for f in sorted(pathlib.Path(tmp).iterdir()):
        with pl._fs().create(f"{workdir}/{f.name}") as dst:
          dst.write(f.read_bytes())
  return stats
