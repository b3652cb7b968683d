"""Projections and the SwiGLU gate with hand-written backward passes.

Both compute exactly what autodiff would; they differ in what the backward pass asks XLA for.

- `projection(equation, x, w)`: the einsum of an activation with a kernel ("btd,df->btf",
  "btd,dhk->bthk", ...). Autodiff's transpose of dot_general emits a dot followed by a transpose
  of the result, which XLA's CPU backend turned into a strided, cache-hostile copy of every
  [T, F] cotangent (plus the fused elementwise backward feeding it) before the weight-gradient
  matmul: a quarter of the ~100M model's step. Written as two plain einsums over the saved
  operands, the gradients go straight to the matmul kernels.
- `swiglu(gate, up)` = silu(gate) * up, saving only its two inputs (autodiff keeps four
  [L, B, T, F] arrays for the sigmoid's derivative under scanned layers) and recomputing the
  sigmoid in the backward pass.

Cotangents are cast to the operands' (compute) dtype before the backward matmuls, which
accumulate in float32 as the forward does.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name


def _split(equation: str) -> tuple[str, str, str]:
  inputs, out = equation.replace(" ", "").split("->")
  x, w = inputs.split(",")
  for name in set(x + w + out):
    counts = [term.count(name) for term in (x, w, out)]
    if sorted(counts) != [0, 1, 1]:
      raise ValueError(f"projection {equation!r}: every index must appear in exactly two of "
                       f"the three terms (no traces, no sums of one operand); {name!r} does not")
  return x, w, out


CHECKPOINT_NAME = "projection"


def projection(equation: str, x, w):
  """einsum(equation, x, w) with float32 accumulation; see the module docstring.

  The output is named CHECKPOINT_NAME for remat policies: a policy sees the custom VJP as one
  opaque call, not as a dot_general, so "save the dots" policies must also save this name."""
  return checkpoint_name(_projection(equation, x, w), CHECKPOINT_NAME)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _projection(equation: str, x, w):
  _split(equation)
  return jnp.einsum(equation, x, w, preferred_element_type=jnp.float32)


def _projection_fwd(equation, x, w):
  return _projection(equation, x, w), (x, w)


def _projection_bwd(equation, res, g):
  x, w = res
  xs, ws, outs = _split(equation)
  g = g.astype(x.dtype)
  dx = jnp.einsum(f"{outs},{ws}->{xs}", g, w, preferred_element_type=jnp.float32)
  dw = jnp.einsum(f"{xs},{outs}->{ws}", x, g, preferred_element_type=jnp.float32)
  return dx.astype(x.dtype), dw.astype(w.dtype)


_projection.defvjp(_projection_fwd, _projection_bwd)


@jax.custom_vjp
def swiglu(gate, up):
  """silu(gate) * up, saving only gate and up for the backward pass."""
  return jax.nn.silu(gate) * up


def _swiglu_fwd(gate, up):
  return swiglu(gate, up), (gate, up)


def _swiglu_bwd(res, dh):
  gate, up = res
  sig = jax.nn.sigmoid(gate)
  # d silu(g)/dg = s + g s (1 - s)
  dgate = dh * up * sig * (1.0 + gate * (1.0 - sig))
  dup = dh * gate * sig
  return dgate.astype(gate.dtype), dup.astype(up.dtype)


swiglu.defvjp(_swiglu_fwd, _swiglu_bwd)
