"""The instruction pipeline's journal: one JSON line per finished seed, flushed and fsynced.

Line 1 is a header with the fingerprint of everything that decides an outcome (config, templates,
styles, generator model). Reopening a journal whose fingerprint differs is an error that names the
differing keys: a killed run resumes, it never silently starts over or mixes two configurations.
A torn last line (the process was killed mid-write) is cut off, with the count reported; a bad
line anywhere else is an error naming it. The last outcome of a seed wins, so a transient failure
journaled once and redone later counts once.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import threading
from typing import Iterator

FORMAT = "seedcoder-instruct-journal"
VERSION = 1


class JournalError(ValueError):
  """A journal that cannot be resumed (the message names the file, line or differing keys)."""


def fingerprint(parts: dict) -> str:
  return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


_ABSENT = "(absent)"


def _diff(old: dict, new: dict, prefix: str = "") -> list[str]:
  keys = []
  for k in sorted(set(old) | set(new)):
    a, b = old.get(k, _ABSENT), new.get(k, _ABSENT)
    if isinstance(a, dict) and isinstance(b, dict):
      keys += _diff(a, b, f"{prefix}{k}.")
    elif a != b:
      keys.append(f"{prefix}{k}: {a!r} -> {b!r}")
  return keys


class Journal:
  """Append-only outcomes of one run in `path`.

  `done` maps seed id -> its last outcome without the SFT record (a few hundred bytes each, so a
  run of 100,000s of seeds fits in memory); `records(ids)` reads kept records back from the file
  by their byte offsets, in the order asked for.
  """

  def __init__(self, path, parts: dict):
    self.path = pathlib.Path(path)
    self.parts = parts
    self.done: dict[str, dict] = {}
    self._offsets: dict[str, int] = {}
    self.torn_lines = 0
    self._lock = threading.Lock()
    header = {"journal": FORMAT, "version": VERSION, "fingerprint": fingerprint(parts),
              "parts": parts}
    if self.path.exists() and self.path.stat().st_size:
      self._load(header)
    else:
      self.path.parent.mkdir(parents=True, exist_ok=True)
      with open(self.path, "wb") as f:
        f.write((json.dumps(header) + "\n").encode("utf-8"))
        f.flush()
        os.fsync(f.fileno())

  def _remember(self, outcome: dict, offset: int) -> None:
    self.done[outcome["seed_id"]] = {k: v for k, v in outcome.items() if k != "record"}
    self._offsets[outcome["seed_id"]] = offset

  def _load(self, header: dict) -> None:
    torn_at = None
    with open(self.path, "rb") as f:
      first = f.readline()
      if not first.endswith(b"\n"):
        raise JournalError(f"{self.path}: no complete header line; delete the file to start over")
      try:
        old = json.loads(first)
      except json.JSONDecodeError as e:
        raise JournalError(f"{self.path}:1: the header is not JSON ({e})") from e
      if not isinstance(old, dict) or old.get("journal") != FORMAT or old.get("version") != VERSION:
        raise JournalError(f"{self.path}:1: not a {FORMAT} version {VERSION} journal")
      if old.get("fingerprint") != header["fingerprint"]:
        changes = _diff(old.get("parts", {}), header["parts"])
        raise JournalError(
            f"{self.path} was written under another configuration ({'; '.join(changes[:8])}); "
            "resume with the same settings, use another workdir, or start over (--overwrite)")
      offset = len(first)
      for n, line in enumerate(f, start=2):
        if not line.endswith(b"\n"):  # the process died mid-write: this line never finished
          torn_at = offset
          break
        try:
          self._remember(json.loads(line), offset)
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
          raise JournalError(f"{self.path}:{n}: not an outcome line ({e})") from e
        offset += len(line)
    if torn_at is not None:
      self.torn_lines = 1
      with open(self.path, "r+b") as f:  # cut the torn line before appending anything
        f.truncate(torn_at)

  def append(self, outcome: dict) -> None:
    """Writes one outcome and forces it to disk before returning."""
    line = (json.dumps(outcome, ensure_ascii=False) + "\n").encode("utf-8")
    with self._lock:
      with open(self.path, "ab") as f:
        offset = f.tell()
        f.write(line)
        f.flush()
        os.fsync(f.fileno())
      self._remember(outcome, offset)

  def records(self, seed_ids) -> Iterator[dict]:
    """The SFT record of each of `seed_ids` (each must be kept), read back from the file."""
    with open(self.path, "rb") as f:
      for sid in seed_ids:
        f.seek(self._offsets[sid])
        record = json.loads(f.readline())["record"]
        if record is None:
          raise JournalError(f"{self.path}: seed {sid} was not kept; it has no record")
        yield record
