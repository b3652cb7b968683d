"""Tolerances derived from float32 numerics, not from one machine's rounding.

XLA:CPU picks different kernels on different x86-64 generations (vector width, FMA contraction,
the bf16/fp16 dot units of AVX-512 BF16/FP16 machines), so two float32 programs that are equal in
exact arithmetic, or the same program on two machines, sum in different orders and differ in the
last bits. Reassociating a sum of n float32 terms moves it by about eps32 * sqrt(n) times the
terms' magnitude (rounding errors add like a random walk; n * eps32 is the worst case). So a
comparison of two ways of computing one tensor allows a multiple of eps32 * sqrt(n) * max|want|:
relative to the tensor's scale, because an entry that is small through cancellation carries the
absolute error of the large terms it came from (a fixed atol or a per-entry rtol does not).

k is the multiple: the deviation over thousands of entries, through a chain of a few such
reductions (forward then backward through the layers), stays under ~0.4 eps32 * sqrt(n) * max|want|
here; K = 8 leaves a wide margin for other kernels while a real error (a wrong mask, scale or
accumulation) is orders of magnitude larger (around 1e-2..1 of the scale).
"""

from __future__ import annotations

import math

import numpy as np

EPS32 = float(np.finfo(np.float32).eps)  # 2^-23 ~ 1.19e-7
K = 8.0


def f32_rtol(terms: int, k: float = K) -> float:
  """The relative error to allow for float32 results built from sums of `terms` terms."""
  return k * EPS32 * math.sqrt(terms)


def f32_atol(want, terms: int, k: float = K) -> float:
  """f32_rtol on the scale of `want`: the absolute error to allow in any of its entries."""
  return f32_rtol(terms, k) * float(np.max(np.abs(np.asarray(want, np.float64))))


def assert_close_to_scale(got, want, *, terms: int, k: float = K, err_msg: str = "") -> None:
  """|got - want| <= k * eps32 * sqrt(terms) * max|want| in every entry.

  `terms`: the longest reduction that feeds an entry (e.g. the tokens of a batch for a weight
  gradient, the contraction length of a matmul)."""
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  assert got.shape == want.shape, (err_msg, got.shape, want.shape)
  assert np.isfinite(got).all(), f"{err_msg}: non-finite entries"
  atol = f32_atol(want, terms, k)
  diff = float(np.max(np.abs(got - want))) if got.size else 0.0
  assert diff <= atol, (f"{err_msg}: max |got - want| = {diff:.3g} > {atol:.3g} = {k:g} * eps32 * "
                        f"sqrt({terms}) * max|want| ({np.max(np.abs(want)):.3g})")
