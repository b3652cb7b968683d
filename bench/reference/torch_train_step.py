"""Training throughput of Hugging Face transformers + PyTorch for one model shape (CPU, eager).

Runs in the reference interpreter (.venv-ref: torch 2.13.0 CPU, transformers 5.24.0), started by
`bench/train_step.py --compare_torch`; standalone:

  .venv-ref/bin/python bench/reference/torch_train_step.py --shape='{"vocab_size": 512,
      "hidden_size": 128, "intermediate_size": 384, "num_hidden_layers": 2,
      "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 16, "rms_norm_eps": 1e-6,
      "rope_theta": 500000.0, "tie_word_embeddings": false}' --batch_size=8 --seq_len=256

Builds LlamaForCausalLM with that shape (transformers' own init, float32 parameters, the default
attention implementation), trains it with torch.optim.AdamW plus global-norm clipping (as our
train step does) on random token batches made before timing, and times whole optimizer steps:
forward with the shifted-label loss, backward, clip, optimizer step, zero_grad. Warm-up steps come
first (allocator and oneDNN primitive caches). Each requested compute dtype (float32, and
bfloat16 via torch.autocast with float32 parameters and optimizer) is measured in turn on the same
model; then one JSON line: per dtype tokens_per_s (total tokens / total time of the measured
steps) and step_s, plus torch's thread counts and versions.
"""

import argparse
import json
import os
import platform
import time

import torch
import transformers


def _parse_args():
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--shape", required=True,
                 help="JSON: the model's config.json (seedcoder_jax.interop.hf.config_to_hf)")
  p.add_argument("--batch_size", type=int, required=True)
  p.add_argument("--seq_len", type=int, required=True)
  p.add_argument("--steps", type=int, default=10, help="measured optimizer steps per dtype")
  p.add_argument("--warmup", type=int, default=3, help="untimed steps per dtype before measuring")
  p.add_argument("--dtypes", default="float32,bfloat16",
                 help="comma-separated compute dtypes: float32 | bfloat16 (autocast)")
  p.add_argument("--lr", type=float, default=1e-3)
  p.add_argument("--b2", type=float, default=0.95)
  p.add_argument("--weight_decay", type=float, default=0.1)
  p.add_argument("--clip_norm", type=float, default=1.0, help="0 disables clipping")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                 help="cuda: the model, batches and optimizer on the first GPU")
  return p.parse_args()


# Keys of seedcoder_jax.interop.hf.config_to_hf that describe the file, not the model's shape.
_FILE_KEYS = ("architectures", "model_type", "torch_dtype")


def _build_model(shape: dict, seq_len: int) -> transformers.LlamaForCausalLM:
  shape = {k: v for k, v in shape.items() if k not in _FILE_KEYS}
  if shape.pop("rope_scaling", None) is not None:
    raise ValueError("rope_scaling is not supported by this benchmark (plain RoPE only)")
  # transformers v5 folds rope_theta into rope_parameters; pass it there so it is not dropped.
  theta = shape.pop("rope_theta")
  max_positions = max(seq_len, shape.pop("max_position_embeddings", seq_len))
  config = transformers.LlamaConfig(
      **shape, rope_parameters={"rope_type": "default", "rope_theta": theta},
      max_position_embeddings=max_positions, use_cache=False)
  if config.rope_parameters["rope_theta"] != theta:
    raise ValueError(f"rope_theta {theta} was not applied: {config.rope_parameters}")
  return transformers.LlamaForCausalLM(config).to(torch.float32).train()


def _measure(model, batches, args, dtype: str) -> dict:
  # A fresh optimizer per dtype so both figures include the same optimizer-state work.
  opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, args.b2), eps=1e-8,
                          weight_decay=args.weight_decay)
  autocast = torch.autocast(args.device, dtype=torch.bfloat16, enabled=dtype == "bfloat16")

  def step(tokens):
    with autocast:
      loss = model(input_ids=tokens, labels=tokens).loss
    loss.backward()
    if args.clip_norm > 0:
      torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip_norm)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.item()  # .item() syncs, as our trainer's fetched metrics do

  for i in range(args.warmup):
    step(batches[i % len(batches)])
  times, loss = [], float("nan")
  for i in range(args.steps):
    t0 = time.perf_counter()
    loss = step(batches[i % len(batches)])
    times.append(time.perf_counter() - t0)
  tokens = args.batch_size * args.seq_len * args.steps
  return {"tokens_per_s": round(tokens / sum(times), 1),
          "step_s": round(sum(times) / len(times), 3), "final_loss": loss}


def main():
  args = _parse_args()
  torch.set_num_threads(os.cpu_count())
  # XLA on CPU flushes denormals; without this AdamW's tiny second moments make torch steps grow
  # several times slower within tens of steps.
  torch.set_flush_denormal(True)
  torch.manual_seed(args.seed)
  if args.device == "cuda" and not torch.cuda.is_available():
    raise SystemExit("--device=cuda: torch sees no GPU")
  shape = json.loads(args.shape)
  model = _build_model(shape, args.seq_len).to(args.device)
  # A few distinct random batches, made before timing: the measured steps contain no input work.
  batches = [torch.randint(0, shape["vocab_size"], (args.batch_size, args.seq_len),
                           device=args.device) for _ in range(4)]
  result = {"batch_size": args.batch_size, "seq_len": args.seq_len, "steps": args.steps,
            "warmup": args.warmup,
            "attn_implementation": model.config._attn_implementation}
  for dtype in args.dtypes.split(","):
    if dtype not in ("float32", "bfloat16"):
      raise SystemExit(f"unknown dtype {dtype!r}: float32 | bfloat16")
    result[dtype] = _measure(model, batches, args, dtype)
  result.update(
      num_threads=torch.get_num_threads(), num_interop_threads=torch.get_num_interop_threads(),
      cpu_count=os.cpu_count(), processor=platform.machine(), torch=torch.__version__,
      device=torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
      transformers=transformers.__version__)
  print(json.dumps(result))


if __name__ == "__main__":
  main()
