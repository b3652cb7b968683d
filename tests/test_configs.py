"""Every variant of configs/pretrain.py builds a valid PretrainConfig (before any data or devices)."""

import dataclasses
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


def test_pod_variants_attention_matches_their_backend(tmp_path):
  """The TPU pod configs use splash, which the trainer refuses on GPU; their *_gpu twins differ
  only in the attention kernel and pass on GPU."""
  for tpu_variant in ("8b", "8b_phase2"):
    tpu = _from_tree(pretrain_configs.get_config(tpu_variant), tmp_path)
    gpu = _from_tree(pretrain_configs.get_config(f"{tpu_variant}_gpu"), tmp_path)
    config_lib.check_backend(tpu.model, "tpu")
    with pytest.raises(config_lib.ConfigError,
                       match="config.model.attention_impl='splash' is a tpu kernel.*backend is 'gpu'"):
      config_lib.check_backend(tpu.model, "gpu")
    config_lib.check_backend(gpu.model, "gpu")
    assert gpu.model.attention_impl in ("cudnn", "flash")
    assert gpu.model.replace(attention_impl="splash") == tpu.model
    assert dataclasses.replace(gpu, model=tpu.model) == tpu
  slurm = (config_files.CONFIG_DIR.parent / "launch" / "gpu" / "train.slurm").read_text()
  assert "configs/pretrain.py:8b_gpu" in slurm and "configs/pretrain.py:8b " not in slurm


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


def _override_value(field: str, cfg):
  """A valid value for ModelConfig `field` that differs from the variant's (cfg: its PretrainConfig)."""
  m = cfg.model
  return {
      "vocab_size": m.vocab_size * 2, "d_model": m.d_model * 2, "n_layers": m.n_layers + 1,
      "n_heads": m.n_heads * 2, "n_kv_heads": m.n_heads, "head_dim": m.head_dim * 2,
      "d_ff": m.d_ff + 64, "rms_norm_eps": m.rms_norm_eps * 10, "rope_theta": m.rope_theta * 2,
      "max_seq_len": m.max_seq_len * 2, "tie_embeddings": not m.tie_embeddings,
      "compute_dtype": "bfloat16" if m.compute_dtype == "float32" else "float32",
      "attention_impl": "xla" if m.attention_impl != "xla" else "flash",
      "remat": "full" if m.remat != "full" else "none", "scan_layers": not m.scan_layers,
      "init_std": m.init_std / 2, "loss_chunk": cfg.seq_len // 2 if m.loss_chunk != cfg.seq_len // 2
      else cfg.seq_len // 4,
  }[field]


def _flag(value) -> str:
  return str(value).lower() if isinstance(value, bool) else str(value)


def _parse_like_launch_train(monkeypatch, variant: str, *overrides: str):
  """The config as launch/train.py gets it: absl config_flags with lock_config=True. config_flags
  reads the override flags from sys.argv, so the test sets it."""
  from absl import flags
  from ml_collections import config_flags
  argv = ["train.py", f"--config={config_files.CONFIG_DIR / 'pretrain.py'}:{variant}", *overrides]
  monkeypatch.setattr("sys.argv", argv)
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=flag_values, lock_config=True)
  flag_values(argv)
  return flag_values.config


def _from_tree(c, tmp_path):
  if c.init.path and "://" not in c.init.path:
    c.init.path = str(tmp_path)  # a previous phase's workdir, which a fresh clone lacks
  return config_lib.from_tree(c.to_dict())


@pytest.mark.parametrize("variant", sorted(pretrain_configs.VARIANTS))
def test_every_model_field_is_overridable_from_the_command_line(variant, tmp_path, monkeypatch):
  """Every ModelConfig field is a key of every variant's config.model (None: the preset's value),
  so `--config.model.FIELD=V` works whichever fields the variant happened to set."""
  import dataclasses
  from seedcoder_jax.model.config import ModelConfig
  c = pretrain_configs.get_config(variant)
  fields = [f.name for f in dataclasses.fields(ModelConfig)]
  assert sorted(set(fields) - set(c.model)) == [], "ModelConfig fields missing from config.model"
  cfg = _from_tree(c, tmp_path)
  resolved = {k: v for k, v in c.model.items() if k != "preset"}
  if resolved.get("compute_dtype") == "auto":  # resolved per machine by from_tree
    resolved["compute_dtype"] = config_lib.perf.auto_compute_dtype()
  assert cfg.model == config_lib.model_lib.preset(c.model.preset, **resolved)
  overrides = {f: _override_value(f, cfg) for f in fields if f != "rope_scaling"}
  for field, value in overrides.items():
    got = _from_tree(_parse_like_launch_train(
        monkeypatch, variant, f"--config.model.{field}={_flag(value)}"), tmp_path)
    assert getattr(got.model, field) == value, field
    assert got.model.replace(**{field: getattr(cfg.model, field)}) == cfg.model, field
  got = _from_tree(_parse_like_launch_train(
      monkeypatch, variant, "--config.model.rope_scaling.factor=4.0",
      "--config.model.rope_scaling.original_max_position_embeddings=4096"), tmp_path)
  assert got.model.rope_scaling == config_lib.model_lib.RopeScaling(
      factor=4.0, original_max_position_embeddings=4096)


@pytest.mark.parametrize("group, cls", [("opt", "OptimizerConfig"), ("ckpt", "CheckpointConfig"),
                                        ("eval", "EvalConfig"), ("log", "LogConfig"),
                                        ("init", "InitConfig"), ("data", "InputConfig"),
                                        ("prepare", "PrepareConfig")])
def test_every_dataclass_field_is_a_config_key(group, cls):
  """The other groups that become frozen dataclasses list every field too (derived ones aside)."""
  import dataclasses
  from seedcoder_jax import input as input_lib
  from seedcoder_jax.train import optimizer as opt_lib
  from seedcoder_jax.train.checkpoint import CheckpointConfig
  classes = {"OptimizerConfig": opt_lib.OptimizerConfig, "CheckpointConfig": CheckpointConfig,
             "EvalConfig": config_lib.EvalConfig, "LogConfig": config_lib.LogConfig,
             "InitConfig": config_lib.InitConfig, "InputConfig": input_lib.InputConfig,
             "PrepareConfig": config_lib.PrepareConfig}
  fields = {f.name for f in dataclasses.fields(classes[cls])} - set(config_lib.DERIVED_INPUT_FIELDS)
  for variant in sorted(pretrain_configs.VARIANTS):
    c = pretrain_configs.get_config(variant)
    assert sorted(fields - set(c[group])) == [], (variant, group)


def test_data_seed_defaults_to_the_run_seed(tmp_path, monkeypatch):
  c = _parse_like_launch_train(monkeypatch, "tiny", "--config.seed=7")
  assert _from_tree(c, tmp_path).input_config().seed == 7
  c = _parse_like_launch_train(monkeypatch, "tiny", "--config.seed=7", "--config.data.seed=3")
  assert _from_tree(c, tmp_path).input_config().seed == 3
