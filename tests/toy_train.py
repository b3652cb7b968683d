"""Runs the pretrain trainer on the toy Grain pipeline in a subprocess (kill/resume, multi-process).

  python tests/toy_train.py WORKDIR '{"model": {"preset": "tiny"}, ...}' [nan_after]

Same CPU setup as tests/conftest.py (8 fake devices unless XLA_FLAGS says otherwise); under
JAX_COORDINATOR_ADDRESS it joins a multi-process run first, as launch/train.py does.
"""

import json
import os
import pathlib
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                             + " --xla_force_host_platform_device_count=8").strip()
sys.path.insert(0, str(pathlib.Path(__file__).parent))

import toy_data  # pylint: disable=g-import-not-at-top,wrong-import-position
from seedcoder_jax import sharding  # pylint: disable=g-import-not-at-top,wrong-import-position
from seedcoder_jax.train import trainer  # pylint: disable=g-import-not-at-top,wrong-import-position


def main(argv):
  workdir, config = argv[1], json.loads(argv[2])
  nan_after = int(argv[3]) if len(argv) > 3 else None
  sharding.maybe_initialize_distributed()
  data = toy_data.source(batch_size=config["data"]["batch_size"], seq_len=config["data"]["seq_len"],
                         vocab_size=512, nan_after=nan_after,
                         delay_s=float(os.environ.get("TOY_BATCH_DELAY_S", "0")))
  print(json.dumps(trainer.run(config, workdir, data=data)), flush=True)


if __name__ == "__main__":
  main(sys.argv)
