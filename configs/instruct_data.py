r"""Instruction data for SFT (Seed-Coder section 3.1): synthetic, sandbox-verified, or problems.

  python data/make_instructions.py --config=configs/instruct_data.py:demo --workdir=/tmp/inst
  python data/make_instructions.py --config=configs/instruct_data.py:demo --workdir=/tmp/inst_p \
      --source=problems --problems=/tmp/problems     # what the CPU demo trains on
  python data/make_instructions.py --config=configs/instruct_data.py:scale --workdir=/mnt/inst \
      --config.generator.base_url=http://vllm-host:8000/v1 --config.generator.model=MODEL \
      --config.seeds.corpus=/mnt/curation/corpus

Writes DIR/corpus/ (a chat corpus of SFT records, posttrain.chat_corpus) and DIR/stats.json (every
seed kept or rejected under a named reason: seedcoder_jax.posttrain.instruct_data.REASONS).
source=generate journals every seed's outcome in DIR/journal.jsonl: a rerun resumes.

Variants:
  demo:  the packaged SmolLM2-135M-Instruct (GGUF) through the local sampler generates from 4
         snippets of this interpreter's standard library (the seed corpus when none is given);
         a few minutes on 2 CPU cores. It keeps little or nothing, and stats.json says so: the
         demo's SFT data comes from source=problems.
  scale: an OpenAI-compatible endpoint (vLLM, SGLang or launch/serve.py), 64 seeds in flight, a
         curated corpus's top half as seeds (100,000 files + 20,000 web pages).
"""

import ml_collections

VARIANTS = ("demo", "scale")


def base() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.source = "generate"  # generate (LLM + filters + sandbox) | problems (a problem set, train)
  c.seed = 0  # seed order, snippet windows and the style drawn per seed all derive from it
  c.concurrency = 1  # seeds in flight (threads); the local sampler serialises its calls anyway
  c.styles_file = ""  # meta-styles JSON; "" = data/instruct_styles.json (blended two at a time)

  # The generator, also the judge and the difficulty rater: seedcoder_jax.curation.oracle's
  # OracleConfig (any of its fields may be set here). backend: sampler (a local model through the
  # project's sampler; model = gguf:smollm2 | gguf:PATH | orbax:DIR | hf:DIR) or http
  # (OpenAI-compatible chat completions at base_url; model = the served name).
  c.generator = ml_collections.ConfigDict(dict(
      backend="sampler",
      model="gguf:smollm2",  # the packaged SmolLM2-135M-Instruct
      base_url="",  # http only, e.g. http://localhost:8000/v1
      api_key_env="",  # http only: environment variable holding a bearer token
      temperature=0.0,  # 0 = greedy
      max_prompt_tokens=1024,  # local backends: longer prompts are cut inside their code block
      max_new_tokens=512,  # the generation / revision budget
      batch_size=1,  # local sampler rows per call (one prompt per call here)
      timeout_s=120.0, max_retries=3, backoff_s=2.0,  # http: per request, transient retries
  ))

  # Seeds: snippets of the curated corpus's best files, plus its code-text (web) documents.
  c.seeds = ml_collections.ConfigDict(dict(
      corpus="",  # a pre-scored corpus dir (data/curate.py's DIR/corpus); "" = the stdlib
      top_fraction=0.5,  # files scoring in the top half of the corpus are candidates
      num_files=4,  # file snippets (seeded random order over the candidates)
      num_web=0,  # web documents (records of kind "web"; the stdlib fallback has none)
      languages=("python",),  # file languages used as seeds (tests are Python asserts)
      min_chars=200,  # shorter files are skipped
      max_chars=1200,  # a snippet is a window of at most this many characters (line bounded)
  ))

  # Filters, in order after parsing: syntax (Tree-sitter), decontamination, difficulty, then the
  # sandbox, then the correctness judge on the version that passed.
  c.filters = ml_collections.ConfigDict(dict(
      min_difficulty=3,  # difficulty 0-10 below this is rejected too_easy (the paper: 3)
      judge_min_score=6,  # correctness 0-10 below this is rejected judge_rejected (ours)
      judge_max_new_tokens=256,  # answer budget of the judge and the difficulty rater
      decontam_n=10,  # n-gram length of the benchmark overlap check (words)
      decontam_benchmarks=(),  # () = every benchmark the harness evaluates
  ))

  # Sandbox self-correction: code + tests run sealed; a failure goes back with its error.
  c.sandbox = ml_collections.ConfigDict(dict(
      max_revisions=2,  # revisions after the first failing run (0 = no self-correction)
      timeout_s=10.0, memory_mb=1024,  # limits of one run
      workers=2,  # sandbox runs at once, whatever the concurrency
      max_error_chars=1500,  # the end of the error shown to the generator
  ))

  # source=problems: a problem set (data/make_problems.py) whose train split becomes SFT data.
  c.problems = ml_collections.ConfigDict(dict(
      dir="",  # "" = build one under DIR/problems from the first build_limit CodeI/O entries
      build_limit=200,
      system_prompt="",  # "" = no system turn (the chat template adds its own default)
  ))

  # Prompt templates; "" = data/prompts/instruct_{generate,revise,judge,difficulty}.txt.
  c.prompts = ml_collections.ConfigDict(dict(generate="", revise="", judge="", difficulty=""))
  return c


def get_config(variant: str = "demo") -> ml_collections.ConfigDict:
  if variant not in VARIANTS:
    raise ValueError(f"unknown instruct_data variant {variant!r}; known: {VARIANTS}")
  c = base()
  if variant == "scale":
    c.concurrency = 64
    c.generator.backend = "http"
    c.generator.base_url = "http://localhost:8000/v1"  # or --config.generator.base_url=...
    c.generator.model = "Seed-Coder-8B-Instruct"  # the served model's name
    c.generator.temperature = 0.7
    c.generator.max_new_tokens = 2048
    c.generator.concurrency = 1  # requests per call: one prompt per call, 64 calls in flight
    c.seeds.num_files = 100_000
    c.seeds.num_web = 20_000
    c.seeds.corpus = "/mnt/curation/corpus"  # PLACEHOLDER: data/curate.py's DIR/corpus
    c.seeds.max_chars = 4000
    c.filters.judge_max_new_tokens = 1024
    c.sandbox.max_revisions = 3
    c.sandbox.workers = 16
  return c
