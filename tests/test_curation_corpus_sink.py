"""The Beam corpus sink writes the same corpus as input/corpus.write_corpus (byte for byte)."""

import pathlib
import random

import numpy as np
import pytest

from seedcoder_jax.curation import corpus_sink
from seedcoder_jax.input import corpus as corpus_lib


def _records(n, seed=0):
  rng = random.Random(seed)
  out = []
  for i in range(n):
    repo = f"repo{rng.randrange(7)}"
    out.append({"id": f"file:{repo}/m{i:03d}.py", "text": f"x = {i}  # \u2028 é {rng.random()}\n",
                "language": rng.choice(["python", "c", "go"]), "kind": rng.choice(["file", "web"]),
                "repo": repo, "path": f"m{i:03d}.py", "score": rng.uniform(0, 10),
                "sha256": "0" * 64})
  rng.shuffle(out)
  return out


def _beam_write(recs, out, **kw):
  import apache_beam as beam
  with beam.Pipeline(runner="FnApiRunner") as p:
    _ = p | beam.Create(recs) | corpus_sink.WriteCorpus(str(out), **kw)


@pytest.mark.parametrize("n,num_shards,num_buckets", [(37, 3, 1000), (37, 1, 4), (2, 5, 8)])
def test_sink_matches_write_corpus(tmp_path, n, num_shards, num_buckets):
  recs = _records(n)
  meta = {"score_kind": "heuristic", "made_by": "test"}
  corpus_lib.write_corpus(sorted(recs, key=lambda r: r["id"]), tmp_path / "want",
                          num_shards=num_shards, metadata=meta)
  _beam_write(recs, tmp_path / "got", num_shards=num_shards, metadata=meta,
              num_buckets=num_buckets)
  want, got = sorted((tmp_path / "want").iterdir()), sorted((tmp_path / "got").iterdir())
  assert [p.name for p in want] == [p.name for p in got]
  for a, b in zip(want, got):
    if a.name != corpus_lib.INDEX_FILE:  # npz: zip timestamps differ; compared below
      assert a.read_bytes() == b.read_bytes(), a.name
  cw, cg = corpus_lib.open_corpus(tmp_path / "want"), corpus_lib.open_corpus(tmp_path / "got")
  for field in ("scores", "repo_ids", "repo_names"):
    np.testing.assert_array_equal(getattr(cw, field), getattr(cg, field))
  assert [cg.source[i] for i in range(len(cg))] == [cw.source[i] for i in range(len(cw))]


def test_sink_writes_nothing_without_records_and_clears(tmp_path):
  _beam_write([], tmp_path / "none")
  assert not (tmp_path / "none" / corpus_lib.METADATA_FILE).exists()
  corpus_lib.write_corpus(_records(4), tmp_path / "old", num_shards=2)
  corpus_sink.clear_corpus(str(tmp_path / "old"))
  assert list((tmp_path / "old").iterdir()) == []
