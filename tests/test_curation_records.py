"""Record and rejection conventions (seedcoder_jax.curation.records)."""

import pytest

from seedcoder_jax.curation import records


def test_make_record_and_ids():
  r = records.make_record(kind="file", text="x = 1\n", repo="json", path="json/decoder.py",
                          language="python", sha256="ab")
  assert r["id"] == "file:json/json/decoder.py"
  assert r["sha256"] == "ab"
  assert records.check_record(r) is r
  assert records.record_id("repo", "json") == "repo:json"
  assert records.record_id("commit", "proj", "abc123") == "commit:proj@abc123"
  with pytest.raises(records.RecordError, match="kind='blob'"):
    records.make_record(kind="blob", text="")


def test_check_record_names_problem():
  with pytest.raises(records.RecordError, match=r"'file:a/b' lacks field\(s\) \['language'"):
    records.check_record({"id": "file:a/b", "text": "", "kind": "file", "repo": "a", "path": "b"})
  with pytest.raises(records.RecordError, match="field 'text' is bytes"):
    records.check_record({"id": "x", "text": b"", "language": "", "kind": "file", "repo": "",
                          "path": ""})


def test_reject_and_count():
  r = records.make_record(kind="file", text="", repo="a", path="b.py")
  rej = records.reject(r, "ingest", "empty")
  assert rej == {"id": "file:a/b.py", "stage": "ingest", "reason": "empty", "detail": ""}
  rejs = [rej, records.reject("file:a/c.py", "ingest", "empty"),
          records.reject("file:a/d.py", "dedup", "exact_duplicate", "file:a/b.py")]
  assert records.count_rejections(rejs) == {"dedup/exact_duplicate": 1, "ingest/empty": 2}
  with pytest.raises(records.RecordError, match="snake_case"):
    records.reject(r, "ingest", "Not Snake")
  tagged = records.tagged_rejection(rej)
  assert tagged.tag == records.REJECTED and tagged.value == rej
