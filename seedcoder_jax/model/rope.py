"""Rotary position embeddings in Hugging Face's "rotate half" layout.

The first and second halves of each head's features form the (real, imaginary) pairs, as in
`transformers`' Llama. Checkpoints in Meta's interleaved layout (GGUF) are permuted on import.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from seedcoder_jax.model.config import RopeScaling


def inverse_frequencies(head_dim: int, theta: float, scaling: RopeScaling | None) -> np.ndarray:
  """Per-pair inverse frequencies [head_dim // 2], with optional Llama-3.1 long-context scaling."""
  inv_freq = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
  if scaling is None:
    return inv_freq.astype(np.float32)
  # Llama 3.1: long wavelengths are slowed by `factor`, short ones kept, the band between blended.
  low_wavelen = scaling.original_max_position_embeddings / scaling.low_freq_factor
  high_wavelen = scaling.original_max_position_embeddings / scaling.high_freq_factor
  wavelen = 2 * math.pi / inv_freq
  smooth = (scaling.original_max_position_embeddings / wavelen - scaling.low_freq_factor) / (
      scaling.high_freq_factor - scaling.low_freq_factor)
  blended = (1 - smooth) * inv_freq / scaling.factor + smooth * inv_freq
  scaled = np.where(wavelen > low_wavelen, inv_freq / scaling.factor, inv_freq)
  is_medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
  return np.where(is_medium, blended, scaled).astype(np.float32)


def apply_rope(x_BTHD: jnp.ndarray, positions_BT: jnp.ndarray, inv_freq_D2: np.ndarray) -> jnp.ndarray:
  """Rotates queries or keys by their positions; computed in float32, returned in x's dtype."""
  angles_BTD2 = positions_BT[..., None].astype(jnp.float32) * jnp.asarray(inv_freq_D2)
  sin_BT1D2 = jnp.sin(angles_BTD2)[:, :, None, :]
  cos_BT1D2 = jnp.cos(angles_BTD2)[:, :, None, :]
  x = x_BTHD.astype(jnp.float32)
  x1, x2 = jnp.split(x, 2, axis=-1)
  rotated = jnp.concatenate([x1 * cos_BT1D2 - x2 * sin_BT1D2, x2 * cos_BT1D2 + x1 * sin_BT1D2], -1)
  return rotated.astype(x_BTHD.dtype)
