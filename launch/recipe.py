"""Runs every stage of the recipe in order, skipping stages whose outputs exist; then writes
WORKDIR/report.md and report.html (every stage's numbers, the models along the chain, the curves).

  python launch/recipe.py --config=configs/recipe.py:tiny --workdir=workdir/demo
"""

from absl import app, flags, logging
from ml_collections import config_flags

from seedcoder_jax import recipe, recipe_report, xla_cpu

_CONFIG = config_flags.DEFINE_config_file("config", "configs/recipe.py:tiny", "recipe config")
_WORKDIR = flags.DEFINE_string("workdir", None, "where every stage writes its outputs", required=True)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  c = _CONFIG.value
  xla_cpu.set_scheduler(c.get("xla_cpu_scheduler", ""))  # before any stage starts JAX
  if not flags.FLAGS["verbosity"].present:
    # As launch/train.py: orbax logs every checkpoint at INFO (~300 lines between the stages'
    # own lines); --verbosity=0 shows it.
    logging.set_verbosity(logging.WARNING)
  options = {name: c[name].to_dict() for name in c.stages if name in c}
  try:
    recipe.run(list(c.stages), options, _WORKDIR.value)
  finally:  # also after a failed stage: the report shows what finished
    md, page = recipe_report.write(_WORKDIR.value, list(c.stages))
    print(f"[recipe] report: {page} ({md})")


if __name__ == "__main__":
  app.run(main)
