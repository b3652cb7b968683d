"""The recipe's LongCoT warmup stages (reasoning_traces, warmup) and RL's `init` option."""

import json

import pytest

from seedcoder_jax import recipe_posttrain as rp
from seedcoder_jax.posttrain import dpo_pairs, problem_set, reasoning_traces as rt
from seedcoder_jax.posttrain.problem_sources import REPLY_FORMAT
from seedcoder_jax.posttrain.problems import Problem

GOOD = "<think>Add the two numbers.</think>\n```python\ndef main_solution(a, b):\n    return a + b\n```"


def _problems(workdir, n=3):
  d = workdir / "problems"
  d.mkdir(parents=True)
  rows = [{"id": f"t/add{i}", "prompt": f"Write `main_solution(a, b)` returning a + b.\n\n"
           f"{REPLY_FORMAT}", "tests": [[{"a": 1, "b": i}, 1 + i]],
           "reference": "def main_solution(a, b):\n    return a + b\n", "split": "train",
           "provenance": {}} for i in range(n)]
  assert set(rows[0]) == set(problem_set._FIELDS)
  (d / problem_set.PROBLEMS_FILE).write_text("".join(json.dumps(r) + "\n" for r in rows))
  (d / problem_set.STATS_FILE).write_text("{}\n")


def test_rl_init_selects_the_packaged_model_or_the_warmup_with_its_prompt(tmp_path):
  default = rp._trainer_config("rl:demo", rp._rl_paths({}, tmp_path), {})
  assert default["init"]["kind"] == "gguf"
  assert default["rl"]["system_prompt"] != rt.SYSTEM_PROMPT
  with pytest.raises(FileNotFoundError, match=r"rl.init='warmup' needs the warmup stage"):
    rp._rl_paths({"init": "warmup"}, tmp_path)
  (tmp_path / "warmup").mkdir()
  (tmp_path / "warmup" / rp.DONE).write_text("{}")
  config = rp._trainer_config("rl:demo", rp._rl_paths({"init": "warmup"}, tmp_path), {})
  assert config["init"] == {**default["init"], "kind": "workdir",
                            "path": str(tmp_path / "warmup" / "run")}
  assert config["rl"]["system_prompt"] == rt.SYSTEM_PROMPT
  assert config["rl"]["reply_format"] is False and default["rl"].get("reply_format", True)
  assert config["rl"]["problems"] == str(tmp_path / "problems")


def test_unknown_rl_init_is_refused_before_any_work(tmp_path):
  with pytest.raises(ValueError, match=r"rl.init='sft': unknown; known: \['instruct', 'warmup'\]"):
    rp.rl({"init": "sft"}, tmp_path / "rl", tmp_path)
  assert not any(tmp_path.iterdir())


def test_unknown_traces_option_is_refused_naming_it(tmp_path):
  with pytest.raises(KeyError, match=r"reasoning_traces.limt: not an option"):
    rp.reasoning_traces({"limt": 4}, tmp_path / "reasoning_traces", tmp_path)


def test_zero_kept_traces_fail_both_stages_with_the_counts(tmp_path, monkeypatch):
  _problems(tmp_path)
  monkeypatch.setattr(dpo_pairs, "sample_replies",
                      lambda policy, problems, n, **kw: (["no code"] * (len(problems) * n), None))
  stage = tmp_path / "reasoning_traces"
  with pytest.raises(RuntimeError, match=r"no reasoning traces in .*: 0 of 3 problems kept "
                     r"\(6 samples, pass rate 0.0, 0 with a <think> block; rejected "
                     r"\{'no_pass': 3, 'no_reasoning': 0\}\)"):
    rp.reasoning_traces({"samples_per_prompt": 2, "workers": 1}, stage, tmp_path)
  assert not (stage / rp.DONE).exists() and not (stage / rt.CORPUS_DIR).exists()
  # The warmup refuses the same stats before it trains (never SFT on nothing).
  with pytest.raises(RuntimeError, match=r"0 of 3 problems kept"):
    rp.warmup({}, tmp_path / "warmup", tmp_path)
  assert not (tmp_path / "warmup" / "run").exists()


@pytest.mark.slow
def test_traces_then_warmup_train_on_the_verified_traces(tmp_path, monkeypatch):
  _problems(tmp_path)
  # Sampling stubbed (the policy's replies); judging, selection, the corpus and SFT are real.
  # Problem t/add2 gets a reply that fails its test; t/add1 one that passes without reasoning.
  no_think = GOOD.split("</think>\n")[1]
  wrong = GOOD.replace("a + b", "a - b")
  replies = [GOOD, wrong, no_think, no_think, wrong, wrong]
  monkeypatch.setattr(dpo_pairs, "sample_replies", lambda *a, **kw: (replies, None))
  traces = rp.reasoning_traces({"samples_per_prompt": 2, "workers": 1},
                               tmp_path / "reasoning_traces", tmp_path)
  assert traces["kept"] == 1 and traces["input"] == 3 and traces["records"] == 1
  assert traces["rejected"] == {"no_pass": 1, "no_reasoning": 1}
  tiny = {"model": {"preset": "tiny", "vocab_size": 49152, "max_seq_len": 256},
          "init": {"kind": "random"}, "data": {"seq_len": 128, "batch_size": 8},
          "opt": {"total_steps": 2, "warmup_steps": 1}, "eval": {"every_steps": 0, "at_end": False},
          "ckpt": {"async_save": False}, "log": {"every_steps": 1, "progress_bar": False},
          "mesh": {"data": 2, "fsdp": 4}}
  summary = rp.warmup({"overrides": tiny}, tmp_path / "warmup", tmp_path)
  assert summary["end_step"] == 2 and summary["first_loss"] > 0
  config = json.loads((tmp_path / "warmup" / "run" / "config.json").read_text())
  assert config["sft"]["corpora"] == [str(tmp_path / "reasoning_traces" / rt.CORPUS_DIR)]
  assert config["sft"]["system_prompt"] == rt.SYSTEM_PROMPT


def test_report_lists_the_warmup_stages_and_says_where_rl_started(tmp_path):
  from seedcoder_jax import recipe_report

  def done(stage, summary):
    (tmp_path / stage).mkdir()
    (tmp_path / stage / rp.DONE).write_text(json.dumps(summary))

  done("reasoning_traces", {"kept": 5, "input": 32, "records": 5,
                            "rejected": {"no_pass": 20, "no_reasoning": 7}, "seconds": 200})
  done("warmup", {"first_loss": 1.25, "last_loss": 0.5, "end_step": 8, "seconds": 300})
  done("rl", {"init": "warmup", "eval": [{"step": 0, "pass_rate": 0.25, "n": 8},
                                         {"step": 2, "pass_rate": 0.5, "n": 8}], "seconds": 400})
  md, _ = recipe_report.write(tmp_path, ["reasoning_traces", "warmup", "rl"])
  text = md.read_text()
  assert ("| reasoning_traces | done | 200 | kept 5, input 32, records 5, rejected.no_pass 20, "
          "rejected.no_reasoning 7 |") in text
  assert "| warmup | done | 300 | first_loss 1.25, last_loss 0.5, end_step 8 |" in text
  assert ("| RL from the LongCoT warmup (reasoning prompt) step 0 -> 2 | 0.250 -> 0.500 (n=8) |"
          in text)
