"""The pretrain trainer: exact resume after kill -9, NaN stop, config refusal, metrics contract."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import pytest

import toy_data
from seedcoder_jax.train import checkpoint as ck
from seedcoder_jax.train import metrics as metrics_lib
from seedcoder_jax.train import trainer

ROOT = pathlib.Path(__file__).resolve().parents[1]
TOY_TRAIN = ROOT / "tests" / "toy_train.py"
B, T = 8, 32


@pytest.fixture(scope="module", autouse=True)
def compile_cache(tmp_path_factory):
  """A persistent compilation cache shared by the in-process runs and the subprocesses: the same
  programs are compiled once (most of these tests' time on a 2-core CPU otherwise)."""
  cache = str(tmp_path_factory.mktemp("jax_cache"))
  names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
           "jax_persistent_cache_min_entry_size_bytes")
  old = {n: getattr(jax.config, n) for n in names}
  for n, v in zip(names, (cache, 0.0, 0)):
    jax.config.update(n, v)
  env = {"JAX_COMPILATION_CACHE_DIR": cache, "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
         "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
  os.environ.update(env)
  yield
  for n, v in old.items():
    jax.config.update(n, v)
  for k in env:
    os.environ.pop(k, None)


def toy_config(**over):
  c = {"model": {"preset": "tiny"}, "data": {"batch_size": B, "seq_len": T},
       "opt": {"total_steps": 16, "warmup_steps": 3, "peak_lr": 3e-3, "end_lr": 3e-4},
       "ckpt": {"every_steps": 4, "keep": 2}, "eval": {"every_steps": 0, "at_end": False},
       "log": {"every_steps": 1, "progress_bar": False}}
  for k, v in over.items():
    c[k] = {**c.get(k, {}), **v} if isinstance(v, dict) else v
  return c


def losses_by_step(workdir) -> dict[int, float]:
  """Last logged loss of each step (a resumed run re-logs steps after its checkpoint)."""
  return {r["step"]: r["loss"] for r in metrics_lib.read_metrics(workdir) if "loss" in r}


def test_learns_and_writes_metrics_contract(tmp_path):
  cfg = toy_config(opt={"total_steps": 30}, eval={"every_steps": 15, "batches": 1})
  summary = trainer.run(cfg, tmp_path, data=toy_data.source(batch_size=B, seq_len=T, vocab_size=512))
  rows = metrics_lib.read_metrics(tmp_path)
  train_rows = [r for r in rows if "loss" in r]
  assert [r["step"] for r in train_rows] == list(range(1, 31))
  for r in train_rows[1:]:
    assert {"step", "loss", "tokens_per_s", "mfu", "lr", "grad_norm", "param_norm"} <= set(r)
    assert r["tokens_per_s"] > 0 and 0 < r["mfu"] < 1
  assert train_rows[-1]["loss"] < train_rows[0]["loss"] - 0.5  # visibly learns
  assert [r["step"] for r in rows if "eval_loss" in r] == [15, 30]
  assert summary["end_step"] == 30 and (tmp_path / "tensorboard").is_dir()
  assert ck.Checkpointer(tmp_path / "checkpoints").all_steps()[-1] == 30
  assert json.loads((tmp_path / "model_config.json").read_text())["d_model"] == 128


def _spawn(workdir, cfg, *extra, **env_extra):
  env = dict(os.environ, PYTHONPATH=str(ROOT), **env_extra)
  # setsid: the trainer and anything it forks form one process group that we kill as a whole.
  return subprocess.Popen([sys.executable, str(TOY_TRAIN), str(workdir), json.dumps(cfg), *extra],
                          env=env, start_new_session=True, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)


def test_kill9_and_resume_reproduces_losses_exactly(tmp_path):
  cfg = toy_config()
  reference = tmp_path / "reference"
  trainer.run(cfg, reference, data=toy_data.source(batch_size=B, seq_len=T, vocab_size=512))
  expected = losses_by_step(reference)

  killed = tmp_path / "killed"
  proc = _spawn(killed, cfg, TOY_BATCH_DELAY_S="0.3")  # slow input: the kill lands mid-run
  deadline = time.time() + 120
  while time.time() < deadline:
    saved = (killed / "checkpoints").is_dir() and any(
        p.name.isdigit() for p in (killed / "checkpoints").iterdir())  # finalised, not tmp
    done = saved and (killed / "metrics.jsonl").exists() and max(losses_by_step(killed) or [0]) >= 6
    if done or proc.poll() is not None:
      break
    time.sleep(0.05)
  os.killpg(proc.pid, signal.SIGKILL)
  out = proc.communicate()[0]
  assert proc.returncode == -signal.SIGKILL, out[-2000:]
  before = losses_by_step(killed)
  assert 6 <= max(before) < 16, "the kill should land mid-run"
  resumed = subprocess.run([sys.executable, str(TOY_TRAIN), str(killed), json.dumps(cfg)],
                           env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True,
                           text=True, timeout=300)
  assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-3000:]
  assert "state from checkpoint" in resumed.stdout
  got = losses_by_step(killed)
  assert sorted(got) == list(range(1, 17))
  assert got == expected  # bit-exact: same data order, same state, same programs


def test_nan_stops_naming_the_step_with_last_good_checkpoint(tmp_path):
  cfg = toy_config(opt={"total_steps": 20}, ckpt={"every_steps": 5})
  data = toy_data.source(batch_size=B, seq_len=T, vocab_size=512, nan_after=9)
  with pytest.raises(trainer.NonFiniteLossError, match=r"at step 10 .*last good state \(step 9\)"):
    trainer.run(cfg, tmp_path, data=data)
  # Step 10 was saved periodically before its NaN was seen: it must not survive.
  assert ck.Checkpointer(tmp_path / "checkpoints").all_steps() == [5, 9]
  # Rerunning resumes from step 9 with the iterator before batch 10, so it meets the same NaN.
  with pytest.raises(trainer.NonFiniteLossError, match="at step 10 "):
    trainer.run(cfg, tmp_path, data=data)
  rows = [r for r in metrics_lib.read_metrics(tmp_path) if "loss" in r]
  assert max(r["step"] for r in rows) == 9


@pytest.mark.parametrize("change, message", [
    ({"opt": {"peak_lrr": 1e-3}}, r"unknown key\(s\) config.opt.peak_lrr \(value 0.001\)"),
    ({"data": {"batch_size": 6}}, r"config.data.batch_size=6 .* data\*fsdp=8"),
    ({"mesh": {"tensor": 3}}, r"config.mesh=\{'tensor': 3\}"),
    ({"mesh": {"fsdp": 1, "tensor": 8}}, r"config.mesh=.*n_kv_heads=4"),
    ({"data": {"seq_len": 4096}}, r"config.data.seq_len=4096 exceeds config.model.max_seq_len=512"),
    ({"init": {"kind": "workdir", "path": "/nonexistent/phase1"}},
     r"config.init.path='/nonexistent/phase1' does not exist"),
    ({"model": {"preset": "tinyy"}}, r"config.model.preset='tinyy'"),
    ({"opt": {"schedule": "linear"}}, r"opt.schedule='linear'"),
    ({"opt": {"grad_accum_steps": 3}}, r"config.data.batch_size=8 with config.opt.grad_accum_steps=3"),
])
def test_bad_config_refused_before_compiling(tmp_path, monkeypatch, change, message):
  def no_compile(*a, **k):
    raise AssertionError("compiled despite a bad config")
  monkeypatch.setattr(trainer, "jit_guarded_step", no_compile)
  data = toy_data.source(batch_size=B, seq_len=T, vocab_size=512)
  with pytest.raises(trainer.ConfigError, match=message):
    trainer.run(toy_config(**change), tmp_path, data=data)
  assert not (tmp_path / "checkpoints").exists()
