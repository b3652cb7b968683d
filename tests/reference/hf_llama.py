"""Reference for tests/test_interop_hf.py: transformers' LlamaForCausalLM in float32 (torch, CPU).

Usage (run by tests/refenv.py::run_reference in the .venv-ref interpreter): `hf_llama.py JOBS.json`
runs a list of jobs in one process (importing torch costs more than the jobs):

  {"op": "make", "config": {...config.json keys}, "dir", "tokens", "logits", "seed",
   "dtype": "float32"|"bfloat16", "max_shard_size": optional}
      builds a random model, saves it with save_pretrained (safetensors), reloads it in float32
      and writes the logits of tokens.npy [B, T] to logits.npy.
  {"op": "logits", "dir", "tokens", "logits"}
      loads a checkpoint with from_pretrained in float32 and writes its logits.

Weights are drawn with a larger scale than transformers' init (and norms are not all ones) so that
logits are O(1) and a layout mistake cannot hide under small numbers.
"""

import json
import sys

import numpy as np
import torch
import transformers


def _logits(model, tokens_path, logits_path):
  tokens = torch.from_numpy(np.load(tokens_path).astype(np.int64))
  with torch.no_grad():
    logits = model(input_ids=tokens).logits
  np.save(logits_path, logits.float().numpy())


def make(job):
  torch.manual_seed(job["seed"])
  config = transformers.LlamaConfig(**job["config"])
  model = transformers.LlamaForCausalLM(config).eval()
  with torch.no_grad():
    for name, p in model.named_parameters():
      if name.endswith("norm.weight"):
        p.copy_(1.0 + 0.2 * torch.randn_like(p))
      else:
        p.copy_(torch.randn_like(p) / p.shape[-1] ** 0.5)
  dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[job["dtype"]]
  kwargs = {"safe_serialization": True}
  if job.get("max_shard_size"):
    kwargs["max_shard_size"] = job["max_shard_size"]
  model.to(dtype).save_pretrained(job["dir"], **kwargs)
  # Logits of the saved weights, computed in float32 (bf16 values are exact in float32).
  reloaded = transformers.LlamaForCausalLM.from_pretrained(
      job["dir"], dtype=torch.float32, attn_implementation="eager").eval()
  _logits(reloaded, job["tokens"], job["logits"])


def logits(job):
  model = transformers.LlamaForCausalLM.from_pretrained(
      job["dir"], dtype=torch.float32, attn_implementation="eager").eval()
  _logits(model, job["tokens"], job["logits"])


def main():
  (jobs_path,) = sys.argv[1:]
  torch.set_num_threads(1)
  with open(jobs_path) as f:
    jobs = json.load(f)
  for job in jobs:
    {"make": make, "logits": logits}[job["op"]](job)
  print(json.dumps({"done": len(jobs)}))


if __name__ == "__main__":
  main()
