"""Runs an ablation: every arm (and seed) as its own recipe workdir, then the comparison.

  python launch/ablate.py --config=configs/ablations.py:fim_order --workdir=DIR
  python launch/ablate.py --config=... --workdir=DIR --print_commands     # one command per arm
  python launch/ablate.py --config=... --workdir=DIR --shared             # shared stages, first
  python launch/ablate.py --config=... --workdir=DIR --arm=psm --seed=1   # one arm (a cluster job)
  python launch/ablate.py --config=... --workdir=DIR --collect            # the report only

Resumable: finished stages of every arm are skipped, a killed arm continues. Writes
DIR/ablation.json, DIR/ablation.md and the curve plots (seedcoder_jax/ablation.py).
"""

import pathlib
import shlex
import sys

from absl import app, flags, logging

from seedcoder_jax import ablation, config_files, xla_cpu

_CONFIG = flags.DEFINE_string("config", None, "configs/ablations.py:NAME", required=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "DIR: DIR/shared, DIR/<arm>/seed<k>, the report",
                               required=True)
_ARM = flags.DEFINE_string("arm", None, "run only this arm (with --seed)")
_SEED = flags.DEFINE_integer("seed", None, "run only this seed of --arm")
_PRINT = flags.DEFINE_bool("print_commands", False, "print one command per (arm, seed) and exit: "
                           "wrap each in your cluster's launcher (launch/tpu, launch/gpu)")
_COLLECT = flags.DEFINE_bool("collect", False, "only (re)build the report from DIR")
_XLA_CPU_SCHEDULER = xla_cpu.define_flag(default="")  # as configs/recipe.py
_SHARED = flags.DEFINE_bool("shared", False, "only run the shared stages (before per-arm jobs)")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  xla_cpu.set_scheduler(_XLA_CPU_SCHEDULER.value)
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # as launch/train.py: orbax logs every save at INFO
  spec = config_files.load(_CONFIG.value).to_dict()
  try:
    ablation.check(spec)
  except ablation.AblationError as e:
    raise app.UsageError(f"{_CONFIG.value}: {e}")
  if _PRINT.value:
    print(" ".join(shlex.quote(a) for a in (
        sys.executable, "launch/ablate.py", f"--config={_CONFIG.value}",
        f"--workdir={_WORKDIR.value}", "--shared")) + "   # first; then the arms, in parallel:")
    for arm, seed in ablation.runs(spec):
      print(" ".join(shlex.quote(a) for a in (
          sys.executable, "launch/ablate.py", f"--config={_CONFIG.value}",
          f"--workdir={_WORKDIR.value}", f"--arm={arm}", f"--seed={seed}")))
    print(" ".join(shlex.quote(a) for a in (
        sys.executable, "launch/ablate.py", f"--config={_CONFIG.value}",
        f"--workdir={_WORKDIR.value}", "--collect")))
    return
  if _SHARED.value:
    ablation.run_shared(spec, pathlib.Path(_WORKDIR.value))
    return
  if _COLLECT.value:
    result = ablation.collect(spec, _WORKDIR.value)
  else:
    only = None
    if _ARM.value is not None:
      if _ARM.value not in spec["arms"]:
        raise app.UsageError(f"--arm={_ARM.value!r} is not one of {sorted(spec['arms'])}")
      seeds = spec.get("seeds", [0])
      seed = seeds[0] if _SEED.value is None else _SEED.value
      if seed not in seeds:
        raise app.UsageError(f"--seed={seed} is not one of the ablation's seeds {seeds}")
      only = (_ARM.value, seed)
    try:
      result = ablation.run(spec, _WORKDIR.value, only=only)
    except ablation.AblationError as e:
      raise app.UsageError(str(e))
  for v in result["verdicts"]:
    print(f"[ablate] {v['line']}")
  print(f"[ablate] report: {_WORKDIR.value}/ablation.md")


if __name__ == "__main__":
  app.run(main)
