"""The pre-scored corpus: ArrayRecord shards with random access, plus a small index.

A corpus is a local directory (or a gcsfuse mount of a bucket; gs:// itself is refused by name):

  corpus.json                      metadata; written last, so its presence marks a complete corpus
  data-00000-of-00004.array_record records, one JSON object each (UTF-8), group_size 1 (random access)
  index.npz                        per-record `score` (float32) and `repo_id` (int32 into `repo_names`)

Each record has the fields of FIELDS: text, language, kind (file | repo | commit | web), repo, path,
score (float32). The index lets the input pipeline compute score percentiles and group files by
repository without reading any text.

Writers: `write_corpus(records, dir)` (data/make_corpus.py; the curation stage later). Readers:
`open_corpus(dir) -> Corpus` whose `.source` is a picklable Grain random-access data source of
record dicts (`grain.MapDataset.source(corpus.source)`).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any, Iterable, Optional

import numpy as np

from seedcoder_jax import storage

FORMAT = "seedcoder-corpus"
VERSION = 1
FIELDS = ("text", "language", "kind", "repo", "path", "score")
KINDS = ("file", "repo", "commit", "web")
METADATA_FILE = "corpus.json"
INDEX_FILE = "index.npz"


class CorpusError(ValueError):
  """A missing, incomplete or malformed corpus; the message names the directory and the problem."""


def _refuse_remote(path) -> None:
  """ArrayRecord reads and writes local files only (its reader is a file descriptor): a gs://
  corpus is read through a gcsfuse mount of its bucket, which launch/tpu/create_and_run.sh makes."""
  if storage.is_remote(path):
    bucket, _, rest = str(path).partition("://")[2].partition("/")
    raise CorpusError(
        f"{path}: a corpus is read from a local or mounted folder (ArrayRecord opens local files "
        f"only); mount the bucket with gcsfuse (launch/tpu/create_and_run.sh does, with "
        f"CORPUS_BUCKET={bucket}: `gcsfuse --implicit-dirs -o ro {bucket} /gcs/{bucket}`) and "
        f"name the corpus /gcs/{bucket}/{rest}")


def _shard_name(i: int, n: int) -> str:
  return f"data-{i:05d}-of-{n:05d}.array_record"


def _check_record(record: Any, n: int) -> dict:
  if not isinstance(record, dict):
    raise CorpusError(f"record {n} is a {type(record).__name__}, expected a dict with {FIELDS}")
  missing = [f for f in FIELDS if f not in record]
  if missing:
    raise CorpusError(f"record {n} lacks field(s) {missing} (path={record.get('path')!r})")
  for f in ("text", "language", "kind", "repo", "path"):
    if not isinstance(record[f], str):
      raise CorpusError(f"record {n} field {f!r} is {type(record[f]).__name__}, expected str")
  if record["kind"] not in KINDS:
    raise CorpusError(f"record {n} kind={record['kind']!r} is not one of {KINDS}")
  score = float(record["score"])
  if not np.isfinite(score):
    raise CorpusError(f"record {n} (path={record['path']!r}) has a non-finite score {score}")
  out = {f: record[f] for f in FIELDS}
  out["score"] = float(np.float32(score))
  return out


def write_corpus(records: Iterable[dict], output: str | pathlib.Path, *, num_shards: int = 1,
                 metadata: Optional[dict] = None, overwrite: bool = False) -> dict:
  """Writes `records` (dicts with FIELDS) as a corpus in `output`; returns its metadata.

  Record i goes to shard i % num_shards at position i // num_shards; the reader undoes this, so
  index i of the opened corpus is the i-th record written. `metadata` (e.g. how the scores were
  made) is stored in corpus.json beside the counts.
  """
  from array_record.python.array_record_module import ArrayRecordWriter
  _refuse_remote(output)
  out = pathlib.Path(output)
  if (out / METADATA_FILE).exists() and not overwrite:
    raise CorpusError(f"{out} already holds a corpus (pass overwrite=True to replace it)")
  if num_shards < 1:
    raise CorpusError(f"num_shards={num_shards} must be >= 1")
  out.mkdir(parents=True, exist_ok=True)
  (out / METADATA_FILE).unlink(missing_ok=True)
  for old in out.glob("data-*.array_record"):
    old.unlink()
  shards = [_shard_name(i, num_shards) for i in range(num_shards)]
  writers = [ArrayRecordWriter(str(out / s), "group_size:1") for s in shards]
  scores, repo_ids, repo_index = [], [], {}
  languages, kinds = {}, {}
  n = 0
  try:
    for n, record in enumerate(records):
      r = _check_record(record, n)
      writers[n % num_shards].write(json.dumps(r, ensure_ascii=False).encode("utf-8"))
      scores.append(r["score"])
      repo_ids.append(repo_index.setdefault(r["repo"], len(repo_index)))
      languages[r["language"]] = languages.get(r["language"], 0) + 1
      kinds[r["kind"]] = kinds.get(r["kind"], 0) + 1
  finally:
    for w in writers:
      w.close()
  num_records = len(scores)
  if num_records == 0:
    raise CorpusError(f"no records to write to {out}")
  np.savez(out / INDEX_FILE, score=np.asarray(scores, np.float32),
           repo_id=np.asarray(repo_ids, np.int32), repo_names=np.asarray(list(repo_index), dtype=str))
  meta = {"format": FORMAT, "version": VERSION, "num_records": num_records, "shards": shards,
          "fields": list(FIELDS), "languages": languages, "kinds": kinds,
          "num_repos": len(repo_index), **(metadata or {})}
  (out / METADATA_FILE).write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
  return meta


class CorpusSource:
  """Random access to the records of a corpus (Grain RandomAccessDataSource protocol).

  Pickles as its paths only; the ArrayRecord readers open lazily in each worker.
  """

  def __init__(self, path: str | pathlib.Path, shards: list[str], num_records: int):
    self.path = str(path)
    self.shards = list(shards)
    self.num_records = num_records
    self._readers = None

  def __getstate__(self):
    return {**self.__dict__, "_readers": None}

  def __setstate__(self, state):
    self.__dict__.update(state)

  def __len__(self) -> int:
    return self.num_records

  def __repr__(self):
    return f"CorpusSource({self.path!r}, records={self.num_records})"

  def _open(self):
    from array_record.python.array_record_data_source import ArrayRecordDataSource
    self._readers = [ArrayRecordDataSource([str(pathlib.Path(self.path) / s)]) for s in self.shards]
    return self._readers

  def __getitem__(self, index: int) -> dict:
    index = int(index)
    if not 0 <= index < self.num_records:
      raise IndexError(f"record {index} out of range for {self.path} ({self.num_records} records)")
    readers = self._readers or self._open()
    k = len(readers)
    return json.loads(readers[index % k][index // k])


@dataclasses.dataclass(frozen=True)
class Corpus:
  path: str
  metadata: dict
  source: CorpusSource
  scores: np.ndarray      # [N] float32
  repo_ids: np.ndarray    # [N] int32, into repo_names
  repo_names: np.ndarray  # [R] str

  def __len__(self) -> int:
    return len(self.source)


def open_corpus(path: str | pathlib.Path) -> Corpus:
  """Opens the corpus in directory `path`: random-access source, metadata and index."""
  _refuse_remote(path)
  p = pathlib.Path(path)
  if not p.is_dir():
    raise CorpusError(f"corpus directory not found: {p} (write one with data/make_corpus.py "
                      "or data/curate.py)")
  meta_path = p / METADATA_FILE
  if not meta_path.is_file():
    raise CorpusError(f"{p} is not a corpus: no {METADATA_FILE} (incomplete write, or the wrong "
                      "directory?)")
  try:
    meta = json.loads(meta_path.read_text())
  except json.JSONDecodeError as e:
    raise CorpusError(f"{meta_path} is not valid JSON: {e}") from e
  if meta.get("format") != FORMAT or meta.get("version") != VERSION:
    raise CorpusError(f"{meta_path}: format {meta.get('format')!r} version {meta.get('version')!r}, "
                      f"expected {FORMAT!r} version {VERSION}")
  missing = [s for s in meta["shards"] if not (p / s).is_file()]
  if missing or not (p / INDEX_FILE).is_file():
    raise CorpusError(f"corpus {p} is missing file(s): {missing or [INDEX_FILE]}")
  with np.load(p / INDEX_FILE, allow_pickle=False) as index:
    scores, repo_ids, repo_names = index["score"], index["repo_id"], index["repo_names"]
  n = meta["num_records"]
  if len(scores) != n or len(repo_ids) != n:
    raise CorpusError(f"corpus {p}: {INDEX_FILE} has {len(scores)} entries for {n} records")
  return Corpus(path=str(p), metadata=meta, source=CorpusSource(p, meta["shards"], n),
                scores=scores, repo_ids=repo_ids, repo_names=repo_names)
