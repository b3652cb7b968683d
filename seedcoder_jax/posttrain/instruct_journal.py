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
  """Append-only outcomes of one run in `path`; `done` maps seed id -> its last outcome."""

  def __init__(self, path, parts: dict):
    self.path = pathlib.Path(path)
    self.parts = parts
    self.done: dict[str, dict] = {}
    self.torn_lines = 0
    self._lock = threading.Lock()
    header = {"journal": FORMAT, "version": VERSION, "fingerprint": fingerprint(parts),
              "parts": parts}
    if self.path.exists() and self.path.stat().st_size:
      self._load(header)
    else:
      self.path.parent.mkdir(parents=True, exist_ok=True)
      with open(self.path, "w", encoding="utf-8") as f:
        f.write(json.dumps(header) + "\n")
        f.flush()
        os.fsync(f.fileno())

  def _load(self, header: dict) -> None:
    raw = self.path.read_bytes()
    lines = raw.split(b"\n")
    complete = raw.endswith(b"\n")
    body = lines[:-1]  # the piece after the last newline is empty or torn
    if not complete and lines[-1]:
      self.torn_lines = 1
      with open(self.path, "r+b") as f:  # cut the torn line before appending anything
        f.truncate(len(raw) - len(lines[-1]))
    if not body:
      raise JournalError(f"{self.path}: no complete header line; delete the file to start over")
    try:
      old = json.loads(body[0])
    except json.JSONDecodeError as e:
      raise JournalError(f"{self.path}:1: the header is not JSON ({e})") from e
    if old.get("journal") != FORMAT or old.get("version") != VERSION:
      raise JournalError(f"{self.path}:1: not a {FORMAT} version {VERSION} journal")
    if old.get("fingerprint") != header["fingerprint"]:
      changes = _diff(old.get("parts", {}), header["parts"])
      raise JournalError(
          f"{self.path} was written under another configuration ({'; '.join(changes[:8])}); "
          "resume with the same settings, use another workdir, or start over (--overwrite)")
    for n, line in enumerate(body[1:], start=2):
      try:
        outcome = json.loads(line)
        self.done[outcome["seed_id"]] = outcome
      except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise JournalError(f"{self.path}:{n}: not an outcome line ({e})") from e

  def append(self, outcome: dict) -> None:
    """Writes one outcome and forces it to disk before returning."""
    with self._lock:
      with open(self.path, "a", encoding="utf-8") as f:
        f.write(json.dumps(outcome, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())
      self.done[outcome["seed_id"]] = outcome
