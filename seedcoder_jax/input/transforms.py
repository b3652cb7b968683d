"""Grain transforms from corpus units to tokenized, chunked documents (small picklable classes).

A unit is either one record index (file-level) or an array of record indices of one repository
(repo-level). ReadUnit turns it into a document dict; Tokenize draws FIM, tokenizes with BOS/EOS
and cuts the document into (input, target) chunks for packing. With fim_level "context" a file
document is cut into row-sized windows first and FIM drawn per window (fim.py); repository
documents keep document-level FIM per file (their files are FIM'd inside the repository's text).
"""

from __future__ import annotations

import grain
import numpy as np

from seedcoder_jax.input import fim, packing, repo_level

# FIM applies to source files (alone or inside a repository), not to commits or web pages whose
# layout the curation stage fixes.
_FIM_KINDS = ("file",)
# Context-level FIM leaves this many tokens of a row free for the window's first input (BOS or the
# previous window's last token), EOS, the three sentinels and the tokens that re-encoding the
# three parts apart can add at the two cuts.
CONTEXT_FIM_RESERVE = 2 + 3 + 4


class ReadUnit(grain.transforms.Map):
  """Record index -> {"kind", "text"}; repository group -> {"kind": "repo_level", "repo", "files"}."""

  def __init__(self, source):
    self.source = source  # corpus.CorpusSource: pickles as paths, opens lazily

  def map(self, unit):
    if np.ndim(unit) == 0:
      r = self.source[int(unit)]
      return {"kind": r["kind"], "text": r["text"], "index": int(unit)}
    records = [self.source[int(i)] for i in unit]
    return {"kind": "repo_level", "repo": records[0]["repo"], "index": int(unit[0]),
            "files": [(r["path"], r["text"], r["language"], r["kind"]) for r in records]}


class Tokenize(grain.transforms.RandomMap):
  """Document -> list of chunks ({"inputs", "targets"} int32 arrays of <= seq_len pairs)."""

  def __init__(self, tok, *, seq_len: int, fim_rate: float, fim_spm_fraction: float,
               fim_level: str = fim.DOCUMENT):
    self.tok = tok  # seedcoder_jax.tokenizer.Tokenizer: pickles as its spec, loads lazily
    self.seq_len = seq_len
    self.fim_rate = fim_rate
    self.fim_spm_fraction = fim_spm_fraction
    self.fim_level = fim_level

  def _text_ids(self, text: str, kind: str, rng: np.random.Generator) -> list[int]:
    if kind in _FIM_KINDS and self.fim_rate > 0:
      parts = fim.draw(text, rng, rate=self.fim_rate, spm_fraction=self.fim_spm_fraction)
      return fim.encode_parts(parts, self.tok)
    return self.tok.encode(text)

  def _context_fim(self, text: str, rng: np.random.Generator) -> list[dict]:
    """A file document as row-sized windows, FIM drawn per window (fim.py, context level), each
    window one chunk. The first window starts with BOS, the last ends with EOS; a later window's
    chunk starts with the previous window's last token as its first input, as consecutive chunks
    of a document do, so every token of the document is a target exactly once."""
    tok = self.tok
    budget = max(1, self.seq_len + 1 - CONTEXT_FIM_RESERVE)
    pieces = fim.windows(text, tok.encode, budget)
    chunks, last = [], tok.bos_id
    for k, piece in enumerate(pieces):
      room = self.seq_len + 1 - 1 - (k == len(pieces) - 1)  # tokens for the window's own layout
      ids = [last] + self._fitting_fim(piece, room, rng)
      if k == len(pieces) - 1:
        ids.append(tok.eos_id)
      chunks += packing.chunk_pairs(ids, self.seq_len)
      last = ids[-1]
    return chunks

  def _fitting_fim(self, piece: str, room: int, rng: np.random.Generator, tries: int = 4) -> list[int]:
    """The window's ids with FIM drawn as usual; when its three parts, encoded apart, outgrow
    `room`, new cut points are drawn (same order) up to `tries` times, then the window stays plain
    (it fits: fim.windows checked its plain encoding)."""
    parts = fim.draw(piece, rng, rate=self.fim_rate, spm_fraction=self.fim_spm_fraction)
    ids = fim.encode_parts(parts, self.tok)
    order = fim.SPM if parts[0][0] == "fim_suffix" else fim.PSM
    for _ in range(tries):
      if len(ids) <= room or parts[0][0] is None:
        return ids
      parts = fim.arrange(*fim.split(piece, fim.cut_points(len(piece), rng)), order)
      ids = fim.encode_parts(parts, self.tok)
    return ids if len(ids) <= room else self.tok.encode(piece)

  def random_map(self, doc: dict, rng: np.random.Generator) -> list[dict]:
    tok = self.tok
    if (self.fim_level == fim.CONTEXT and self.fim_rate > 0 and doc["kind"] in _FIM_KINDS):
      return self._context_fim(doc["text"], rng)
    ids = [tok.bos_id]
    if doc["kind"] != "repo_level":
      ids += self._text_ids(doc["text"], doc["kind"], rng)
    else:
      files = doc["files"]
      order = repo_level.dependency_order([f[0] for f in files], [f[1] for f in files],
                                          [f[2] for f in files], rng)
      ids += [tok.repo_id] + tok.encode(doc["repo"])
      for i in order:
        path, text, _, kind = files[i]
        ids += [tok.file_sep_id] + tok.encode(path + "\n") + self._text_ids(text, kind, rng)
    ids.append(tok.eos_id)
    return packing.chunk_pairs(ids, self.seq_len)
