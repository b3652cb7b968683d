"""Reasoning traces for the LongCoT warmup: verified, reasoning-first replies become SFT data."""

import json

import pytest

from seedcoder_jax.posttrain import chat_corpus, problem_set, reasoning_traces as rt
from seedcoder_jax.posttrain.problem_sources import REPLY_FORMAT
from seedcoder_jax.posttrain.problems import Problem

P = Problem(id="t/add", prompt=f"Write `main_solution(a, b)` returning a + b.\n\n{REPLY_FORMAT}",
            tests=(({"a": 1, "b": 2}, 3),), reference="def main_solution(a, b):\n    return a + b\n",
            split="train", provenance={})
GOOD = "<think>Add the two numbers.</think>\n```python\ndef main_solution(a, b):\n    return a + b\n```"


def test_reasoning_must_come_before_the_code():
  assert rt.has_reasoning(GOOD)
  assert not rt.has_reasoning("```python\nx = 1\n```\n<think>late</think>")
  assert not rt.has_reasoning("<think>  </think>```python\nx = 1\n```")
  assert not rt.has_reasoning("no tags at all")
  assert rt.user_message(P) == "Write `main_solution(a, b)` returning a + b."


def test_select_keeps_verified_reasoned_traces_and_accounts_for_every_problem():
  q = Problem(**{**P.__dict__, "id": "t/q"})
  r = Problem(**{**P.__dict__, "id": "t/r"})
  no_think = "```python\ndef main_solution(a, b):\n    return a + b\n```"
  cfg = rt.TracesConfig(policy="gguf:smollm2", problems="x", samples_per_prompt=2,
                        keep_per_prompt=2)
  texts = [GOOD, GOOD, no_think, "x", "y", "z"]
  passed = [True, True, True, False, False, False]
  records, rejected = rt.select([P, q, r], texts, passed, cfg, rt.SYSTEM_PROMPT)
  assert [rec["id"] for rec in records] == ["t/add/trace0"]  # duplicates kept once
  assert rejected == {"no_pass": 1, "no_reasoning": 1}
  msgs = records[0]["messages"]
  assert [m["role"] for m in msgs] == ["system", "user", "assistant"] and msgs[2]["content"] == GOOD
  chat_corpus.check_record(records[0], "sft", "record 0")  # a valid SFT record


@pytest.mark.slow
def test_build_with_smollm2_accounts_for_every_problem(tmp_path):
  d = tmp_path / "problems"
  d.mkdir()
  rows = [{f: getattr(p, f) for f in problem_set._FIELDS}
          for p in (P, Problem(**{**P.__dict__, "id": "t/add2"}))]
  (d / problem_set.PROBLEMS_FILE).write_text("".join(json.dumps(r) + "\n" for r in rows))
  (d / problem_set.STATS_FILE).write_text("{}\n")
  stats = rt.build(rt.TracesConfig(policy="gguf:smollm2", problems=str(d), samples_per_prompt=4,
                                   max_new_tokens=96, slots=8), tmp_path / "out")
  assert stats["input"] == 2 == stats["kept"] + sum(stats["rejected"].values())
  assert stats["samples"] == 8
  if stats["records"]:
    records, _ = chat_corpus.read_all(tmp_path / "out" / "corpus", kind="sft")
    assert all(rt.has_reasoning(r["messages"][-1]["content"]) for r in records)
