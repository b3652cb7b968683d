"""Hugging Face Llama checkpoints (config.json + safetensors) <-> our config and parameter tree.

`load(dir)` streams: each parameter is built directly into its final sharding with
`jax.make_array_from_callback`, and the callback reads only the layers and rows/columns its shard
needs (`safe_open(...).get_slice`), so the checkpoint never sits whole on the host. `save(dir, ...)`
writes the safetensors bytes itself, one layer slice of one tensor at a time, so that the output is
deterministic (save -> load -> save is bit-identical) and host memory stays at one tensor slice.

Layout mapping (HF stores nn.Linear weights as [out, in]; our kernels are [in, out] with heads
split out). RoPE uses HF's rotate-half layout in both, so q/k need no permutation:

  model.embed_tokens.weight [V, D]                   -> embed/embedding [V, D]
  model.layers.i.input_layernorm.weight [D]          -> layers/attn_norm/scale [L, D]
  model.layers.i.self_attn.{q,k,v}_proj.weight [N*Dh, D] -> layers/attn/{q,k,v}_proj/kernel [L, D, N, Dh]
  model.layers.i.self_attn.o_proj.weight [D, H*Dh]   -> layers/attn/o_proj/kernel [L, H, Dh, D]
  model.layers.i.post_attention_layernorm.weight [D] -> layers/mlp_norm/scale [L, D]
  model.layers.i.mlp.{gate,up}_proj.weight [F, D]    -> layers/mlp/{gate,up}_proj/kernel [L, D, F]
  model.layers.i.mlp.down_proj.weight [D, F]         -> layers/mlp/down_proj/kernel [L, F, D]
  model.norm.weight [D]                              -> final_norm/scale [D]
  lm_head.weight [V, D]                              -> lm_head/kernel [D, V] (absent when tied)
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import struct
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_dtypes  # registers numpy's "bfloat16" dtype, which safetensors' numpy reader needs
import numpy as np
from jax.experimental import multihost_utils
from safetensors import safe_open

from seedcoder_jax import model as model_lib
from seedcoder_jax import sharding as sharding_lib
from seedcoder_jax.model.config import ModelConfig, RopeScaling

__all__ = ["HFFormatError", "config_from_hf", "config_to_hf", "hf_tensor_shapes", "load",
           "load_config", "save"]

CONFIG_FILE = "config.json"
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
DEFAULT_MAX_SHARD_BYTES = 5 * 10**9  # transformers' historical default shard size ("5GB")

# safetensors dtype tags we read, and the numpy dtypes they hold.
_ST_DTYPES = {"F32": np.dtype(np.float32), "BF16": np.dtype(ml_dtypes.bfloat16),
              "F16": np.dtype(np.float16)}
_SAVE_DTYPES = {"float32": ("F32", np.dtype(np.float32)),
                "bfloat16": ("BF16", np.dtype(ml_dtypes.bfloat16))}


class HFFormatError(ValueError):
  """A Hugging Face config or checkpoint we cannot represent; the message names key/tensor/file."""


# ---------------------------------------------------------------------------------------------
# config.json <-> ModelConfig

_ARCHITECTURE = "LlamaForCausalLM"
_REQUIRED_KEYS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                  "num_attention_heads")
_LLAMA3_KEYS = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")


def _rope_from_hf(hf: Mapping[str, Any]) -> tuple[float, RopeScaling | None]:
  """(theta, scaling) from either transformers v4 keys (rope_theta, rope_scaling) or v5's
  rope_parameters, which folds rope_theta into the scaling dict."""
  params = hf.get("rope_parameters")
  key = "rope_parameters"
  if params is None:
    params, key = hf.get("rope_scaling"), "rope_scaling"
  theta = hf.get("rope_theta", 10_000.0)
  if params is None:
    return float(theta), None
  if not isinstance(params, Mapping):
    raise HFFormatError(f"config.json: {key}={params!r} is not a dict")
  theta = params.get("rope_theta", theta)
  # v4 wrote the type as "type" before it became "rope_type".
  rope_type = params.get("rope_type", params.get("type", "default"))
  if rope_type == "default":
    return float(theta), None
  if rope_type != "llama3":
    raise HFFormatError(f"config.json: {key}.rope_type={rope_type!r} is not supported (only "
                        f"'default' and 'llama3' RoPE are implemented)")
  missing = [k for k in _LLAMA3_KEYS if k not in params]
  if missing:
    raise HFFormatError(f"config.json: {key} of rope_type 'llama3' lacks {missing}")
  return float(theta), RopeScaling(
      factor=float(params["factor"]), low_freq_factor=float(params["low_freq_factor"]),
      high_freq_factor=float(params["high_freq_factor"]),
      original_max_position_embeddings=int(params["original_max_position_embeddings"]))


def config_from_hf(hf: Mapping[str, Any], **overrides) -> ModelConfig:
  """A LlamaForCausalLM config.json dict -> ModelConfig (`overrides` set runtime fields such as
  compute_dtype or scan_layers). Refuses, naming key and value, what our decoder cannot compute."""
  archs = hf.get("architectures")
  if archs is not None and list(archs) != [_ARCHITECTURE]:
    raise HFFormatError(f"config.json: architectures={archs!r}; only [{_ARCHITECTURE!r}] is supported")
  if hf.get("model_type", "llama") != "llama":
    raise HFFormatError(f"config.json: model_type={hf['model_type']!r}; only 'llama' is supported")
  for key in ("attention_bias", "mlp_bias"):
    if hf.get(key, False):
      raise HFFormatError(f"config.json: {key}={hf[key]!r}; biases are not supported")
  if hf.get("hidden_act", "silu") != "silu":
    raise HFFormatError(f"config.json: hidden_act={hf['hidden_act']!r}; only 'silu' (SwiGLU) is "
                        f"supported")
  if hf.get("quantization_config") is not None:
    raise HFFormatError(f"config.json: quantization_config={hf['quantization_config']!r}; "
                        f"quantized checkpoints are not supported")
  missing = [k for k in _REQUIRED_KEYS if k not in hf]
  if missing:
    raise HFFormatError(f"config.json lacks required keys {missing}")
  hidden, heads = int(hf["hidden_size"]), int(hf["num_attention_heads"])
  head_dim = hf.get("head_dim")
  if head_dim is None:
    if hidden % heads:
      raise HFFormatError(f"config.json: hidden_size={hidden} is not a multiple of "
                          f"num_attention_heads={heads} and head_dim is not given")
    head_dim = hidden // heads
  theta, scaling = _rope_from_hf(hf)
  fields = dict(
      vocab_size=int(hf["vocab_size"]), d_model=hidden, n_layers=int(hf["num_hidden_layers"]),
      n_heads=heads, n_kv_heads=int(hf.get("num_key_value_heads") or heads),
      head_dim=int(head_dim), d_ff=int(hf["intermediate_size"]),
      rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)), rope_theta=theta, rope_scaling=scaling,
      max_seq_len=int(hf.get("max_position_embeddings", 2048)),
      tie_embeddings=bool(hf.get("tie_word_embeddings", False)))
  fields.update(overrides)
  return ModelConfig(**fields)


def config_to_hf(cfg: ModelConfig, *, torch_dtype: str = "float32") -> dict:
  """ModelConfig -> a LlamaForCausalLM config.json dict (transformers v4 keys, which v5 reads)."""
  scaling = None
  if cfg.rope_scaling is not None:
    scaling = {"rope_type": "llama3", **dataclasses.asdict(cfg.rope_scaling)}
  return {
      "architectures": [_ARCHITECTURE],
      "model_type": "llama",
      **cfg.hf_names(),
      "hidden_act": "silu",
      "rms_norm_eps": cfg.rms_norm_eps,
      "rope_theta": cfg.rope_theta,
      "rope_scaling": scaling,
      "max_position_embeddings": cfg.max_seq_len,
      "tie_word_embeddings": cfg.tie_embeddings,
      "attention_bias": False,
      "mlp_bias": False,
      "torch_dtype": torch_dtype,
  }


# ---------------------------------------------------------------------------------------------
# Tensor layout: how each of our leaves maps to one HF tensor (per layer for stacked leaves).

_COPY, _TRANSPOSE, _IN_HEADS, _OUT_HEADS = "copy", "transpose", "in_heads", "out_heads"

# Sub-paths inside a layer, in the order transformers writes a layer's tensors.
_LAYER_TENSORS = {
    ("attn_norm", "scale"): ("input_layernorm.weight", _COPY),
    ("attn", "q_proj", "kernel"): ("self_attn.q_proj.weight", _IN_HEADS),
    ("attn", "k_proj", "kernel"): ("self_attn.k_proj.weight", _IN_HEADS),
    ("attn", "v_proj", "kernel"): ("self_attn.v_proj.weight", _IN_HEADS),
    ("attn", "o_proj", "kernel"): ("self_attn.o_proj.weight", _OUT_HEADS),
    ("mlp_norm", "scale"): ("post_attention_layernorm.weight", _COPY),
    ("mlp", "gate_proj", "kernel"): ("mlp.gate_proj.weight", _TRANSPOSE),
    ("mlp", "up_proj", "kernel"): ("mlp.up_proj.weight", _TRANSPOSE),
    ("mlp", "down_proj", "kernel"): ("mlp.down_proj.weight", _TRANSPOSE),
}
_GLOBAL_TENSORS = {
    ("embed", "embedding"): ("model.embed_tokens.weight", _COPY),
    ("final_norm", "scale"): ("model.norm.weight", _COPY),
    ("lm_head", "kernel"): ("lm_head.weight", _TRANSPOSE),
}


def _hf_layer_name(layer: int, suffix: str) -> str:
  return f"model.layers.{layer}.{suffix}"


def _is_ignorable(name: str, cfg: ModelConfig) -> bool:
  # Older exports carry RoPE's derived inverse frequencies as a buffer; transformers ignores
  # lm_head.weight of a tied model (the head is the embedding), and so do we.
  return name.endswith(".rotary_emb.inv_freq") or (cfg.tie_embeddings and name == "lm_head.weight")


def _hf_shape(kind: str, shape: Sequence[int]) -> tuple[int, ...]:
  """Our (per-layer) shape -> the HF tensor's shape."""
  if kind == _COPY:
    return tuple(shape)
  if kind == _TRANSPOSE:
    return tuple(shape[::-1])
  if kind == _IN_HEADS:  # [D, N, Dh] <- [N*Dh, D]
    d, n, dh = shape
    return (n * dh, d)
  d_heads, dh, d = shape  # _OUT_HEADS: [H, Dh, D] <- [D, H*Dh]
  return (d, d_heads * dh)


def _to_hf(kind: str, x: np.ndarray) -> np.ndarray:
  """One layer's array in our layout -> the HF tensor (a view where possible)."""
  if kind == _COPY:
    return x
  if kind == _TRANSPOSE:
    return x.T
  if kind == _IN_HEADS:
    return x.reshape(x.shape[0], -1).T
  return x.reshape(-1, x.shape[-1]).T


def _read_block(tensor_slice, kind: str, ranges: Sequence[tuple[int, int]],
                head_dim: int) -> np.ndarray:
  """Reads the HF rows/columns behind `ranges` (our per-layer index) and returns them in our
  layout. Head dims are read whole (HF fuses heads and head_dim into one axis)."""
  def read(hf_ranges):
    return tensor_slice[tuple(slice(a, b) for a, b in hf_ranges)]
  if kind == _COPY:
    return read(ranges)
  if kind == _TRANSPOSE:
    return read(ranges[::-1]).T
  if kind == _IN_HEADS:
    (d0, d1), (n0, n1), (h0, h1) = ranges
    block = read([(n0 * head_dim, n1 * head_dim), (d0, d1)])
    return block.T.reshape(d1 - d0, n1 - n0, head_dim)[:, :, h0:h1]
  (n0, n1), (h0, h1), (d0, d1) = ranges
  block = read([(d0, d1), (n0 * head_dim, n1 * head_dim)])
  return block.T.reshape(n1 - n0, head_dim, d1 - d0)[:, h0:h1, :]


@dataclasses.dataclass(frozen=True)
class _Leaf:
  """One leaf of our parameter tree and the HF tensor(s) behind it."""

  path: tuple[str, ...]        # our path, e.g. ("layers", "attn", "q_proj", "kernel")
  shape: tuple[int, ...]       # our full shape (leading L when stacked)
  kind: str
  hf_names: tuple[str, ...]    # one per layer when stacked, else one
  stacked: bool

  @property
  def hf_shape(self) -> tuple[int, ...]:
    return _hf_shape(self.kind, self.shape[1:] if self.stacked else self.shape)


def _leaves(cfg: ModelConfig) -> list[_Leaf]:
  """Every leaf of `abstract_params(cfg)` with its HF tensor names, in HF's tensor order."""
  flat = {tuple(k.key for k in path): leaf.shape
          for path, leaf in jax.tree_util.tree_leaves_with_path(model_lib.abstract_params(cfg))}
  out = []
  def add(path, kind, names, stacked):
    if path not in flat:
      raise AssertionError(f"decoder parameter tree lacks {'/'.join(path)}")
    out.append(_Leaf(path, tuple(flat.pop(path)), kind, tuple(names), stacked))
  add(("embed", "embedding"), _COPY, ["model.embed_tokens.weight"], False)
  if cfg.scan_layers:
    for sub, (suffix, kind) in _LAYER_TENSORS.items():
      add(("layers", *sub), kind, [_hf_layer_name(i, suffix) for i in range(cfg.n_layers)], True)
  else:
    for i in range(cfg.n_layers):
      for sub, (suffix, kind) in _LAYER_TENSORS.items():
        add((f"layers_{i}", *sub), kind, [_hf_layer_name(i, suffix)], False)
  add(("final_norm", "scale"), _COPY, ["model.norm.weight"], False)
  if not cfg.tie_embeddings:
    add(("lm_head", "kernel"), _TRANSPOSE, ["lm_head.weight"], False)
  if flat:  # the decoder grew a parameter this module does not know how to convert
    raise AssertionError(f"no Hugging Face mapping for parameters {sorted(flat)}")
  return out


def hf_tensor_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
  """The tensors a LlamaForCausalLM checkpoint of `cfg` holds: name -> shape, in HF's order."""
  shapes = {}
  for leaf in _leaves(cfg.replace(scan_layers=False)):
    shapes[leaf.hf_names[0]] = leaf.hf_shape
  return dict(sorted(shapes.items(), key=lambda kv: _hf_order(kv[0])))


def _hf_order(name: str):
  """transformers' tensor order: embedding, layers in numeric order, final norm, head."""
  if name.startswith("model.layers."):
    layer, suffix = name[len("model.layers."):].split(".", 1)
    subs = [s for s, _ in _LAYER_TENSORS.values()]
    return (1, int(layer), subs.index(suffix) if suffix in subs else len(subs), suffix)
  return ({"model.embed_tokens.weight": 0, "model.norm.weight": 2}.get(name, 3), 0, 0, name)


# ---------------------------------------------------------------------------------------------
# Reading


@dataclasses.dataclass(frozen=True)
class _Entry:
  file: pathlib.Path
  shape: tuple[int, ...]
  dtype: str


def _read_json(path: pathlib.Path) -> dict:
  try:
    return json.loads(path.read_text())
  except FileNotFoundError:
    raise HFFormatError(f"{path} does not exist") from None
  except json.JSONDecodeError as e:
    raise HFFormatError(f"{path} is not valid JSON: {e}") from None


def _catalogue(directory: pathlib.Path) -> dict[str, _Entry]:
  """name -> (file, shape, dtype) from the safetensors headers (no tensor data is read)."""
  index_path = directory / INDEX_FILE
  if index_path.exists():
    weight_map = _read_json(index_path).get("weight_map")
    if not isinstance(weight_map, dict):
      raise HFFormatError(f"{index_path} has no 'weight_map' dict")
    files = sorted(set(weight_map.values()))
  elif (directory / SINGLE_FILE).exists():
    weight_map, files = None, [SINGLE_FILE]
  else:
    raise HFFormatError(f"{directory} holds neither {SINGLE_FILE} nor {INDEX_FILE}")
  entries: dict[str, _Entry] = {}
  for name in files:
    path = directory / name
    if not path.exists():
      raise HFFormatError(f"{index_path} names shard {name!r}, which does not exist in {directory}")
    with safe_open(path, framework="numpy") as f:
      for key in f.keys():
        if key in entries:
          raise HFFormatError(f"tensor {key!r} appears in both {entries[key].file.name} and {name}")
        tensor = f.get_slice(key)
        entries[key] = _Entry(path, tuple(tensor.get_shape()), tensor.get_dtype())
  for key, name in (weight_map or {}).items():
    if key not in entries or entries[key].file.name != name:
      raise HFFormatError(f"{index_path} maps tensor {key!r} to {name}, but that file does not hold "
                          f"it")
  return entries


def _validate(cfg: ModelConfig, entries: Mapping[str, _Entry], directory: pathlib.Path) -> None:
  expected = hf_tensor_shapes(cfg)
  problems = []
  for name, shape in expected.items():
    if name not in entries:
      problems.append(f"tensor {name!r} (shape {list(shape)}) is missing")
    elif entries[name].shape != shape:
      problems.append(f"tensor {name!r} in {entries[name].file.name} has shape "
                      f"{list(entries[name].shape)}, expected {list(shape)}")
    elif entries[name].dtype not in _ST_DTYPES:
      problems.append(f"tensor {name!r} in {entries[name].file.name} has dtype "
                      f"{entries[name].dtype}; supported: {sorted(_ST_DTYPES)}")
  for name, entry in entries.items():
    if name not in expected and not _is_ignorable(name, cfg):
      problems.append(f"unexpected tensor {name!r} in {entry.file.name}")
  if problems:
    shown = "; ".join(problems[:8]) + (f"; ... ({len(problems) - 8} more)" if len(problems) > 8 else "")
    raise HFFormatError(f"checkpoint {directory} does not match its config.json "
                        f"({cfg.hf_names()}): {shown}")


def _leaf_callback(leaf: _Leaf, entries: Mapping[str, _Entry], head_dim: int,
                   dtype: np.dtype) -> Callable:
  """The make_array_from_callback callback of one leaf: reads only the shard it is asked for.

  Each call opens and closes its files, so the safetensors memory map (whose touched pages count
  as resident memory) never outlives one shard of one tensor.
  """
  def read_layer(name, ranges):
    entry = entries[name]
    with safe_open(entry.file, framework="numpy") as f:
      return _read_block(f.get_slice(name), leaf.kind, ranges, head_dim)

  def callback(index):
    ranges = []
    for dim_slice, size in zip(index, leaf.shape):
      start, stop, step = dim_slice.indices(size)
      if step != 1:
        raise AssertionError(f"strided shard index {index} for {'/'.join(leaf.path)}")
      ranges.append((start, stop))
    if not leaf.stacked:
      return np.ascontiguousarray(read_layer(leaf.hf_names[0], ranges), dtype=dtype)
    (l0, l1), rest = ranges[0], ranges[1:]
    out = np.empty([l1 - l0] + [b - a for a, b in rest], dtype)
    for j, layer in enumerate(range(l0, l1)):
      out[j] = read_layer(leaf.hf_names[layer], rest)
    return out
  return callback


def load(directory, *, mesh=None, dtype=jnp.float32, scan_layers: bool = True):
  """Loads a LlamaForCausalLM checkpoint directory -> (cfg, params).

  The directory holds config.json and model.safetensors, or shards listed by
  model.safetensors.index.json. With `mesh`, each parameter lands directly in its
  `sharding.param_shardings` sharding; without, on the first device. Tensors stored in bf16 or
  fp16 are converted to `dtype` (float32 by default: parameters are kept in float32).
  """
  directory = pathlib.Path(directory)
  cfg = config_from_hf(_read_json(directory / CONFIG_FILE), scan_layers=scan_layers)
  entries = _catalogue(directory)
  _validate(cfg, entries, directory)
  if mesh is not None:
    sharding_lib.check_params_fit(cfg, mesh)
    shardings = sharding_lib.param_shardings(cfg, mesh)
  else:
    single = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    shardings = jax.tree.map(lambda _: single, model_lib.abstract_params(cfg))
  np_dtype = np.dtype(dtype)
  params: dict = {}
  for leaf in _leaves(cfg):
    target = shardings
    for key in leaf.path:
      target = target[key]
    array = jax.make_array_from_callback(
        leaf.shape, target, _leaf_callback(leaf, entries, cfg.head_dim, np_dtype))
    node = params
    for key in leaf.path[:-1]:
      node = node.setdefault(key, {})
    node[leaf.path[-1]] = array
  return cfg, params


# ---------------------------------------------------------------------------------------------
# Writing

_take_layer = jax.jit(lambda x, i: jax.lax.dynamic_index_in_dim(x, i, 0, keepdims=False))


def _fetch(x, layer: int | None) -> np.ndarray:
  """One layer slice (or the whole leaf) on the host; gathers across processes if needed."""
  if isinstance(x, jax.Array):
    if layer is not None:
      x = _take_layer(x, layer)  # a traced index: one compilation for all layers
    if not x.is_fully_addressable:
      x = multihost_utils.process_allgather(x, tiled=True)
    return np.asarray(x)
  x = np.asarray(x)
  return x if layer is None else x[layer]


def _check_params(cfg: ModelConfig, params) -> ModelConfig:
  """Detects the layout (scanned or not) and checks every shape; returns the matching cfg."""
  cfg = cfg.replace(scan_layers="layers" in params)
  expected = jax.tree_util.tree_leaves_with_path(model_lib.abstract_params(cfg))
  try:
    got = dict(jax.tree_util.tree_leaves_with_path(params))
  except TypeError as e:
    raise HFFormatError(f"params is not a tree of arrays: {e}") from None
  got = {jax.tree_util.keystr(k): v for k, v in got.items()}
  want = {jax.tree_util.keystr(k): v for k, v in expected}
  problems = [f"{k} is missing" for k in want if k not in got]
  problems += [f"{k} is not a parameter of this config" for k in got if k not in want]
  problems += [f"{k} has shape {list(np.shape(got[k]))}, expected {list(v.shape)}"
               for k, v in want.items() if k in got and tuple(np.shape(got[k])) != tuple(v.shape)]
  if problems:
    raise HFFormatError(f"params do not match the config ({cfg.hf_names()}): " + "; ".join(problems))
  return cfg


def _safetensors_header(tensors: Sequence[tuple[str, str, tuple[int, ...], int]]) -> bytes:
  """The length-prefixed JSON header of a safetensors file; tensors laid out in the given order."""
  header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
  offset = 0
  for name, tag, shape, nbytes in tensors:
    header[name] = {"dtype": tag, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
    offset += nbytes
  body = json.dumps(header, separators=(",", ":")).encode()
  body += b" " * (-len(body) % 8)  # the format pads the header with spaces to 8-byte alignment
  return struct.pack("<Q", len(body)) + body


def save(directory, cfg: ModelConfig, params, *, dtype: str = "float32",
         max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES, overwrite: bool = False) -> None:
  """Writes config.json and safetensors shards (plus the index when there are several).

  Tensors are fetched one layer slice at a time and written straight to disk. Output bytes depend
  only on (cfg, values, dtype, max_shard_bytes). In multi-process runs every process must call
  this (slices are gathered collectively); process 0 writes.
  """
  if dtype not in _SAVE_DTYPES:
    raise HFFormatError(f"dtype={dtype!r} is not one of {sorted(_SAVE_DTYPES)}")
  if max_shard_bytes <= 0:
    raise HFFormatError(f"max_shard_bytes={max_shard_bytes} must be positive")
  tag, np_dtype = _SAVE_DTYPES[dtype]
  cfg = _check_params(cfg, params)
  directory = pathlib.Path(directory)
  writer = jax.process_index() == 0
  if writer:
    directory.mkdir(parents=True, exist_ok=True)
    old = [p for p in directory.iterdir()
           if p.name in (CONFIG_FILE, INDEX_FILE) or
           (p.name.startswith("model") and p.name.endswith(".safetensors"))]
    if old and not overwrite:
      raise HFFormatError(f"{directory} already holds a checkpoint ({sorted(p.name for p in old)}); "
                          f"pass overwrite=True to replace it")
    for p in old:  # stale shards of an earlier save would otherwise be picked up by the index
      p.unlink()

  # (HF name, our leaf, layer index or None), in transformers' order.
  items = []
  for leaf in _leaves(cfg):
    for layer, name in enumerate(leaf.hf_names):
      items.append((name, leaf, layer if leaf.stacked else None))
  items.sort(key=lambda item: _hf_order(item[0]))

  shards: list[list] = [[]]
  shard_bytes = 0
  for item in items:
    nbytes = math.prod(item[1].hf_shape) * np_dtype.itemsize
    if shards[-1] and shard_bytes + nbytes > max_shard_bytes:
      shards.append([])
      shard_bytes = 0
    shards[-1].append(item)
    shard_bytes += nbytes
  n = len(shards)
  names = [SINGLE_FILE] if n == 1 else [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]

  total = 0
  weight_map = {}
  for file_name, shard in zip(names, shards):
    meta = [(name, tag, leaf.hf_shape, math.prod(leaf.hf_shape) * np_dtype.itemsize)
            for name, leaf, _ in shard]
    f = open(directory / file_name, "wb") if writer else None
    try:
      if f:
        f.write(_safetensors_header(meta))
      for name, leaf, layer in shard:
        node = params
        for key in leaf.path:
          node = node[key]
        hf_array = _to_hf(leaf.kind, _fetch(node, layer)).astype(np_dtype)
        if f:
          f.write(np.ascontiguousarray(hf_array).tobytes())
        weight_map[name] = file_name
        total += hf_array.nbytes
    finally:
      if f:
        f.close()
  if writer:
    if n > 1:
      index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
      (directory / INDEX_FILE).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    hf_config = config_to_hf(cfg, torch_dtype=dtype)
    (directory / CONFIG_FILE).write_text(json.dumps(hf_config, indent=2, sort_keys=True) + "\n")


def load_config(directory) -> ModelConfig:
  """The ModelConfig of a checkpoint directory, without reading any tensor."""
  return config_from_hf(_read_json(pathlib.Path(directory) / CONFIG_FILE))
