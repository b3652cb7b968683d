"""GRPO rollouts on the KV cache: G samples per prompt, shared prefill, slot refill.

    engine = RolloutEngine(cfg, slots=64, max_len=1024)
    groups = engine.rollouts(prompts, group_size=16, max_new_tokens=512, temperature=0.6,
                             seed=step, stop_ids=(eos,), params=params)
    groups[i][g].tokens, .logprobs, .finish_reason

How it runs. `slots` decode rows share one cache of `max_len` columns and one compiled decode
chunk (`chunk` steps of `lax.scan`). The host keeps a queue of rollouts (prompt i, sample g), in
order. Whenever slots are free it admits the next rollouts: the prompts among them that have no
prefill yet are prefilled together (one row per prompt, never per sample), and each admitted
rollout's slot receives a copy of its prompt's keys and values and draws its first token from the
prompt's shared last logits. After every chunk the host reads the new tokens, ends rows at a stop
id or at max_new_tokens, and frees their slots for the next admission; so short completions never
wait for long ones, and the device always decodes `slots` rows.

Cache layout: a ring. Decode step n writes every row's new key at column n mod C (C = max_len),
as the plain sampler writes all rows at one column, so the decode step is `kv_cache.decode_step`
unchanged (no per-row scatter). A rollout admitted when the step counter is s has its prompt
(left-padded to its bucket T) at columns s-T .. s-1 mod C, and its k-th fed token at column
s+k mod C; it feeds at most max_new_tokens - 1 tokens, so T + max_new_tokens - 1 <= C keeps its
own prompt from being overwritten while it lives. Attention reads keys through the per-row
`valid` mask with explicit RoPE positions, so where a key sits in the row does not matter.
An admission rewrites the admitted rows with one select over the cache (about one decode step's
cache traffic), at most once per chunk.

Compaction: once no rollout waits, finished rows would keep decoding in lockstep with the live
ones. When the live rows fit in half the rows or fewer, the engine gathers them (cache rows,
tokens, positions, keys) into a power-of-two smaller state and decodes that instead, so the
tail of a call, where a few long completions remain, runs at the cost of its live rows. A call
with fewer rollouts than slots also starts that small. Each row count is its own compiled decode
program (at most log2(slots) of them, reused by later calls); a mesh's data*fsdp stays the
smallest row count.

Randomness: rollout (i, g) draws its k-th token from fold_in(fold_in(fold_in(key(seed), i), g), k)
(one uniform per row, the CDF inverted: `ops.sample_inverse_cdf`), so the samples do not depend
on the slot count or the admission order (only float32 summation order does: the tests hold
tokens equal and log-probs to float32 tolerance).

Log-probs: log softmax(logits / temperature) of each sampled token, the distribution sampled
from (plain temperature sampling: no top-k, top-p or penalty, so the policy-gradient ratio against
`posttrain.token_logprobs(..., temperature=T)` is unbiased). Temperature 0 is greedy, with the
log-probs of the unscaled softmax. A stop token ends a completion and is part of it (tokens and
log-probs): the policy must learn to emit it, as DESIGN.md's `sequence_logprobs` mask says.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from seedcoder_jax import sharding as sharding_lib
from seedcoder_jax.model import kv_cache
from seedcoder_jax.model.config import ModelConfig
from seedcoder_jax.sampling import ops

MIN_PROMPT_BUCKET = 16


@dataclasses.dataclass
class Rollout:
  tokens: list[int]        # the sampled completion, its stop token included when it stopped
  logprobs: list[float]    # float32 log softmax(logits / temperature) of each token in `tokens`
  finish_reason: str       # "stop" (ended with a stop id) | "length" (max_new_tokens reached)


@dataclasses.dataclass
class RolloutStats:
  """What the last `rollouts` call did (tests assert the scheduling through these)."""

  prefills: int = 0          # prompts prefilled (one per prompt, not per sample)
  prefill_calls: int = 0     # compiled prefill launches (several prompts each)
  admissions: int = 0        # rollouts placed into a slot
  refills: int = 0           # of those, placed into a slot that an earlier rollout had freed
  decode_chunks: int = 0
  compactions: int = 0       # times the live rows were gathered into a smaller state
  row_steps: int = 0         # decode rows x steps computed (live or not)
  decode_steps: int = 0      # decode steps run (chunks x chunk)
  tokens: int = 0            # completion tokens returned


def bucket(n: int, minimum: int = 1) -> int:
  """The smallest power of two >= max(n, minimum)."""
  return 1 << (max(n, minimum) - 1).bit_length()


def _kind(temperature):
  return "greedy" if temperature <= 0 else "sample"


def _select(logits_BV, keys_B, step_B, temperature, kind):
  """Plain temperature sampling (one uniform per row, ops.sample_inverse_cdf) or greedy."""
  b, v = logits_BV.shape
  step_keys_B = jax.vmap(jax.random.fold_in)(keys_B, step_B)
  if kind == "sample":
    return ops.sample_inverse_cdf(logits_BV, step_keys_B, temperature=temperature)
  return ops.select(
      logits_BV, step_keys_B, temperature_B=jnp.full((b,), temperature, jnp.float32),
      top_k_B=jnp.zeros((b,), jnp.int32), top_p_B=jnp.ones((b,), jnp.float32),
      penalty_B=jnp.ones((b,), jnp.float32), seen_BV=jnp.zeros((b, v), bool), kind=kind)


@functools.partial(jax.jit, static_argnames=("cfg",))
def _prefill(params, tokens_PT, segment_ids_PT, positions_PT, *, cfg):
  """The prompts' last logits [P, V] and their keys/values ([L, P, K, T, Dh], valid [P, T])."""
  logits_PV, cache = kv_cache.prefill(cfg, params, tokens_PT, segment_ids_PT, positions_PT,
                                      tokens_PT.shape[1])
  return logits_PV, cache


@functools.partial(jax.jit, static_argnames=("shape", "dtype"))
def _empty_cache(shape, dtype):
  """An all-invalid cache (k, v [L, B, K, C, Dh]) made on the devices under its logical sharding."""
  return kv_cache.constrain({"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype),
                             "valid": jnp.zeros((shape[1], shape[3]), bool)})


@functools.partial(jax.jit, static_argnames=("kind",), donate_argnums=(0,))
def _admit(state, logits_PV, prompt, src_B, prompt_B, sample_B, length_B, seed, *, kind):
  """Places prompt `src_B[b]` (-1: leave the row alone) into row b and samples its first token.

  Returns (state, first tokens [B], their log-probs [B]); only admitted rows' values mean
  anything. The prompt's T columns go to s-T .. s-1 mod C (s = the step counter, see the module
  docstring); the rest of the row becomes invalid, so the previous occupant's keys are never read.
  """
  cache = state["cache"]
  c = cache["valid"].shape[1]
  t = prompt["valid"].shape[1]
  admit_B = src_B >= 0
  src_B = jnp.maximum(src_B, 0)
  # Column col of an admitted row holds prompt column j = (col - s + T) mod C when j < T.
  j_C = (jnp.arange(c) - state["index"] + t) % c
  in_prompt_C = j_C < t
  j_C = jnp.minimum(j_C, t - 1)

  def place(old_LBKCD, new_LPKTD):
    new_LBKCD = jnp.take(new_LPKTD[:, src_B], j_C, axis=3)
    take_BC = admit_B[:, None] & in_prompt_C[None, :]
    return jnp.where(take_BC[None, :, None, :, None], new_LBKCD.astype(old_LBKCD.dtype), old_LBKCD)

  valid_BC = jnp.take(prompt["valid"][src_B], j_C, axis=1) & in_prompt_C[None, :]
  cache = {"k": place(cache["k"], prompt["k"]), "v": place(cache["v"], prompt["v"]),
           "valid": jnp.where(admit_B[:, None], valid_BC, cache["valid"])}
  root = jax.random.key(seed)
  new_keys_B = jax.vmap(lambda i, g: jax.random.fold_in(jax.random.fold_in(root, i), g))(
      prompt_B, sample_B)
  keys_B = jax.random.wrap_key_data(jnp.where(
      admit_B[:, None], jax.random.key_data(new_keys_B), jax.random.key_data(state["keys"])))
  step_B = jnp.where(admit_B, 0, state["step"])
  token_B, logprob_B = _select(logits_PV[src_B], keys_B, step_B, state["temperature"], kind)
  state = dict(state, cache=kv_cache.constrain(cache), keys=keys_B,
               step=jnp.where(admit_B, 1, state["step"]),
               token=jnp.where(admit_B, token_B, state["token"]),
               position=jnp.where(admit_B, length_B, state["position"]))
  return state, token_B, logprob_B


@jax.jit
def _compact(state, rows_R):
  """The state of rows rows_R only (the cache's axis 1, every other per-row array's axis 0)."""
  cache = state["cache"]
  cache = {"k": cache["k"][:, rows_R], "v": cache["v"][:, rows_R], "valid": cache["valid"][rows_R]}
  return dict(state, cache=kv_cache.constrain(cache), token=state["token"][rows_R],
              position=state["position"][rows_R], step=state["step"][rows_R],
              keys=state["keys"][rows_R])


@functools.partial(jax.jit, static_argnames=("cfg", "n_steps", "kind"), donate_argnums=(1,))
def _decode(params, state, *, cfg, n_steps, kind):
  """n_steps decode steps of every row; returns (state, tokens [B, N], log-probs [B, N])."""
  c = state["cache"]["valid"].shape[1]

  def step(state, _):
    logits_BV, cache = kv_cache.decode_step(cfg, params, state["cache"], state["token"],
                                            state["position"], state["index"] % c)
    token_B, logprob_B = _select(logits_BV, state["keys"], state["step"], state["temperature"],
                                 kind)
    state = dict(state, cache=cache, token=token_B, position=state["position"] + 1,
                 index=state["index"] + 1, step=state["step"] + 1)
    return state, (token_B, logprob_B)

  state, (tokens_NB, logprobs_NB) = jax.lax.scan(step, state, None, length=n_steps)
  return state, tokens_NB.T, logprobs_NB.T


class _Slot:
  """Host bookkeeping of the rollout a slot decodes."""

  def __init__(self, prompt: int, sample: int):
    self.prompt, self.sample = prompt, sample
    self.rollout = Rollout([], [], "length")
    self.done = False

  def add(self, token: int, logprob: float, stop_ids, max_new: int) -> None:
    if self.done:
      return
    self.rollout.tokens.append(token)
    self.rollout.logprobs.append(logprob)
    if token in stop_ids:
      self.rollout.finish_reason, self.done = "stop", True
    elif len(self.rollout.tokens) >= max_new:
      self.done = True


class RolloutEngine:
  """G-sample rollouts with shared prefill and slot refill (see the module docstring).

  Args:
    cfg: the model config (params may come per call; the same shapes never recompile).
    params: default parameters for `rollouts`.
    slots: decode rows (a multiple of the mesh's data*fsdp when a mesh is given).
    max_len: cache columns C; every prompt's bucket + max_new_tokens - 1 must fit.
    mesh: rows shard over (data, fsdp), heads over tensor; parameters are placed with
      `sharding.param_shardings`.
    chunk: decode steps per compiled chunk; the host frees and refills slots between chunks.
    compact: once nothing waits, decode only the live rows (see the module docstring).
  """

  def __init__(self, cfg: ModelConfig, params=None, *, slots: int, max_len: int, mesh=None,
               chunk: int = 16, compact: bool = True):
    if slots < 1 or chunk < 1:
      raise ValueError(f"slots={slots} and chunk={chunk} must be at least 1")
    self.cfg = cfg.replace(attention_impl="xla") if cfg.attention_impl == "splash" else cfg
    self.slots, self.max_len, self.mesh, self.chunk = slots, max_len, mesh, chunk
    self.compact = compact
    self._multiple = 1
    if mesh is not None:
      sharding_lib.check_params_fit(cfg, mesh)
      self._multiple = int(np.prod([mesh.shape[a] for a in sharding_lib.BATCH_AXES]))
      if slots % self._multiple:
        raise ValueError(f"slots={slots} is not a multiple of the mesh's data*fsdp = "
                         f"{self._multiple}")
    self.params = params
    self.stats = RolloutStats()

  def _place_params(self, params):
    if self.mesh is None:
      return params
    return jax.device_put(params, sharding_lib.param_shardings(self.cfg, self.mesh))

  def _place(self, tree):
    return tree if self.mesh is None else sharding_lib.place_batch(tree, self.mesh)

  def _context(self):
    return contextlib.nullcontext() if self.mesh is None else sharding_lib.activate(self.mesh)

  def _check(self, prompts, group_size, max_new_tokens, temperature):
    if group_size < 1 or max_new_tokens < 1:
      raise ValueError(f"group_size={group_size} and max_new_tokens={max_new_tokens} must be >= 1")
    if not temperature >= 0:
      raise ValueError(f"temperature={temperature} must be >= 0 (0 = greedy)")
    for i, p in enumerate(prompts):
      if not p:
        raise ValueError(f"prompt {i} is empty")
      if not all(0 <= t < self.cfg.vocab_size for t in p):
        raise ValueError(f"prompt {i} has token ids outside [0, {self.cfg.vocab_size})")
      t = bucket(len(p), MIN_PROMPT_BUCKET)
      if t + max_new_tokens - 1 > self.max_len:
        raise ValueError(f"prompt {i}: its {t}-token bucket + max_new_tokens {max_new_tokens} - 1 "
                         f"exceed the engine's max_len {self.max_len}")

  def _rows_for(self, live: int) -> int:
    """The smallest row count (a power of two, a multiple of the mesh's data*fsdp) >= live."""
    m = self._multiple
    return min(self.slots, -(-bucket(live) // m) * m)

  def _initial_state(self, temperature, b):
    c, cfg = self.max_len, self.cfg
    dtype = jnp.bfloat16 if cfg.compute_dtype == "bfloat16" else jnp.float32
    shape = kv_cache.shape(cfg, b, c)
    # The cache's rows are its axis 1 ([L, B, K, C, Dh]): it is made on the devices under its
    # own logical sharding, not placed as a batch (whose rows are axis 0).
    cache = _empty_cache(shape, jnp.dtype(dtype))
    rows = self._place({"token": np.zeros(b, np.int32),
                        "position": np.zeros(b, np.int32), "step": np.zeros(b, np.int32),
                        "keys": np.zeros((b, *jax.random.key_data(jax.random.key(0)).shape),
                                         np.uint32)})
    return dict(rows, cache=cache, keys=jax.random.wrap_key_data(rows["keys"]),
                index=jnp.zeros((), jnp.int32), temperature=jnp.asarray(temperature, jnp.float32))

  def _prefill_prompts(self, params, prompts, ids):
    """One prefill launch per prompt bucket for the prompts `ids`; returns {id: (batch, row)}."""
    by_bucket: dict[int, list[int]] = {}
    for i in ids:
      by_bucket.setdefault(bucket(len(prompts[i]), MIN_PROMPT_BUCKET), []).append(i)
    where = {}
    for t, group in by_bucket.items():
      m = self._multiple
      p = -(-bucket(len(group)) // m) * m
      tokens = np.zeros((p, t), np.int32)
      segments = np.zeros((p, t), np.int32)
      positions = np.zeros((p, t), np.int32)
      for r in range(p):
        ids_r = prompts[group[r]] if r < len(group) else prompts[group[0]][-1:]  # filler row
        tokens[r, t - len(ids_r):] = ids_r
        segments[r, t - len(ids_r):] = 1
        positions[r, t - len(ids_r):] = np.arange(len(ids_r))
      logits, cache = _prefill(params, *self._place((tokens, segments, positions)), cfg=self.cfg)
      batch = {"logits": logits, "cache": cache}
      for r, i in enumerate(group):
        where[i] = (batch, r)
      self.stats.prefills += len(group)
      self.stats.prefill_calls += 1
    return where

  def rollouts(self, prompts: list[list[int]], *, group_size: int, max_new_tokens: int,
               temperature: float, seed: int, stop_ids: tuple[int, ...] = (),
               params=None, stop_when=None) -> list[list[Rollout]]:
    """group_size rollouts of each prompt (token ids), in order: out[i][g].

    stop_when: optional host check `(prompt index, tokens so far) -> bool` run after every
    decode chunk (e.g. a text stop sequence); a row it ends finishes as "stop" and keeps the
    chunk's tokens, which may run past the stop point: the caller cuts the text.
    """
    prompts = [[int(t) for t in p] for p in prompts]
    self._check(prompts, group_size, max_new_tokens, temperature)
    params = self.params if params is None else params
    if params is None:
      raise ValueError("no params: pass them to RolloutEngine or to rollouts")
    # the kernels in the compute dtype once per call, not once per decode step (same logits)
    params = kv_cache.cast_params(self.cfg, self._place_params(params))
    stop_ids = frozenset(int(s) for s in stop_ids)
    kind = _kind(temperature)
    # Short completions need no long chunk (one decode program per call shape, as the Sampler).
    n_steps = min(self.chunk, bucket(max_new_tokens - 1)) if max_new_tokens > 1 else 1
    self.stats = stats = RolloutStats()
    out = [[None] * group_size for _ in prompts]
    queue = [(i, g) for i in range(len(prompts)) for g in range(group_size)]
    queue.reverse()  # pop() from the end takes them in order
    rows = self._rows_for(len(queue)) if self.compact else self.slots
    slots: list[_Slot | None] = [None] * rows
    used = [False] * rows
    prefilled: dict[int, tuple[dict, int]] = {}

    with self._context():
      state = self._initial_state(temperature, rows)
      while queue or any(s is not None for s in slots):
        # Admit waiting rollouts into free slots (repeat: a first token may already end a row).
        while queue and None in slots:
          free = [b for b, s in enumerate(slots) if s is None]
          taken = [queue.pop() for _ in range(min(len(free), len(queue)))]
          new = sorted({i for i, _ in taken if i not in prefilled})
          prefilled.update(self._prefill_prompts(params, prompts, new))
          # One admission launch per prefill batch the taken rollouts come from.
          batches: dict[int, list] = {}
          for (i, g), b in zip(taken, free):
            batches.setdefault(id(prefilled[i][0]), []).append((i, g, b))
          for rows in batches.values():
            batch = prefilled[rows[0][0]][0]
            src = np.full(len(slots), -1, np.int32)
            prompt_i = np.zeros(len(slots), np.int32)
            sample_g = np.zeros(len(slots), np.int32)
            length = np.zeros(len(slots), np.int32)
            for i, g, b in rows:
              src[b], prompt_i[b], sample_g[b], length[b] = prefilled[i][1], i, g, len(prompts[i])
              stats.refills += used[b]
              used[b] = True
              slots[b] = _Slot(i, g)
            rows_B = self._place((src, prompt_i, sample_g, length))
            state, token_B, logprob_B = _admit(state, batch["logits"], batch["cache"], *rows_B,
                                               jnp.asarray(seed, jnp.uint32), kind=kind)
            token_B, logprob_B = np.asarray(token_B), np.asarray(logprob_B)
            for i, g, b in rows:
              slots[b].add(int(token_B[b]), float(logprob_B[b]), stop_ids, max_new_tokens)
            stats.admissions += len(rows)
          self._retire(slots, out, stats)
          # A prompt's cache is kept only while samples of it still wait: the queue is in order,
          # so only the prompt at its head can have any.
          head = queue[-1][0] if queue else None
          prefilled = {i: w for i, w in prefilled.items() if i == head}
        if not any(s is not None for s in slots):
          continue
        state, tokens_BN, logprobs_BN = _decode(params, state, cfg=self.cfg, n_steps=n_steps,
                                                kind=kind)
        stats.decode_chunks += 1
        stats.decode_steps += n_steps
        stats.row_steps += n_steps * len(slots)
        tokens_BN, logprobs_BN = np.asarray(tokens_BN), np.asarray(logprobs_BN)
        for b, s in enumerate(slots):
          if s is not None:
            for token, logprob in zip(tokens_BN[b], logprobs_BN[b]):
              s.add(int(token), float(logprob), stop_ids, max_new_tokens)
            if stop_when is not None and not s.done and stop_when(s.prompt, s.rollout.tokens):
              s.rollout.finish_reason, s.done = "stop", True
        self._retire(slots, out, stats)
        live = [b for b, s in enumerate(slots) if s is not None]
        target = self._rows_for(len(live)) if live else len(slots)
        if self.compact and not queue and target <= len(slots) // 2:
          free = [b for b, s in enumerate(slots) if s is None]
          keep = live + free[:target - len(live)]
          state = _compact(state, jnp.asarray(keep, jnp.int32))
          slots = [slots[b] for b in keep]
          stats.compactions += 1
    return out

  @staticmethod
  def _retire(slots, out, stats):
    for b, s in enumerate(slots):
      if s is not None and s.done:
        out[s.prompt][s.sample] = s.rollout
        stats.tokens += len(s.rollout.tokens)
        slots[b] = None
