"""Every variant of configs/pretrain.py builds a valid PretrainConfig (before any data or devices)."""

import importlib.util

import pytest

from seedcoder_jax import config_files
from seedcoder_jax.train import config as config_lib

_spec = importlib.util.spec_from_file_location("pretrain_configs",
                                               config_files.CONFIG_DIR / "pretrain.py")
pretrain_configs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(pretrain_configs)


@pytest.mark.parametrize("variant", sorted(pretrain_configs.VARIANTS))
def test_variant_builds(variant, tmp_path):
  c = pretrain_configs.get_config(variant)
  if c.init.path and "://" not in c.init.path:
    c.init.path = str(tmp_path)  # a previous phase's workdir, which a fresh clone lacks
  cfg = config_lib.from_tree(c.to_dict())
  assert cfg.seq_len <= cfg.model.max_seq_len
  assert cfg.batch_size % cfg.grad_accum_steps == 0


def test_phase2_variants_continue_phase1():
  for phase1, phase2 in (("tiny", "tiny_phase2"), ("8b", "8b_phase2")):
    a, b = pretrain_configs.get_config(phase1), pretrain_configs.get_config(phase2)
    assert b.init.kind == "workdir" and b.init.path
    assert b.data.seq_len > a.data.seq_len and b.opt.peak_lr < a.opt.peak_lr
    assert b.data.fim_rate < a.data.fim_rate and True in b.data.repo_level


def test_1b_variant_is_the_one_gpu_shape():
  cfg = config_lib.from_tree(pretrain_configs.get_config("1b").to_dict())
  assert 1.5e9 < cfg.model.n_params < 1.7e9  # 1.0B without the untied embedding and head
  assert (cfg.model.compute_dtype, cfg.model.attention_impl) == ("bfloat16", "cudnn")


def test_unknown_variant_is_refused_with_the_known_ones():
  with pytest.raises(ValueError, match="known: .*tiny"):
    pretrain_configs.get_config("tinyy")


def test_config_files_load_by_path_or_name(tmp_path):
  by_name = config_files.load("pretrain:100m")
  by_path = config_files.load(f"{config_files.CONFIG_DIR / 'pretrain.py'}:100m")
  assert by_name.to_dict() == by_path.to_dict() and by_name.model.preset == "100m"
  assert config_files.load("pretrain").model.preset == "tiny"  # get_config()'s default
  with pytest.raises(FileNotFoundError, match="nope.py"):
    config_files.load("nope:tiny")
  (tmp_path / "empty.py").write_text("X = 1\n")
  with pytest.raises(AttributeError, match="no get_config"):
    config_files.load(f"{tmp_path / 'empty.py'}")
