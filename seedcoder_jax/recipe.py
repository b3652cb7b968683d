"""The recipe: every stage in order, each in its own folder under the workdir.

A stage is a function (options: dict, stage_dir: Path, workdir: Path) -> summary dict. It is
skipped when its `DONE.json` exists (written last, so a killed stage simply runs again), which
makes `launch/recipe.py` resumable. Stages read earlier stages' outputs by path under the workdir.
Post-training's stages live in recipe_posttrain.
"""

from __future__ import annotations

import json
import pathlib
import time
from typing import Callable

import jax
import numpy as np

from seedcoder_jax import recipe_posttrain

DONE = "DONE.json"
Stage = Callable[[dict, pathlib.Path, pathlib.Path], dict]


def import_base(options: dict, stage_dir: pathlib.Path, workdir: pathlib.Path) -> dict:
  """Real weights in: a GGUF checkpoint -> Hugging Face safetensors -> reloaded -> greedy code."""
  from seedcoder_jax.interop import gguf, hf
  from seedcoder_jax.sampling import reference

  path = options.get("gguf") or gguf.smollm2_path()
  info = gguf.load_tokenizer_info(path)
  cfg, params = gguf.load(path)
  hf_dir = stage_dir / "hf"
  hf.save(hf_dir, cfg, params, dtype=options.get("dtype", "float32"), overwrite=True)
  cfg, params = hf.load(hf_dir)
  prompt = options["prompt"]
  ids = info.tokenizer.encode(prompt).ids
  new = reference.greedy_continue(cfg, params, ids, options["max_new_tokens"], eos_id=info.eos_id)
  text = info.tokenizer.decode(new)
  print(f"[import_base] {path.name if hasattr(path, 'name') else path}: {cfg.n_params / 1e6:.1f}M "
        f"parameters -> {hf_dir}\n--- prompt + greedy continuation ---\n{prompt}{text}\n---")
  return {"source": str(path), "hf_dir": str(hf_dir), "n_params": cfg.n_params,
          "prompt": prompt, "continuation": text, "new_tokens": new}


def model_bench(options: dict, stage_dir: pathlib.Path, workdir: pathlib.Path) -> dict:
  """Forward+backward throughput and MFU of a preset on this machine (bench/forward_backward.py)."""
  import jax.numpy as jnp
  from seedcoder_jax import model, perf
  from seedcoder_jax.train import losses

  cfg = model.preset(options["preset"], compute_dtype=options.get("compute_dtype", "float32"))
  b, t = options["batch_size"], options["seq_len"]
  params = model.init_params(cfg)
  tokens = jax.random.randint(jax.random.key(0), (b, t + 1), 0, cfg.vocab_size)

  def loss(p, tok):
    nll, _, n = losses.cross_entropy(model.forward(cfg, p, tok[:, :-1]), tok[:, 1:], jnp.ones((b, t)))
    return nll / n

  seconds = perf.time_fn(jax.jit(jax.value_and_grad(loss)), params, tokens)
  peak, source = perf.peak_flops(cfg.compute_dtype)
  tokens_per_s = b * t / seconds
  result = {**cfg.hf_names(), "batch_size": b, "seq_len": t, "tokens_per_s": round(tokens_per_s, 1),
            "mfu": round(perf.mfu(cfg.flops_per_token(t), tokens_per_s, peak), 4),
            "peak_source": source, "machine": perf.machine()}
  print(f"[model_bench] {json.dumps(result)}")
  return result


def curate(options: dict, stage_dir: pathlib.Path, workdir: pathlib.Path) -> dict:
  """Model-centric curation on Apache Beam (configs/curation.py's variant) -> pre-scored corpora.

  Writes STAGE/corpus (files and web pages: what phase 1 trains on), STAGE/commit_corpus (commit
  records, phase 2 only, as in the paper), STAGE/repo_corpus, stats.json and report.html."""
  from seedcoder_jax import config_files
  from seedcoder_jax.curation import pipeline

  config = config_files.load(f"curation:{options.get('variant', 'tiny')}")
  _override(config, options.get("overrides") or {})
  stats = pipeline.run(config, str(stage_dir))
  print(f"[curate] {stats['input']} inputs -> {stats['kept']} kept; "
        f"{sum(stats['rejected'].values())} rejected by reason: {json.dumps(stats['rejected'])}")
  return {"input": stats["input"], "kept": stats["kept"], "rejected": stats["rejected"],
          "kept_by_kind": stats["kept_by_kind"], "score_source": stats["score_source"],
          "outputs": stats["outputs"]}


def _override(config, changes: dict, where: str = "") -> None:
  """Nested `changes` into a ConfigDict in place; a key the config lacks is an error."""
  for key, value in changes.items():
    if key not in config:
      raise KeyError(f"recipe override {where}{key}: the config has no such key")
    if isinstance(value, dict) and hasattr(config[key], "items"):
      _override(config[key], value, f"{where}{key}.")
    else:
      config[key] = value


def tokenizer(options: dict, stage_dir: pathlib.Path, workdir: pathlib.Path) -> dict:
  """A SentencePiece BPE model for code, trained on a sample of the corpus stage's output."""
  from seedcoder_jax import tokenizer as tokenizer_lib
  from seedcoder_jax.input import source_files

  texts = source_files.sample_texts(workdir / "curate" / "corpus", max_chars=options["max_chars"],
                                    seed=options.get("seed", 0))
  tok = tokenizer_lib.train_sentencepiece(texts, stage_dir / "tokenizer.model",
                                          vocab_size=options["vocab_size"])
  print(f"[tokenizer] {tok.spec}: {tok.vocab_size} pieces")
  return {"spec": tok.spec, "vocab_size": tok.vocab_size}


def _pretrain(options: dict, stage_dir: pathlib.Path, workdir: pathlib.Path, init_from: str = ""):
  from seedcoder_jax.train import trainer

  config = json.loads(json.dumps(options["config"]))  # a deep copy of the pretrain config
  # The sources are the curation stage's corpora, named relative to the workdir.
  config["data"].update(options.get("data", {}))
  config["data"]["corpora"] = [str(workdir / c) for c in options["corpora"]]
  config["data"]["tokenizer"] = json.loads((workdir / "tokenizer" / DONE).read_text())["spec"]
  if init_from:
    config["init"] = {"kind": "workdir", "path": str(workdir / init_from / "run")}
  summary = trainer.run(config, stage_dir / "run")
  records = [json.loads(line) for line in (stage_dir / "run" / "metrics.jsonl").open()]
  losses = [r["loss"] for r in records if "loss" in r]  # eval lines carry eval_loss only
  print(f"[{stage_dir.name}] loss {losses[0]:.3f} -> {losses[-1]:.3f} over {len(losses)} logged "
        f"steps; eval loss {summary.get('eval_loss')}")
  return {"first_loss": losses[0], "last_loss": losses[-1],
          **{k: v for k, v in summary.items() if isinstance(v, (int, float, str))}}


def pretrain(options: dict, stage_dir: pathlib.Path, workdir: pathlib.Path) -> dict:
  """Phase 1: file-level pretraining with FIM (configs/pretrain.py's variant)."""
  return _pretrain(options, stage_dir, workdir)


def pretrain_phase2(options: dict, stage_dir: pathlib.Path, workdir: pathlib.Path) -> dict:
  """Phase 2: continued pretraining from phase 1's newest parameters."""
  return _pretrain(options, stage_dir, workdir, init_from="pretrain")


def evaluate(options: dict, stage_dir: pathlib.Path, workdir: pathlib.Path) -> dict:
  """HumanEval pass@1 (greedy, sandboxed) of the imported SmolLM2-135M-Instruct: the baseline that
  every later post-training stage is compared with (`limit` problems on a 2-core demo)."""
  from seedcoder_jax.evaluation import harness

  # The GGUF that import_base read (its tokenizer and special tokens come with it; the HF export
  # holds the weights only).
  source = json.loads((workdir / "import_base" / DONE).read_text())["source"]
  report = harness.evaluate(harness.EvalConfig(
      benchmark=options.get("benchmark", "humaneval"), output=str(stage_dir / "report.json"),
      checkpoint=f"gguf:{source}", prompt_style=options.get("prompt_style", "chat"),
      max_new_tokens=options["max_new_tokens"], limit=options.get("limit") or None,
      batch_size=options.get("batch_size", 16), workers=options.get("workers", 2)))
  summary = {k: report[k] for k in ("benchmark", "num_problems", "pass_at_k", "isolation")
             if k in report}
  print(f"[evaluate] {json.dumps(summary)} (report: {stage_dir / 'report.md'})")
  return summary


def likelihood_eval(options: dict, stage_dir: pathlib.Path, workdir: pathlib.Path) -> dict:
  """Per-token loss of known answers under a trained stage's model (evaluation/likelihood.py):
  benchmarks' canonical solutions after their prompts, and FIM-HumanEval's masked lines after
  infilling prompts in each order; `fim_middle_loss` is the order the model trained on most;
  with `cross_file`, held-out files given their repository's other files (likelihood.cross_file_loss:
  cross_file_loss, cross_file_loss_alone, cross_file_gain)."""
  from seedcoder_jax.evaluation import benchmarks, likelihood
  from seedcoder_jax.sampling import load_model

  model_stage = options.get("model", "pretrain")
  run_dir = workdir / model_stage / "run"
  cfg, params, tok = load_model(f"workdir:{run_dir}")
  trained = json.loads((run_dir / "config.json").read_text())["data"]  # the run's input options
  limit = options.get("limit") or None
  summary = {"model": model_stage}
  for name in options.get("benchmarks", ["humaneval"]):
    problems = benchmarks.get(name).load()[:limit]
    out = likelihood.solution_loss(cfg, params, tok, problems)
    summary[f"{name}_solution_loss"] = out["loss"]
    summary[f"{name}_solution_nats_per_char"] = out["nats_per_char"]
    summary[f"{name}_solution_tokens"] = out["tokens"]
  if options.get("fim", True) and tok.special_ids.get("fim_middle") is not None:
    problems = benchmarks.load_fim_humaneval()[:limit]
    for order in ("spm", "psm"):
      summary[f"fim_middle_loss_{order}"] = likelihood.fim_middle_loss(
          cfg, params, tok, problems, order=order)["loss"]
    own = "spm" if trained.get("fim_spm_fraction", 1.0) >= 0.5 else "psm"
    summary["fim_middle_loss"] = summary[f"fim_middle_loss_{own}"]
    summary["fim_order_trained"] = own
  if options.get("cross_file", False):  # held-out stdlib packages as repositories, rows as trained
    from seedcoder_jax.evaluation import repo_heldout
    out = likelihood.cross_file_loss(cfg, params, tok, repo_heldout.load(),
                                     max_len=trained["seq_len"])
    summary.update({f"cross_file_{k}": out[k] for k in ("loss", "loss_alone", "gain", "tokens",
                                                          "repos")})
  print(f"[likelihood_eval] {json.dumps(summary)}")
  return summary


def web_classifier_eval(options: dict, stage_dir: pathlib.Path, workdir: pathlib.Path) -> dict:
  """The web recall classifier trained on data/web_seeds/ (options: hard_negatives, threshold,
  seed), then its precision, recall and F1 on held-out real pages (curation/web_heldout.py)."""
  from seedcoder_jax.curation import web_heldout

  summary = web_heldout.evaluate(**web_heldout.parse_options(options))
  print(f"[web_classifier_eval] hard_negatives={summary['hard_negatives']} seed={summary['seed']}: "
        f"precision {summary['precision']:.3f} recall {summary['recall']:.3f} f1 "
        f"{summary['f1']:.3f} at {summary['threshold']} ({summary['n_pos']} code pages, "
        f"{summary['n_neg']} licence chunks)")
  return summary


STAGES: dict[str, Stage] = {
    "import_base": import_base,
    "model_bench": model_bench,
    "curate": curate,
    "tokenizer": tokenizer,
    "pretrain": pretrain,
    "pretrain_phase2": pretrain_phase2,
    "evaluate": evaluate,
    "likelihood_eval": likelihood_eval,
    "web_classifier_eval": web_classifier_eval,
}
STAGES.update(recipe_posttrain.STAGES)

# The options each stage reads ({key: the nested keys it reads, or None: not checked below it});
# configs/recipe.py documents them. A stage missing here checks its own (web_classifier_eval,
# reasoning_traces) or takes any.
OPTIONS: dict[str, dict] = {
    "import_base": dict.fromkeys(("gguf", "dtype", "prompt", "max_new_tokens")),
    "model_bench": dict.fromkeys(("preset", "compute_dtype", "batch_size", "seq_len")),
    "curate": dict.fromkeys(("variant", "overrides")),
    "tokenizer": dict.fromkeys(("vocab_size", "max_chars", "seed")),
    "pretrain": dict.fromkeys(("config", "corpora", "data")),
    "pretrain_phase2": dict.fromkeys(("config", "corpora", "data")),
    "evaluate": dict.fromkeys(("benchmark", "prompt_style", "max_new_tokens", "limit",
                               "batch_size", "workers")),
    "likelihood_eval": dict.fromkeys(("model", "limit", "benchmarks", "fim", "cross_file")),
    **recipe_posttrain.OPTIONS,
}


def check_options(stages: list[str], options: dict[str, dict]) -> None:
  """Refuses, before any stage runs, an option a stage does not read (a misspelt key would
  otherwise be ignored and the stage run with its default)."""
  for stage in stages:
    known = OPTIONS.get(stage)
    if known is None:
      continue
    for key, value in (options.get(stage) or {}).items():
      if key not in known:
        raise ValueError(f"recipe option {stage}.{key}: not an option of this stage; known: "
                         f"{sorted(known)}")
      if known[key] is not None and isinstance(value, dict):
        extra = sorted(set(value) - set(known[key]))
        if extra:
          raise ValueError(f"recipe option {stage}.{key}.{extra[0]}: not an option of this "
                           f"stage; known: {sorted(known[key])}")


def run(stages: list[str], options: dict[str, dict], workdir) -> dict:
  """Runs the named stages in order, skipping finished ones; returns {stage: summary}."""
  unknown = [s for s in stages if s not in STAGES]
  if unknown:
    raise ValueError(f"unknown recipe stages {unknown}; known: {list(STAGES)}")
  check_options(stages, options)
  workdir = pathlib.Path(workdir)
  summaries = {}
  for name in stages:
    stage_dir = workdir / name
    done = stage_dir / DONE
    if done.exists():
      print(f"[{name}] done already ({done}); skipping")
      summaries[name] = json.loads(done.read_text())
      continue
    stage_dir.mkdir(parents=True, exist_ok=True)
    start = time.time()
    summary = STAGES[name](options.get(name, {}), stage_dir, workdir)
    summary["seconds"] = round(time.time() - start, 1)
    done.write_text(json.dumps(summary, indent=2, default=_jsonable) + "\n")
    summaries[name] = summary
    print(f"[{name}] finished in {summary['seconds']} s")
  return summaries


def _jsonable(x):
  if isinstance(x, np.generic):
    return x.item()
  return str(x)
