"""Stage 1, ingest: source files of repository trees become records; bad files become rejections.

An input path is one repository:

- a local directory (a checkout, a git repository's working tree, or any source tree), named after
  the directory; version-control metadata (.git, .hg, .svn) and __pycache__ are not part of the
  tree and are not read;
- a .tar / .tar.gz / .tgz archive (local or any Beam filesystem, e.g. gs://), named after the
  archive without its extension; when all members share one top-level directory (GitHub's
  "repo-<sha>/" tarballs) that directory is stripped from the paths. A member with an absolute
  path or one that leaves the archive ("../x") is an input rejected "unsafe_path".

A ".h" file is C or C++ as its repository's other files say (C++ sources and no C ones: C++;
the reverse: C); when they do not decide, it is C if the C grammar parses it, else C++ if the C++
grammar does (header_language).

Every regular file read is an input and ends either as a record (kind "file", id
"file:<repo>/<path>") or as a rejection of stage "ingest" with one of REASONS. A corrupt archive
counts as one input (id "archive:<path>", reason corrupt_archive) whatever it held, because its
members cannot be listed reliably; its detail says how many members were read before the error.
"""

from __future__ import annotations

import dataclasses
import io
import os
import pathlib
import posixpath
import stat
import tarfile
from typing import Iterable, Iterator

from seedcoder_jax.curation import records

STAGE = "ingest"
REASONS = ("binary", "non_utf8", "too_large", "empty", "unknown_language", "unreadable",
           "symlink", "corrupt_archive", "unsafe_path")

EXTENSIONS = {
    ".py": "python", ".pyi": "python", ".pyw": "python",
    ".c": "c", ".h": "c",
    ".cc": "cpp", ".cpp": "cpp", ".cxx": "cpp", ".hpp": "cpp", ".hh": "cpp", ".hxx": "cpp",
    ".java": "java",
    ".js": "javascript", ".mjs": "javascript", ".cjs": "javascript", ".jsx": "javascript",
    ".ts": "typescript", ".mts": "typescript", ".cts": "typescript", ".tsx": "typescript",
    ".go": "go", ".rs": "rust",
    ".sh": "shell", ".bash": "shell", ".zsh": "shell",
    ".md": "markdown", ".markdown": "markdown",
}
# Interpreter names of a "#!" line (last path component, or the argument of /usr/bin/env).
SHEBANGS = {
    "python": "python", "python2": "python", "python3": "python", "pypy": "python",
    "pypy3": "python", "sh": "shell", "bash": "shell", "zsh": "shell", "dash": "shell",
    "ksh": "shell", "node": "javascript", "nodejs": "javascript", "deno": "typescript",
    "ts-node": "typescript",
}
ALL_LANGUAGES = tuple(sorted(set(EXTENSIONS.values())))
HEADER_SUFFIX = ".h"  # C or C++: decided per repository, else per file (header_language)
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")
SKIP_DIRS = frozenset({".git", ".hg", ".svn", "__pycache__"})


class IngestError(ValueError):
  """A bad ingest configuration or input list (missing paths, unknown languages)."""


@dataclasses.dataclass(frozen=True)
class IngestConfig:
  languages: tuple[str, ...] = ALL_LANGUAGES  # others -> rejected "unknown_language"
  max_bytes: int = 1_000_000  # larger files -> rejected "too_large"
  binary_probe_bytes: int = 8192  # a NUL byte in this prefix -> "binary"

  def __post_init__(self):
    object.__setattr__(self, "languages", tuple(self.languages))
    unknown = sorted(set(self.languages) - set(ALL_LANGUAGES))
    if unknown:
      raise IngestError(f"ingest.languages: {unknown} not detectable; known: {list(ALL_LANGUAGES)}")
    if self.max_bytes < 1:
      raise IngestError(f"ingest.max_bytes={self.max_bytes} must be >= 1")


def detect_language(path: str, head: bytes) -> str:
  """Language from the file extension, else from a "#!" line; "" when unknown."""
  name = posixpath.basename(path)
  lower = name.lower()
  for ext in sorted((e for e in EXTENSIONS if lower.endswith(e)), key=len, reverse=True):
    return EXTENSIONS[ext]
  if head.startswith(b"#!"):
    words = head[2:head.find(b"\n") if b"\n" in head else 200].decode("latin-1").split()
    if words:
      prog = posixpath.basename(words[0])
      if prog == "env":
        args = [w for w in words[1:] if not w.startswith("-")]
        prog = args[0] if args else ""
      prog = prog.rstrip("0123456789.") if prog.startswith("python") else prog
      return SHEBANGS.get(prog, SHEBANGS.get(prog.rstrip("0123456789."), ""))
  return ""


def repo_header_language(paths: Iterable[str]) -> str:
  """What a repository's other files say its ".h" headers are: "c", "cpp" or "" (undecided).

  C++ sources or headers (.cc, .cpp, .hpp, ...) and no .c file: "cpp"; .c files and no C++
  file: "c"; both or neither (a header-only library, a C library with C++ bindings): "".
  """
  found = {EXTENSIONS.get(posixpath.splitext(p.lower())[1]) for p in paths
           if not p.lower().endswith(HEADER_SUFFIX)}
  c, cpp = "c" in found, "cpp" in found
  return "cpp" if cpp and not c else "c" if c and not cpp else ""


def header_language(text: str, repo_language: str = "") -> str:
  """The language of a ".h" file: the repository's (repo_header_language) when it decides, else
  "c" when the C grammar parses the header without errors, else "cpp" when the C++ grammar does,
  else "c" (the syntax stage then rejects it with the C grammar's errors)."""
  if repo_language:
    return repo_language
  from seedcoder_jax.curation import syntax  # tree-sitter, imported only for undecided headers
  for language in ("c", "cpp"):
    tree = syntax.parse(language, text)
    if tree is not None and not tree.root_node.has_error:
      return language
  return "c"


def classify(repo: str, path: str, data: bytes, cfg: IngestConfig,
             repo_header: str = "") -> dict:
  """A file's bytes -> its record, or its rejection (a dict with "reason"). Pure.

  repo_header: what the repository says its ".h" files are (repo_header_language).
  """
  rid = records.record_id("file", repo, path)
  if len(data) > cfg.max_bytes:
    return records.reject(rid, STAGE, "too_large", f"{len(data)} bytes > {cfg.max_bytes}")
  if not data.strip():
    return records.reject(rid, STAGE, "empty", f"{len(data)} bytes, whitespace only")
  if b"\0" in data[:cfg.binary_probe_bytes]:
    return records.reject(rid, STAGE, "binary", "NUL byte")
  try:
    text = data.decode("utf-8")
  except UnicodeDecodeError as e:
    return records.reject(rid, STAGE, "non_utf8", f"byte {e.start}: {e.reason}")
  language = detect_language(path, data[:256])
  if path.lower().endswith(HEADER_SUFFIX):
    language = header_language(text, repo_header)
  if language not in cfg.languages:
    return records.reject(rid, STAGE, "unknown_language", language or posixpath.splitext(path)[1])
  return records.make_record(kind="file", text=text, repo=repo, path=path, language=language,
                             id=rid)


def is_archive(path: str) -> bool:
  return str(path).lower().endswith(ARCHIVE_SUFFIXES)


def repo_name(path: str) -> str:
  """The repository an input path names: the directory or archive name without extension."""
  name = posixpath.basename(str(path).rstrip("/"))
  for suffix in ARCHIVE_SUFFIXES:
    if name.lower().endswith(suffix):
      return name[:-len(suffix)]
  return name


def check_inputs(paths: Iterable[str]) -> list[str]:
  """The input paths, refused up front (IngestError naming them) when missing or unusable."""
  paths = [str(p) for p in paths]
  if not paths:
    raise IngestError("no input paths (set ingest.inputs or pass --input=PATH)")
  missing, bad = [], []
  for p in paths:
    if "://" in p:
      if not is_archive(p):
        bad.append(f"{p} (remote inputs must be .tar/.tar.gz archives, one per repository)")
        continue
      from apache_beam.io.filesystems import FileSystems
      try:
        if not FileSystems.exists(p):
          missing.append(p)
      except Exception as e:  # pylint: disable=broad-except  # no such filesystem, no credentials
        bad.append(f"{p} (cannot be checked: {type(e).__name__}: {e})")
    elif not os.path.exists(p):
      missing.append(p)
    elif not os.path.isdir(p) and not is_archive(p):
      bad.append(f"{p} (neither a directory nor a .tar/.tar.gz/.tgz archive)")
  if missing:
    raise IngestError(f"input path(s) not found: {missing}")
  if bad:
    raise IngestError(f"unusable input path(s): {bad}")
  names = [repo_name(p) for p in paths]
  dups = sorted({n for n in names if names.count(n) > 1})
  if dups:
    raise IngestError(f"several inputs name the same repository {dups}: {paths}")
  return paths


def list_directory(root: str) -> Iterator[tuple[str, str, str, str]]:
  """(repo, path in repo, file on disk, repo_header_language) of every file under a directory,
  sorted."""
  repo = repo_name(root)
  files = []
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
    for name in sorted(filenames):
      full = os.path.join(dirpath, name)
      files.append((pathlib.Path(full).relative_to(root).as_posix(), full))
  header = repo_header_language(path for path, _ in files)
  for path, full in files:
    yield repo, path, full, header


def read_file(repo: str, path: str, full: str, cfg: IngestConfig, repo_header: str = "") -> dict:
  """Reads one file of a directory input -> record or rejection."""
  rid = records.record_id("file", repo, path)
  if os.path.islink(full):
    return records.reject(rid, STAGE, "symlink", os.readlink(full))
  try:
    st = os.stat(full)
    if not stat.S_ISREG(st.st_mode):  # a FIFO would block the reader forever
      return records.reject(rid, STAGE, "unreadable", "not a regular file (FIFO, socket, device)")
    size = st.st_size
    if size > cfg.max_bytes:  # don't read a huge file only to reject it
      return records.reject(rid, STAGE, "too_large", f"{size} bytes > {cfg.max_bytes}")
    with open(full, "rb") as f:
      data = f.read()
  except OSError as e:
    return records.reject(rid, STAGE, "unreadable", f"{type(e).__name__}: {e.strerror or e}")
  return classify(repo, path, data, cfg, repo_header)


def unsafe_member_path(name: str) -> bool:
  """An archive member name that is absolute or, normalised, climbs out of the archive ("..").

  Such members are rejected "unsafe_path" (the names Python's tarfile "data" filter refuses):
  a repository's files never have them, a crafted archive does.
  """
  name = posixpath.normpath(name)
  return name.startswith("/") or name == ".." or name.startswith("../")


def read_archive(archive: str, cfg: IngestConfig) -> list[dict]:
  """Every member of a tar archive -> records and rejections; a corrupt archive -> one rejection."""
  from apache_beam.io.filesystems import FileSystems
  repo = repo_name(archive)
  members: list[tuple[str, object]] = []  # (name, bytes | rejection reason)
  try:
    with FileSystems.open(archive, compression_type="uncompressed") as raw:
      blob = raw.read()
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:*") as tar:
      for m in tar:
        if m.isdir():
          continue
        if m.issym() or m.islnk():
          members.append((m.name, "symlink"))
        elif not m.isfile():
          members.append((m.name, "unreadable"))
        elif m.size > cfg.max_bytes:
          members.append((m.name, ("too_large", m.size)))
        else:
          members.append((m.name, tar.extractfile(m).read()))
  except (tarfile.TarError, OSError, EOFError, ValueError) as e:
    return [records.reject(f"archive:{archive}", STAGE, "corrupt_archive",
                           f"{type(e).__name__}: {e} (after {len(members)} member(s))")]
  names = [posixpath.normpath(n) for n, _ in members]
  safe = [not unsafe_member_path(n) for n in names]
  tops = {n.split("/", 1)[0] for n, ok in zip(names, safe) if ok}
  strip = len(tops) == 1 and all("/" in n for n, ok in zip(names, safe) if ok)
  header = repo_header_language(n for n, ok in zip(names, safe) if ok)
  out = []
  for name, ok, (raw_name, content) in zip(names, safe, members):
    if not ok:  # counted, never read into the tree (tar-slip style names)
      out.append(records.reject(records.record_id("file", repo, raw_name), STAGE, "unsafe_path",
                                f"archive member {raw_name!r} is absolute or leaves the archive"))
      continue
    parts = name.split("/")
    if any(p in SKIP_DIRS for p in parts[:-1]):
      continue
    path = name.split("/", 1)[1] if strip else name
    rid = records.record_id("file", repo, path)
    if isinstance(content, bytes):
      out.append(classify(repo, path, content, cfg, header))
    elif isinstance(content, tuple):
      out.append(records.reject(rid, STAGE, "too_large", f"{content[1]} bytes > {cfg.max_bytes}"))
    else:
      out.append(records.reject(rid, STAGE, content, "archive member"))
  return out


def ingest_paths(paths: Iterable[str], cfg: IngestConfig) -> Iterator[dict]:
  """All records and rejections of the inputs, without Beam (tests, small runs)."""
  for p in check_inputs(paths):
    if is_archive(p):
      yield from read_archive(p, cfg)
    else:
      for repo, path, full, header in list_directory(p):
        yield read_file(repo, path, full, cfg, header)


def is_rejection(item: dict) -> bool:
  return "reason" in item and "text" not in item


def _route(item: dict):
  return records.tagged_rejection(item) if is_rejection(item) else item


def ingest_transform(paths: list[str], cfg: IngestConfig):
  """Beam PTransform: PBegin -> records (main output) and rejections (tag REJECTED)."""
  import apache_beam as beam

  class _Expand(beam.DoFn):
    """An input path -> (repo, path, file, repo_header_language) work items, or the results
    of a whole archive."""

    def process(self, p):
      if is_archive(p):
        for item in read_archive(p, cfg):
          yield beam.pvalue.TaggedOutput("done", item)
      else:
        yield from list_directory(p)

  class _Ingest(beam.PTransform):

    def expand(self, pbegin):
      expanded = (pbegin | "Inputs" >> beam.Create(check_inputs(paths))
                  | "Expand" >> beam.ParDo(_Expand()).with_outputs("done", main="files"))
      read = (expanded.files | "Reshuffle" >> beam.Reshuffle()
              | "Read" >> beam.MapTuple(lambda repo, path, full, header:
                                        read_file(repo, path, full, cfg, header)))
      return ((read, expanded.done) | "Merge" >> beam.Flatten()
              | "Route" >> beam.Map(_route).with_outputs(records.REJECTED, main="kept"))

  return _Ingest()
