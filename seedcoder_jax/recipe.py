"""The recipe: every stage in order, each in its own folder under the workdir.

A stage is a function (options: dict, stage_dir: Path, workdir: Path) -> summary dict. It is
skipped when its `DONE.json` exists (written last, so a killed stage simply runs again), which
makes `launch/recipe.py` resumable. Stages read earlier stages' outputs by path under the workdir.
Later issues add curation, pretraining, post-training and evaluation stages to STAGES.
"""

from __future__ import annotations

import json
import pathlib
import time
from typing import Callable

import jax
import numpy as np

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


def corpus(options: dict, stage_dir: pathlib.Path, workdir: pathlib.Path) -> dict:
  """A pre-scored corpus of real code (default: this interpreter's standard library).

  Until the curation stage exists, scores come from source_files' documented heuristic."""
  from seedcoder_jax.input import corpus as corpus_lib
  from seedcoder_jax.input import source_files

  src = options.get("source_dir") or source_files.default_source_dir()
  meta = corpus_lib.write_corpus(
      source_files.iter_source_records(src, max_bytes=options.get("max_bytes", 1_000_000)),
      stage_dir / "corpus", num_shards=options.get("num_shards", 4), overwrite=True,
      metadata={"source_dir": str(src), "score": source_files.SCORE_DESCRIPTION,
                "score_kind": "heuristic"})
  print(f"[corpus] {meta['num_records']} files from {meta['num_repos']} repositories of {src}")
  return {"corpus": str(stage_dir / "corpus"), "records": meta["num_records"],
          "repositories": meta["num_repos"], "languages": meta["languages"]}


def tokenizer(options: dict, stage_dir: pathlib.Path, workdir: pathlib.Path) -> dict:
  """A SentencePiece BPE model for code, trained on a sample of the corpus stage's output."""
  from seedcoder_jax import tokenizer as tokenizer_lib
  from seedcoder_jax.input import source_files

  texts = source_files.sample_texts(workdir / "corpus" / "corpus", max_chars=options["max_chars"],
                                    seed=options.get("seed", 0))
  tok = tokenizer_lib.train_sentencepiece(texts, stage_dir / "tokenizer.model",
                                          vocab_size=options["vocab_size"])
  print(f"[tokenizer] {tok.spec}: {tok.vocab_size} pieces")
  return {"spec": tok.spec, "vocab_size": tok.vocab_size}


def _pretrain(options: dict, stage_dir: pathlib.Path, workdir: pathlib.Path, init_from: str = ""):
  from seedcoder_jax.train import trainer

  config = json.loads(json.dumps(options["config"]))  # a deep copy of the pretrain config
  # Every source of the variant (e.g. phase 2's file-level and repo-level views) reads the one
  # corpus this recipe built.
  config["data"]["corpora"] = [str(workdir / "corpus" / "corpus")] * len(config["data"]["corpora"])
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


STAGES: dict[str, Stage] = {
    "import_base": import_base,
    "model_bench": model_bench,
    "corpus": corpus,
    "tokenizer": tokenizer,
    "pretrain": pretrain,
    "pretrain_phase2": pretrain_phase2,
}


def run(stages: list[str], options: dict[str, dict], workdir) -> dict:
  """Runs the named stages in order, skipping finished ones; returns {stage: summary}."""
  unknown = [s for s in stages if s not in STAGES]
  if unknown:
    raise ValueError(f"unknown recipe stages {unknown}; known: {list(STAGES)}")
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
