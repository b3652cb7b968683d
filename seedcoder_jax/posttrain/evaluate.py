"""Held-out pass rate of a model on a problem set: greedy replies, judged in the sandbox.

    rate = pass_rate("workdir:workdir/sft", problem_set.load(DIR, "heldout"), max_new_tokens=256)

The chat prompt and the judging are the ones DPO pairs and RL rewards use (dpo_pairs.prompt_messages,
dpo_pairs.judge: the reply's first Python code block against the tests, sealed), so the numbers
before SFT, after SFT, after DPO and during RL are comparable.
"""

from __future__ import annotations

import time
from typing import Sequence

from seedcoder_jax.posttrain import dpo_pairs
from seedcoder_jax.posttrain import problems as problems_lib
from seedcoder_jax.posttrain.chat_template import ChatRenderer


def pass_rate(spec: str, problem_list: Sequence[problems_lib.Problem], *, max_new_tokens: int,
              system_prompt: str = "You are a helpful coding assistant.", batch_size: int = 16,
              workers: int = 2) -> dict:
  """{"pass_rate", "passed", "n", "passed_ids", "format_errors", "truncated", "seconds", "model"}
  of greedy replies (passed_ids: the problems passed, for paired before/after comparisons)."""
  from seedcoder_jax import sampling
  if not problem_list:
    raise ValueError("no problems to evaluate on")
  t0 = time.perf_counter()
  cfg, params, tok = sampling.load_model(spec)
  renderer = ChatRenderer(tok.spec, system_prompt=system_prompt)
  prompts = [renderer.prompt_ids(dpo_pairs.prompt_messages(p)) for p in problem_list]
  sampler = sampling.Sampler(cfg, params, tokenizer=tok, max_batch=batch_size,
                             max_len=max(len(p) for p in prompts) + max_new_tokens)
  outs = sampler.generate(prompts, sampling.SamplingParams(
      max_new_tokens=max_new_tokens, temperature=0.0, stop_token_ids=renderer.stop_token_ids))
  texts = [o.text for o in outs]
  passed = dpo_pairs.judge(list(zip(problem_list, texts)), workers=workers)
  from seedcoder_jax.posttrain.problems import python_code
  return {"pass_rate": sum(passed) / len(passed), "passed": sum(passed), "n": len(passed),
          "passed_ids": [p.id for p, ok in zip(problem_list, passed) if ok],
          "format_errors": sum(python_code(t or "") is None for t in texts),
          "truncated": sum(o.finish_reason == "length" for o in outs),
          "seconds": round(time.perf_counter() - t0, 1), "model": spec}
