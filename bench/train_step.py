"""Throughput of the whole pretrain trainer (Grain input, placement, jitted step, logging).

  python bench/train_step.py --config=configs/pretrain.py:tiny [--steps=20 --warmup=5]
  python bench/train_step.py --config=configs/pretrain.py:100m --steps=6 --warmup=2

Runs trainer.run in a scratch workdir for warmup + steps optimizer steps (checkpoints off until the
final one, eval off) and prints one JSON line: tokens_per_s and mfu over the steps after warmup
(total tokens / total time, from the trainer's own per-step metrics), the model shape under
Hugging Face's names, batch_size, seq_len, the variant and the machine. The input pipeline is the
config's (corpus and tokenizer must exist: see configs/pretrain.py's docstring).
"""

import json
import tempfile

from absl import app, flags, logging
from ml_collections import config_flags

from seedcoder_jax import perf
from seedcoder_jax.train import config as config_lib
from seedcoder_jax.train import metrics as metrics_lib
from seedcoder_jax.train import trainer

_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/pretrain.py:VARIANT")
_STEPS = flags.DEFINE_integer("steps", 20, "measured optimizer steps")
_WARMUP = flags.DEFINE_integer("warmup", 5, "steps before measuring (compilation, input warm-up)")
_WORKDIR = flags.DEFINE_string("workdir", None, "scratch workdir (default: a new temp dir)")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  c = _CONFIG.value
  total = _WARMUP.value + _STEPS.value
  c.opt.total_steps = max(c.opt.total_steps, total)
  c.opt.warmup_steps = min(c.opt.warmup_steps, c.opt.total_steps)
  c.stop_after_steps = total
  c.ckpt.every_steps = 0
  c.eval.every_steps = 0
  c.eval.at_end = False
  c.log.every_steps = 1
  c.log.progress_bar = False
  workdir = _WORKDIR.value or tempfile.mkdtemp(prefix="bench_train_step_")
  trainer.run(c, workdir)
  rows = [r for r in metrics_lib.read_metrics(workdir)
          if "loss" in r and r["step"] > _WARMUP.value]
  cfg = config_lib.from_tree(c.to_dict())
  tokens = cfg.batch_size * cfg.seq_len * len(rows)
  seconds = sum(cfg.batch_size * cfg.seq_len / r["tokens_per_s"] for r in rows)
  tokens_per_s = tokens / seconds
  peak, source = perf.peak_flops(cfg.model.compute_dtype)
  result = {
      **cfg.model.hf_names(), "batch_size": cfg.batch_size, "seq_len": cfg.seq_len,
      "tokens_per_s": round(tokens_per_s, 1),
      "mfu": round(perf.mfu(cfg.model.flops_per_token(cfg.seq_len), tokens_per_s, peak), 4),
      "step_s": round(seconds / len(rows), 3), "steps": len(rows),
      "compute_dtype": cfg.model.compute_dtype, "mesh": dict(cfg.mesh), "peak_source": source,
      "final_loss": rows[-1]["loss"], "machine": perf.machine(),
  }
  print(json.dumps(result))


if __name__ == "__main__":
  app.run(main)
