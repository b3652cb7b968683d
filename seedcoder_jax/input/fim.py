"""Fill-in-the-middle at character level, in SPM and PSM order.

A document is cut at two uniformly random character positions into prefix P, middle M, suffix S
and rearranged so that the model learns to produce M after seeing both sides:

  SPM (the paper's order):  <fim_suffix> S <fim_prefix> P <fim_middle> M
  PSM (ablation):           <fim_prefix> P <fim_suffix> S <fim_middle> M

Each part is tokenized on its own (a token never spans a cut). The decision to apply FIM (`rate`)
and the order (`spm_fraction`) are drawn per document from the rng that Grain derives from the
seed and the element index, so the choice is deterministic and resumable.
"""

from __future__ import annotations

import numpy as np

SPM = "spm"
PSM = "psm"


def cut_points(length: int, rng: np.random.Generator) -> tuple[int, int]:
  """Two sorted cut positions drawn uniformly from [0, length] (either part may be empty)."""
  a, b = rng.integers(0, length + 1, size=2)
  return (int(a), int(b)) if a <= b else (int(b), int(a))


def split(text: str, cuts: tuple[int, int]) -> tuple[str, str, str]:
  """(prefix, middle, suffix) of `text` at the two cut positions."""
  lo, hi = cuts
  return text[:lo], text[lo:hi], text[hi:]


def arrange(prefix: str, middle: str, suffix: str, order: str) -> list[tuple[str, str]]:
  """The FIM layout as (sentinel name, text) parts, sentinels named as in tokenizer.SPECIAL_TOKENS."""
  if order == SPM:
    return [("fim_suffix", suffix), ("fim_prefix", prefix), ("fim_middle", middle)]
  if order == PSM:
    return [("fim_prefix", prefix), ("fim_suffix", suffix), ("fim_middle", middle)]
  raise ValueError(f"FIM order {order!r} is not {SPM!r} or {PSM!r}")


def restore(parts: list[tuple[str, str]]) -> str:
  """The original text from `arrange`'s parts, whatever the order."""
  by_name = dict(parts)
  return by_name["fim_prefix"] + by_name["fim_middle"] + by_name["fim_suffix"]


def draw(text: str, rng: np.random.Generator, *, rate: float,
         spm_fraction: float) -> list[tuple[str | None, str]]:
  """`text` as parts: [(None, text)] when FIM is not applied, else the FIM layout.

  Draws happen in a fixed sequence (apply?, order, cuts) so outcomes depend on the rng only.
  """
  apply, spm = rng.random() < rate, rng.random() < spm_fraction
  if not apply:
    return [(None, text)]
  return arrange(*split(text, cut_points(len(text), rng)), SPM if spm else PSM)


def encode_parts(parts: list[tuple[str | None, str]], tok) -> list[int]:
  """Token ids of the parts: each sentinel's id, then its text's tokens."""
  ids = []
  for name, text in parts:
    if name is not None:
      ids.append(tok.special_ids[name])
    if text:
      ids.extend(tok.encode(text))
  return ids
