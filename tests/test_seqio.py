"""The benchmarks as seqio Tasks: registration, datasets, postprocessing, sandboxed metrics, CLI.

Importing seqio imports TensorFlow (~10-20 s here), once for this file.
"""

import json
import os
import pathlib
import subprocess
import sys

import pytest

seqio = pytest.importorskip("seqio")

from seedcoder_jax import tokenizer as tokenizer_lib  # noqa: E402
from seedcoder_jax.evaluation import benchmarks  # noqa: E402
from seedcoder_jax.evaluation import harness  # noqa: E402
from seedcoder_jax.evaluation import prompts  # noqa: E402
from seedcoder_jax.evaluation import samples as samples_lib  # noqa: E402
from seedcoder_jax.evaluation import seqio_tasks  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
N = 5  # HumanEval problems run through the sandbox (kept small: each is a sandboxed program)
WRONG = "    return None\n"


@pytest.fixture(scope="module")
def humaneval():
  return benchmarks.load_humaneval()


@pytest.fixture(scope="module")
def spm(tmp_path_factory, humaneval):
  """A small project tokenizer, trained here; the tasks are re-registered with it."""
  path = tmp_path_factory.mktemp("tok") / "t.model"
  tok = tokenizer_lib.train_sentencepiece(
      [p.prompt + (p.canonical_solution or "") for p in humaneval], path, vocab_size=400)
  seqio_tasks.register(vocabulary=f"spm:{path}")
  yield tok
  seqio_tasks.register()  # back to the default vocabulary for whoever runs next


def _examples(name, limit=None):
  ds = seqio.get_mixture_or_task(name).get_dataset(split="test", shuffle=False,
                                                   sequence_length=None)
  return list((ds.take(limit) if limit else ds).as_numpy_iterator())


def _score(name, examples, completions):
  task = seqio.get_mixture_or_task(name)
  targets = [task.postprocess_fn(ex["targets_pretokenized"], example=ex, is_target=True)
             for ex in examples]
  predictions = [task.postprocess_fn(c, example=ex, is_target=False)
                 for ex, c in zip(examples, completions)]
  out = {}
  for fn in task.metric_fns:
    out.update(fn(targets, predictions))
  return out


def test_every_benchmark_is_a_prefixed_task():
  names = set(seqio.TaskRegistry.names())
  for name, bench in benchmarks.BENCHMARKS.items():
    variant = "_psm" if bench.scoring == "exact_match" else "_chat"
    assert {f"seedcoder_{name}", f"seedcoder_{name}{variant}"} <= names, name
    task = seqio.get_mixture_or_task(f"seedcoder_{name}")
    assert list(task.splits) == ["test"]
    assert [type(fn) for fn in task.metric_fns] == [seqio_tasks.PassAtK]
  assert not {n for n in names if n.startswith("seedcoder_")} - set(seqio_tasks.task_names())


def test_registration_is_idempotent_and_leaves_user_tasks_alone(spm):
  before = seqio.get_mixture_or_task("seedcoder_humaneval")
  assert seqio_tasks.register(overwrite=False) == []  # what a second import does
  assert seqio.get_mixture_or_task("seedcoder_humaneval") is before
  user = seqio.Task("user_task", source=seqio.FunctionDataSource(
      lambda split, shuffle_files: None, splits=["test"]), output_features={})
  seqio.TaskRegistry.add_provider("user_task", user)
  try:
    names = seqio_tasks.register(vocabulary=f"spm:{spm.path}")
    assert set(names) == set(seqio_tasks.task_names())
    assert seqio.get_mixture_or_task("user_task") is user
    # A name taken by the user's own task survives the import-time registration.
    seqio.TaskRegistry.remove("seedcoder_humaneval")
    seqio.TaskRegistry.add_provider("seedcoder_humaneval", user)
    assert "seedcoder_humaneval" not in seqio_tasks.register(overwrite=False)
    assert seqio.get_mixture_or_task("seedcoder_humaneval") is user
  finally:
    seqio.TaskRegistry.remove("user_task")
    seqio_tasks.register(vocabulary=f"spm:{spm.path}")


def test_dataset_yields_the_problems_with_the_harness_prompts(spm, humaneval):
  examples = _examples("seedcoder_humaneval")
  assert [ex["task_id"].decode() for ex in examples] == [p.task_id for p in humaneval]
  vocab = seqio.get_mixture_or_task("seedcoder_humaneval").output_features["inputs"].vocabulary
  assert isinstance(vocab, seqio.SentencePieceVocabulary)
  for ex, p in zip(examples[:N], humaneval):
    assert ex["prompt"].decode() == p.prompt and ex["entry_point"].decode() == p.entry_point
    assert [s.decode() for s in ex["stop"]] == list(p.stop)
    assert ex["inputs_pretokenized"].decode() == p.prompt
    assert ex["inputs"].tolist() == spm.encode(p.prompt)
    assert ex["targets"].tolist() == spm.encode(p.canonical_solution)
    assert vocab.decode(ex["inputs"].tolist()) == p.prompt
  chat = _examples("seedcoder_humaneval_chat", 2)
  for ex, p in zip(chat, humaneval):
    assert ex["inputs"].tolist() == prompts.prompt_ids(p, "chat", spm)  # ChatML as special ids
    assert ex["inputs_pretokenized"].decode() == prompts.prompt_text(p, "chat")


def test_fim_task_prompts_and_exact_match(spm):
  from seedcoder_jax import sampling
  fim = benchmarks.load_fim_humaneval()[:N]
  for name, order in (("seedcoder_fim_humaneval", "spm"), ("seedcoder_fim_humaneval_psm", "psm")):
    examples = _examples(name, N)
    for ex, p in zip(examples, fim):
      assert ex["inputs"].tolist() == sampling.fim_prompt(spm, p.prompt, p.suffix, order)
      assert ex["targets_pretokenized"].decode() == p.target
  examples = _examples("seedcoder_fim_humaneval", N)
  # The postprocessor keeps a middle's first line, as the harness does.
  good = [p.target + "\n    more" for p in fim]
  assert _score("seedcoder_fim_humaneval", examples, good) == {"pass@1": 1.0, "exact_match": 1.0}
  bad = ["    pass"] * N
  assert _score("seedcoder_fim_humaneval", examples, bad) == {"pass@1": 0.0, "exact_match": 0.0}


def test_postprocessor_is_the_harness_postprocessing(spm, humaneval):
  p = humaneval[0]
  [ex] = _examples("seedcoder_humaneval", 1)
  raw = p.canonical_solution + "\n\ndef extra():\n  pass\nprint(1)\n"
  task = seqio.get_mixture_or_task("seedcoder_humaneval")
  assert task.postprocess_fn(raw, example=ex, is_target=False) == prompts.postprocess(p, raw)
  assert task.postprocess_fn(b"", example=ex, is_target=True) == p.task_id
  [ex] = _examples("seedcoder_humaneval_chat", 1)
  chat = "def has_close_elements(numbers, threshold):\n    return False\nprint(3)\n```\ntext"
  out = seqio.get_mixture_or_task("seedcoder_humaneval_chat").postprocess_fn(
      chat, example=ex, is_target=False)
  assert out == prompts.postprocess(p, chat, "chat") and "print" not in out


def test_metric_fns_run_the_sandbox(spm, humaneval):
  examples = _examples("seedcoder_humaneval", N)
  canonical = [p.canonical_solution for p in humaneval[:N]]
  assert _score("seedcoder_humaneval", examples, canonical) == {"pass@1": 1.0}
  assert _score("seedcoder_humaneval", examples, [WRONG] * N) == {"pass@1": 0.0}
  # Two samples per problem (one right, one wrong): pass@1 = 0.5, pass@2 = 1.
  metric = seqio_tasks.pass_at_k_metric(seqio.get_mixture_or_task("seedcoder_humaneval"))
  metric = seqio_tasks.PassAtK(metric.benchmark, ks=(1, 2))
  ids = [ex["task_id"] for ex in examples]
  assert metric(ids + ids, canonical + [WRONG] * N) == {"pass@1": 0.5, "pass@2": 1.0}
  # An early exit is no pass here either (the harness's verdict).
  assert metric(ids[:1], ["    import sys; sys.exit(0)\n"]) == {"pass@1": 0.0}


def test_seqios_own_evaluator_scores_a_task(spm, humaneval):
  """seqio.Evaluator end to end: a "model" that answers the first prompt with its canonical
  solution and the others with `return None` (padded token rows, as a model's output is)."""
  answers = {tuple(spm.encode(p.prompt)): spm.encode(p.canonical_solution if i == 0 else WRONG)
             for i, p in enumerate(humaneval[:3])}

  def predict_fn(ds):
    out = [(i, answers[tuple(t for t in ex["encoder_input_tokens"].tolist() if t)])
           for i, ex in ds.as_numpy_iterator()]
    width = max(len(t) for _, t in out)
    return [(i, t + [spm.special_ids["pad"]] * (width - len(t))) for i, t in out]

  evaluator = seqio.Evaluator(mixture_or_task_name="seedcoder_humaneval",
                              feature_converter=seqio.EncDecFeatureConverter(pack=False),
                              eval_split="test", num_examples=3)
  metrics, _ = evaluator.evaluate(compute_metrics=True, predict_fn=predict_fn, score_fn=None)
  assert metrics.result() == {"seedcoder_humaneval": {"pass@1": pytest.approx(1 / 3)}}


def test_evaluate_samples_writes_the_harness_report(spm, humaneval, tmp_path):
  rows = [{"task_id": p.task_id, "completion": p.canonical_solution} for p in humaneval[:3]]
  rows[1]["completion"] = WRONG
  rows.append({"task_id": "HumanEval/0", "completion": humaneval[0].canonical_solution +
               "\ndef helper():\n    pass\n"})  # cut by the postprocessor at "\ndef"
  path = tmp_path / "s.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "not json\n")
  rep = seqio_tasks.evaluate_samples("seedcoder_humaneval", path, tmp_path / "r.json", limit=4)
  assert rep["benchmark"] == "humaneval" and rep["seqio_task"] == "seedcoder_humaneval"
  assert rep["num_problems"] == 4 and rep["missing"] == ["HumanEval/3"]
  assert rep["pass_at_k"] == {"pass@1": pytest.approx((1 + 0 + 1 + 0) / 4)}
  assert rep["seqio_metrics"] == rep["pass_at_k"] and rep["postprocess_changed"] == 1
  assert rep["malformed"]["by_reason"] == {"invalid_json": 1}
  assert json.loads((tmp_path / "r.json").read_text())["pass_at_k"] == rep["pass_at_k"]
  assert (tmp_path / "r.md").read_text().startswith("# humaneval")
  # The registry path scores the same samples the same way.
  direct = harness.score("humaneval", humaneval[:4], samples_lib.read_samples(
      path, [p.task_id for p in humaneval[:4]]))
  assert direct["pass_at_k"] == rep["pass_at_k"]
  assert [r["c"] for r in direct["per_problem"]] == [r["c"] for r in rep["per_problem"]]


def test_a_checkpoints_own_tokenizer_as_the_vocabulary(humaneval):
  """Tasks registered under another prefix with SmolLM2's GGUF vocabulary (ChatML as its ids)."""
  names = seqio_tasks.register(vocabulary="gguf:smollm2", prefix="smol_")
  try:
    tok = tokenizer_lib.load("gguf:smollm2")
    task = seqio.get_mixture_or_task("smol_humaneval_chat")
    vocab = task.output_features["inputs"].vocabulary
    assert isinstance(vocab, seqio_tasks.TokenizerVocabulary) and vocab.eos_id is not None
    [ex] = _examples("smol_humaneval_chat", 1)
    assert ex["inputs"].tolist() == prompts.prompt_ids(humaneval[0], "chat", tok)
    [ex] = _examples("smol_humaneval", 1)
    assert vocab.decode(ex["inputs"].tolist()) == humaneval[0].prompt
    assert seqio.get_mixture_or_task("seedcoder_humaneval") is not task
  finally:
    for name in names:
      seqio.TaskRegistry.remove(name)


def test_vocabulary_errors_are_clear(tmp_path):
  missing = tmp_path / "none.model"
  with pytest.raises(tokenizer_lib.TokenizerError, match="data/train_tokenizer.py"):
    seqio_tasks.project_tokenizer(seqio.SentencePieceVocabulary(str(missing)))
  with pytest.raises(ValueError, match="spm:PATH"):
    seqio_tasks.make_vocabulary("no-colon")
  passthrough = seqio.PassThroughVocabulary(size=10)
  with pytest.raises(ValueError, match="special ids"):
    seqio_tasks.tokenize(None, {"inputs": seqio.Feature(passthrough)}, benchmark="humaneval",
                         style="chat", fim_order="spm")


def test_registry_path_does_not_import_tensorflow(tmp_path):
  fim = benchmarks.load_fim_humaneval()[:2]
  path = tmp_path / "s.jsonl"
  path.write_text("".join(json.dumps({"task_id": p.task_id, "completion": p.target}) + "\n"
                          for p in fim))
  # eval/run.py as __main__ in one process, then which heavy modules that process holds.
  code = (f"import json, runpy, sys\n"
          f"sys.argv = ['run.py', '--benchmark=fim_humaneval', '--samples={path}',\n"
          f"            '--output={tmp_path / 'o.json'}', '--limit=2']\n"
          f"try:\n"
          f"  runpy.run_path({str(REPO / 'eval' / 'run.py')!r}, run_name='__main__')\n"
          f"except SystemExit as e:\n"
          f"  assert not e.code, e.code\n"
          f"print(json.dumps([m for m in ('tensorflow', 'seqio') if m in sys.modules]))\n")
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert json.loads(proc.stdout.strip().splitlines()[-1]) == []
  assert json.loads((tmp_path / "o.json").read_text())["exact_match"] == 1.0


@pytest.mark.slow
def test_cli_scores_through_a_seqio_task(tmp_path, humaneval, spm):
  path = tmp_path / "s.jsonl"
  path.write_text(json.dumps({"task_id": "HumanEval/0", "completion":
                              humaneval[0].canonical_solution}) + "\n")
  out = tmp_path / "o.json"
  cmd = [sys.executable, str(REPO / "eval" / "run.py"), "--benchmark=seqio:seedcoder_humaneval",
         f"--samples={path}", f"--output={out}", "--limit=2"]
  env = {**os.environ, seqio_tasks.VOCABULARY_ENV: f"spm:{spm.path}"}
  proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
  assert proc.returncode == 0, proc.stderr[-2000:]
  summary = json.loads(proc.stdout.strip().splitlines()[-1])
  assert summary["pass_at_k"] == {"pass@1": 0.5} and summary["missing"] == ["HumanEval/1"]
  assert json.loads(out.read_text())["seqio_task"] == "seedcoder_humaneval"
  bad = subprocess.run(cmd[:2] + ["--benchmark=seqio:seedcoder_nope", f"--samples={path}",
                                  f"--output={out}"], capture_output=True, text=True,
                       timeout=300, env=env)
  assert bad.returncode != 0 and "unknown seqio task 'seedcoder_nope'" in bad.stderr
  # Flags the task fixes (or that only generation uses) are refused, not silently ignored.
  bad = subprocess.run(cmd + ["--prompt_style=chat"], capture_output=True, text=True, timeout=300,
                       env=env)
  assert bad.returncode != 0 and "--prompt_style: not for --benchmark=seqio:TASK" in bad.stderr
