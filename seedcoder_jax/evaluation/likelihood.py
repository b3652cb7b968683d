"""Teacher-forced likelihood of known answers: evaluation that moves at small scale.

A 2-core pretraining run is far too small for pass@1 to leave zero, but the per-token loss of a
benchmark's canonical solutions given its prompts falls as a code model improves, and so does the
loss of a masked middle given a FIM prompt (the paper's FIM ablation, measured without sampling).

  loss = target_loss(cfg, params, pairs)                      # pairs: [(context_ids, target_ids)]
  solution_loss(cfg, params, tok, problems)                   # canonical solution | prompt
  fim_middle_loss(cfg, params, tok, problems, order="spm")    # middle | FIM prompt (fim_humaneval)

Every figure is sum(-log p(target token)) / (number of target tokens), float32, over all pairs;
solution_loss also gives it per character of the solutions (`nats_per_char`), which compares
models with different tokenizers.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from seedcoder_jax import model as model_lib
from seedcoder_jax.input import fim
from seedcoder_jax.train import losses


@functools.partial(jax.jit, static_argnums=0)
def _sums(cfg, params, tokens_BT, targets_BT, weights_BT):
  logits = model_lib.forward(cfg, params, tokens_BT)
  nll, _, n = losses.cross_entropy(logits, targets_BT, weights_BT)
  return nll, n


def _bucket(n: int, step: int = 64) -> int:
  return -(-n // step) * step


def target_loss(cfg, params, pairs: Sequence[tuple[Sequence[int], Sequence[int]]], *,
                batch_size: int = 8, max_len: int | None = None) -> dict:
  """{"loss": per-token NLL of the targets, "tokens", "examples", "truncated"}.

  Each pair is run as context + target; only the target tokens are scored. Pairs longer than
  `max_len` (default: the model's max_seq_len) lose context from the left, then target from the
  right; `truncated` counts them.
  """
  max_len = max_len or cfg.max_seq_len
  rows, truncated = [], 0
  for context, target in pairs:
    context, target = list(context), list(target)
    if not target:
      raise ValueError("a pair with an empty target has nothing to score")
    if len(context) + len(target) > max_len + 1:
      truncated += 1
      target = target[:max_len]
      context = context[-(max_len + 1 - len(target)):]
    if not context:  # nothing to condition the first target token on: it is context
      context, target = target[:1], target[1:]
    if target:
      rows.append((context, target))
  rows.sort(key=lambda r: len(r[0]) + len(r[1]))  # similar lengths share a padded batch
  nll_total, n_total = 0.0, 0.0
  for s in range(0, len(rows), batch_size):
    batch = rows[s:s + batch_size]
    length = min(_bucket(max(len(c) + len(t) for c, t in batch) - 1), max_len)
    tokens = np.zeros((batch_size, length), np.int32)
    targets = np.zeros((batch_size, length), np.int32)
    weights = np.zeros((batch_size, length), np.float32)
    for r, (context, target) in enumerate(batch):
      ids = np.asarray(context + target, np.int32)
      tokens[r, :len(ids) - 1] = ids[:-1]
      targets[r, :len(ids) - 1] = ids[1:]
      weights[r, len(context) - 1:len(ids) - 1] = 1.0
    nll, n = _sums(cfg, params, jnp.asarray(tokens), jnp.asarray(targets), jnp.asarray(weights))
    nll_total += float(nll)
    n_total += float(n)
  return {"loss": nll_total / max(n_total, 1.0), "tokens": int(n_total), "examples": len(rows),
          "truncated": truncated}


def _with_bos(tok, ids: list[int]) -> list[int]:
  return ([tok.bos_id] if tok.bos_id is not None else []) + ids


def solution_loss(cfg, params, tok, problems, **kw) -> dict:
  """Per-token loss of each problem's canonical solution after its prompt (BOS first, as in
  pretraining); problems without a canonical solution are skipped and counted."""
  pairs = [(_with_bos(tok, tok.encode(p.prompt)), tok.encode(p.canonical_solution))
           for p in problems if p.canonical_solution]
  if not pairs:
    raise ValueError(f"none of the {len(problems)} problems has a canonical solution to score")
  out = target_loss(cfg, params, pairs, **kw)
  out["skipped"] = len(problems) - len(pairs)
  # Per character: comparable across tokenizers (unless a pair was truncated).
  chars = sum(len(p.canonical_solution) for p in problems if p.canonical_solution)
  out["nats_per_char"] = out["loss"] * out["tokens"] / chars
  return out


def fim_middle_loss(cfg, params, tok, problems, order: str = fim.SPM, **kw) -> dict:
  """Per-token loss of each infilling problem's middle (`target`) after its FIM prompt in `order`
  (the pretraining layout, sampling.fim_prompt's), BOS first."""
  from seedcoder_jax.sampling import fim_prompt
  pairs = [(_with_bos(tok, fim_prompt(tok, p.prompt, p.suffix, order)), tok.encode(p.target))
           for p in problems if p.target]
  return target_loss(cfg, params, pairs, **kw)
