"""Fill-in-the-middle at character level, in SPM and PSM order.

A document is cut at two uniformly random character positions into prefix P, middle M, suffix S
and rearranged so that the model learns to produce M after seeing both sides:

  SPM (the paper's order):  <fim_suffix> S <fim_prefix> P <fim_middle> M
  PSM (ablation):           <fim_prefix> P <fim_suffix> S <fim_middle> M

Each part is tokenized on its own (a token never spans a cut). The decision to apply FIM (`rate`)
and the order (`spm_fraction`) are drawn per example from the rng that Grain derives from the
seed and the element index, so the choice is deterministic and resumable.

Two levels (Bavarian et al. 2022, "Efficient Training of Language Models to Fill in the Middle"):
  document: one draw per document, then the document is cut into row-sized chunks. A document
            longer than a row has its suffix, prefix and middle in different rows, where no
            attention connects them: the model rarely sees a whole FIM example.
  context:  the document is first cut at line ends into windows that fit a row (`windows`), then
            one draw per window, so every FIM example's three parts share a row.
"""

from __future__ import annotations

import numpy as np

SPM = "spm"
PSM = "psm"
DOCUMENT = "document"
CONTEXT = "context"
LEVELS = (DOCUMENT, CONTEXT)


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


def _lines(text: str) -> list[str]:
  """`text` cut after each "\n" (only "\n": other line breaks stay inside their line)."""
  parts = text.split("\n")
  return [p + "\n" for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


def _bisect(text: str, encode, budget: int) -> list[str]:
  """`text` cut in halves (at the line end nearest the middle, else mid-character) until each
  piece encodes to <= budget tokens."""
  if len(text) <= 1 or len(encode(text)) <= budget:
    return [text]
  mid = len(text) // 2
  cut = text.rfind("\n", 0, mid) + 1 or text.find("\n", mid) + 1
  if not 0 < cut < len(text):
    cut = mid
  return _bisect(text[:cut], encode, budget) + _bisect(text[cut:], encode, budget)


def windows(text: str, encode, budget: int) -> list[str]:
  """`text` as consecutive windows, each encoding to <= `budget` tokens, cut at line ends where
  possible (a line longer than the budget is cut inside). "".join(windows) == text.

  Lines are gathered greedily by their own token counts, then each window is encoded whole to
  check it (a window's tokens can differ from the sum of its lines'); one over budget is halved.
  """
  if budget < 1:
    raise ValueError(f"FIM window budget {budget} < 1 token")
  out, window, used = [], [], 0
  for line in _lines(text):
    n = len(encode(line))
    if window and used + n > budget:
      out.append("".join(window))
      window, used = [], 0
    window.append(line)
    used += n
  if window:
    out.append("".join(window))
  return [piece for w in out for piece in _bisect(w, encode, budget)] or [text]
