r"""Supervised fine-tuning on chat data (the Instruct model's first stage; the reasoning warmup).

  # the verifiable CodeI/O problems (train split) as chat examples, then SFT from SmolLM2
  python data/make_problems.py --output=workdir/problems --limit=400
  python data/make_instructions.py --config=configs/instruct_data.py:demo --source=problems \
      --problems=workdir/problems --workdir=workdir/instruct
  python launch/train.py --config=configs/sft.py:demo --workdir=workdir/sft \
      --config.sft.corpora=workdir/instruct/corpus
  # any key can be overridden: --config.opt.peak_lr=1e-5 --config.data.seq_len=1024 ...

The tree is pretraining's (configs/pretrain.py: model, init, opt, ckpt, eval, log, mesh) with
config.data reduced to batch_size, seq_len and tokenizer, plus the `sft` group below. Training
resumes from WORKDIR's newest checkpoint; otherwise it starts from config.init (a pretraining
workdir, hf, gguf or orbax weights).

Variants:
  demo:  SmolLM2-135M-Instruct (packaged GGUF) on a small chat corpus, minutes on 2 CPU cores.
  8b:    Seed-Coder-8B-Instruct's SFT on a pod: ~3M examples, 3 epochs, LR 2e-5, packing,
         difficulty-aware sampling, from the phase-2 Base workdir.
"""

import pathlib

import ml_collections

from seedcoder_jax import config_files


def base(pretrain_variant: str) -> ml_collections.ConfigDict:
  c = config_files.load(f"{pathlib.Path(__file__).with_name('pretrain.py')}:{pretrain_variant}")
  c.trainer = "sft"
  # The batch: global rows x tokens; packed conversations (first-fit, segment ids) fill each row.
  # The tokenizer's chat template (its GGUF / HF files) renders the conversations.
  tokenizer = c.data.tokenizer
  c.data = ml_collections.ConfigDict({"batch_size": c.data.batch_size,
                                      "seq_len": c.data.seq_len, "tokenizer": tokenizer})
  del c["prepare"]  # SFT data is never built implicitly

  c.sft = ml_collections.ConfigDict()
  c.sft.corpora = ("workdir/instruct/corpus",)  # chat corpus directories (kind "sft")
  c.sft.template_file = ""  # a Jinja chat template file overriding the tokenizer's own
  # Prepended when a conversation has no system message ("" = the template's default, if any).
  c.sft.system_prompt = "You are a helpful coding assistant."
  # Difficulty-aware sampling: a weight per difficulty rating 0..10 (() = all equal: plain
  # epochs). Each epoch an example appears weight / mean weight times in expectation.
  c.sft.difficulty_weights = ()
  c.sft.unrated_weight = 1.0  # examples without a rating
  c.sft.heldout_corpus = ""  # "" = hold out eval_fraction of the corpora (by a hash of the id)
  c.sft.eval_fraction = 0.05
  c.sft.packing_bins = 0  # first-fit packing bins (0: the per-process batch size)
  c.sft.read_threads = 2
  return c


def demo(c):
  c.data.update(batch_size=8, seq_len=512)
  c.model.loss_chunk = 128  # the LM head over 128-position slices: no [8, 512, 49152] logits
  # bfloat16 matmuls where the CPU has native bf16 (about 2x there), else float32 (perf.py);
  # configs/dpo.py:demo and the recipe's warmup inherit it.
  c.model.compute_dtype = "auto"
  # A higher LR than the 8b (2e-5): a few dozen steps on a 135M model, not 3 epochs of 3M examples.
  c.opt.update(peak_lr=5e-5, end_lr=5e-6, warmup_steps=5, total_steps=60, schedule="cosine",
               weight_decay=0.0)
  c.ckpt.every_steps = 20
  c.eval.update(every_steps=20, batches=2)
  c.log.every_steps = 5


def seed_coder_8b(c):
  c.init.kind = "workdir"
  c.init.path = "gs://YOUR_BUCKET/runs/seed_coder_8b_phase2"
  c.sft.corpora = ("gs://YOUR_BUCKET/instruct/corpus",)
  # The paper does not publish its difficulty weighting; harder examples count more here.
  c.sft.difficulty_weights = (0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.5, 1.5, 2.0, 2.0, 2.0)
  c.sft.eval_fraction = 0.005
  c.sft.read_threads = 8
  c.data.update(batch_size=256, seq_len=8192)  # 2M tokens per step, packed
  # ~3M examples x ~1K tokens x 3 epochs / 2M tokens per step ~= 4.5K steps.
  c.opt.update(peak_lr=2e-5, end_lr=2e-6, warmup_steps=100, total_steps=4500, schedule="cosine",
               weight_decay=0.0)
  c.ckpt.update(every_steps=500, keep=3)
  c.eval.update(every_steps=500, batches=16)


VARIANTS = {"demo": ("smollm2_135m", demo), "8b": ("8b_phase2", seed_coder_8b)}


def get_config(variant: str = "demo") -> ml_collections.ConfigDict:
  if variant not in VARIANTS:
    raise ValueError(f"unknown sft variant {variant!r}; known: {sorted(VARIANTS)}")
  pretrain_variant, apply = VARIANTS[variant]
  c = base(pretrain_variant)
  apply(c)
  return c
