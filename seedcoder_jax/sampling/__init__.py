"""Sampling: batched KV-cache generation (`Sampler`), FIM prompts and model loading by spec.

    cfg, params, tok = load_model("gguf:smollm2")
    sampler = Sampler(cfg, params, tokenizer=tok)
    [c] = sampler.generate(["def fib(n):"], SamplingParams(max_new_tokens=32, stop=("\\n\\n",)))
    c.text, c.tokens, c.logprobs, c.finish_reason

`RolloutEngine.rollouts` runs GRPO's G samples per prompt (shared prefill, slot refill, per-token
log-probs at the sampling temperature).

`reference.greedy_continue` (full forward passes, no cache) is the ground truth the tests hold
the sampler to.
"""

from seedcoder_jax.sampling.loading import describe_model, load_model
from seedcoder_jax.sampling.prompts import fim_prompt
from seedcoder_jax.sampling.rollout import Rollout, RolloutEngine, RolloutStats
from seedcoder_jax.sampling.sampler import Completion, Sampler, SamplingParams, generate

__all__ = ["Completion", "Rollout", "RolloutEngine", "RolloutStats", "Sampler", "SamplingParams",
           "describe_model", "generate", "load_model", "fim_prompt"]
