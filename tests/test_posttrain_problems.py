"""The verifiable problem set (seedcoder_jax.posttrain.problems / problem_set) on real CodeI/O data.

Every check runs through the sandbox, as rewards will: the first 12 entries of reasoning-gym's
pool are built once per module (a few seconds), planted entries exercise each rejection reason.
"""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from seedcoder_jax.evaluation import benchmarks, execution
from seedcoder_jax.posttrain import problem_set, problems
from seedcoder_jax.sandbox import isolation

BWRAP_OK, BWRAP_WHY = isolation.bwrap_works()
pytestmark = pytest.mark.skipif(not BWRAP_OK, reason=f"bubblewrap cannot run here: {BWRAP_WHY}")
LIMIT = 12


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  out = tmp_path_factory.mktemp("problems")
  stats = problem_set.build(out, limit=LIMIT, seed=0, heldout_fraction=0.3, workers=2)
  return out, stats, problem_set.load(out)


def test_accounting_adds_up_and_matches_the_file(built):
  out, stats, kept = built
  assert stats["input"] == LIMIT
  assert stats["input"] == stats["kept"] + sum(stats["rejected"].values())
  assert set(stats["rejected"]) <= set(problems.REASONS)
  assert stats["kept"] == len(kept) > 0
  assert stats["splits"] == {s: sum(p.split == s for p in kept) for s in problems.SPLITS}
  assert json.loads((out / "stats.json").read_text()) == stats
  assert not list(out.glob("*.tmp"))
  for p in kept:
    assert p.id.startswith("codeio/") and len(p.tests) == 5
    assert "main_solution(" in p.prompt and p.provenance["source"] == problems.SOURCE


def test_references_pass_wrong_and_early_exit_fail(built):
  _, _, kept = built
  wrong = "def main_solution(**kwargs):\n    return None\n"
  early_exit = "import sys\n\ndef main_solution(**kwargs):\n    sys.exit(0)\n"
  jobs = ([(p, p.reference) for p in kept] + [(p, wrong) for p in kept] +
          [(p, early_exit) for p in kept])
  verdicts = problems.check(jobs, workers=2)
  n = len(kept)
  assert [v.passed for v in verdicts[:n]] == [True] * n, [v.detail for v in verdicts[:n]]
  assert all(not v.passed and v.status == "error" for v in verdicts[n:2 * n])
  assert all(not v.passed and v.status == execution.EXITED_EARLY for v in verdicts[2 * n:])


def test_program_layout_is_what_seal_expects(built):
  _, _, kept = built
  head, tests = problems.program(kept[0], "def main_solution():\n    pass")
  assert head.startswith("def main_solution():")
  assert tests.count("\nassert _sc_same(") == len(kept[0].tests)


def test_results_are_compared_as_plain_json_values():
  problem = problems.Problem(
      id="codeio/planted", prompt="", reference="", split="train", provenance={},
      tests=(({"n": 2}, {"pair": [2, 0.1], "1": True}), ({"n": 3}, {"pair": [3, 0.1], "1": True})))
  body = "def main_solution(n):\n    return {}\n"
  completions = {
      "exact": body.format("{'pair': [n, 0.1], '1': True}"),
      "tuple_int_key_last_bits": body.format("{'pair': (n, 0.1 + 1e-12), 1: True}"),
      "number_for_bool": body.format("{'pair': [n, 0.1], '1': 1}"),
      "float_off": body.format("{'pair': [n, 0.1001], '1': True}"),
      "wrong_on_one_test": body.format("{'pair': [2, 0.1], '1': True}"),
      # Objects that claim equality, and a patched json module, are not plain JSON values.
      "always_equal": "class E(dict):\n  __eq__ = lambda s, o: True\n" + body.format("E()"),
      "patched_json": ("import json\njson.loads = json.dumps = lambda *a, **k: 0\n" +
                       body.format("None")),
  }
  verdicts = problems.check([(problem, c) for c in completions.values()], workers=2)
  passed = {name: v.passed for name, v in zip(completions, verdicts)}
  assert passed == {"exact": True, "tuple_int_key_last_bits": True, "number_for_bool": False,
                    "float_off": False, "wrong_on_one_test": False, "always_equal": False,
                    "patched_json": False}


def test_split_is_deterministic_and_disjoint(built, tmp_path):
  _, stats, kept = built
  assert all(p.split == problems.split_of(p.id, 0.3) for p in kept)
  train = {p.id for p in kept if p.split == "train"}
  heldout = {p.id for p in kept if p.split == "heldout"}
  assert not train & heldout and len(train) + len(heldout) == len(kept)
  ids = [f"codeio/{i:016x}" for i in range(2000)]
  share = sum(problems.split_of(i, 0.25) == "heldout" for i in ids) / len(ids)
  assert 0.21 < share < 0.29
  assert {problems.split_of(i, 0.0) for i in ids} == {"train"}
  assert {problems.split_of(i, 1.0) for i in ids} == {"heldout"}
  # The whole set, tests included, is the same on a second build (inputs come from a fixed seed).
  again = problem_set.build(tmp_path, limit=LIMIT, seed=0, heldout_fraction=0.3, workers=2)
  assert again == stats and problem_set.load(tmp_path) == kept


def _entry(code, generator="def generate_input(rng):\n    return {'n': rng.randint(1, 100)}\n",
           description="Compute a number from n."):
  return {"task_description": description, "input_output_spec": "Input: `n` (int).",
          "code_sample": code, "input_generator": generator}


def test_each_planted_bad_problem_is_rejected_under_its_reason():
  he = benchmarks.get("humaneval").load()[0]  # has_close_elements, its prompt and solution
  good = "def main_solution(n):\n    return n * n + 1\n"
  planted = {
      None: good,
      "duplicate": good,
      "syntax_error": "def main_solution(n):\n    return (\n",
      "no_main_solution": "def solve(n):\n    return n\n",
      "non_stdlib_import": "import numpy as np\n\ndef main_solution(n):\n    return int(np.sum(n))\n",
      "benchmark_overlap": (f"{he.prompt}{he.canonical_solution}\n\ndef main_solution(n):\n"
                            "    return has_close_elements([1.0, 2.0, n], 0.5)\n"),
      "nondeterministic": "import random\n\ndef main_solution(n):\n    return random.random() * n\n",
      "reference_error": "def main_solution(n):\n    return n / 0\n",
      "output_not_json": "def main_solution(n):\n    return {n, n + 1}\n",
      "constant_output": "def main_solution(n):\n    return 7\n",
      "timeout": "def main_solution(n):\n    while True:\n        n += 1\n",
      # json.dumps writes an int subclass as a number, the tests take only exact types.
      "reference_fails_tests": "class Count(int):\n    pass\n\ndef main_solution(n):\n"
                               "    return Count(n)\n",
  }
  entries = [_entry(code) for code in planted.values()]
  # The clock: the same inputs give a different answer on the second run.
  entries.append(_entry("import time\n\ndef main_solution(n):\n    return time.time() + n\n"))
  # Input generators: one ignoring its seeded rng, one missing, one raising, one not JSON.
  generators = {
      "generator_nondeterministic": ("import random\n\ndef generate_input(rng):\n"
                                     "    return {'n': random.random()}\n"),
      "no_input_generator": "def make_input(rng):\n    return {'n': 1}\n",
      "generator_error": "def generate_inputs(rng):\n    return {'n': rng.randint(5, 1)}\n",
      "input_not_json": "def generate_input(rng):\n    return {'n': {rng.random()}}\n",
  }
  entries += [_entry(f"def main_solution(n):\n    return [n, {i}]\n", generator=g)
              for i, g in enumerate(generators.values())]
  entries.append(_entry("def main_solution(n):\n    return [n] * 10000\n"))
  kept, stats = problem_set.make_problems(entries, workers=2, timeout_s=3.0)
  expected = {r: 1 for r in [*planted, *generators, "tests_too_large"] if r is not None}
  expected["nondeterministic"] += 1
  assert stats["rejected"] == expected
  assert set(stats["rejected"]) == set(problems.REASONS)
  assert [p.reference for p in kept] == [good] and stats["input"] == len(entries)
  [overlap] = stats["benchmark_overlaps"].values()
  assert "HumanEval/0" in overlap
  assert kept[0].tests[0][1] == kept[0].tests[0][0]["n"] ** 2 + 1


def test_bad_or_missing_file_names_file_and_line(built, tmp_path):
  out, _, _ = built
  with pytest.raises(problems.ProblemsError, match="problems.jsonl: missing"):
    problem_set.load(tmp_path)
  lines = (out / "problems.jsonl").read_text().splitlines()
  (tmp_path / "stats.json").write_text("{}")
  bad = dict(json.loads(lines[0]))
  del bad["tests"]
  for line, why in ((json.dumps(bad), r"missing field\(s\) \['tests'\]"), ("{oops", "not JSON"),
                    (json.dumps({**json.loads(lines[0]), "x": 1}), r".*unknown field\(s\) \['x'\]")):
    (tmp_path / "problems.jsonl").write_text(lines[0] + "\n" + line + "\n")
    with pytest.raises(problems.ProblemsError, match=rf"problems.jsonl:2: {why}"):
      problem_set.load(tmp_path)


def test_entry_point_writes_the_set(tmp_path):
  root = pathlib.Path(__file__).resolve().parents[1]
  out = subprocess.run(
      [sys.executable, str(root / "data" / "make_problems.py"), f"--output={tmp_path}",
       "--limit=3", "--workers=2"], capture_output=True, text=True, timeout=120,
      env={**os.environ, "JAX_PLATFORMS": "cpu"}, cwd=root)
  assert out.returncode == 0, out.stderr[-2000:]
  line = json.loads(out.stdout.strip().splitlines()[-1])
  assert line["input"] == 3 == line["kept"] + sum(line["rejected"].values())
  assert len(problem_set.load(tmp_path)) == line["kept"]


def test_synthetic_source_builds_a_checked_set_through_the_entry_point(tmp_path):
  """--source=synthetic: templated tasks (problem_sources.py), checked like CodeI/O's."""
  from seedcoder_jax.posttrain import problem_sources
  root = pathlib.Path(__file__).resolve().parents[1]
  out = subprocess.run(
      [sys.executable, str(root / "data" / "make_problems.py"), f"--output={tmp_path}",
       "--source=synthetic", "--limit=12", "--heldout_fraction=0.5", "--workers=2"],
      capture_output=True, text=True, timeout=120, env={**os.environ, "JAX_PLATFORMS": "cpu"},
      cwd=root)
  assert out.returncode == 0, out.stderr[-2000:]
  stats = json.loads((tmp_path / "stats.json").read_text())
  assert stats["input"] == 12 == stats["kept"] + sum(stats["rejected"].values())
  assert set(stats["rejected"]) <= set(problem_sources.REASONS)
  kept = problem_set.load(tmp_path)
  assert len(kept) == stats["kept"] >= 10 and stats["source"] == problem_sources.SOURCE
  assert stats["splits"] == {s: sum(p.split == s for p in kept) for s in problems.SPLITS}
  assert all(p.split == problems.split_of(p.id, 0.5) for p in kept)
  templates = problem_sources.templates()
  assert len(templates) >= 300
  assert len({problem_sources.problem_id(t) for t in templates}) >= 290  # few duplicates
  for p, t in zip(kept, [t for t in templates[:12]
                         if problem_sources.problem_id(t) in {p.id for p in kept}]):
    assert p.id == problem_sources.problem_id(t) and p.reference == t.reference
    assert p.prompt.endswith(problem_sources.REPLY_FORMAT) and "main_solution(" in p.prompt
    assert len(p.tests) == 5 and len({json.dumps(o) for _, o in p.tests}) > 1
    # The prompt's example is an extra input, not one of the tests.
    example = p.prompt.split("Example: `main_solution(")[1].split(")` returns")[0]
    assert all(example != ", ".join(f"{k}={v!r}" for k, v in kw.items()) for kw, _ in p.tests)
  # The tests' inputs come from a fixed seed: the same on a second run, in-process.
  again = problem_sources._run_reference(templates[0], kept[0].id, 0, 5)[2]
  assert [tuple(t) for t in again] == list(kept[0].tests)
  wrong = "def main_solution(**kwargs):\n    return None\n"
  verdicts = problems.check([(p, p.reference) for p in kept] + [(p, wrong) for p in kept],
                            workers=2)
  assert [v.passed for v in verdicts] == [True] * len(kept) + [False] * len(kept)
