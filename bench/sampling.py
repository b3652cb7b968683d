"""Decode tokens/s and 1K-token prefill time of the KV-cache sampler, one JSON line.

  python bench/sampling.py --preset=tiny --batch_size=1
  python bench/sampling.py --preset=smollm2_135m --batch_size=16 --compare_torch

Random weights of the preset's shape (speed does not depend on the values); no tokenizer, so
every row makes exactly the requested tokens. Greedy `Sampler.generate` on batch_size random
prompts of prompt_len tokens is timed with 1 new token and with new_tokens; decode tokens/s =
batch_size * (new_tokens - 1) / (t_N - t_1), which removes the prefill. prefill_s: generate of one
prefill_len-token prompt with 1 new token. Medians over repeats, after a warm-up call that
compiles. The line carries the model shape under Hugging Face's names, batch_size, seq_len
(prompt_len + new_tokens), tokens_per_s and the machine.

--compare_torch then times transformers' greedy `generate` (KV cache) on the same shape, batch
and lengths in each of --torch_dtypes (bench/reference/torch_generate.py in the .venv-ref
interpreter, after our run so the two never share the cores) and adds torch_tokens_per_s and
torch_prefill_s (float32), torch_bf16_tokens_per_s, speedup_vs_torch (ours over torch's fastest
dtype measured: the issue's "torch at its best setting") and the torch runs under "torch".
--compute_dtype=auto picks ours per machine (bfloat16 on CPUs with native bf16: perf.py).
"""

import json
import os
import pathlib
import statistics
import subprocess
import time

import jax
import numpy as np
from absl import app, flags

from seedcoder_jax import model as model_lib
from seedcoder_jax import perf, xla_cpu
from seedcoder_jax.sampling import Sampler, SamplingParams

_PRESET = flags.DEFINE_string("preset", "tiny", f"model preset: {sorted(model_lib.PRESETS)}")
_BATCH = flags.DEFINE_integer("batch_size", 16, "prompts decoded together")
_PROMPT = flags.DEFINE_integer("prompt_len", 128, "tokens per prompt for the decode figure")
_NEW = flags.DEFINE_integer("new_tokens", 64, "new tokens per prompt")
_PREFILL = flags.DEFINE_integer("prefill_len", 1024, "prompt tokens for the prefill figure")
_REPEATS = flags.DEFINE_integer("repeats", 3, "timed calls per figure (median reported)")
_DTYPE = flags.DEFINE_enum("compute_dtype", "auto", ["float32", "bfloat16", "auto"],
                           "matmul dtype (auto: perf.auto_compute_dtype)")
_TORCH_DTYPES = flags.DEFINE_list(
    "torch_dtypes", ["float32", "bfloat16"],
    "transformers' dtypes for --compare_torch (bfloat16: weights and activations in bfloat16)")
_TORCH_THREADS = flags.DEFINE_integer(
    "torch_threads", 0, "torch intra-op threads for --compare_torch (0: all cores)")
_XLA_CPU_SCHEDULER = xla_cpu.define_flag()
_COMPARE_TORCH = flags.DEFINE_bool(
    "compare_torch", False, "also time transformers' generate on the same shape (.venv-ref)")

ROOT = pathlib.Path(__file__).resolve().parents[1]
REF_PYTHON = pathlib.Path(
    os.environ.get("SEEDCODER_REF_PYTHON", ROOT / ".venv-ref" / "bin" / "python"))
TORCH_SCRIPT = ROOT / "bench" / "reference" / "torch_generate.py"


def _median_s(fn, repeats: int) -> float:
  fn()  # compiles
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def torch_figures(cfg, batch_size, prompt_len, new_tokens, prefill_len, repeats,
                  threads, dtype) -> dict:
  shape = {**cfg.hf_names(), "rms_norm_eps": cfg.rms_norm_eps, "rope_theta": cfg.rope_theta,
           "tie_word_embeddings": cfg.tie_embeddings}
  args = [f"--shape={json.dumps(shape)}", f"--batch_size={batch_size}",
          f"--prompt_len={prompt_len}", f"--new_tokens={new_tokens}",
          f"--prefill_len={prefill_len}", f"--repeats={repeats}", f"--threads={threads}",
          f"--dtype={dtype}"]
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
  xla_cpu.set_scheduler(_XLA_CPU_SCHEDULER.value)
  if _COMPARE_TORCH.value and not REF_PYTHON.exists():
    raise app.UsageError(f"--compare_torch needs the reference environment {REF_PYTHON} "
                         "(`make install-ref`, or set SEEDCODER_REF_PYTHON)")
  try:
    perf.check_torch_dtypes(_TORCH_DTYPES.value)
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  if _NEW.value < 2:
    raise app.UsageError(f"--new_tokens={_NEW.value} must be at least 2")
  cfg = model_lib.preset(_PRESET.value, compute_dtype=perf.resolve_compute_dtype(_DTYPE.value))
  b, t, n = _BATCH.value, _PROMPT.value, _NEW.value
  max_len = max(t + n, _PREFILL.value + 1)
  params = model_lib.init_params(cfg)
  sampler = Sampler(cfg, params, max_batch=b, max_len=max_len)
  rng = np.random.default_rng(0)
  prompts = rng.integers(0, cfg.vocab_size, (b, t)).tolist()
  long_prompt = rng.integers(0, cfg.vocab_size, (1, _PREFILL.value)).tolist()

  t_1 = _median_s(lambda: sampler.generate(prompts, SamplingParams(max_new_tokens=1)),
                  _REPEATS.value)
  t_n = _median_s(lambda: sampler.generate(prompts, SamplingParams(max_new_tokens=n)),
                  _REPEATS.value)
  prefill_s = _median_s(lambda: sampler.generate(long_prompt, SamplingParams(max_new_tokens=1)),
                        _REPEATS.value)
  tokens_per_s = b * (n - 1) / (t_n - t_1)
  result = {
      **cfg.hf_names(), "batch_size": b, "seq_len": t + n, "prompt_len": t, "new_tokens": n,
      "tokens_per_s": round(tokens_per_s, 1), "step_s": round((t_n - t_1) / (n - 1), 5),
      "prefill_len": _PREFILL.value, "prefill_s": round(prefill_s, 4),
      "compute_dtype": cfg.compute_dtype, "jax": jax.__version__, "machine": perf.machine(),
      "xla_cpu_scheduler": xla_cpu.current(),
  }
  if _COMPARE_TORCH.value:
    runs = {d: torch_figures(cfg, b, t, n, _PREFILL.value, _REPEATS.value, _TORCH_THREADS.value, d)
            for d in _TORCH_DTYPES.value}
    result.update(perf.versus_torch(tokens_per_s, runs, keys=("tokens_per_s", "prefill_s")))
  print(json.dumps(result))


if __name__ == "__main__":
  app.run(main)
