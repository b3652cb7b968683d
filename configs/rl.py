r"""RL with verifiable rewards: GRPO with DAPO's techniques on problems with unit tests.

  python data/make_problems.py --source=synthetic --output=workdir/problems
  python launch/train.py --config=configs/rl.py:demo --workdir=workdir/rl \
      --config.rl.problems=workdir/problems
  # from an SFT run instead of the packaged SmolLM2 (the paper's Base-vs-Instruct ablation is
  # this one value): --config.init.kind=workdir --config.init.path=workdir/sft

The tree is pretraining's (configs/pretrain.py: model, init, opt, ckpt, log, mesh, seed,
stop_after_steps) with config.data = batch_size (prompts per RL step), seq_len (the longest
prompt + completion row) and tokenizer, plus the `rl` group below. config.opt.total_steps is
derived (RL steps x updates_per_batch x mini_batches). Held-out pass rates go to
WORKDIR/eval.jsonl; per-step metrics to metrics.jsonl and TensorBoard.

Variants:
  demo:  SmolLM2-135M-Instruct (packaged GGUF) on the synthetic problems (greedy held-out pass
         rate ~44% at the start), on a 2-core CPU.
  8b:    the paper's settings at Seed-Coder-8B scale (batch 128 prompts, LR 1e-6, temperature
         0.6, 16K then 32K with 16 then 32 rollouts), from the LongCoT warmup SFT workdir.
"""

import pathlib

import ml_collections

from seedcoder_jax import config_files


def base(pretrain_variant: str) -> ml_collections.ConfigDict:
  c = config_files.load(f"{pathlib.Path(__file__).with_name('pretrain.py')}:{pretrain_variant}")
  c.trainer = "rl"
  tokenizer = c.data.tokenizer
  c.data = ml_collections.ConfigDict({"batch_size": 4, "seq_len": 1024, "tokenizer": tokenizer})
  del c["prepare"]
  del c["eval"]  # RL evaluates held-out pass rates itself (config.rl.eval_*)
  c.opt.update(total_steps=0, schedule="constant", warmup_steps=0, weight_decay=0.0,
               clip_norm=1.0)  # total_steps: derived from config.rl.stages
  # XLA:CPU's memory-minimising scheduler (seedcoder_jax/xla_cpu.py): on a 2-core CPU the demo's
  # rollouts ran 1.2-1.3x faster and its updates no slower (docs/benchmarks.md); no effect on TPU/GPU.
  c.xla_cpu_scheduler = "dfs"

  c.rl = ml_collections.ConfigDict()
  c.rl.problems = "workdir/problems"  # problem set directory (data/make_problems.py)
  # Progressive schedule: (RL steps, max completion tokens, rollouts per prompt) per stage.
  c.rl.stages = ((20, 256, 8),)
  c.rl.temperature = 0.6  # sampling (log-probs and ratios use the same temperature)
  # The loss (posttrain.grpo; verl/DAPO conventions).
  c.rl.clip_low = 0.2
  c.rl.clip_high = 0.28  # DAPO's clip-higher
  c.rl.clip_c = ml_collections.FieldReference(None, field_type=float)  # dual clip (None: off)
  c.rl.advantage_scale = "group"  # group (GRPO) | none (Dr. GRPO: no std division)
  c.rl.kl_coef = 0.0  # k3 KL to the frozen config.init weights (DAPO: none)
  c.rl.updates_per_batch = 1  # mu: passes over each batch of rollouts
  c.rl.mini_batches = 1  # optimizer updates per pass
  # DAPO's techniques.
  c.rl.overlong_filter = True  # no loss on completions cut at max_new_tokens
  c.rl.overlong_buffer = 0  # > 0: soft overlong penalty over the last N tokens of the limit
  c.rl.overlong_penalty = 1.0  # its largest value
  c.rl.dynamic_sampling = True  # drop all-equal groups, sample more prompts...
  c.rl.max_sample_rounds = 3  # ...at most this many sampling rounds per step
  # Curriculum.
  c.rl.drop_solved_above = 0.875  # problems solved more often than this leave the pool
  c.rl.min_attempts = 8  # ...after at least this many rollouts
  c.rl.drop_format_groups = True  # groups all correct except for format errors
  c.rl.train_limit = 0  # train on the first N train problems (0: all); small: problems recur
  # Held-out evaluation (greedy, sandboxed) at step 0, every eval_every steps and at the end.
  c.rl.eval_every = 10
  c.rl.eval_limit = 64  # held-out problems (0: all)
  c.rl.eval_max_new_tokens = 0  # 0: the first stage's max_new_tokens
  # Rollouts and rewards.
  c.rl.rollout_slots = 32  # decode rows (continuous batching with slot refill)
  c.rl.reward_workers = 2  # parallel sandbox runs
  c.rl.reward_timeout_s = 10.0
  c.rl.template_file = ""
  c.rl.system_prompt = "You are a helpful coding assistant."
  # False: drop the problems' "reply with only the code" request (a policy warmed up on LongCoT
  # traces, which were asked without it: it reasons first, then writes the code block)
  c.rl.reply_format = True
  return c


def demo(c):
  # Prompts ~150 tokens; replies average ~65-100 tokens at temperature 0.6 (128 leaves room).
  c.data.update(batch_size=4, seq_len=384)
  c.opt.update(peak_lr=2e-5, end_lr=2e-5)  # a 135M model and a few dozen steps, not 32B
  c.rl.stages = ((16, 128, 8),)
  # Held-out (all 87 problems of the synthetic set) at step 0 and at the end only: one
  # evaluation costs about one RL step (~2.5 min here), and the demo has 45 minutes.
  c.rl.eval_every = 0
  c.rl.eval_limit = 0
  c.rl.max_sample_rounds = 2  # a third round (dynamic sampling) would cost ~30 s per step
  c.rl.rollout_slots = 32
  # 32 rows per step in four updates of 8 rows (one group each): four optimizer steps per batch
  # of rollouts (verl's ppo_mini_batch_size), and 8 x <=384 tokens without rematerialisation
  # (~9 GB peak; the LM head over 128-position slices).
  c.rl.mini_batches = 4
  c.model.update(remat="none", loss_chunk=128)
  c.ckpt.update(every_steps=4, keep=2)
  c.log.every_steps = 1


def seed_coder_8b(c):
  c.init.kind = "workdir"
  c.init.path = "gs://YOUR_BUCKET/runs/seed_coder_8b_longcot_sft"  # the LongCoT warmup (sft.py)
  c.model.max_seq_len = 36_864
  c.data.update(batch_size=128, seq_len=36_864)  # 4K prompt + 32K completion
  c.opt.update(peak_lr=1e-6, end_lr=1e-6)
  c.rl.problems = "gs://YOUR_BUCKET/problems"
  c.rl.stages = ((90, 16_384, 16), (160, 32_768, 32))
  # 128 x 16 / 4 = 512 rows per update = 8 per chip of v5p-128, one per microbatch at 16K
  # (launch/aot_compile.py --config=configs/rl.py:8b --topology=v5p-128 --seq_len=17408).
  c.rl.mini_batches = 4
  c.opt.grad_accum_steps = 8
  # The decode chunk at the engine's cache for both stages (1,024 rows x 33,792 columns: a 1K
  # prompt bucket + 32K) compiles at 71.3 GiB/chip of v5p's 95 with the optimizer state
  # (launch/aot_compile.py ... --seq_len=33792 --decode, docs/benchmarks.md).
  c.rl.rollout_slots = 1024
  c.rl.reward_workers = 256
  c.rl.eval_every = 10
  c.rl.eval_limit = 0
  c.ckpt.update(every_steps=10, keep=3)


VARIANTS = {"demo": ("smollm2_135m", demo), "8b": ("8b", seed_coder_8b)}


def get_config(variant: str = "demo") -> ml_collections.ConfigDict:
  if variant not in VARIANTS:
    raise ValueError(f"unknown rl variant {variant!r}; known: {sorted(VARIANTS)}")
  pretrain_variant, apply = VARIANTS[variant]
  c = base(pretrain_variant)
  apply(c)
  return c
