"""Throughput of the whole pretrain trainer (Grain input, placement, jitted step, logging).

  python bench/train_step.py --config=configs/pretrain.py:tiny [--steps=20 --warmup=5]
  python bench/train_step.py --config=configs/pretrain.py:100m --steps=6 --warmup=2
  python bench/train_step.py --config=configs/pretrain.py:tiny --compare_torch
  python bench/train_step.py --config=configs/pretrain.py:100m --steps=5 --warmup=2 \
      --compare_torch --torch_dtypes=float32

Runs trainer.run in a scratch workdir for warmup + steps optimizer steps (checkpoints off until the
final one, eval off) and prints one JSON line: tokens_per_s and mfu over the steps after warmup
(total tokens / total time, from the trainer's own per-step metrics), the model shape under
Hugging Face's names, batch_size, seq_len, the variant and the machine. The input pipeline is the
config's (corpus and tokenizer must exist: see configs/pretrain.py's docstring).

--compare_torch then trains the same shape, batch and sequence length with Hugging Face
transformers + PyTorch (bench/reference/torch_train_step.py in the .venv-ref interpreter, after our
run so the two never share the cores) and adds to the same line torch_tokens_per_s (float32),
torch_bf16_tokens_per_s (bfloat16 autocast), speedup_vs_torch (ours over torch in our compute
dtype), speedup_vs_torch_bf16 and the torch run's details under "torch". Torch's steps see random
tokens made before timing; ours include the input pipeline.
"""

import json
import os
import pathlib
import subprocess
import tempfile

from absl import app, flags, logging
from ml_collections import config_flags

from seedcoder_jax import perf, xla_cpu
from seedcoder_jax.interop import hf
from seedcoder_jax.train import config as config_lib
from seedcoder_jax.train import metrics as metrics_lib
from seedcoder_jax.train import trainer

_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/pretrain.py:VARIANT")
_STEPS = flags.DEFINE_integer("steps", 20, "measured optimizer steps")
_WARMUP = flags.DEFINE_integer("warmup", 5, "steps before measuring (compilation, input warm-up)")
_WORKDIR = flags.DEFINE_string("workdir", None, "scratch workdir (default: a new temp dir)")
_COMPARE_TORCH = flags.DEFINE_bool(
    "compare_torch", False, "also time transformers + PyTorch on the same shape (.venv-ref)")
_TORCH_DTYPES = flags.DEFINE_list(
    "torch_dtypes", ["float32", "bfloat16"],
    "torch compute dtypes to time with --compare_torch (bfloat16 = autocast; on CPU it is several "
    "times slower than float32, so leave it out for the larger variants)")

ROOT = pathlib.Path(__file__).resolve().parents[1]
# The same interpreter tests/refenv.py uses for reference code (torch never enters this process).
REF_PYTHON = pathlib.Path(
    os.environ.get("SEEDCODER_REF_PYTHON", ROOT / ".venv-ref" / "bin" / "python"))
TORCH_SCRIPT = ROOT / "bench" / "reference" / "torch_train_step.py"


def torch_figures(cfg, steps: int, warmup: int, dtypes: list[str]) -> dict:
  """Runs TORCH_SCRIPT on cfg's shape, batch and optimizer settings; returns its JSON line."""
  args = [f"--shape={json.dumps(hf.config_to_hf(cfg.model))}", f"--batch_size={cfg.batch_size}",
          f"--seq_len={cfg.seq_len}", f"--steps={steps}", f"--warmup={warmup}",
          f"--lr={cfg.opt.peak_lr}", f"--b2={cfg.opt.b2}",
          f"--weight_decay={cfg.opt.weight_decay}", f"--clip_norm={cfg.opt.clip_norm}",
          f"--dtypes={','.join(dtypes)}"]
  # JAX/XLA settings mean nothing to torch; offline so transformers never reaches for the network.
  env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_"))}
  env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
  proc = subprocess.run([str(REF_PYTHON), str(TORCH_SCRIPT), *args], capture_output=True,
                        text=True, env=env, cwd=ROOT)
  if proc.returncode:
    raise RuntimeError(f"{TORCH_SCRIPT.name} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
  return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  # Refused before our run, which takes minutes for the larger variants.
  bad = sorted(set(_TORCH_DTYPES.value) - {"float32", "bfloat16"})
  if bad:
    raise app.UsageError(f"--torch_dtypes: unknown {bad}; choose from float32, bfloat16")
  if _COMPARE_TORCH.value and not REF_PYTHON.exists():
    raise app.UsageError(f"--compare_torch needs the reference environment {REF_PYTHON} "
                         "(`make install-ref`, or set SEEDCODER_REF_PYTHON)")
  logging.set_verbosity(logging.WARNING)
  c = _CONFIG.value
  xla_cpu.set_scheduler(c.get("xla_cpu_scheduler", ""))  # as launch/train.py
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
      "xla_cpu_scheduler": xla_cpu.current(),
  }
  if _COMPARE_TORCH.value:
    ref = torch_figures(cfg, _STEPS.value, _WARMUP.value, _TORCH_DTYPES.value)
    fp32, bf16 = ref.pop("float32", None), ref.pop("bfloat16", None)
    same = bf16 if cfg.model.compute_dtype == "bfloat16" else fp32
    if fp32:
      result["torch_tokens_per_s"] = fp32["tokens_per_s"]
    if bf16:
      result["torch_bf16_tokens_per_s"] = bf16["tokens_per_s"]
      result["speedup_vs_torch_bf16"] = round(tokens_per_s / bf16["tokens_per_s"], 2)
    if same:
      result["speedup_vs_torch"] = round(tokens_per_s / same["tokens_per_s"], 2)
    result["torch"] = {**ref, "float32": fp32, "bfloat16": bf16}
  print(json.dumps(result))


if __name__ == "__main__":
  app.run(main)
