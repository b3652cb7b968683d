"""Run directories on a local disk or in Cloud Storage (gs://), through one path type: etils epath.

Workdirs, checkpoints (orbax: epath for folders, tensorstore for array bytes), metrics.jsonl,
TensorBoard events and config dumps all go through `path()`, so a `gs://BUCKET/run` workdir is
never turned into a local folder named "gs:".

gs:// through epath uses gcsfs (fsspec), not TensorFlow's gfile: EPATH_USE_TF=false is set here,
before epath first picks a backend. gcsfs honours STORAGE_EMULATOR_HOST, so the tests run against
a local GCS emulator the code that runs on a pod; TensorFlow's GCS client has no endpoint setting.
gcsfs's listing cache is off: on a pod other processes write the folders this one lists.

Cloud Storage has no append and no rename: `AppendLog` rewrites a whole object (metrics.jsonl),
`write_atomic` writes an object directly (an upload is atomic), and renaming a folder copies it.
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("EPATH_USE_TF", "false")

import fsspec  # pylint: disable=g-import-not-at-top,wrong-import-position
from etils import epath  # pylint: disable=g-import-not-at-top,wrong-import-position

fsspec.config.conf.setdefault("gcs", {}).setdefault("use_listings_cache", False)

REMOTE_PREFIXES = ("gs://",)


def is_remote(p) -> bool:
  return os.fspath(p).startswith(REMOTE_PREFIXES)


def path(p) -> epath.Path:
  """An epath.Path for a local path (made absolute: orbax requires it) or a gs:// URI."""
  s = os.fspath(p)
  return epath.Path(s if is_remote(s) else os.path.abspath(s))


def write_atomic(p: epath.Path, text: str) -> None:
  """Readers see the old content or all of `text`, never part of it: a local file is written
  beside and renamed; a Cloud Storage object appears only once its upload is complete."""
  if is_remote(p):
    p.write_text(text)
  else:
    tmp = p.parent / f"{p.name}.tmp"
    tmp.write_text(text)
    tmp.rename(p)


class AppendLog:
  """A text file that only grows, line by line: a local file is opened for append (line-buffered,
  so a kill -9 loses nothing written); a gs:// object, which cannot be appended to, is rewritten
  whole (earlier content included) at most every `flush_s` seconds and on close, so a kill -9
  loses at most the last `flush_s` seconds of lines."""

  def __init__(self, p, flush_s: float = 30.0):
    self.path = path(p)
    self.remote = is_remote(self.path)
    self.flush_s = flush_s
    if self.remote:
      self._text = self.path.read_text() if self.path.exists() else ""
      self._dirty, self._flushed = False, time.monotonic()
    else:
      self._file = open(self.path, "a", buffering=1)  # pylint: disable=consider-using-with

  def write(self, line: str) -> None:
    if not self.remote:
      self._file.write(line)
      return
    self._text += line
    self._dirty = True
    if time.monotonic() - self._flushed >= self.flush_s:
      self.flush()

  def flush(self) -> None:
    if not self.remote:
      self._file.flush()
    elif self._dirty:
      self.path.write_text(self._text)
      self._dirty, self._flushed = False, time.monotonic()

  def close(self) -> None:
    if self.remote:
      self.flush()
    else:
      self._file.close()
