"""The paper's ablations (and two it leaves open), each a base recipe plus named arms.

  python launch/ablate.py --config=configs/ablations.py:fim_order --workdir=workdir/abl_fim_order
  python launch/ablate.py --config=configs/ablations.py:fim_order --workdir=DIR --print_commands

Every ablation starts from configs/recipe.py:tiny's stage options (the 2-core CPU variant: a
~1M-parameter model, 200-step pretraining, minutes per arm). On a cluster each (arm, seed) is one
job (--print_commands prints them), and --collect builds the report from the shared workdir.

  fim_order        FIM in SPM vs PSM order, and FIM rate 0.5 / 0.1 / 0 (Seed-Coder: SPM).
  fim_level        context-level vs document-level FIM (Bavarian et al. 2022; the paper is silent).
  quality_filter   curation with the LLM oracle + scorer vs rules only, then pretraining on each
                   (Seed-Coder's Fig. 6); compared per character (the arms train their own
                   tokenizers on their own corpora, so per-token losses are not comparable).
  commits_repo     continued pretraining with commits and repository-level documents vs files only:
                   single-function likelihood, and a cross-file metric (held-out stdlib packages'
                   files given their repository's other files, evaluation/repo_heldout.py).

  rl_schedule      RL with a progressive schedule (shorter completions and fewer rollouts first)
                   vs the final setting from the start: held-out pass rate and rollout tokens.
  rl_curriculum    RL with the curriculum (solved problems and format-only groups dropped) vs
                   without. Both RL ablations start from the packaged SmolLM2-135M-Instruct on the
                   synthetic problem set; one seed per arm (8 steps cost ~15 min an arm here).

  web_hard_negatives  the web recall classifier trained on data/web_seeds/ with vs without its
                   hard negatives: precision, recall and F1 on held-out real pages (pygame's
                   docs vs licence texts; curation/web_heldout.py). No model, no curation
                   stage: seconds per arm.

Not here yet: RL from Base vs from Instruct. No base model of SmolLM2's family ships here, and the
recipe's LongCoT warmup gets no traces from SmolLM2-135M-Instruct (it never reasons in <think>);
docs/ablations.md.
"""

import copy
import pathlib

import ml_collections

from seedcoder_jax import config_files

_RECIPE = pathlib.Path(__file__).with_name("recipe.py")
SEEDS = [0, 1]

# Per-token loss of HumanEval's canonical solutions (after their prompts) and of FIM-HumanEval's
# masked lines (after infilling prompts): figures a 200-step model moves, unlike pass@1.
_SOLUTION = {"name": "humaneval_solution_loss", "stage": "likelihood_eval",
             "key": "humaneval_solution_loss", "better": "lower"}
_SOLUTION_CHAR = {"name": "humaneval_solution_nats_per_char", "stage": "likelihood_eval",
                  "key": "humaneval_solution_nats_per_char", "better": "lower"}
_FIM = {"name": "fim_middle_loss", "stage": "likelihood_eval", "key": "fim_middle_loss",
        "better": "lower"}
_FIM_SPM = {"name": "fim_middle_loss_spm", "stage": "likelihood_eval",
            "key": "fim_middle_loss_spm", "better": "lower"}


def _base(stages) -> dict:
  options = config_files.load(f"{_RECIPE}:tiny").to_dict()
  base = {s: copy.deepcopy(options[s]) for s in stages if s in options}
  base["likelihood_eval"] = {"model": "pretrain", "benchmarks": ["humaneval"], "fim": True,
                             "limit": None}
  return base


def _pretrain_data(**data) -> dict:
  return {"pretrain": {"config": {"data": data}}}


def fim_order() -> dict:
  stages = ["curate", "tokenizer", "pretrain", "likelihood_eval"]
  return {
      "name": "fim_order",
      "description": "FIM order SPM vs PSM and FIM rate 0.5 / 0.1 / 0: tiny model, same corpus, "
                     "tokenizer, seeds and token budget.",
      "stages": stages, "shared": ["curate", "tokenizer"], "base": _base(stages),
      "arms": {"spm": _pretrain_data(fim_spm_fraction=1.0, fim_rate=0.5),
               "psm": _pretrain_data(fim_spm_fraction=0.0, fim_rate=0.5),
               "spm_rate_01": _pretrain_data(fim_spm_fraction=1.0, fim_rate=0.1),
               "no_fim": _pretrain_data(fim_rate=0.0)},
      "keys": ["pretrain.config.data.fim_spm_fraction", "pretrain.config.data.fim_rate"],
      "seeds": SEEDS, "seed_keys": ["pretrain.config.seed"],
      # Not the pretraining held-out loss: each arm's held-out rows carry its own FIM layout.
      "metrics": [_FIM, _FIM_SPM, _SOLUTION],
      "curves": [{"name": "train_loss", "stage": "pretrain", "y": "loss"}],
      "expect": [
          {"metric": "fim_middle_loss", "better": "spm", "worse": "psm",
           "claim": "SPM infills better than PSM (Seed-Coder, each arm in its own order)"},
          {"metric": "fim_middle_loss", "better": "spm", "worse": "no_fim",
           "claim": "FIM training teaches infilling (sanity)"}],
  }


def fim_level() -> dict:
  a = fim_order()
  a.update(
      name="fim_level",
      description="Context-level FIM (cut into row-sized windows, then FIM per window) vs "
                  "document-level FIM (FIM per file, then cut into rows), FIM rate 0.5, SPM.",
      arms={"context": _pretrain_data(fim_level="context"),
            "document": _pretrain_data(fim_level="document")},
      keys=["pretrain.config.data.fim_level"],
      metrics=[_FIM, _SOLUTION],
      expect=[{"metric": "fim_middle_loss", "better": "context", "worse": "document",
               "claim": "context-level FIM infills better when files outgrow rows"}])
  return a


def quality_filter() -> dict:
  stages = ["curate", "tokenizer", "pretrain", "likelihood_eval"]
  base = _base(stages)
  # The curation variant's own values, spelled out so that the rules-only arm may change them.
  curation = config_files.load(f"curation:{base['curate']['variant']}")
  base["curate"]["overrides"] = {
      "oracle": {"enabled": True},
      "scorer": {"enabled": True, "drop_percentile": float(curation.scorer.drop_percentile)},
      "web": {"thresholds": {k: float(v) for k, v in curation.web.thresholds.items()}}}
  return {
      "name": "quality_filter",
      "description": "Curation with the LLM quality oracle and scorer (files below the score cut "
                     "dropped) vs rules only, same raw input; each arm trains its tokenizer and "
                     "the tiny model on its own corpus with the same token budget.",
      "stages": stages, "shared": [], "per_arm": ["curate", "tokenizer"], "base": base,
      # Rules only: no oracle, no scorer, and no quality cut on heuristic scores either (with the
      # scorer off, curation scores heuristically and would still drop the bottom
      # scorer.drop_percentile % of files and each web category's bottom share by that score).
      "arms": {"llm_filter": {},
               "rules_only": {"curate": {"overrides": {
                   "oracle": {"enabled": False},
                   "scorer": {"enabled": False, "drop_percentile": 0.0},
                   "web": {"thresholds": {"qa": 0.0, "tutorial": 0.0, "documentation": 0.0,
                                          "other": 0.0}}}}}},
      "keys": ["curate.overrides"],
      "seeds": SEEDS, "seed_keys": ["pretrain.config.seed"],
      "metrics": [_SOLUTION_CHAR],
      "curves": [{"name": "train_loss", "stage": "pretrain", "y": "loss"}],
      "expect": [{"metric": "humaneval_solution_nats_per_char", "better": "llm_filter",
                  "worse": "rules_only",
                  "claim": "the LLM quality filter helps (Seed-Coder Fig. 6: HumanEval 38.4 vs "
                           "31.9 at 400B tokens)"}],
  }


def commits_repo() -> dict:
  stages = ["curate", "tokenizer", "pretrain", "pretrain_phase2", "likelihood_eval"]
  base = _base(stages)
  base["likelihood_eval"].update(model="pretrain_phase2", cross_file=True)
  cross_file = {"stage": "likelihood_eval", "key": "cross_file_loss", "better": "lower"}
  return {
      "name": "commits_repo",
      "description": "Continued pretraining (phase 2) on files + repository-level documents + "
                     "commits (the recipe) vs files only, from the same phase-1 model.",
      "stages": stages, "shared": ["curate", "tokenizer", "pretrain"], "base": base,
      "arms": {"files_repo_commits": {},
               "files_only": {"pretrain_phase2": {
                   "corpora": ["curate/corpus"],
                   "data": {"repo_level": [False], "weights": [1.0]}}}},
      "keys": ["pretrain_phase2.corpora", "pretrain_phase2.data.repo_level",
               "pretrain_phase2.data.weights"],
      "seeds": SEEDS, "seed_keys": ["pretrain_phase2.config.seed"],
      "metrics": [{**_SOLUTION}, {**_FIM}, {"name": "cross_file_loss", **cross_file},
                  {**cross_file, "name": "cross_file_gain", "key": "cross_file_gain",
                   "better": "higher"}],
      "curves": [{"name": "train_loss", "stage": "pretrain_phase2", "y": "loss"}],
      "expect": [{"metric": "humaneval_solution_loss", "better": "files_repo_commits",
                  "worse": "files_only",
                  "claim": "commits and repository-level documents help continued pretraining"},
                 {"metric": "cross_file_gain", "better": "files_repo_commits",
                  "worse": "files_only",
                  "claim": "repository-level documents teach the model to use a repository's "
                           "other files (loss of held-out files with vs without them)"}],
  }


def _rl(**rl) -> dict:
  return {"rl": {"overrides": {"rl": rl}}}


def rl_schedule() -> dict:
  stages = ["problems", "rl"]
  base = _base(stages)
  del base["likelihood_eval"]
  # configs/rl.py:demo for 8 steps, all 87 held-out problems at step 0 and at the end.
  base["rl"] = {"overrides": {"seed": 0, "rl": {
      "stages": [[8, 128, 8]], "eval_every": 0, "eval_limit": 0, "drop_solved_above": 0.875,
      "drop_format_groups": True}}}
  pass_end = {"name": "heldout_pass_rate_end", "stage": "rl", "key": "heldout_pass_rate_end",
              "better": "higher"}
  return {
      "name": "rl_schedule",
      "description": "GRPO from SmolLM2-135M-Instruct for 8 steps: a progressive schedule (4 steps "
                     "at 96 tokens x 4 rollouts, then 4 at 128 x 8) vs 128 x 8 from the start.",
      "stages": stages, "shared": ["problems"], "base": base,
      "arms": {"progressive": _rl(stages=[[4, 96, 4], [4, 128, 8]]),
               "final_from_start": _rl(stages=[[8, 128, 8]])},
      "keys": ["rl.overrides.rl.stages"], "seeds": [0], "seed_keys": ["rl.overrides.seed"],
      "metrics": [pass_end,
                  {"name": "rollout_tokens", "stage": "rl", "key": "rollout_tokens",
                   "better": "lower"}],
      "curves": [{"name": "reward_mean", "stage": "rl", "y": "reward_mean", "x": "step"}],
      "expect": [{"metric": "rollout_tokens", "better": "progressive", "worse": "final_from_start",
                  "claim": "the progressive schedule is cheaper early (Seed-Coder)"},
                 {"metric": "heldout_pass_rate_end", "better": "final_from_start",
                  "worse": "progressive",
                  "claim": "the final setting from the start is not clearly better (Seed-Coder: "
                           "'as good'; reproduced here would contradict it)"}],
  }


def rl_curriculum() -> dict:
  a = rl_schedule()
  # A pool of 16 train problems: 8 steps of 4 prompts (more with dynamic sampling) visit each
  # about twice, so a problem the curriculum drops after its first 8 rollouts would have come
  # back. Over all 223 train problems (the first run, docs/ablations.md) none recurred within 8
  # steps, so dropping one changed nothing and the arms could only tie.
  a["base"]["rl"]["overrides"]["rl"]["train_limit"] = 16
  a.update(
      name="rl_curriculum",
      description="GRPO from SmolLM2-135M-Instruct for 8 steps (128 tokens x 8 rollouts) on a "
                  "pool of 16 train problems with the curriculum (problems solved > 87.5% leave "
                  "the pool; format-only groups dropped) vs without.",
      arms={"curriculum": {}, "no_curriculum": _rl(drop_solved_above=1.0,
                                                   drop_format_groups=False)},
      keys=["rl.overrides.rl.drop_solved_above", "rl.overrides.rl.drop_format_groups"],
      expect=[{"metric": "heldout_pass_rate_end", "better": "curriculum",
               "worse": "no_curriculum", "claim": "the curriculum filter helps RL (Seed-Coder)"}])
  return a


def web_hard_negatives() -> dict:
  stages = ["web_classifier_eval"]
  base = _base(stages)
  del base["likelihood_eval"]
  # The web stage's recall threshold (configs/curation.py); the seed initialises the embeddings,
  # the classifier's only randomness (full-batch Adam).
  threshold = float(config_files.load("curation:tiny").web.classifier_threshold)
  base["web_classifier_eval"] = {"hard_negatives": True, "threshold": threshold, "seed": 0}
  metric = lambda name: {"name": name, "stage": "web_classifier_eval", "key": name,
                         "better": "higher"}
  return {
      "name": "web_hard_negatives",
      "description": "The web recall classifier trained on data/web_seeds/ with vs without "
                     "hard_negatives.txt, scored on held-out real pages: pygame's HTML docs "
                     "(code fences removed) vs Debian's licence texts in 3,000-character chunks.",
      "stages": stages, "shared": [], "base": base,
      "arms": {"with_hard_negatives": {},
               "without_hard_negatives": {"web_classifier_eval": {"hard_negatives": False}}},
      "keys": ["web_classifier_eval.hard_negatives"],
      "seeds": [0, 1, 2, 3, 4], "seed_keys": ["web_classifier_eval.seed"],
      "metrics": [metric("precision"), metric("recall"), metric("f1")],
      "expect": [{"metric": "precision", "better": "with_hard_negatives",
                  "worse": "without_hard_negatives",
                  "claim": "hard negatives make the web recall classifier more precise "
                           "(Seed-Coder: hard negatives matter)"},
                 {"metric": "recall", "better": "without_hard_negatives",
                  "worse": "with_hard_negatives",
                  "claim": "the price: fewer code pages recalled at the same threshold (the "
                           "expected trade-off, not a claim of the paper)"}],
  }


ABLATIONS = {f.__name__: f for f in (fim_order, fim_level, quality_filter, commits_repo,
                                     rl_schedule, rl_curriculum, web_hard_negatives)}


def get_config(name: str = "fim_order") -> ml_collections.ConfigDict:
  if name not in ABLATIONS:
    raise ValueError(f"unknown ablation {name!r}; known: {', '.join(ABLATIONS)}")
  return ml_collections.ConfigDict(ABLATIONS[name]())
