"""Stage 7: commit records from git histories (the paper's commit data for continued pretraining).

Each non-merge commit of a repository becomes one record (kind "commit", id
"commit:<repo>@<sha>"; <repo> is the repository's directory name, or, where several inputs share
that name, the shortest tail of its path that tells them apart: `repo_names`). Its text is the
context the model conditions on, then the target it learns to write. The layout, fixed here
because phase-2 pretraining trains on it verbatim (the input pipeline applies no FIM to
commits), is plain text with one header line per section:

    === message ===
    <the commit message, stripped>
    === readme: <README path> ===          (only when the parent tree has a README)
    <the README at the parent commit, cut to max_readme_chars>
    === tree ===
    <one path per line: the parent commit's files, sorted, cut to max_tree_entries>
    === file: <path> ===                   (up to top_k sections: BM25 top files for the message)
    <that file at the parent commit, cut to max_file_chars>
    === changes ===
    <one line per changed file: "A path", "M path", "D path" (git's status letters)>
    === diff ===
    <git-style unified diffs of the changed files, in path order>

Everything before "=== changes ===" is the context (the paper's commit message, pre-commit
README, directory tree and top-5 retrieved files); "=== changes ===" and "=== diff ===" are the
target (changed paths and code changes). The section headers are plain text, not the tokenizer's
<commit_before>/<commit_msg>/<commit_after> special tokens: `Tokenizer.encode` never emits special
ids, so a layout built on them would silently become ordinary text.

Retrieval: BM25 (Lucene's variant, as bm25s computes it; checked against bm25s in the tests)
over the parent tree's text files (README excluded, it has its own
section), query = the commit message; both sides are split into identifier words (snake_case and
camelCase parts, lower-cased), so `parse_rating` in code matches "rating parser" in a message.

Decisions on edge cases (each rejection is counted under `stage="commits"` and its reason):
- merge commits (more than one parent): rejected "merge_commit" — their first-parent diff
  replays a branch whose own commits are already records;
- root commits: the parent tree is empty, so every file is "A"dded, README/tree/files are empty;
  such a commit is often a huge import and then falls to "huge_diff";
- "huge_diff": the diffs exceed max_diff_bytes (or max_changed_files files);
- "binary_diff": every changed file is binary (a NUL byte in its first 8000 bytes, git's rule);
  binary files inside an otherwise textual commit are listed in "=== changes ===" and their diff
  is git's one line "Binary files a/x and b/x differ";
- "no_changes": the tree equals the parent's (an empty commit);
- "unreadable_object": a commit, tree or blob that the object store cannot read;
- per repository (id "commit:<repo>"): "not_a_git_repo", "empty_repo" (no commit at HEAD).
"""

from __future__ import annotations

import collections
import dataclasses
import io
import os
import pathlib
import re
from typing import Any, Iterable, Iterator, Sequence

import apache_beam as beam
import numpy as np
from dulwich import diff_tree, errors as git_errors, patch
from dulwich.objects import S_ISGITLINK
from dulwich.repo import Repo

from seedcoder_jax.curation import records
from seedcoder_jax.input.source_files import LANGUAGES

STAGE = "commits"
SECTION = "=== {} ==="
_README_RE = re.compile(r"^readme(\.(md|rst|txt|markdown))?$", re.IGNORECASE)
_WORD_RE = re.compile(r"[A-Za-z][a-z]+|[A-Z]+(?![a-z])|\d+")
_STATUS = {"add": "A", "delete": "D", "modify": "M"}
# Errors dulwich raises for objects it cannot read (missing, corrupt, of the wrong type).
_UNREADABLE = (KeyError, git_errors.ObjectMissing, git_errors.ObjectFormatException,
               git_errors.ChecksumMismatch, git_errors.WrongObjectException,
               git_errors.NotTreeError, git_errors.NotBlobError, git_errors.NotCommitError,
               git_errors.FileFormatException, ValueError, OSError)


def project_repo() -> pathlib.Path:
  """The embedded default: this project's own git checkout (a clean clone of main has it)."""
  return pathlib.Path(__file__).resolve().parents[2]


@dataclasses.dataclass(frozen=True)
class CommitsConfig:
  """Stage 7 settings. `repos` empty means the embedded default, `project_repo()`.

  Attributes:
    repos: paths of git repositories (working trees or bare).
    ref: the ref whose history is read (first-parent and merged history, newest first).
    max_commits: commits read per repository (newest first), merges and rejected ones included.
    top_k: files retrieved by BM25 into the context.
    max_diff_bytes: a commit whose diffs are larger is rejected "huge_diff".
    max_changed_files: a commit touching more files is rejected "huge_diff".
    max_file_bytes: larger (or binary) parent files are not indexed for retrieval.
    max_file_chars: each retrieved file is cut to this many characters in the context.
    max_readme_chars: the README is cut to this many characters.
    max_tree_entries: the directory tree lists at most this many paths (then "... N more").
  """
  repos: tuple[str, ...] = ()
  ref: str = "HEAD"
  max_commits: int = 200
  top_k: int = 5
  max_diff_bytes: int = 100_000
  max_changed_files: int = 50
  max_file_bytes: int = 200_000
  max_file_chars: int = 4_000
  max_readme_chars: int = 4_000
  max_tree_entries: int = 300

  def __post_init__(self):
    object.__setattr__(self, "repos", tuple(str(r) for r in self.repos))
    for name in ("max_commits", "top_k", "max_diff_bytes", "max_changed_files", "max_file_bytes",
                 "max_file_chars", "max_readme_chars", "max_tree_entries"):
      v = getattr(self, name)
      if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 0:
        raise ValueError(f"CommitsConfig.{name} must be a non-negative int, got {v!r}")
    if not self.ref:
      raise ValueError("CommitsConfig.ref must name a ref, e.g. 'HEAD'")

  @classmethod
  def from_dict(cls, d: dict | Any) -> "CommitsConfig":
    """From a dict or ConfigDict; unknown keys are refused, naming them."""
    d = dict(d.to_dict() if hasattr(d, "to_dict") else d)
    unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
      raise ValueError(f"unknown commits config key(s): {', '.join(unknown)} "
                       f"(known: {', '.join(f.name for f in dataclasses.fields(cls))})")
    if "repos" in d:
      repos = d["repos"]
      d["repos"] = (repos,) if isinstance(repos, (str, os.PathLike)) else tuple(repos)
    return cls(**d)

  def input_repos(self) -> tuple[str, ...]:
    return self.repos or (str(project_repo()),)


def repo_names(paths: Sequence[str]) -> dict[str, str]:
  """Each repository path -> the name in its records' ids and `repo` field, unique among `paths`.

  The directory's name, unless another input's resolved path ends the same way: then the
  shortest tail of the resolved path that differs ("/a/proj", "/b/proj" -> "a/proj", "b/proj").
  The same repository given twice is refused (its commits would be read twice).
  """
  parts = {p: pathlib.Path(p).resolve().parts for p in paths}
  seen: dict[tuple, str] = {}
  for p, ps in parts.items():
    if ps in seen and seen[ps] != p:
      raise ValueError(f"commits.repos: {seen[ps]!r} and {p!r} are the same repository")
    seen[ps] = p
  out = {}
  for p, ps in parts.items():
    k = 1
    while k < len(ps) and any(q != p and o[-k:] == ps[-k:] for q, o in parts.items()):
      k += 1
    out[p] = pathlib.PurePosixPath(*ps[-k:]).as_posix()
  return out


def words(text: str) -> list[str]:
  """Identifier-aware BM25 tokens: "parseRating(x_max)" -> ["parse", "rating", "max"]."""
  return [w.lower() for w in _WORD_RE.findall(text) if len(w) > 1]


def language_of(paths: Sequence[str]) -> str:
  """The most frequent language among `paths` by extension (ties: first seen), else "text"."""
  counts = collections.Counter(LANGUAGES[s] for s in (pathlib.PurePosixPath(p).suffix for p in paths)
                               if s in LANGUAGES)
  return counts.most_common(1)[0][0] if counts else "text"


def bm25_scores(query: Sequence[str], counts: Sequence[dict], k1: float = 1.5,
                b: float = 0.75) -> np.ndarray:
  """BM25 (Lucene's variant, bm25s's default) of each doc for `query`: float64 [N].

  score(d) = sum over query words t (repeats included) of idf(t) * tf / (tf + k1 * (1 - b + b * |d| / avgdl)),
  idf(t) = log(1 + (N - df + 0.5) / (df + 0.5)). Computed here from per-doc word counts (which a
  reader caches per blob) because building a bm25s index per commit dominated the stage's time;
  tests check these scores against bm25s.
  """
  n = len(counts)
  if n == 0:
    return np.zeros(0)
  lens = np.array([sum(c.values()) for c in counts], np.float64)
  norm = k1 * (1.0 - b + b * lens / max(lens.mean(), 1e-9))
  scores = np.zeros(n)
  for t, times in collections.Counter(query).items():  # a repeated query word counts again
    tf = np.array([c.get(t, 0) for c in counts], np.float64)
    df = np.count_nonzero(tf)
    if df:
      scores += times * np.log(1.0 + (n - df + 0.5) / (df + 0.5)) * tf / (tf + norm)
  return scores


def bm25_top_k(query: str, docs: Sequence[str], k: int) -> list[int]:
  """Indices of the (at most) k docs that BM25 ranks highest for `query`, best first.

  Docs with a zero score (no shared word) are left out, so a message with no overlap retrieves
  nothing rather than arbitrary files. Ties keep document order.
  """
  return top_k(bm25_scores(words(query), [collections.Counter(words(d)) for d in docs]), k)


def top_k(scores: np.ndarray, k: int) -> list[int]:
  order = np.argsort(-scores, kind="stable")[:k]
  return [int(i) for i in order if scores[i] > 0]


def _cut(text: str, n: int) -> str:
  return text if len(text) <= n else text[:n] + f"\n... ({len(text) - n} more characters)"


def format_commit(message: str, readme: tuple[str, str] | None, tree: Sequence[str],
                  files: Sequence[tuple[str, str]], changes: Sequence[tuple[str, str]],
                  diff: str, cfg: CommitsConfig) -> str:
  """The record text (layout in the module docstring). Pure: strings in, string out."""
  out = [SECTION.format("message"), message.strip()]
  if readme is not None:
    out += [SECTION.format(f"readme: {readme[0]}"), _cut(readme[1], cfg.max_readme_chars).rstrip()]
  listed = list(tree[:cfg.max_tree_entries])
  if len(tree) > len(listed):
    listed.append(f"... ({len(tree) - len(listed)} more)")
  out += [SECTION.format("tree"), *listed]
  for path, text in files:
    out += [SECTION.format(f"file: {path}"), _cut(text, cfg.max_file_chars).rstrip()]
  out += [SECTION.format("changes"), *(f"{s} {p}" for s, p in changes)]
  out += [SECTION.format("diff"), diff.rstrip()]
  return "\n".join(out) + "\n"


class RepoReader:
  """Reads one repository's commits into records; caches decoded blobs across commits."""

  def __init__(self, path: str, cfg: CommitsConfig, name: str | None = None):
    """name: the repository's name in ids (repo_names), default its directory's name."""
    self.path = str(path)
    self.name = name or pathlib.Path(path).resolve().name
    self.cfg = cfg
    self.repo = Repo(self.path)  # NotGitRepository for a path that is not one
    self._blobs: dict[bytes, str | None] = {}
    self._counts: dict[tuple[str, bytes], collections.Counter] = {}

  def commit_ids(self) -> list[bytes]:
    """Newest-first shas under cfg.ref, at most max_commits. KeyError: no commit there."""
    head = self.repo.refs[self.cfg.ref.encode()]
    walker = self.repo.get_walker(include=[head], max_entries=self.cfg.max_commits)
    return [entry.commit.id for entry in walker]

  def _text(self, sha: bytes) -> str | None:
    """A blob decoded as UTF-8 text, or None when binary, too big or not UTF-8 (cached)."""
    if sha not in self._blobs:
      data = self.repo.object_store[sha].as_raw_string()
      text = None
      if len(data) <= self.cfg.max_file_bytes and not patch.is_binary(data):
        try:
          text = data.decode("utf-8")
        except UnicodeDecodeError:
          pass
      if len(self._blobs) > 20_000:  # bounded: long histories of big repos
        self._blobs.clear()
        self._counts.clear()
      self._blobs[sha] = text
    return self._blobs[sha]

  def record(self, sha: bytes) -> dict:
    """The record of commit `sha`, or a rejection dict (records.reject) saying why not."""
    rid = f"commit:{self.name}@{sha.decode()}"
    store = self.repo.object_store
    try:
      commit = store[sha]
      if len(commit.parents) > 1:
        return records.reject(rid, STAGE, "merge_commit", f"{len(commit.parents)} parents")
      parent_tree = store[commit.parents[0]].tree if commit.parents else None
      changes = [c for c in diff_tree.tree_changes(store, parent_tree, commit.tree)
                 if not S_ISGITLINK((c.new or c.old).mode or 0)]
      if not changes:
        return records.reject(rid, STAGE, "no_changes", "tree equals the parent's")
      if len(changes) > self.cfg.max_changed_files:
        return records.reject(rid, STAGE, "huge_diff",
                              f"{len(changes)} changed files > max_changed_files "
                              f"{self.cfg.max_changed_files}")
      changes.sort(key=lambda c: (c.new.path if c.new and c.new.path else c.old.path))
      buf, binary, status = io.BytesIO(), 0, []
      for c in changes:
        old = (c.old.path, c.old.mode, c.old.sha) if c.old and c.old.path else (None, None, None)
        new = (c.new.path, c.new.mode, c.new.sha) if c.new and c.new.path else (None, None, None)
        path = (new[0] or old[0]).decode("utf-8", "replace")
        status.append((_STATUS.get(c.type, "M"), path))
        blobs = [store[s].as_raw_string() for s in (old[2], new[2]) if s is not None]
        binary += any(patch.is_binary(b) for b in blobs)
        patch.write_object_diff(buf, store, old, new)
        if buf.tell() > self.cfg.max_diff_bytes:
          return records.reject(rid, STAGE, "huge_diff",
                                f"diff > max_diff_bytes {self.cfg.max_diff_bytes}")
      if binary == len(changes):
        return records.reject(rid, STAGE, "binary_diff", f"{binary} binary file(s), no text diff")
      diff = buf.getvalue().decode("utf-8", "replace")
      message = commit.message.decode("utf-8", "replace")
      readme, tree, files = self._context(parent_tree, message)
    except _UNREADABLE as e:
      return records.reject(rid, STAGE, "unreadable_object", f"{type(e).__name__}: {e}")
    text = format_commit(message, readme, tree, files, status, diff, self.cfg)
    return {"id": rid, "text": text, "language": language_of([p for _, p in status]),
            "kind": "commit", "repo": self.name, "path": ",".join(p for _, p in status),
            "sha": sha.decode(), "parent": commit.parents[0].decode() if commit.parents else ""}

  def _context(self, tree_id, message: str):
    """(README (path, text) or None, sorted tree paths, BM25 top files) at the parent tree."""
    if tree_id is None:
      return None, [], []
    entries = sorted((e for e in self.repo.object_store.iter_tree_contents(tree_id)
                      if not S_ISGITLINK(e.mode)), key=lambda e: e.path)
    paths = [e.path.decode("utf-8", "replace") for e in entries]
    readme = None
    # The top-level README (the shortest path wins over e.g. docs/README.md).
    for e, p in zip(entries, paths):
      if "/" not in p and _README_RE.match(p):
        text = self._text(e.sha)
        if text is not None:
          readme = (p, text)
          break
    docs = [(p, e.sha, self._text(e.sha)) for e, p in zip(entries, paths)
            if readme is None or p != readme[0]]
    docs = [(p, sha, t) for p, sha, t in docs if t]
    # The path's words count too: a message naming "commits" finds curation/commits.py. Words
    # are cached per (path, blob): most files are unchanged from one commit to the next.
    for p, sha, t in docs:
      if (p, sha) not in self._counts:
        self._counts[(p, sha)] = collections.Counter(words(p + "\n" + t))
    top = top_k(bm25_scores(words(message), [self._counts[(p, sha)] for p, sha, _ in docs]),
                self.cfg.top_k)
    docs = [(p, t) for p, _, t in docs]
    return readme, paths, [docs[i] for i in top]


def repo_commits(path: str, cfg: CommitsConfig,
                 name: str | None = None) -> tuple[list[bytes], dict | None]:
  """(commit shas to read, None) or ([], a per-repository rejection)."""
  rid = f"commit:{name or pathlib.Path(path).resolve().name}"
  try:
    reader = RepoReader(path, cfg, name)
  except git_errors.NotGitRepository as e:
    return [], records.reject(rid, STAGE, "not_a_git_repo", f"{path}: {e}")
  try:
    return reader.commit_ids(), None
  except KeyError:
    return [], records.reject(rid, STAGE, "empty_repo", f"{path}: no commit at {cfg.ref}")
  except _UNREADABLE as e:
    return [], records.reject(rid, STAGE, "unreadable_object", f"{path}: {type(e).__name__}: {e}")


def iter_commit_records(cfg: CommitsConfig, repos: Iterable[str] | None = None
                        ) -> Iterator[tuple[bool, dict]]:
  """(kept, record-or-rejection) for every commit of every repository, without Beam."""
  paths = [str(p) for p in (cfg.input_repos() if repos is None else repos)]
  names = repo_names(paths)
  for path in paths:
    shas, rejection = repo_commits(path, cfg, names[path])
    if rejection is not None:
      yield False, rejection
      continue
    reader = RepoReader(path, cfg, names[path])
    for sha in shas:
      r = reader.record(sha)
      yield "stage" not in r, r


def check_inputs(cfg: CommitsConfig) -> None:
  """Refuses missing input paths (FileNotFoundError) and a repository given twice (ValueError)
  up front (a path that exists but is no git repo is counted)."""
  missing = [r for r in cfg.input_repos() if not os.path.exists(r)]
  if missing:
    raise FileNotFoundError(f"commits.repos: path(s) not found: {', '.join(missing)}")
  repo_names(cfg.input_repos())


class _ListCommits(beam.DoFn):
  def __init__(self, cfg: CommitsConfig):
    self.cfg = cfg
    self.names = repo_names(cfg.input_repos())

  def process(self, path: str):
    shas, rejection = repo_commits(path, self.cfg, self.names[path])
    if rejection is not None:
      yield beam.pvalue.TaggedOutput(records.REJECTED, rejection)
    for sha in shas:
      yield (path, sha.decode())


class _ReadCommit(beam.DoFn):
  """One commit -> record or rejection; a reader (and its blob cache) per repository per worker."""

  def __init__(self, cfg: CommitsConfig):
    self.cfg = cfg
    self.names = repo_names(cfg.input_repos())
    self._readers: dict[str, RepoReader] = {}

  def process(self, item):
    path, sha = item
    if path not in self._readers:
      self._readers[path] = RepoReader(path, self.cfg, self.names[path])
    r = self._readers[path].record(sha.encode())
    yield beam.pvalue.TaggedOutput(records.REJECTED, r) if "stage" in r else r


class CommitRecords(beam.PTransform):
  """PBegin -> {"kept": records, "rejected": rejections}; repos come from the config.

  Usage: `out = pipeline | "commits" >> CommitRecords(cfg)`; `out["kept"]`, `out["rejected"]`.
  Input paths are checked when the transform is built, before the pipeline runs.
  """

  def __init__(self, cfg: CommitsConfig):
    super().__init__()
    check_inputs(cfg)
    self.cfg = cfg

  def expand(self, pbegin):
    listed = (pbegin
              | "Repos" >> beam.Create(list(self.cfg.input_repos()))
              | "ListCommits" >> beam.ParDo(_ListCommits(self.cfg)).with_outputs(
                  records.REJECTED, main="commits"))
    read = (listed.commits
            | "Spread" >> beam.Reshuffle()
            | "ReadCommit" >> beam.ParDo(_ReadCommit(self.cfg)).with_outputs(
                records.REJECTED, main="kept"))
    rejected = ((listed[records.REJECTED], read[records.REJECTED])
                | "AllRejected" >> beam.Flatten())
    return {"kept": read.kept, "rejected": rejected}
