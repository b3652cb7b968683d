"""Parameter-only Orbax checkpoints: the exchange format between converters and our own tools.

Layout of a directory:
  DIR/model_config.json   every ModelConfig field (rope_scaling as a nested dict or null)
  DIR/params/             the parameter tree, written by orbax's StandardCheckpointer

Training checkpoints (with optimizer and data-iterator state) live in train/; this format holds
weights only, e.g. the output of `launch/convert.py --to=orbax`.
"""

from __future__ import annotations

import json
import pathlib

import jax
import numpy as np
import orbax.checkpoint as ocp

from seedcoder_jax import model as model_lib
from seedcoder_jax import sharding as sharding_lib
from seedcoder_jax.model.config import ModelConfig

MODEL_CONFIG_FILE = "model_config.json"
PARAMS_DIR = "params"


def save(directory, cfg: ModelConfig, params, *, overwrite: bool = False) -> None:
  """Writes params (any sharding; orbax writes each shard from its host) and the config."""
  directory = pathlib.Path(directory).absolute()  # orbax requires absolute paths
  cfg = cfg.replace(scan_layers="layers" in params)
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(directory / PARAMS_DIR, params, force=overwrite)
  checkpointer.wait_until_finished()
  if jax.process_index() == 0:
    text = json.dumps(cfg.to_dict(), indent=2, sort_keys=True) + "\n"
    (directory / MODEL_CONFIG_FILE).write_text(text)


def load(directory, *, mesh=None, dtype=None):
  """Reads (cfg, params); with `mesh`, straight into `sharding.param_shardings`, else onto the
  first device. `dtype` casts on restore (default: the stored dtype)."""
  directory = pathlib.Path(directory).absolute()
  config_path = directory / MODEL_CONFIG_FILE
  if not config_path.exists():
    raise FileNotFoundError(f"{config_path} does not exist (not a params checkpoint written by "
                            f"seedcoder_jax.interop.orbax_params.save)")
  cfg = ModelConfig.from_dict(json.loads(config_path.read_text()), where=str(config_path))
  abstract = model_lib.abstract_params(cfg)
  if mesh is not None:
    sharding_lib.check_params_fit(cfg, mesh)
    shardings = sharding_lib.param_shardings(cfg, mesh)
  else:
    single = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    shardings = jax.tree.map(lambda _: single, abstract)
  checkpointer = ocp.StandardCheckpointer()
  stored = checkpointer.metadata(directory / PARAMS_DIR)
  stored_tree = getattr(stored, "item_metadata", stored)
  stored_dtypes = {jax.tree_util.keystr(k): v.dtype
                   for k, v in jax.tree_util.tree_leaves_with_path(stored_tree)}

  def target(path, leaf, leaf_sharding):
    key = jax.tree_util.keystr(path)
    if key not in stored_dtypes:
      raise ValueError(f"{directory / PARAMS_DIR} lacks parameter {key} of the config in "
                       f"{config_path}")
    return jax.ShapeDtypeStruct(leaf.shape, np.dtype(dtype or stored_dtypes[key]),
                                sharding=leaf_sharding)

  targets = jax.tree_util.tree_map_with_path(target, abstract, shardings)
  return cfg, checkpointer.restore(directory / PARAMS_DIR, targets)
