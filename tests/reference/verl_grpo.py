"""Reference for tests/test_posttrain_reference.py: verl 0.9.1's GRPO advantages, PPO/DAPO policy
loss, loss aggregation and k3 KL (verl.trainer.ppo.core_algos, torch, CPU, float32).

Usage (run by tests/refenv.py::run_reference in the .venv-ref interpreter): `verl_grpo.py DIR`
reads DIR/inputs.npz and DIR/jobs.json and writes DIR/<name>.npz and DIR/<name>.json per job.

inputs.npz: `rewards` [N] (G consecutive rows one group), `logp`, `old_logp` [N, T] float32,
`advantages` [N], `mask` [N, T].
jobs.json, one of:
  {"op": "advantages", "name", "group_size", "eps", "norm_by_std"}
      compute_grpo_outcome_advantage -> <name>.npz `advantages` [N].
  {"op": "policy_loss", "name", "clip_low", "clip_high", "clip_c" (null: no dual clip), "agg",
   "rows": [start, stop] (optional microbatch), "global_batch_info": {...} (optional)}
      compute_policy_loss_vanilla (which aggregates with agg_loss) -> <name>.json {"loss",
      "metrics"}, <name>.npz `grad_logp` [rows, T]: d loss / d logp by torch autograd.
  {"op": "kl", "name"}
      kl_penalty(logp, old_logp, "low_var_kl") -> <name>.npz `kl` [N, T] and `grad_logp`, the
      gradient of its sum over unmasked tokens.
"""

import json
import pathlib
import sys

import numpy as np
import torch
from verl.trainer.ppo import core_algos


class _ActorConfig(dict):
  """The smallest config compute_policy_loss_vanilla accepts: it reads clip_ratio,
  clip_ratio_low, clip_ratio_high and global_batch_info as attributes, and get("clip_ratio_c")."""

  __getattr__ = dict.__getitem__


# verl always applies the dual clip (clip_ratio_c defaults to 3); a bound no ratio reaches (the
# log-ratio is clamped to 20, exp(20) ~ 4.9e8) turns it off, as clip_c=None does in ours.
_NO_DUAL_CLIP = 1e10


def advantages(job, a):
  n = a["rewards"].shape[0]
  rewards = torch.from_numpy(a["rewards"])[:, None]  # one outcome reward per response
  index = np.arange(n) // job["group_size"]
  adv, _ = core_algos.compute_grpo_outcome_advantage(
      rewards, torch.ones(n, 1), index, epsilon=job["eps"], norm_adv_by_std_in_grpo=job["norm_by_std"])
  return {}, {"advantages": adv[:, 0].numpy()}


def policy_loss(job, a):
  start, stop = job.get("rows", [0, a["logp"].shape[0]])
  logp = torch.from_numpy(a["logp"][start:stop]).requires_grad_()
  old_logp = torch.from_numpy(a["old_logp"][start:stop])
  mask = torch.from_numpy(a["mask"][start:stop])
  adv = torch.from_numpy(a["advantages"][start:stop])[:, None].expand_as(logp)
  config = _ActorConfig(
      clip_ratio=job["clip_low"], clip_ratio_low=job["clip_low"], clip_ratio_high=job["clip_high"],
      clip_ratio_c=job["clip_c"] if job["clip_c"] is not None else _NO_DUAL_CLIP,
      global_batch_info=job.get("global_batch_info", {}))
  loss, metrics = core_algos.compute_policy_loss_vanilla(
      old_logp, logp, adv, mask, loss_agg_mode=job["agg"], config=config)
  loss.backward()
  return {"loss": loss.item(), "metrics": metrics}, {"grad_logp": logp.grad.numpy()}


def kl(job, a):
  logp = torch.from_numpy(a["logp"]).requires_grad_()
  mask = torch.from_numpy(a["mask"])
  kl = core_algos.kl_penalty(logp, torch.from_numpy(a["old_logp"]), "low_var_kl")
  (kl * mask).sum().backward()
  return {}, {"kl": kl.detach().numpy(), "grad_logp": logp.grad.numpy()}


OPS = {"advantages": advantages, "policy_loss": policy_loss, "kl": kl}


def main(root):
  root = pathlib.Path(root)
  arrays = {k: v for k, v in np.load(root / "inputs.npz").items()}
  for job in json.loads((root / "jobs.json").read_text()):
    values, tensors = OPS[job["op"]](job, arrays)
    (root / f"{job['name']}.json").write_text(json.dumps(values))
    np.savez(root / f"{job['name']}.npz", **tensors)


if __name__ == "__main__":
  main(sys.argv[1])
