r"""Compiles the full train step (forward, backward, AdamW) for a TPU slice without TPUs.

Needs libtpu (`pip install -r requirements-tpu.txt`); no TPU is used or probed (the tool sets
JAX_PLATFORMS=cpu itself). Prints one JSON line with the per-device memory XLA:TPU assigned
(argument/output/alias/temp bytes and their total), the chip's HBM, whether it fits, and the step's
FLOPs from XLA's cost analysis (per device, and times the device count) beside the 6*N*tokens
estimate. XLA counts the body of the scanned layer stack once, so a copy of the step with 2 unrolled
layers is compiled too and every layer is counted (--noexact_flops skips it, halving the time).
Exits 1 with a "does not fit" message (after the JSON line) when the step needs more HBM per device
than the chip has, and 2 on a setup error.

  python launch/aot_compile.py --config=configs/pretrain.py:8b --topology=v5p-128
  python launch/aot_compile.py --config=configs/pretrain.py:8b --topology=v5p-128 --num_slices=2
                               # multi-slice: two v5p-128 joined by DCN, data axis across them
  python launch/aot_compile.py --preset=seed_coder_8b --topology=v6e-256 --seq_len=8192 \
      --mesh=fsdp:-1,tensor:1 --remat=full --grad_accum_steps=1
  # post-training steps: the config's trainer picks the objective and the batch
  python launch/aot_compile.py --config=configs/dpo.py:8b --topology=v5p-128   # policy chosen +
                               # rejected rows at 8K (the reference log-probs are precomputed)
  python launch/aot_compile.py --config=configs/rl.py:8b --topology=v5p-128 --seq_len=17408
  python launch/aot_compile.py --config=configs/rl.py:8b --topology=v5p-128 --seq_len=17408 --decode
                               # one GRPO update of stage 0: batch x G / mini_batches rows (16K
                               # completions + a 1K prompt budget)

Topologies: Cloud TPU names (v5p-128 = 64 chips: v5p-N counts TensorCores, v5e-N/v6e-N count chips)
or libtpu strings (v5p:4x4x4); v4 is not supported (libtpu describes it per TensorCore). Flags
given explicitly override the --config file's values.
"""

import dataclasses
import os
import sys

# Before JAX is imported: the compile needs only libtpu's compiler, never a TPU backend (which would
# probe for chips here, or lock them on a TPU VM). CPU runs the few eager ops (optimizer shapes).
os.environ["JAX_PLATFORMS"] = "cpu"

from absl import app, flags  # pylint: disable=g-import-not-at-top,g-multiple-import

from seedcoder_jax import aot  # pylint: disable=g-import-not-at-top
from seedcoder_jax.model.config import ATTENTION_IMPLS, COMPUTE_DTYPES, REMAT_POLICIES

_TOPOLOGY = flags.DEFINE_string("topology", "v5p-128", "TPU slice: v5p-128, v5p-256, v6e-256, "
                                "v5e-8, ... or a libtpu string such as v5p:4x4x4.")
_CONFIG = flags.DEFINE_string("config", None, "configs/FILE.py[:variant] with get_config(arg); read: "
                              "model, data.batch_size, data.seq_len, mesh, opt.")
_PRESET = flags.DEFINE_string("preset", None, "model preset (seedcoder_jax.model.PRESETS); default "
                              "seed_coder_8b unless --config names one.")
_BATCH = flags.DEFINE_integer("batch_size", None, "global batch in sequences; default: one sequence "
                              "per data*fsdp device per microbatch (times --grad_accum_steps).")
_SEQ = flags.DEFINE_integer("seq_len", None, "tokens per sequence; default 8192 (pretraining phase 1).")
_MESH = flags.DEFINE_string("mesh", None, "mesh axes AXIS:SIZE over data,fsdp,tensor, one may be -1; "
                            "default fsdp:-1 (parameters and optimizer state over all devices).")
_REMAT = flags.DEFINE_enum("remat", None, REMAT_POLICIES, "layer rematerialisation; default full.")
_DTYPE = flags.DEFINE_enum("compute_dtype", None, COMPUTE_DTYPES, "matmul operand dtype; default "
                           "bfloat16 (parameters and optimizer state stay float32).")
_ATTN = flags.DEFINE_enum("attention_impl", None, ATTENTION_IMPLS,
                          "attention kernel; default: the config's.")
_ACCUM = flags.DEFINE_integer("grad_accum_steps", None, "microbatches per optimizer step; default 1.")
_EXACT = flags.DEFINE_bool("exact_flops", True, "also compile the step with 2 unrolled layers, so "
                           "that XLA's FLOPs count every layer of the scanned stack (its cost "
                           "analysis counts a loop body once); about doubles the compile time.")
_SLICES = flags.DEFINE_integer("num_slices", 1, "identical --topology slices joined by DCN "
                               "(multi-slice, xpk --num-slices); the mesh's data axis crosses them "
                               "(config.mesh.dcn_data). Same as a '2xv5p-128' topology.")
_TIMEOUT = flags.DEFINE_float("topology_timeout_s", 120.0, "give up if libtpu has not described the "
                              "topology after this many seconds.")


_DECODE = flags.DEFINE_bool("decode", False, "RL configs: compile the rollout engine's decode chunk "
                            "(config.rl.rollout_slots rows over a --seq_len (default data.seq_len) "
                            "column KV cache) instead of the update step.")
_RL_STAGE = flags.DEFINE_integer("rl_stage", 0, "RL configs: the progressive stage whose group size "
                                 "sets the update's rows (batch x G / mini_batches).")


def post_training_fields(config_arg: str) -> dict:
  """AotSpec fields of a post-training config (config.trainer dpo | rl): its objective, the rows
  of one update and their length; {} for pretraining and SFT (the next-token loss)."""
  config = aot.load_config_file(config_arg)
  trainer = config.get("trainer", "pretrain") if hasattr(config, "get") else "pretrain"
  tree = config.to_dict()
  if trainer == "dpo":
    from seedcoder_jax.posttrain import dpo_train  # pylint: disable=g-import-not-at-top
    cfg, dpo, _ = dpo_train.config_from_tree(tree)
    return {"objective": dpo_train.dpo_objective(dpo), "rows_per_example": 2,
            "batch_size": cfg.batch_size}
  if trainer == "rl":
    from seedcoder_jax.posttrain import rl, rl_config  # pylint: disable=g-import-not-at-top
    cfg, rl_cfg, _ = rl_config.config_from_tree(tree)
    if not 0 <= _RL_STAGE.value < len(rl_cfg.stages):
      raise aot.AotError(f"--rl_stage={_RL_STAGE.value}: the config has {len(rl_cfg.stages)} stages")
    group = rl_cfg.stages[_RL_STAGE.value].group_size
    return {"objective": rl.rl_objective(rl_cfg),
            "batch_size": cfg.batch_size * group // rl_cfg.mini_batches}
  return {}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  try:
    topology = aot.parse_topology(_TOPOLOGY.value, _SLICES.value)
    post = post_training_fields(_CONFIG.value) if _CONFIG.value else {}
    if _BATCH.value is not None:
      post.pop("batch_size", None)
    spec = aot.build_spec(
        config=_CONFIG.value, preset=_PRESET.value, seq_len=_SEQ.value,
        batch_size=_BATCH.value or post.pop("batch_size", None), **post,
        mesh=aot.parse_mesh(_MESH.value) if _MESH.value else None,
        grad_accum_steps=_ACCUM.value,
        model_overrides={"remat": _REMAT.value, "compute_dtype": _DTYPE.value,
                         "attention_impl": _ATTN.value})
    if _DECODE.value:
      from seedcoder_jax import aot_rollout  # pylint: disable=g-import-not-at-top
      config = aot.load_config_file(_CONFIG.value) if _CONFIG.value else None
      if config is None or config.get("trainer") != "rl":
        raise aot.AotError("--decode needs an RL config (config.trainer='rl')")
      if topology.num_slices > 1:
        raise aot.AotError("--decode compiles for one slice; drop --num_slices")
      report = aot_rollout.compile_decode_chunk(
          dataclasses.replace(spec, objective=None), topology,
          slots=int(config.rl.rollout_slots), cache_len=_SEQ.value or int(config.data.seq_len),
          timeout_s=_TIMEOUT.value)
    else:
      report = aot.compile_train_step(spec, topology, timeout_s=_TIMEOUT.value,
                                      exact_flops=_EXACT.value)
  except aot.DoesNotFit as e:
    print(aot.to_json_line(e.report), flush=True)
    print(f"aot_compile: {e}", file=sys.stderr)
    return 1
  except (aot.AotError, ValueError) as e:
    print(f"aot_compile: {e}", file=sys.stderr)
    return 2
  print(aot.to_json_line(report), flush=True)
  return 0


if __name__ == "__main__":
  app.run(main)
