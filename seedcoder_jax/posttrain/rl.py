"""The RL trainer (`config.trainer = "rl"`): GRPO with DAPO's techniques, rewards from the sandbox.

    python launch/train.py --config=configs/rl.py:demo --workdir=DIR

One JAX program family on one mesh: the rollout engine (sampling.rollout: shared prefill, slot
refill, per-token log-probs at the sampling temperature) decodes with the very parameters the
update step trains; nothing is copied between processes. Each RL step:

1. prompts: the next `batch_size` problems of the curriculum (posttrain.curriculum);
2. rollouts: G samples per prompt at the stage's length (progressive schedule, config.rl.stages);
3. rewards: each reply's code against its tests in the sandbox (posttrain.rl_rewards: sealed
   verdicts, format errors, optional soft overlong penalty, failures counted and skipped);
4. groups: all-equal groups dropped and more prompts sampled (dynamic sampling, capped), groups
   correct but for format errors dropped, groups with a skipped reward dropped; the curriculum
   records every group's passes and drops problems solved above `drop_solved_above`;
5. update: GRPO advantages (posttrain.group_advantages) and the clipped policy loss
   (posttrain.policy_loss: clip-low 0.2 / clip-high 0.28, optional dual clip, token-mean over
   the whole batch via sums, so microbatches and mini-batches do not change it), with the ratio
   against the sampler's own log-probs; no loss on truncated completions (overlong filtering);
   optional k3 KL to the frozen reference; `updates_per_batch` passes of `mini_batches` updates.

Checkpoints (orbax) hold params, optimizer and the curriculum (prompt position, pass counts,
dropped problems); rollout seeds derive from (config.seed, step, round), so a kill -9 and restart
continues the run exactly. Held-out evaluation (greedy, sandboxed) runs at step 0, every
`eval_every` steps and at the end, appending {"step", "split": "heldout", "pass_rate", "n"} to
DIR/eval.jsonl. metrics.jsonl/TensorBoard get reward and pass statistics, clip fractions, lengths,
KL and entropy estimates and the time of each phase.
"""

from __future__ import annotations

import json
import pathlib
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from seedcoder_jax import perf
from seedcoder_jax import sharding as sharding_lib
from seedcoder_jax.posttrain import curriculum as curriculum_lib
from seedcoder_jax.posttrain.dpo_pairs import prompt_messages
from seedcoder_jax.posttrain import grpo
from seedcoder_jax.posttrain import logprobs
from seedcoder_jax.posttrain import problem_set
from seedcoder_jax.posttrain import problems as problems_lib
from seedcoder_jax.posttrain import reasoning_traces
from seedcoder_jax.posttrain import rl_rewards
from seedcoder_jax.posttrain.chat_template import ChatRenderer
from seedcoder_jax.posttrain.rl_config import RLConfig, config_from_tree
from seedcoder_jax.sampling.rollout import RolloutEngine
from seedcoder_jax.train import checkpoint as ckpt_lib
from seedcoder_jax.train import metrics as metrics_lib
from seedcoder_jax.train import optimizer as opt_lib
from seedcoder_jax.train import step as step_lib
from seedcoder_jax.train import trainer as trainer_lib
from seedcoder_jax.train.config import ConfigError

EVAL_FILE = "eval.jsonl"


# --- the objective ----------------------------------------------------------------------------------

def rl_objective(rl: RLConfig) -> step_lib.Objective:
  """The clipped policy loss as sums over tokens (the count: unmasked tokens)."""

  def loss_sums(model_cfg, params, batch):
    mask_NT = batch["mask"]
    logp_NT = logprobs.token_logprobs(model_cfg, params, batch["tokens"],
                                      temperature=rl.temperature)
    # num_tokens=1: the loss and the metrics come back as sums over tokens, not means.
    pg, m = grpo.policy_loss(logp_NT, batch["old_logp"], batch["advantages"], mask_NT,
                             clip_low=rl.clip_low, clip_high=rl.clip_high, clip_c=rl.clip_c,
                             agg="token-mean", num_tokens=1.0)
    valid_NT = mask_NT > 0
    sums = dict(m, pg_loss=pg, tokens=jnp.sum(valid_NT.astype(jnp.float32)))
    # The sampled tokens' mean negative log-prob: on-policy, an unbiased estimate of the entropy.
    sums["entropy"] = jax.lax.stop_gradient(jnp.sum(jnp.where(valid_NT, -logp_NT, 0.0)))
    total = pg
    if rl.kl_coef:
      kl = jnp.sum(jnp.where(valid_NT, grpo.kl_k3(logp_NT, batch["ref_logp"]), 0.0))
      sums["kl_ref"] = kl
      total = total + rl.kl_coef * kl
    sums["loss"] = total
    return total, sums

  def batch_shapes(batch_size, seq_len):
    f32 = lambda *s: jax.ShapeDtypeStruct(s, jnp.float32)
    shapes = {"tokens": jax.ShapeDtypeStruct((batch_size, seq_len), jnp.int32),
              "mask": f32(batch_size, seq_len), "old_logp": f32(batch_size, seq_len),
              "advantages": f32(batch_size)}
    if rl.kl_coef:
      shapes["ref_logp"] = f32(batch_size, seq_len)
    return shapes

  return step_lib.Objective("grpo", loss_sums, batch_shapes)


# --- groups -> a batch ------------------------------------------------------------------------------

def classify_group(passed, format_error, skipped, rewards, *, dynamic_sampling: bool,
                   drop_format_groups: bool) -> str:
  """"keep", or why a group is dropped: skipped (a reward failed), format (all correct but for
  format errors), equal (every reward equal, under dynamic sampling)."""
  if skipped.any():
    return "skipped"
  if drop_format_groups and passed.any() and not passed.all() and (passed | format_error).all():
    return "format"
  if dynamic_sampling and rewards.max() == rewards.min():
    return "equal"
  return "keep"


def build_batch(prompts, groups, *, group_size: int, rows: int, seq_len: int,
                advantage_scale: str, overlong_filter: bool) -> tuple[dict, dict]:
  """Arrays of the update from kept groups [(prompt index, rollouts, rewards [G])], padded with
  weight-0 rows up to `rows`. Returns (batch, stats)."""
  tokens = np.zeros((rows, seq_len), np.int32)
  mask = np.zeros((rows, seq_len), np.float32)
  old = np.zeros((rows, seq_len), np.float32)
  adv = np.zeros((rows,), np.float32)
  filtered = 0
  for k, (i, rollouts, rewards) in enumerate(groups):
    a = np.asarray(grpo.group_advantages(jnp.asarray(rewards), group_size, scale=advantage_scale))
    for g, r in enumerate(rollouts):
      row = k * group_size + g
      p = prompts[i]
      n = min(len(r.tokens), seq_len - len(p))
      tokens[row, :len(p)] = p
      tokens[row, len(p):len(p) + n] = r.tokens[:n]
      old[row, len(p):len(p) + n] = r.logprobs[:n]
      adv[row] = a[g]
      if overlong_filter and r.finish_reason == "length":
        filtered += 1
        continue
      mask[row, len(p):len(p) + n] = 1.0
  return ({"tokens": tokens, "mask": mask, "old_logp": old, "advantages": adv},
          {"overlong_filtered": filtered})


def mini_batch_parts(batch: dict, mini_batches: int) -> tuple[list[dict], int]:
  """The batch split into `mini_batches` equal row slices, without the slices that have no
  trainable token (only padding rows of dropped groups, or only completions removed by overlong
  filtering): an update on them would learn nothing yet still move the weights (Adam's momentum)
  and cost a full forward and backward. Returns (slices to update on, how many were left out)."""
  per = len(batch["mask"]) // mini_batches
  parts = [{k: v[mb * per:(mb + 1) * per] for k, v in batch.items()} for mb in range(mini_batches)]
  kept = [p for p in parts if p["mask"].any()]
  return kept, len(parts) - len(kept)


# --- evaluation -------------------------------------------------------------------------------------

def evaluate(engine, params, problem_list, prompts, renderer, rl: RLConfig, max_new: int) -> float:
  """Greedy pass rate on `problem_list` (one rollout each, sandboxed)."""
  groups = engine.rollouts(prompts, group_size=1, max_new_tokens=max_new, temperature=0.0,
                           seed=0, stop_ids=renderer.stop_token_ids, params=params)
  texts = [_text(renderer, g[0].tokens) for g in groups]
  lengths = np.array([len(g[0].tokens) for g in groups])
  r = rl_rewards.compute(problem_list, texts, lengths, max_new_tokens=max_new,
                         workers=rl.reward_workers, timeout_s=rl.reward_timeout_s)
  return float(r.passed.mean())


def _text(renderer, tokens) -> str:
  stops = set(renderer.stop_token_ids)
  return renderer.tokenizer.decode([t for t in tokens if t not in stops])


def _append_eval(workdir: pathlib.Path, step: int, pass_rate: float, n: int) -> None:
  if jax.process_index() != 0:
    return
  with open(workdir / EVAL_FILE, "a", encoding="utf-8") as f:
    f.write(json.dumps({"step": step, "split": "heldout", "pass_rate": pass_rate, "n": n}) + "\n")


def _evaluated_steps(workdir: pathlib.Path) -> set:
  path = workdir / EVAL_FILE
  if not path.is_file():
    return set()
  return {json.loads(line)["step"] for line in path.read_text().splitlines() if line.strip()}


# --- the loop ---------------------------------------------------------------------------------------

def _bucket(n: int, multiple: int = 64) -> int:
  return -(-n // multiple) * multiple


def verify_references(problem_list, rl: RLConfig):
  """(problems whose reference passes its own tests, count of the others): a problem with broken
  tests would give wrong rewards forever."""
  verdicts = problems_lib.check([(p, p.reference) for p in problem_list],
                                workers=rl.reward_workers, timeout_s=rl.reward_timeout_s)
  ok = [p for p, v in zip(problem_list, verdicts) if v.passed]
  return ok, len(problem_list) - len(ok)


def train(raw: dict, workdir) -> dict:
  cfg, rl, tokenizer = config_from_tree(raw)
  workdir = pathlib.Path(workdir).absolute()
  try:
    mesh = sharding_lib.make_mesh(dict(cfg.mesh))
  except sharding_lib.MeshError as e:
    raise ConfigError(f"config.mesh={dict(cfg.mesh)}: {e}") from e
  n_dev = mesh.shape["data"] * mesh.shape["fsdp"]
  for i, s in enumerate(rl.stages):
    rows = cfg.batch_size * s.group_size // rl.mini_batches
    if rows % (n_dev * cfg.grad_accum_steps):
      raise ConfigError(f"stage {i}: {rows} rows per update (config.data.batch_size x group_size /"
                        f" mini_batches) must divide into config.opt.grad_accum_steps="
                        f"{cfg.grad_accum_steps} microbatches over data*fsdp={n_dev} devices")
  if rl.rollout_slots % n_dev:
    raise ConfigError(f"config.rl.rollout_slots={rl.rollout_slots} must be a multiple of "
                      f"data*fsdp={n_dev}")
  bad_lines: dict = {}  # broken problem lines are skipped and counted, not fatal
  try:
    train_set = problem_set.load(rl.problems, "train", skipped=bad_lines)
    heldout = problem_set.load(rl.problems, "heldout", skipped={})
  except (problems_lib.ProblemsError, ValueError) as e:
    raise ConfigError(f"config.rl.problems={rl.problems!r}: {e}") from e
  if rl.eval_limit:
    heldout = heldout[:rl.eval_limit]
  if rl.train_limit:
    train_set = train_set[:rl.train_limit]
  if not train_set:
    raise ConfigError(f"config.rl.problems={rl.problems!r} has no train problems")
  workdir.mkdir(parents=True, exist_ok=True)
  renderer = ChatRenderer(tokenizer, template_file=rl.template_file,
                          system_prompt=rl.system_prompt)

  optimizer = opt_lib.make_optimizer(cfg.opt)
  ckpt = ckpt_lib.Checkpointer(workdir / trainer_lib.CHECKPOINTS, cfg.ckpt)
  # The problems the run trains on: fixed at its start (references checked once), recorded so a
  # resumed run uses exactly the same list.
  chosen_file = workdir / "rl_problems.json"
  skipped_problems = {}
  if chosen_file.is_file():
    chosen = json.loads(chosen_file.read_text())
    by_id = {p.id: p for p in train_set}
    missing = [i for i in chosen["train"] if i not in by_id]
    if missing:
      raise ConfigError(f"{chosen_file} names {len(missing)} problems that config.rl.problems "
                        f"no longer has (e.g. {missing[0]}): use a fresh workdir")
    train_set = [by_id[i] for i in chosen["train"]]
    skipped_problems = chosen["skipped"]
  else:
    train_set, bad = verify_references(train_set, rl)
    heldout, bad_heldout = verify_references(heldout, rl)
    skipped_problems = {"reference_fails_tests": bad, "heldout_reference_fails_tests": bad_heldout,
                        **{f"file_{k}": v for k, v in bad_lines.items()}}
    if jax.process_index() == 0:
      chosen_file.write_text(json.dumps({"train": [p.id for p in train_set],
                                         "skipped": skipped_problems}, indent=1) + "\n")
  curriculum = curriculum_lib.Curriculum([p.id for p in train_set], seed=cfg.seed,
                                         drop_solved_above=rl.drop_solved_above,
                                         min_attempts=rl.min_attempts)
  restored = ckpt.restore_latest(step_lib.abstract_state(cfg.model, optimizer),
                                 step_lib.state_shardings(cfg.model, optimizer, mesh), curriculum)
  if restored is not None:
    state, start, source = restored.state, restored.step, f"checkpoint {ckpt.directory}/{restored.step}"
  else:
    state, source = trainer_lib.initial_state(cfg, optimizer, mesh)
    start = 0
  (workdir / "model_config.json").write_text(json.dumps(cfg.model.to_dict(), indent=2) + "\n")
  (workdir / "config.json").write_text(json.dumps(raw, indent=2, default=str) + "\n")
  end = rl.total_steps if not cfg.stop_after_steps else min(cfg.stop_after_steps, rl.total_steps)

  by_id = {p.id: p for p in train_set}
  messages = prompt_messages if rl.reply_format else reasoning_traces.messages
  prompt_ids = {p.id: renderer.prompt_ids(messages(p)) for p in train_set}
  heldout_prompts = [renderer.prompt_ids(messages(p)) for p in heldout]
  longest = max(len(v) for v in [*prompt_ids.values(), *heldout_prompts])
  eval_new = rl.eval_max_new_tokens or rl.stages[0].max_new_tokens
  max_new_all = max(eval_new, *(s.max_new_tokens for s in rl.stages))
  if longest + max_new_all > cfg.seq_len:
    raise ConfigError(f"config.data.seq_len={cfg.seq_len} is shorter than the longest prompt "
                      f"({longest} tokens) + max_new_tokens ({max_new_all})")
  # The engine's cache: a prompt's power-of-two bucket + the longest completion (rollout.py).
  engine = RolloutEngine(cfg.model, slots=rl.rollout_slots,
                         max_len=(1 << (max(longest, 16) - 1).bit_length()) + max_new_all,
                         mesh=mesh)
  objective = rl_objective(rl)
  step_fn = trainer_lib.jit_guarded_step(cfg, optimizer, mesh, objective)
  ref_params, ref_fn = None, None
  if rl.kl_coef:
    ref_params, _ = trainer_lib.initial_params(cfg, mesh)
    ref_fn = jax.jit(lambda p, t: logprobs.token_logprobs(cfg.model, p, t,
                                                          temperature=rl.temperature))
  peak, _ = perf.peak_flops(cfg.model.compute_dtype)
  writer = metrics_lib.MetricWriter(workdir, initial_step=start, total_steps=end,
                                    progress_bar=cfg.log.progress_bar)
  if jax.process_index() == 0:
    print(f"[rl] {cfg.model.n_params / 1e6:.2f}M parameters, mesh {dict(mesh.shape)}, "
          f"{len(train_set)} train / {len(heldout)} held-out problems (skipped: "
          f"{skipped_problems}), steps {start}->{end}; state from {source}", flush=True)
  summary: dict[str, Any] = {"start_step": start, "source": source,
                             "skipped_problems": skipped_problems}

  if start == 0:  # what the run leaves out, as metrics (TensorBoard) besides the log line
    writer.write(0, {f"problems_skipped/{k}": v for k, v in skipped_problems.items()})

  def run_eval(step):
    if step in _evaluated_steps(workdir) or not heldout:
      return
    rate = evaluate(engine, state.params, heldout, heldout_prompts, renderer, rl, eval_new)
    _append_eval(workdir, step, rate, len(heldout))
    summary.setdefault("eval", {})[step] = rate
    writer.write(step, {"eval_pass_rate": rate}, echo=True)

  with sharding_lib.activate(mesh), ckpt_lib.PreemptionGuard() as preemption:
    if start == 0:
      run_eval(0)
    step = start
    for step in range(start + 1, end + 1):
      stage = rl.stage_at(step)
      g = stage.group_size
      times = {"rollout": 0.0, "reward": 0.0, "update": 0.0}
      kept, counts, sampled = [], {"skipped": 0, "format": 0, "equal": 0}, []
      rollout_tokens, reasons = 0, {}
      rounds = 0
      while len(kept) < cfg.batch_size and rounds < rl.max_sample_rounds:
        want = cfg.batch_size - len(kept) if rl.dynamic_sampling else cfg.batch_size
        pids = curriculum.take(want)
        t0 = time.perf_counter()
        groups = engine.rollouts([prompt_ids[p] for p in pids], group_size=g,
                                 max_new_tokens=stage.max_new_tokens, temperature=rl.temperature,
                                 seed=_seed(cfg.seed, step, rounds),
                                 stop_ids=renderer.stop_token_ids, params=state.params)
        t1 = time.perf_counter()
        flat = [r for grp in groups for r in grp]
        rollout_tokens += sum(len(r.tokens) for r in flat)
        texts = [_text(renderer, r.tokens) for r in flat]
        lengths = np.array([len(r.tokens) for r in flat])
        rw = rl_rewards.compute([by_id[p] for p in pids for _ in range(g)], texts, lengths,
                                max_new_tokens=stage.max_new_tokens,
                                overlong_buffer=rl.overlong_buffer,
                                overlong_penalty_value=rl.overlong_penalty,
                                workers=rl.reward_workers, timeout_s=rl.reward_timeout_s)
        times["rollout"] += t1 - t0
        times["reward"] += time.perf_counter() - t1
        for k, v in rw.reasons.items():
          reasons[k] = reasons.get(k, 0) + v
        for j, pid in enumerate(pids):
          sl = slice(j * g, (j + 1) * g)
          curriculum.record(pid, int((~rw.skipped[sl]).sum()), int(rw.passed[sl].sum()))
          verdict = classify_group(rw.passed[sl], rw.format_error[sl], rw.skipped[sl],
                                   rw.reward[sl], dynamic_sampling=rl.dynamic_sampling,
                                   drop_format_groups=rl.drop_format_groups)
          sampled.append((rw.reward[sl], rw.passed[sl], rw.format_error[sl], groups[j]))
          if verdict == "keep":
            kept.append((pid, groups[j], rw.reward[sl]))
          else:
            counts[verdict] += 1
        rounds += 1
        if not rl.dynamic_sampling:
          break
      kept = kept[:cfg.batch_size]

      # The update: mu passes of mini-batches over the kept groups' rows.
      t0 = time.perf_counter()
      rows = cfg.batch_size * g
      # Rows as long as this batch's longest prompt + completion (a multiple of 64: a few
      # compiled shapes), not the longest possible: most of a padded row would be wasted work.
      need = max([len(prompt_ids[pid]) + len(r.tokens) for pid, grp, _ in kept for r in grp],
                 default=1)
      seq_len = min(cfg.seq_len, _bucket(need))
      local_prompts = {pid: prompt_ids[pid] for pid, _, _ in kept}
      batch, bstats = build_batch(local_prompts, kept, group_size=g, rows=rows, seq_len=seq_len,
                                  advantage_scale=rl.advantage_scale,
                                  overlong_filter=rl.overlong_filter)
      if ref_fn is not None and kept:
        batch["ref_logp"] = np.asarray(jax.device_get(ref_fn(
            ref_params, sharding_lib.place_batch(batch["tokens"], mesh))))
      update_metrics = []
      # No group kept (every one dropped, e.g. all rewards equal after max_sample_rounds): no
      # update this step, rather than an update on padding.
      parts, skipped_updates = mini_batch_parts(batch, rl.mini_batches)
      for _ in range(rl.updates_per_batch if kept else 0):
        for part in parts:
          expected = np.int32(int(jax.device_get(state.step)))
          state, m = step_fn(state, sharding_lib.place_batch(part, mesh), expected)
          m = {k: float(v) for k, v in jax.device_get(m).items()}
          if not metrics_lib.is_finite(m) or not m["applied"]:
            ckpt.close()
            writer.close()
            raise trainer_lib.NonFiniteLossError(
                f"non-finite RL loss at step {step} (loss={m['loss']}, grad_norm="
                f"{m['grad_norm']}); the last checkpoint in {ckpt.directory} is good: lower "
                "opt.peak_lr and rerun to resume")
          update_metrics.append(m)
      times["update"] = time.perf_counter() - t0

      rewards_all = np.concatenate([s[0] for s in sampled])
      passed_all = np.concatenate([s[1] for s in sampled])
      lengths_all = np.array([len(r.tokens) for s in sampled for r in s[3]])
      truncated_all = np.array([r.finish_reason == "length" for s in sampled for r in s[3]])
      zero_std = np.mean([s[0].max() == s[0].min() for s in sampled])
      mean = lambda k: (float(np.mean([m[k] for m in update_metrics])) if update_metrics
                        else 0.0)
      trained = sum(m["tokens"] for m in update_metrics)
      row = {"loss": mean("loss"), "pg_loss": mean("pg_loss"),
             "reward_mean": float(rewards_all.mean()), "reward_std": float(rewards_all.std()),
             "pass_rate": float(passed_all.mean()), "frac_reward_zero_std": float(zero_std),
             "format_error_rate": float(np.concatenate([s[2] for s in sampled]).mean()),
             "clip_frac_low": mean("clip_frac_low"), "clip_frac_high": mean("clip_frac_high"),
             "clip_frac_dual": mean("clip_frac_dual"), "approx_kl": mean("approx_kl"),
             "entropy": mean("entropy"), "grad_norm": mean("grad_norm"),
             "completion_len_mean": float(lengths_all.mean()),
             "completion_len_max": int(lengths_all.max()),
             "clipped_ratio": float(truncated_all.mean()),
             "groups_kept": len(kept), "groups_dropped_equal": counts["equal"],
             "groups_dropped_format": counts["format"], "groups_dropped_skipped": counts["skipped"],
             "sample_rounds": rounds, "pool_size": curriculum.pool_size,
             "overlong_filtered": bstats["overlong_filtered"], "update_tokens": trained,
             "updates": len(update_metrics),
             "updates_skipped_empty": skipped_updates * rl.updates_per_batch if kept else 0,
             "time_rollout": times["rollout"], "time_reward": times["reward"],
             "time_update": times["update"], "group_size": g,
             "max_new_tokens": stage.max_new_tokens, "lr": float(opt_lib.learning_rate_schedule(
                 cfg.opt)(int(jax.device_get(state.step)) - 1)),
             "rollout_tokens": int(rollout_tokens),
             "tokens_per_s": metrics_lib.tokens_per_s(rollout_tokens, times["rollout"]),
             "mfu": perf.mfu(cfg.model.flops_per_token(seq_len),
                             metrics_lib.tokens_per_s(rows * seq_len * rl.updates_per_batch,
                                                      times["update"]), peak)}
      if rl.kl_coef:
        row["kl_ref"] = mean("kl_ref")
      for k, v in reasons.items():
        row[f"reward_skipped/{k}"] = v
      writer.advance(step)
      writer.write(step, row, echo=step % (cfg.log.every_steps * 10) == 0 or step == end)
      summary["last"] = row
      if ckpt.due(step):
        ckpt.save(step, state, curriculum)
      if rl.eval_every and step % rl.eval_every == 0:
        run_eval(step)
      if preemption.reached(step):
        print(f"[rl] preemption (SIGTERM) at step {step}: saving and exiting", flush=True)
        summary["preempted_at"] = step
        end = step
        break
    if step == end and end == rl.total_steps:
      run_eval(end)
    ckpt.save(end, state, curriculum)
  ckpt.close()
  writer.close()
  summary.update(end_step=end, workdir=str(workdir))
  return summary


def _seed(seed: int, step: int, round_: int) -> int:
  """The rollout seed of (run seed, step, sampling round): deterministic, so a restart resamples
  exactly what an uninterrupted run would have."""
  return int(np.random.SeedSequence([seed, step, round_]).generate_state(1)[0])


def run(config, workdir) -> dict:
  """The trainer boundary (launch/train.py)."""
  raw = config.to_dict() if hasattr(config, "to_dict") else dict(config)
  return train(raw, workdir)
