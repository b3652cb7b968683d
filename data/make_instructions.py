r"""Makes SFT instruction data: synthetic, sandbox-verified (Seed-Coder section 3.1), or problems.

  python data/make_instructions.py --config=configs/instruct_data.py:demo --workdir=/tmp/inst
  python data/make_instructions.py --config=configs/instruct_data.py:demo --workdir=/tmp/inst_p \
      --source=problems --problems=/tmp/problems
  python data/make_instructions.py --config=configs/instruct_data.py:scale --workdir=/mnt/inst \
      --config.generator.base_url=http://host:8000/v1 --config.generator.model=NAME \
      --config.seeds.corpus=/mnt/curation/corpus

--source=generate: per seed snippet an LLM writes an instruction, a response with code and unit
tests; syntax, decontamination, difficulty, sandbox self-correction and a correctness judge filter
them. Every finished seed is journaled in DIR/journal.jsonl, so a rerun resumes (--overwrite starts
over). --source=problems: the train split of a verifiable problem set, reference solutions as
answers. Both write DIR/corpus/ (chat corpus, kind sft) and DIR/stats.json
({"input", "kept", "rejected": {reason: n}, ...}, input = kept + sum of rejected) and print the
headline as one JSON line. Every config key is documented in configs/instruct_data.py.
"""

import json
import sys

from absl import app, flags
from ml_collections import config_flags

from seedcoder_jax import xla_cpu
from seedcoder_jax.posttrain import instruct_data

_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/instruct_data.py:VARIANT "
                                          "(demo | scale)", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "output directory (corpus/, stats.json, journal)",
                               required=True)
_SOURCE = flags.DEFINE_enum("source", None, list(instruct_data.SOURCES),
                            "overrides config.source: generate (LLM) or problems (a problem set)")
_PROBLEMS = flags.DEFINE_string("problems", None, "overrides config.problems.dir: a problem set "
                                "built by data/make_problems.py (source=problems)")
_OVERWRITE = flags.DEFINE_bool("overwrite", False,
                               "source=generate: discard DIR/journal.jsonl and start over")
_XLA_CPU_SCHEDULER = xla_cpu.define_flag()  # the local generator backend decodes here
_PROGRESS = flags.DEFINE_bool("progress", True, "show a progress bar")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  xla_cpu.set_scheduler(_XLA_CPU_SCHEDULER.value)
  config = _CONFIG.value.to_dict()
  if _SOURCE.value:
    config["source"] = _SOURCE.value
  if _PROBLEMS.value:
    config["problems"]["dir"] = _PROBLEMS.value
  try:
    cfg = instruct_data.InstructConfig.from_dict(config, where="--config")
    stats = instruct_data.run(cfg, _WORKDIR.value, overwrite=_OVERWRITE.value,
                              progress=_PROGRESS.value)
  except instruct_data.InstructDataError as e:  # a bad key, corpus or journal: no traceback
    sys.exit(f"make_instructions: {e}")
  print(json.dumps({"workdir": _WORKDIR.value, "source": stats["source"], "input": stats["input"],
                    "kept": stats["kept"], "rejected": stats["rejected"],
                    "notes": stats.get("notes", [])}))


if __name__ == "__main__":
  flags.mark_flag_as_required("config")
  app.run(main)
