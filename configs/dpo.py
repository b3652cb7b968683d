r"""DPO on on-policy pairs judged by sandboxed unit tests (the Instruct model's second stage).

  # pairs: N samples per train problem from the SFT policy, (passing, failing) of the same prompt
  python data/make_dpo_pairs.py --policy=workdir:workdir/sft --problems=workdir/problems \
      --split=train --output=workdir/dpo_pairs
  python data/make_dpo_pairs.py --policy=workdir:workdir/sft --problems=workdir/problems \
      --split=heldout --output=workdir/dpo_pairs_heldout
  python launch/train.py --config=configs/dpo.py:demo --workdir=workdir/dpo \
      --config.init.path=workdir/sft --config.dpo.pairs=workdir/dpo_pairs/corpus \
      --config.dpo.heldout_pairs=workdir/dpo_pairs_heldout/corpus

The tree is pretraining's (configs/pretrain.py: model, init, opt, ckpt, eval, log, mesh) with
config.data = batch_size (pairs per step), seq_len (prompt + reply tokens per row) and tokenizer,
plus the `dpo` group below. config.init is both the policy's start and the frozen reference.

Variants:
  demo:  SmolLM2-135M-Instruct after configs/sft.py:demo (init workdir), minutes on 2 CPU cores.
  8b:    Seed-Coder-8B-Instruct's DPO on ~20K pairs at 8K tokens, from the SFT workdir, on a pod.
"""

import pathlib

import ml_collections

from seedcoder_jax import config_files


def base(sft_variant: str) -> ml_collections.ConfigDict:
  c = config_files.load(f"{pathlib.Path(__file__).with_name('sft.py')}:{sft_variant}")
  c.trainer = "dpo"
  del c["sft"]
  c.init.kind = "workdir"  # the SFT run (its newest params); also the frozen reference
  c.dpo = ml_collections.ConfigDict()
  c.dpo.pairs = "workdir/dpo_pairs/corpus"  # chat corpus of kind "pairs" (data/make_dpo_pairs.py)
  c.dpo.heldout_pairs = ""  # pairs of held-out problems: eval_rewards/accuracies ("" = none)
  c.dpo.beta = 0.1
  c.dpo.loss_type = "sigmoid"  # sigmoid | ipo (length-normalised log-probs)
  c.dpo.label_smoothing = 0.0  # > 0: conservative DPO (sigmoid only)
  c.dpo.rpo_alpha = 0.0  # > 0: + alpha x the chosen reply's mean token NLL (RPO)
  c.dpo.template_file = ""  # a Jinja chat template overriding the tokenizer's own
  c.dpo.system_prompt = "You are a helpful coding assistant."  # as in SFT
  c.dpo.reference_batch = 8  # pairs per forward pass of the one-off reference pass
  return c


def demo(c):
  c.init.path = "workdir/sft"
  c.data.update(batch_size=4, seq_len=512)  # 4 pairs = 8 rows
  c.opt.update(peak_lr=5e-6, end_lr=5e-7, warmup_steps=2, total_steps=30, schedule="cosine",
               weight_decay=0.0)
  c.ckpt.every_steps = 10
  c.eval.update(every_steps=10, batches=2)
  c.log.every_steps = 2


def seed_coder_8b(c):
  c.init.path = "gs://YOUR_BUCKET/runs/seed_coder_8b_sft"
  c.dpo.pairs = "gs://YOUR_BUCKET/dpo_pairs/corpus"
  c.dpo.heldout_pairs = "gs://YOUR_BUCKET/dpo_pairs_heldout/corpus"
  c.dpo.reference_batch = 64
  c.data.update(batch_size=64, seq_len=8192)  # 64 pairs = 128 rows of 8K per step
  # ~20K pairs, 2 epochs.
  c.opt.update(peak_lr=5e-7, end_lr=5e-8, warmup_steps=20, total_steps=600, schedule="cosine",
               weight_decay=0.0)
  c.ckpt.update(every_steps=100, keep=3)
  c.eval.update(every_steps=100, batches=8)


VARIANTS = {"demo": ("demo", demo), "8b": ("8b", seed_coder_8b)}


def get_config(variant: str = "demo") -> ml_collections.ConfigDict:
  if variant not in VARIANTS:
    raise ValueError(f"unknown dpo variant {variant!r}; known: {sorted(VARIANTS)}")
  sft_variant, apply = VARIANTS[variant]
  c = base(sft_variant)
  apply(c)
  return c
