r"""Curates raw repositories (and commits, web pages) into the pre-scored corpus, on Apache Beam.

  python data/curate.py --config=configs/curation.py:tiny --workdir=/tmp/cur
  python data/curate.py --config=configs/curation.py:tiny --workdir=/tmp/cur --input=~/src/repo \
      --input=/data/other_repo.tar.gz --config.dedup.near.threshold=0.7
  python data/curate.py --config=configs/curation.py:full --workdir=/mnt/cur \
      --runner=DataflowRunner --project=P --region=R --temp_location=gs://B/tmp

Flags this program does not define (--runner, --direct_num_workers, --project, ...) are Beam
pipeline options and go to Beam unchanged. Writes DIR/corpus/ (files and web pages),
DIR/commit_corpus/, DIR/repo_corpus/, DIR/stats.json,
DIR/decontamination.jsonl and DIR/report.html; a rerun resumes (finished passes are skipped).
Prints stats.json's headline as one JSON line.
"""

import json

from absl import app, flags
from ml_collections import config_flags

from seedcoder_jax import xla_cpu
from seedcoder_jax.curation import pipeline

_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/curation.py:VARIANT",
                                          lock_config=True)
_XLA_CPU_SCHEDULER = xla_cpu.define_flag()  # the local oracle decodes in this process
_WORKDIR = flags.DEFINE_string("workdir", None, "output directory", required=True)
_INPUT = flags.DEFINE_multi_string("input", None,
                                   "repository paths (directory or .tar/.tar.gz); replaces "
                                   "config.ingest.inputs")


def main(argv):
  xla_cpu.set_scheduler(_XLA_CPU_SCHEDULER.value)
  stats = pipeline.run(_CONFIG.value, _WORKDIR.value, inputs=_INPUT.value, beam_args=argv[1:])
  print(json.dumps({"workdir": _WORKDIR.value, "input": stats["input"], "kept": stats["kept"],
                    "rejected": sum(stats["rejected"].values()),
                    "score_source": stats["score_source"], "repo_records": stats["repo_records"]}))


if __name__ == "__main__":
  flags.mark_flag_as_required("config")
  app.run(main, flags_parser=lambda argv: flags.FLAGS(argv, known_only=True))
