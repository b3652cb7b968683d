"""The RL trainer's settings (`config.rl`) and the config tree -> validated configs.

The tree is pretraining's (model, init, opt, ckpt, log, mesh, seed, stop_after_steps) with
config.data = batch_size (prompts per step), seq_len (the longest prompt + completion row) and
tokenizer, plus `config.rl` (RLConfig's fields, documented in configs/rl.py). Every value is
checked here, before any model is loaded.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional

from seedcoder_jax.posttrain import grpo
from seedcoder_jax.posttrain import sft as sft_lib
from seedcoder_jax.train.config import ConfigError, PretrainConfig, from_tree


@dataclasses.dataclass(frozen=True)
class Stage:
  """One stage of the progressive schedule: `steps` RL steps at this length and group size."""
  steps: int
  max_new_tokens: int
  group_size: int


@dataclasses.dataclass(frozen=True)
class RLConfig:
  problems: str                                # problem set directory (data/make_problems.py)
  stages: tuple[Stage, ...]                     # progressive schedule, run in order
  temperature: float = 0.6
  # Loss (posttrain.grpo): DAPO's asymmetric clip, token-level mean, Dr. GRPO's unscaled
  # advantages selectable, optional dual clip and k3 KL to the reference (off: DAPO).
  clip_low: float = 0.2
  clip_high: float = 0.28
  clip_c: Optional[float] = None
  advantage_scale: str = "group"               # group (GRPO) | none (Dr. GRPO)
  kl_coef: float = 0.0
  updates_per_batch: int = 1                   # mu: passes over each batch of rollouts
  mini_batches: int = 1                        # optimizer updates per pass
  # DAPO's techniques.
  overlong_filter: bool = True                 # no loss on completions cut at max_new_tokens
  overlong_buffer: int = 0                     # > 0: soft overlong penalty over the last N tokens
  overlong_penalty: float = 1.0                # its largest value (subtracted from the reward)
  dynamic_sampling: bool = True                # drop groups whose rewards are all equal...
  max_sample_rounds: int = 3                   # ...and sample more prompts, at most this often
  # Curriculum.
  drop_solved_above: float = 0.875             # a problem solved more often than this leaves
  min_attempts: int = 8                        # ...once it has this many attempts
  drop_format_groups: bool = True              # groups all correct but for format errors
  train_limit: int = 0                         # the first N train problems (0: all): a small
                                               # pool makes problems recur (and drops matter)
  # Held-out evaluation (greedy, sandboxed) into DIR/eval.jsonl.
  eval_every: int = 10                         # RL steps; 0: only at step 0 and the end
  eval_limit: int = 64                         # held-out problems (0: all)
  eval_max_new_tokens: int = 0                 # 0: the first stage's max_new_tokens
  # Rollouts and rewards.
  rollout_slots: int = 32                      # decode rows of the rollout engine
  reward_workers: int = 2                      # parallel sandbox runs
  reward_timeout_s: float = 10.0
  template_file: str = ""
  system_prompt: str = "You are a helpful coding assistant."
  # False: prompts without the problems' "reply with only the code" request, as the LongCoT
  # warmup's traces were asked (a policy that reasons before its code block).
  reply_format: bool = True

  @property
  def total_steps(self) -> int:
    return sum(s.steps for s in self.stages)

  def stage_at(self, step: int) -> Stage:
    """The stage RL step `step` (1-based) belongs to."""
    done = 0
    for stage in self.stages:
      done += stage.steps
      if step <= done:
        return stage
    return self.stages[-1]


def _check(rl: RLConfig, cfg: PretrainConfig) -> None:
  def bad(key, why):
    raise ConfigError(f"config.rl.{key}={getattr(rl, key)!r}: {why}")
  if not rl.problems:
    bad("problems", "give a problem set directory (data/make_problems.py)")
  if not rl.stages:
    bad("stages", "give at least one (steps, max_new_tokens, group_size) stage")
  for i, s in enumerate(rl.stages):
    if s.steps < 1 or s.max_new_tokens < 1 or s.group_size < 2:
      raise ConfigError(f"config.rl.stages[{i}]={tuple(dataclasses.astuple(s))}: steps and "
                        "max_new_tokens must be >= 1 and group_size >= 2")
    if s.max_new_tokens >= cfg.seq_len:
      raise ConfigError(f"config.rl.stages[{i}] max_new_tokens={s.max_new_tokens} leaves no room "
                        f"for a prompt in config.data.seq_len={cfg.seq_len}")
  if not rl.temperature > 0:
    bad("temperature", "must be > 0 (sampling; the held-out evaluation is greedy on its own)")
  if not 0 <= rl.clip_low < 1 or rl.clip_high < 0:
    bad("clip_low", "clip_low must lie in [0, 1) and clip_high be >= 0")
  if rl.clip_c is not None and rl.clip_c <= 1:
    bad("clip_c", "the dual clip must be > 1 (or None)")
  if rl.advantage_scale not in grpo.SCALES:
    bad("advantage_scale", f"not one of {grpo.SCALES}")
  if rl.kl_coef < 0:
    bad("kl_coef", "must be >= 0")
  for k in ("updates_per_batch", "mini_batches", "max_sample_rounds", "rollout_slots",
            "reward_workers"):
    if getattr(rl, k) < 1:
      bad(k, "must be >= 1")
  if not 0 < rl.drop_solved_above <= 1:
    bad("drop_solved_above", "must lie in (0, 1] (1: never drop)")
  if rl.overlong_buffer < 0 or rl.overlong_penalty < 0:
    bad("overlong_buffer", "overlong_buffer and overlong_penalty must be >= 0")
  if rl.train_limit < 0:
    bad("train_limit", "must be >= 0 (0: every train problem)")
  if rl.eval_every < 0 or rl.eval_limit < 0 or rl.eval_max_new_tokens < 0:
    bad("eval_every", "eval_every, eval_limit and eval_max_new_tokens must be >= 0")
  for i, s in enumerate(rl.stages):
    if (cfg.batch_size * s.group_size) % rl.mini_batches:
      raise ConfigError(f"config.rl.mini_batches={rl.mini_batches} does not divide stage {i}'s "
                        f"{cfg.batch_size} prompts x {s.group_size} rollouts")


def config_from_tree(tree: Mapping[str, Any]) -> tuple[PretrainConfig, RLConfig, str]:
  """Validates an RL config tree -> (trainer config, RL config, tokenizer spec).

  config.opt.total_steps is derived: RL steps x updates_per_batch x mini_batches optimizer
  updates (the schedule runs over updates)."""
  base, rl, data = sft_lib.post_training_tree(
      tree, "rl", tuple(f.name for f in dataclasses.fields(RLConfig)))
  try:
    stages = tuple(Stage(*map(int, s)) for s in rl.get("stages") or ())
  except (TypeError, ValueError) as e:
    raise ConfigError(f"config.rl.stages={rl.get('stages')!r}: each stage is (steps, "
                      f"max_new_tokens, group_size) ({e})") from e
  values = {k: v for k, v in rl.items() if k != "stages"}
  try:
    rl_cfg = RLConfig(stages=stages, **values)
  except TypeError as e:
    raise ConfigError(f"config.rl: {e}") from e
  opt = dict(base.get("opt") or {})
  opt["total_steps"] = max(1, rl_cfg.total_steps * rl_cfg.updates_per_batch * rl_cfg.mini_batches)
  cfg = from_tree({**base, "data": data, "opt": opt, "prepare": {}})
  _check(rl_cfg, cfg)
  return cfg, rl_cfg, data["tokenizer"]
