"""Parity of the post-training maths with the references the field uses: TRL 1.16.0's DPOTrainer
(loss, metrics, gradients) and verl 0.9.1's core_algos (GRPO advantages, the clipped policy loss
in each aggregation mode, k3 KL), run in .venv-ref (tests/reference/trl_dpo.py, verl_grpo.py).

Tolerances: float32 rounding (tests/numerics.py) at the scale of the terms that each result sums,
never one machine's output: the references and ours add the same terms in different orders.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from numerics import EPS32, K, assert_close_to_scale, f32_rtol
from refenv import run_reference
from seedcoder_jax import posttrain
from seedcoder_jax.posttrain import grpo

# --- TRL: DPO -----------------------------------------------------------------------------------------

P, T = 8, 10
DPO_JOBS = [
    {"name": "sigmoid", "loss_type": "sigmoid", "beta": 0.1, "label_smoothing": 0.0},
    {"name": "sigmoid_beta_half", "loss_type": "sigmoid", "beta": 0.5, "label_smoothing": 0.0},
    {"name": "ipo", "loss_type": "ipo", "beta": 0.1, "label_smoothing": 0.0},
    # TRL's "aot" pair by pair: the conservative (label-smoothed) sigmoid; see trl_dpo.py.
    {"name": "cdpo", "loss_type": "cdpo", "beta": 0.1, "label_smoothing": 0.2},
]


def _dpo_inputs():
  rng = np.random.default_rng(0)
  lengths = lambda: np.arange(T)[None] < rng.integers(1, T + 1, (P, 1))  # completions of 1..T tokens
  chosen_mask, rejected_mask = lengths().astype(np.float32), lengths().astype(np.float32)
  chosen = -rng.uniform(0.0, 3.0, (P, T)).astype(np.float32)
  rejected = -rng.uniform(0.0, 3.0, (P, T)).astype(np.float32)
  # The reference near the policy, so that beta * h spans about +-2 (both sides of the sigmoid).
  ref_chosen = ((chosen * chosen_mask).sum(1) + rng.normal(0, 5, P)).astype(np.float32)
  ref_rejected = ((rejected * rejected_mask).sum(1) + rng.normal(0, 5, P)).astype(np.float32)
  return dict(chosen=chosen, rejected=rejected, chosen_mask=chosen_mask, rejected_mask=rejected_mask,
              ref_chosen=ref_chosen, ref_rejected=ref_rejected)


@pytest.fixture(scope="module")
def trl_results(tmp_path_factory):
  root = tmp_path_factory.mktemp("trl_dpo")
  inputs = _dpo_inputs()
  np.savez(root / "inputs.npz", **inputs)
  (root / "jobs.json").write_text(json.dumps(DPO_JOBS))
  run_reference("trl_dpo.py", root)
  return inputs, {job["name"]: (json.loads((root / f"{job['name']}.json").read_text()),
                                dict(np.load(root / f"{job['name']}.npz"))) for job in DPO_JOBS}


def _our_dpo(job, a):
  """dpo_loss on the inputs' summed log-probs (averaged for ipo, as TRL does), with gradients
  w.r.t. the per-token log-probs like the reference's."""
  mc, mr = jnp.asarray(a["chosen_mask"]), jnp.asarray(a["rejected_mask"])
  norm_c = jnp.sum(mc, 1) if job["loss_type"] == "ipo" else 1.0
  norm_r = jnp.sum(mr, 1) if job["loss_type"] == "ipo" else 1.0
  loss_type = "sigmoid" if job["loss_type"] == "cdpo" else job["loss_type"]

  def f(chosen, rejected):
    return posttrain.dpo_loss(jnp.sum(chosen * mc, 1) / norm_c, jnp.sum(rejected * mr, 1) / norm_r,
                              a["ref_chosen"] / norm_c, a["ref_rejected"] / norm_r, beta=job["beta"],
                              loss_type=loss_type, label_smoothing=job["label_smoothing"])

  (loss, metrics), grads = jax.value_and_grad(f, argnums=(0, 1), has_aux=True)(a["chosen"], a["rejected"])
  return loss, metrics, grads


@pytest.mark.parametrize("job", DPO_JOBS, ids=[j["name"] for j in DPO_JOBS])
def test_dpo_loss_metrics_and_gradients_equal_trl(trl_results, job):
  a, results = trl_results
  want, want_grads = results[job["name"]]
  loss, metrics, grads = _our_dpo(job, a)
  # Both sides sum the per-token log-probs of each sequence in their own order before the loss:
  # float32 rounding at the scale of those sums moves h (the log-ratio difference) by up to h_err.
  # The loss moves by at most max|d loss_i / d h_i| * h_err, the per-token gradient by at most
  # max|d^2 loss_i / d h_i^2| / P * h_err, plus their own rounding.
  logp_scale = float(max(np.abs(a["ref_chosen"]).max(), np.abs(a["ref_rejected"]).max()))
  h_err = K * EPS32 * np.sqrt(P * T) * logp_scale
  beta = job["beta"]
  if job["loss_type"] == "ipo":  # (h - 1/(2 beta))^2 on averaged log-probs (lengths >= 1)
    lengths_c, lengths_r = a["chosen_mask"].sum(1), a["rejected_mask"].sum(1)
    h = ((a["chosen"] * a["chosen_mask"]).sum(1) - a["ref_chosen"]) / lengths_c - (
        (a["rejected"] * a["rejected_mask"]).sum(1) - a["ref_rejected"]) / lengths_r
    slope, curvature = 2.0 * float(np.abs(h - 1 / (2 * beta)).max()), 2.0
  else:  # -log sigmoid(beta h) and its smoothed form: slopes beta, curvature beta^2 / 4
    slope, curvature = beta, beta ** 2 / 4
  assert abs(float(loss) - want["loss"]) <= slope * h_err + f32_rtol(P) * abs(want["loss"]), (
      float(loss), want["loss"])
  for name, g in zip(("grad_chosen", "grad_rejected"), grads):
    want_g = want_grads[name]
    diff = float(np.abs(np.asarray(g) - want_g).max())
    assert diff <= curvature / P * h_err + f32_rtol(T) * np.abs(want_g).max(), (name, diff)
  if job["loss_type"] == "sigmoid":  # ipo's and cdpo's metrics: same formulas, on other inputs
    assert set(want["metrics"]) <= set(metrics), sorted(want["metrics"])
    for k, v in want["metrics"].items():
      scale = logp_scale * (1.0 if k.startswith("logps/") else job["beta"])
      assert abs(float(metrics[k]) - v) <= f32_rtol(P * T) * scale, (k, float(metrics[k]), v)


# --- verl: GRPO / DAPO --------------------------------------------------------------------------------

G, GROUPS, L = 4, 5, 12
N = G * GROUPS
CLIP_LOW, CLIP_HIGH, CLIP_C = 0.2, 0.28, 3.0
AGGS = grpo.AGGREGATIONS
MICRO = (0, 7)  # a microbatch of rows 0..6, normalised by the whole batch's counts


def _grpo_inputs():
  rng = np.random.default_rng(1)
  rewards = np.concatenate([np.ones(G), np.zeros(G), [1.0, 0.0, 1.0, 1.0],  # two equal-reward groups
                            rng.uniform(0, 1, G), rng.normal(0, 2, G)]).astype(np.float32)
  old_logp = -rng.uniform(0.05, 4.0, (N, L)).astype(np.float32)
  logp = (old_logp + rng.normal(0.0, 0.7, (N, L))).astype(np.float32)  # ratios ~ 0.1 .. 10
  lengths = rng.integers(1, L + 1, N)
  lengths[3], lengths[5] = 0, L  # an empty response and a full one
  mask = (np.arange(L)[None] < lengths[:, None]).astype(np.float32)
  advantages = rng.normal(0.0, 1.0, N).astype(np.float32)
  # Ratios of 5 > clip_c on one token of every negative-advantage row: the dual clip's region.
  logp[advantages < 0, 1] = old_logp[advantages < 0, 1] + np.float32(np.log(5.0))
  return dict(rewards=rewards, logp=logp, old_logp=old_logp, mask=mask, advantages=advantages)


def _grpo_jobs(a):
  jobs = [{"op": "advantages", "name": "adv_group", "group_size": G, "eps": 1e-6, "norm_by_std": True},
          {"op": "advantages", "name": "adv_none", "group_size": G, "eps": 1e-6, "norm_by_std": False},
          {"op": "kl", "name": "kl"}]
  for agg in AGGS:
    for clip_c in (None, CLIP_C):
      jobs.append({"op": "policy_loss", "name": f"pg_{agg}_{clip_c}", "agg": agg, "clip_c": clip_c,
                   "clip_low": CLIP_LOW, "clip_high": CLIP_HIGH})
    m = a["mask"]
    jobs.append({"op": "policy_loss", "name": f"pg_{agg}_micro", "agg": agg, "clip_c": CLIP_C,
                 "clip_low": CLIP_LOW, "clip_high": CLIP_HIGH, "rows": list(MICRO),
                 "global_batch_info": {"dp_size": 1, "batch_num_tokens": int(m.sum()),
                                       "global_batch_size": int((m.sum(1) > 0).sum())}})
  return jobs


@pytest.fixture(scope="module")
def verl_results(tmp_path_factory):
  root = tmp_path_factory.mktemp("verl_grpo")
  inputs = _grpo_inputs()
  jobs = _grpo_jobs(inputs)
  np.savez(root / "inputs.npz", **inputs)
  (root / "jobs.json").write_text(json.dumps(jobs))
  run_reference("verl_grpo.py", root)
  return inputs, {job["name"]: (json.loads((root / f"{job['name']}.json").read_text()),
                                dict(np.load(root / f"{job['name']}.npz"))) for job in jobs}


def test_inputs_exercise_every_clip_region():
  a = _grpo_inputs()
  ratio, valid, adv = np.exp(a["logp"] - a["old_logp"]), a["mask"] > 0, a["advantages"][:, None]
  for name, region in [("low clip", (adv < 0) & (ratio < 1 - CLIP_LOW)),
                       ("high clip", (adv > 0) & (ratio > 1 + CLIP_HIGH)),
                       ("dual clip", (adv < 0) & (ratio > CLIP_C)),
                       ("unclipped", (ratio > 1 - CLIP_LOW) & (ratio < 1 + CLIP_HIGH))]:
    assert (region & valid).sum() >= 3, name


@pytest.mark.parametrize("scale", ["group", "none"])
def test_group_advantages_equal_verl(verl_results, scale):
  a, results = verl_results
  want = results["adv_group" if scale == "group" else "adv_none"][1]["advantages"]
  got = posttrain.group_advantages(a["rewards"], G, eps=1e-6, scale=scale)
  assert np.all(np.asarray(got[:2 * G]) == 0.0) and np.all(want[:2 * G] == 0.0)  # equal rewards
  assert_close_to_scale(got, want, terms=G)


@pytest.mark.parametrize("agg", AGGS)
@pytest.mark.parametrize("clip_c", [None, CLIP_C, "micro"])
def test_policy_loss_and_gradient_equal_verl(verl_results, agg, clip_c):
  a, results = verl_results
  want, want_tensors = results[f"pg_{agg}_{clip_c}"]
  rows, counts = slice(None), {}
  if clip_c == "micro":
    # verl's global_batch_info: the microbatch divides by the whole batch's counts.
    rows, clip_c = slice(*MICRO), CLIP_C
    counts = {"num_tokens": a["mask"].sum(), "num_seqs": (a["mask"].sum(1) > 0).sum()}
  logp, old, adv, mask = (a[k][rows] for k in ("logp", "old_logp", "advantages", "mask"))
  f = lambda lp: posttrain.policy_loss(lp, old, adv, mask, clip_low=CLIP_LOW, clip_high=CLIP_HIGH,
                                       clip_c=clip_c, agg=agg, **counts)
  (loss, metrics), grad = jax.value_and_grad(f, has_aux=True)(logp)

  valid = mask > 0
  n_terms = int(valid.sum())
  # The loss averages per-token terms of size up to |A| * ratio (dual clip: |A| * clip_c).
  ratio = np.exp(np.clip(logp - old, -20, 20))
  term_scale = float(np.max(np.where(valid, np.abs(adv)[:, None] * ratio, 0.0)))
  assert abs(float(loss) - want["loss"]) <= f32_rtol(n_terms) * term_scale, (float(loss), want["loss"])
  # Each token's gradient is one product (no reduction across tokens) over a count.
  assert_close_to_scale(grad, want_tensors["grad_logp"], terms=L, err_msg="d loss / d logp")

  # verl's metrics are means over the microbatch's tokens; ours, given the global count, are
  # shares of the whole batch (they sum over microbatches): rescale to compare.
  m, share = want["metrics"], counts.get("num_tokens", n_terms) / n_terms
  tol = f32_rtol(n_terms)
  clip_frac = float(metrics["clip_frac_low"] + metrics["clip_frac_high"]) * share
  assert abs(clip_frac - m["actor/pg_clipfrac"]) <= tol, (clip_frac, m["actor/pg_clipfrac"])
  assert abs(float(metrics["clip_frac_dual"]) * share - m["actor/pg_clipfrac_lower"]) <= tol
  log_ratio_scale = float(np.max(np.abs(np.where(valid, logp - old, 0.0))))
  assert abs(float(metrics["approx_kl"]) * share - m["actor/ppo_kl"]) <= tol * log_ratio_scale
  assert (m["actor/pg_clipfrac"] > 0) and (clip_c is None or m["actor/pg_clipfrac_lower"] > 0)


def test_kl_k3_equals_verl_low_var_kl(verl_results):
  a, results = verl_results
  want = results["kl"][1]
  valid = a["mask"] > 0
  kl_fn = lambda lp: jnp.sum(jnp.where(valid, grpo.kl_k3(lp, a["old_logp"]), 0.0))
  # e^x - x - 1 of log-ratios x up to ~3: rounding of e^x at its own scale, per entry.
  assert_close_to_scale(grpo.kl_k3(a["logp"], a["old_logp"]), want["kl"], terms=4)
  assert_close_to_scale(jax.grad(kl_fn)(a["logp"]), want["grad_logp"], terms=4)
