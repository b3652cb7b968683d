"""The DPO loss (Rafailov et al. 2023) and its IPO and conservative (label-smoothed) forms.

Inputs are [P] arrays over preference pairs: the log-probabilities of the chosen and rejected
completions under the policy and under the frozen reference. Metrics carry TRL's DPOTrainer names
so that runs compare with TRL's logs directly.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

LOSS_TYPES = ("sigmoid", "ipo")


def dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, *, beta: float,
             loss_type: str = "sigmoid", label_smoothing: float = 0.0):
  """(loss, metrics): the loss is a mean over pairs, float32.

  With h = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected):
  - "sigmoid": -(1 - ls) log sigmoid(beta h) - ls log sigmoid(-beta h), ls = label_smoothing.
    ls = 0 is DPO; ls > 0 is conservative DPO (cDPO: the preference label is flipped with
    probability ls). TRL 1.16's "sigmoid" ignores label_smoothing (its label_smoothing now feeds
    the "robust" and "exo_pair" losses); the cDPO formula survives there only inside "aot".
  - "ipo": (h - 1 / (2 beta))^2 (Azar et al. 2023, eq. 17; beta is the paper's tau). TRL computes
    it on length-normalised log-probs (each completion's summed log-probs divided by its token
    count), and that is what the IPO authors' results use: the caller must pass averaged
    log-probs here, for policy and reference alike (sequence sums make the loss scale with length).

  Metrics (TRL's names; means over pairs, computed on the inputs as given, so on averages for
  ipo): rewards/chosen = beta (policy_chosen - ref_chosen), rewards/rejected likewise,
  rewards/margins their difference, rewards/accuracies the fraction of pairs whose chosen reward
  is strictly larger, logps/chosen and logps/rejected the policy's log-probs.
  """
  if loss_type not in LOSS_TYPES:
    raise ValueError(f"dpo loss_type={loss_type!r} is not one of {LOSS_TYPES}")
  if beta <= 0:
    raise ValueError(f"dpo beta={beta} must be > 0")
  if not 0.0 <= label_smoothing < 0.5:
    raise ValueError(f"dpo label_smoothing={label_smoothing} must lie in [0, 0.5)")
  if loss_type == "ipo" and label_smoothing:
    raise ValueError("label_smoothing applies to the sigmoid loss only, not to ipo")
  pc, pr, rc, rr = (jnp.asarray(x, jnp.float32) for x in (policy_chosen, policy_rejected,
                                                          ref_chosen, ref_rejected))
  chosen_logratio_P = pc - rc
  rejected_logratio_P = pr - rr
  h_P = chosen_logratio_P - rejected_logratio_P
  if loss_type == "sigmoid":
    # log_sigmoid is stable for large |beta h| (log(sigmoid(x)) underflows to -inf).
    loss_P = -(1.0 - label_smoothing) * jax.nn.log_sigmoid(beta * h_P)
    if label_smoothing:
      loss_P = loss_P - label_smoothing * jax.nn.log_sigmoid(-beta * h_P)
  else:
    loss_P = jnp.square(h_P - 1.0 / (2.0 * beta))

  chosen_rewards_P = jax.lax.stop_gradient(beta * chosen_logratio_P)
  rejected_rewards_P = jax.lax.stop_gradient(beta * rejected_logratio_P)
  metrics = {
      "rewards/chosen": jnp.mean(chosen_rewards_P),
      "rewards/rejected": jnp.mean(rejected_rewards_P),
      "rewards/margins": jnp.mean(chosen_rewards_P - rejected_rewards_P),
      "rewards/accuracies": jnp.mean((chosen_rewards_P > rejected_rewards_P).astype(jnp.float32)),
      "logps/chosen": jnp.mean(jax.lax.stop_gradient(pc)),
      "logps/rejected": jnp.mean(jax.lax.stop_gradient(pr)),
  }
  return jnp.mean(loss_P), metrics
