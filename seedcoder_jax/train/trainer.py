"""The pretraining loop (phase 1 and continued pretraining): config in, checkpoints and metrics out.

    summary = trainer.run(config, workdir)    # config: an ml_collections ConfigDict or a dict

`run` is the boundary: the config tree becomes frozen dataclasses (`PretrainConfig`), is validated
against the devices before anything is compiled, and then `train` runs:

  mesh -> input iterator -> resume from WORKDIR/checkpoints (else init: random, a previous phase's
  workdir, Hugging Face, GGUF or orbax weights) -> jitted step -> loop.

The loop dispatches step N, then fetches step N-1's metrics (so the host never waits for the
device except to read a few scalars), logs, checkpoints asynchronously and evaluates held-out loss.
A non-finite loss or gradient norm stops the run: the jitted step leaves the state untouched when
its metrics are not finite (or when an earlier step was skipped), so the state on the device is
the last good one; it is checkpointed together with the iterator position it had, and the error
names the step. Data order is part of the checkpoint, so kill -9 and restart reproduces the
uninterrupted losses exactly.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import time
from typing import Any, Callable, Iterator, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from seedcoder_jax import model as model_lib
from seedcoder_jax import perf
from seedcoder_jax import sharding as sharding_lib
from seedcoder_jax import storage
from seedcoder_jax.model.config import ModelConfig
from seedcoder_jax.train import checkpoint as ckpt_lib
from seedcoder_jax.train import metrics as metrics_lib
from seedcoder_jax.train import optimizer as opt_lib
from seedcoder_jax.train import step as step_lib
from seedcoder_jax.train.config import ConfigError, PretrainConfig, check_backend, from_tree

CHECKPOINTS = "checkpoints"


class NonFiniteLossError(RuntimeError):
  """The loss or gradient norm became NaN/Inf; the message names the step and the checkpoint."""


@dataclasses.dataclass(frozen=True)
class DataSource:
  """Where batches come from. `train(shard_index, shard_count)` returns a Grain iterator
  (get_state/set_state) of this process's rows of each global batch, as numpy dicts with
  step.BATCH_KEYS; `eval(shard_index, shard_count)` returns a list of such held-out batches.
  The shard is sharding.data_shard(mesh): the process index and count when the batch axes alone
  span the hosts; processes that differ only along the tensor axis get the same shard."""

  train: Callable[[int, int], Iterator[dict]]
  eval: Optional[Callable[[int, int], list]] = None


def prepare_missing_data(cfg: PretrainConfig) -> None:
  """Builds the data of config.prepare that config.data names and that is missing (the tiny
  variants' stdlib corpus and tokenizer), one log line each. Process 0 builds; the others wait."""
  from seedcoder_jax.input import stdlib_data  # pylint: disable=g-import-not-at-top
  p, data = cfg.prepare, dict(cfg.data)
  corpus = p.stdlib_corpus if p.stdlib_corpus in tuple(data.get("corpora", ())) else ""
  spm = p.tokenizer if p.tokenizer and data.get("tokenizer") == f"spm:{p.tokenizer}" else ""
  todo = (corpus and stdlib_data.corpus_missing(corpus)) or (spm and not os.path.exists(spm))
  if not todo:
    return
  if jax.process_index() == 0:
    if corpus and stdlib_data.corpus_missing(corpus):
      stdlib_data.build_corpus(corpus)
    if spm and not os.path.exists(spm):
      source = corpus or p.stdlib_corpus
      if stdlib_data.corpus_missing(source):
        stdlib_data.build_corpus(source)
      stdlib_data.build_tokenizer(spm, source, vocab_size=p.vocab_size, max_chars=p.max_chars)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices("prepare_missing_data")


def input_data_source(cfg: PretrainConfig) -> DataSource:
  """The project's Grain pipeline (seedcoder_jax.input) configured by `config.data`."""
  from seedcoder_jax import input as input_lib  # pylint: disable=g-import-not-at-top
  from seedcoder_jax import tokenizer as tokenizer_lib  # pylint: disable=g-import-not-at-top
  input_cfg = cfg.input_config()
  try:
    vocab = tokenizer_lib.load(input_cfg.tokenizer).vocab_size
  except tokenizer_lib.TokenizerError as e:
    raise ConfigError(f"config.data.tokenizer={input_cfg.tokenizer!r}: {e}") from e
  if vocab > cfg.model.vocab_size:
    raise ConfigError(f"config.data.tokenizer={input_cfg.tokenizer!r} has {vocab} tokens but "
                      f"config.model.vocab_size={cfg.model.vocab_size}")

  def wrap(fn):
    def call(pi, pc):
      try:
        return fn(pi, pc)
      except input_lib.InputConfigError as e:  # e.g. a missing corpus: name the config key
        raise ConfigError(str(e).replace("InputConfig.", "config.data.")) from e
    return call

  return DataSource(
      train=wrap(lambda pi, pc: input_lib.make_iterator(input_cfg, process_index=pi,
                                                        process_count=pc)),
      eval=wrap(lambda pi, pc: input_lib.make_eval_batches(
          input_cfg, num_batches=cfg.eval.batches, process_index=pi, process_count=pc))
      if (cfg.eval.every_steps or cfg.eval.at_end) and input_cfg.eval_fraction > 0 else None)


# --- the jitted functions -----------------------------------------------------------------------

def jit_guarded_step(cfg: PretrainConfig, optimizer, mesh,
                     objective: Optional[step_lib.Objective] = None):
  """step.train_step, jitted with explicit shardings and donated state, that applies its update
  only if the loss and gradient norm are finite and the state is at `expected_step` (so once a
  step is skipped, the steps already dispatched after it are no-ops too)."""
  objective = objective or step_lib.lm_objective(cfg.z_loss)
  state_sh, batch_sh, replicated = step_lib.step_shardings(cfg.model, optimizer, mesh,
                                                           objective=objective)

  def guarded(state, batch, expected_step):
    new, metrics = step_lib.train_step(cfg.model, optimizer, state, batch,
                                       grad_accum_steps=cfg.grad_accum_steps, objective=objective)
    ok = (jnp.isfinite(metrics["loss"]) & jnp.isfinite(metrics["grad_norm"])
          & (state.step == expected_step))
    # A select per element: XLA fuses it into the optimizer update, so it costs no extra pass.
    new = jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, state)
    return new, {**metrics, "applied": ok}

  return jax.jit(guarded, in_shardings=(state_sh, batch_sh, replicated),
                 out_shardings=(state_sh, replicated), donate_argnums=(0,))


def make_eval_fn(cfg: PretrainConfig, objective: Optional[step_lib.Objective] = None):
  """jit(params, batch) -> the objective's sums (the pretraining loss without its z-loss)."""
  objective = objective or step_lib.lm_objective(0.0)

  @jax.jit
  def sums(params, batch):
    return objective.loss_sums(cfg.model, params, batch)[1]
  return sums


def evaluate_all(eval_fn, params, batches, mesh) -> dict:
  """Every metric of the objective, count-weighted over the held-out batches ("tokens": count)."""
  total: dict = {}
  for b in batches:
    for k, v in jax.device_get(eval_fn(params, sharding_lib.place_batch(b, mesh))).items():
      total[k] = total.get(k, 0.0) + float(v)
  n = max(total.get("tokens", 0.0), 1.0)
  return {k: (v if k == "tokens" else v / n) for k, v in total.items()}


def evaluate(eval_fn, params, batches, mesh) -> float:
  """Token-weighted mean loss over the held-out batches."""
  return evaluate_all(eval_fn, params, batches, mesh)["loss"]


# --- initial state --------------------------------------------------------------------------------

SHAPE_FIELDS = ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "head_dim", "d_ff",
                "tie_embeddings")


def _check_same_shape(expected: ModelConfig, found: ModelConfig, where: str) -> None:
  diff = {k: (getattr(expected, k), getattr(found, k)) for k in SHAPE_FIELDS
          if getattr(expected, k) != getattr(found, k)}
  if diff:
    raise ConfigError(f"config.init.path={where}: its model differs from config.model in "
                      + ", ".join(f"{k} (config {a}, checkpoint {b})" for k, (a, b) in diff.items()))


def initial_params(cfg: PretrainConfig, mesh) -> tuple[Any, str]:
  """(float32 params placed on the mesh, source) from config.init: the weights a run starts
  from, and the frozen reference of DPO (and of RL's optional KL term)."""
  kind, path = cfg.init.kind, cfg.init.path
  if kind == "random":
    state = step_lib.init_sharded_state(cfg.model, opt_lib.make_optimizer(cfg.opt), mesh,
                                        seed=cfg.seed)
    return state.params, "random init"
  param_sh = sharding_lib.param_shardings(cfg.model, mesh)
  if kind == "workdir":
    ckpt_dir = storage.path(path) / CHECKPOINTS
    if not ckpt_dir.is_dir():
      ckpt_dir = storage.path(path)
    stored = storage.path(path) / "model_config.json"
    if stored.exists():
      _check_same_shape(cfg.model, ModelConfig.from_dict(json.loads(stored.read_text()),
                                                         where=str(stored)), path)
    step, params, _ = ckpt_lib.restore_params(ckpt_dir, model_lib.abstract_params(cfg.model),
                                              param_sh)
    source = f"params of {ckpt_dir}/{step}"
  else:
    from seedcoder_jax.interop import gguf, hf, orbax_params  # pylint: disable=g-import-not-at-top
    if kind == "gguf":
      file_cfg, params = gguf.load(path or gguf.smollm2_path(), mesh=mesh)
    elif kind == "hf":
      file_cfg, params = hf.load(path, mesh=mesh, scan_layers=cfg.model.scan_layers)
    else:
      file_cfg, params = orbax_params.load(path, mesh=mesh)
    _check_same_shape(cfg.model, file_cfg, path or "(packaged SmolLM2 GGUF)")
    source = f"{kind} weights {path or '(packaged SmolLM2 GGUF)'}"
  return jax.tree.map(lambda p, s: jax.device_put(p.astype(jnp.float32), s), params, param_sh), source


def initial_state(cfg: PretrainConfig, optimizer, mesh) -> tuple[step_lib.TrainState, str]:
  """A fresh TrainState (step 0, new optimizer moments) from config.init; returns (state, source)."""
  if cfg.init.kind == "random":
    return step_lib.init_sharded_state(cfg.model, optimizer, mesh, seed=cfg.seed), "random init"
  params, source = initial_params(cfg, mesh)
  opt_sh = step_lib.state_shardings(cfg.model, optimizer, mesh).opt_state
  opt_state = jax.jit(optimizer.init, out_shardings=opt_sh)(params)
  step0 = jax.device_put(jnp.zeros((), jnp.int32), NamedSharding(mesh, P()))
  return step_lib.TrainState(step=step0, params=params, opt_state=opt_state), source


# --- the loop ---------------------------------------------------------------------------------------

class _SavedPosition:
  """An iterator position recorded earlier, presented to Grain's checkpoint handler as if it were
  the iterator (the handler only calls get_state), so a checkpoint can pair an older train state
  with the data position it had."""

  def __init__(self, state):
    self._state = state

  def get_state(self):
    return self._state if isinstance(self._state, bytes) else json.dumps(self._state).encode()


def _write_run_files(workdir, cfg: PretrainConfig, raw: Mapping) -> None:
  if jax.process_index() != 0:
    return
  (workdir / "model_config.json").write_text(json.dumps(cfg.model.to_dict(), indent=2) + "\n")
  (workdir / "config.json").write_text(json.dumps(raw, indent=2, default=str) + "\n")


def validate(cfg: PretrainConfig, mesh, rows_per_example: int = 1) -> None:
  """Every check that needs the devices (the rest is in config.from_tree), before compiling.

  rows_per_example: batch rows per config.data.batch_size unit (DPO: 2, a pair's two replies)."""
  check_backend(cfg.model, jax.default_backend())
  try:
    sharding_lib.check_params_fit(cfg.model, mesh)
  except sharding_lib.MeshError as e:
    raise ConfigError(f"config.mesh={dict(cfg.mesh)} and config.model: {e}") from e
  rows = cfg.batch_size * rows_per_example
  per_step = rows // cfg.grad_accum_steps
  n = mesh.shape["data"] * mesh.shape["fsdp"]
  if cfg.batch_size % cfg.grad_accum_steps or per_step % n:
    unit = "" if rows_per_example == 1 else f" ({rows} rows)"
    raise ConfigError(
        f"config.data.batch_size={cfg.batch_size} with config.opt.grad_accum_steps="
        f"{cfg.grad_accum_steps}{unit} gives microbatches of {rows / cfg.grad_accum_steps:g} "
        f"rows, which data*fsdp={n} devices (config.mesh={dict(mesh.shape)}) must divide")
  try:
    _, shards = sharding_lib.data_shard(mesh)
  except sharding_lib.MeshError as e:
    raise ConfigError(f"config.mesh={dict(cfg.mesh)} on {jax.process_count()} processes: {e}") from e
  if cfg.batch_size % shards:
    raise ConfigError(f"config.data.batch_size={cfg.batch_size} is not divisible by the {shards} "
                      f"data shards that config.mesh={dict(mesh.shape)} cuts it into over "
                      f"{jax.process_count()} processes")


def train(cfg: PretrainConfig, workdir, *, data: Optional[DataSource] = None,
          raw_config: Optional[Mapping] = None, objective: Optional[step_lib.Objective] = None,
          name: str = "pretrain", rows_per_example: int = 1) -> dict:
  """Trains until opt.total_steps (or stop_after_steps), resuming from WORKDIR/checkpoints.

  Post-training trainers call this with their own data source, objective (default: the
  next-token loss) and name (the log prefix); every metric the objective returns is logged.
  """
  workdir = storage.path(workdir)  # a local path or gs://
  workdir.mkdir(parents=True, exist_ok=True)
  try:
    mesh = sharding_lib.make_mesh(dict(cfg.mesh))
  except sharding_lib.MeshError as e:
    raise ConfigError(f"config.mesh={dict(cfg.mesh)}: {e}") from e
  validate(cfg, mesh, rows_per_example)
  if data is None:
    prepare_missing_data(cfg)
    data = input_data_source(cfg)
  # This process's rows: shard pi of pc (processes that differ only along the tensor axis share one).
  pi, pc = sharding_lib.data_shard(mesh)
  iterator = data.train(pi, pc)  # a missing corpus fails here, before any compilation
  eval_batches = data.eval(pi, pc) if data.eval is not None else None

  optimizer = opt_lib.make_optimizer(cfg.opt)
  schedule = opt_lib.learning_rate_schedule(cfg.opt)
  ckpt = ckpt_lib.Checkpointer(workdir / CHECKPOINTS, cfg.ckpt)
  restored = ckpt.restore_latest(step_lib.abstract_state(cfg.model, optimizer),
                                 step_lib.state_shardings(cfg.model, optimizer, mesh), iterator)
  if restored is not None:
    state, start, source = restored.state, restored.step, f"checkpoint {ckpt.directory}/{restored.step}"
    if restored.skipped:
      source += f" (corrupt newer steps skipped and set aside: {sorted(restored.skipped)})"
  else:
    state, source = initial_state(cfg, optimizer, mesh)
    start = 0
  _write_run_files(workdir, cfg, raw_config or {})
  end = cfg.opt.total_steps if not cfg.stop_after_steps else min(cfg.stop_after_steps,
                                                                 cfg.opt.total_steps)
  if jax.process_index() == 0:
    print(f"[{name}] {cfg.model.n_params / 1e6:.2f}M parameters, mesh {dict(mesh.shape)}, "
          f"batch {cfg.batch_size}x{cfg.seq_len}, steps {start}->{end}; state from {source}",
          flush=True)

  step_fn = jit_guarded_step(cfg, optimizer, mesh, objective)
  eval_fn = make_eval_fn(cfg, objective) if eval_batches else None
  peak, _ = perf.peak_flops(cfg.model.compute_dtype)
  flops_per_token = cfg.model.flops_per_token(cfg.seq_len)
  tokens_per_step = cfg.batch_size * rows_per_example * cfg.seq_len
  writer = metrics_lib.MetricWriter(workdir, initial_step=start, total_steps=end,
                                    progress_bar=cfg.log.progress_bar)
  # Iterator positions before each recent batch: the NaN path pairs the last good state with the
  # position it had (two steps back at most, because of the one-step metric lag).
  positions: collections.deque = collections.deque(maxlen=4)
  summary: dict[str, Any] = {"start_step": start, "source": source}
  window = {"seconds": 0.0, "steps": 0}
  last_time = None
  pending = None  # (step, device metrics) of the step dispatched last

  def handle(step: int, device_metrics) -> None:
    """Fetches a dispatched step's metrics (blocks on that step only) and logs them."""
    nonlocal last_time
    m = {k: float(v) for k, v in jax.device_get(device_metrics).items()}
    now = time.perf_counter()
    if last_time is not None:  # the first step's time includes compilation: not a throughput sample
      window["seconds"] += now - last_time
      window["steps"] += 1
    last_time = now
    summary["last_loss"] = m["loss"]
    if not metrics_lib.is_finite(m) or not m["applied"]:
      raise _Stop(step, m)
    writer.advance(step)
    if step % cfg.log.every_steps == 0 or step == end:
      tps = metrics_lib.tokens_per_s(window["steps"] * tokens_per_step, window["seconds"])
      row = {"loss": m["loss"], "tokens_per_s": tps,
             "mfu": perf.mfu(flops_per_token, tps, peak) if window["steps"] else float("nan"),
             "lr": float(schedule(step - 1)), "grad_norm": m["grad_norm"],
             "param_norm": m["param_norm"], "tokens": m["tokens"]}
      if cfg.z_loss:
        row["z_loss"] = m["z_loss"]
      if objective is not None:  # a post-training objective's own metrics
        row.update({k: v for k, v in m.items() if k not in row and k != "applied"})
      writer.write(step, row, echo=step % (cfg.log.every_steps * 10) == 0 or step == end)
      window.update(seconds=0.0, steps=0)
    if ckpt.due(step):  # a resume starts after this step: its line is made durable (gs://)
      writer.flush()

  def run_eval(step: int) -> None:
    metrics = evaluate_all(eval_fn, state.params, eval_batches, mesh)
    summary["eval_loss"] = metrics["loss"]
    row = {"eval_loss": metrics["loss"]}
    if objective is not None:
      row.update({f"eval_{k}": v for k, v in metrics.items() if k not in ("loss", "tokens")})
    writer.write(step, row, echo=True)

  stopped = None
  with sharding_lib.activate(mesh), ckpt_lib.PreemptionGuard() as preemption:
    try:
      step = start
      for step in range(start + 1, end + 1):
        positions.append(iterator.get_state())
        batch = sharding_lib.place_batch(next(iterator), mesh)
        state, device_metrics = step_fn(state, batch, np.int32(step - 1))
        if pending is not None:
          handle(*pending)
        pending = (step, device_metrics)
        if ckpt.due(step):
          ckpt.save(step, state, iterator)
        if eval_fn is not None and cfg.eval.every_steps and step % cfg.eval.every_steps == 0:
          run_eval(step)
        if preemption.reached(step):
          print(f"[{name}] preemption (SIGTERM) at step {step}: saving and exiting", flush=True)
          summary["preempted_at"] = step
          end = step
          break
      if pending is not None:
        handle(*pending)
        pending = None
    except _Stop as stop:
      stopped = stop
    if stopped is None:
      if eval_fn is not None and cfg.eval.at_end and "eval_loss" not in summary:
        run_eval(end)
      ckpt.save(end, state, iterator)
    else:
      # The device state is the last good one (the guard skipped the bad step and all after it);
      # periodic saves made after the bad step was dispatched hold that same unadvanced state under
      # a later step number, so they go. positions[-1] is the position before batch `step`.
      good = int(jax.device_get(state.step))
      assert good == stopped.step - 1, (good, stopped.step)
      ckpt.wait()
      for later in [s for s in ckpt.all_steps() if s > good]:
        ckpt.delete(later)
      position = positions[len(positions) - 1 - (step - stopped.step)]
      ckpt.save(good, state, _SavedPosition(position), meta={"non_finite_step": stopped.step})
  ckpt.close()
  writer.close()
  if stopped is not None:
    raise NonFiniteLossError(
        f"non-finite metrics at step {stopped.step} (loss={stopped.metrics['loss']}, "
        f"grad_norm={stopped.metrics['grad_norm']}); the last good state (step {good}) is "
        f"checkpointed in {ckpt.directory}/{good} with its data position; lower opt.peak_lr, "
        f"raise opt.warmup_steps or inspect the data at that step, then rerun to resume")
  summary.update(end_step=end, workdir=str(workdir))
  return summary


class _Stop(Exception):
  def __init__(self, step: int, metrics: dict):
    super().__init__(step)
    self.step, self.metrics = step, metrics


def run(config, workdir, *, data: Optional[DataSource] = None) -> dict:
  """The trainer boundary: an ml_collections ConfigDict (or plain dict) -> dataclasses -> train."""
  raw = config.to_dict() if hasattr(config, "to_dict") else dict(config)
  cfg = from_tree(raw)
  return train(cfg, workdir, data=data, raw_config=raw)


__all__ = ["DataSource", "NonFiniteLossError", "ConfigError", "PretrainConfig", "run", "train",
           "jit_guarded_step", "initial_params", "initial_state", "validate", "evaluate",
           "evaluate_all"]
