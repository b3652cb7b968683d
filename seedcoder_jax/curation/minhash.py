"""MinHash signatures, LSH band keys and near-duplicate clustering (pure functions).

A document is a set of shingles (word n-grams, or character n-grams of its whitespace-collapsed
text). Its MinHash signature is datasketch's MinHash (num_perm seeded hash permutations of the
shingles' 32-bit SHA-1 values, minimum per permutation, uint32); the share of equal signature entries estimates
the Jaccard similarity of two shingle sets (standard error sqrt(J(1-J)/num_perm)).

LSH banding: the signature splits into `bands` bands of `rows` entries; two documents that agree
on a whole band share a bucket key and become candidates, which are then kept only when their
estimated Jaccard reaches the threshold. The probability that a pair of similarity s becomes a
candidate is 1 - (1 - s^rows)^bands (the S-curve; its midpoint is about (1/bands)^(1/rows)).
"""

from __future__ import annotations

import dataclasses
import hashlib
import re

import numpy as np

_WORD = re.compile(r"\S+")


class MinHashError(ValueError):
  """A bad MinHash/LSH configuration."""


@dataclasses.dataclass(frozen=True)
class MinHashConfig:
  num_perm: int = 128  # signature length
  bands: int = 16  # LSH bands (bands * rows <= num_perm)
  rows: int = 8  # signature entries per band
  threshold: float = 0.8  # estimated Jaccard at which candidates are duplicates
  shingle: str = "word"  # word | char
  ngram: int = 5  # shingle length (words or characters)
  seed: int = 1  # the hash permutations (all workers must agree)
  max_bucket: int = 1000  # larger LSH buckets: members compared with the bucket's smallest id only
  # Beam only: large-star/small-star rounds that resolve duplicate clusters (dedup._cluster_labels):
  # stars and cliques, the usual LSH clusters, take 1; a chain of n pairs about log2(n) (8 rounds:
  # chains of ~2000 random ids, ~500 ascending ones). A graph that needs more stops the run with
  # an error naming this field.
  cluster_rounds: int = 8

  def __post_init__(self):
    if self.shingle not in ("word", "char"):
      raise MinHashError(f"shingle={self.shingle!r}: expected 'word' or 'char'")
    if min(self.num_perm, self.bands, self.rows, self.ngram, self.max_bucket,
           self.cluster_rounds) < 1:
      raise MinHashError(f"num_perm, bands, rows, ngram, max_bucket, cluster_rounds must be >= 1: "
                         f"{self}")
    if self.bands * self.rows > self.num_perm:
      raise MinHashError(f"bands*rows = {self.bands}*{self.rows} exceeds num_perm={self.num_perm}")
    if not 0.0 < self.threshold <= 1.0:
      raise MinHashError(f"threshold={self.threshold} must be in (0, 1]")


def shingles(text: str, kind: str = "word", n: int = 5) -> set[bytes]:
  """The shingle set; a text shorter than n units is one shingle (never the empty set)."""
  if kind == "word":
    units = _WORD.findall(text)
    grams = {" ".join(units[i:i + n]) for i in range(len(units) - n + 1)}
    if not grams:
      grams = {" ".join(units)}
  else:
    flat = " ".join(_WORD.findall(text))
    grams = {flat[i:i + n] for i in range(len(flat) - n + 1)} or {flat}
  return {g.encode("utf-8") for g in grams}


def signature_of_set(items: set[bytes], cfg: MinHashConfig) -> np.ndarray:
  """[num_perm] uint32 MinHash values of a set of byte strings."""
  from datasketch import MinHash
  m = MinHash(num_perm=cfg.num_perm, seed=cfg.seed)
  m.update_batch(sorted(items))
  return np.asarray(m.hashvalues, np.uint32)


def signature(text: str, cfg: MinHashConfig) -> np.ndarray:
  return signature_of_set(shingles(text, cfg.shingle, cfg.ngram), cfg)


def estimate_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> float:
  return float(np.mean(sig_a == sig_b))


def exact_jaccard(a: set, b: set) -> float:
  return len(a & b) / len(a | b) if a or b else 1.0


def band_keys(sig: np.ndarray, cfg: MinHashConfig) -> list[str]:
  """One bucket key per band: "<band>:<digest of its rows>"."""
  rows = sig[:cfg.bands * cfg.rows].astype("<u4").reshape(cfg.bands, cfg.rows)
  return [f"{b}:{hashlib.blake2b(rows[b].tobytes(), digest_size=12).hexdigest()}"
          for b in range(cfg.bands)]


def candidate_pairs(members: list[tuple[str, np.ndarray]], cfg: MinHashConfig):
  """(a, b) id pairs of one LSH bucket whose estimated Jaccard reaches the threshold, a < b.

  All pairs for buckets up to max_bucket members; larger buckets (boilerplate shared by very many
  documents) compare each member with the smallest id only, bounding the work.
  """
  members = sorted(members, key=lambda m: m[0])
  n = len(members)
  for i in range(n if n <= cfg.max_bucket else 1):
    a, sig_a = members[i]
    for b, sig_b in members[i + 1:]:
      if a != b and estimate_jaccard(sig_a, sig_b) >= cfg.threshold:
        yield a, b


def clusters(pairs) -> dict[str, str]:
  """Union-find over duplicate pairs -> {member: kept id} for every non-kept member.

  The kept id of a cluster is its smallest id (deterministic whatever the pair order).
  """
  parent: dict[str, str] = {}

  def find(x):
    root = x
    while parent.get(root, root) != root:
      root = parent[root]
    while parent.get(x, x) != root:  # path compression
      parent[x], x = root, parent[x]
    return root

  for a, b in pairs:
    ra, rb = find(a), find(b)
    if ra != rb:
      lo, hi = (ra, rb) if ra < rb else (rb, ra)
      parent[hi] = lo
      parent.setdefault(lo, lo)
  return {x: find(x) for x in parent if find(x) != x}


def near_duplicates(items: list[tuple[str, np.ndarray]], cfg: MinHashConfig) -> dict[str, str]:
  """{id: kept id} of the near duplicates among (id, signature) items, without Beam."""
  buckets: dict[str, list] = {}
  for rid, sig in items:
    for key in band_keys(sig, cfg):
      buckets.setdefault(key, []).append((rid, sig))
  pairs = set()
  for members in buckets.values():
    if len(members) > 1:
      pairs.update(candidate_pairs(members, cfg))
  return clusters(sorted(pairs))
