"""Reference for tests/test_posttrain_reference.py: TRL 1.16.0's DPO loss, metrics and gradients.

Usage (run by tests/refenv.py::run_reference in the .venv-ref interpreter): `trl_dpo.py DIR` reads
DIR/inputs.npz and DIR/jobs.json and writes DIR/<name>.npz and DIR/<name>.json per job.

inputs.npz: per-token policy log-probs `chosen` and `rejected` [P, T] (float32), their completion
masks `chosen_mask` and `rejected_mask` [P, T], and the reference's summed log-probs `ref_chosen`
and `ref_rejected` [P]. jobs.json: [{"name", "loss_type", "beta", "label_smoothing"}].
Outputs: <name>.json {"loss", "metrics": {TRL's metric names}}, <name>.npz the gradients of the
loss w.r.t. the per-token log-probs, `grad_chosen` and `grad_rejected` [P, T].

The maths lives in the method DPOTrainer._compute_loss (the model's forward, then the losses and
metrics); no free function maps log-probs to losses. It is called here unbound on the smallest
object that has the attributes it reads, with a stand-in model whose output carries the given
per-token log-probs (what TRL's fused LM head returns), and reference log-probs "precomputed" as
inputs: no model is built and every number after the forward is TRL's own code.

label_smoothing: TRL 1.16's "sigmoid" ignores it (its label_smoothing feeds "robust" and
"exo_pair"); the conservative-DPO formula -(1-ls) logsigmoid(beta h) - ls logsigmoid(-beta h) is
left only in the "aot" loss, which applies it to the sorted batch of log-ratio differences. On a
batch of one pair the sort is the identity and "aot" is exactly cDPO: a job with loss_type
"cdpo" runs "aot" pair by pair and averages (loss and gradients), as a mean over pairs does.
"""

import collections
import json
import pathlib
import sys
import types

import numpy as np
import torch
from trl.trainer.dpo_trainer import DPOTrainer


class _Accelerator:
  """Single process: gathers are the identity."""

  device = torch.device("cpu")

  def gather(self, x):
    return x

  gather_for_metrics = gather


class _PolicyModel:
  """Stands in for the policy's forward: _compute_loss reads these fields of its output."""

  training = True

  def __init__(self, log_probs):
    self.log_probs = log_probs

  def __call__(self, **kwargs):
    n, t = self.log_probs.shape
    zeros = torch.zeros(n, t)
    return types.SimpleNamespace(log_probs=self.log_probs, entropy=zeros, mean_logits=zeros,
                                 is_top1=zeros.bool())


def trl_dpo(loss_type, beta, label_smoothing, chosen, rejected, chosen_mask, rejected_mask,
            ref_chosen, ref_rejected):
  """(loss, metrics) from DPOTrainer._compute_loss; chosen/rejected [P, T] may require grad."""
  # TRL's log-probs are 0 outside the completion (labels -100); their sum is the sequence's.
  log_probs = torch.cat([chosen * chosen_mask, rejected * rejected_mask])
  model = _PolicyModel(log_probs)
  trainer = types.SimpleNamespace(
      model=model, accelerator=_Accelerator(), aux_loss_enabled=False, ld_alpha=None,
      precompute_ref_logps=True, f_divergence_type="reverse_kl", beta=beta,
      loss_types=[loss_type], loss_weights=[1.0], label_smoothing=label_smoothing,
      use_weighting=False, _metrics={"train": collections.defaultdict(list)},
      _total_train_tokens=0, _tp_size=1)
  n, t = log_probs.shape
  # The completion mask covers prompt + completion; TRL shifts it by one (position 0 is a prompt
  # token): a leading zero column makes the shifted mask the given one. ipo's length
  # normalisation counts the unshifted mask, so the column must be zero.
  completion_mask = torch.cat([torch.zeros(n, 1), torch.cat([chosen_mask, rejected_mask])], 1)
  inputs = {"input_ids": torch.zeros(n, t + 1, dtype=torch.long),
            "attention_mask": torch.ones(n, t + 1, dtype=torch.long),
            "completion_mask": completion_mask.long(), "ref_chosen_logps": ref_chosen,
            "ref_rejected_logps": ref_rejected}
  loss = DPOTrainer._compute_loss(trainer, model, inputs, return_outputs=False)
  metrics = {k: v[-1] for k, v in trainer._metrics["train"].items()
             if k.startswith(("rewards/", "logps/"))}
  return loss, metrics


def run(job, arrays):
  chosen = torch.from_numpy(arrays["chosen"]).requires_grad_()
  rejected = torch.from_numpy(arrays["rejected"]).requires_grad_()
  rest = [torch.from_numpy(arrays[k]) for k in ("chosen_mask", "rejected_mask", "ref_chosen",
                                                "ref_rejected")]
  if job["loss_type"] == "cdpo":
    p = chosen.shape[0]
    losses = [trl_dpo("aot", job["beta"], job["label_smoothing"], chosen[i:i + 1], rejected[i:i + 1],
                      *[x[i:i + 1] for x in rest])[0] for i in range(p)]
    loss, metrics = torch.stack(losses).mean(), {}
  else:
    loss, metrics = trl_dpo(job["loss_type"], job["beta"], job["label_smoothing"], chosen,
                            rejected, *rest)
  loss.backward()
  return loss, metrics, chosen.grad, rejected.grad


def main(root):
  root = pathlib.Path(root)
  arrays = {k: v for k, v in np.load(root / "inputs.npz").items()}
  for job in json.loads((root / "jobs.json").read_text()):
    loss, metrics, grad_chosen, grad_rejected = run(job, arrays)
    (root / f"{job['name']}.json").write_text(json.dumps({"loss": loss.item(), "metrics": metrics}))
    np.savez(root / f"{job['name']}.npz", grad_chosen=grad_chosen.numpy(),
             grad_rejected=grad_rejected.numpy())


if __name__ == "__main__":
  torch.set_default_dtype(torch.float32)
  main(sys.argv[1])
