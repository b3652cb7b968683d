"""RL: rewards from the sandbox, groups and batches, the curriculum, the objective, the loop."""

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from seedcoder_jax import config_files, model
from seedcoder_jax.interop import orbax_params
from seedcoder_jax.posttrain import curriculum as curriculum_lib
from seedcoder_jax.posttrain import policy_loss, problem_set, rl, rl_config, rl_rewards
from seedcoder_jax.posttrain.problems import Problem
from seedcoder_jax.sampling.rollout import Rollout
from seedcoder_jax.train import step as step_lib
from seedcoder_jax.train.config import ConfigError
from tests.numerics import f32_rtol

SHAPE = dict(vocab_size=49152, max_seq_len=512)


def _problem(i, split="train"):
  return Problem(id=f"t/add{i}", prompt=f"Write `main_solution(a, b)` returning a + b + {i}.",
                 tests=(({"a": 1, "b": 2}, 3 + i), ({"a": 0, "b": 0}, i)),
                 reference=f"def main_solution(a, b):\n    return a + b + {i}\n", split=split,
                 provenance={})


def _fence(code):
  return f"```python\n{code}```"


def test_rewards_are_sealed_verdicts_with_counted_failures():
  p = _problem(1)
  texts = [_fence("def main_solution(a, b):\n    return a + b + 1\n"),
           _fence("def main_solution(a, b):\n    return a + b\n"),
           _fence("import os\ndef main_solution(a, b):\n    return 0\nos._exit(0)\n"),
           "def main_solution(a, b):\n    return a + b + 1\n"]  # no code block
  r = rl_rewards.compute([p] * 4, texts, np.array([10, 10, 10, 10]), max_new_tokens=100)
  assert r.passed.tolist() == [True, False, False, False]
  assert r.reward.tolist() == [1.0, 0.0, 0.0, 0.0]
  assert r.format_error.tolist() == [False, False, False, True]
  assert not r.skipped.any() and r.statuses.get("exited_early") == 1

  def broken(*_, **__):
    raise OSError("sandbox down")
  r = rl_rewards.compute([p] * 4, texts, np.zeros(4), max_new_tokens=100, check=broken)
  assert r.skipped.tolist() == [True, True, True, False]  # the format error needs no sandbox
  assert r.reasons == {"reward_error:OSError": 3}


def test_soft_overlong_penalty_by_hand():
  # L_max 100, buffer 20: no penalty up to 80, linear to the full penalty at 100.
  got = rl_rewards.overlong_penalty(np.array([50, 80, 90, 100]), 100, 20, 1.0)
  np.testing.assert_allclose(got, [0.0, 0.0, 0.5, 1.0])
  assert not rl_rewards.overlong_penalty(np.array([100]), 100, 0, 1.0).any()


def test_group_classification():
  t, f = True, False
  keep = dict(dynamic_sampling=True, drop_format_groups=True)
  arr = lambda *x: np.array(x)
  assert rl.classify_group(arr(t, f), arr(f, f), arr(f, f), arr(1.0, 0.0), **keep) == "keep"
  assert rl.classify_group(arr(f, f), arr(f, f), arr(f, f), arr(0.0, 0.0), **keep) == "equal"
  assert rl.classify_group(arr(t, f), arr(f, t), arr(f, f), arr(1.0, 0.0), **keep) == "format"
  assert rl.classify_group(arr(t, f), arr(f, f), arr(f, t), arr(1.0, 0.0), **keep) == "skipped"
  assert rl.classify_group(arr(f, f), arr(f, f), arr(f, f), arr(0.0, 0.0),
                           dynamic_sampling=False, drop_format_groups=True) == "keep"


def test_batch_rows_masks_and_advantages():
  prompts = {"a": [5, 6, 7], "b": [8, 9]}
  groups = [("a", [Rollout([1, 2], [-0.5, -0.25], "stop"), Rollout([3, 4, 5], [-1.0, -2.0, -3.0],
                                                                   "length")],
             np.array([1.0, 0.0], np.float32)),
            ("b", [Rollout([1], [-0.1], "stop"), Rollout([2], [-0.2], "stop")],
             np.array([0.0, 1.0], np.float32))]
  batch, stats = rl.build_batch(prompts, groups, group_size=2, rows=6, seq_len=8,
                                advantage_scale="none", overlong_filter=True)
  assert batch["tokens"][0].tolist() == [5, 6, 7, 1, 2, 0, 0, 0]
  assert batch["mask"][0].tolist() == [0, 0, 0, 1, 1, 0, 0, 0]
  np.testing.assert_allclose(batch["old_logp"][0, 3:5], [-0.5, -0.25])
  assert batch["mask"][1].sum() == 0 and stats["overlong_filtered"] == 1  # truncated: no loss
  np.testing.assert_allclose(batch["advantages"][:4], [0.5, -0.5, -0.5, 0.5])
  assert batch["mask"][4:].sum() == 0  # padding rows


def test_curriculum_drops_solved_problems_and_resumes_exactly():
  c = curriculum_lib.Curriculum(["p0", "p1", "p2"], seed=3, drop_solved_above=0.875,
                                min_attempts=8)
  first = c.take(4)
  assert sorted(first[:3]) == ["p0", "p1", "p2"]  # an epoch is a permutation
  c.record("p1", 8, 8)
  assert c.dropped == ["p1"] and c.pool_size == 2
  c.record("p0", 8, 7)  # 0.875 is not above 0.875
  assert "p0" not in c.dropped
  saved = c.get_state()
  later = c.take(6)
  assert "p1" not in later
  again = curriculum_lib.Curriculum(["p0", "p1", "p2"], seed=3, drop_solved_above=0.875,
                                    min_attempts=8)
  again.set_state(saved)
  assert again.take(6) == later
  other = curriculum_lib.Curriculum(["p0", "p1"], seed=3, drop_solved_above=0.875, min_attempts=8)
  with pytest.raises(ValueError, match="another problem list"):
    other.set_state(saved)


def _rl_batch(n=8, t=24, seed=0):
  rng = np.random.default_rng(seed)
  mask = np.zeros((n, t), np.float32)
  for i in range(n):
    mask[i, 6:6 + rng.integers(3, t - 6)] = 1.0
  return {"tokens": rng.integers(0, 49152, (n, t)).astype(np.int32), "mask": mask,
          "old_logp": rng.normal(-11, 0.3, (n, t)).astype(np.float32),
          "advantages": rng.normal(0, 1, n).astype(np.float32)}


@pytest.mark.slow
def test_objective_sums_equal_policy_loss_and_microbatches_do_not_matter():
  cfg = model.preset("tiny", **SHAPE)
  rcfg = rl_config.RLConfig(problems="x", stages=(rl_config.Stage(1, 8, 2),), temperature=0.7)
  objective = rl.rl_objective(rcfg)
  params = model.init_params(cfg, seed=2)
  batch = _rl_batch()
  from seedcoder_jax.posttrain import token_logprobs
  logp = token_logprobs(cfg, params, batch["tokens"], temperature=0.7)
  want, want_m = policy_loss(logp, batch["old_logp"], batch["advantages"], batch["mask"])
  total, sums = objective.loss_sums(cfg, params, jax.tree.map(jnp.asarray, batch))
  n = float(sums["tokens"])
  assert n == batch["mask"].sum()
  rtol = f32_rtol(cfg.vocab_size)
  np.testing.assert_allclose(float(total) / n, float(want), rtol=rtol, atol=1e-7)
  for k in ("clip_frac_low", "clip_frac_high", "approx_kl"):
    np.testing.assert_allclose(float(sums[k]) / n, float(want_m[k]), rtol=rtol, atol=1e-7)
  state = step_lib.init_state(cfg, optax.sgd(1.0), seed=2)
  outs = [jax.jit(lambda s, b, g=g: step_lib.train_step(
      cfg, optax.sgd(1.0), s, b, grad_accum_steps=g, objective=objective))(state, batch)
          for g in (1, 2, 4)]
  for _, m in outs[1:]:
    np.testing.assert_allclose(float(m["loss"]), float(outs[0][1]["loss"]), rtol=rtol, atol=1e-7)
    np.testing.assert_allclose(float(m["grad_norm"]), float(outs[0][1]["grad_norm"]),
                               rtol=f32_rtol(cfg.vocab_size * 8 * 24))


@pytest.fixture(scope="module")
def rl_setup(tmp_path_factory):
  root = tmp_path_factory.mktemp("rl")
  probs = [_problem(i, "train" if i < 6 else "heldout") for i in range(8)]
  # A problem whose tests its reference fails: skipped (counted), never trained on.
  probs.append(Problem(**{**_problem(9).__dict__, "id": "t/broken",
                          "tests": (({"a": 1, "b": 1}, 0),)}))
  (root / "problems").mkdir()
  lines = [json.dumps({f: getattr(p, f) for f in problem_set._FIELDS}) for p in probs]
  # A line without tests: skipped and counted, not fatal (and not silently scored 0).
  lines.append(json.dumps({**json.loads(lines[0]), "id": "t/no_tests", "tests": []}))
  (root / "problems" / problem_set.PROBLEMS_FILE).write_text("".join(l + "\n" for l in lines))
  (root / "problems" / problem_set.STATS_FILE).write_text("{}\n")
  cfg = model.preset("tiny", **SHAPE)
  orbax_params.save(root / "init", cfg, model.init_params(cfg, seed=1))
  return root


def _config(root, steps=3):
  c = config_files.load("configs/rl.py:demo")
  c.model.update(preset="tiny", **SHAPE)
  c.init.update(kind="orbax", path=str(root / "init"))
  c.rl.update(problems=str(root / "problems"), stages=((steps, 12, 2),), rollout_slots=8,
              eval_every=2, dynamic_sampling=False, temperature=1.0, mini_batches=1,
              # The random tiny model rarely stops within 12 tokens: with overlong filtering
              # no token would be trained on and the resume check would compare no updates.
              overlong_filter=False)
  c.data.update(batch_size=4, seq_len=256)
  c.mesh.update(data=2, fsdp=4)
  c.ckpt.update(every_steps=1, async_save=False)
  c.log.progress_bar = False
  c.opt.update(peak_lr=1e-3, end_lr=1e-3)
  return c


def _rows(workdir):
  drop = ("time_", "tokens_per_s", "mfu")
  return [{k: v for k, v in json.loads(l).items() if not k.startswith(drop)}
          for l in (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()]


def test_rl_loop_resumes_exactly_and_evaluates(rl_setup, tmp_path):
  whole = rl.run(_config(rl_setup), tmp_path / "whole")
  assert whole["skipped_problems"] == {"reference_fails_tests": 1, "file_no_tests": 1,
                                       "heldout_reference_fails_tests": 0}
  first = json.loads((tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()[0])
  assert first["problems_skipped/file_no_tests"] == 1
  evals = [json.loads(l) for l in (tmp_path / "whole" / "eval.jsonl").read_text().splitlines()]
  assert [e["step"] for e in evals] == [0, 2, 3]
  assert all(e["split"] == "heldout" and e["n"] == 2 for e in evals)
  c = _config(rl_setup)
  c.stop_after_steps = 2
  rl.run(c, tmp_path / "parts")
  resumed = rl.run(_config(rl_setup), tmp_path / "parts")
  assert resumed["start_step"] == 2
  assert _rows(tmp_path / "parts") == _rows(tmp_path / "whole")
  # Without dynamic sampling the zero-advantage groups are still updated on (loss 0).
  train = [r for r in _rows(tmp_path / "whole") if "pass_rate" in r]
  assert [r["updates"] for r in train] == [1, 1, 1]
  assert [r["updates_skipped_empty"] for r in train] == [0, 0, 0]


def test_bad_rl_configs_are_refused(rl_setup, tmp_path):
  c = _config(rl_setup)
  c.rl.stages = ((3, 12, 1),)
  with pytest.raises(ConfigError, match="group_size >= 2"):
    rl.run(c, tmp_path / "w")
  c = _config(rl_setup)
  c.rl.stages = ((3, 300, 2),)
  with pytest.raises(ConfigError, match="max_new_tokens=300 leaves no room"):
    rl.run(c, tmp_path / "w")
  c = _config(rl_setup)
  c.rl.problems = str(tmp_path / "none")
  with pytest.raises(ConfigError, match="config.rl.problems"):
    rl.run(c, tmp_path / "w")
  c = _config(rl_setup)
  c.rl.train_limit = -1
  with pytest.raises(ConfigError, match="config.rl.train_limit=-1"):
    rl.run(c, tmp_path / "w")
  tree = _config(rl_setup).to_dict()
  tree["rl"]["clip_hi"] = 0.3
  with pytest.raises(ConfigError, match="config.rl.clip_hi"):
    rl.run(tree, tmp_path / "w")
  assert not (tmp_path / "w" / "checkpoints").exists()


def test_train_limit_keeps_the_first_train_problems(rl_setup, tmp_path):
  """A small pool (the rl_curriculum ablation's) trains on the train split's first N problems."""
  c = _config(rl_setup)
  c.rl.train_limit = 1
  c.rl.eval_every = 0
  c.stop_after_steps = 1
  rl.run(c, tmp_path / "w")
  first = problem_set.load(c.rl.problems, "train", skipped={})[0]
  assert json.loads((tmp_path / "w" / "rl_problems.json").read_text())["train"] == [first.id]


_RUN = "import json, sys; from seedcoder_jax.posttrain import rl; rl.run(json.load(open(sys.argv[1])), sys.argv[2])"


@pytest.mark.slow
def test_rl_kill9_and_restart_continue_the_same_run(rl_setup, tmp_path):
  """SIGKILL mid-run, restart: the run ends with the metrics of an uninterrupted one."""
  import os
  import signal
  import subprocess
  import sys
  import time
  c = _config(rl_setup, steps=6)
  c.rl.eval_every = 0
  (tmp_path / "config.json").write_text(json.dumps(c.to_dict()))
  rl.run(c, tmp_path / "whole")
  env = dict(os.environ, PYTHONPATH=str(pathlib.Path(__file__).resolve().parents[1]))
  cmd = [sys.executable, "-c", _RUN, str(tmp_path / "config.json"), str(tmp_path / "killed")]
  proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
  metrics = tmp_path / "killed" / "metrics.jsonl"
  deadline = time.time() + 300
  while time.time() < deadline and proc.poll() is None:
    if metrics.exists() and any(r.get("step", 0) >= 2 and "pass_rate" in r
                                for r in map(json.loads, metrics.read_text().splitlines())):
      break
    time.sleep(0.05)
  os.killpg(proc.pid, signal.SIGKILL)
  out = proc.communicate()[0]
  assert proc.returncode == -signal.SIGKILL, out[-2000:]
  done = max(r["step"] for r in map(json.loads, metrics.read_text().splitlines()) if "pass_rate" in r)
  assert 2 <= done < 6, "the kill should land mid-run"
  again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
  assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-3000:]
  last = lambda w: {r["step"]: r for r in _rows(w) if "pass_rate" in r}  # a restart re-logs steps
  assert last(tmp_path / "killed") == last(tmp_path / "whole")


def test_mini_batches_without_trainable_tokens_are_left_out():
  # 4 groups' rows in 4 mini-batches; the 2nd is padding (a dropped group), the 4th only
  # overlong-filtered completions: neither may cost an update or move the weights.
  mask = np.zeros((8, 5), np.float32)
  mask[0:2, 3:] = 1.0
  mask[4, 2:] = 1.0
  batch = {"tokens": np.arange(40).reshape(8, 5), "mask": mask,
           "advantages": np.arange(8, dtype=np.float32)}
  parts, left_out = rl.mini_batch_parts(batch, 4)
  assert left_out == 2
  assert [p["advantages"].tolist() for p in parts] == [[0.0, 1.0], [4.0, 5.0]]
  assert [p["tokens"][:, 0].tolist() for p in parts] == [[0, 5], [20, 25]]
  parts, left_out = rl.mini_batch_parts(batch, 1)
  assert left_out == 0 and len(parts) == 1 and parts[0]["mask"].shape == (8, 5)
