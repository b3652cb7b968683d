"""Forward+backward throughput of the decoder: tokens/s and MFU, one JSON line.

  python bench/forward_backward.py --preset=tiny --batch_size=8 --seq_len=512
  python bench/forward_backward.py --preset=100m --batch_size=4 --seq_len=1024 --compute_dtype=bfloat16

MFU = ModelConfig.flops_per_token(seq_len) * tokens/s over the peak matmul FLOP/s measured in the
same process (or the published peak of a known accelerator in bf16). The step computes the loss
and the gradients of all parameters, jitted; it does not apply an optimizer update.
"""

import json

import jax
import jax.numpy as jnp
from absl import app, flags

from seedcoder_jax import model, perf
from seedcoder_jax.train import losses

_PRESET = flags.DEFINE_string("preset", "tiny", f"model preset: {sorted(model.PRESETS)}")
_BATCH = flags.DEFINE_integer("batch_size", 8, "sequences per step")
_SEQ = flags.DEFINE_integer("seq_len", 512, "tokens per sequence")
_DTYPE = flags.DEFINE_enum("compute_dtype", "float32", ["float32", "bfloat16", "auto"],
                           "matmul operand dtype (auto: perf.auto_compute_dtype, this machine's)")
_REMAT = flags.DEFINE_enum("remat", "none", ["none", "full", "dots"], "rematerialisation policy")
_ATTN = flags.DEFINE_enum("attention_impl", "flash", ["flash", "xla", "cudnn", "splash"],
                          "attention kernel")
_ITERS = flags.DEFINE_integer("iters", 5, "timed steps (median reported)")


def main(_):
  dtype = perf.resolve_compute_dtype(_DTYPE.value)
  cfg = model.preset(_PRESET.value, compute_dtype=dtype, remat=_REMAT.value,
                     attention_impl=_ATTN.value)
  b, t = _BATCH.value, _SEQ.value
  params = jax.jit(lambda: model.init_params(cfg))()
  tokens = jax.random.randint(jax.random.key(0), (b, t + 1), 0, cfg.vocab_size)

  def loss(p, tokens_BT):
    logits = model.forward(cfg, p, tokens_BT[:, :-1])
    nll, _, n = losses.cross_entropy(logits, tokens_BT[:, 1:], jnp.ones((b, t)))
    return nll / n

  step = jax.jit(jax.value_and_grad(loss))
  seconds = perf.time_fn(step, params, tokens, warmup=2, iters=_ITERS.value)
  tokens_per_s = b * t / seconds
  peak, peak_source = perf.peak_flops(_DTYPE.value)
  print(json.dumps({
      "bench": "forward_backward",
      "preset": _PRESET.value,
      **cfg.hf_names(),
      "batch_size": b, "seq_len": t,
      "compute_dtype": cfg.compute_dtype, "remat": cfg.remat, "attention_impl": cfg.attention_impl,
      "n_params": cfg.n_params,
      "step_s": round(seconds, 4),
      "tokens_per_s": round(tokens_per_s, 1),
      "mfu": round(perf.mfu(cfg.flops_per_token(t), tokens_per_s, peak), 4),
      "peak_flops": peak, "peak_source": peak_source,
      "machine": perf.machine(),
  }))


if __name__ == "__main__":
  app.run(main)
