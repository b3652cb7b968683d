"""GRPO-style rollouts with Hugging Face transformers: `generate(num_return_sequences=G,
do_sample=True)` on a batch of prompts, timed (CPU).

Runs in the reference interpreter (.venv-ref: torch 2.13.0 CPU, transformers 5.24.0), started by
`bench/rollout.py --compare_torch`, which writes the model as a Hugging Face checkpoint (the very
float32 weights our engine ran) and REQUEST.json:

  .venv-ref/bin/python bench/reference/torch_rollout.py MODEL_DIR REQUEST.json

REQUEST.json: {"prompts": [[ids]], "group_size": G, "max_new_tokens": N, "temperature": T,
"eos_token_id": int, "repeats": r, "threads": n, "seed": s, "dtype": "float32" | "bfloat16"}
(bfloat16: the model's weights and activations in bfloat16, how transformers decodes in bf16;
default float32). The prompts are left-padded into one batch (attention mask), sampled with plain temperature sampling (top_k=0, top_p=1.0: the same
distribution as the engine), stopping rows at EOS; generate runs all B*G rows until the last one
ends. A completion counts its tokens up to and including its first EOS. tokens/s = completion
tokens / wall time of the whole generate call (prefill included), median over repeats after a
short warm-up (the median run's figures). Prints one JSON line.
"""

import json
import os
import pathlib
import platform
import statistics
import sys
import time

import torch
import transformers


def main(model_dir: str, request_path: str) -> None:
  req = json.loads(pathlib.Path(request_path).read_text())
  torch.set_num_threads(req.get("threads") or os.cpu_count())
  torch.set_flush_denormal(True)  # as XLA on CPU does
  dtype = req.get("dtype", "float32")
  model = transformers.LlamaForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype))
  model = model.eval()
  eos = req["eos_token_id"]
  prompts = req["prompts"]
  t = max(len(p) for p in prompts)
  ids = torch.full((len(prompts), t), eos, dtype=torch.long)
  mask = torch.zeros((len(prompts), t), dtype=torch.long)
  for i, p in enumerate(prompts):
    ids[i, t - len(p):] = torch.tensor(p)
    mask[i, t - len(p):] = 1

  def generate(max_new_tokens, seed):
    torch.manual_seed(seed)
    with torch.no_grad():
      out = model.generate(ids, attention_mask=mask, do_sample=True,
                           temperature=req["temperature"], top_k=0, top_p=1.0,
                           num_return_sequences=req["group_size"],
                           max_new_tokens=max_new_tokens, eos_token_id=eos, pad_token_id=eos,
                           use_cache=True)
    lengths = []
    for row in out[:, t:].tolist():
      lengths.append(row.index(eos) + 1 if eos in row else len(row))
    return lengths

  generate(4, req["seed"])  # warm-up: allocator and oneDNN primitive caches
  runs = []
  for r in range(req["repeats"]):
    t0 = time.perf_counter()
    lengths = generate(req["max_new_tokens"], req["seed"] + r)
    wall = time.perf_counter() - t0
    runs.append((sum(lengths) / wall, wall, lengths))
  rate, wall, lengths = sorted(runs, key=lambda run: run[0])[len(runs) // 2]  # the median run
  print(json.dumps({
      "tokens_per_s": round(rate, 1), "wall_s": round(wall, 2), "tokens": sum(lengths),
      "rows": len(lengths), "mean_completion": round(sum(lengths) / len(lengths), 1),
      "max_completion": max(lengths), "dtype": dtype,
      "attn_implementation": model.config._attn_implementation,
      "num_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
      "processor": platform.machine(), "torch": torch.__version__,
      "transformers": transformers.__version__}))


if __name__ == "__main__":
  main(*sys.argv[1:3])
