"""Greedy decoding by full forward passes, no KV cache: the ground truth for the cached sampler.

The prompt and generated tokens live in one fixed-length buffer, so the jitted forward compiles
once; causality makes the padding after the current position irrelevant to its logits.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from seedcoder_jax import model as model_lib
from seedcoder_jax.model.config import ModelConfig


def greedy_continue(cfg: ModelConfig, params, prompt_ids, max_new_tokens: int,
                    eos_id: int | None = None) -> list[int]:
  """The argmax continuation of one prompt (a list of token ids), stopping after `eos_id`."""
  prompt_ids = [int(t) for t in prompt_ids]
  if not prompt_ids:
    raise ValueError("greedy_continue needs a non-empty prompt")
  length = len(prompt_ids) + max_new_tokens
  buffer = np.zeros((1, length), np.int32)
  buffer[0, :len(prompt_ids)] = prompt_ids

  @jax.jit
  def next_token(params, tokens_1L, last):
    logits_1LV = model_lib.forward(cfg, params, tokens_1L)
    return jnp.argmax(logits_1LV[0, last])

  new = []
  for n in range(len(prompt_ids), length):
    token = int(next_token(params, buffer, n - 1))
    buffer[0, n] = token
    new.append(token)
    if token == eos_id:
      break
  return new
