"""Decode and prefill speed of Hugging Face transformers' `generate` for one model shape (CPU).

Runs in the reference interpreter (.venv-ref: torch 2.13.0 CPU, transformers 5.24.0), started by
`bench/sampling.py --compare_torch`; standalone:

  .venv-ref/bin/python bench/reference/torch_generate.py --shape='{"vocab_size": 512,
      "hidden_size": 128, "intermediate_size": 384, "num_hidden_layers": 2,
      "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 16, "rms_norm_eps": 1e-6,
      "rope_theta": 500000.0, "tie_word_embeddings": false}' --batch_size=16

Builds LlamaForCausalLM with that shape (transformers' own init, default attention) in --dtype
(float32, or bfloat16: weights and activations in bfloat16, how transformers decodes in bf16),
then times greedy `generate` with its KV cache (use_cache=True, EOS disabled so every row makes
exactly the requested tokens) on random prompts of one length (no padding): once with 1 new
token and once with N; decode tokens/s = batch * (N - 1) / (t_N - t_1), which removes the
prefill. Prefill: a forward of one prefill_len-token prompt. Medians over repeats after a warm-up.
Prints one JSON line.
"""

import argparse
import json
import os
import platform
import statistics
import time

import torch
import transformers


def _parse_args():
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--shape", required=True, help="JSON: the model shape under Hugging Face's names")
  p.add_argument("--batch_size", type=int, required=True)
  p.add_argument("--prompt_len", type=int, default=128)
  p.add_argument("--new_tokens", type=int, default=64)
  p.add_argument("--prefill_len", type=int, default=1024)
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: all cores)")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                 help="the model's parameter and activation dtype")
  return p.parse_args()


def _build_model(shape: dict, max_len: int, dtype: str) -> transformers.LlamaForCausalLM:
  shape = dict(shape)
  theta = shape.pop("rope_theta")
  config = transformers.LlamaConfig(
      **shape, rope_parameters={"rope_type": "default", "rope_theta": theta},
      max_position_embeddings=max_len)
  return transformers.LlamaForCausalLM(config).to(getattr(torch, dtype)).eval()


def _median_s(fn, repeats: int) -> float:
  fn()  # warm-up: allocator and oneDNN primitive caches
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def main():
  args = _parse_args()
  torch.set_num_threads(args.threads or os.cpu_count())
  torch.set_flush_denormal(True)  # as XLA on CPU does
  torch.manual_seed(args.seed)
  shape = json.loads(args.shape)
  max_len = max(args.prompt_len + args.new_tokens, args.prefill_len)
  model = _build_model(shape, max_len, args.dtype)
  prompts = torch.randint(0, shape["vocab_size"], (args.batch_size, args.prompt_len))
  long_prompt = torch.randint(0, shape["vocab_size"], (1, args.prefill_len))

  def generate(n):
    with torch.no_grad():
      out = model.generate(prompts, attention_mask=torch.ones_like(prompts), do_sample=False,
                           max_new_tokens=n, min_new_tokens=n, use_cache=True,
                           eos_token_id=None, pad_token_id=0)
    assert out.shape == (args.batch_size, args.prompt_len + n), out.shape

  def prefill():
    with torch.no_grad():
      model(long_prompt, use_cache=True)

  t_1 = _median_s(lambda: generate(1), args.repeats)
  t_n = _median_s(lambda: generate(args.new_tokens), args.repeats)
  result = {
      "tokens_per_s": round(args.batch_size * (args.new_tokens - 1) / (t_n - t_1), 1),
      "step_s": round((t_n - t_1) / (args.new_tokens - 1), 5),
      "prefill_s": round(_median_s(prefill, args.repeats), 4),
      "batch_size": args.batch_size, "prompt_len": args.prompt_len,
      "new_tokens": args.new_tokens, "prefill_len": args.prefill_len,
      "dtype": args.dtype, "attn_implementation": model.config._attn_implementation,
      "num_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
      "processor": platform.machine(), "torch": torch.__version__,
      "transformers": transformers.__version__,
  }
  print(json.dumps(result))


if __name__ == "__main__":
  main()
