"""Reference for tests/test_posttrain_dpo_reference.py: TRL 1.16.0's DPO step on real models.

Usage (run by tests/refenv.py::run_reference in the .venv-ref interpreter): `trl_dpo_forward.py DIR`
reads DIR/request.json and writes DIR/<job name>.json per job.

request.json: {"policy": HF dir, "reference": HF dir, "seq_len": T, "pad_token_id": int,
               "examples": [{"prompt_ids", "chosen_ids", "rejected_ids"}, ...],
               "jobs": [{"name", "loss_type", "beta"}, ...]}
<name>.json: {"loss", "metrics" (TRL's rewards/* and logps/*), "chosen_logps", "rejected_logps",
              "ref_chosen_logps", "ref_rejected_logps" ([P] summed completion log-probs),
              "log_probs", "ref_log_probs" ([2P, T - 1] per-token log-probs of tokens 1..T-1,
              0 outside the completion, as the fused head returns them),
              "grad_norm" (global L2 norm of d loss / d policy parameters),
              "grad_norms" ({parameter name: L2 norm of its gradient}),
              "input_ids", "completion_mask" ([2P, T], TRL's layout: chosen rows, then rejected)}

Every number is TRL's own code on transformers' LlamaForCausalLM (float32, eager attention):
- the batch: `trl.trainer.dpo_trainer.DataCollatorForPreference` (prompt + completion, right
  padding; `pad_to_multiple_of=seq_len` so that it pads to exactly seq_len when the longest row
  fits, the test's fixed row length);
- the forward: `trl.trainer.utils.add_fused_lm_head` patches both models exactly as
  DPOTrainer.__init__ does (the policy with outputs log_probs, entropy, mean_logits, is_top1;
  the reference with log_probs), so `model(..., labels, fused_lm_head=True).log_probs` is TRL's
  chunked log-prob kernel (trl.kernels.ChunkedLogProbFunction);
- loss and metrics: `DPOTrainer._compute_loss`, called unbound on the smallest object holding
  the attributes it reads, with `precompute_ref_logps=False` and `ref_model` set: the reference's
  log-probs come from its own forward inside _compute_loss, as in training without precomputed
  reference log-probs. The per-sequence summed log-probs reported here are the `log_probs` that
  _compute_loss received from each forward (captured by forward hooks), summed over positions as
  it sums them;
- the gradient: `loss.backward()` through the policy.
The trainer object itself (Trainer.__init__: accelerate, datasets, optimizer) is not built: the
loss step does not read any of it beyond the stand-ins below.
"""

import collections
import json
import math
import pathlib
import sys
import types

import torch
import transformers
from trl.trainer.dpo_trainer import DataCollatorForPreference, DPOTrainer
from trl.trainer.utils import add_fused_lm_head


class _Accelerator:
  """Single process: gathers are the identity, no autocast."""

  device = torch.device("cpu")

  def gather(self, x):
    return x

  gather_for_metrics = gather


def _load(directory):
  model = transformers.LlamaForCausalLM.from_pretrained(
      directory, dtype=torch.float32, attn_implementation="eager")
  return model


def main(root):
  root = pathlib.Path(root)
  request = json.loads((root / "request.json").read_text())
  policy = _load(request["policy"]).train()  # DPOTrainer trains in train mode (no dropout here)
  ref = _load(request["reference"]).eval()
  for p in ref.parameters():
    p.requires_grad_(False)
  # As DPOTrainer.__init__ patches them (use_weighting=False: no log_sum_sq_probs).
  add_fused_lm_head(policy, outputs=("log_probs", "entropy", "mean_logits", "is_top1"))
  add_fused_lm_head(ref)
  captured = {}
  policy.register_forward_hook(lambda m, a, out: captured.__setitem__("policy", out.log_probs))
  ref.register_forward_hook(lambda m, a, out: captured.__setitem__("ref", out.log_probs))

  collator = DataCollatorForPreference(pad_token_id=request["pad_token_id"],
                                       pad_to_multiple_of=request["seq_len"])
  inputs = collator(request["examples"])
  assert inputs["input_ids"].shape[1] == request["seq_len"], inputs["input_ids"].shape
  for job in request["jobs"]:
    trainer = types.SimpleNamespace(
        model=policy, ref_model=ref, accelerator=_Accelerator(),
        args=types.SimpleNamespace(gradient_checkpointing_kwargs=None), aux_loss_enabled=False,
        ld_alpha=None, precompute_ref_logps=False, f_divergence_type="reverse_kl",
        beta=job["beta"], loss_types=[job["loss_type"]], loss_weights=[1.0], label_smoothing=0.0,
        use_weighting=False, _metrics={"train": collections.defaultdict(list)},
        _total_train_tokens=0, _tp_size=1)
    policy.zero_grad(set_to_none=True)
    loss = DPOTrainer._compute_loss(trainer, policy, dict(inputs), return_outputs=False)
    loss.backward()
    grad_norms = {name: p.grad.double().norm().item() for name, p in policy.named_parameters()
                  if p.grad is not None}
    pol = captured["policy"].detach().sum(dim=1)
    ref_logps = captured["ref"].detach().sum(dim=1)
    p = pol.shape[0] // 2
    out = {"loss": loss.item(),
           "metrics": {k: v[-1] for k, v in trainer._metrics["train"].items()
                       if k.startswith(("rewards/", "logps/"))},
           "chosen_logps": pol[:p].tolist(), "rejected_logps": pol[p:].tolist(),
           "ref_chosen_logps": ref_logps[:p].tolist(), "ref_rejected_logps": ref_logps[p:].tolist(),
           "log_probs": captured["policy"].detach().tolist(),
           "ref_log_probs": captured["ref"].detach().tolist(),
           "grad_norm": math.sqrt(sum(g * g for g in grad_norms.values())),
           "grad_norms": grad_norms,
           "input_ids": inputs["input_ids"].tolist(),
           "completion_mask": inputs["completion_mask"].tolist()}
    (root / f"{job['name']}.json").write_text(json.dumps(out))
  print(json.dumps({"done": len(request["jobs"])}))


if __name__ == "__main__":
  torch.set_default_dtype(torch.float32)
  torch.set_num_threads(2)
  main(sys.argv[1])
