"""Chat corpora for post-training: ArrayRecord shards of conversations (SFT) or preference pairs (DPO).

A chat corpus is a directory:

  chat_corpus.json                   metadata; written last, so its presence marks a complete corpus
  data-00000-of-00001.array_record   records, one JSON object each (UTF-8), group_size 1
  index.npz                          per record: `difficulty` (int8, -1 = unrated) and `id_hash`
                                     (uint32 from sha256 of the id: the stable held-out split), so
                                     samplers weight and split without reading any record

An SFT record (`kind="sft"`):
  {"id": str, "messages": [{"role": "system"|"user"|"assistant", "content": str}, ...],
   "difficulty": int 0..10 or null, "source": str, "meta": {...}}
At least one assistant turn; the last message is an assistant turn (what the loss trains on).

A preference record (`kind="pairs"`):
  {"id": str, "prompt": [messages, no assistant turn last], "chosen": str, "rejected": str,
   "source": str, "meta": {...}} plus, once the reference pass has run, "ref_chosen" and
  "ref_rejected" (float summed log-probs); the corpus metadata then names the reference params'
  fingerprint (posttrain.dpo_trainer).

Writers validate every record and refuse a bad one with its index and id; readers do the same per
record, so a corpus edited by hand fails before training with the record named.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
from typing import Any, Iterable, Optional

import numpy as np

FORMAT = "seedcoder-chat-corpus"
VERSION = 1
KINDS = ("sft", "pairs")
ROLES = ("system", "user", "assistant")
METADATA_FILE = "chat_corpus.json"
INDEX_FILE = "index.npz"
REQUIRED = {"sft": ("id", "messages", "difficulty", "source"),
            "pairs": ("id", "prompt", "chosen", "rejected", "source")}
OPTIONAL = {"sft": ("meta",), "pairs": ("meta", "ref_chosen", "ref_rejected")}


class ChatCorpusError(ValueError):
  """A missing, incomplete or malformed chat corpus; the message names the record and the key."""


def _check_messages(messages: Any, where: str, *, need_assistant_last: bool) -> None:
  if not isinstance(messages, list) or not messages:
    raise ChatCorpusError(f"{where}: messages must be a non-empty list of {{role, content}}")
  for i, m in enumerate(messages):
    if not isinstance(m, dict) or set(m) != {"role", "content"}:
      raise ChatCorpusError(f"{where}: message {i} must have exactly the keys role and content, "
                            f"got {sorted(m) if isinstance(m, dict) else type(m).__name__}")
    if m["role"] not in ROLES:
      raise ChatCorpusError(f"{where}: message {i} role {m['role']!r} is not one of {ROLES}")
    if not isinstance(m["content"], str):
      raise ChatCorpusError(f"{where}: message {i} content is {type(m['content']).__name__}, "
                            "expected str")
  if need_assistant_last and messages[-1]["role"] != "assistant":
    raise ChatCorpusError(f"{where}: the conversation has no assistant turn at its end "
                          f"(roles {[m['role'] for m in messages]}): nothing to train on")
  if not need_assistant_last and messages[-1]["role"] == "assistant":
    raise ChatCorpusError(f"{where}: a pair's prompt must not end with an assistant turn")


def check_record(record: Any, kind: str, where: str) -> dict:
  """The record, validated (raises ChatCorpusError naming `where` and the key)."""
  if kind not in KINDS:
    raise ChatCorpusError(f"chat corpus kind {kind!r} is not one of {KINDS}")
  if not isinstance(record, dict):
    raise ChatCorpusError(f"{where}: expected a JSON object, got {type(record).__name__}")
  where = f"{where} (id={record.get('id')!r})"
  missing = [k for k in REQUIRED[kind] if k not in record]
  unknown = sorted(set(record) - set(REQUIRED[kind]) - set(OPTIONAL[kind]))
  if missing or unknown:
    raise ChatCorpusError(f"{where}: missing key(s) {missing}, unknown key(s) {unknown} for a "
                          f"{kind!r} record")
  if not isinstance(record["id"], str) or not record["id"]:
    raise ChatCorpusError(f"{where}: id must be a non-empty string")
  if kind == "sft":
    _check_messages(record["messages"], where, need_assistant_last=True)
    d = record["difficulty"]
    if d is not None and (isinstance(d, bool) or not isinstance(d, int) or not 0 <= d <= 10):
      raise ChatCorpusError(f"{where}: difficulty={d!r} must be an integer 0..10 or null")
  else:
    _check_messages(record["prompt"], where, need_assistant_last=False)
    for k in ("chosen", "rejected"):
      if not isinstance(record[k], str) or not record[k]:
        raise ChatCorpusError(f"{where}: {k} must be a non-empty string")
    for k in ("ref_chosen", "ref_rejected"):
      if k in record and not isinstance(record[k], (int, float)):
        raise ChatCorpusError(f"{where}: {k}={record[k]!r} must be a number")
  return record


def id_hash(record_id: str) -> int:
  """A stable 32-bit hash of a record id (held-out splits by id survive reordering)."""
  return int.from_bytes(hashlib.sha256(record_id.encode("utf-8")).digest()[:4], "little")


def _shard_name(i: int, n: int) -> str:
  return f"data-{i:05d}-of-{n:05d}.array_record"


def write(records: Iterable[dict], output, *, kind: str, metadata: Optional[dict] = None,
          num_shards: int = 1, overwrite: bool = False) -> dict:
  """Writes validated `records` as a chat corpus in `output`; returns its metadata.

  Record i goes to shard i % num_shards (the reader undoes this). The metadata file goes last, so
  a killed write leaves a directory that `open_corpus` refuses.
  """
  from array_record.python.array_record_module import ArrayRecordWriter
  out = pathlib.Path(output)
  if (out / METADATA_FILE).exists() and not overwrite:
    raise ChatCorpusError(f"{out} already holds a chat corpus (pass overwrite=True to replace it)")
  if num_shards < 1:
    raise ChatCorpusError(f"num_shards={num_shards} must be >= 1")
  out.mkdir(parents=True, exist_ok=True)
  (out / METADATA_FILE).unlink(missing_ok=True)
  for old in out.glob("data-*.array_record"):
    old.unlink()
  shards = [_shard_name(i, num_shards) for i in range(num_shards)]
  writers = [ArrayRecordWriter(str(out / s), "group_size:1") for s in shards]
  n, ids, difficulty, hashes = 0, set(), [], []
  try:
    for n, record in enumerate(records):
      r = check_record(record, kind, f"record {n}")
      if r["id"] in ids:
        raise ChatCorpusError(f"record {n}: duplicate id {r['id']!r}")
      ids.add(r["id"])
      d = r.get("difficulty")
      difficulty.append(-1 if d is None else d)
      hashes.append(id_hash(r["id"]))
      writers[n % num_shards].write(json.dumps(r, ensure_ascii=False).encode("utf-8"))
  finally:
    for w in writers:
      w.close()
  if not ids:
    raise ChatCorpusError(f"no records to write to {out}")
  # Record i sits at shard i % k, position i // k: the index follows the written order.
  np.savez(out / INDEX_FILE, difficulty=np.asarray(difficulty, np.int8),
           id_hash=np.asarray(hashes, np.uint32))
  meta = {"format": FORMAT, "version": VERSION, "kind": kind, "num_records": len(ids),
          "shards": shards, **(metadata or {})}
  tmp = out / (METADATA_FILE + ".tmp")
  tmp.write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
  tmp.replace(out / METADATA_FILE)
  return meta


class ChatSource:
  """Random access to a chat corpus's records (Grain RandomAccessDataSource protocol); each record
  is validated as it is read. Pickles as its paths only."""

  def __init__(self, path: str, shards: list[str], num_records: int, kind: str):
    self.path, self.shards, self.num_records, self.kind = str(path), list(shards), num_records, kind
    self._readers = None

  def __getstate__(self):
    return {**self.__dict__, "_readers": None}

  def __setstate__(self, state):
    self.__dict__.update(state)

  def __len__(self) -> int:
    return self.num_records

  def __repr__(self):
    return f"ChatSource({self.path!r}, kind={self.kind}, records={self.num_records})"

  def __getitem__(self, index: int) -> dict:
    index = int(index)
    if not 0 <= index < self.num_records:
      raise IndexError(f"record {index} out of range for {self.path} ({self.num_records} records)")
    if self._readers is None:
      from array_record.python.array_record_data_source import ArrayRecordDataSource
      self._readers = [ArrayRecordDataSource([str(pathlib.Path(self.path) / s)])
                       for s in self.shards]
    k = len(self._readers)
    where = f"{self.path} record {index}"
    try:
      record = json.loads(self._readers[index % k][index // k])
    except json.JSONDecodeError as e:
      raise ChatCorpusError(f"{where}: not JSON ({e})") from e
    return check_record(record, self.kind, where)


def read_index(path) -> dict:
  """{"difficulty": int8 [N] (-1 unrated), "id_hash": uint32 [N]} of the corpus in `path`."""
  p = pathlib.Path(path) / INDEX_FILE
  if not p.is_file():
    raise ChatCorpusError(f"chat corpus {p.parent} has no {INDEX_FILE} (an unfinished write?)")
  with np.load(p, allow_pickle=False) as index:
    return {"difficulty": index["difficulty"], "id_hash": index["id_hash"]}


def open_corpus(path, *, kind: Optional[str] = None) -> tuple[ChatSource, dict]:
  """(source, metadata) of the chat corpus in directory `path`; `kind` is checked when given."""
  p = pathlib.Path(path)
  meta_path = p / METADATA_FILE
  if not meta_path.is_file():
    raise ChatCorpusError(f"{p} is not a chat corpus: no {METADATA_FILE} (missing directory, "
                          "an unfinished write, or the wrong path?)")
  try:
    meta = json.loads(meta_path.read_text())
  except json.JSONDecodeError as e:
    raise ChatCorpusError(f"{meta_path} is not valid JSON: {e}") from e
  if meta.get("format") != FORMAT or meta.get("version") != VERSION:
    raise ChatCorpusError(f"{meta_path}: format {meta.get('format')!r} version "
                          f"{meta.get('version')!r}, expected {FORMAT!r} version {VERSION}")
  if kind is not None and meta.get("kind") != kind:
    raise ChatCorpusError(f"{p} holds {meta.get('kind')!r} records, expected {kind!r}")
  missing = [s for s in meta["shards"] if not (p / s).is_file()]
  if missing:
    raise ChatCorpusError(f"chat corpus {p} is missing shard(s) {missing}")
  return ChatSource(p, meta["shards"], meta["num_records"], meta["kind"]), meta


def read_all(path, *, kind: Optional[str] = None) -> tuple[list[dict], dict]:
  """Every record (validated) and the metadata: for small corpora and tests."""
  source, meta = open_corpus(path, kind=kind)
  return [source[i] for i in range(len(source))], meta
