"""gs:// workdirs against a local Cloud Storage emulator: metrics.jsonl, TensorBoard, config dumps,
checkpoints and the kill -9 resume; gs:// corpora refused naming the gcsfuse mount."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

import gcs_emulator
import toy_data
from seedcoder_jax import model
from seedcoder_jax import sharding as sh
from seedcoder_jax import storage
from seedcoder_jax.input import corpus as corpus_lib
from seedcoder_jax.train import checkpoint as ck
from seedcoder_jax.train import metrics as metrics_lib
from seedcoder_jax.train import trainer
from test_trainer import B, ROOT, T, TOY_TRAIN, compile_cache, losses_by_step, toy_config  # pylint: disable=unused-import


@pytest.fixture(scope="module")
def gcs():
  with gcs_emulator.running(bucket="runs") as env:
    yield env


def test_paths_stay_remote_and_local_ones_absolute(tmp_path, monkeypatch):
  assert str(storage.path("gs://runs/a") / "checkpoints") == "gs://runs/a/checkpoints"
  monkeypatch.chdir(tmp_path)
  assert str(storage.path("rel")) == str(tmp_path / "rel")


def test_metric_writer_on_gcs_appends_across_runs(gcs):
  workdir = "gs://runs/metrics_only"
  for start, steps in ((0, (1, 2)), (2, (3,))):  # a second run appends to the first run's lines
    w = metrics_lib.MetricWriter(workdir, initial_step=start, total_steps=3, progress_bar=False)
    for s in steps:
      w.write(s, {"loss": 1.0 / s})
    w.close()
  assert [r["step"] for r in metrics_lib.read_metrics(workdir)] == [1, 2, 3]
  events = list((storage.path(workdir) / "tensorboard").iterdir())  # named by the second: 1 or 2
  assert events and all(e.stat().length > 0 for e in events)


def test_append_log_on_gcs_flushes_on_demand(gcs):
  log = storage.AppendLog("gs://runs/log.txt", flush_s=3600)
  log.write("a\n")
  assert not storage.path("gs://runs/log.txt").exists()  # buffered: Cloud Storage has no append
  log.flush()
  log.write("b\n")
  assert storage.path("gs://runs/log.txt").read_text() == "a\n"
  log.close()
  assert storage.path("gs://runs/log.txt").read_text() == "a\nb\n"


def test_gs_corpus_refused_naming_the_gcsfuse_mount():
  with pytest.raises(corpus_lib.CorpusError, match=r"gcsfuse.*/gcs/bkt/curation/corpus"):
    corpus_lib.open_corpus("gs://bkt/curation/corpus")
  with pytest.raises(corpus_lib.CorpusError, match="CORPUS_BUCKET=bkt"):
    corpus_lib.write_corpus([], "gs://bkt/x")


@pytest.mark.slow  # ~35 s: gcsfs retries the emulator's 501 to its move API, then copies
def test_corrupt_step_set_aside_in_a_bucket(gcs):
  """Cloud Storage has no folder rename: setting a step aside copies it (gcsfs, recursive)."""
  directory = storage.path("gs://runs/aside/checkpoints")
  checkpointer = ck.Checkpointer(directory)  # (it would delete an uncommitted step made before)
  (directory / "5" / "state").mkdir(parents=True, exist_ok=True)
  (directory / "5" / "state" / "x").write_text("bytes")
  checkpointer._set_aside({5: "state/x has 5 bytes, 9 when saved"})  # pylint: disable=protected-access
  (aside,) = [p for p in directory.iterdir() if p.name.startswith("corrupt-5-")]
  assert not (directory / "5").exists() and (aside / "state" / "x").read_text() == "bytes"
  assert "9 when saved" in (aside / "why.txt").read_text()
  checkpointer.close()


@pytest.mark.slow
def test_gs_workdir_trains_checkpoints_and_resumes_after_kill9(tmp_path, gcs):
  """The trainer in a subprocess on gs://runs/killed, killed -9 mid-run, rerun: the same losses
  as an uninterrupted local run, with checkpoints, metrics, TensorBoard and configs in the bucket."""
  cfg = toy_config()
  reference = tmp_path / "reference"
  trainer.run(cfg, reference, data=toy_data.source(batch_size=B, seq_len=T, vocab_size=512))
  expected = losses_by_step(reference)

  workdir = "gs://runs/killed"
  env = dict(os.environ, PYTHONPATH=str(ROOT), **gcs)
  proc = subprocess.Popen([sys.executable, str(TOY_TRAIN), workdir, json.dumps(cfg)],
                          env={**env, "TOY_BATCH_DELAY_S": "0.3"}, start_new_session=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  checkpoints = ck.Checkpointer(f"{workdir}/checkpoints")
  deadline = time.time() + 300
  while time.time() < deadline and proc.poll() is None:
    # metrics.jsonl reaches the bucket once a checkpoint step's line is written
    if storage.path(f"{workdir}/metrics.jsonl").exists() and checkpoints.all_steps():
      break
    time.sleep(0.2)
  os.killpg(proc.pid, signal.SIGKILL)
  out = proc.communicate()[0]
  assert proc.returncode == -signal.SIGKILL, out[-3000:]
  before = losses_by_step(workdir)
  assert 4 <= max(before) < 16, "the kill should land mid-run"

  resumed = subprocess.run([sys.executable, str(TOY_TRAIN), workdir, json.dumps(cfg)], env=env,
                           capture_output=True, text=True, timeout=600)
  assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-3000:]
  assert f"state from checkpoint {workdir}/checkpoints/" in resumed.stdout
  got = losses_by_step(workdir)
  assert sorted(got) == list(range(1, 17))
  assert got == expected  # bit-exact, as on a local disk

  run = storage.path(workdir)
  assert checkpoints.all_steps()[-1] == 16
  assert (run / "checkpoints" / "16" / ck.MANIFEST).exists()
  assert ck.corruption(run / "checkpoints" / "16", with_data=True) is None
  assert json.loads((run / "model_config.json").read_text())["d_model"] == 128
  assert json.loads((run / "config.json").read_text())["opt"]["total_steps"] == 16
  assert len(list((run / "tensorboard").iterdir())) == 2  # one event file per run
  # phase 2's init.kind="workdir" reads the newest parameters from the bucket
  mesh = sh.make_mesh({"fsdp": -1})
  cfg_model = model.preset("tiny")
  step, _, _ = ck.restore_params(f"{workdir}/checkpoints", model.abstract_params(cfg_model),
                                 sh.param_shardings(cfg_model, mesh))
  assert step == 16
