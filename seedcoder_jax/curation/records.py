"""Record and rejection conventions shared by every curation stage.

A record is a plain dict flowing through the Beam pipeline:

  id        stable unique string: "file:<repo>/<path>", "repo:<repo>", "commit:<repo>@<sha>",
            "web:<url-or-path>#<n>"
  text      the content (str)
  language  "python", "c", ... ("" where unknown, e.g. a web page before classification)
  kind      "file" | "repo" | "commit" | "web"
  repo      repository name ("" for web pages)
  path      path inside the repository (or the page's URL / file path)
  + stage fields added on the way (`sha256`, `oracle_score`, `score`, ...)

Every stage is a pure-Python function or small class plus a thin `beam.PTransform` wrapper. A
stage that can reject emits rejections (`reject(...)`) beside the kept records; in Beam a DoFn
yields `beam.pvalue.TaggedOutput(REJECTED, rejection)`. The pipeline counts rejections per
"<stage>/<reason>" in stats.json, where input = kept + sum(rejected) always holds.
"""

from __future__ import annotations

import re
from typing import Any, Iterable

REJECTED = "rejected"  # the Beam output tag of rejections
KINDS = ("file", "repo", "commit", "web")
RECORD_FIELDS = ("id", "text", "language", "kind", "repo", "path")
_SNAKE = re.compile(r"^[a-z][a-z0-9_]*$")


class RecordError(ValueError):
  """A malformed record or rejection; the message names the record id and the problem."""


def make_record(*, kind: str, text: str, repo: str = "", path: str = "", language: str = "",
                id: str | None = None, **fields: Any) -> dict:  # pylint: disable=redefined-builtin
  """A record dict with the standard fields; `id` defaults from kind, repo and path."""
  if kind not in KINDS:
    raise RecordError(f"kind={kind!r} is not one of {KINDS} (repo={repo!r}, path={path!r})")
  if id is None:
    id = record_id(kind, repo, path)
  record = {"id": id, "text": text, "language": language, "kind": kind, "repo": repo,
            "path": path}
  record.update(fields)
  return record


def record_id(kind: str, repo: str, path: str = "") -> str:
  """The conventional id: "file:<repo>/<path>", "repo:<repo>", "commit:<repo>@<path>", "web:<path>"."""
  if kind == "file":
    return f"file:{repo}/{path}"
  if kind == "repo":
    return f"repo:{repo}"
  if kind == "commit":
    return f"commit:{repo}@{path}"
  if kind == "web":
    return f"web:{path}"
  raise RecordError(f"kind={kind!r} is not one of {KINDS}")


def check_record(record: Any) -> dict:
  """Returns `record` if it has the standard fields with the right types; raises RecordError."""
  if not isinstance(record, dict):
    raise RecordError(f"record is a {type(record).__name__}, expected a dict with {RECORD_FIELDS}")
  rid = record.get("id", "<no id>")
  missing = [f for f in RECORD_FIELDS if f not in record]
  if missing:
    raise RecordError(f"record {rid!r} lacks field(s) {missing}")
  for f in RECORD_FIELDS:
    if not isinstance(record[f], str):
      raise RecordError(f"record {rid!r} field {f!r} is {type(record[f]).__name__}, expected str")
  if record["kind"] not in KINDS:
    raise RecordError(f"record {rid!r} kind={record['kind']!r} is not one of {KINDS}")
  return record


def reject(record_or_id: dict | str, stage: str, reason: str, detail: str = "") -> dict:
  """A rejection: {"id", "stage", "reason", "detail"}; reason is short snake_case."""
  rid = record_or_id["id"] if isinstance(record_or_id, dict) else record_or_id
  if not isinstance(rid, str) or not rid:
    raise RecordError(f"a rejection needs a record id, got {rid!r} (stage {stage!r})")
  if not _SNAKE.match(stage or "") or not _SNAKE.match(reason or ""):
    raise RecordError(f"stage {stage!r} and reason {reason!r} must be snake_case (record {rid!r})")
  return {"id": rid, "stage": stage, "reason": reason, "detail": str(detail)}


def rejection_key(rejection: dict) -> str:
  """The stats.json key of a rejection: "<stage>/<reason>"."""
  return f"{rejection['stage']}/{rejection['reason']}"


def count_rejections(rejections: Iterable[dict]) -> dict[str, int]:
  """{"<stage>/<reason>": n}, keys sorted."""
  counts: dict[str, int] = {}
  for r in rejections:
    k = rejection_key(r)
    counts[k] = counts.get(k, 0) + 1
  return dict(sorted(counts.items()))


def tagged_rejection(rejection: dict):
  """`rejection` wrapped for a Beam DoFn's rejected output (imports Beam lazily)."""
  import apache_beam as beam
  return beam.pvalue.TaggedOutput(REJECTED, rejection)
