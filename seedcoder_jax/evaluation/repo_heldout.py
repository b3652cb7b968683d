"""Held-out repositories for a cross-file metric: standard-library packages curation never reads.

The tiny recipe curates 18 stdlib packages as repositories (configs/curation.py TINY_PACKAGES);
the packages here are others of the same interpreter's standard library, so a model trained on
the recipe's corpus has seen none of their files. Each package is one repository, named and laid
out as curation's ingest names a directory input (repo = the package's directory name, paths
relative to it), Python files only, sorted; packages this interpreter lacks are skipped (the
result lists the ones used, so two models are only compared on the same set).

  repos = repo_heldout.load()              # [Repository(name, files=[(path, text), ...]), ...]
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import sysconfig

PACKAGES = ("collections", "curses", "dbm", "idlelib", "re", "tkinter", "turtledemo", "venv",
            "xmlrpc", "zipfile")
_SKIP_DIRS = {"__pycache__", "idle_test", "test", "tests"}


@dataclasses.dataclass(frozen=True)
class Repository:
  name: str
  files: tuple[tuple[str, str], ...]  # (path in the repository, text), sorted by path


def load(packages=PACKAGES, root: str | None = None) -> list[Repository]:
  """The packages under `root` (default: this interpreter's stdlib) that exist and hold at least
  two Python files (a file needs a sibling to have cross-file context)."""
  root = pathlib.Path(root or sysconfig.get_paths()["stdlib"])
  out = []
  for name in packages:
    base = root / name
    if not base.is_dir():
      continue
    files = []
    for dirpath, dirnames, filenames in os.walk(base):
      dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
      for f in sorted(filenames):
        if f.endswith(".py"):
          full = pathlib.Path(dirpath, f)
          files.append((full.relative_to(base).as_posix(), full.read_text("utf-8", "replace")))
    if len(files) >= 2:
      out.append(Repository(name, tuple(sorted(files))))
  if not out:
    raise FileNotFoundError(f"none of the held-out packages {list(packages)} is under {root}")
  return out
