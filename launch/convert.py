r"""Converts model checkpoints between Hugging Face, GGUF and our Orbax params format.

Formats:
  hf     a LlamaForCausalLM directory: config.json + model.safetensors or sharded safetensors with
         model.safetensors.index.json (read and write; seedcoder_jax.interop.hf).
  gguf   a llama.cpp GGUF file (read only; seedcoder_jax.interop.gguf).
  orbax  a directory with model_config.json and params/ written by orbax's StandardCheckpointer
         (read and write; seedcoder_jax.interop.orbax_params). Trainers and the sampler read it.

Examples:
  # Published Seed-Coder weights -> our format, in float32 (the training dtype):
  python launch/convert.py --from=hf --to=orbax \
      --input=/ckpt/Seed-Coder-8B-Base --output=/ckpt/seed_coder_8b_orbax
  # Our weights -> a bf16 Hugging Face checkpoint for transformers / vLLM / llama.cpp's converter:
  python launch/convert.py --from=orbax --to=hf --dtype=bfloat16 \
      --input=/workdir/params --output=/export/my-model
  # A GGUF model (e.g. SmolLM2-135M-Instruct) -> Hugging Face safetensors:
  python launch/convert.py --from=gguf --to=hf --input=model.gguf --output=/tmp/smollm2_hf

--dtype is the parameter dtype held in memory and written (hf: the safetensors dtype; orbax: the
stored arrays). Conversions run on one device; an 8B model needs about 33 GB of host memory in
float32, half in bfloat16.
"""

from absl import app
from absl import flags

import jax
import jax.numpy as jnp

_FROM = flags.DEFINE_enum("from", None, ["hf", "gguf", "orbax"], "Format of --input.")
_TO = flags.DEFINE_enum("to", None, ["hf", "orbax"], "Format of --output (GGUF is read-only).")
_INPUT = flags.DEFINE_string("input", None, "Checkpoint to read: a directory (hf, orbax) or a "
                             ".gguf file.")
_OUTPUT = flags.DEFINE_string("output", None, "Directory to write.")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"],
                           "Parameter dtype in memory and in the output.")
_MAX_SHARD_MB = flags.DEFINE_integer("max_shard_mb", 5000,
                                     "hf output: largest safetensors shard, in MB (10^6 bytes).")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace a checkpoint already in --output.")
flags.mark_flags_as_required(["from", "to", "input", "output"])


def read(fmt: str, path: str, dtype):
  """(cfg, params) from a checkpoint of format `fmt`, parameters cast to `dtype`."""
  if fmt == "hf":
    from seedcoder_jax.interop import hf
    return hf.load(path, dtype=dtype)
  if fmt == "orbax":
    from seedcoder_jax.interop import orbax_params
    return orbax_params.load(path, dtype=dtype)
  from seedcoder_jax.interop import gguf  # imported lazily: it pulls in the gguf package
  cfg, params = gguf.load(path)
  return cfg, jax.tree.map(lambda x: jnp.asarray(x, dtype), params)


def write(fmt: str, path: str, cfg, params, dtype_name: str) -> None:
  if fmt == "hf":
    from seedcoder_jax.interop import hf
    hf.save(path, cfg, params, dtype=dtype_name, max_shard_bytes=_MAX_SHARD_MB.value * 10**6,
            overwrite=_OVERWRITE.value)
  else:
    from seedcoder_jax.interop import orbax_params
    orbax_params.save(path, cfg, params, overwrite=_OVERWRITE.value)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  dtype = jnp.bfloat16 if _DTYPE.value == "bfloat16" else jnp.float32
  cfg, params = read(_FROM.value, _INPUT.value, dtype)
  write(_TO.value, _OUTPUT.value, cfg, params, _DTYPE.value)
  print(f"converted {_FROM.value}:{_INPUT.value} -> {_TO.value}:{_OUTPUT.value} "
        f"({cfg.n_params / 1e6:.1f}M parameters, {_DTYPE.value}; {cfg.hf_names()})")


if __name__ == "__main__":
  app.run(main)
