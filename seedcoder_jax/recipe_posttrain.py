"""The recipe's post-training stages: problems -> instruction data -> SFT -> DPO pairs -> DPO ->
reasoning traces -> LongCoT warmup SFT -> RL, and the held-out measurements before and after each
(seedcoder_jax.recipe runs them in order).

Every stage writes under WORKDIR/<stage>/ and reads earlier stages' outputs by path; its
DONE.json (written last by recipe.run) makes it resumable. The trainers inside resume from their
own checkpoints as well, so a killed stage continues rather than starting over.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib

DONE = "DONE.json"


def _merge(node: dict, changes: dict, where: str = "") -> None:
  """Nested `changes` into the config tree `node` in place; a key the tree lacks is an error."""
  for key, value in changes.items():
    if key not in node:
      raise KeyError(f"recipe override {where}{key}: the trainer config has no such key")
    if isinstance(value, dict) and isinstance(node[key], dict):
      _merge(node[key], value, f"{where}{key}.")
    else:
      node[key] = value


def _trainer_config(spec: str, paths: dict, options: dict) -> dict:
  """The config file's tree with the stage's input paths, then its options' `overrides`."""
  from seedcoder_jax import config_files
  config = config_files.load(spec).to_dict()
  _merge(config, paths)
  _merge(config, json.loads(json.dumps(options.get("overrides") or {})))
  return config


def _last_rows(run_dir: pathlib.Path) -> tuple[dict, dict, dict]:
  """(first train row, last train row, last eval row) of a run's metrics.jsonl."""
  rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").open()]
  train = [r for r in rows if "loss" in r]
  evals = [r for r in rows if any(k.startswith("eval_") for k in r)]
  return (train[0] if train else {}), (train[-1] if train else {}), (evals[-1] if evals else {})


def problems(options: dict, stage_dir: pathlib.Path, workdir: pathlib.Path) -> dict:
  """The verifiable problem set (data/make_problems.py --source=...): train and held-out splits."""
  from seedcoder_jax.posttrain import problem_set
  stats = problem_set.build(stage_dir, source=options.get("source", "synthetic"),
                            limit=options.get("limit"), workers=options.get("workers", 2))
  print(f"[problems] {stats['input']} entries -> {stats['kept']} problems {stats['splits']}")
  return {k: stats[k] for k in ("input", "kept", "rejected", "splits")}


def instruct(options: dict, stage_dir: pathlib.Path, workdir: pathlib.Path) -> dict:
  """SFT conversations from the train problems' reference solutions (data/make_instructions.py
  --source=problems): the verifiable instruction source a 135M model can learn from."""
  from seedcoder_jax.posttrain import instruct_data
  cfg = instruct_data.InstructConfig.from_dict(
      {"source": "problems", "problems": {"dir": str(workdir / "problems")}})
  stats = instruct_data.run(cfg, stage_dir)
  print(f"[instruct] {stats['input']} problems -> {stats['kept']} SFT conversations")
  return {k: stats[k] for k in ("input", "kept", "rejected") if k in stats}


def _heldout(workdir: pathlib.Path, options: dict):
  from seedcoder_jax.posttrain import problem_set
  heldout = problem_set.load(workdir / "problems", "heldout")
  return heldout[:options["heldout_limit"]] if options.get("heldout_limit") else heldout


def _measure(spec: str, workdir: pathlib.Path, options: dict) -> dict:
  """Held-out problem pass rate and HumanEval pass@1 (greedy, sandboxed) of a model spec."""
  from seedcoder_jax.evaluation import harness
  from seedcoder_jax.posttrain import evaluate
  heldout = evaluate.pass_rate(spec, _heldout(workdir, options),
                               max_new_tokens=options["max_new_tokens"])
  out = {"heldout": heldout}
  if options.get("humaneval_limit") is not None:
    stage_out = workdir / "measurements" / spec.replace(":", "_").replace("/", "_")
    stage_out.mkdir(parents=True, exist_ok=True)
    report = harness.evaluate(harness.EvalConfig(
        benchmark="humaneval", output=str(stage_out / "report.json"), checkpoint=spec,
        prompt_style="chat", max_new_tokens=options["max_new_tokens"],
        limit=options["humaneval_limit"] or None, batch_size=32, workers=2))
    out["humaneval"] = {"pass_at_1": report["pass_at_k"]["pass@1"],
                        "num_problems": report["num_problems"]}
  return out


def sft(options: dict, stage_dir: pathlib.Path, workdir: pathlib.Path) -> dict:
  """SFT of SmolLM2-135M-Instruct on the instruct stage's corpus (configs/sft.py:demo), with the
  held-out pass rate and HumanEval before (the packaged model) and after."""
  from seedcoder_jax.posttrain import sft as sft_lib
  before = _measure("gguf:smollm2", workdir, options["measure"])
  config = _trainer_config("sft:demo", {"sft": {"corpora": [str(workdir / "instruct" / "corpus")]}},
                           options)
  summary = sft_lib.run(config, stage_dir / "run")
  first, last, ev = _last_rows(stage_dir / "run")
  after = _measure(f"workdir:{stage_dir / 'run'}", workdir, options["measure"])
  print(f"[sft] loss {first.get('loss'):.3f} -> {last.get('loss'):.3f}, held-out loss "
        f"{summary.get('eval_loss')}; held-out pass rate {before['heldout']['pass_rate']:.3f} -> "
        f"{after['heldout']['pass_rate']:.3f} (n={after['heldout']['n']})")
  return {"before": before, "after": after, "first_loss": first.get("loss"),
          "last_loss": last.get("loss"), "eval_loss": summary.get("eval_loss"),
          "tokens_per_s": last.get("tokens_per_s")}


def dpo_pairs(options: dict, stage_dir: pathlib.Path, workdir: pathlib.Path) -> dict:
  """On-policy pairs from the SFT model: train problems (to learn from) and held-out problems
  (held-out preference accuracy)."""
  from seedcoder_jax.posttrain import dpo_pairs as pairs_lib
  out = {}
  for split, sub, limit in (("train", "train", options["train_limit"]),
                            ("heldout", "heldout", options["heldout_limit"])):
    cfg = pairs_lib.PairsConfig(policy=f"workdir:{workdir / 'sft' / 'run'}",
                                problems=str(workdir / "problems"), split=split, limit=limit,
                                samples_per_prompt=options["samples_per_prompt"],
                                temperature=options["temperature"],
                                max_new_tokens=options["max_new_tokens"])
    stats = pairs_lib.build(cfg, stage_dir / sub)
    out[split] = {k: stats[k] for k in ("input", "kept", "rejected", "pairs", "sample_pass_rate")}
    print(f"[dpo_pairs] {split}: {stats['input']} prompts -> {stats['pairs']} pairs "
          f"(sample pass rate {stats['sample_pass_rate']:.3f}; {stats['rejected']})")
  return out


def dpo(options: dict, stage_dir: pathlib.Path, workdir: pathlib.Path) -> dict:
  """DPO from the SFT model on the pairs (configs/dpo.py:demo); held-out preference accuracy
  and the held-out pass rate after."""
  from seedcoder_jax.posttrain import dpo_train
  pairs = workdir / "dpo_pairs"
  counts = json.loads((pairs / DONE).read_text()) if (pairs / DONE).exists() else {}
  if not (pairs / "train" / "corpus").is_dir():
    raise RuntimeError(f"no DPO pairs in {pairs / 'train'} (every prompt's samples all passed or "
                       f"all failed: {counts.get('train')}); raise samples_per_prompt or the "
                       "temperature of the dpo_pairs stage")
  heldout = pairs / "heldout" / "corpus"
  config = _trainer_config("dpo:demo", {
      "init": {"path": str(workdir / "sft" / "run")},
      "dpo": {"pairs": str(pairs / "train" / "corpus"),
              "heldout_pairs": str(heldout) if heldout.is_dir() else ""}}, options)
  summary = dpo_train.run(config, stage_dir / "run")
  first, last, ev = _last_rows(stage_dir / "run")
  after = _measure(f"workdir:{stage_dir / 'run'}", workdir, options["measure"])
  print(f"[dpo] loss {first.get('loss'):.4f} -> {last.get('loss'):.4f}; held-out preference "
        f"accuracy {ev.get('eval_rewards/accuracies')}; held-out pass rate "
        f"{after['heldout']['pass_rate']:.3f}")
  return {"after": after, "first_loss": first.get("loss"), "last_loss": last.get("loss"),
          "heldout_preference_accuracy": ev.get("eval_rewards/accuracies"),
          "train_accuracy": last.get("rewards/accuracies"), "tokens_per_s": last.get("tokens_per_s"),
          "end_step": summary.get("end_step")}


def _traces_checked(stats: dict, where: pathlib.Path) -> dict:
  """The traces stats, or an error naming the counts when no problem kept a verified trace."""
  if not stats.get("kept"):
    raise RuntimeError(
        f"no reasoning traces in {where}: {stats.get('kept', 0)} of {stats.get('input')} problems "
        f"kept ({stats.get('samples')} samples, pass rate {stats.get('sample_pass_rate')}, "
        f"{stats.get('samples_with_reasoning')} with a <think> block; rejected "
        f"{stats.get('rejected')}); the warmup would train on nothing: raise reasoning_traces."
        "limit, samples_per_prompt or max_new_tokens, or sample from a stronger policy")
  return stats


def reasoning_traces(options: dict, stage_dir: pathlib.Path, workdir: pathlib.Path) -> dict:
  """The LongCoT warmup's data (posttrain/reasoning_traces.py): N replies per train problem that
  reason inside <think>, kept when they pass the problem's tests; STAGE/corpus is a chat corpus.
  Options are TracesConfig's fields (policy default gguf:smollm2; problems: the problems stage)."""
  from seedcoder_jax.posttrain import reasoning_traces as traces_lib
  known = {f.name for f in dataclasses.fields(traces_lib.TracesConfig)} - {"problems"}
  unknown = sorted(set(options) - known)
  if unknown:
    raise KeyError(f"reasoning_traces.{unknown[0]}: not an option of this stage; known: "
                   f"{sorted(known)}")
  cfg = traces_lib.TracesConfig(**{"policy": "gguf:smollm2", **options,
                                   "problems": str(workdir / "problems")})
  stats = traces_lib.build(cfg, stage_dir)
  print(f"[reasoning_traces] {stats['input']} problems x {cfg.samples_per_prompt} samples -> "
        f"{stats['kept']} kept ({stats['records']} traces); rejected {stats['rejected']}; sample "
        f"pass rate {stats['sample_pass_rate']:.3f}, {stats['samples_with_reasoning']} of "
        f"{stats['samples']} samples reasoned")
  _traces_checked(stats, stage_dir)
  return {"kept": stats["kept"], "input": stats["input"], "records": stats["records"],
          "rejected": stats["rejected"], "sample_pass_rate": stats["sample_pass_rate"],
          "samples": stats["samples"], "samples_with_reasoning": stats["samples_with_reasoning"],
          "policy": cfg.policy, "sampling_seconds": stats["seconds"]}


def warmup(options: dict, stage_dir: pathlib.Path, workdir: pathlib.Path) -> dict:
  """The LongCoT warmup: SFT of SmolLM2-135M-Instruct (configs/sft.py:demo) on the verified
  reasoning traces, with their system prompt. No held-out measurement here: the rl stage with
  init "warmup" measures this model (greedy, the same system prompt) at its step 0."""
  from seedcoder_jax.posttrain import reasoning_traces as traces_lib
  from seedcoder_jax.posttrain import sft as sft_lib
  traces = workdir / "reasoning_traces"
  stats_file = traces / traces_lib.STATS_FILE
  if not stats_file.exists():
    raise FileNotFoundError(f"{stats_file} is missing: run the reasoning_traces stage first")
  _traces_checked(json.loads(stats_file.read_text()), traces)
  config = _trainer_config("sft:demo", {"sft": {
      "corpora": [str(traces / traces_lib.CORPUS_DIR)],
      "system_prompt": traces_lib.SYSTEM_PROMPT}}, options)
  summary = sft_lib.run(config, stage_dir / "run")
  first, last, _ = _last_rows(stage_dir / "run")
  print(f"[warmup] loss {first.get('loss'):.3f} -> {last.get('loss'):.3f} over "
        f"{summary.get('end_step')} steps")
  return {"first_loss": first.get("loss"), "last_loss": last.get("loss"),
          "end_step": summary.get("end_step"), "tokens_per_s": last.get("tokens_per_s")}


RL_INITS = ("instruct", "warmup")


def _rl_paths(options: dict, workdir: pathlib.Path) -> dict:
  """The rl config's paths for options["init"]: "instruct" (configs/rl.py:demo's packaged
  SmolLM2-135M-Instruct) or "warmup" (the warmup stage's model, asked with its system prompt)."""
  init = options.get("init", "instruct")
  paths = {"rl": {"problems": str(workdir / "problems")}}
  if init == "instruct":
    return paths
  if init != "warmup":
    raise ValueError(f"rl.init={init!r}: unknown; known: {list(RL_INITS)}")
  from seedcoder_jax.posttrain import reasoning_traces as traces_lib
  done = workdir / "warmup" / DONE
  if not done.exists():
    raise FileNotFoundError(f"rl.init='warmup' needs the warmup stage's model, but {done} is "
                            "missing: put reasoning_traces and warmup before rl in the stages")
  paths["init"] = {"kind": "workdir", "path": str(workdir / "warmup" / "run")}
  paths["rl"]["system_prompt"] = traces_lib.SYSTEM_PROMPT
  paths["rl"]["reply_format"] = False  # asked as the traces were: reason, then the code
  return paths


def rl(options: dict, stage_dir: pathlib.Path, workdir: pathlib.Path) -> dict:
  """A short GRPO run (configs/rl.py:demo with fewer steps) from the packaged SmolLM2 (init
  "instruct") or the LongCoT warmup (init "warmup"): the loop's machinery end to end; the
  45-minute run that measures an improvement is in docs/posttraining.md."""
  from seedcoder_jax.posttrain import rl as rl_lib
  config = _trainer_config("rl:demo", _rl_paths(options, workdir), options)
  summary = rl_lib.run(config, stage_dir / "run")
  evals = [json.loads(line) for line in (stage_dir / "run" / "eval.jsonl").open()]
  rows = [json.loads(line) for line in (stage_dir / "run" / "metrics.jsonl").open()]
  steps = {r["step"]: r.get("rollout_tokens", 0) for r in rows if "reward_mean" in r}
  print(f"[rl] held-out pass rate by step: {[(e['step'], round(e['pass_rate'], 3)) for e in evals]}")
  return {"init": options.get("init", "instruct"), "eval": evals,
          "end_step": summary.get("end_step"),
          "heldout_pass_rate_start": evals[0]["pass_rate"] if evals else None,
          "heldout_pass_rate_end": evals[-1]["pass_rate"] if evals else None,
          "rollout_tokens": int(sum(steps.values())),
          "last": {k: v for k, v in (summary.get("last") or {}).items()
                   if k in ("reward_mean", "pass_rate", "time_rollout", "time_reward",
                            "time_update", "groups_kept")}}


STAGES = {"problems": problems, "instruct": instruct, "sft": sft, "dpo_pairs": dpo_pairs,
          "dpo": dpo, "reasoning_traces": reasoning_traces, "warmup": warmup, "rl": rl}
_MEASURE = {"heldout_limit", "max_new_tokens", "humaneval_limit"}
# The options each stage reads ({key: nested keys or None}); recipe.check_options refuses others.
# reasoning_traces checks its own (TracesConfig's fields).
OPTIONS = {"problems": {"source": None, "limit": None, "workers": None}, "instruct": {},
           "sft": {"measure": _MEASURE, "overrides": None},
           "dpo_pairs": dict.fromkeys(("train_limit", "heldout_limit", "samples_per_prompt",
                                       "temperature", "max_new_tokens")),
           "dpo": {"measure": _MEASURE, "overrides": None}, "warmup": {"overrides": None},
           "rl": {"init": None, "overrides": None}}
