"""Post-training maths: per-token log-probs, the DPO loss, GRPO advantages and the policy loss.

The names below are the Post-training API of DESIGN.md ("Contracts"); the modules behind them
(logprobs, dpo, grpo) hold the rest (e.g. grpo.kl_k3 for KL ablations). Pretraining (train/) and
sampling/ never import this package.
"""

from seedcoder_jax.posttrain.dpo import dpo_loss
from seedcoder_jax.posttrain.grpo import group_advantages, policy_loss
from seedcoder_jax.posttrain.logprobs import sequence_logprobs, token_logprobs

__all__ = ["token_logprobs", "sequence_logprobs", "dpo_loss", "group_advantages", "policy_loss"]
