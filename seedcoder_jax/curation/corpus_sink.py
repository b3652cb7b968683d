"""The pre-scored corpus written by a Beam sink: no record passes through the driver.

  records | WriteCorpus(output_dir, num_shards=k, metadata={...})

writes the directory that `seedcoder_jax.input.corpus.write_corpus` writes (and `open_corpus`
reads), byte for byte the same files for the same records: records in id order, record i in shard
i % k at position i // k, `index.npz` (score, repo_id by first appearance, repo_names) and
`corpus.json` last (its presence marks a complete corpus). The output directory may be any Beam
filesystem path (local, gs://): ArrayRecord writes local files, so a shard for a remote
directory is written to a local temporary file and copied.

How the global order is found without one machine holding the corpus:
  1. approximate quantiles of the ids (one small combine) cut the id space into `num_buckets`
     ranges; each range's ids (ids only, no text) are sorted on one worker;
  2. the range sizes (a side input of `num_buckets` integers) give each id its global rank;
  3. records meet their rank by id (CoGroupByKey) and go to shard rank % k; each shard is
     sorted by position and written by one worker (so a shard's records pass through one
     worker's memory: choose num_shards so that a shard fits, e.g. ~1 GB);
  4. one worker gathers the per-shard index columns (scores, repository, language, kind: no
     text) and writes index.npz and corpus.json. The index is one file by the reader's design,
     so this step holds O(records) small fields.
The quantiles only balance the ranges; the ranks are exact whatever they return.
"""

from __future__ import annotations

import bisect
import io
import json
import os
import shutil
import tempfile

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems

from seedcoder_jax.input import corpus as corpus_lib

NUM_BUCKETS = 1000


def _join(directory: str, name: str) -> str:
  return FileSystems.join(directory, name)


def _write_bytes(path: str, data: bytes) -> None:
  with FileSystems.create(path) as f:
    f.write(data)


def _write_shard(path: str, payloads) -> None:
  """Writes ArrayRecord `path` (group_size 1, as write_corpus) from encoded records."""
  from array_record.python.array_record_module import ArrayRecordWriter
  local = FileSystems.get_scheme(path) is None
  tmpdir = None
  target = path
  if local:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  else:
    tmpdir = tempfile.mkdtemp(prefix="corpus_shard_")
    target = os.path.join(tmpdir, os.path.basename(path))
  writer = ArrayRecordWriter(target, "group_size:1")
  try:
    for payload in payloads:
      writer.write(payload)
  finally:
    writer.close()
  if tmpdir is not None:
    try:
      with open(target, "rb") as src, FileSystems.create(path) as dst:
        shutil.copyfileobj(src, dst, 1 << 22)
    finally:
      shutil.rmtree(tmpdir, ignore_errors=True)


def _bucket_ids(key: str, bounds: list[str]) -> int:
  return bisect.bisect_right(bounds, key)


def _ranks(kv, sizes: dict[int, int]):
  bucket, ids = kv
  offset = sum(n for b, n in sizes.items() if b < bucket)
  for i, rid in enumerate(sorted(ids)):
    yield rid, offset + i


def _place(kv, num_shards: int):
  """(id, {"rec": records, "rank": ranks}) -> (shard, (position, rank, record)) per record."""
  _, g = kv
  recs = sorted(g["rec"], key=lambda r: json.dumps(r, sort_keys=True))  # equal ids: any fixed order
  ranks = sorted(g["rank"])
  assert len(recs) == len(ranks), (len(recs), len(ranks))
  for rank, r in zip(ranks, recs):
    yield rank % num_shards, (rank // num_shards, rank, r)


class _WriteShard(beam.DoFn):

  def __init__(self, output: str, num_shards: int):
    self.output, self.num_shards = output, num_shards

  def process(self, kv):
    shard, items = kv
    items = sorted(items, key=lambda x: x[0])
    checked = [corpus_lib._check_record(r, rank) for _, rank, r in items]
    _write_shard(_join(self.output, corpus_lib._shard_name(shard, self.num_shards)),
                 (json.dumps(r, ensure_ascii=False).encode("utf-8") for r in checked))
    yield {"shard": shard, "score": np.asarray([r["score"] for r in checked], np.float32),
           "repo": [r["repo"] for r in checked], "language": [r["language"] for r in checked],
           "kind": [r["kind"] for r in checked]}


def _finish(parts: list[dict], output: str, num_shards: int, metadata: dict):
  """The per-shard columns -> index.npz and, last, corpus.json; yields the metadata (nothing
  when there are no records: no corpus, as write_corpus refuses an empty one)."""
  if not parts:
    return
  by_shard = {p["shard"]: p for p in parts}
  shards = [corpus_lib._shard_name(i, num_shards) for i in range(num_shards)]
  for i, name in enumerate(shards):  # fewer records than shards: write_corpus leaves them empty
    if i not in by_shard:
      _write_shard(_join(output, name), [])
  n = sum(len(p["score"]) for p in parts)
  scores = np.zeros(n, np.float32)
  repo_ids = np.zeros(n, np.int32)
  repo_index: dict[str, int] = {}
  languages: dict[str, int] = {}
  kinds: dict[str, int] = {}
  for i in range(n):  # global order, so first appearances (dict orders, repo ids) match
    p, pos = by_shard[i % num_shards], i // num_shards
    scores[i] = p["score"][pos]
    repo_ids[i] = repo_index.setdefault(p["repo"][pos], len(repo_index))
    languages[p["language"][pos]] = languages.get(p["language"][pos], 0) + 1
    kinds[p["kind"][pos]] = kinds.get(p["kind"][pos], 0) + 1
  buf = io.BytesIO()
  np.savez(buf, score=scores, repo_id=repo_ids, repo_names=np.asarray(list(repo_index), dtype=str))
  _write_bytes(_join(output, corpus_lib.INDEX_FILE), buf.getvalue())
  meta = {"format": corpus_lib.FORMAT, "version": corpus_lib.VERSION, "num_records": n,
          "shards": shards, "fields": list(corpus_lib.FIELDS), "languages": languages,
          "kinds": kinds, "num_repos": len(repo_index), **(metadata or {})}
  _write_bytes(_join(output, corpus_lib.METADATA_FILE),
               (json.dumps(meta, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))
  yield meta


class WriteCorpus(beam.PTransform):
  """PCollection[record with `id` and corpus FIELDS] -> a one-element PCollection: the corpus
  metadata (empty when there were no records; then nothing is written). The caller clears the
  output directory of an earlier corpus first (`clear_corpus`)."""

  def __init__(self, output: str, *, num_shards: int = 1, metadata: dict | None = None,
               num_buckets: int = NUM_BUCKETS):
    super().__init__()
    if num_shards < 1:
      raise corpus_lib.CorpusError(f"num_shards={num_shards} must be >= 1")
    self.output, self.num_shards = output, num_shards
    self.metadata, self.num_buckets = dict(metadata or {}), num_buckets

  def expand(self, recs):
    from apache_beam.transforms.stats import ApproximateQuantiles
    k = self.num_shards
    ids = recs | "Ids" >> beam.Map(lambda r: r["id"])
    bounds = (ids | "IdQuantiles" >> ApproximateQuantiles.Globally(self.num_buckets + 1)
              | "Bounds" >> beam.Map(lambda q: list(q[1:-1])))
    buckets = (ids | "Bucket" >> beam.Map(lambda i, b: (_bucket_ids(i, b), i),
                                          beam.pvalue.AsSingleton(bounds))
               | "GroupBucket" >> beam.GroupByKey())
    sizes = buckets | "Sizes" >> beam.MapTuple(lambda b, members: (b, len(list(members))))
    ranks = buckets | "Ranks" >> beam.FlatMap(_ranks, beam.pvalue.AsDict(sizes))
    placed = ({"rec": recs | "ById" >> beam.Map(lambda r: (r["id"], r)), "rank": ranks}
              | "JoinRank" >> beam.CoGroupByKey()
              | "Place" >> beam.FlatMap(_place, k))
    parts = (placed | "GroupShard" >> beam.GroupByKey()
             | "WriteShard" >> beam.ParDo(_WriteShard(self.output, k)))
    return (parts | "Columns" >> beam.combiners.ToList()
            | "Finish" >> beam.FlatMap(_finish, self.output, k, self.metadata))


def clear_corpus(output: str) -> None:
  """Removes an earlier corpus at `output` (corpus.json first, so a half-removed one never reads
  as complete); any Beam filesystem."""
  for name in (corpus_lib.METADATA_FILE, corpus_lib.INDEX_FILE, "data-*.array_record"):
    matched = [m.path for r in FileSystems.match([_join(output, name)]) for m in r.metadata_list]
    if matched:
      FileSystems.delete(matched)
