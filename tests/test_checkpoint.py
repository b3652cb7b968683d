"""Training checkpoints: exact round trip of state and Grain iterator; corrupt steps (judged from
their files) fall back to older ones, mismatches and all-corrupt workdirs are refused by name."""

import pathlib

import jax
import numpy as np
import pytest

import toy_data
from seedcoder_jax import model
from seedcoder_jax import sharding as sh
from seedcoder_jax.train import checkpoint as ck
from seedcoder_jax.train import optimizer as opt_lib
from seedcoder_jax.train import step as step_lib

CFG = model.preset("tiny")
DATA = dict(batch_size=8, seq_len=16, vocab_size=CFG.vocab_size)


@pytest.fixture(scope="module")
def setup():
  mesh = sh.make_mesh({"fsdp": -1})
  opt = opt_lib.make_optimizer(opt_lib.OptimizerConfig(total_steps=10, warmup_steps=2))
  state = step_lib.init_sharded_state(cfg=CFG, optimizer=opt, mesh=mesh)
  target = (step_lib.abstract_state(CFG, opt), step_lib.state_shardings(CFG, opt, mesh))
  return mesh, opt, state, target


def _same(a, b):
  return all(np.array_equal(np.asarray(x), np.asarray(y))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _truncate(step_dir):
  """Every array file of a step cut to half its size (a crash or a bad disk)."""
  files = [f for f in (step_dir / ck.STATE).rglob("*") if f.is_file() and f.stat().st_size > 64
           and "/d/" in str(f)]
  assert files
  for f in files:
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def _save_two(directory, state):
  """Steps 1 and 2 with different states and iterator positions; returns the next batches."""
  it = toy_data.make_iterator(**DATA)
  c = ck.Checkpointer(directory, ck.CheckpointConfig(keep=3))
  next(it)
  c.save(1, state, it)
  after1 = next(it)
  c.save(2, state.replace(step=state.step + 1), it)
  after2 = next(it)
  c.close()
  return after1, after2


def test_round_trip_state_and_iterator(tmp_path, setup):
  mesh, opt, state, target = setup
  _, after2 = _save_two(tmp_path, state)
  c = ck.Checkpointer(tmp_path)
  it = toy_data.make_iterator(**DATA)
  r = c.restore_latest(*target, data_iterator=it)
  assert r.step == 2 and int(r.state.step) == 1
  assert _same(r.state.params, state.params) and _same(r.state.opt_state, state.opt_state)
  leaf = jax.tree.leaves(r.state.params)[0]
  assert leaf.sharding.mesh.shape == mesh.shape  # restored straight into the training shardings
  np.testing.assert_array_equal(next(it)["inputs"], after2["inputs"])
  c.close()


def test_corrupt_newest_falls_back_to_previous(tmp_path, setup, capsys):
  _, _, state, target = setup
  after1, _ = _save_two(tmp_path, state)
  _truncate(tmp_path / "2")
  c = ck.Checkpointer(tmp_path)
  it = toy_data.make_iterator(**DATA)
  r = c.restore_latest(*target, data_iterator=it)
  assert r is not None and r.step == 1
  out = capsys.readouterr().out
  assert f"checkpoint {tmp_path}/2 is corrupt (state/" in out and "bytes, " in out
  assert "falling back" in out and list(r.skipped) == [2]
  np.testing.assert_array_equal(next(it)["inputs"], after1["inputs"])
  # The bad step is moved aside with its reason, so a later save of step 2 is possible and it is
  # never read again.
  assert c.all_steps() == [1]
  [aside] = [p for p in tmp_path.iterdir() if p.name.startswith("corrupt-2-")]
  assert "bytes" in (aside / "why.txt").read_text()
  c.save(2, r.state, it)
  c.close()
  assert ck.Checkpointer(tmp_path).all_steps() == [1, 2]


def test_missing_item_and_unfinished_save_are_skipped(tmp_path, setup):
  _, _, state, target = setup
  _save_two(tmp_path, state)
  # A save killed before orbax's final rename leaves a temporary folder: never listed.
  (tmp_path / "3.orbax-checkpoint-tmp-123").mkdir()
  for f in (tmp_path / "2" / ck.DATA).iterdir():
    f.unlink()  # the iterator state of step 2 is gone
  c = ck.Checkpointer(tmp_path)
  r = c.restore_latest(*target, data_iterator=toy_data.make_iterator(**DATA))
  assert r.step == 1
  c.close()


def test_restore_params_only(tmp_path, setup):
  mesh, _, state, _ = setup
  _save_two(tmp_path, state)
  step, params, meta = ck.restore_params(tmp_path, model.abstract_params(CFG),
                                         sh.param_shardings(CFG, mesh))
  assert step == 2 and meta["step"] == 2 and _same(params, state.params)
  with pytest.raises(FileNotFoundError, match="no readable checkpoint"):
    ck.restore_params(pathlib.Path(tmp_path) / "nothing", model.abstract_params(CFG),
                      sh.param_shardings(CFG, mesh))


def test_shape_change_is_a_named_error_and_nothing_is_skipped(tmp_path, setup, monkeypatch):
  mesh, opt, state, _ = setup
  _save_two(tmp_path, state)
  wider = CFG.replace(d_ff=CFG.d_ff * 2)
  c = ck.Checkpointer(tmp_path)
  with pytest.raises(ck.CheckpointMismatchError,
                     match=r"params/layers/mlp/up_proj/kernel: checkpoint \(2, 128, 384\), this run "
                           r"\(2, 128, 768\)"):
    c.restore_latest(step_lib.abstract_state(wider, opt), step_lib.state_shardings(wider, opt, mesh),
                     data_iterator=toy_data.make_iterator(**DATA))
  assert c.all_steps() == [1, 2]  # both steps kept, none moved aside
  untied = CFG.replace(tie_embeddings=not CFG.tie_embeddings)
  with pytest.raises(ck.CheckpointMismatchError, match="tree structure: only in the checkpoint"):
    c.restore_latest(step_lib.abstract_state(untied, opt),
                     step_lib.state_shardings(untied, opt, mesh))
  # Grain iterator state is one file per process: saved by 1, resumed by 2 is refused by name.
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  with pytest.raises(ck.CheckpointMismatchError,
                     match="Grain iterator state saved by 1 processes, this run has 2"):
    ck.check_matches(tmp_path / "2", step_lib.abstract_state(CFG, opt), with_data=True)
  c.close()


def test_all_corrupt_refuses_to_start_over_unless_allowed(tmp_path, setup):
  _, _, state, target = setup
  _save_two(tmp_path, state)
  _truncate(tmp_path / "2")
  (tmp_path / "1" / ck.META / "metadata").unlink()
  c = ck.Checkpointer(tmp_path)
  with pytest.raises(ck.NoRestorableCheckpointError,
                     match=r"step 2: state/.* bytes.*step 1: meta/metadata is missing.*"
                           r"config.ckpt.allow_fresh_start=True"):
    c.restore_latest(*target, data_iterator=toy_data.make_iterator(**DATA))
  assert c.all_steps() == [1, 2]  # untouched, for a look
  c.close()
  c = ck.Checkpointer(tmp_path, ck.CheckpointConfig(allow_fresh_start=True))
  assert c.restore_latest(*target, data_iterator=toy_data.make_iterator(**DATA)) is None
  assert c.all_steps() == [] and len(list(tmp_path.glob("corrupt-*/why.txt"))) == 2
  c.close()
