"""The SFT trainer (`config.trainer = "sft"`): pretraining's loop on chat data, loss on assistant tokens.

    python launch/train.py --config=configs/sft.py:demo --workdir=DIR

SFT is next-token prediction whose weights are the assistant mask, so it is the pretraining
trainer (seedcoder_jax.train.trainer.train: mesh, sharded init from any checkpoint kind, jitted
guarded step, orbax checkpoints with the data position, exact resume, metrics.jsonl, TensorBoard,
held-out loss) fed by posttrain.sft_data instead of the pretraining corpus pipeline. The config is
pretraining's tree plus a `sft` group (SFTDataConfig's fields); config.data keeps batch_size,
seq_len and tokenizer (whose chat template renders the conversations).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from seedcoder_jax.posttrain import sft_data
from seedcoder_jax.train import trainer as trainer_lib
from seedcoder_jax.train.config import ConfigError, PretrainConfig, from_tree

# Keys of SFTDataConfig that come from elsewhere in the tree (config.data / config.seed).
_DERIVED = ("tokenizer", "seq_len", "global_batch_size", "seed")
SFT_KEYS = tuple(f.name for f in dataclasses.fields(sft_data.SFTDataConfig) if f.name not in _DERIVED)
DATA_KEYS = ("batch_size", "seq_len", "tokenizer")


def split_tree(tree: Mapping[str, Any], trainer: str, group: str) -> tuple[dict, dict]:
  """(the pretraining tree, the post-training group) of a post-training config tree; the trainer
  name is checked and every key is accounted for, so a typo is an error naming it."""
  tree = dict(tree)
  if tree.get("trainer") != trainer:
    raise ConfigError(f"config.trainer={tree.get('trainer')!r}: this is the {trainer} trainer")
  tree.pop("trainer")
  if group not in tree:
    raise ConfigError(f"config.{group} is missing (the {trainer} trainer's settings)")
  return tree, dict(tree.pop(group) or {})


def post_training_tree(tree: Mapping[str, Any], trainer: str,
                       known: tuple[str, ...]) -> tuple[dict, dict, dict]:
  """(pretraining tree, the trainer's group, config.data) of a post-training config tree, with
  the keys every post-training trainer shares checked: config.data holds only DATA_KEYS and a
  tokenizer (its chat template renders the conversations); the group only `known` keys."""
  base, group = split_tree(tree, trainer, trainer)
  data = {k: v for k, v in dict(base.get("data") or {}).items() if v is not None}
  unknown = sorted(set(data) - set(DATA_KEYS))
  if unknown:
    raise ConfigError(f"unknown key(s) {', '.join('config.data.' + k for k in unknown)} for the "
                      f"{trainer} trainer; config.data holds {DATA_KEYS} (its settings are in "
                      f"config.{trainer})")
  if "tokenizer" not in data:
    raise ConfigError("config.data.tokenizer is missing (its chat template renders the data)")
  unknown = sorted(set(group) - set(known))
  if unknown:
    raise ConfigError(f"unknown key(s) {', '.join(f'config.{trainer}.' + k for k in unknown)}; "
                      f"known keys of config.{trainer}: {list(known)}")
  return base, group, data


def config_from_tree(tree: Mapping[str, Any]) -> tuple[PretrainConfig, sft_data.SFTDataConfig]:
  """Validates an SFT config tree -> (the trainer's config, the SFT data config)."""
  base, sft, data = post_training_tree(tree, "sft", SFT_KEYS)
  cfg = from_tree({**base, "data": data, "prepare": {}})
  values = {k: tuple(v) if isinstance(v, list) else v for k, v in sft.items()}
  try:
    data_cfg = sft_data.SFTDataConfig(
        tokenizer=data["tokenizer"], seq_len=cfg.seq_len, global_batch_size=cfg.batch_size,
        seed=cfg.seed, **values)
  except (sft_data.SFTDataError, TypeError) as e:
    raise ConfigError(str(e)) from e
  return cfg, data_cfg


def data_source(cfg: PretrainConfig, data_cfg: sft_data.SFTDataConfig) -> trainer_lib.DataSource:
  """The SFT input as the trainer's DataSource; data errors become ConfigErrors naming the key."""
  def wrap(fn):
    def call(pi, pc):
      try:
        return fn(pi, pc)
      except sft_data.SFTDataError as e:
        raise ConfigError(str(e)) from e
    return call

  want_eval = (cfg.eval.every_steps or cfg.eval.at_end) and (
      data_cfg.heldout_corpus or data_cfg.eval_fraction > 0)
  return trainer_lib.DataSource(
      train=wrap(lambda pi, pc: sft_data.make_iterator(data_cfg, process_index=pi,
                                                       process_count=pc)),
      eval=wrap(lambda pi, pc: sft_data.make_eval_batches(
          data_cfg, num_batches=cfg.eval.batches, process_index=pi, process_count=pc))
      if want_eval else None)


def run(config, workdir) -> dict:
  """The trainer boundary (launch/train.py): config tree -> validated configs -> train."""
  raw = config.to_dict() if hasattr(config, "to_dict") else dict(config)
  cfg, data_cfg = config_from_tree(raw)
  return trainer_lib.train(cfg, workdir, data=data_source(cfg, data_cfg), raw_config=raw,
                           name="sft")
