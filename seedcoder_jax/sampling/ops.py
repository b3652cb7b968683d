"""Next-token selection maths: repetition penalty, temperature, top-k, top-p, sampling, log-probs.

Small pure functions over a batch of float32 logits [B, V] with per-row settings [B], so one
compiled decode step serves a batch that mixes greedy and sampled rows. The order follows Hugging
Face's logits processors: repetition penalty, then temperature, then top-k, then top-p.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

NEG_INF = -jnp.inf


def repetition_penalty(logits_BV, seen_BV, penalty_B):
  """CTRL / Hugging Face penalty on tokens already seen (prompt or output): a positive logit is
  divided by the penalty, a negative one multiplied, so the token always becomes less likely.
  A penalty of 1 leaves the row unchanged (exactly)."""
  p_B1 = penalty_B[:, None]
  penalised_BV = jnp.where(logits_BV > 0, logits_BV / p_B1, logits_BV * p_B1)
  return jnp.where(seen_BV, penalised_BV, logits_BV)


def top_k_top_p_mask(logits_BV, top_k_B, top_p_B):
  """Boolean [B, V]: the tokens top-k and then top-p keep (always at least the most likely one).

  top_k 0 keeps every token; top_p 1.0 keeps every token. Top-p keeps the smallest set of most
  likely tokens (after top-k, renormalised) whose probability reaches top_p, as Hugging Face's
  TopPLogitsWarper does. Tokens tied with the last kept logit are kept too.
  """
  v = logits_BV.shape[-1]
  sorted_BV = -jnp.sort(-logits_BV, axis=-1)  # descending
  rank_V = jnp.arange(v)
  k_B = jnp.where(top_k_B > 0, jnp.minimum(top_k_B, v), v)
  in_top_k_BV = rank_V[None, :] < k_B[:, None]
  probs_BV = jax.nn.softmax(jnp.where(in_top_k_BV, sorted_BV, NEG_INF), axis=-1)
  mass_before_BV = jnp.cumsum(probs_BV, axis=-1) - probs_BV
  # top_p 1 keeps all: float32 cumulative sums can reach 1 before the last (tiny) probabilities.
  keep_BV = in_top_k_BV & ((mass_before_BV < top_p_B[:, None]) | (top_p_B[:, None] >= 1)
                           | (rank_V[None, :] == 0))
  n_keep_B = jnp.sum(keep_BV, axis=-1)
  cutoff_B = jnp.take_along_axis(sorted_BV, (n_keep_B - 1)[:, None], axis=-1)
  return logits_BV >= cutoff_B


SELECT_KINDS = ("greedy", "sample", "filtered")


def select(logits_BV, keys_B, *, temperature_B, top_k_B, top_p_B, penalty_B, seen_BV, kind: str):
  """Picks one token per row; returns (tokens [B] int32, log-probabilities [B] float32).

  Rows with temperature 0 take the argmax of the penalised logits, and their log-probability is
  under the penalised distribution at temperature 1 (with no penalty: the model's own). Other rows
  sample from softmax(penalised / temperature) restricted to the top-k/top-p set, and their
  log-probability is under that same distribution. `kind` (static) says what the batch needs:
  "greedy" (every row greedy: no random draws), "sample" (no row uses top-k/top-p: no vocabulary
  sort) or "filtered".
  """
  if kind not in SELECT_KINDS:
    raise ValueError(f"select kind {kind!r} is not one of {SELECT_KINDS}")
  logits_BV = repetition_penalty(logits_BV, seen_BV, penalty_B)
  greedy_B = temperature_B <= 0
  tokens_B = jnp.argmax(logits_BV, axis=-1).astype(jnp.int32)
  scaled_BV = logits_BV
  if kind != "greedy":
    scaled_BV = logits_BV / jnp.where(greedy_B, 1.0, temperature_B)[:, None]
    if kind == "filtered":
      # Greedy rows carry top_k 0 and top_p 1 (see Sampler): their distribution stays whole.
      scaled_BV = jnp.where(top_k_top_p_mask(scaled_BV, top_k_B, top_p_B), scaled_BV, NEG_INF)
    sampled_B = jax.vmap(jax.random.categorical)(keys_B, scaled_BV)
    tokens_B = jnp.where(greedy_B, tokens_B, sampled_B).astype(jnp.int32)
  logprobs_BV = jax.nn.log_softmax(scaled_BV, axis=-1)
  logprobs_B = jnp.take_along_axis(logprobs_BV, tokens_B[:, None], axis=-1)[:, 0]
  return tokens_B, logprobs_B


def sample_inverse_cdf(logits_BV, keys_B, *, temperature, block: int = 256):
  """Plain temperature sampling with one uniform per row; returns (tokens [B], log-probs [B]).

  The same distribution as `select(kind="sample")` with no filter or penalty, softmax(logits /
  temperature), but drawn by inverting its CDF instead of a Gumbel argmax: one random number per
  row instead of one per vocabulary entry, which on CPU cost more than the LM head (B x 49K
  threefry draws per step at SmolLM2's vocabulary). The CDF is searched in two levels (sums of
  `block`-token blocks, then inside the chosen block) so that no V-long cumulative sum is needed
  and float32 partial sums stay short. A token of probability 0 is never drawn. The log-probs are
  log_softmax(logits / temperature) at the drawn tokens.
  """
  b, v = logits_BV.shape
  logp_BV = jax.nn.log_softmax(logits_BV / temperature, axis=-1)
  pad = -v % block
  p_BNK = jnp.pad(jnp.exp(logp_BV), ((0, 0), (0, pad))).reshape(b, -1, block)
  n = p_BNK.shape[1]
  mass_BN = jnp.sum(p_BNK, axis=-1)
  ends_BN = jnp.cumsum(mass_BN, axis=-1)
  starts_BN = jnp.pad(ends_BN[:, :-1], ((0, 0), (1, 0)))
  # u in (0, total]: the first block whose end reaches u has mass (its end exceeds the previous
  # one), and inside it the first token whose running sum reaches u - start has probability > 0.
  u_B = (1.0 - jax.vmap(lambda k: jax.random.uniform(k, (), jnp.float32))(keys_B)) * ends_BN[:, -1]
  block_B = jnp.minimum(jnp.sum(ends_BN < u_B[:, None], axis=-1), n - 1)
  inner_BK = jnp.take_along_axis(p_BNK, block_B[:, None, None], axis=1)[:, 0]
  rest_B = u_B - jnp.take_along_axis(starts_BN, block_B[:, None], axis=-1)[:, 0]
  j_B = jnp.sum(jnp.cumsum(inner_BK, axis=-1) < rest_B[:, None], axis=-1)
  # The block's own sum may round below `rest`: stay on its last token of non-zero probability.
  last_j_B = block - 1 - jnp.argmax((inner_BK > 0)[:, ::-1], axis=-1)
  tokens_B = (block_B * block + jnp.minimum(j_B, last_j_B)).astype(jnp.int32)
  return tokens_B, jnp.take_along_axis(logp_BV, tokens_B[:, None], axis=-1)[:, 0]
