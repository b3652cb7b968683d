"""Per-token log-probabilities of given sequences under the model (DPO, GRPO ratios, KL).

Shapes in names: B batch, T sequence, D d_model, V vocab, C chunk, N number of chunks.

`token_logprobs` is what every post-training loss differentiates, so it must be exact (the same
numbers as a log_softmax of `model.forward`'s logits) and cheap in memory: with
`cfg.loss_chunk > 0` the LM head and the log-softmax run over position slices inside a
rematerialised scan, as the pretraining loss does, so neither the forward nor the backward pass
ever holds the [B, T, V] float32 logits (at the 8b shapes, 155K vocab x 8K positions x 4 bytes is
5 GB per sequence).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from seedcoder_jax import model as model_lib
from seedcoder_jax.model.config import ModelConfig


def token_logprobs(cfg: ModelConfig, params, tokens_BT, *, temperature: float = 1.0,
                   segment_ids=None, positions=None):
  """Float32 [B, T]: out[:, t] = log p(tokens[:, t] | tokens[:, :t]) under softmax(logits / temperature).

  out[:, 0] = 0 (nothing predicts the first token). With packed rows (segment_ids), the first
  token of every segment is 0 as well, and so is padding (segment id 0): a token's context is its
  own segment only, so a packed row gives each sequence the values it would get alone in a row.
  `temperature` must be the sampler's when these feed an importance ratio against sampled tokens.
  """
  if temperature <= 0:
    raise ValueError(f"temperature={temperature} must be > 0 (log-probs of greedy decoding are "
                     "not defined)")
  tokens_BT = jnp.asarray(tokens_BT, jnp.int32)
  kwargs = dict(segment_ids=segment_ids, positions=positions)
  # Position t's logits predict token t + 1: the targets are the tokens shifted left by one (the
  # last position predicts nothing; its target is a dummy 0 whose value is dropped below).
  targets_BT = jnp.pad(tokens_BT[:, 1:], ((0, 0), (0, 1)))
  if cfg.loss_chunk:
    hidden_BTD = model_lib.hidden_states(cfg, params, tokens_BT, **kwargs)
    next_BT = _chunked_logprobs(hidden_BTD, model_lib.head_kernel(cfg, params), targets_BT,
                                chunk=cfg.loss_chunk, temperature=temperature,
                                compute_dtype=jnp.dtype(cfg.compute_dtype))
  else:
    logits_BTV = model_lib.forward(cfg, params, tokens_BT, **kwargs)  # float32 already
    next_BT = _gather_logprobs(logits_BTV, targets_BT, temperature)
  out_BT = jnp.pad(next_BT[:, :-1], ((0, 0), (1, 0)))
  return jnp.where(_has_context(tokens_BT.shape, segment_ids), out_BT, 0.0)


def sequence_logprobs(cfg: ModelConfig, params, tokens_BT, mask_BT, **kwargs):
  """Float32 [B]: the sum of token_logprobs where mask_BT is 1 (completion tokens, EOS included).

  kwargs: token_logprobs's (temperature, segment_ids, positions)."""
  logp_BT = token_logprobs(cfg, params, tokens_BT, **kwargs)
  mask_BT = jnp.asarray(mask_BT)
  return jnp.sum(jnp.where(mask_BT > 0, logp_BT * mask_BT.astype(jnp.float32), 0.0), axis=-1)


def _has_context(shape, segment_ids):
  """[B, T] bool: the token has a previous token of its own segment (position 0 never has)."""
  t_BT = jnp.broadcast_to(jnp.arange(shape[1]), shape)
  if segment_ids is None:
    return t_BT > 0
  seg_BT = jnp.asarray(segment_ids, jnp.int32)
  prev_BT = jnp.pad(seg_BT[:, :-1], ((0, 0), (1, 0)))
  return (t_BT > 0) & (seg_BT == prev_BT) & (seg_BT != 0)


def _gather_logprobs(logits_BTV, targets_BT, temperature):
  """log_softmax(logits / temperature) at the targets, without building the [B, T, V] log-softmax.

  logits are float32 (the model's head accumulates in float32): no further upcast."""
  if temperature != 1.0:
    logits_BTV = logits_BTV / temperature
  lse_BT = jax.nn.logsumexp(logits_BTV, axis=-1)
  target_BT = jnp.take_along_axis(logits_BTV, targets_BT[..., None], axis=-1)[..., 0]
  return target_BT - lse_BT


def _chunked_logprobs(hidden_BTD, head_DV, targets_BT, *, chunk: int, temperature: float,
                      compute_dtype):
  """_gather_logprobs(hidden @ head, ...) over slices of `chunk` positions.

  Each slice's logits [B, C, V] live only inside the scan body, which is rematerialised: the
  backward pass recomputes one slice at a time instead of saving every slice's logits. T need not
  be a multiple of the chunk (rollouts have any length): the tail slice is zero-padded and its
  padding dropped.
  """
  b, t, _ = hidden_BTD.shape
  pad = -t % chunk
  hidden_BTD = jnp.pad(hidden_BTD, ((0, 0), (0, pad), (0, 0)))
  targets_BT = jnp.pad(targets_BT, ((0, 0), (0, pad)))
  n = (t + pad) // chunk
  split = lambda x: x.reshape(b, n, chunk, *x.shape[2:]).swapaxes(0, 1)  # [N, B, C, ...]
  head_DV = head_DV.astype(compute_dtype)

  @functools.partial(jax.checkpoint, policy=jax.checkpoint_policies.nothing_saveable)
  def body(_, xs):
    h_BCD, targets_BC = xs
    # Operands in the compute dtype, float32 accumulation, as the model's own head computes them.
    logits_BCV = jnp.einsum("bcd,dv->bcv", h_BCD.astype(compute_dtype), head_DV,
                            preferred_element_type=jnp.float32)
    return None, _gather_logprobs(logits_BCV, targets_BC, temperature)

  _, logp_NBC = jax.lax.scan(body, None, (split(hidden_BTD), split(targets_BT)))
  return logp_NBC.swapaxes(0, 1).reshape(b, n * chunk)[:, :t]
