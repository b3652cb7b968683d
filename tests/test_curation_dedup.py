"""Curation stage 3: content hash, MinHash vs exact Jaccard, LSH clusters, file and repo dedup."""

import pathlib
import sysconfig

import numpy as np
import pytest

from seedcoder_jax.curation import dedup, minhash, records

STDLIB = pathlib.Path(sysconfig.get_paths()["stdlib"])


def _rec(repo, path, text):
  return records.make_record(kind="file", text=text, repo=repo, path=path, language="python")


def test_normalised_hash():
  a = "def f():\r\n    return 1   \r\n\r\n"
  b = "def f():\n    return 1\n"
  assert dedup.normalise(a) == dedup.normalise(b) == "def f():\n    return 1"
  assert dedup.content_hash(a) == dedup.content_hash(b)
  assert dedup.content_hash(b) != dedup.content_hash("def f():\n  return 1\n")  # indentation counts


def test_minhash_estimates_exact_jaccard():
  """Estimated vs exact Jaccard on real file pairs: within 4 standard errors sqrt(J(1-J)/num_perm)."""
  cfg = minhash.MinHashConfig(num_perm=256, bands=32, rows=8)
  texts = [p.read_text() for p in sorted((STDLIB / "json").glob("*.py"))]
  base = (STDLIB / "json" / "decoder.py").read_text()
  lines = base.splitlines()
  # Real variants of one file (blocks of lines dropped) give pairs over the whole range of J.
  variants = [base] + ["\n".join(lines[:k] + lines[k + 40:]) for k in (0, 100, 200)] + [
      "\n".join(lines[:len(lines) // 2]), "\n".join(lines[::2])]
  docs = variants + texts
  sets = [minhash.shingles(t, cfg.shingle, cfg.ngram) for t in docs]
  sigs = [minhash.signature_of_set(s, cfg) for s in sets]
  checked = 0
  for i in range(len(docs)):
    for j in range(i + 1, len(docs)):
      exact = minhash.exact_jaccard(sets[i], sets[j])
      est = minhash.estimate_jaccard(sigs[i], sigs[j])
      tol = 4 * np.sqrt(max(exact * (1 - exact), 0.01) / cfg.num_perm)
      assert abs(est - exact) <= tol, (i, j, exact, est)
      checked += 1
  assert checked > 20
  sim = minhash.exact_jaccard(sets[0], sets[1])
  assert 0.6 < sim < 0.95  # the variants really are partial overlaps


def test_clusters_keep_smallest_id():
  assert minhash.clusters([("c", "d"), ("b", "c"), ("x", "y")]) == {"c": "b", "d": "b", "y": "x"}
  assert minhash.clusters([("b", "c"), ("a", "c")]) == {"b": "a", "c": "a"}


def test_bad_minhash_config():
  with pytest.raises(minhash.MinHashError, match="exceeds num_perm"):
    minhash.MinHashConfig(num_perm=64, bands=16, rows=8)


@pytest.fixture(scope="module")
def planted():
  """Real stdlib files in three repos; exact, near and whole-repository copies planted."""
  decoder = (STDLIB / "json" / "decoder.py").read_text()
  encoder = (STDLIB / "json" / "encoder.py").read_text()
  scanner = (STDLIB / "json" / "scanner.py").read_text()
  tool = (STDLIB / "json" / "tool.py").read_text()
  lines = encoder.splitlines()
  near = "\n".join(lines[:50] + ["    # a comment added by a fork"] + lines[50:-3])
  return [
      _rec("json", "decoder.py", decoder), _rec("json", "encoder.py", encoder),
      _rec("json", "scanner.py", scanner), _rec("json", "tool.py", tool),
      # an exact copy up to CRLF line ends and trailing spaces
      _rec("vendor", "lib/decoder.py", decoder.replace("\n", "  \r\n")),
      _rec("vendor", "lib/encoder_fork.py", near),  # near copy
      _rec("vendor", "lib/own.py", "def own():\n  return 'unique to vendor'\n"),
      # a whole-repository copy of json (one file touched)
      _rec("json_copy", "decoder.py", decoder), _rec("json_copy", "encoder.py", encoder),
      _rec("json_copy", "scanner.py", scanner), _rec("json_copy", "tool.py", tool + "\n# x\n"),
  ]


def test_dedup_planted(planted):
  cfg = dedup.DedupConfig(repo_cfg=minhash.MinHashConfig(threshold=0.5, bands=32, rows=4))
  kept, rejected = dedup.dedup_records(planted, cfg)
  why = {r["id"]: (r["reason"], r["detail"]) for r in rejected}
  assert why["file:json_copy/decoder.py"] == ("near_duplicate_repo", "repo:json")
  assert sum(r["reason"] == "near_duplicate_repo" for r in rejected) == 4
  assert why["file:vendor/lib/decoder.py"] == ("exact_duplicate", "file:json/decoder.py")
  assert why["file:vendor/lib/encoder_fork.py"] == ("near_duplicate", "file:json/encoder.py")
  assert sorted(r["id"] for r in kept) == [
      "file:json/decoder.py", "file:json/encoder.py", "file:json/scanner.py", "file:json/tool.py",
      "file:vendor/lib/own.py"]
  assert len(kept) + len(rejected) == len(planted)
  assert all(len(r["sha256"]) == 64 for r in kept)
  # Order of the input does not change the decision.
  kept2, rejected2 = dedup.dedup_records(planted[::-1], cfg)
  assert kept2 == kept and sorted(map(str, rejected2)) == sorted(map(str, rejected))


def test_dedup_switches(planted):
  off = dedup.DedupConfig(exact=False, near=False, repo=False)
  kept, rejected = dedup.dedup_records(planted, off)
  assert len(kept) == len(planted) and not rejected
  only_exact = dedup.DedupConfig(near=False, repo=False)
  kept, rejected = dedup.dedup_records(planted, only_exact)
  assert {r["reason"] for r in rejected} == {"exact_duplicate"}
  assert len(rejected) == 4  # vendor decoder + json_copy's three unchanged files


def test_dedup_beam_matches_pure(planted):
  import apache_beam as beam
  from apache_beam.testing.util import assert_that, equal_to
  cfg = dedup.DedupConfig(repo_cfg=minhash.MinHashConfig(threshold=0.5, bands=32, rows=4))
  kept, rejected = dedup.dedup_records(planted, cfg)
  with beam.Pipeline(runner="FnApiRunner") as p:  # DirectRunner would try to fetch Prism
    out = p | beam.Create(planted) | dedup.dedup_transform(cfg)
    assert_that(out["kept"] | "KeptIds" >> beam.Map(lambda r: r["id"]),
                equal_to([r["id"] for r in kept]), label="kept")
    assert_that(out[records.REJECTED] | "Rej" >> beam.Map(lambda r: (r["id"], r["reason"], r["detail"])),
                equal_to([(r["id"], r["reason"], r["detail"]) for r in rejected]), label="rejected")


def _beam_clusters(pairs, rounds):
  import apache_beam as beam
  from apache_beam.testing.util import assert_that, equal_to
  cfg = minhash.MinHashConfig(cluster_rounds=rounds)
  expected = sorted(minhash.clusters(pairs).items())
  with beam.Pipeline(runner="FnApiRunner") as p:
    out = dedup._cluster_labels(p | beam.Create(pairs), cfg, "C")
    assert_that(out, equal_to(expected))
  return expected


def test_beam_clusters_by_large_and_small_stars_match_union_find():
  """Chains, stars, cliques and a tree, in shuffled id order: the Beam joins give the union-find's
  {member: smallest id} map; a chain of 127 random ids converges in 6 rounds."""
  import random
  rng = random.Random(0)
  names = [f"id{i:04d}" for i in range(400)]
  rng.shuffle(names)  # the smallest id sits anywhere in each cluster
  it = iter(names)
  pairs = []
  chain = [next(it) for _ in range(127)]
  pairs += list(zip(chain, chain[1:]))
  star = [next(it) for _ in range(30)]
  pairs += [(star[0], s) for s in star[1:]]
  clique = [next(it) for _ in range(6)]
  pairs += [(a, b) for i, a in enumerate(clique) for b in clique[i + 1:]]
  tree = [next(it) for _ in range(40)]
  pairs += [(tree[i], tree[(i - 1) // 2]) for i in range(1, 40)]
  pairs += [(next(it), next(it)) for _ in range(20)]  # isolated pairs
  pairs = [tuple(sorted(ab)) for ab in pairs]
  rng.shuffle(pairs)
  expected = _beam_clusters(pairs, rounds=6)
  assert len(expected) == 126 + 29 + 5 + 39 + 20


def test_beam_clusters_refuse_to_stop_early():
  """A chain longer than the rounds resolve stops the pipeline with a message naming the knob."""
  chain = [f"n{i:03d}" for i in range(40)]
  with pytest.raises(Exception, match="cluster_rounds"):
    _beam_clusters(list(zip(chain, chain[1:])), rounds=2)
