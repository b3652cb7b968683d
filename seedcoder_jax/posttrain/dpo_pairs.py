"""On-policy DPO pairs: sample the policy on problems with tests, judge in the sandbox, pair up.

    python data/make_dpo_pairs.py --policy=workdir:workdir/sft --problems=workdir/problems \
        --output=workdir/dpo_pairs --split=train --samples_per_prompt=8

For each problem: N samples of the current policy (the rollout engine: one prefill per problem,
slot refill; temperature T) on the problem's chat prompt; each reply's first Python code block
runs against the problem's tests through the sealed verdict path (problems.check: an early exit is not a pass); a reply without a
code block fails. A pair is (a passing reply, a failing reply) of the same prompt; up to
`pairs_per_prompt` distinct pairs per prompt, drawn with a seeded RNG. Prompts whose samples all
pass or all fail give no pair and are counted as such.

Output: a chat corpus of kind "pairs" (chat_corpus) in OUT/corpus and OUT/stats.json:
  {"input": prompts, "kept": prompts with a pair, "rejected": {"all_pass": n, "all_fail": n},
   "pairs": P, "samples": S, "sample_pass_rate": ..., "policy": {...describe_model}, ...}
with input = kept + sum(rejected). The stats file is written last (a killed run leaves none, and
a rerun starts that output over: sampling is the expensive part and is not journaled).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import random
import time
from typing import Optional, Sequence

from seedcoder_jax.posttrain import chat_corpus
from seedcoder_jax.posttrain import problem_set
from seedcoder_jax.posttrain import problems as problems_lib
from seedcoder_jax.posttrain.chat_template import ChatRenderer
from seedcoder_jax.posttrain.problems import python_code

STATS_FILE = "stats.json"
CORPUS_DIR = "corpus"
REASONS = ("all_pass", "all_fail")


@dataclasses.dataclass(frozen=True)
class PairsConfig:
  policy: str                      # model spec: gguf:smollm2 | workdir:DIR | hf:DIR | orbax:DIR
  problems: str                    # a problem set directory (data/make_problems.py)
  split: str = "train"             # train (pairs to learn from) | heldout (preference accuracy)
  limit: int = 0                   # first `limit` problems of the split (0: all)
  samples_per_prompt: int = 8      # N (the paper samples hundreds per prompt)
  pairs_per_prompt: int = 1
  temperature: float = 0.8
  max_new_tokens: int = 384
  system_prompt: str = "You are a helpful coding assistant."
  template_file: str = ""
  batch_size: int = 32             # decode rows (slots) of the rollout engine
  workers: int = 2                 # sandbox processes
  seed: int = 0

  def __post_init__(self):
    if self.split not in problems_lib.SPLITS:
      raise ValueError(f"split={self.split!r} is not one of {problems_lib.SPLITS}")
    for k in ("samples_per_prompt", "pairs_per_prompt", "max_new_tokens", "batch_size", "workers"):
      if getattr(self, k) < 1:
        raise ValueError(f"{k}={getattr(self, k)} must be >= 1")
    if self.samples_per_prompt < 2:
      raise ValueError("samples_per_prompt must be >= 2 to make a pair")
    if not self.temperature > 0:
      raise ValueError(f"temperature={self.temperature} must be > 0 (greedy samples are all equal)")


def prompt_messages(problem: problems_lib.Problem) -> list[dict]:
  """The chat prompt of a problem (the system prompt is the renderer's)."""
  return [{"role": "user", "content": problem.prompt}]


def judge(problem_completions: Sequence[tuple[problems_lib.Problem, str]], *, workers: int):
  """[passed] per (problem, reply text): the reply's first python code block against the tests;
  no code block = failed (never run)."""
  runnable = [(k, p, python_code(text)) for k, (p, text) in enumerate(problem_completions)]
  passed = [False] * len(problem_completions)
  jobs = [(k, p, code) for k, p, code in runnable if code is not None]
  verdicts = problems_lib.check([(p, code) for _, p, code in jobs], workers=workers)
  for (k, _, _), v in zip(jobs, verdicts):
    passed[k] = bool(v.passed)
  return passed


def make_pairs(problem: problems_lib.Problem, replies: Sequence[str], passed: Sequence[bool], *,
               pairs_per_prompt: int, rng: random.Random) -> list[tuple[str, str]]:
  """Up to pairs_per_prompt distinct (chosen, rejected) text pairs: chosen passed, rejected not."""
  good = sorted({r for r, ok in zip(replies, passed) if ok})
  bad = sorted({r for r, ok in zip(replies, passed) if not ok})
  combos = [(g, b) for g in good for b in bad]
  rng.shuffle(combos)
  return combos[:pairs_per_prompt]


def sample_replies(policy: str, problem_list, *, n: int, temperature: float, max_new_tokens: int,
                   seed: int, system_prompt: str, template_file: str = "", slots: int = 32,
                   messages=prompt_messages):
  """(texts [P * n], renderer): n replies per problem (reply k of problem i at i * n + k) from the
  rollout engine (one shared prefill per problem, slot refill), decoded without the turn end."""
  from seedcoder_jax import sampling
  model_cfg, params, tok = sampling.load_model(policy)
  if tok is None:
    raise ValueError(f"policy {policy!r} has no tokenizer")
  renderer = ChatRenderer(tok.spec, template_file=template_file, system_prompt=system_prompt)
  prompts = [renderer.prompt_ids(messages(p)) for p in problem_list]
  longest = max(len(p) for p in prompts)
  engine = sampling.RolloutEngine(model_cfg, params, slots=slots,
                                  max_len=(1 << (max(longest, 16) - 1).bit_length()) + max_new_tokens)
  groups = engine.rollouts(prompts, group_size=n, max_new_tokens=max_new_tokens,
                           temperature=temperature, seed=seed, stop_ids=renderer.stop_token_ids)
  stops = set(renderer.stop_token_ids)
  texts = [tok.decode([t for t in r.tokens if t not in stops]) for g in groups for r in g]
  return texts, renderer


def build(cfg: PairsConfig, output) -> dict:
  """Samples, judges and writes the pairs corpus and stats; returns the stats."""
  from seedcoder_jax import sampling
  out = pathlib.Path(output)
  out.mkdir(parents=True, exist_ok=True)
  (out / STATS_FILE).unlink(missing_ok=True)
  problems = problem_set.load(cfg.problems, cfg.split)
  if cfg.limit:
    problems = problems[:cfg.limit]
  if not problems:
    raise ValueError(f"{cfg.problems}: no {cfg.split!r} problems")
  t0 = time.perf_counter()
  texts, renderer = sample_replies(cfg.policy, problems, n=cfg.samples_per_prompt,
                                   temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens,
                                   seed=cfg.seed, system_prompt=cfg.system_prompt,
                                   template_file=cfg.template_file, slots=cfg.batch_size)
  n = cfg.samples_per_prompt
  rows = [(i, j) for i in range(len(problems)) for j in range(n)]
  t_sample = time.perf_counter() - t0
  passed = judge([(problems[i], texts[k]) for k, (i, _) in enumerate(rows)], workers=cfg.workers)
  t_judge = time.perf_counter() - t0 - t_sample

  rng = random.Random(cfg.seed)
  records, rejected, per_problem = [], {r: 0 for r in REASONS}, []
  for i, problem in enumerate(problems):
    replies = texts[i * n:(i + 1) * n]
    ok = passed[i * n:(i + 1) * n]
    per_problem.append(sum(ok))
    pairs = make_pairs(problem, replies, ok, pairs_per_prompt=cfg.pairs_per_prompt, rng=rng)
    if not pairs:
      rejected["all_pass" if all(ok) else "all_fail"] += 1
      continue
    for k, (chosen, rejected_text) in enumerate(pairs):
      records.append({"id": f"{problem.id}/{k}", "prompt": prompt_messages(problem),
                      "chosen": chosen, "rejected": rejected_text, "source": problem.id,
                      "meta": {"passed": sum(ok), "samples": n, "split": problem.split}})
  stats = {"input": len(problems), "kept": len(problems) - sum(rejected.values()),
           "rejected": rejected, "pairs": len(records), "samples": len(rows),
           "sample_pass_rate": sum(passed) / len(rows),
           "prompts_with_any_pass": sum(1 for c in per_problem if c),
           "policy": sampling.describe_model(cfg.policy), "config": dataclasses.asdict(cfg),
           "seconds": {"sampling": round(t_sample, 1), "sandbox": round(t_judge, 1)}}
  assert stats["input"] == stats["kept"] + sum(rejected.values())
  if records:
    chat_corpus.write(records, out / CORPUS_DIR, kind="pairs", overwrite=True,
                      metadata={"policy": cfg.policy, "problems": str(cfg.problems),
                                "split": cfg.split})
  else:
    stats["note"] = ("no pairs: every prompt's samples all passed or all failed; raise "
                     "samples_per_prompt or the temperature, or use more problems")
  tmp = out / (STATS_FILE + ".tmp")
  tmp.write_text(json.dumps(stats, indent=1) + "\n")
  os.replace(tmp, out / STATS_FILE)
  return stats


def load_stats(output) -> Optional[dict]:
  path = pathlib.Path(output) / STATS_FILE
  return json.loads(path.read_text()) if path.is_file() else None
