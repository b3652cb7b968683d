"""The pure train step and its shardings.

A batch is a dict of [B, T] arrays: `inputs` (token ids), `targets` (next tokens), `segment_ids`
(packed documents, 0 = padding), `positions` (RoPE positions) and `weights` (1 where the loss
counts). The step is a pure function (state, batch) -> (state, metrics), jitted once with explicit
shardings and the state donated.

What the step minimises is an `Objective`: pretraining's and SFT's next-token loss by default;
post-training (seedcoder_jax.posttrain) passes its own (DPO, the GRPO policy loss) with its own
batch keys. An objective returns sums, never means: `(total, sums)` with `sums["tokens"]` the
denominator (tokens, pairs, ...) and every other entry a metric's numerator, so that gradient
accumulation and data-parallel reductions divide once by the global count and a batch split into
any number of microbatches gives the same update.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from seedcoder_jax import model as model_lib
from seedcoder_jax import sharding as sharding_lib
from seedcoder_jax.model.config import ModelConfig
from seedcoder_jax.train import losses

BATCH_KEYS = ("inputs", "targets", "segment_ids", "positions", "weights")


@dataclasses.dataclass(frozen=True)
class Objective:
  """What a train step minimises.

  loss_sums(cfg, params, batch) -> (total, sums): `total` is differentiated; `sums` holds
    "tokens" (the count the total and every other sum are divided by) and metric numerators.
  batch_shapes(batch_size, seq_len) -> {key: ShapeDtypeStruct}: the batch it takes (leading dim
    = rows, sharded over the data axes).
  """
  name: str
  loss_sums: Callable
  batch_shapes: Callable


def lm_objective(z_loss: float = 0.0) -> Objective:
  """Next-token cross entropy on `weights` (pretraining; SFT with weights = the assistant mask)."""
  return Objective("lm", lambda cfg, params, batch: loss_sums(cfg, params, batch, z_loss),
                   abstract_batch)


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any


def init_state(cfg: ModelConfig, optimizer: optax.GradientTransformation, seed: int = 0) -> TrainState:
  params = model_lib.init_params(cfg, seed)
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params))


def abstract_state(cfg: ModelConfig, optimizer: optax.GradientTransformation) -> TrainState:
  """ShapeDtypeStructs of the whole train state: nothing is allocated."""
  return jax.eval_shape(lambda: init_state(cfg, optimizer))


def state_shardings(cfg: ModelConfig, optimizer, mesh, rules=sharding_lib.LOGICAL_RULES) -> TrainState:
  """Optimizer moments shard like their parameters; counters and scalars are replicated."""
  params = sharding_lib.param_shardings(cfg, mesh, rules)
  replicated = NamedSharding(mesh, P())
  abstract = abstract_state(cfg, optimizer)
  opt_state = optax.tree_map_params(
      optimizer, lambda _, s: s, abstract.opt_state, params,
      transform_non_params=lambda _: replicated)
  return TrainState(step=replicated, params=params, opt_state=opt_state)


def init_sharded_state(cfg: ModelConfig, optimizer, mesh, seed: int = 0,
                       rules=sharding_lib.LOGICAL_RULES) -> TrainState:
  """eval_shape -> shardings -> jit(out_shardings): every shard is created where it lives."""
  sharding_lib.check_params_fit(cfg, mesh, rules)
  out = state_shardings(cfg, optimizer, mesh, rules)
  with sharding_lib.activate(mesh, rules):
    return jax.jit(lambda: init_state(cfg, optimizer, seed), out_shardings=out)()


def _micro_names(ndim: int) -> tuple:
  return (None, "batch", "length", *([None] * (ndim - 3)))[:ndim]


def train_step(cfg: ModelConfig, optimizer: optax.GradientTransformation, state: TrainState, batch,
               *, z_loss: float = 0.0, grad_accum_steps: int = 1,
               objective: Optional[Objective] = None):
  """One optimizer update; with accumulation, the batch is split into equal microbatches.

  The objective's sums of the microbatches add up and are divided once by the summed count, so
  the update equals that of the whole batch at once. Metrics: each sum divided by the count,
  "tokens" (the count), grad_norm and param_norm. `objective` defaults to lm_objective(z_loss).
  """
  objective = objective or lm_objective(z_loss)
  grad_fn = jax.grad(lambda p, b: objective.loss_sums(cfg, p, b), has_aux=True)
  if grad_accum_steps == 1:
    grads, aux = grad_fn(state.params, batch)
  else:
    # Keep each microbatch spread over the batch axes (not the accumulation axis).
    micro = jax.tree.map(lambda x: nn.with_logical_constraint(
        x.reshape(grad_accum_steps, x.shape[0] // grad_accum_steps, *x.shape[1:]),
        _micro_names(x.ndim + 1)), batch)
    first = jax.tree.map(lambda x: x[0], micro)
    aux_shapes = jax.eval_shape(lambda p, b: objective.loss_sums(cfg, p, b)[1], state.params, first)

    def body(carry, mb):
      g, a = grad_fn(state.params, mb)
      return jax.tree.map(jnp.add, carry, (g, a)), None

    zeros = (jax.tree.map(jnp.zeros_like, state.params),
             jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), aux_shapes))
    (grads, aux), _ = jax.lax.scan(body, zeros, micro)
  n = jnp.maximum(aux["tokens"], 1.0)
  grads = jax.tree.map(lambda g: g / n, grads)
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = {k: v / n for k, v in aux.items() if k != "tokens"}
  metrics.update(tokens=aux["tokens"], grad_norm=optax.tree.norm(grads),
                 param_norm=optax.tree.norm(params))
  return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics


def loss_sums(cfg: ModelConfig, params, batch, z_loss: float = 0.0):
  """(summed loss incl. z-loss, sums) of one (micro)batch: sums are "loss" (the next-token loss),
  "z_loss" and "tokens"; divide by the token count once."""
  kwargs = dict(segment_ids=batch["segment_ids"], positions=batch["positions"])
  if cfg.loss_chunk:
    hidden_BTD = model_lib.hidden_states(cfg, params, batch["inputs"], **kwargs)
    nll, z, n = losses.chunked_cross_entropy(
        hidden_BTD, model_lib.head_kernel(cfg, params), batch["targets"], batch["weights"],
        chunk=cfg.loss_chunk, z_loss=z_loss, compute_dtype=jnp.dtype(cfg.compute_dtype))
  else:
    logits_BTV = model_lib.forward(cfg, params, batch["inputs"], **kwargs)
    nll, z, n = losses.cross_entropy(logits_BTV, batch["targets"], batch["weights"], z_loss=z_loss)
  return nll + z, {"loss": nll, "z_loss": z, "tokens": n}


def abstract_batch(batch_size: int, seq_len: int):
  dtypes = {"weights": jnp.float32}
  return {k: jax.ShapeDtypeStruct((batch_size, seq_len), dtypes.get(k, jnp.int32)) for k in BATCH_KEYS}


def step_shardings(cfg: ModelConfig, optimizer, mesh, rules=sharding_lib.LOGICAL_RULES,
                   objective: Optional[Objective] = None):
  """(state, batch, replicated) shardings of a train step: one definition for every jitted step."""
  shapes = (objective or lm_objective()).batch_shapes(1, 1)
  return (state_shardings(cfg, optimizer, mesh, rules),
          {k: sharding_lib.batch_sharding(mesh, len(s.shape)) for k, s in shapes.items()},
          NamedSharding(mesh, P()))


def jit_train_step(cfg: ModelConfig, optimizer, mesh, *, z_loss: float = 0.0, grad_accum_steps: int = 1,
                   rules=sharding_lib.LOGICAL_RULES, objective: Optional[Objective] = None):
  """The train step jitted with explicit in/out shardings and the state donated.

  Call it (and lower/compile it) inside `sharding.activate(mesh)` so activation constraints apply.
  """
  objective = objective or lm_objective(z_loss)
  state_sh, batch_sh, replicated = step_shardings(cfg, optimizer, mesh, rules, objective)

  def step(state, batch):
    return train_step(cfg, optimizer, state, batch, grad_accum_steps=grad_accum_steps,
                      objective=objective)

  return jax.jit(step, in_shardings=(state_sh, batch_sh), out_shardings=(state_sh, replicated),
                 donate_argnums=(0,))
