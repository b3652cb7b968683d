"""Prompt layouts the sampler continues: fill-in-the-middle (infilling).

The layout is exactly the one pretraining used (seedcoder_jax/input/fim.py), with an empty middle:
the model's continuation after <fim_middle> is the infill. Each part is tokenized on its own, as
in training, so a token never spans the cut.
"""

from __future__ import annotations

from seedcoder_jax.input import fim


def fim_prompt(tokenizer, prefix: str, suffix: str, order: str = fim.SPM) -> list[int]:
  """Token ids of an infilling prompt: SPM `<fim_suffix>S<fim_prefix>P<fim_middle>` (the paper's
  order) or PSM `<fim_prefix>P<fim_suffix>S<fim_middle>`.

  Raises tokenizer.TokenizerError naming the tokenizer when it lacks a FIM special token.
  """
  tokenizer.require("fim_prefix", "fim_middle", "fim_suffix")
  return fim.encode_parts(fim.arrange(prefix, "", suffix, order), tokenizer)
