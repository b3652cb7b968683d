r"""On-policy DPO pairs from a policy and a problem set (posttrain.dpo_pairs).

  python data/make_dpo_pairs.py --policy=workdir:workdir/sft --problems=workdir/problems \
      --split=train --output=workdir/dpo_pairs --samples_per_prompt=8 --temperature=0.8

Samples N replies per problem from the policy (the rollout engine), runs each reply's first
Python code block against the problem's tests in the sandbox (sealed verdicts: an early exit is
not a pass), and pairs a passing with a failing reply of the same prompt. Writes OUT/corpus (a
chat corpus of kind "pairs") and OUT/stats.json (every prompt kept or rejected as all_pass /
all_fail, the sample pass rate, the policy's weights), and prints the headline as one JSON line.
"""

import dataclasses
import json

from absl import app, flags

from seedcoder_jax import xla_cpu
from seedcoder_jax.posttrain import dpo_pairs

_FIELDS = {f.name: f for f in dataclasses.fields(dpo_pairs.PairsConfig)}
_HELP = {
    "policy": "model spec: gguf:smollm2 | workdir:DIR (a training run) | hf:DIR | orbax:DIR",
    "problems": "problem set directory (data/make_problems.py)",
    "split": "train (pairs to learn from) | heldout (held-out preference accuracy)",
    "limit": "first N problems of the split (0: all)",
    "samples_per_prompt": "replies sampled per problem (the paper: hundreds)",
    "pairs_per_prompt": "distinct (passing, failing) pairs kept per problem at most",
    "temperature": "sampling temperature (> 0)",
    "max_new_tokens": "reply length limit",
    "system_prompt": "system message of the chat prompt (as in SFT)",
    "template_file": "Jinja chat template overriding the tokenizer's own",
    "batch_size": "decode rows (slots) of the rollout engine",
    "workers": "parallel sandbox runs",
    "seed": "sampling and pairing seed",
}
_FLAGS = {}
for _name, _f in _FIELDS.items():
  _default = None if _f.default is dataclasses.MISSING else _f.default
  _define = {str: flags.DEFINE_string, int: flags.DEFINE_integer,
             float: flags.DEFINE_float}[type(_default) if _default is not None else str]
  _FLAGS[_name] = _define(_name, _default, _HELP[_name], required=_default is None)
_XLA_CPU_SCHEDULER = xla_cpu.define_flag()
_OUTPUT = flags.DEFINE_string("output", None, "directory for corpus/ and stats.json", required=True)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  xla_cpu.set_scheduler(_XLA_CPU_SCHEDULER.value)
  try:
    cfg = dpo_pairs.PairsConfig(**{k: f.value for k, f in _FLAGS.items()})
  except ValueError as e:
    raise app.UsageError(str(e)) from e
  stats = dpo_pairs.build(cfg, _OUTPUT.value)
  print(json.dumps({k: stats[k] for k in ("input", "kept", "rejected", "pairs", "samples",
                                          "sample_pass_rate")}))


if __name__ == "__main__":
  app.run(main)
