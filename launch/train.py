"""Runs the trainer a config names, resuming from the newest good checkpoint in --workdir.

  python launch/train.py --config=configs/pretrain.py:tiny --workdir=DIR [--config.a.b=v ...]

The same command runs on every host of a pod or cluster: multi-process runs (Cloud TPU pod
slices, Slurm with several tasks, or JAX_COORDINATOR_ADDRESS + JAX_NUM_PROCESSES + JAX_PROCESS_ID)
join jax.distributed first. Appends one JSON object per logged step to DIR/metrics.jsonl.
"""

import importlib

from absl import app, flags, logging
from ml_collections import config_flags

from seedcoder_jax import sharding, xla_cpu

# config.trainer -> "module:function(config, workdir)"; the SFT/DPO/RL trainers register here.
TRAINERS = {
    "pretrain": "seedcoder_jax.train.trainer:run",
    "sft": "seedcoder_jax.posttrain.sft:run",
    "dpo": "seedcoder_jax.posttrain.dpo_train:run",
    "rl": "seedcoder_jax.posttrain.rl:run",
}

_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/FILE.py:VARIANT",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "checkpoints, metrics.jsonl, TensorBoard events",
                               required=True)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config = _CONFIG.value
  if config is None:
    raise app.UsageError("--config=configs/FILE.py:VARIANT is required")
  name = config.get("trainer", "pretrain")
  if name not in TRAINERS:
    raise app.UsageError(f"config.trainer={name!r} is not one of {sorted(TRAINERS)}")
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO; --verbosity=0 shows it
  # Before anything starts a backend: XLA reads its flags once (seedcoder_jax/xla_cpu.py).
  try:
    xla_cpu.set_scheduler(config.get("xla_cpu_scheduler", ""))
  except ValueError as e:
    raise app.UsageError(f"config.{e}") from e
  sharding.maybe_initialize_distributed()
  module, _, function = TRAINERS[name].partition(":")
  getattr(importlib.import_module(module), function)(config, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
