"""The pretrain trainer: exact resume after kill -9, NaN stop, config refusal, metrics contract."""

import json
import math
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


def wait_all(procs, timeout) -> list[str]:
  """Each process's output; one that outlives `timeout` is killed with its session, and every
  process must exit 0 (the assertion shows the tail of a failing one's output)."""
  outs = []
  for p in procs:
    try:
      outs.append(p.communicate(timeout=timeout)[0])
    finally:
      if p.poll() is None:
        os.killpg(p.pid, signal.SIGKILL)
  for p, o in zip(procs, outs):
    assert p.returncode == 0, o[-4000:]
  return outs


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


def test_sigterm_saves_and_exits_then_resumes(tmp_path):
  cfg = toy_config(ckpt={"every_steps": 100})  # no periodic save: only the preemption one
  proc = _spawn(tmp_path, cfg, TOY_BATCH_DELAY_S="0.3")
  deadline = time.time() + 120
  while time.time() < deadline and proc.poll() is None:
    if (tmp_path / "metrics.jsonl").exists() and max(losses_by_step(tmp_path) or [0]) >= 3:
      break
    time.sleep(0.05)
  os.kill(proc.pid, signal.SIGTERM)
  out = proc.communicate(timeout=120)[0]
  assert proc.returncode == 0, out[-3000:]
  assert "preemption (SIGTERM) at step" in out
  saved = ck.Checkpointer(tmp_path / "checkpoints").all_steps()
  assert len(saved) == 1 and 3 <= saved[0] < 16
  resumed = subprocess.run([sys.executable, str(TOY_TRAIN), str(tmp_path), json.dumps(cfg)],
                           env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True,
                           text=True, timeout=300)
  assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-3000:]
  assert f"state from checkpoint {tmp_path / 'checkpoints'}/{saved[0]}" in resumed.stdout
  assert sorted(losses_by_step(tmp_path)) == list(range(1, 17))


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
    ({"model": {"preset": "tiny", "loss_chunk": 48}}, r"config.model.loss_chunk=48 must divide"),
    ({"model": {"preset": "tiny", "loss_chunk": -1}}, r"loss_chunk=-1 must be >= 0"),
])
def test_bad_config_refused_before_compiling(tmp_path, monkeypatch, change, message):
  def no_compile(*a, **k):
    raise AssertionError("compiled despite a bad config")
  monkeypatch.setattr(trainer, "jit_guarded_step", no_compile)
  data = toy_data.source(batch_size=B, seq_len=T, vocab_size=512)
  with pytest.raises(trainer.ConfigError, match=message):
    trainer.run(toy_config(**change), tmp_path, data=data)
  assert not (tmp_path / "checkpoints").exists()


@pytest.mark.parametrize("impl, backend", [("splash", "gpu"), ("splash", "cpu"), ("cudnn", "tpu")])
def test_attention_kernel_of_another_backend_refused_before_compiling(tmp_path, monkeypatch, impl,
                                                                      backend):
  def no_compile(*a, **k):
    raise AssertionError("compiled despite a kernel/backend mismatch")
  monkeypatch.setattr(trainer, "jit_guarded_step", no_compile)
  monkeypatch.setattr(jax, "default_backend", lambda: backend)
  data = toy_data.source(batch_size=B, seq_len=T, vocab_size=512)
  with pytest.raises(trainer.ConfigError,
                     match=f"config.model.attention_impl='{impl}' .* backend is '{backend}'"):
    trainer.run(toy_config(model={"preset": "tiny", "attention_impl": impl}), tmp_path, data=data)
  assert not (tmp_path / "checkpoints").exists()


def _run_launcher(workdir, variant, *overrides, timeout=900):
  cmd = [sys.executable, str(ROOT / "launch" / "train.py"),
         f"--config={ROOT / 'configs' / 'pretrain.py'}:{variant}", f"--workdir={workdir}", *overrides]
  out = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                       capture_output=True, text=True, timeout=timeout)
  assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
  return out.stdout


@pytest.mark.slow
def test_tiny_two_phases_through_launcher(tmp_path):
  """Phase 1 (FIM 0.5 SPM, file-level) then phase 2 from phase 1's checkpoint (longer rows, lower
  LR, FIM 0.1, file + repository-level sources), both through launch/train.py on real code."""
  from seedcoder_jax import tokenizer
  from seedcoder_jax.input import corpus, source_files
  stdlib = pathlib.Path(os.__file__).parent
  records = [r for pkg in ("json", "email", "importlib", "logging")
             for r in source_files.iter_source_records(stdlib / pkg)]
  corpus.write_corpus(records, tmp_path / "corpus")
  tok = tokenizer.train_sentencepiece([r["text"] for r in records], tmp_path / "tok.model",
                                      vocab_size=512)
  data = [f"--config.data.corpora=('{tmp_path / 'corpus'}',)", f"--config.data.tokenizer={tok.spec}",
          "--config.data.eval_fraction=0.1", "--config.data.score_drop_fraction=0.0",
          "--config.log.every_steps=1"]
  out1 = _run_launcher(tmp_path / "p1", "tiny", *data, "--config.opt.total_steps=40",
                       "--config.opt.warmup_steps=5", "--config.ckpt.every_steps=20",
                       "--config.eval.every_steps=20", "--config.data.seq_len=128")
  assert "state from random init" in out1
  p1 = [r for r in metrics_lib.read_metrics(tmp_path / "p1") if "loss" in r]
  untrained = math.log(512)
  assert p1[0]["loss"] > untrained - 0.3 and p1[-1]["loss"] < untrained - 0.7
  data[0] = f"--config.data.corpora=('{tmp_path / 'corpus'}', '{tmp_path / 'corpus'}')"
  out2 = _run_launcher(tmp_path / "p2", "tiny_phase2", *data, f"--config.init.path={tmp_path / 'p1'}",
                       "--config.opt.total_steps=20", "--config.ckpt.every_steps=10",
                       "--config.eval.every_steps=10", "--config.model.rope_theta=1000000.0")
  assert f"state from params of {tmp_path / 'p1' / 'checkpoints'}/40" in out2
  p2 = [r for r in metrics_lib.read_metrics(tmp_path / "p2") if "loss" in r]
  assert p2[0]["step"] == 1 and p2[-1]["step"] == 20  # phase 2 counts its own steps
  assert p2[0]["loss"] < untrained - 0.7  # its first step already uses phase 1's weights
  assert json.loads((tmp_path / "p2" / "model_config.json").read_text())["rope_theta"] == 1e6


@pytest.mark.slow
def test_two_process_distributed_run_checkpoints_and_resumes(tmp_path):
  """Two JAX processes on localhost (gloo), 2 CPU devices each, one data shard each."""
  import socket
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  cfg = toy_config(opt={"total_steps": 8}, stop_after_steps=4, mesh={"fsdp": -1})

  def run_both(config):
    procs = []
    for i in range(2):
      env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
                 JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(i),
                 XLA_FLAGS="--xla_force_host_platform_device_count=2")
      procs.append(subprocess.Popen([sys.executable, str(TOY_TRAIN), str(tmp_path), json.dumps(config)],
                                    env=env, start_new_session=True, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True))
    return wait_all(procs, timeout=300)

  first = run_both(cfg)
  assert "mesh {'data': 1, 'fsdp': 4, 'tensor': 1}" in first[0]
  assert ck.Checkpointer(tmp_path / "checkpoints").all_steps()[-1] == 4
  assert sorted((tmp_path / "checkpoints" / "4" / "data").glob("process_*.json")) == [
      tmp_path / "checkpoints" / "4" / "data" / f"process_{i}-of-2.json" for i in range(2)]
  second = run_both({**cfg, "stop_after_steps": 0})
  assert "state from checkpoint" in second[0]
  assert sorted(losses_by_step(tmp_path)) == list(range(1, 9))


@pytest.mark.slow
def test_two_processes_sharing_rows_across_a_tensor_axis_match_one_process(tmp_path):
  """2 processes x 2 CPU devices with mesh tensor:4: the tensor axis crosses the processes, so both
  hold every batch row and load the same (whole) batch; the losses equal a 1-process run's."""
  import socket
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  cfg = toy_config(opt={"total_steps": 4}, mesh={"fsdp": 1, "tensor": 4}, ckpt={"every_steps": 0})
  procs = []
  for i in range(2):
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
               JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(i),
               XLA_FLAGS="--xla_force_host_platform_device_count=2")
    procs.append(subprocess.Popen([sys.executable, str(TOY_TRAIN), str(tmp_path / "two"),
                                   json.dumps(cfg)], env=env, start_new_session=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
  wait_all(procs, timeout=600)
  one = toy_config(opt={"total_steps": 4}, mesh={"fsdp": 2, "tensor": 4}, ckpt={"every_steps": 0})
  trainer.run(one, tmp_path / "one", data=toy_data.source(batch_size=B, seq_len=T, vocab_size=512))
  two, ref = losses_by_step(tmp_path / "two"), losses_by_step(tmp_path / "one")
  assert sorted(two) == [1, 2, 3, 4]
  for step in ref:
    assert math.isclose(two[step], ref[step], rel_tol=1e-4), (step, two, ref)


def test_missing_corpus_or_tokenizer_refused_before_compiling(tmp_path, monkeypatch):
  from seedcoder_jax import tokenizer
  monkeypatch.setattr(trainer, "jit_guarded_step", lambda *a, **k: pytest.fail("compiled"))
  tok = tokenizer.train_sentencepiece(
      [p.read_text() for p in sorted(pathlib.Path(json.__file__).parent.glob("*.py"))],
      tmp_path / "tok.model", vocab_size=400)
  cfg = toy_config(data={"corpora": [str(tmp_path / "no_corpus")], "tokenizer": tok.spec})
  with pytest.raises(trainer.ConfigError, match=r"config.data.corpora\[0\]='.*no_corpus'"):
    trainer.run(cfg, tmp_path / "w")
  cfg["data"]["tokenizer"] = f"spm:{tmp_path / 'missing.model'}"
  with pytest.raises(trainer.ConfigError, match=r"config.data.tokenizer='spm:.*missing.model'"):
    trainer.run(cfg, tmp_path / "w")
  cfg["data"]["tokenizer"] = tok.spec
  cfg["model"] = {"preset": "tiny", "vocab_size": 256}
  with pytest.raises(trainer.ConfigError, match=r"has 400 tokens but config.model.vocab_size=256"):
    trainer.run(cfg, tmp_path / "w")


def test_missing_tiny_data_is_built_on_first_use_and_only_where_named(tmp_path, monkeypatch,
                                                                      capsys):
  """config.prepare: a fresh clone's tiny run builds the stdlib corpus and tokenizer it names
  (one log line each), once; data the config does not name is never built."""
  from seedcoder_jax.input import source_files, stdlib_data
  monkeypatch.setattr(source_files, "default_source_dir",
                      lambda: pathlib.Path(json.__file__).parent.parent / "email")
  corpus, model = tmp_path / "data" / "corpus", tmp_path / "data" / "tok" / "tiny.model"
  prepare = {"stdlib_corpus": str(corpus), "tokenizer": str(model), "vocab_size": 400,
             "max_chars": 400_000}
  cfg = trainer.from_tree(toy_config(
      data={"corpora": [str(corpus)], "tokenizer": f"spm:{model}"}, prepare=prepare))
  trainer.prepare_missing_data(cfg)
  lines = capsys.readouterr().out.splitlines()
  assert len(lines) == 2 and all(line.startswith("[data] ") and "is missing" in line
                                 for line in lines), lines
  assert not stdlib_data.corpus_missing(corpus) and model.is_file()
  trainer.prepare_missing_data(cfg)  # present now: nothing to do, nothing said
  assert capsys.readouterr().out == ""
  mine = tmp_path / "my_corpus"
  other = trainer.from_tree(toy_config(
      data={"corpora": [str(mine)], "tokenizer": f"spm:{tmp_path / 'my.model'}"}, prepare=prepare))
  trainer.prepare_missing_data(other)
  assert not mine.exists() and not (tmp_path / "my.model").exists()
