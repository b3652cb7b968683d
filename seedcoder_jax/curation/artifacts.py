"""Artifact directories on any Beam filesystem (local, gs://) for code that writes local files.

Orbax, numpy and SQLite write local paths; a curation artifact (the scorer checkpoint, the web
classifier) must live under the pipeline's own directory, which on a cluster is a gs:// URL that
the driver and every worker read. `local_copy_of(dir)` gives a local directory holding a remote
one's files (a temporary download; the directory itself when local); `publish(local, dir)` copies
a local directory's files up, the file named `last` after all others (a completeness marker).
"""

from __future__ import annotations

import os
import pathlib
import shutil
import tempfile


def _fs():
  from apache_beam.io.filesystems import FileSystems
  return FileSystems


def is_local(path: str | os.PathLike) -> bool:
  return _fs().get_scheme(str(path)) is None


def publish(local_dir: str | os.PathLike, remote_dir: str, *, last: str | None = None) -> None:
  """Copies every file under local_dir to remote_dir (same relative paths)."""
  files = sorted(p for p in pathlib.Path(local_dir).rglob("*") if p.is_file())
  files.sort(key=lambda p: p.name == last)  # stable: the marker file goes last
  for p in files:
    rel = p.relative_to(local_dir).as_posix()
    with open(p, "rb") as src, _fs().create(f"{remote_dir.rstrip('/')}/{rel}") as dst:
      shutil.copyfileobj(src, dst, 1 << 22)


def download(remote_dir: str) -> str:
  """A new local temporary directory holding remote_dir's files (the caller may delete it)."""
  remote_dir = remote_dir.rstrip("/")
  local = tempfile.mkdtemp(prefix="artifact_")
  found = [m.path for r in _fs().match([f"{remote_dir}/**"]) for m in r.metadata_list]
  if not found:
    raise FileNotFoundError(f"{remote_dir}: no files")
  for path in found:
    target = pathlib.Path(local) / path[len(remote_dir) + 1:]
    target.parent.mkdir(parents=True, exist_ok=True)
    with _fs().open(path, compression_type="uncompressed") as src, open(target, "wb") as dst:
      shutil.copyfileobj(src, dst, 1 << 22)
  return local
