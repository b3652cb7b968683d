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
