"""DPO: pairs -> rows, the frozen reference and its fingerprint, the objective, the trainer."""

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seedcoder_jax import config_files, model
from seedcoder_jax.interop import orbax_params
from seedcoder_jax.posttrain import chat_corpus, dpo_loss, dpo_train, sequence_logprobs
from seedcoder_jax.posttrain.chat_template import ChatRenderer
from seedcoder_jax.train import step as step_lib
from seedcoder_jax.train.config import ConfigError
from tests.numerics import f32_rtol

TOKENIZER = "gguf:smollm2"
SHAPE = dict(vocab_size=49152, max_seq_len=256)
# float32 pinned: the demo config says "auto", which is bfloat16 on CPUs with native bf16.
MODEL = dict(preset="tiny", compute_dtype="float32", **SHAPE)


def _pair(i):
  return {"id": f"p{i}", "source": "test",
          "prompt": [{"role": "user", "content": f"Return {i} from f."}],
          "chosen": f"```python\ndef f():\n    return {i}\n```",
          "rejected": f"```python\ndef f():\n    return {i + 1}  # off by one\n```"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  root = tmp_path_factory.mktemp("dpo")
  chat_corpus.write([_pair(i) for i in range(12)], root / "pairs", kind="pairs")
  chat_corpus.write([_pair(100 + i) for i in range(5)], root / "heldout", kind="pairs")
  cfg = model.preset("tiny", **SHAPE)
  orbax_params.save(root / "init", cfg, model.init_params(cfg, seed=1))
  orbax_params.save(root / "other", cfg, model.init_params(cfg, seed=2))
  return root


def _config(root, **dpo_over):
  c = config_files.load("configs/dpo.py:demo")
  c.model.update(MODEL)
  c.init.update(kind="orbax", path=str(root / "init"))
  c.dpo.update(pairs=str(root / "pairs"), heldout_pairs=str(root / "heldout"), **dpo_over)
  c.data.update(batch_size=4, seq_len=128)  # loss_chunk (128) divides it
  c.opt.update(total_steps=3, warmup_steps=1, peak_lr=1e-3)
  c.ckpt.update(every_steps=10, async_save=False)
  c.eval.update(every_steps=0, at_end=True, batches=2)
  c.log.update(every_steps=1, progress_bar=False)
  c.mesh.update(data=2, fsdp=4)
  return c


def test_rows_are_prompt_then_reply_with_the_reply_masked(setup):
  renderer = ChatRenderer(TOKENIZER, system_prompt="You are a helpful coding assistant.")
  arrays = dpo_train.encode_pairs(str(setup / "pairs"), renderer, 96, "config.dpo.pairs")
  assert arrays.tokens.shape == (12, 2, 96) and arrays.truncated == 0
  tok = renderer.tokenizer
  prompt = renderer.prompt_ids(_pair(3)["prompt"])
  for j, text in enumerate((_pair(3)["chosen"], _pair(3)["rejected"])):
    row, mask = arrays.tokens[3, j], arrays.mask[3, j]
    assert list(row[:len(prompt)]) == prompt
    assert tok.decode([t for t, m in zip(row, mask) if m]) == text + "<|im_end|>"
  cut = dpo_train.encode_pairs(str(setup / "pairs"), renderer, len(prompt) + 4, "k")
  assert cut.truncated == 24 and cut.mask.sum(axis=-1).max() == 4


def test_objective_equals_dpo_loss_of_sequence_logprobs(setup):
  """The objective's sums / pairs = dpo_loss on the pairs' summed log-probs, computed directly;
  RPO adds alpha x the chosen replies' mean token NLL; weight-0 pairs change nothing."""
  renderer = ChatRenderer(TOKENIZER, system_prompt="You are a helpful coding assistant.")
  arrays = dpo_train.encode_pairs(str(setup / "pairs"), renderer, 96, "k")
  cfg = model.preset("tiny", **SHAPE)
  params, ref_params = model.init_params(cfg, seed=1), model.init_params(cfg, seed=5)
  t, m = arrays.tokens[:4].reshape(8, 96), arrays.mask[:4].reshape(8, 96)
  pol = np.asarray(sequence_logprobs(cfg, params, t, m))
  ref = np.asarray(sequence_logprobs(cfg, ref_params, t, m))
  want_loss, want_metrics = dpo_loss(pol[0::2], pol[1::2], ref[0::2], ref[1::2], beta=0.1)
  nll = -(pol[0::2] / m[0::2].sum(-1)).mean()
  batch = {"tokens": t, "mask": m, "ref_logps": ref, "pair_weight": np.ones(8, np.float32)}
  # A padded pair (weight 0, garbage values) appended must not count.
  pad = {"tokens": t[:2], "mask": m[:2], "ref_logps": np.array([5.0, -5.0], np.float32),
         "pair_weight": np.zeros(2, np.float32)}
  padded = {k: np.concatenate([batch[k], pad[k]]) for k in batch}
  objective = dpo_train.dpo_objective(dpo_train.DPOConfig(pairs="x", rpo_alpha=0.5))
  total, sums = objective.loss_sums(cfg, params, jax.tree.map(jnp.asarray, padded))
  assert float(sums["tokens"]) == 4
  rtol = f32_rtol(cfg.vocab_size)
  np.testing.assert_allclose(float(sums["dpo_loss"]) / 4, float(want_loss), rtol=rtol)
  np.testing.assert_allclose(float(sums["rpo_nll"]) / 4, nll, rtol=rtol)
  np.testing.assert_allclose(float(total) / 4, float(want_loss) + 0.5 * nll, rtol=rtol)
  for k, v in want_metrics.items():
    np.testing.assert_allclose(float(sums[k]) / 4, float(v), rtol=rtol, atol=1e-6, err_msg=k)


@pytest.mark.slow
def test_microbatches_do_not_change_the_update(setup):
  renderer = ChatRenderer(TOKENIZER, system_prompt="You are a helpful coding assistant.")
  arrays = dpo_train.encode_pairs(str(setup / "pairs"), renderer, 96, "k")
  cfg = model.preset("tiny", **SHAPE)
  import optax
  optimizer = optax.sgd(1.0)
  state = step_lib.init_state(cfg, optimizer, seed=1)
  rng = np.random.default_rng(0)
  batch = {"tokens": arrays.tokens[:4].reshape(8, 96), "mask": arrays.mask[:4].reshape(8, 96),
           "ref_logps": rng.normal(-40, 5, 8).astype(np.float32),
           "pair_weight": np.ones(8, np.float32)}
  objective = dpo_train.dpo_objective(dpo_train.DPOConfig(pairs="x"))
  outs = [jax.jit(lambda s, b, g=g: step_lib.train_step(cfg, optimizer, s, b, grad_accum_steps=g,
                                                        objective=objective))(state, batch)
          for g in (1, 2, 4)]
  for new, metrics in outs[1:]:
    np.testing.assert_allclose(float(metrics["loss"]), float(outs[0][1]["loss"]),
                               rtol=f32_rtol(cfg.vocab_size))
    np.testing.assert_allclose(float(metrics["grad_norm"]), float(outs[0][1]["grad_norm"]),
                               rtol=f32_rtol(cfg.vocab_size * 96))


def _rows(workdir):
  return [json.loads(l) for l in (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()]


def test_dpo_trainer_runs_and_refuses_a_reference_of_other_weights(setup, tmp_path):
  out = dpo_train.run(_config(setup), tmp_path / "run")
  assert out["end_step"] == 3
  rows = _rows(tmp_path / "run")
  train_rows = [r for r in rows if "rewards/accuracies" in r]
  assert {r["step"] for r in train_rows} == {1, 2, 3}
  for k in ("rewards/chosen", "rewards/rejected", "rewards/margins", "logps/chosen",
            "logps/rejected", "dpo_loss"):
    assert all(np.isfinite(r[k]) for r in train_rows), k
  # Step 1: the policy is the reference, so every reward is 0 and the loss is log 2.
  assert abs(train_rows[0]["rewards/margins"]) < 1e-5
  np.testing.assert_allclose(train_rows[0]["loss"], np.log(2.0), rtol=1e-5)
  assert any("eval_rewards/accuracies" in r for r in rows)
  # The stored reference belongs to config.init's weights: other weights are refused.
  c = _config(setup)
  c.init.path = str(setup / "other")
  with pytest.raises(ConfigError, match="reference log-probs for other init"):
    dpo_train.run(c, tmp_path / "run")


def test_carried_reference_of_other_weights_is_refused(setup, tmp_path):
  records = [{**_pair(i), "ref_chosen": -10.0, "ref_rejected": -11.0} for i in range(8)]
  chat_corpus.write(records, tmp_path / "carried", kind="pairs",
                    metadata={"reference_fingerprint": "0" * 64})
  c = _config(setup)
  c.dpo.pairs = str(tmp_path / "carried")
  c.dpo.heldout_pairs = ""
  with pytest.raises(ConfigError, match="carries reference log-probs of other weights"):
    dpo_train.run(c, tmp_path / "w")


def test_bad_dpo_input_is_refused_before_training(setup, tmp_path):
  c = _config(setup, loss_type="hinge")
  with pytest.raises(ConfigError, match="loss_type='hinge'"):
    dpo_train.run(c, tmp_path / "w1")
  c = _config(setup)
  c.dpo.pairs = str(tmp_path / "nope")
  with pytest.raises(ConfigError, match=r"config.dpo.pairs=.*not a chat corpus"):
    dpo_train.run(c, tmp_path / "w2")
  c = _config(setup)
  c.init.kind = "random"
  with pytest.raises(ConfigError, match="random"):
    dpo_train.run(c, tmp_path / "w3")
  sft_corpus = tmp_path / "sft"
  chat_corpus.write([{"id": "a", "difficulty": None, "source": "t", "messages": [
      {"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}],
      sft_corpus, kind="sft")
  c = _config(setup)
  c.dpo.pairs = str(sft_corpus)
  with pytest.raises(ConfigError, match="holds 'sft' records, expected 'pairs'"):
    dpo_train.run(c, tmp_path / "w4")
  assert not (tmp_path / "w1" / "checkpoints").exists()
