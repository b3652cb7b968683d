r"""Throughput of the curation pipeline on its tiny input: files/s, one JSON line.

  python bench/curation.py                                   # configs/curation.py:tiny, fresh workdir
  python bench/curation.py --config.commits.enabled=False --config.web.enabled=False   # files only
  python bench/curation.py --direct_num_workers=2            # Beam options pass through

Runs the whole pipeline (every pass, in a fresh temporary workdir unless --workdir names one)
and reports `files_per_s` = source files ingested / wall seconds of the whole run, besides
`inputs_per_s` (files + commits + web pages), the seconds of each Beam pass, and the counts.
"""

import json
import os
import pathlib
import tempfile
import time

from absl import app, flags
from ml_collections import config_flags

from seedcoder_jax import perf
from seedcoder_jax.curation import pipeline

_ROOT = pathlib.Path(__file__).resolve().parents[1]
_CONFIG = config_flags.DEFINE_config_file("config", str(_ROOT / "configs" / "curation.py") + ":tiny",
                                          "curation config", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "workdir (default: a fresh temporary directory)")


def main(argv):
  with tempfile.TemporaryDirectory(prefix="curation_bench_") as tmp:
    workdir = _WORKDIR.value or tmp
    if (pathlib.Path(workdir) / "stages").exists():
      raise app.UsageError(f"{workdir} holds an earlier run; a benchmark needs a fresh workdir")
    t0 = time.perf_counter()
    stats = pipeline.run(_CONFIG.value, workdir, beam_args=argv[1:])
    seconds = time.perf_counter() - t0
    passes = {name: json.loads((pathlib.Path(workdir) / "stages" / name / "DONE").read_text())
              .get("seconds") for name in ("filter", "score")}
  files = stats["input_by_source"].get("files", 0)
  oracle, scorer = stats.get("oracle", {}), stats.get("scorer", {})
  per_stage = {  # inputs (or labelled files) per second of each pass / driver step
      "filter_pass_inputs_per_s": stats["input"] / passes["filter"] if passes["filter"] else None,
      "score_pass_records_per_s": (stats["passes"]["score"]["in"] / passes["score"]
                                   if passes["score"] else None),
      "oracle_files_per_s": oracle["n"] / oracle["seconds"] if oracle.get("seconds") else None,
      "scorer_train_tokens_per_s": scorer.get("train_tokens_per_s"),
  }
  print(json.dumps({
      "benchmark": "curation", "files_per_s": files / seconds,
      "inputs_per_s": stats["input"] / seconds, "seconds": seconds, "pass_seconds": passes,
      "oracle_seconds": oracle.get("seconds"), "scorer_train_seconds": scorer.get("train_seconds"),
      **per_stage,
      "files": files, "inputs": stats["input"], "input_by_source": stats["input_by_source"],
      "kept": stats["kept"], "rejected": sum(stats["rejected"].values()),
      "score_source": stats["score_source"], "beam_args": argv[1:],
      "machine": {**perf.machine(), "cpu_count": os.cpu_count()}}))


if __name__ == "__main__":
  app.run(main, flags_parser=lambda argv: flags.FLAGS(argv, known_only=True))
