"""DPO pairs: sandbox judging of replies (sealed), pairing, accounting, the corpus."""

import json
import random

import pytest

from seedcoder_jax.posttrain import chat_corpus, dpo_pairs, problem_set
from seedcoder_jax.posttrain.problems import Problem

ADD = Problem(id="t/add", prompt="Write `main_solution(a, b)` returning a + b.",
              tests=(({"a": 1, "b": 2}, 3), ({"a": -4, "b": 4}, 0)),
              reference="def main_solution(a, b):\n    return a + b\n", split="train",
              provenance={})
NEG = Problem(id="t/neg", prompt="Write `main_solution(x)` returning -x.",
              tests=(({"x": 5}, -5),), reference="def main_solution(x):\n    return -x\n",
              split="heldout", provenance={})


def _fence(code):
  return f"Here it is:\n```python\n{code}```\nDone."


def test_judge_runs_the_first_code_block_sealed():
  replies = [
      (ADD, _fence("def main_solution(a, b):\n    return a + b\n")),
      (ADD, _fence("def main_solution(a, b):\n    return a - b\n")),
      # Exits 0 before any test runs: the sealed verdict is not a pass.
      (ADD, _fence("import sys\ndef main_solution(a, b):\n    return 0\nsys.exit(0)\n")),
      (ADD, "def main_solution(a, b):\n    return a + b\n"),  # no code block: a format failure
      (NEG, _fence("def main_solution(x):\n    return -x\n")),
  ]
  assert dpo_pairs.judge(replies, workers=2) == [True, False, False, False, True]


def test_pairs_are_passing_against_failing_of_one_prompt():
  rng = random.Random(0)
  pairs = dpo_pairs.make_pairs(ADD, ["a", "b", "a", "c"], [True, False, True, False],
                               pairs_per_prompt=5, rng=rng)
  assert sorted(pairs) == [("a", "b"), ("a", "c")]  # distinct texts only
  assert dpo_pairs.make_pairs(ADD, ["a", "b"], [True, True], pairs_per_prompt=1, rng=rng) == []
  assert len(dpo_pairs.make_pairs(ADD, list("abcd"), [1, 1, 0, 0], pairs_per_prompt=3,
                                  rng=rng)) == 3


def test_bad_pairs_settings_are_refused():
  with pytest.raises(ValueError, match="temperature"):
    dpo_pairs.PairsConfig(policy="gguf:smollm2", problems="x", temperature=0.0)
  with pytest.raises(ValueError, match="samples_per_prompt"):
    dpo_pairs.PairsConfig(policy="gguf:smollm2", problems="x", samples_per_prompt=1)
  with pytest.raises(ValueError, match="split"):
    dpo_pairs.PairsConfig(policy="gguf:smollm2", problems="x", split="test")


def _write_problems(directory, problems):
  directory.mkdir(parents=True, exist_ok=True)
  rows = [{f: getattr(p, f) for f in problem_set._FIELDS} for p in problems]
  (directory / problem_set.PROBLEMS_FILE).write_text("".join(json.dumps(r) + "\n" for r in rows))
  (directory / problem_set.STATS_FILE).write_text("{}\n")


@pytest.mark.slow
def test_build_with_smollm2_accounts_for_every_prompt(tmp_path):
  """End to end on the packaged SmolLM2-135M-Instruct: sampling, sandbox, pairs, stats."""
  _write_problems(tmp_path / "problems", [ADD, Problem(**{**ADD.__dict__, "id": "t/add2"})])
  cfg = dpo_pairs.PairsConfig(policy="gguf:smollm2", problems=str(tmp_path / "problems"),
                              samples_per_prompt=4, max_new_tokens=96, temperature=1.0,
                              batch_size=8)
  stats = dpo_pairs.build(cfg, tmp_path / "out")
  assert stats["input"] == 2 == stats["kept"] + sum(stats["rejected"].values())
  assert stats["samples"] == 8 and 0.0 <= stats["sample_pass_rate"] <= 1.0
  assert json.loads((tmp_path / "out" / "stats.json").read_text())["input"] == 2
  if stats["pairs"]:
    records, _ = chat_corpus.read_all(tmp_path / "out" / "corpus", kind="pairs")
    assert len(records) == stats["pairs"]
