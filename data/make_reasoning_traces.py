r"""Sandbox-verified reasoning traces for the LongCoT warmup SFT (posttrain.reasoning_traces).

  python data/make_reasoning_traces.py --policy=gguf:smollm2 --problems=workdir/problems \
      --output=workdir/traces --samples_per_prompt=8 --max_new_tokens=512

Samples N replies per train problem from the policy, asked to reason inside <think>...</think>
before the code; keeps replies whose code passes the problem's tests in the sandbox (sealed
verdicts) and that reasoned first; writes OUT/corpus (chat corpus, kind "sft") and OUT/stats.json
(every problem kept or rejected as no_pass / no_reasoning), and prints the headline as one JSON
line. Train on it with configs/sft.py (--config.sft.corpora=OUT/corpus and the same system
prompt), then start RL from that workdir (--config.init.kind=workdir).
"""

import dataclasses
import json

from absl import app, flags

from seedcoder_jax import xla_cpu
from seedcoder_jax.posttrain import reasoning_traces

_HELP = {
    "policy": "model spec: gguf:smollm2 | workdir:DIR | hf:DIR | orbax:DIR",
    "problems": "problem set directory (data/make_problems.py); its train split is used",
    "limit": "first N train problems (0: all)",
    "samples_per_prompt": "replies sampled per problem",
    "keep_per_prompt": "distinct verified traces kept per problem at most",
    "temperature": "sampling temperature (> 0)",
    "max_new_tokens": "reply length limit",
    "require_reasoning": "keep only replies with a non-empty <think> block before the code",
    "system_prompt": "the system message asking for reasoning then code",
    "slots": "decode rows (slots) of the rollout engine",
    "workers": "parallel sandbox runs",
    "seed": "sampling seed",
}
_FLAGS = {}
for _f in dataclasses.fields(reasoning_traces.TracesConfig):
  _default = None if _f.default is dataclasses.MISSING else _f.default
  _define = {str: flags.DEFINE_string, int: flags.DEFINE_integer, float: flags.DEFINE_float,
             bool: flags.DEFINE_bool}[type(_default) if _default is not None else str]
  _FLAGS[_f.name] = _define(_f.name, _default, _HELP[_f.name], required=_default is None)
_XLA_CPU_SCHEDULER = xla_cpu.define_flag()
_OUTPUT = flags.DEFINE_string("output", None, "directory for corpus/ and stats.json", required=True)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  xla_cpu.set_scheduler(_XLA_CPU_SCHEDULER.value)
  try:
    cfg = reasoning_traces.TracesConfig(**{k: f.value for k, f in _FLAGS.items()})
  except ValueError as e:
    raise app.UsageError(str(e)) from e
  stats = reasoning_traces.build(cfg, _OUTPUT.value)
  print(json.dumps({k: stats[k] for k in ("input", "kept", "rejected", "records", "samples",
                                          "sample_pass_rate", "samples_with_reasoning")}))


if __name__ == "__main__":
  app.run(main)
