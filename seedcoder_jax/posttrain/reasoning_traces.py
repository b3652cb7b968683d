"""Reasoning traces for the LongCoT warmup SFT: sample, keep what passes the tests, write SFT data.

    python data/make_reasoning_traces.py --policy=gguf:smollm2 --problems=workdir/problems \
        --output=workdir/traces --samples_per_prompt=8
    python launch/train.py --config=configs/sft.py:demo --workdir=workdir/warmup \
        --config.sft.corpora=workdir/traces/corpus \
        --config.sft.system_prompt="$(python -c 'from seedcoder_jax.posttrain import reasoning_traces as r; print(r.SYSTEM_PROMPT)')"
    python launch/train.py --config=configs/rl.py:demo --workdir=workdir/rl \
        --config.init.kind=workdir --config.init.path=workdir/warmup \
        --config.rl.system_prompt="..."   # the same system prompt as the traces

Seed-Coder-8B-Reasoning starts RL from a LongCoT warmup: SFT on reasoning traces that were
verified in the sandbox. Here: N replies per train problem from a policy (the rollout engine),
asked to reason inside <think>...</think> and then give the function in a python code block;
each reply's code runs against the problem's tests through the sealed verdicts (rejection
sampling); the first `keep_per_prompt` distinct passing replies with a reasoning block become SFT
conversations (system, user, assistant). Every problem is accounted for: kept, or rejected as
`no_pass` (no reply passed) or `no_reasoning` (replies passed but none reasoned first, when
`require_reasoning`). OUT/corpus is a chat corpus (kind "sft"); OUT/stats.json is written last.
Held-out problems never become traces.

The policy is any model spec the sampler loads (gguf:, hf:, orbax:, workdir:): a stronger model
served elsewhere writes better traces; its weights come here as files, never over a network.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import re
import time
from typing import Sequence

from seedcoder_jax.posttrain import chat_corpus, dpo_pairs, problem_set
from seedcoder_jax.posttrain import problems as problems_lib

SYSTEM_PROMPT = ("You are a careful coding assistant. First think through the problem step by step "
                 "inside <think> and </think>. Then give the complete function in one ```python "
                 "code block.")
STATS_FILE = "stats.json"
CORPUS_DIR = "corpus"
REASONS = ("no_pass", "no_reasoning")
_THINK = re.compile(r"<think>(.+?)</think>", re.DOTALL)


@dataclasses.dataclass(frozen=True)
class TracesConfig:
  policy: str
  problems: str
  limit: int = 0                 # first `limit` train problems (0: all)
  samples_per_prompt: int = 8
  keep_per_prompt: int = 1
  temperature: float = 0.8
  max_new_tokens: int = 512
  require_reasoning: bool = True
  system_prompt: str = SYSTEM_PROMPT
  slots: int = 32
  workers: int = 2
  seed: int = 0

  def __post_init__(self):
    for k in ("samples_per_prompt", "keep_per_prompt", "max_new_tokens", "slots", "workers"):
      if getattr(self, k) < 1:
        raise ValueError(f"{k}={getattr(self, k)} must be >= 1")
    if not self.temperature > 0:
      raise ValueError(f"temperature={self.temperature} must be > 0 (rejection sampling needs "
                       "different samples)")


def user_message(problem: problems_lib.Problem) -> str:
  """The problem's prompt without a "reply with only the code" instruction (the traces reason)."""
  from seedcoder_jax.posttrain.problem_sources import REPLY_FORMAT
  return problem.prompt.replace(REPLY_FORMAT, "").rstrip()


def messages(problem: problems_lib.Problem) -> list[dict]:
  return [{"role": "user", "content": user_message(problem)}]


def has_reasoning(text: str) -> bool:
  """A non-empty <think>...</think> block that comes before the code block."""
  m = _THINK.search(text or "")
  return bool(m and m.group(1).strip()) and "```" not in text[:m.start()]


def select(problem_list: Sequence[problems_lib.Problem], texts: Sequence[str],
           passed: Sequence[bool], cfg: TracesConfig, system_prompt: str) -> tuple[list, dict]:
  """(SFT records, rejected counts) from n replies per problem (reply k of problem i at i*n + k)."""
  n = cfg.samples_per_prompt
  records, rejected = [], {r: 0 for r in REASONS}
  for i, problem in enumerate(problem_list):
    replies = list(zip(texts[i * n:(i + 1) * n], passed[i * n:(i + 1) * n]))
    good = [t for t, ok in replies if ok]
    if not good:
      rejected["no_pass"] += 1
      continue
    if cfg.require_reasoning:
      good = [t for t in good if has_reasoning(t)]
      if not good:
        rejected["no_reasoning"] += 1
        continue
    for k, text in enumerate(list(dict.fromkeys(good))[:cfg.keep_per_prompt]):
      records.append({"id": f"{problem.id}/trace{k}", "difficulty": None,
                      "source": f"traces:{cfg.policy}",
                      "messages": [{"role": "system", "content": system_prompt},
                                   *messages(problem), {"role": "assistant", "content": text}],
                      "meta": {"problem": problem.id, "passed": sum(ok for _, ok in replies),
                               "samples": n}})
  return records, rejected


def build(cfg: TracesConfig, output) -> dict:
  """Samples, judges, selects and writes the traces corpus and stats; returns the stats."""
  from seedcoder_jax import sampling
  out = pathlib.Path(output)
  out.mkdir(parents=True, exist_ok=True)
  (out / STATS_FILE).unlink(missing_ok=True)
  problem_list = problem_set.load(cfg.problems, "train")
  if cfg.limit:
    problem_list = problem_list[:cfg.limit]
  if not problem_list:
    raise ValueError(f"{cfg.problems}: no train problems")
  t0 = time.perf_counter()
  texts, _ = dpo_pairs.sample_replies(
      cfg.policy, problem_list, n=cfg.samples_per_prompt, temperature=cfg.temperature,
      max_new_tokens=cfg.max_new_tokens, seed=cfg.seed, system_prompt=cfg.system_prompt,
      slots=cfg.slots, messages=messages)
  t_sample = time.perf_counter() - t0
  n = cfg.samples_per_prompt
  passed = dpo_pairs.judge([(problem_list[k // n], t) for k, t in enumerate(texts)],
                           workers=cfg.workers)
  records, rejected = select(problem_list, texts, passed, cfg, cfg.system_prompt)
  kept = len({r["meta"]["problem"] for r in records})
  stats = {"input": len(problem_list), "kept": kept, "rejected": rejected,
           "records": len(records), "samples": len(texts),
           "sample_pass_rate": sum(passed) / len(passed),
           "samples_with_reasoning": sum(has_reasoning(t) for t in texts),
           "policy": sampling.describe_model(cfg.policy), "config": dataclasses.asdict(cfg),
           "seconds": {"sampling": round(t_sample, 1),
                       "sandbox": round(time.perf_counter() - t0 - t_sample, 1)}}
  assert stats["input"] == kept + sum(rejected.values()), stats
  if records:
    chat_corpus.write(records, out / CORPUS_DIR, kind="sft", overwrite=True,
                      metadata={"policy": cfg.policy, "problems": str(cfg.problems)})
  else:
    stats["note"] = "no verified traces: no reply both reasoned and passed its tests"
  tmp = out / (STATS_FILE + ".tmp")
  tmp.write_text(json.dumps(stats, indent=1) + "\n")
  os.replace(tmp, out / STATS_FILE)
  return stats
