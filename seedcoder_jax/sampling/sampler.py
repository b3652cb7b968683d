"""Batched generation with a preallocated KV cache: `Sampler.generate`.

One batch runs as: left-pad the prompts to a power-of-two length bucket, prefill (one compiled
program per (batch, prompt bucket, cache length) shape) which also picks the first token, then a
jitted chunk of `lax.scan` decode steps (one program per (batch, cache length, chunk)) until every
row has finished. Left padding puts every row's last prompt token in the same column, so all rows
write the same cache slot each step; padded slots are never valid keys, and RoPE positions count
real tokens only, so a padded row computes what it would alone.

The host checks each chunk's tokens for EOS, stop token ids, text stop sequences and per-row
lengths (the device just decodes; finished rows keep decoding in lockstep and their extra tokens
are dropped), and stops launching chunks when every row has finished.

Randomness: row i of a `generate` call draws from fold_in(key(seed), i) folded with the step, so
the same call with the same seeds gives the same samples, and n copies of one prompt in one call
give n different samples (pass@k).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from seedcoder_jax import sharding as sharding_lib
from seedcoder_jax.model import kv_cache
from seedcoder_jax.model.config import ModelConfig
from seedcoder_jax.sampling import ops

MIN_PROMPT_BUCKET = 16
MAX_CHUNK = 16  # decode steps per compiled chunk: host checks happen between chunks


@dataclasses.dataclass(frozen=True)
class SamplingParams:
  """How one prompt is continued (OpenAI-style fields)."""

  max_new_tokens: int = 128
  temperature: float = 0.0            # 0.0 = greedy
  top_k: int = 0                      # 0 = off
  top_p: float = 1.0                  # 1.0 = off
  repetition_penalty: float = 1.0     # 1.0 = off (CTRL/HF-style on logits of tokens already seen)
  stop: tuple[str, ...] = ()          # text stop sequences (need a tokenizer); not in the output
  stop_token_ids: tuple[int, ...] = ()  # besides the tokenizer's EOS; never in the output
  seed: int = 0

  def __post_init__(self):
    errors = []
    if self.max_new_tokens < 1:
      errors.append(f"max_new_tokens={self.max_new_tokens} must be at least 1")
    if not self.temperature >= 0:
      errors.append(f"temperature={self.temperature} must be >= 0")
    if self.top_k < 0:
      errors.append(f"top_k={self.top_k} must be >= 0 (0 = off)")
    if not 0 < self.top_p <= 1:
      errors.append(f"top_p={self.top_p} must be in (0, 1]")
    if not self.repetition_penalty > 0:
      errors.append(f"repetition_penalty={self.repetition_penalty} must be > 0")
    if isinstance(self.stop, str) or any(not isinstance(s, str) or not s for s in self.stop):
      errors.append(f"stop={self.stop!r} must be a tuple of non-empty strings")
    if errors:
      raise ValueError("invalid SamplingParams: " + "; ".join(errors))


@dataclasses.dataclass
class Completion:
  tokens: list[int]          # the new token ids (stop sequence / EOS excluded)
  logprobs: list[float]      # log-probability of each returned token (see ops.select)
  text: str | None           # decoded new text when the sampler has a tokenizer
  finish_reason: str         # "stop" (EOS, stop token or stop sequence) | "length"
  prompt_tokens: int


def _bucket(n: int, minimum: int = 1) -> int:
  """The smallest power of two >= max(n, minimum)."""
  return 1 << (max(n, minimum) - 1).bit_length()


_ROW_FIELDS = ("temperature", "top_k", "top_p", "penalty", "seed")


@functools.partial(jax.jit, static_argnames=("cfg", "cache_len", "kind"))
def _prefill(params, tokens_BT, segment_ids_BT, positions_BT, rows, *, cfg, cache_len, kind):
  """Prefill and the first token; returns (decode state, tokens [B], log-probs [B])."""
  logits_BV, cache = kv_cache.prefill(cfg, params, tokens_BT, segment_ids_BT, positions_BT,
                                      cache_len)
  b, t = tokens_BT.shape
  rows_B1 = jnp.arange(b)[:, None]
  # Padding is scattered out of bounds and dropped: only real prompt tokens count as seen.
  seen_BV = jnp.zeros((b, cfg.vocab_size), bool).at[
      rows_B1, jnp.where(segment_ids_BT != 0, tokens_BT, cfg.vocab_size)].set(True, mode="drop")
  keys_B = jax.vmap(lambda s, i: jax.random.fold_in(jax.random.key(s), i))(rows["seed"],
                                                                           rows["index"])
  state = {"cache": cache, "seen": seen_BV, "keys": keys_B, "rows": rows,
           "token": jnp.zeros((b,), jnp.int32), "position": jnp.sum(segment_ids_BT != 0, axis=1),
           "index": jnp.asarray(t, jnp.int32), "step": jnp.asarray(0, jnp.int32)}
  return _pick(state, logits_BV, kind)


def _pick(state, logits_BV, kind):
  """Selects the next tokens from logits and advances the step counters."""
  rows = state["rows"]
  step_keys_B = jax.vmap(jax.random.fold_in, in_axes=(0, None))(state["keys"], state["step"])
  token_B, logprob_B = ops.select(
      logits_BV, step_keys_B, temperature_B=rows["temperature"], top_k_B=rows["top_k"],
      top_p_B=rows["top_p"], penalty_B=rows["penalty"], seen_BV=state["seen"], kind=kind)
  b = token_B.shape[0]
  state = dict(state, token=token_B, step=state["step"] + 1,
               seen=state["seen"].at[jnp.arange(b), token_B].set(True))
  return state, token_B, logprob_B


@functools.partial(jax.jit, static_argnames=("cfg", "n_steps", "kind"), donate_argnums=(1,))
def _decode(params, state, *, cfg, n_steps, kind):
  """n_steps decode steps; returns (state, tokens [B, n_steps], log-probs [B, n_steps])."""

  def step(state, _):
    logits_BV, cache = kv_cache.decode_step(cfg, params, state["cache"], state["token"],
                                            state["position"], state["index"])
    state = dict(state, cache=cache, position=state["position"] + 1, index=state["index"] + 1)
    state, token_B, logprob_B = _pick(state, logits_BV, kind)
    return state, (token_B, logprob_B)

  state, (tokens_NB, logprobs_NB) = jax.lax.scan(step, state, None, length=n_steps)
  return state, tokens_NB.T, logprobs_NB.T


class _Row:
  """Host-side bookkeeping of one prompt's output."""

  def __init__(self, params: SamplingParams, stop_ids: frozenset, prompt_tokens: int):
    self.params, self.stop_ids, self.prompt_tokens = params, stop_ids, prompt_tokens
    self.tokens: list[int] = []
    self.logprobs: list[float] = []
    self.finish_reason: str | None = None
    self.cut_text: str | None = None  # the decoded text before the stop sequence, once found
    self._checked = 0  # number of tokens already searched for stop sequences

  def add(self, token: int, logprob: float) -> None:
    if self.finish_reason is not None:
      return
    if token in self.stop_ids:
      self.finish_reason = "stop"
      return
    self.tokens.append(token)
    self.logprobs.append(logprob)
    if len(self.tokens) >= self.params.max_new_tokens:
      self.finish_reason = "length"

  def check_stop_text(self, tokenizer) -> None:
    """Cuts the output before the earliest stop sequence; tokens keep only those wholly before."""
    if not self.params.stop or self.cut_text is not None or self._checked == len(self.tokens):
      return
    self._checked = len(self.tokens)
    text = tokenizer.decode(self.tokens)
    found = [i for i in (text.find(s) for s in self.params.stop) if i >= 0]
    if not found:
      return
    cut = min(found)
    self.cut_text = text[:cut]
    m = len(self.tokens)
    while m > 0 and len(tokenizer.decode(self.tokens[:m])) > cut:
      m -= 1
    del self.tokens[m:], self.logprobs[m:]
    self.finish_reason = "stop"

  def completion(self, tokenizer) -> Completion:
    text = None
    if tokenizer is not None:
      text = self.cut_text if self.cut_text is not None else tokenizer.decode(self.tokens)
    return Completion(list(self.tokens), list(self.logprobs), text, self.finish_reason or "length",
                      self.prompt_tokens)


class Sampler:
  """Generates continuations of token-id or text prompts with one model.

  Args:
    cfg, params: the model (params as from init_params, interop loaders or a checkpoint).
    tokenizer: a seedcoder_jax.tokenizer.Tokenizer; needed for text prompts, text stop sequences
      and Completion.text; its EOS id always stops a row.
    max_batch: rows per compiled batch (longer prompt lists run in chunks of it).
    max_len: the longest prompt + new tokens (default cfg.max_seq_len).
    mesh: a seedcoder_jax.sharding mesh: parameters are placed with param_shardings, batch rows
      over (data, fsdp), heads over tensor.
  """

  def __init__(self, cfg: ModelConfig, params, *, tokenizer=None, max_batch: int = 16,
               max_len: int | None = None, mesh=None):
    if max_batch < 1:
      raise ValueError(f"max_batch={max_batch} must be at least 1")
    self.cfg = cfg.replace(attention_impl="xla") if cfg.attention_impl == "splash" else cfg
    self.tokenizer = tokenizer
    self.max_batch = max_batch
    self.max_len = max_len or cfg.max_seq_len
    self.mesh = mesh
    self._batch_multiple = 1
    if mesh is not None:
      sharding_lib.check_params_fit(cfg, mesh)
      self._batch_multiple = int(np.prod([mesh.shape[a] for a in sharding_lib.BATCH_AXES]))
      if max_batch % self._batch_multiple:
        raise ValueError(f"max_batch={max_batch} is not a multiple of the mesh's data*fsdp = "
                         f"{self._batch_multiple}")
      params = jax.device_put(params, sharding_lib.param_shardings(cfg, mesh))
    self.params = kv_cache.cast_params(self.cfg, params)  # the kernels in the compute dtype, once

  # --- inputs ---------------------------------------------------------------------------------

  def _prompt_ids(self, prompts) -> list[list[int]]:
    if isinstance(prompts, (str, bytes)) or not isinstance(prompts, Sequence):
      raise TypeError("prompts must be a sequence of strings or of token-id sequences")
    out = []
    for i, p in enumerate(prompts):
      if isinstance(p, str):
        if self.tokenizer is None:
          raise ValueError(f"prompt {i} is text but the Sampler has no tokenizer")
        p = self.tokenizer.encode(p)
      ids = [int(t) for t in p]
      if not ids:
        raise ValueError(f"prompt {i} is empty")
      bad = [t for t in ids if not 0 <= t < self.cfg.vocab_size]
      if bad:
        raise ValueError(f"prompt {i} has token ids outside [0, {self.cfg.vocab_size}): {bad[:5]}")
      out.append(ids)
    return out

  def _row_params(self, params, n: int) -> list[SamplingParams]:
    if isinstance(params, SamplingParams):
      return [params] * n
    params = list(params)
    if len(params) != n:
      raise ValueError(f"got {len(params)} SamplingParams for {n} prompts")
    for i, p in enumerate(params):
      if not isinstance(p, SamplingParams):
        raise TypeError(f"params[{i}] is {type(p).__name__}, not SamplingParams")
      if p.stop and self.tokenizer is None:
        raise ValueError(f"params[{i}] has text stop sequences but the Sampler has no tokenizer")
    return params

  def _stop_ids(self, p: SamplingParams) -> frozenset:
    eos = getattr(self.tokenizer, "eos_id", None) if self.tokenizer is not None else None
    return frozenset(p.stop_token_ids) | ({eos} if eos is not None else set())

  # --- generation -----------------------------------------------------------------------------

  def generate(self, prompts, params: SamplingParams | Sequence[SamplingParams] = SamplingParams()
               ) -> list[Completion]:
    """Continues each prompt (text, or token ids); returns one Completion per prompt, in order."""
    ids = self._prompt_ids(prompts)
    row_params = self._row_params(params, len(ids))
    if isinstance(params, SamplingParams) and params.stop and self.tokenizer is None:
      raise ValueError("SamplingParams.stop needs a tokenizer")
    for i, (p, sp) in enumerate(zip(ids, row_params)):
      if len(p) + sp.max_new_tokens > self.max_len:
        raise ValueError(f"prompt {i}: {len(p)} prompt tokens + max_new_tokens "
                         f"{sp.max_new_tokens} exceed the sampler's max_len {self.max_len}")
    out = []
    for start in range(0, len(ids), self.max_batch):
      stop = start + self.max_batch
      out.extend(self._generate_batch(ids[start:stop], row_params[start:stop], start))
    return out

  def _shapes(self, ids, row_params) -> tuple[int, int, int]:
    """(batch, prompt bucket, cache length): powers of two, capped by max_batch / max_len."""
    m = self._batch_multiple  # rows shard over (data, fsdp): a multiple of their size
    b = min(-(-_bucket(len(ids), m) // m) * m, self.max_batch)
    max_new = max(p.max_new_tokens for p in row_params)
    t = min(_bucket(max(len(p) for p in ids), MIN_PROMPT_BUCKET), self.max_len - max_new)
    return b, t, min(_bucket(t + max_new), self.max_len)

  def _generate_batch(self, ids, row_params, first_index) -> list[Completion]:
    n = len(ids)
    b, t, cache_len = self._shapes(ids, row_params)
    tokens = np.zeros((b, t), np.int32)
    segments = np.zeros((b, t), np.int32)
    positions = np.zeros((b, t), np.int32)
    for i in range(b):
      p = ids[i] if i < n else ids[0][-1:]  # batch filler rows: one token, output dropped
      tokens[i, t - len(p):] = p
      segments[i, t - len(p):] = 1
      positions[i, t - len(p):] = np.arange(len(p))
    filler = SamplingParams(max_new_tokens=1)
    ps = [row_params[i] if i < n else filler for i in range(b)]
    sampled = [p.temperature > 0 for p in ps]
    rows = {
        "temperature": np.array([p.temperature for p in ps], np.float32),
        # Greedy rows carry no filter, so their log-probs are of the unfiltered distribution.
        "top_k": np.array([p.top_k if s else 0 for p, s in zip(ps, sampled)], np.int32),
        "top_p": np.array([p.top_p if s else 1.0 for p, s in zip(ps, sampled)], np.float32),
        "penalty": np.array([p.repetition_penalty for p in ps], np.float32),
        "seed": np.array([p.seed for p in ps], np.uint32),
        "index": np.arange(first_index, first_index + b, dtype=np.int32),
    }
    kind = "greedy" if not any(sampled) else "sample"
    if any(r > 0 for r in rows["top_k"]) or any(r < 1 for r in rows["top_p"]):
      kind = "filtered"
    out = [_Row(row_params[i], self._stop_ids(row_params[i]), len(ids[i])) for i in range(n)]
    max_new = max(p.max_new_tokens for p in row_params)

    with self._context():
      inputs = (tokens, segments, positions, rows)
      if self.mesh is not None:
        inputs = sharding_lib.place_batch(inputs, self.mesh)
      state, token_B, logprob_B = _prefill(self.params, *inputs, cfg=self.cfg,
                                           cache_len=cache_len, kind=kind)
      self._record(out, np.asarray(token_B)[:, None], np.asarray(logprob_B)[:, None])
      done = 1
      # One chunk length per batch (one decode program); the last chunk may overshoot max_new.
      n_steps = min(MAX_CHUNK, _bucket(max_new - 1))
      while done < max_new and any(r.finish_reason is None for r in out):
        state, tokens_BN, logprobs_BN = _decode(self.params, state, cfg=self.cfg, n_steps=n_steps,
                                                kind=kind)
        self._record(out, np.asarray(tokens_BN), np.asarray(logprobs_BN))
        done += n_steps
    return [r.completion(self.tokenizer) for r in out]

  def _record(self, out: list[_Row], tokens_BN: np.ndarray, logprobs_BN: np.ndarray) -> None:
    for i, row in enumerate(out):
      for token, logprob in zip(tokens_BN[i], logprobs_BN[i]):
        row.add(int(token), float(logprob))
      if self.tokenizer is not None:
        row.check_stop_text(self.tokenizer)

  def _context(self):
    if self.mesh is None:
      return contextlib.nullcontext()
    return sharding_lib.activate(self.mesh)


def generate(cfg: ModelConfig, params, prompts, *, max_new_tokens: int, temperature: float = 0.0,
             seed: int = 0) -> list[list[int]]:
  """DESIGN.md's contract: the new token ids of each prompt (token-id lists of any lengths)."""
  sampler = Sampler(cfg, params, max_len=max(cfg.max_seq_len,
                                             max(len(p) for p in prompts) + max_new_tokens))
  sp = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, seed=seed)
  return [c.tokens for c in sampler.generate(prompts, sp)]
