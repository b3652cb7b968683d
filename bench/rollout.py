"""GRPO rollout tokens/s of `RolloutEngine` (G samples of B prompts), one JSON line.

  python bench/rollout.py --model=gguf:smollm2 --prompts=8 --group_size=4 --compare_torch
  python bench/rollout.py --preset=tiny --prompts=2 --group_size=2 --max_new_tokens=8

--model loads real weights and their tokenizer (`sampling.load_model` specs); the prompts are
chat-formatted coding requests (cycled to --prompts) and rows stop at the tokenizer's EOS, so
completions have the uneven lengths RL sees. --preset instead uses random weights of a preset's
shape, random prompts of --prompt_len tokens and --eos_id as the stop id.

One `rollouts` call (plain temperature sampling, --slots decode rows, by default every rollout at
once; fewer exercise slot refill; shared prefill) is run once to compile and then timed --repeats
times with the same seed (the same work each time); tokens/s = completion tokens (EOS included) /
wall time of the whole call, prefill included; the median run is reported.

--compare_torch then writes the same float32 weights as a Hugging Face checkpoint and times
transformers' `generate(num_return_sequences=G, do_sample=True, top_k=0, top_p=1.0)` on the same
prompts in each of --torch_dtypes in the .venv-ref interpreter (bench/reference/torch_rollout.py,
after our run so the two never share the cores), adding torch_tokens_per_s (float32),
torch_bf16_tokens_per_s, speedup_vs_torch (ours over torch's fastest dtype measured) and the torch
runs under "torch" (perf.versus_torch). --compute_dtype=auto picks ours per machine (perf.py).
Both sample the same distribution with different random streams, so their completion lengths
differ by chance: each side's token count is its own.
"""

import json
import os
import pathlib
import subprocess
import tempfile
import time

import jax
import numpy as np
from absl import app, flags

from seedcoder_jax import model as model_lib
from seedcoder_jax import perf, xla_cpu
from seedcoder_jax.sampling import RolloutEngine, load_model
from seedcoder_jax.sampling import rollout as rollout_lib

_MODEL = flags.DEFINE_string("model", "gguf:smollm2", "load_model spec (real weights + tokenizer)")
_PRESET = flags.DEFINE_string("preset", None, "random weights of this preset instead of --model")
_PROMPTS = flags.DEFINE_integer("prompts", 8, "B: prompts per call")
_GROUP = flags.DEFINE_integer("group_size", 4, "G: rollouts per prompt")
_NEW = flags.DEFINE_integer("max_new_tokens", 128, "completion length cap")
_TEMPERATURE = flags.DEFINE_float("temperature", 0.6, "sampling temperature (the paper's RL: 0.6)")
_SLOTS = flags.DEFINE_integer(
    "slots", 0, "decode rows of the engine (0: prompts x group_size, every rollout at once, as "
    "transformers' generate decodes them and as configs/rl.py:demo's 32 slots hold its 4 x 8)")
_CHUNK = flags.DEFINE_integer("chunk", 16, "decode steps between host checks")
_PROMPT_LEN = flags.DEFINE_integer("prompt_len", 64, "--preset: tokens per random prompt")
_EOS = flags.DEFINE_integer("eos_id", 2, "--preset: the stop id")
_SEED = flags.DEFINE_integer("seed", 0, "sampling seed")
_REPEATS = flags.DEFINE_integer("repeats", 1, "timed calls (median reported)")
_DTYPE = flags.DEFINE_enum("compute_dtype", "auto", ["float32", "bfloat16", "auto"],
                           "matmul dtype (auto: perf.auto_compute_dtype)")
_TORCH_DTYPES = flags.DEFINE_list(
    "torch_dtypes", ["float32", "bfloat16"],
    "transformers' dtypes for --compare_torch (bfloat16: weights and activations in bfloat16)")
_TORCH_THREADS = flags.DEFINE_integer("torch_threads", 0, "torch threads (0: all cores)")
_XLA_CPU_SCHEDULER = xla_cpu.define_flag()
_COMPARE_TORCH = flags.DEFINE_bool(
    "compare_torch", False, "also time transformers' generate on the same weights (.venv-ref)")

ROOT = pathlib.Path(__file__).resolve().parents[1]
REF_PYTHON = pathlib.Path(
    os.environ.get("SEEDCODER_REF_PYTHON", ROOT / ".venv-ref" / "bin" / "python"))
TORCH_SCRIPT = ROOT / "bench" / "reference" / "torch_rollout.py"

REQUESTS = [
    "Write a Python function that checks whether a number is prime.",
    "Write a Python function to reverse a singly linked list.",
    "Write a function that returns the n-th Fibonacci number.",
    "Write a Python class for a stack with push, pop and peek.",
    "Write a function that merges two sorted lists into one sorted list.",
    "Write a Python function that counts the words in a string.",
    "Write a function to compute the greatest common divisor of two integers.",
    "Write a Python function that flattens a nested list.",
]


def _model_and_prompts():
  """(cfg, params, prompts, eos id, description of the weights)."""
  b = _PROMPTS.value
  if _PRESET.value:
    cfg = model_lib.preset(_PRESET.value, compute_dtype=perf.resolve_compute_dtype(_DTYPE.value))
    rng = np.random.default_rng(0)
    prompts = rng.integers(0, cfg.vocab_size, (b, _PROMPT_LEN.value)).tolist()
    return cfg, model_lib.init_params(cfg), prompts, _EOS.value, f"random {_PRESET.value}"
  cfg, params, tok = load_model(_MODEL.value)
  cfg = cfg.replace(compute_dtype=perf.resolve_compute_dtype(_DTYPE.value))
  chat = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
  prompts = [tok.encode(chat.format(REQUESTS[i % len(REQUESTS)])) for i in range(b)]
  return cfg, params, prompts, tok.eos_id, _MODEL.value


def torch_figures(cfg, params, prompts, eos, dtype) -> dict:
  from seedcoder_jax.interop import hf
  with tempfile.TemporaryDirectory() as tmp:
    hf.save(pathlib.Path(tmp) / "model", cfg, params)
    request = pathlib.Path(tmp) / "request.json"
    request.write_text(json.dumps({
        "prompts": prompts, "group_size": _GROUP.value, "max_new_tokens": _NEW.value,
        "temperature": _TEMPERATURE.value, "eos_token_id": eos, "repeats": _REPEATS.value,
        "threads": _TORCH_THREADS.value, "seed": _SEED.value, "dtype": dtype}))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_"))}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run([str(REF_PYTHON), str(TORCH_SCRIPT), str(pathlib.Path(tmp) / "model"),
                           str(request)], capture_output=True, text=True, env=env, cwd=ROOT)
  if proc.returncode:
    raise RuntimeError(f"{TORCH_SCRIPT.name} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
  return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  xla_cpu.set_scheduler(_XLA_CPU_SCHEDULER.value)
  try:
    perf.check_torch_dtypes(_TORCH_DTYPES.value)
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  if _COMPARE_TORCH.value and not REF_PYTHON.exists():
    raise app.UsageError(f"--compare_torch needs the reference environment {REF_PYTHON} "
                         "(`make install-ref`, or set SEEDCODER_REF_PYTHON)")
  cfg, params, prompts, eos, weights = _model_and_prompts()
  longest = max(len(p) for p in prompts)
  # The tightest cache for these prompts: decode reads every column each step.
  max_len = rollout_lib.bucket(longest, rollout_lib.MIN_PROMPT_BUCKET) + _NEW.value
  slots = _SLOTS.value or _PROMPTS.value * _GROUP.value
  engine = RolloutEngine(cfg, params, slots=slots, max_len=max_len, chunk=_CHUNK.value)

  def run():
    return engine.rollouts(prompts, group_size=_GROUP.value, max_new_tokens=_NEW.value,
                           temperature=_TEMPERATURE.value, seed=_SEED.value, stop_ids=(eos,))

  t0 = time.perf_counter()
  run()  # compiles every program the timed calls use (same seed: the same schedule)
  first_s = time.perf_counter() - t0
  runs = []
  for _ in range(_REPEATS.value):
    t0 = time.perf_counter()
    out = run()
    wall = time.perf_counter() - t0
    lengths = [len(r.tokens) for group in out for r in group]
    runs.append((sum(lengths) / wall, wall, lengths, engine.stats))
  rate, wall, lengths, stats = sorted(runs, key=lambda r: r[0])[len(runs) // 2]
  result = {
      **cfg.hf_names(), "batch_size": _PROMPTS.value, "group_size": _GROUP.value,
      "seq_len": longest + _NEW.value, "max_new_tokens": _NEW.value,
      "temperature": _TEMPERATURE.value, "weights": weights, "slots": slots,
      "chunk": _CHUNK.value, "cache_len": max_len,
      "tokens_per_s": round(rate, 1), "wall_s": round(wall, 2), "first_call_s": round(first_s, 2),
      "tokens": sum(lengths), "rows": len(lengths),
      "mean_completion": round(sum(lengths) / len(lengths), 1), "max_completion": max(lengths),
      "stats": vars(stats), "compute_dtype": cfg.compute_dtype, "jax": jax.__version__,
      "machine": perf.machine(), "xla_cpu_scheduler": xla_cpu.current(),
  }
  if _COMPARE_TORCH.value:
    runs = {d: torch_figures(cfg, params, prompts, eos, d) for d in _TORCH_DTYPES.value}
    result.update(perf.versus_torch(rate, runs))
  print(json.dumps(result))


if __name__ == "__main__":
  app.run(main)
