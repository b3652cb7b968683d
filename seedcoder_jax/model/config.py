"""Model configuration: a frozen dataclass and the named presets.

Field names follow the Llama literature; `hf_names()` maps them to Hugging Face's config.json keys
(used by interop and by the benchmarks' JSON lines).
"""

from __future__ import annotations

import dataclasses
from typing import Optional

ATTENTION_IMPLS = ("flash", "xla", "cudnn", "splash")
REMAT_POLICIES = ("none", "full", "dots")
COMPUTE_DTYPES = ("float32", "bfloat16")


@dataclasses.dataclass(frozen=True)
class RopeScaling:
  """Llama-3.1-style RoPE frequency scaling for long context (HF `rope_type: llama3`)."""

  factor: float = 8.0
  low_freq_factor: float = 1.0
  high_freq_factor: float = 4.0
  original_max_position_embeddings: int = 8192


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Shape and numerics of a Llama-style decoder."""

  vocab_size: int
  d_model: int
  n_layers: int
  n_heads: int
  n_kv_heads: int
  head_dim: int
  d_ff: int
  rms_norm_eps: float = 1e-6
  rope_theta: float = 500_000.0
  rope_scaling: Optional[RopeScaling] = None
  max_seq_len: int = 8192
  tie_embeddings: bool = False
  # Numerics: parameters are stored in float32; matmul operands are cast to `compute_dtype` and
  # accumulate in float32; norms, softmax, logits and the loss stay in float32.
  compute_dtype: str = "float32"
  attention_impl: str = "flash"
  remat: str = "none"
  scan_layers: bool = True
  init_std: float = 0.02
  # >0: the training loss runs the LM head and cross entropy over chunks of this many positions
  # (each chunk's logits recomputed in the backward pass), never holding [B, T, V] float32 logits.
  loss_chunk: int = 0

  def __post_init__(self):
    errors = []
    for name in ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "head_dim", "d_ff"):
      if getattr(self, name) <= 0:
        errors.append(f"{name}={getattr(self, name)} must be positive")
    if self.n_kv_heads > 0 and self.n_heads % self.n_kv_heads:
      errors.append(f"n_heads={self.n_heads} is not a multiple of n_kv_heads={self.n_kv_heads}")
    if self.head_dim % 2:
      errors.append(f"head_dim={self.head_dim} must be even for RoPE")
    if self.attention_impl not in ATTENTION_IMPLS:
      errors.append(f"attention_impl={self.attention_impl!r} is not one of {ATTENTION_IMPLS}")
    if self.remat not in REMAT_POLICIES:
      errors.append(f"remat={self.remat!r} is not one of {REMAT_POLICIES}")
    if self.loss_chunk < 0:
      errors.append(f"loss_chunk={self.loss_chunk} must be >= 0 (0: no chunking)")
    if self.compute_dtype not in COMPUTE_DTYPES:
      errors.append(f"compute_dtype={self.compute_dtype!r} is not one of {COMPUTE_DTYPES}")
    if errors:
      raise ValueError("invalid ModelConfig: " + "; ".join(errors))

  def replace(self, **changes) -> "ModelConfig":
    return dataclasses.replace(self, **changes)

  def to_dict(self) -> dict:
    """Every field, JSON-ready (rope_scaling as a nested dict or None)."""
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, fields: dict, where: str = "model config") -> "ModelConfig":
    """Inverse of to_dict; unknown keys are an error naming them and `where` they came from."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(fields) - known)
    if unknown:
      raise ValueError(f"{where}: unknown ModelConfig fields {unknown}; known: {sorted(known)}")
    fields = dict(fields)
    if fields.get("rope_scaling") is not None:
      fields["rope_scaling"] = RopeScaling(**fields["rope_scaling"])
    return cls(**fields)

  @property
  def n_params(self) -> int:
    """Number of parameters (embedding and head included)."""
    d, h, kv, dh, f = self.d_model, self.n_heads, self.n_kv_heads, self.head_dim, self.d_ff
    per_layer = 2 * d + d * dh * (2 * h + 2 * kv) + 3 * d * f
    head = 0 if self.tie_embeddings else d * self.vocab_size
    return self.vocab_size * d + self.n_layers * per_layer + d + head

  def flops_per_token(self, seq_len: int) -> float:
    """Training FLOPs per token (forward + backward): 6N for the matmuls plus causal attention.

    N excludes the input embedding (a gather, not a matmul). Attention scores and values cost
    2 * 2 * L * H * Dh per token in the forward pass, halved for causality, times 3 for training.
    """
    n_matmul = self.n_params - self.vocab_size * self.d_model
    if self.tie_embeddings:
      n_matmul += self.vocab_size * self.d_model
    attn = 3 * 2 * self.n_layers * self.n_heads * self.head_dim * seq_len  # 12*L*H*Dh*T/2
    return 6.0 * n_matmul + attn

  def hf_names(self) -> dict:
    """The shape under Hugging Face's names (for benchmark JSON and config.json)."""
    return {
        "vocab_size": self.vocab_size,
        "hidden_size": self.d_model,
        "intermediate_size": self.d_ff,
        "num_hidden_layers": self.n_layers,
        "num_attention_heads": self.n_heads,
        "num_key_value_heads": self.n_kv_heads,
        "head_dim": self.head_dim,
    }


PRESETS = {
    # A CPU-sized model for tests and the demo.
    "tiny": ModelConfig(
        vocab_size=512, d_model=128, n_layers=2, n_heads=8, n_kv_heads=4, head_dim=16, d_ff=384,
        max_seq_len=512),
    # ~100M parameters: the "small real model" shape for CPU benchmarks.
    "100m": ModelConfig(
        vocab_size=32_768, d_model=768, n_layers=12, n_heads=12, n_kv_heads=4, head_dim=64,
        d_ff=2048, max_seq_len=2048),
    # SmolLM2-135M (HuggingFaceTB/SmolLM2-135M-Instruct): Llama layout with tied embeddings.
    "smollm2_135m": ModelConfig(
        vocab_size=49_152, d_model=576, n_layers=30, n_heads=9, n_kv_heads=3, head_dim=64,
        d_ff=1536, rms_norm_eps=1e-5, rope_theta=100_000.0, max_seq_len=8192, tie_embeddings=True),
    # ~1.6B: Llama-3.2-1B's shape with Seed-Coder's vocabulary, untied (1.0B without embeddings).
    "1b": ModelConfig(
        vocab_size=155_136, d_model=2048, n_layers=16, n_heads=32, n_kv_heads=8, head_dim=64,
        d_ff=8192, max_seq_len=8192),
    # Seed-Coder-8B (arXiv 2506.03524): 32 layers give the stated 8.2B parameters.
    "seed_coder_8b": ModelConfig(
        vocab_size=155_136, d_model=4096, n_layers=32, n_heads=32, n_kv_heads=8, head_dim=128,
        d_ff=14_336, rms_norm_eps=1e-6, rope_theta=500_000.0, max_seq_len=32_768),
}
PRESETS["8b"] = PRESETS["seed_coder_8b"]


def preset(name: str, **overrides) -> ModelConfig:
  """Returns the named preset, with `overrides` applied (e.g. compute_dtype="bfloat16").

  An override of None keeps the preset's value: configs list every ModelConfig field (so each can
  be overridden from the command line) with None meaning "the preset's". `rope_scaling` may be a
  RopeScaling or a mapping whose None fields keep the preset's scaling (or RopeScaling's defaults
  when the preset has none); all None keeps the preset's rope_scaling as it is."""
  if name not in PRESETS:
    raise ValueError(f"unknown model preset {name!r}; known: {sorted(PRESETS)}")
  base = PRESETS[name]
  overrides = {k: v for k, v in overrides.items() if v is not None}
  if "rope_scaling" in overrides:
    overrides["rope_scaling"] = _merge_rope_scaling(base.rope_scaling, overrides["rope_scaling"])
  return base.replace(**overrides)


def _merge_rope_scaling(base: Optional[RopeScaling], given) -> Optional[RopeScaling]:
  given = dataclasses.asdict(given) if isinstance(given, RopeScaling) else dict(given)
  known = {f.name for f in dataclasses.fields(RopeScaling)}
  if set(given) - known:
    raise ValueError(f"unknown rope_scaling fields {sorted(set(given) - known)}; known: "
                     f"{sorted(known)}")
  given = {k: v for k, v in given.items() if v is not None}
  if not given:
    return base
  return dataclasses.replace(base or RopeScaling(), **given)
