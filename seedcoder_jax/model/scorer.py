"""The quality scorer's regression head on the project decoder (Seed-Coder's file scorer).

A pretrained Llama-style decoder reads a file; a linear head maps one pooled hidden state to a
score in [0, 1] (the oracle's 0-10 rating / 10), trained with MSE. Pooling:
  - "mean": the mean over non-pad tokens (the curation default: with a few dozen labels and a
    backbone cut to a few layers, a ridge probe on mean-pooled SmolLM2 features predicted a
    held-out comment-density target with MAE 1.43 against 2.14 for the mean, while last-token
    features did no better than the mean, 2.13);
  - "last": the hidden state of the last non-pad token (the only position that attended to the
    whole file; the usual choice for reward models on full-depth decoders).
Shapes in names: B batch, L length, D d_model.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from seedcoder_jax import model as model_lib
from seedcoder_jax.model.config import ModelConfig

POOLINGS = ("last", "mean")


def init_head(d_model: int, *, bias: float = 0.5, seed: int = 0, std: float = 0.0) -> dict:
  """{"kernel": [D], "bias": []}: the bias starts at the label mean so step 0 predicts it."""
  kernel = std * jax.random.normal(jax.random.key(seed), (d_model,), jnp.float32)
  return {"kernel": kernel, "bias": jnp.asarray(bias, jnp.float32)}


def pool(hidden_BLD, mask_BL, pooling: str = "last"):
  """[B, D]: the last non-pad token's hidden state, or the mean over non-pad tokens.

  mask_BL: 1 for tokens, 0 for padding (right-padded rows; an all-pad row pools to zeros).
  """
  mask_BL = mask_BL.astype(jnp.float32)
  if pooling == "last":
    last_B = jnp.maximum(jnp.sum(mask_BL, axis=1).astype(jnp.int32) - 1, 0)
    picked_BD = jnp.take_along_axis(hidden_BLD, last_B[:, None, None], axis=1)[:, 0]
    return picked_BD * (jnp.sum(mask_BL, axis=1, keepdims=True) > 0)
  if pooling == "mean":
    total_BD = jnp.einsum("bld,bl->bd", hidden_BLD, mask_BL)
    return total_BD / jnp.maximum(jnp.sum(mask_BL, axis=1, keepdims=True), 1.0)
  raise ValueError(f"pooling={pooling!r} is not one of {POOLINGS}")


def head_apply(head: dict, pooled_BD):
  """[B]: the linear head's prediction (scaled score, nominally in [0, 1])."""
  return pooled_BD @ head["kernel"] + head["bias"]


def predict(cfg: ModelConfig, params: dict, tokens_BL, mask_BL, *, pooling: str = "last"):
  """[B] scaled scores for right-padded token rows. params = {"backbone": ..., "head": ...}."""
  mask_BL = jnp.asarray(mask_BL, jnp.int32)
  hidden_BLD = model_lib.hidden_states(cfg, params["backbone"], tokens_BL, segment_ids=mask_BL)
  return head_apply(params["head"], pool(hidden_BLD, mask_BL, pooling))


def mse_loss(pred_B, target_B, weight_B=None):
  """Weighted mean of (pred - target)^2; weight 0 marks batch padding."""
  if weight_B is None:
    weight_B = jnp.ones_like(target_B)
  return jnp.sum(weight_B * (pred_B - target_B) ** 2) / jnp.maximum(jnp.sum(weight_B), 1.0)


def truncate_layers(cfg: ModelConfig, params: dict, n_layers: int) -> tuple[ModelConfig, dict]:
  """The first `n_layers` blocks of a pretrained decoder (embedding and final norm kept)."""
  if not 0 < n_layers <= cfg.n_layers:
    raise ValueError(f"n_layers={n_layers} must be in 1..{cfg.n_layers} (the checkpoint's depth)")
  if "layers" in params:
    kept = {k: v for k, v in params.items() if k != "layers"}
    kept["layers"] = jax.tree.map(lambda x: x[:n_layers], params["layers"])
  else:
    kept = {k: v for k, v in params.items()
            if not k.startswith("layers_") or int(k.split("_")[1]) < n_layers}
  return cfg.replace(n_layers=n_layers), kept


def fit_ridge_head(features_ND, target_N, alphas=(0.01, 0.1, 1.0, 10.0, 100.0)) -> tuple[dict, float]:
  """Closed-form ridge head on frozen features (the linear probe of "LP-FT", Kumar et al. 2022).

  With a few dozen labels and one epoch, gradient steps alone barely move a head over 576-dim
  features; the probe gives fine-tuning a head that already fits. The penalty is
  alpha * mean(singular value^2) of the centred features, alpha chosen by exact leave-one-out
  error (residual / (1 - leverage), the hat matrix from one SVD). Returns (head, chosen alpha).
  Host numpy in float64: N and D are small.
  """
  x = np.asarray(features_ND, np.float64)
  y = np.asarray(target_N, np.float64)
  n = x.shape[0]
  x_mean, y_mean = x.mean(0), y.mean()
  u, s, vt = np.linalg.svd(x - x_mean, full_matrices=False)
  uty = u.T @ (y - y_mean)
  scale = np.mean(s ** 2)
  best = None
  for alpha in alphas:
    shrink = s ** 2 / (s ** 2 + alpha * scale)
    fitted = u @ (shrink * uty) + y_mean
    leverage = np.sum(u ** 2 * shrink, axis=1) + 1.0 / n  # + the intercept's 1/n
    loo = np.mean(((y - fitted) / np.maximum(1.0 - leverage, 1e-9)) ** 2)
    if best is None or loo < best[0]:
      best = (loo, alpha, vt.T @ (s / (s ** 2 + alpha * scale) * uty))
  _, alpha, w = best
  head = {"kernel": jnp.asarray(w, jnp.float32),
          "bias": jnp.asarray(y_mean - x_mean @ w, jnp.float32)}
  return head, float(alpha)
