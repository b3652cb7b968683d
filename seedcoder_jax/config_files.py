"""Loading `get_config(variant)` from a config file by path: 'configs/pretrain.py:tiny'.

absl's config_flags does this for command-line flags; code that picks a config itself (the recipe,
the AOT tool, tests) uses `load` so every caller reads the files the same way.
"""

from __future__ import annotations

import importlib.util
import pathlib

CONFIG_DIR = pathlib.Path(__file__).resolve().parents[1] / "configs"


def load(arg: str):
  """'PATH[:VARIANT]' -> get_config(VARIANT) (or get_config()) of the Python file at PATH.

  A bare name without '/' or '.py' ('pretrain:tiny') is looked up in the project's configs/."""
  path, _, variant = str(arg).partition(":")
  file = pathlib.Path(path)
  if "/" not in path and not path.endswith(".py"):
    file = CONFIG_DIR / f"{path}.py"
  if not file.is_file():
    raise FileNotFoundError(f"config file {str(file)!r} does not exist (from {arg!r})")
  spec = importlib.util.spec_from_file_location(f"_config_{file.stem}_{abs(hash(str(file)))}", file)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise AttributeError(f"{file} has no get_config(variant) function")
  return module.get_config(variant) if variant else module.get_config()
