"""The recipe runner: stages run in order, write DONE.json, and are skipped once done."""

import json

import pytest

from seedcoder_jax import recipe


def test_stage_runs_once_then_is_skipped(tmp_path, capsys):
  options = {"model_bench": {"preset": "tiny", "batch_size": 2, "seq_len": 32}}
  first = recipe.run(["model_bench"], options, tmp_path)
  done = tmp_path / "model_bench" / recipe.DONE
  assert json.loads(done.read_text())["tokens_per_s"] == first["model_bench"]["tokens_per_s"] > 0
  second = recipe.run(["model_bench"], options, tmp_path)
  assert "skipping" in capsys.readouterr().out
  assert second == first


def test_unknown_stage_is_refused_before_any_work(tmp_path):
  with pytest.raises(ValueError, match=r"unknown recipe stages \['pretrian'\]"):
    recipe.run(["model_bench", "pretrian"], {}, tmp_path)
  assert not any(tmp_path.iterdir())


def test_misspelt_stage_options_are_refused_before_any_work(tmp_path):
  options = {"model_bench": {"preset": "tiny", "batch_size": 2, "seq_len": 32},
             "tokenizer": {"vocab_sise": 512, "max_chars": 1000}}
  with pytest.raises(ValueError, match=r"recipe option tokenizer\.vocab_sise: not an option "
                                       r"of this stage; known: \['max_chars', 'seed', 'vocab_size'\]"):
    recipe.run(["model_bench", "tokenizer"], options, tmp_path)
  assert not any(tmp_path.iterdir())
  measure = {"heldout_limit": 4, "max_new_tokens": 8, "humaneval_limt": 2}
  with pytest.raises(ValueError, match=r"recipe option sft\.measure\.humaneval_limt"):
    recipe.run(["sft"], {"sft": {"measure": measure}}, tmp_path)
  assert not any(tmp_path.iterdir())


def test_every_stage_declares_its_options_and_the_shipped_configs_use_only_those():
  from seedcoder_jax import ablation, config_files
  self_checked = {"web_classifier_eval", "reasoning_traces"}  # they refuse unknown keys themselves
  assert set(recipe.STAGES) == set(recipe.OPTIONS) | self_checked
  c = config_files.load("configs/recipe.py:tiny")
  stages = list(recipe.STAGES)
  recipe.check_options(stages, {name: c[name].to_dict() for name in stages if name in c})
  for name in ("fim_order", "fim_level", "quality_filter", "commits_repo", "rl_schedule",
               "rl_curriculum", "web_hard_negatives"):
    spec = config_files.load(f"configs/ablations.py:{name}").to_dict()
    for arm in spec["arms"]:
      recipe.check_options(spec["stages"], ablation.arm_options(spec, arm, spec["seeds"][0]))


def test_report_shows_every_stage_the_chain_and_the_curves(tmp_path):
  from seedcoder_jax import recipe_report

  def done(stage, summary):
    (tmp_path / stage).mkdir(parents=True, exist_ok=True)
    (tmp_path / stage / recipe.DONE).write_text(json.dumps(summary))

  done("pretrain", {"first_loss": 6.2, "last_loss": 3.1, "eval_loss": 3.3, "seconds": 60})
  rows = [{"step": s, "loss": 6.0 - s / 100} for s in (10, 20, 30)] + [{"step": 30, "eval_loss": 5.8}]
  (tmp_path / "pretrain" / "run").mkdir()
  (tmp_path / "pretrain" / "run" / "metrics.jsonl").write_text(
      "".join(json.dumps(r) + "\n" for r in rows))
  heldout = lambda p, n: {"heldout": {"pass_rate": p, "n": n}}
  done("sft", {"before": {**heldout(0.25, 16), "humaneval": {"pass_at_1": 0.061, "num_problems": 164}},
               "after": heldout(0.625, 16), "seconds": 100})
  done("dpo", {"after": heldout(0.75, 16), "seconds": 50})
  done("rl", {"eval": [{"step": 0, "pass_rate": 0.437, "n": 87}, {"step": 16, "pass_rate": 0.782,
                                                                 "n": 87}], "seconds": 2000})
  (tmp_path / "dpo_pairs").mkdir()  # started, never finished
  md, page = recipe_report.write(tmp_path, ["pretrain", "sft", "dpo_pairs", "dpo", "rl", "evaluate"])
  text = md.read_text()
  assert "| pretrain | done | 60 | first_loss 6.2, last_loss 3.1, eval_loss 3.3 |" in text
  assert "| dpo_pairs | started, unfinished |" in text and "| evaluate | not run |" in text
  assert "| imported base (SmolLM2-135M-Instruct) | 0.250 (n=16) | 0.061 (n=164) |" in text
  assert "| after SFT | 0.625 (n=16) | — |" in text and "| after DPO | 0.750 (n=16) |" in text
  assert "| RL step 0 -> 16 | 0.437 -> 0.782 (n=87) |" in text
  assert "4 of 6 stages done" in text
  assert (tmp_path / "report_curves.png").stat().st_size > 1000
  assert "<td>after DPO</td>" in page.read_text()


def test_report_key_numbers_lead_with_what_the_stage_measured(tmp_path):
  from seedcoder_jax import recipe_report

  # model_bench's summary opens with the model's shape; the row must show the measurement.
  shape = {"vocab_size": 512, "hidden_size": 128, "intermediate_size": 384, "num_hidden_layers": 2,
           "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 16}
  summary = {**shape, "batch_size": 8, "seq_len": 256, "tokens_per_s": 2803.6, "mfu": 0.2293,
             "peak_source": "measured 2048x2048 float32 matmul", "machine": {"platform": "cpu"},
             "seconds": 36.6}
  (tmp_path / "model_bench").mkdir()
  (tmp_path / "model_bench" / recipe.DONE).write_text(json.dumps(summary))
  md, _ = recipe_report.write(tmp_path, ["model_bench"])
  assert ("| model_bench | done | 37 | tokens_per_s 2804, mfu 0.2293, batch_size 8, seq_len 256, "
          "peak_source measured 2048x2048 float32 matmul, vocab_size 512, hidden_size 128, "
          "intermediate_size 384 |") in md.read_text()
