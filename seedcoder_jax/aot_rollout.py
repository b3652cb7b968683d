"""AOT compilation of the rollout engine's decode chunk (sampling/rollout.py) for a TPU slice.

The RL loop decodes on the training mesh with the parameters being trained: the decode program
must compile for the same slice and fit beside nothing else (rollouts and updates alternate, so
the update's activations are gone while it runs, but the optimizer state is not). Reports the
per-device memory of one decode chunk (`chunk` steps of `slots` rows over a `cache_len`-column
KV cache) plus the resident train state (parameters and Adam moments, 12 bytes per parameter
sharded), which stays in HBM between updates.

    python launch/aot_compile.py --config=configs/rl.py:8b --topology=v5p-128 --decode
"""

from __future__ import annotations

import time
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P

from seedcoder_jax import aot
from seedcoder_jax import model as model_lib
from seedcoder_jax import sharding as sharding_lib
from seedcoder_jax.model import kv_cache, splash
from seedcoder_jax.sampling import rollout


def abstract_decode_state(cfg, mesh, slots: int, cache_len: int) -> dict:
  """ShapeDtypeStructs (with shardings) of the engine's decode state."""
  dtype = jnp.bfloat16 if cfg.compute_dtype == "bfloat16" else jnp.float32
  shape = kv_cache.shape(cfg, slots, cache_len)
  cache_sh = sharding_lib.logical_to_sharding(
      {"k": P(*kv_cache.CACHE_AXES), "v": P(*kv_cache.CACHE_AXES), "valid": P("batch", "length")},
      mesh)
  row = sharding_lib.batch_sharding(mesh, 1)
  rep = NamedSharding(mesh, P())
  keys = jax.eval_shape(lambda: jax.random.split(jax.random.key(0), slots))
  sds = lambda s, d, sh: jax.ShapeDtypeStruct(s, d, sharding=sh)
  return {"cache": {"k": sds(shape, dtype, cache_sh["k"]), "v": sds(shape, dtype, cache_sh["v"]),
                    "valid": sds((slots, cache_len), jnp.bool_, cache_sh["valid"])},
          "token": sds((slots,), jnp.int32, row), "position": sds((slots,), jnp.int32, row),
          "step": sds((slots,), jnp.int32, row), "keys": sds(keys.shape, keys.dtype, row),
          "index": sds((), jnp.int32, rep), "temperature": sds((), jnp.float32, rep)}


def compile_decode_chunk(spec: aot.AotSpec, topology: aot.Topology, *, slots: int,
                         cache_len: int, chunk: int = 16, timeout_s: float = 120.0) -> dict:
  """Compiles one decode chunk of the rollout engine; returns the report (JSON-able)."""
  devices = aot.topology_devices(topology, timeout_s)
  mesh = aot.topology_mesh(spec.mesh, devices)
  # The engine decodes with XLA attention (splash is a training kernel).
  cfg = spec.model.replace(attention_impl="xla") if spec.model.attention_impl == "splash" \
      else spec.model
  sharding_lib.check_params_fit(cfg, mesh)
  sharding_lib.check_batch_fits(slots, mesh)
  params = aot._with_sharding(model_lib.abstract_params(cfg),  # pylint: disable=protected-access
                              sharding_lib.param_shardings(cfg, mesh))
  state = abstract_decode_state(cfg, mesh, slots, cache_len)
  t0 = time.perf_counter()
  with sharding_lib.activate(mesh), splash.target_platform(mesh.devices.flat[0].platform):
    lowered = rollout._decode.lower(params, state, cfg=cfg, n_steps=chunk,  # pylint: disable=protected-access
                                    kind="sample")
    compiled = lowered.compile()
  seconds = time.perf_counter() - t0
  mem = compiled.memory_analysis()
  total = (mem.argument_size_in_bytes + mem.output_size_in_bytes - mem.alias_size_in_bytes
           + mem.temp_size_in_bytes + mem.generated_code_size_in_bytes)
  n = len(devices)
  # Adam's two moments beside the parameters (float32 each): resident between updates.
  optimizer_bytes = 2 * cfg.n_params * 4 // n
  report: dict[str, Any] = {
      "what": "rollout decode chunk", "topology": topology.name, "n_chips": topology.n_chips,
      "mesh": dict(mesh.shape), "preset": spec.preset,
      "model": {**cfg.hf_names(), "n_params": cfg.n_params}, "compute_dtype": cfg.compute_dtype,
      "slots": slots, "cache_len": cache_len, "chunk": chunk,
      "argument_bytes": mem.argument_size_in_bytes, "output_bytes": mem.output_size_in_bytes,
      "alias_bytes": mem.alias_size_in_bytes, "temp_bytes": mem.temp_size_in_bytes,
      "total_bytes_per_device": total, "optimizer_bytes_per_device": optimizer_bytes,
      "with_optimizer_gib_per_device": round((total + optimizer_bytes) / aot.GIB, 3),
      "hbm_bytes_per_chip": topology.hbm_bytes_per_chip,
      "fits": total + optimizer_bytes <= topology.hbm_bytes_per_chip,
      "compile_s": round(seconds, 1), "jax": jax.__version__, "libtpu": aot.libtpu_version()}
  if not report["fits"]:
    raise aot.DoesNotFit(
        f"does not fit: the decode chunk needs {total / aot.GIB:.1f} GiB per chip plus "
        f"{optimizer_bytes / aot.GIB:.1f} GiB of optimizer state; {topology.generation} has "
        f"{topology.hbm_bytes_per_chip / aot.GIB:.0f} GiB: fewer slots or a shorter cache",
        report)
  return report
