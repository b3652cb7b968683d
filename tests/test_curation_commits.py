"""Stage 7, commit records: layout, BM25 retrieval and every rejection on a repository built here."""

import collections
import shutil

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.util import assert_that, equal_to
from dulwich.index import commit_tree
from dulwich.objects import Blob, Commit
from dulwich.repo import Repo

from seedcoder_jax.curation import commits
from seedcoder_jax.curation.commits import CommitsConfig

README = b"# Tiny calculator\n\nEvaluates arithmetic expressions typed by the user.\n"
CALC = b"def add(a, b):\n  return a + b\n\n\ndef sub(a, b):\n  return a - b\n"
PARSER = (b"import re\n\n\ndef tokenize_expression(text):\n  \"\"\"Tokens of an arithmetic expression.\"\"\"\n"
          b"  return re.findall(r'\\d+\\.?\\d*|[-+*/()]', text)\n")
PARSER_FIXED = PARSER.replace(b"\\d+\\.?\\d*", b"\\d+(?:\\.\\d+)?") + b"\n\ndef round_number(x):\n  return round(x, 6)\n"
STRINGS = b"def shout(s):\n  return s.upper()\n\n\ndef whisper(s):\n  return s.lower()\n"
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 4


def _commit(repo, files, parents, message, t):
  store = repo.object_store
  entries = []
  for path, data in sorted(files.items()):
    blob = Blob.from_string(data)
    store.add_object(blob)
    entries.append((path.encode(), blob.id, 0o100644))
  c = Commit()
  c.tree = commit_tree(store, entries)
  c.parents = parents
  c.author = c.committer = b"Test <test@example.com>"
  c.author_time = c.commit_time = 1_700_000_000 + t
  c.author_timezone = c.commit_timezone = 0
  c.message = message.encode()
  store.add_object(c)
  return c.id


@pytest.fixture(scope="module")
def history(tmp_path_factory):
  """A repo with a root commit, a parser fix, a binary, a huge diff, an empty commit and a merge."""
  root = tmp_path_factory.mktemp("calc")
  repo = Repo.init(str(root))
  files = {"README.md": README, "calc.py": CALC, "parser.py": PARSER, "util/strings.py": STRINGS}
  shas = {"root": _commit(repo, files, [], "Initial calculator", 0)}
  files["parser.py"] = PARSER_FIXED
  shas["fix"] = _commit(repo, files, [shas["root"]],
                        "Fix decimal numbers in the expression tokenizer\n\nAdd round_number.", 1)
  side = dict(files, **{"util/strings.py": STRINGS + b"\n\ndef title(s):\n  return s.title()\n"})
  shas["side"] = _commit(repo, side, [shas["fix"]], "Add title case helper", 2)
  files["logo.png"] = PNG
  shas["binary"] = _commit(repo, files, [shas["fix"]], "Add logo", 3)
  shas["empty"] = _commit(repo, files, [shas["binary"]], "Empty commit", 4)
  files["big.txt"] = b"".join(b"line %d of a large generated table\n" % i for i in range(3000))
  shas["huge"] = _commit(repo, files, [shas["empty"]], "Add data table", 5)
  merged = dict(files, **{"util/strings.py": side["util/strings.py"]})
  shas["merge"] = _commit(repo, merged, [shas["huge"], shas["side"]], "Merge title helper", 6)
  repo.refs[b"refs/heads/master"] = shas["merge"]
  repo.refs.set_symbolic_ref(b"HEAD", b"refs/heads/master")
  return root, {k: v.decode() for k, v in shas.items()}


CFG = CommitsConfig(max_diff_bytes=50_000, top_k=2)


def _by_sha(root, cfg=CFG):
  out = {}
  for kept, r in commits.iter_commit_records(cfg, [str(root)]):
    out[r["id"].split("@")[-1]] = (kept, r)
  return out


def test_record_layout_and_bm25(history):
  root, shas = history
  out = _by_sha(root)
  kept, r = out[shas["fix"]]
  assert kept, r
  assert r["id"] == f"commit:{root.name}@{shas['fix']}"
  assert (r["kind"], r["language"], r["repo"], r["path"]) == ("commit", "python", root.name, "parser.py")
  text = r["text"]
  headers = [l for l in text.splitlines() if l.startswith("=== ")]
  # BM25 (top_k=2): parser.py shares "expression", "round", "number" with the message, calc.py
  # only "add"; util/strings.py shares nothing and is not retrieved.
  assert headers == ["=== message ===", "=== readme: README.md ===", "=== tree ===",
                     "=== file: parser.py ===", "=== file: calc.py ===", "=== changes ===",
                     "=== diff ==="], headers
  section = lambda name, nxt: text.split(f"=== {name} ===\n")[1].split(f"=== {nxt}")[0]
  assert section("message", "readme") == "Fix decimal numbers in the expression tokenizer\n\nAdd round_number.\n"
  assert section("readme: README.md", "tree") == README.decode()
  assert section("tree", "file") == "README.md\ncalc.py\nparser.py\nutil/strings.py\n"
  assert section("file: parser.py", "file") == PARSER.decode()
  assert section("file: calc.py", "changes") == CALC.decode()  # the pre-commit version
  assert section("changes", "diff") == "M parser.py\n"
  diff = text.split("=== diff ===\n")[1]
  assert diff.startswith("diff --git a/parser.py b/parser.py\n")
  assert "--- a/parser.py\n+++ b/parser.py\n" in diff
  assert "+def round_number(x):\n" in diff and "-  return re.findall(r'\\d+\\.?\\d*|" in diff


def test_bm25_scores_match_bm25s():
  import bm25s
  docs = ["parse the rating from the answer text", "rating rating rating scale", "tokenize code",
          "the answer is forty two", "parse parse tree"]
  corpus = [commits.words(d) for d in docs]
  ref = bm25s.BM25()  # Lucene's BM25, k1=1.5, b=0.75
  ref.index(corpus, show_progress=False)
  for q in (["parse", "rating"], ["answer", "tree", "tree"], ["code"]):
    np.testing.assert_allclose(
        commits.bm25_scores(q, [collections.Counter(d) for d in corpus]), ref.get_scores(q),
        rtol=1e-5)


def test_bm25_ranks_by_shared_words():
  docs = ["def add(a, b): return a + b", "def tokenize_expression(text): parse tokens",
          "the user interface colour theme"]
  assert commits.bm25_top_k("Tokenize expressions faster", docs, 5) == [1]
  assert commits.bm25_top_k("colour of the parse tree", docs, 2) == [2, 1]
  assert commits.bm25_top_k("nothing shared here", docs, 5) == []
  assert commits.words("parseRating(x_max) HTTPServer") == ["parse", "rating", "max", "http", "server"]


def test_root_merge_binary_huge_empty(history):
  root, shas = history
  out = _by_sha(root)
  assert len(out) == 7  # every commit of the history, none lost
  kept, r = out[shas["root"]]
  assert kept and "=== readme" not in r["text"] and "=== file:" not in r["text"]
  assert r["text"].split("=== changes ===\n")[1].split("===")[0] == (
      "A README.md\nA calc.py\nA parser.py\nA util/strings.py\n")
  assert out[shas["side"]][0] and out[shas["side"]][1]["language"] == "python"
  reasons = {k: (r["stage"], r["reason"]) for k, (kept, r) in out.items() if not kept}
  assert reasons == {shas["binary"]: ("commits", "binary_diff"), shas["huge"]: ("commits", "huge_diff"),
                     shas["empty"]: ("commits", "no_changes"),
                     shas["merge"]: ("commits", "merge_commit")}
  # A bigger limit keeps the huge commit; max_commits bounds the walk from HEAD.
  assert _by_sha(root, CommitsConfig(max_diff_bytes=10**6))[shas["huge"]][0]
  assert len(_by_sha(root, CommitsConfig(max_commits=3))) == 3


def test_repo_level_rejections(history, tmp_path):
  root, shas = history
  plain = tmp_path / "plain"
  plain.mkdir()
  empty = tmp_path / "empty"
  Repo.init(str(empty), mkdir=True)
  broken = tmp_path / "broken"
  shutil.copytree(root, broken)
  blob = Blob.from_string(PARSER_FIXED).id.decode()
  (broken / ".git" / "objects" / blob[:2] / blob[2:]).unlink()
  got = [(kept, r["id"], r.get("reason")) for kept, r in
         commits.iter_commit_records(CFG, [str(plain), str(empty), str(broken)])]
  assert got[:2] == [(False, "commit:plain", "not_a_git_repo"), (False, "commit:empty", "empty_repo")]
  broken_reasons = {rid.split("@")[1]: reason for kept, rid, reason in got[2:]}
  # Commits that read the deleted blob (the fix's new parser.py, later ones' trees) are counted.
  assert broken_reasons[shas["fix"]] == "unreadable_object"
  assert broken_reasons[shas["root"]] is None
  assert len(got) == 2 + 7


def test_same_named_repositories_get_distinct_ids(history, tmp_path):
  """Two repositories in directories of the same name (forks sharing history) yield records with
  distinct ids: the shortest path tail that tells them apart names each."""
  root, shas = history
  a, b = tmp_path / "alice" / "calc", tmp_path / "bob" / "calc"
  for dst in (a, b):
    shutil.copytree(root, dst)
  assert commits.repo_names([str(a), str(b), str(root)]) == {
      str(a): "alice/calc", str(b): "bob/calc", str(root): root.name}
  got = list(commits.iter_commit_records(CFG, [str(a), str(b)]))
  ids = [r["id"] for _, r in got]
  assert len(ids) == 2 * 7 and len(set(ids)) == len(ids)
  assert f"commit:alice/calc@{shas['fix']}" in ids and f"commit:bob/calc@{shas['fix']}" in ids
  assert {r["repo"] for kept, r in got if kept} == {"alice/calc", "bob/calc"}
  # Through Beam too (the DoFns name repositories the same way), and one repository given twice
  # (here through a symlink) is refused up front.
  cfg = CommitsConfig(repos=(str(a), str(b)), max_diff_bytes=50_000)
  with beam.Pipeline() as p:
    out = p | commits.CommitRecords(cfg)
    assert_that(out["kept"] | beam.Map(lambda r: r["id"]),
                equal_to([r["id"] for k, r in got if k]))
  (tmp_path / "link").symlink_to(a)
  with pytest.raises(ValueError, match="same repository"):
    commits.CommitRecords(CommitsConfig(repos=(str(a), str(tmp_path / "link"))))


def test_config_from_dict():
  cfg = CommitsConfig.from_dict({"repos": "/x", "max_commits": 5})
  assert cfg.repos == ("/x",) and cfg.max_commits == 5
  with pytest.raises(ValueError, match="max_comits"):
    CommitsConfig.from_dict({"max_comits": 5})
  with pytest.raises(ValueError, match="top_k"):
    CommitsConfig(top_k=-1)
  with pytest.raises(FileNotFoundError, match="/no/such/repo"):
    commits.CommitRecords(CommitsConfig(repos=("/no/such/repo",)))


def test_beam_transform(history, tmp_path):
  root, shas = history
  plain = tmp_path / "not_git"
  plain.mkdir()
  cfg = CommitsConfig(repos=(str(root), str(plain)), max_diff_bytes=50_000)
  expected = _by_sha(root, cfg)
  with beam.Pipeline() as p:
    out = p | commits.CommitRecords(cfg)
    assert_that(out["kept"] | beam.Map(lambda r: r["id"]),
                equal_to([r["id"] for k, r in expected.values() if k]), label="kept")
    assert_that(out["rejected"] | beam.Map(lambda r: (r["id"], r["reason"])),
                equal_to([(r["id"], r["reason"]) for k, r in expected.values() if not k]
                         + [("commit:not_git", "not_a_git_repo")]), label="rejected")


def test_project_history_default():
  """The embedded default: this project's own history (a clean clone of main has it)."""
  if not (commits.project_repo() / ".git").exists():
    pytest.skip(f"no git history at {commits.project_repo()} (prerequisite: a git clone)")
  out = list(commits.iter_commit_records(CommitsConfig(max_commits=5)))
  # Every commit walked is a record or a rejection (a shallow clone may hold fewer than 5).
  assert len(out) == len(list(Repo(str(commits.project_repo())).get_walker(max_entries=5)))
  kept = [r for k, r in out if k]
  assert kept, out
  assert all(r["text"].startswith("=== message ===\n") and "\n=== diff ===\n" in r["text"]
             for r in kept)
