"""Grain transforms from corpus units to tokenized, chunked documents (small picklable classes).

A unit is either one record index (file-level) or an array of record indices of one repository
(repo-level). ReadUnit turns it into a document dict; Tokenize draws FIM, tokenizes with BOS/EOS
and cuts the document into (input, target) chunks for packing.
"""

from __future__ import annotations

import grain
import numpy as np

from seedcoder_jax.input import fim, packing, repo_level

# FIM applies to source files (alone or inside a repository), not to commits or web pages whose
# layout the curation stage fixes.
_FIM_KINDS = ("file",)


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

  def __init__(self, tok, *, seq_len: int, fim_rate: float, fim_spm_fraction: float):
    self.tok = tok  # seedcoder_jax.tokenizer.Tokenizer: pickles as its spec, loads lazily
    self.seq_len = seq_len
    self.fim_rate = fim_rate
    self.fim_spm_fraction = fim_spm_fraction

  def _text_ids(self, text: str, kind: str, rng: np.random.Generator) -> list[int]:
    if kind in _FIM_KINDS and self.fim_rate > 0:
      parts = fim.draw(text, rng, rate=self.fim_rate, spm_fraction=self.fim_spm_fraction)
      return fim.encode_parts(parts, self.tok)
    return self.tok.encode(text)

  def random_map(self, doc: dict, rng: np.random.Generator) -> list[dict]:
    tok = self.tok
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
