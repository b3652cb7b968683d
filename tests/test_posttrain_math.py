"""Post-training maths against hand-computed values: log-probs, DPO, GRPO advantages, the policy
loss, and exact gradient accumulation. Parity with TRL and verl: test_posttrain_reference.py."""

import ast
import functools
import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from numerics import assert_close_to_scale, f32_rtol
from seedcoder_jax import model, posttrain
from seedcoder_jax.posttrain import grpo, logprobs

CFG = model.preset("tiny")
ROOT = pathlib.Path(__file__).resolve().parents[1]
# Jitted (configs are frozen, hashable dataclasses): eager linen dispatch is slow on CPU.
token_logprobs = jax.jit(posttrain.token_logprobs, static_argnums=0, static_argnames="temperature")
sequence_logprobs = jax.jit(posttrain.sequence_logprobs, static_argnums=0, static_argnames="temperature")


def _params(cfg, fill):
  """Parameters from abstract shapes: model.init_params would compile the Flax init (~8 s here)."""
  return jax.tree_util.tree_map_with_path(
      lambda path, x: jnp.asarray(fill(jax.tree_util.keystr(path), x.shape), jnp.float32),
      model.abstract_params(cfg))


@pytest.fixture(scope="module")
def params():
  # Weights of std 0.1 (logits far from uniform), norm scales around 1 (not all ones).
  rng = np.random.default_rng(3)
  return _params(CFG, lambda name, shape: ("scale" in name) + 0.1 * rng.standard_normal(shape))


def _close(got, want, terms=4):
  """Hand values of scale ~1: float32 rounding of a few operations."""
  np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=f32_rtol(terms),
                             atol=f32_rtol(terms))


# --- token_logprobs / sequence_logprobs -----------------------------------------------------------


def _bigram_model():
  """A 1-layer model whose logits after token i are exactly M[i]: every layer kernel is 0 (the
  residual stream stays the embedding), embedding rows are one-hot, so the final RMSNorm gives
  2 * onehot(i) (D = 4), and lm_head = M / 2."""
  cfg = model.ModelConfig(vocab_size=4, d_model=4, n_layers=1, n_heads=1, n_kv_heads=1, head_dim=2,
                          d_ff=4, rms_norm_eps=1e-12, attention_impl="xla")
  zeros = _params(cfg, lambda name, shape: np.full(shape, float("scale" in name)))
  m = np.zeros((4, 4), np.float32)
  m[0] = [0.0, 0.0, math.log(2.0), 0.0]  # after 0: p(2) = 2 / 5; at temperature 1/2: 4 / 7
  m[2] = [math.log(3.0), 0.0, 0.0, 0.0]  # after 2: p(0) = 3 / 6; at temperature 1/2: 9 / 12
  zeros["embed"]["embedding"] = jnp.eye(4)
  zeros["lm_head"]["kernel"] = jnp.asarray(m / 2.0)
  return cfg, zeros


def test_token_logprobs_hand_computed_with_temperature():
  """The shift, the temperature and the mask, by hand (the chunked head is checked below)."""
  cfg, params = _bigram_model()
  tokens = jnp.array([[0, 2, 0]])
  # out[:, t] scores token t given the tokens before it; nothing scores the first token.
  _close(token_logprobs(cfg, params, tokens), [[0.0, math.log(2 / 5), math.log(1 / 2)]])
  _close(token_logprobs(cfg, params, tokens, temperature=0.5),
         [[0.0, math.log(4 / 7), math.log(3 / 4)]])
  _close(sequence_logprobs(cfg, params, jnp.concatenate([tokens, tokens]),
                           jnp.array([[0, 1, 1], [1, 0, 1]]), temperature=0.5),
         [math.log(4 / 7) + math.log(3 / 4), math.log(3 / 4)])


@pytest.mark.parametrize("chunk,temperature,tied", [(0, 1.0, False), (8, 0.6, True)])
def test_token_logprobs_equal_log_softmax_of_forward(params, chunk, temperature, tied):
  """Chunked (T = 20 is not a multiple of the chunk) or not, tied head or not: the log_softmax of
  model.forward's logits at the next tokens, in float64."""
  cfg = CFG.replace(loss_chunk=chunk, tie_embeddings=tied)
  # Tied: the same weights less lm_head (the head is the embedding's transpose).
  p = {k: v for k, v in params.items() if k != "lm_head"} if tied else params
  tokens = jax.random.randint(jax.random.key(0), (4, 20), 0, cfg.vocab_size)
  got = token_logprobs(cfg, p, tokens, temperature=temperature)
  logits = np.asarray(jax.jit(model.forward, static_argnums=0)(cfg, p, tokens), np.float64) / temperature
  logits -= logits.max(-1, keepdims=True)
  logsm = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  want = np.zeros(tokens.shape)
  want[:, 1:] = np.take_along_axis(logsm[:, :-1], np.asarray(tokens)[:, 1:, None], -1)[..., 0]
  assert got.dtype == jnp.float32 and got.shape == (4, 20)
  # The chunked head is its own einsum (another summation order over D = 128), and the
  # log-sum-exp sums V = 512 terms: float32 rounding at the values' scale.
  assert_close_to_scale(got, want, terms=cfg.vocab_size)


def test_packed_segments_give_the_unpacked_values(params):
  cfg = CFG  # segments mask the log-probs after the head, whichever head (chunked or not) ran
  lengths = (5, 7, 4)
  seqs = [jax.random.randint(jax.random.key(10 + i), (n,), 0, cfg.vocab_size) for i, n in enumerate(lengths)]
  # Unpacked: one sequence per row, padded at the end (causal: padding never changes the values).
  rows = jnp.stack([jnp.pad(s, (0, 8 - len(s))) for s in seqs])
  unpacked = token_logprobs(cfg, params, rows)
  # Packed: one row of 5 + 7 + 4 tokens and 2 of padding (segment id 0), positions restarting.
  packed_tokens = jnp.concatenate(seqs + [jnp.zeros(2, jnp.int32)])[None]
  segment_ids = jnp.array([[1] * 5 + [2] * 7 + [3] * 4 + [0] * 2])
  positions = jnp.array([list(range(5)) + list(range(7)) + list(range(4)) + [0, 0]])
  packed = token_logprobs(cfg, params, packed_tokens, segment_ids=segment_ids, positions=positions)
  want = np.concatenate([np.asarray(unpacked[i, :n]) for i, n in enumerate(lengths)] + [np.zeros(2)])
  assert_close_to_scale(packed[0], want, terms=cfg.vocab_size)
  # The first token of every segment has no context, and padding scores nothing.
  assert np.all(np.asarray(packed[0])[[0, 5, 12, 16, 17]] == 0.0)


def test_token_logprobs_refuse_zero_temperature(params):
  with pytest.raises(ValueError, match="temperature=0"):
    posttrain.token_logprobs(CFG, params, jnp.zeros((1, 4), jnp.int32), temperature=0)


# --- DPO --------------------------------------------------------------------------------------------

# Two pairs, beta = 0.5; h = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected).
#   pair 1: policy (-10, -14), ref (-11, -13): log-ratios chosen +1, rejected -1, h = 2, beta h = 1.
#   pair 2: policy (-8, -9), ref (-7, -9): log-ratios chosen -1, rejected 0, h = -1, beta h = -0.5.
# sigmoid: -log sigmoid(x) = log(1 + e^-x): 0.3132617 and 0.9740770, mean 0.6436693.
# cDPO, ls = 0.1: (1 - ls) log(1 + e^-x) + ls log(1 + e^x) = log(1 + e^-x) + ls x (as
#   log(1 + e^x) - log(1 + e^-x) = x): 0.4132617 and 0.9240770, mean 0.6686693.
# ipo: (h - 1 / (2 beta))^2 = (2 - 1)^2 = 1 and (-1 - 1)^2 = 4, mean 2.5.
# rewards = beta * log-ratios: chosen (0.5, -0.5) mean 0, rejected (-0.5, 0) mean -0.25, margins
#   (1, -0.5) mean 0.25, accuracies (1, 0) mean 0.5; logps/chosen mean(-10, -8) = -9,
#   logps/rejected mean(-14, -9) = -11.5.
# d loss / d policy_chosen = -(beta / 2) sigmoid(-beta h): -0.25 sigmoid(-1) = -0.0672354 and
#   -0.25 sigmoid(0.5) = -0.1556148; d / d policy_rejected is the negative.
PAIRS = (jnp.array([-10.0, -8.0]), jnp.array([-14.0, -9.0]), jnp.array([-11.0, -7.0]),
         jnp.array([-13.0, -9.0]))


def test_dpo_sigmoid_hand_computed():
  loss, m = posttrain.dpo_loss(*PAIRS, beta=0.5)
  _close(loss, 0.5 * (math.log1p(math.exp(-1.0)) + math.log1p(math.exp(0.5))))
  _close(loss, 0.6436693)
  want = {"rewards/chosen": 0.0, "rewards/rejected": -0.25, "rewards/margins": 0.25,
          "rewards/accuracies": 0.5, "logps/chosen": -9.0, "logps/rejected": -11.5}
  assert set(m) == set(want)
  for k, v in want.items():
    _close(m[k], v, terms=40)  # terms: log-probs of scale 10 against values of scale 1
  grads = jax.grad(lambda c, r: posttrain.dpo_loss(c, r, *PAIRS[2:], beta=0.5)[0], argnums=(0, 1))(
      *PAIRS[:2])
  sig = lambda x: 1.0 / (1.0 + math.exp(-x))
  _close(grads[0], [-0.25 * sig(-1.0), -0.25 * sig(0.5)])
  _close(grads[1], [0.25 * sig(-1.0), 0.25 * sig(0.5)])


def test_dpo_label_smoothing_and_ipo_hand_computed():
  loss, _ = posttrain.dpo_loss(*PAIRS, beta=0.5, label_smoothing=0.1)
  _close(loss, 0.5 * (math.log1p(math.exp(-1.0)) + 0.1 + math.log1p(math.exp(0.5)) - 0.05))
  loss, m = posttrain.dpo_loss(*PAIRS, beta=0.5, loss_type="ipo")
  _close(loss, 2.5)
  _close(m["rewards/margins"], 0.25, terms=40)


@pytest.mark.parametrize("kwargs,message", [
    ({"loss_type": "hinge"}, "loss_type='hinge'"), ({"beta": 0.0}, "beta=0.0"),
    ({"label_smoothing": 0.5}, "label_smoothing=0.5"),
    ({"loss_type": "ipo", "label_smoothing": 0.1}, "sigmoid loss only")])
def test_dpo_bad_arguments_are_refused(kwargs, message):
  with pytest.raises(ValueError, match=message):
    posttrain.dpo_loss(*PAIRS, **{"beta": 0.1, **kwargs})


# --- GRPO advantages --------------------------------------------------------------------------------


def test_group_advantages_hand_computed():
  # Group 1: mean 0.5, deviations +-0.5, unbiased variance 4 * 0.25 / 3 = 1/3.
  # Group 2: all equal: exactly 0. Group 3 (G = 4 here too): (3, 1, 2, 2): mean 2, deviations
  # (1, -1, 0, 0), unbiased variance 2 / 3.
  r = jnp.array([1.0, 0.0, 0.0, 1.0, 0.3, 0.3, 0.3, 0.3, 3.0, 1.0, 2.0, 2.0])
  s1, s3 = math.sqrt(1 / 3) + 1e-6, math.sqrt(2 / 3) + 1e-6
  want = [0.5 / s1, -0.5 / s1, -0.5 / s1, 0.5 / s1, 0, 0, 0, 0, 1 / s3, -1 / s3, 0, 0]
  got = posttrain.group_advantages(r, 4)
  _close(got, want)
  assert np.all(np.asarray(got[4:8]) == 0.0)  # 0.3 is not dyadic: the mean's rounding must not leak
  _close(posttrain.group_advantages(r, 4, scale="none"), [0.5, -0.5, -0.5, 0.5, 0, 0, 0, 0, 1, -1, 0, 0])
  _close(posttrain.group_advantages(jnp.array([3.0, 1.0, 2.0]), 3, eps=0.5), [1 / 1.5, -1 / 1.5, 0])


@pytest.mark.parametrize("n,kwargs,message", [
    (6, {"group_size": 4}, "groups of 4"), (4, {"group_size": 1}, "group_size=1"),
    (4, {"group_size": 2, "scale": "std"}, "scale='std'")])
def test_group_advantages_bad_arguments_are_refused(n, kwargs, message):
  with pytest.raises(ValueError, match=message):
    posttrain.group_advantages(jnp.ones(n), **kwargs)


# --- policy loss ------------------------------------------------------------------------------------

# Two sequences, advantages (+1, -1); row 1's last token is masked (its log-prob is NaN: padding).
# Ratios: row 0 (1.5, 1, 0.5): 1.5 > 1 + 0.28 with A > 0 is clipped: -1.28; 1: -1; 0.5: A > 0 takes
#   the unclipped max(-0.5, -0.8) = -0.5. Row 1 (0.5, 4): 0.5 < 1 - 0.2 with A < 0 is clipped:
#   max(0.5, 0.8) = 0.8; 4: max(4, 1.28) = 4, or with dual clip c = 3: min(4, 3) = 3.
# token-mean: (-1.28 - 1 - 0.5 + 0.8 + 4) / 5 = 0.404; dual: (-2.78 + 3.8) / 5 = 0.204.
# seq-mean-token-sum (dual): (-2.78 + 3.8) / 2 = 0.51; seq-mean-token-mean: (-2.78/3 + 3.8/2) / 2.
# d loss / d logp (token-mean) = d loss_t / d ratio * ratio / 5: clipped tokens 0; row 0's ratio
#   1 -> -1/5, ratio 0.5 -> -0.5/5; row 1's ratio 4 -> +4/5 (0 under the dual clip); masked 0.
# approx_kl = -mean(log ratios) = -ln(1.5 * 1 * 0.5 * 0.5 * 4) / 5 = -ln(1.5) / 5; ratio_mean 7.5 / 5.
OLD = jnp.zeros((2, 3))
LOGP = jnp.log(jnp.array([[1.5, 1.0, 0.5], [0.5, 4.0, jnp.nan]]))
ADV = jnp.array([1.0, -1.0])
MASK = jnp.array([[1, 1, 1], [1, 1, 0]])


def test_policy_loss_hand_computed():
  loss, m = posttrain.policy_loss(LOGP, OLD, ADV, MASK)
  _close(loss, 0.404)
  want = {"clip_frac_low": 0.2, "clip_frac_high": 0.2, "clip_frac_dual": 0.0,
          "approx_kl": -math.log(1.5) / 5, "ratio_mean": 1.5}
  assert set(m) == set(want)
  for k, v in want.items():
    _close(m[k], v)
  g = jax.grad(lambda lp: posttrain.policy_loss(lp, OLD, ADV, MASK)[0])(LOGP)
  _close(g, [[0.0, -0.2, -0.1], [0.0, 0.8, 0.0]])

  loss, m = posttrain.policy_loss(LOGP, OLD, ADV, MASK, clip_c=3.0)
  _close(loss, 0.204)
  _close(m["clip_frac_dual"], 0.2)
  g = jax.grad(lambda lp: posttrain.policy_loss(lp, OLD, ADV, MASK, clip_c=3.0)[0])(LOGP)
  _close(g, [[0.0, -0.2, -0.1], [0.0, 0.0, 0.0]])
  _close(posttrain.policy_loss(LOGP, OLD, ADV, MASK, clip_c=3.0, agg="seq-mean-token-sum")[0], 0.51)
  _close(posttrain.policy_loss(LOGP, OLD, ADV, MASK, clip_c=3.0, agg="seq-mean-token-mean")[0],
         (-2.78 / 3 + 3.8 / 2) / 2)


@pytest.mark.parametrize("kwargs,message", [({"agg": "token-sum"}, "agg='token-sum'"),
                                            ({"clip_c": 1.0}, "clip_c=1.0")])
def test_policy_loss_bad_arguments_are_refused(kwargs, message):
  with pytest.raises(ValueError, match=message):
    posttrain.policy_loss(LOGP, OLD, ADV, MASK, **kwargs)


def test_kl_k3_hand_computed():
  # ref - logp = ln 2: e^(ln 2) - ln 2 - 1 = 1 - ln 2; equal log-probs: 0.
  _close(grpo.kl_k3(jnp.log(jnp.array([0.5, 0.25])), jnp.log(jnp.array([1.0, 0.25]))),
         [1 - math.log(2.0), 0.0])


def _random_rollouts(seed, n=8, t=6):
  k = jax.random.split(jax.random.key(seed), 4)
  old = -jax.random.uniform(k[0], (n, t), minval=0.1, maxval=3.0)
  logp = old + 0.4 * jax.random.normal(k[1], (n, t))
  adv = jax.random.normal(k[2], (n,))
  mask = (jax.random.uniform(k[3], (n, t)) > 0.3).astype(jnp.int32).at[2].set(0)  # an empty row
  return logp, old, adv, mask


@pytest.mark.parametrize("agg", grpo.AGGREGATIONS)
def test_policy_loss_microbatches_sum_to_the_full_batch(agg):
  """With the global counts passed in, microbatches of any sizes sum to the full batch's loss,
  gradient and metrics (a per-microbatch mean would weight short microbatches up)."""
  logp, old, adv, mask = _random_rollouts(0)
  def loss_and_grad(sl, **counts):
    fn = lambda lp, o, a, m: posttrain.policy_loss(lp, o, a, m, clip_c=3.0, agg=agg, **counts)
    return jax.jit(jax.value_and_grad(fn, has_aux=True))(logp[sl], old[sl], adv[sl], mask[sl])

  (want, want_m), want_g = loss_and_grad(slice(None))
  counts = {"num_tokens": jnp.sum(mask), "num_seqs": jnp.sum(jnp.any(mask > 0, axis=1))}
  got, got_m, got_g = 0.0, {k: 0.0 for k in want_m}, []
  for sl in (slice(0, 3), slice(3, 8)):
    (l, m), g = loss_and_grad(sl, **counts)
    got, got_m = got + l, {k: got_m[k] + m[k] for k in m}
    got_g.append(g)
  assert_close_to_scale(got, want, terms=48)
  assert_close_to_scale(jnp.concatenate(got_g), want_g, terms=48)
  for k in want_m:
    assert_close_to_scale(got_m[k], want_m[k], terms=48, err_msg=k)


def test_gradient_accumulation_through_the_chunked_head_is_exact(params):
  """The parameters' gradient of token_logprobs -> token-mean policy loss: two microbatches with
  the global token count, through the chunked head (a rematerialised scan), equal the whole
  batch through the whole-logits head."""
  tokens = jax.random.randint(jax.random.key(5), (4, 20), 0, CFG.vocab_size)
  old = token_logprobs(CFG, params, tokens) + 0.1  # (the same shapes as above: no compile)
  adv = jnp.array([1.0, -0.5, 0.25, -1.0])
  mask = jnp.ones((4, 20), jnp.int32).at[:, :3].set(0).at[1, 8:].set(0)

  @functools.partial(jax.jit, static_argnums=0)
  def grad(cfg, p, tokens, old, adv, mask, num_tokens):
    def loss(p):
      lp = posttrain.token_logprobs(cfg, p, tokens)
      return posttrain.policy_loss(lp, old, adv, mask, num_tokens=num_tokens)[0]
    return jax.grad(loss)(p)

  n = jnp.sum(mask)
  want = grad(CFG, params, tokens, old, adv, mask, n)  # (num_tokens=None is the same: tested above)
  chunked = CFG.replace(loss_chunk=8)  # 20 is not a multiple of 8: the padded tail slice too
  got = jax.tree.map(jnp.add, *(grad(chunked, params, tokens[r], old[r], adv[r], mask[r], n)
                                for r in (slice(0, 2), slice(2, 4))))
  for (path, g), r in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(want)):
    assert_close_to_scale(g, r, terms=CFG.vocab_size, err_msg=jax.tree_util.keystr(path))


# --- package boundary -------------------------------------------------------------------------------


def test_exports_and_import_boundary():
  assert sorted(posttrain.__all__) == sorted(["token_logprobs", "sequence_logprobs", "dpo_loss",
                                              "group_advantages", "policy_loss"])
  assert logprobs.token_logprobs is posttrain.token_logprobs
  # Pretraining and sampling stay independent of post-training (post-training builds on them).
  for folder in ("train", "sampling"):
    for path in sorted((ROOT / "seedcoder_jax" / folder).glob("**/*.py")):
      for node in ast.walk(ast.parse(path.read_text())):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                 [node.module or ""] + [a.name for a in node.names] if isinstance(node, ast.ImportFrom)
                 else [])
        assert not any("posttrain" in name for name in names), f"{path} imports posttrain"
