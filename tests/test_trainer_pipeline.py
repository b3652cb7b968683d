"""kill -9 resume and a 2-process run through launch/train.py on the real Grain pipeline.

tests/test_trainer.py runs the same checks on tests/toy_data.py (one synthetic row per index, no
packing). Here the data is the project's input pipeline as the tiny config sets it up (a corpus of
CPython's stdlib sources, a 512-token sentencepiece tokenizer, packing, context-level FIM at rate
0.5), and the runs under test are `python launch/train.py --config=configs/pretrain.py:tiny ...`.
"""

import importlib.util
import json
import math
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from numerics import f32_rtol
from test_trainer import compile_cache, losses_by_step, wait_all  # pylint: disable=unused-import
from seedcoder_jax.train import checkpoint as ck
from seedcoder_jax.train import trainer
from seedcoder_jax.train.config import from_tree

ROOT = pathlib.Path(__file__).resolve().parents[1]
B, T = 8, 128


@pytest.fixture(scope="module")
def real_data(tmp_path_factory):
  """A corpus of four stdlib packages and a 512-token tokenizer trained on it (as the tiny
  config's own data, smaller): config overrides naming them."""
  from seedcoder_jax import tokenizer
  from seedcoder_jax.input import corpus, source_files
  d = tmp_path_factory.mktemp("real_data")
  stdlib = pathlib.Path(os.__file__).parent
  records = [r for pkg in ("json", "email", "importlib", "logging")
             for r in source_files.iter_source_records(stdlib / pkg)]
  corpus.write_corpus(records, d / "corpus")
  tok = tokenizer.train_sentencepiece([r["text"] for r in records], d / "tok.model", vocab_size=512)
  return {"data.corpora": (str(d / "corpus"),), "data.tokenizer": tok.spec,
          "data.score_drop_fraction": 0.0, "data.eval_fraction": 0.0,
          "data.batch_size": B, "data.seq_len": T,
          "eval.every_steps": 0, "eval.at_end": False, "log.every_steps": 1,
          "opt.warmup_steps": 3,
          # float32 on every CPU: the cross-mesh comparisons below bound float32 reassociation
          "model.compute_dtype": "float32"}


def _flags(over: dict) -> list[str]:
  return [f"--config.{k}={v!r}" if isinstance(v, tuple) else f"--config.{k}={v}"
          for k, v in over.items()]


def _config(over: dict):
  """configs/pretrain.py:tiny with the overrides, as launch/train.py builds it from the flags."""
  spec = importlib.util.spec_from_file_location("pretrain_config", ROOT / "configs" / "pretrain.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config("tiny")
  for key, value in over.items():
    *parents, leaf = key.split(".")
    node = c
    for p in parents:
      node = node[p]
    node[leaf] = value
  return c


def _launch(workdir, over: dict, **env_extra) -> subprocess.Popen:
  cmd = [sys.executable, str(ROOT / "launch" / "train.py"),
         f"--config={ROOT / 'configs' / 'pretrain.py'}:tiny", f"--workdir={workdir}", *_flags(over)]
  # setsid: the trainer and anything it forks form one process group that we kill as a whole.
  return subprocess.Popen(cmd, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT), **env_extra),
                          start_new_session=True, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_kill9_through_launcher_on_real_pipeline_resumes_exactly(tmp_path, real_data):
  """launch/train.py killed -9 after its first finalised checkpoint, rerun: every step's loss is
  bit-equal to an uninterrupted run's (the packed, FIM'd batches resume at the saved position)."""
  steps = 40  # the kill lands after the checkpoint of step 5 or 10: most of the run is still ahead
  over = {**real_data, "opt.total_steps": steps, "ckpt.every_steps": 5, "ckpt.keep": 2}
  trainer.run(_config(over), tmp_path / "reference")
  expected = losses_by_step(tmp_path / "reference")
  assert sorted(expected) == list(range(1, steps + 1))

  killed = tmp_path / "killed"
  proc = _launch(killed, over)
  deadline = time.time() + 600
  while time.time() < deadline and proc.poll() is None:
    saved = (killed / "checkpoints").is_dir() and any(
        p.name.isdigit() for p in (killed / "checkpoints").iterdir())  # finalised, not tmp
    if saved and (killed / "metrics.jsonl").exists() and max(losses_by_step(killed) or [0]) >= 6:
      break
    time.sleep(0.05)
  os.killpg(proc.pid, signal.SIGKILL)
  out = proc.communicate()[0]
  assert proc.returncode == -signal.SIGKILL, out[-3000:]
  before = losses_by_step(killed)
  assert 6 <= max(before) < steps, "the kill should land mid-run"
  resumed = wait_all([_launch(killed, over)], timeout=900)[0]
  assert f"state from checkpoint {killed / 'checkpoints'}/" in resumed
  got = losses_by_step(killed)
  assert sorted(got) == list(range(1, steps + 1))
  assert got == expected  # bit-exact: same data position, same state, same programs


class _Concatenated:
  """One process's iterator over the global batch that `count` processes would each load a shard
  of: the shards' local batches side by side, in process order (the rows each process places on
  its devices). get_state/set_state as Grain's checkpoint handler expects of an iterator that is
  not a grain DatasetIterator (JSON bytes), for the trainer's final checkpoint."""

  def __init__(self, iterators):
    self.iterators = iterators

  def __iter__(self):
    return self

  def __next__(self):
    parts = [next(it) for it in self.iterators]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

  def get_state(self) -> bytes:
    return json.dumps([it.get_state() for it in self.iterators]).encode()

  def set_state(self, state: bytes):
    for it, s in zip(self.iterators, json.loads(state)):
      it.set_state(s)


@pytest.mark.slow
def test_two_processes_through_launcher_on_real_pipeline_match_one_process(tmp_path, real_data):
  """2 JAX processes x 2 CPU devices (gloo), mesh fsdp:4 across both, each loading its own shard of
  the corpus through the real pipeline (its own packing and FIM), stopped at step 3 with a
  checkpoint and resumed to step 6, all through launch/train.py. The losses equal a 1-process run
  (8 devices) of the same global batches: both shards' pipelines in one process, concatenated."""
  from seedcoder_jax import input as input_lib
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  steps = 6
  over = {**real_data, "opt.total_steps": steps, "ckpt.every_steps": 3, "mesh.fsdp": -1}

  def run_both(extra):
    return wait_all([_launch(tmp_path / "two", {**over, **extra},
                             JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2",
                             JAX_PROCESS_ID=str(i),
                             XLA_FLAGS="--xla_force_host_platform_device_count=2")
                     for i in range(2)], timeout=900)

  first = run_both({"stop_after_steps": 3})
  assert "mesh {'data': 1, 'fsdp': 4, 'tensor': 1}" in first[0]
  assert ck.Checkpointer(tmp_path / "two" / "checkpoints").all_steps()[-1] == 3
  assert sorted((tmp_path / "two" / "checkpoints" / "3" / "data").glob("process_*.json")) == [
      tmp_path / "two" / "checkpoints" / "3" / "data" / f"process_{i}-of-2.json" for i in range(2)]
  second = run_both({"stop_after_steps": 0})
  assert f"state from checkpoint {tmp_path / 'two' / 'checkpoints'}/3" in second[0]
  two = losses_by_step(tmp_path / "two")
  assert sorted(two) == list(range(1, steps + 1))

  config = _config(over)
  input_cfg = from_tree(config.to_dict()).input_config()
  shards = [next(input_lib.make_iterator(input_cfg, process_index=i, process_count=2))
            for i in range(2)]
  assert shards[0]["inputs"].shape == (B // 2, T)
  assert not np.array_equal(shards[0]["inputs"], shards[1]["inputs"])  # two different shards
  data = trainer.DataSource(train=lambda pi, pc: _Concatenated(
      [input_lib.make_iterator(input_cfg, process_index=i, process_count=2) for i in range(2)]))
  trainer.run(config, tmp_path / "one", data=data)
  one = losses_by_step(tmp_path / "one")
  # Different meshes (4 vs 8 devices) sum the same float32 terms in different orders. The step-1
  # loss is a mean over the batch's B*T tokens of log-softmaxes over 512 entries; later steps add
  # the parameters' differences, Adam's per-entry normalisation turning a gradient entry that is
  # within reassociation noise of 0 into an update of up to the LR, whose effect on the loss is
  # that entry's (near-0) gradient times it. tests/test_sharding.py bounds such runs (3 updates,
  # sharded vs one device) at f32_rtol(vocab); the longest sum here is the B*T tokens.
  # A wrong shard (rows missing, duplicated or mis-weighted) moves the loss by ~1e-2 of itself.
  rtol = f32_rtol(B * T)
  for step in one:
    assert math.isclose(two[step], one[step], rel_tol=rtol), (step, rtol, two, one)


@pytest.mark.slow
def test_two_processes_across_a_tensor_axis_through_launcher_match_one_process(tmp_path, real_data):
  """2 processes x 2 CPU devices with mesh tensor:4 (the tensor axis crosses the processes): both
  hold every row, so both load the whole batch (one data shard) through the real pipeline; the
  losses equal a 1-process run's on the same pipeline (8 devices, fsdp 2 x tensor 4)."""
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  steps = 4
  over = {**real_data, "opt.total_steps": steps, "ckpt.every_steps": 0}
  outs = wait_all([_launch(tmp_path / "two", {**over, "mesh.fsdp": 1, "mesh.tensor": 4},
                           JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2",
                           JAX_PROCESS_ID=str(i),
                           XLA_FLAGS="--xla_force_host_platform_device_count=2")
                   for i in range(2)], timeout=900)
  assert "mesh {'data': 1, 'fsdp': 1, 'tensor': 4}" in outs[0]
  trainer.run(_config({**over, "mesh.fsdp": 2, "mesh.tensor": 4}), tmp_path / "one")
  two, one = losses_by_step(tmp_path / "two"), losses_by_step(tmp_path / "one")
  assert sorted(two) == sorted(one) == list(range(1, steps + 1))
  rtol = f32_rtol(B * T)  # as in the fsdp test above: reassociation only
  for step in one:
    assert math.isclose(two[step], one[step], rel_tol=rtol), (step, rtol, two, one)
