"""Curation stages 6 and 9: repository-level records and decontamination against every benchmark."""

import pathlib
import sysconfig

import pytest

from seedcoder_jax.curation import decontam, records, repo_records

STDLIB = pathlib.Path(sysconfig.get_paths()["stdlib"])


def _rec(repo, path, text, score=7.0, language="python"):
  return records.make_record(kind="file", text=text, repo=repo, path=path, language=language,
                             score=score)


@pytest.fixture(scope="module")
def index():
  return decontam.benchmark_index(decontam.DecontamConfig())


def test_humaneval_solution_planted_in_a_file(index):
  tasks = decontam.benchmark_texts("humaneval")
  assert len(tasks) == 164
  sol = tasks["HumanEval/12"]  # longest(strings) -> Optional[str]
  host = (STDLIB / "json" / "tool.py").read_text()
  planted = _rec("proj", "util.py", host + "\n\n" + sol.replace("    ", "\t"))  # reindented copy
  clean = _rec("proj", "tool.py", host)
  out, match = decontam.check_record(planted, index, decontam.DecontamConfig())
  # FIM-HumanEval masks a line of the same solutions, MultiPL-E translates the same docstrings:
  # every benchmark's task 12 is named, and no other task.
  ids = set(out["detail"].split(","))
  assert out["reason"] == "benchmark_overlap" and {"FIM-HumanEval/12", "HumanEval/12"} <= ids
  assert ids <= {"FIM-HumanEval/12", "HumanEval/12", "HumanEval_12_longest"}
  assert match["task_ids"] == sorted(ids) and match["ngrams"]["HumanEval/12"] > 10
  assert decontam.check_record(clean, index, decontam.DecontamConfig()) == (clean, None)
  # Nine words of a solution are not a 10-gram match.
  words = " ".join(decontam._WORD.findall(sol)[20:29])
  assert decontam.find_matches(words, index, 10) == {}
  assert decontam.find_matches(" ".join(decontam._WORD.findall(sol)[20:30]), index, 10)


def test_generic_ngrams_ignored(index):
  """HumanEval/78's digit list "0, 1, ..., 9" is no evidence of contamination; its code is."""
  assert decontam.find_matches("table = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]\n", index, 10) == {}
  sol = decontam.benchmark_texts("humaneval")["HumanEval/78"]
  assert "HumanEval/78" in decontam.find_matches(sol, index, 10)


def test_decontam_real_stdlib_files_clean(index):
  for name in ("decoder.py", "encoder.py", "scanner.py"):
    text = (STDLIB / "json" / name).read_text()
    assert decontam.find_matches(text, index, 10) == {}, name


def test_every_evaluated_benchmark_is_covered(index):
  """The default and the curation config cover every benchmark eval/run.py scores."""
  from seedcoder_jax import config_files
  from seedcoder_jax.evaluation import benchmarks
  assert set(decontam.DecontamConfig().benchmarks) == set(benchmarks.BENCHMARKS)
  tiny = config_files.load("curation:tiny")
  assert set(tiny.decontam.benchmarks) == set(benchmarks.BENCHMARKS)
  if not (benchmarks.ppm_fse_dir() / "mbpp-py-reworded.json").is_file():
    pytest.skip("MultiPL-E data missing: run `make eval-data`")
  host = (STDLIB / "json" / "tool.py").read_text()
  # An MBPP problem's tests, and a C++ translation of a HumanEval problem, copied into files.
  mbpp = decontam.benchmark_texts("multipl_e_mbpp_py")["mbpp_464_check_value"]
  tests = mbpp[mbpp.index("def check("):]
  assert list(decontam.find_matches(host + tests, index, 10)) == ["mbpp_464_check_value"]
  cpp = decontam.benchmark_texts("multipl_e_cpp")["HumanEval_56_correct_bracketing"]
  assert "HumanEval_56_correct_bracketing" in decontam.find_matches(cpp, index, 10)


def test_bad_decontam_config():
  with pytest.raises(decontam.DecontamError, match="mbpp"):
    decontam.DecontamConfig(benchmarks=("humaneval", "mbpp"))


def test_repo_record_dependency_order_and_selection():
  files = [
      _rec("pkg", "pkg/app.py", "from pkg import models\nfrom pkg.util import helper\n\nhelper()\n"),
      _rec("pkg", "pkg/util.py", "def helper():\n  return 1\n"),
      _rec("pkg", "pkg/models.py", "from .util import helper\n\nclass M:\n  pass\n"),
      _rec("pkg", "README.md", "# pkg\n", language="markdown"),
  ]
  cfg = repo_records.RepoConfig(min_mean_score=5.0)
  rec, why = repo_records.build_repo_record("pkg", files, cfg)
  assert why == "selected" and rec["kind"] == "repo" and rec["id"] == "repo:pkg"
  order = rec["files"]
  assert order.index("pkg/util.py") < order.index("pkg/models.py") < order.index("pkg/app.py")
  assert rec["language"] == "python" and rec["score"] == 7.0 and rec["num_files"] == 4
  assert rec["text"].startswith(order[0] + "\n")
  for f in files:
    assert f"{f['path']}\n{f['text']}" in rec["text"]
  # Same seed -> same record, whatever the input order.
  assert repo_records.build_repo_record("pkg", files[::-1], cfg)[0] == rec
  low = [{**f, "score": 2.0} for f in files]
  assert repo_records.build_repo_record("pkg", low, cfg) == (None, "low_score")
  assert repo_records.build_repo_record("pkg", files[:1], cfg) == (None, "too_few_files")


def test_repo_random_order_seeded():
  files = [_rec("c", f"src/f{i}.c", f"int f{i}(void) {{ return {i}; }}\n", language="c")
           for i in range(8)]
  orders = {tuple(repo_records.build_repo_record("c", files, repo_records.RepoConfig(seed=s))[0]["files"])
            for s in range(4)}
  assert len(orders) > 1  # the seed matters
  a = repo_records.build_repo_record("c", files, repo_records.RepoConfig(seed=1))[0]
  assert a == repo_records.build_repo_record("c", files, repo_records.RepoConfig(seed=1))[0]


def test_repo_selection_by_percentile():
  cfg = repo_records.RepoConfig(min_mean_score=1.0, select_percentile=50.0)
  assert repo_records.mean_threshold([2.0, 3.0, 4.0, 9.0], cfg) == 3.5
  assert repo_records.mean_threshold([0.2, 0.4], cfg) == 1.0  # the absolute floor still holds
  assert repo_records.mean_threshold([2.0, 3.0], repo_records.RepoConfig(min_mean_score=1.0)) == 1.0
  files = [_rec("r", f"m{i}.py", f"x{i} = {i}\n", score=3.0) for i in range(3)]
  assert repo_records.build_repo_record("r", files, cfg, threshold=3.5) == (None, "low_score")
  assert repo_records.build_repo_record("r", files, cfg, threshold=3.0)[1] == "selected"
  with pytest.raises(ValueError, match="select_percentile"):
    repo_records.RepoConfig(select_percentile=100.0)
