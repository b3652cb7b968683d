"""The pretrain config as frozen dataclasses, built from a config tree (dict / ConfigDict.to_dict()).

The tree's groups (configs/pretrain.py documents each key):
  trainer, seed, stop_after_steps, xla_cpu_scheduler (applied by launch/train.py: xla_cpu.py)
  model   preset + ModelConfig fields (None: the preset's value)
  init    kind (random|workdir|hf|gguf|orbax), path
  data    batch_size, seq_len + the input pipeline's InputConfig fields (None: its default)
  opt     OptimizerConfig fields + grad_accum_steps, z_loss
  ckpt    CheckpointConfig fields               eval  every_steps, batches, at_end
  log     every_steps, progress_bar             mesh  data, fsdp, tensor (one may be -1)
  prepare the tiny data built on first use when missing (PrepareConfig)
Unknown keys and impossible values are refused here with the key's full name and value; checks
that need the devices (mesh vs model vs batch) follow in trainer.validate, still before compiling.
Nothing here imports ml_collections: the caller passes plain dicts.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping, Optional

from seedcoder_jax import model as model_lib
from seedcoder_jax import perf, xla_cpu
from seedcoder_jax.model.config import ModelConfig
from seedcoder_jax.train.checkpoint import CheckpointConfig
from seedcoder_jax.train.optimizer import OptimizerConfig

INIT_KINDS = ("random", "workdir", "hf", "gguf", "orbax")
TOP_LEVEL = ("trainer", "seed", "stop_after_steps", "model", "init", "data", "opt", "ckpt", "eval",
             "log", "mesh", "prepare", "xla_cpu_scheduler")
MESH_KEYS = ("data", "fsdp", "tensor", "dcn_data")  # dcn_data: slices (sharding.device_array)
TRAINER_DATA_KEYS = ("batch_size", "seq_len")
STEP_OPT_KEYS = ("grad_accum_steps", "z_loss")


class ConfigError(ValueError):
  """A config value that cannot work; the message names the key (config.a.b) and the value."""


@dataclasses.dataclass(frozen=True)
class InitConfig:
  kind: str = "random"
  path: str = ""  # workdir / HF directory / GGUF file ("" = the packaged SmolLM2) / orbax params dir


@dataclasses.dataclass(frozen=True)
class EvalConfig:
  every_steps: int = 0  # 0: no periodic held-out eval
  batches: int = 4
  at_end: bool = True


@dataclasses.dataclass(frozen=True)
class LogConfig:
  every_steps: int = 10
  progress_bar: Optional[bool] = None  # None: when stderr is a terminal


@dataclasses.dataclass(frozen=True)
class PrepareConfig:
  """Data a fresh clone lacks, built before the first step when missing (seedcoder_jax.input.
  stdlib_data): the stdlib corpus at `stdlib_corpus` if config.data.corpora names that directory,
  and a SentencePiece model at `tokenizer` if config.data.tokenizer is `spm:` + that path. Data
  the config does not name is never built (a mistyped corpus path stays an error)."""
  stdlib_corpus: str = ""
  tokenizer: str = ""
  vocab_size: int = 512
  max_chars: int = 5_000_000


@dataclasses.dataclass(frozen=True)
class PretrainConfig:
  model: ModelConfig
  preset: str
  opt: OptimizerConfig
  batch_size: int
  seq_len: int
  data: tuple  # the input pipeline's fields, as sorted (key, value) pairs (frozen and hashable)
  mesh: tuple  # ((axis, size), ...)
  ckpt: CheckpointConfig = CheckpointConfig()
  eval: EvalConfig = EvalConfig()
  log: LogConfig = LogConfig()
  init: InitConfig = InitConfig()
  prepare: PrepareConfig = PrepareConfig()
  grad_accum_steps: int = 1
  z_loss: float = 0.0
  seed: int = 0
  stop_after_steps: int = 0  # 0: train to opt.total_steps; else stop (and checkpoint) there

  def input_config(self):
    """The input pipeline's frozen InputConfig: config.data plus batch_size (as
    global_batch_size), seq_len and, unless config.data.seed is given, config.seed."""
    from seedcoder_jax import input as input_lib  # pylint: disable=g-import-not-at-top
    values = {"seed": self.seed, **_tuples(dict(self.data)), "global_batch_size": self.batch_size,
              "seq_len": self.seq_len}
    try:
      return input_lib.InputConfig(**values)
    except (input_lib.InputConfigError, TypeError) as e:
      raise ConfigError(str(e).replace("InputConfig.", "config.data.")) from e


def _tuples(d: dict) -> dict:
  """ConfigDict lists -> tuples (InputConfig's sequence fields are tuples)."""
  return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}


# Keys of config.data that the trainer owns; the input pipeline's own names for them are derived.
DERIVED_INPUT_FIELDS = ("global_batch_size",)


def _known_input_fields() -> Optional[set[str]]:
  try:
    from seedcoder_jax import input as input_lib  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None  # no input pipeline in this checkout: data comes from the caller (tests)
  return {f.name for f in dataclasses.fields(input_lib.InputConfig)} - set(DERIVED_INPUT_FIELDS)


def _check_keys(group: str, given: Mapping, known) -> None:
  unknown = sorted(set(given) - set(known))
  if unknown:
    raise ConfigError(f"unknown key(s) {', '.join(f'{group}.{k}' for k in unknown)} "
                      f"(value {given[unknown[0]]!r}); known keys of {group}: {sorted(known)}")


def _build(cls, group: str, values: Mapping):
  _check_keys(group, values, [f.name for f in dataclasses.fields(cls)])
  try:
    return cls(**values)
  except (TypeError, ValueError) as e:
    raise ConfigError(f"{group}: {e}") from e


def _positive(name: str, value) -> None:
  if not isinstance(value, int) or value <= 0:
    raise ConfigError(f"{name}={value!r} must be a positive integer")


# Attention kernels that exist for one backend only: splash is a Pallas TPU kernel (elsewhere it
# runs in Pallas interpret mode, orders of magnitude slower), cuDNN an NVIDIA library (on TPU
# jax.nn.dot_product_attention would run XLA's dense-mask composite instead). cuDNN on CPU is the
# documented XLA fallback that the CPU tests use, so it is not refused.
KERNEL_BACKENDS = {"splash": ("tpu",), "cudnn": ("gpu", "cpu")}


def check_backend(model: ModelConfig, backend: str) -> None:
  """Refuses an attention kernel that the backend (jax.default_backend()) cannot run natively,
  before anything is compiled; the message names the setting, the backend and the alternatives."""
  allowed = KERNEL_BACKENDS.get(model.attention_impl)
  if allowed is not None and backend not in allowed:
    raise ConfigError(
        f"config.model.attention_impl={model.attention_impl!r} is a {'/'.join(allowed)} kernel but "
        f"this run's backend is {backend!r}; use 'cudnn' on GPU, 'splash' on TPU, 'flash' or 'xla' "
        f"anywhere (configs/pretrain.py has *_gpu variants of the TPU pod configs)")


def from_tree(tree: Mapping[str, Any]) -> PretrainConfig:
  """Validates a config tree and returns the frozen PretrainConfig."""
  tree = dict(tree)
  _check_keys("config", tree, TOP_LEVEL)
  scheduler = tree.get("xla_cpu_scheduler", "")
  if scheduler not in xla_cpu.SCHEDULERS:
    raise ConfigError(f"config.xla_cpu_scheduler={scheduler!r} is not one of "
                      f"{sorted(xla_cpu.SCHEDULERS)}")
  if tree.get("trainer", "pretrain") != "pretrain":
    raise ConfigError(f"config.trainer={tree['trainer']!r}: this is the pretrain trainer")

  model = dict(tree.get("model") or {})
  preset = model.pop("preset", None)
  if preset not in model_lib.PRESETS:
    raise ConfigError(f"config.model.preset={preset!r} is not one of {sorted(model_lib.PRESETS)}")
  _check_keys("config.model", model, [f.name for f in dataclasses.fields(ModelConfig)])
  if model.get("compute_dtype") is not None:  # "auto" resolved for this machine
    model["compute_dtype"] = perf.resolve_compute_dtype(model["compute_dtype"])
  try:  # None (configs/pretrain.py's placeholders) keeps the preset's value
    model_cfg = model_lib.preset(preset, **model)
  except (TypeError, ValueError) as e:
    raise ConfigError(f"config.model: {e}") from e

  opt = dict(tree.get("opt") or {})
  step_opts = {k: opt.pop(k) for k in STEP_OPT_KEYS if k in opt}
  _check_keys("config.opt", opt, [f.name for f in dataclasses.fields(OptimizerConfig)])
  try:
    opt_cfg = OptimizerConfig(**opt)
  except ValueError as e:
    raise ConfigError(f"config.{e}") from e
  _positive("config.opt.total_steps", opt_cfg.total_steps)
  grad_accum = step_opts.get("grad_accum_steps", 1)
  _positive("config.opt.grad_accum_steps", grad_accum)
  z_loss = float(step_opts.get("z_loss", 0.0))
  if z_loss < 0:
    raise ConfigError(f"config.opt.z_loss={z_loss} must be >= 0")

  # None (a placeholder such as data.seed) means the input pipeline's default (seed: config.seed).
  data = {k: v for k, v in dict(tree.get("data") or {}).items() if v is not None}
  for k in TRAINER_DATA_KEYS:
    if k not in data:
      raise ConfigError(f"config.data.{k} is missing")
    _positive(f"config.data.{k}", data[k])
  batch_size, seq_len = data.pop("batch_size"), data.pop("seq_len")
  if model_cfg.loss_chunk and seq_len % model_cfg.loss_chunk:
    raise ConfigError(f"config.model.loss_chunk={model_cfg.loss_chunk} must divide "
                      f"config.data.seq_len={seq_len}")
  if seq_len > model_cfg.max_seq_len:
    raise ConfigError(f"config.data.seq_len={seq_len} exceeds config.model.max_seq_len="
                      f"{model_cfg.max_seq_len} (raise model.max_seq_len for longer context)")
  known_input = _known_input_fields()
  if known_input is not None:
    _check_keys("config.data", data, known_input | set(TRAINER_DATA_KEYS))

  mesh = dict(tree.get("mesh") or {"fsdp": -1})
  _check_keys("config.mesh", mesh, MESH_KEYS)
  for k, v in mesh.items():
    if not isinstance(v, int) or v == 0 or v < -1:
      raise ConfigError(f"config.mesh.{k}={v!r} must be a positive integer or -1")

  init = _build(InitConfig, "config.init", dict(tree.get("init") or {}))
  if init.kind not in INIT_KINDS:
    raise ConfigError(f"config.init.kind={init.kind!r} is not one of {INIT_KINDS}")
  if init.kind in ("workdir", "hf", "orbax") and not init.path:
    raise ConfigError(f"config.init.path is empty but config.init.kind={init.kind!r} needs one")
  if init.path and "://" not in init.path and not os.path.exists(init.path):
    raise ConfigError(f"config.init.path={init.path!r} does not exist")

  prepare = _build(PrepareConfig, "config.prepare", dict(tree.get("prepare") or {}))
  ckpt = _build(CheckpointConfig, "config.ckpt", dict(tree.get("ckpt") or {}))
  eval_cfg = _build(EvalConfig, "config.eval", dict(tree.get("eval") or {}))
  log = _build(LogConfig, "config.log", dict(tree.get("log") or {}))
  _positive("config.log.every_steps", log.every_steps)
  stop = tree.get("stop_after_steps", 0)
  if not isinstance(stop, int) or stop < 0:
    raise ConfigError(f"config.stop_after_steps={stop!r} must be an integer >= 0")
  return PretrainConfig(
      model=model_cfg, preset=preset, opt=opt_cfg, batch_size=batch_size, seq_len=seq_len,
      data=tuple(sorted(data.items())), mesh=tuple(mesh.items()), ckpt=ckpt, eval=eval_cfg,
      log=log, init=init, prepare=prepare, grad_accum_steps=grad_accum, z_loss=z_loss, seed=int(tree.get("seed", 0)),
      stop_after_steps=stop)
