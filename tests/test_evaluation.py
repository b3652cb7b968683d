"""Evaluation harness: benchmarks, pass@k, samples files, FIM scoring, sandboxed execution, CLI."""

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
  # Chat style also stops at the closing code fence.
  text = "    return 1\n```\nThis function returns one."
  assert prompts.postprocess(humaneval[0], text, "chat") == "    return 1"
  assert prompts.postprocess(humaneval[0], text, "base") == text


def test_chat_prompt_uses_chatml_special_ids_and_prefills_the_prompt(humaneval):
  problem = humaneval[2]
  text = prompts.prompt_text(problem, "chat")
  assert text.startswith("<|im_start|>system\n") and text.endswith("```python\n" + problem.prompt)
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
  with pytest.raises(benchmarks.BenchmarkError, match="unknown benchmark"):
    cfg(benchmark="nope").validate()


def test_markdown_report_table_has_the_headline_figures():
  rep = {"benchmark": "humaneval", "num_scored": 164, "samples_per_problem": {"min": 1, "max": 1},
         "pass_at_k": {"pass@1": 0.125}, "missing": ["HumanEval/3"], "malformed": {"count": 2},
         "isolation": {"bwrap": 163}, "generation": {"checkpoint": "gguf:smollm2",
                                                     "prompt_style": "chat", "temperature": 0.0}}
  table = report_lib.markdown_table(rep)
  assert "| pass@1 |" in table.splitlines()[0]
  assert "| humaneval | 164 | 1 | 12.50% | 1 | 2 | bwrap (163) | gguf:smollm2 | chat | 0.0 |" in table


# --- MultiPL-E / MBPP data ---------------------------------------------------------------------


@needs_ppm
def test_multipl_e_and_mbpp_load_from_the_ppm_fse_data():
  cpp, java, mbpp = (benchmarks.get(n).load() for n in ("multipl_e_cpp", "multipl_e_java", "mbpp"))
  assert (len(cpp), len(java), len(mbpp)) == (161, 158, 397)
  add = {p.task_id: p for p in cpp}["HumanEval_53_add"]
  assert add.language == "cpp" and add.stop == ("\n}",) and "long add(long x, long y)" in add.prompt
  assert {p.task_id for p in mbpp} >= {"mbpp_464_check_value"}
  if benchmarks.javatuples_jar() is None:
    assert all("org.javatuples" not in p.prompt for p in java)
    assert sum(p.unsupported is not None for p in java) == 8


def test_missing_ppm_data_names_the_make_target(tmp_path, monkeypatch):
  monkeypatch.setenv(benchmarks.PPM_FSE_ENV, str(tmp_path))
  with pytest.raises(benchmarks.BenchmarkError, match="make eval-data"):
    benchmarks.load_mbpp()
