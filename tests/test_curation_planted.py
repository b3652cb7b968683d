"""Planted defects (curation/planted.py): each transform applies its defect and nothing else, the
pairwise accuracy and its Wilson interval against hand-computed values, the curation report's
sentence, and the pipeline's check with a fake oracle (no model). The real SmolLM2 check runs in
tests/test_curation_pipeline.py's slow oracle test."""

import ast
import io
import itertools
import math
import tokenize

import pytest

from seedcoder_jax.curation import oracle as oracle_lib
from seedcoder_jax.curation import planted, report

CODE = '''\
@functools.cache
def merge_counts(parts, *, limit=10):
    """Adds the counts of `parts`, key by key, keeping `limit` keys."""
    out = {}  # key -> total
    for part in parts:
        for key, n in sorted(part.items(), key=lambda kv: kv[0]):
            total = out.get(key, 0) + n
            out[key] = total
    # The largest first.
    ranked = sorted(out.items(), key=lambda kv: -kv[1])
    return dict(ranked[:limit])
'''
OTHER = '''\
class Table:
    """A table."""

    def __init__(self, rows):
        self.rows = rows
'''


def _strip_docstrings(tree):
  for node in ast.walk(tree):
    body = getattr(node, "body", None)
    if isinstance(body, list) and len(body) > 1 and isinstance(body[0], ast.Expr) and \
        isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
      node.body = body[1:]
  return tree


def _comments(code):
  return [t.string for t in tokenize.generate_tokens(io.StringIO(code).readline)
          if t.type == tokenize.COMMENT]


def _added_lines(original, degraded):
  """The lines of `degraded` that are not in `original`, when the rest is `original` in order."""
  o, extra = original.split("\n"), []
  i = 0
  for line in degraded.split("\n"):
    if i < len(o) and line == o[i]:
      i += 1
    else:
      extra.append(line)
  assert i == len(o), "the original's lines are not all kept in order"
  return extra


def _real_snippets(n=12):
  """Candidate functions of real stdlib files (the planted set's inputs)."""
  found = (planted.snippet(r["text"], 240) for r in planted.stdlib_records())
  return list(itertools.islice((s for s in found if s), n))


@pytest.fixture(scope="module")
def snippets():
  return [CODE] + _real_snippets()


def test_candidate_selection():
  assert planted.candidate_functions(CODE, 1000) == [CODE]
  assert planted.candidate_functions(CODE, 100) == []  # too long for the budget
  assert planted.candidate_functions(OTHER + "\n" + CODE, 1000) == [CODE]  # functions only
  no_doc = 'def f(x):\n    y = x + 1\n    z = y * 2\n    return z + y + x + 1000000000000000000\n'
  assert planted.candidate_functions(no_doc * 3, 1000) == []  # no docstring to strip
  assert planted.snippet("def broken(:\n", 1000) is None


def test_debug_prints(snippets):
  for code in snippets:
    out = planted.plant(code, "debug_prints")
    ast.parse(out)
    added = _added_lines(code, out)
    assert 1 <= len(added) <= 3 and all('print("DEBUG' in l for l in added), added
  out = planted.plant(CODE, "debug_prints")
  assert '    print("DEBUG: merge_counts called")' in out
  assert sum(l.strip().startswith('print("DEBUG') for l in out.split("\n")) == 3


def test_commented_out(snippets):
  for code in snippets:
    out = planted.plant(code, "commented_out", donor=OTHER)
    added = _added_lines(code, out)
    assert 3 <= len(added) <= 8 and all(l.lstrip().startswith("# ") for l in added), added
    assert ast.dump(ast.parse(out)) == ast.dump(ast.parse(code))  # the code runs the same
  out = planted.plant(CODE, "commented_out", donor=OTHER)
  assert "    # class Table:\n" in out and "    #     def __init__(self, rows):\n" in out


def test_repeated_code(snippets):
  for code in snippets:
    out = planted.plant(code, "repeated_code")
    first, second = ast.parse(out).body
    assert out.startswith(code) and second.name == first.name + "_2"
    second.name = first.name
    assert ast.dump(first) == ast.dump(second)


def test_hardcoded_data(snippets):
  for code in snippets:
    out = planted.plant(code, "hardcoded_data")
    fn = ast.parse(out).body[0]
    tables = [s for s in fn.body if isinstance(s, ast.Assign) and isinstance(s.value, ast.List)
              and len(s.value.elts) == 24]
    assert len(tables) == 1 and all(isinstance(e.value, int) for e in tables[0].value.elts)
    fn.body.remove(tables[0])
    assert ast.dump(fn) == ast.dump(ast.parse(code).body[0])
  assert planted.plant(CODE, "hardcoded_data", seed=1) != planted.plant(CODE, "hardcoded_data")


def test_syntax_error(snippets):
  for code in snippets:
    out = planted.plant(code, "syntax_error")
    with pytest.raises(SyntaxError):
      ast.parse(out)
    assert len(out) == len(code) - 1
    i = next(i for i, (a, b) in enumerate(zip(code, out)) if a != b)
    assert code[i] == ":" and code[:i] + code[i + 1:] == out  # one colon deleted, nothing else


def test_truncated(snippets):
  for code in snippets:
    out = planted.plant(code, "truncated")
    lines = out.rstrip("\n").split("\n")
    assert code.startswith(out) and len(lines) < len(code.rstrip("\n").split("\n"))
    assert ast.get_docstring(ast.parse(code).body[0]).split("\n")[0] in out  # docstring kept
  out = planted.plant(CODE, "truncated")
  assert out.endswith("    out = {}  # key -> total\n    for part in parts:\n")  # 5 of 11 lines


def test_no_comments(snippets):
  for code in snippets:
    out = planted.plant(code, "no_comments")
    tree = ast.parse(out)
    assert not _comments(out) and ast.get_docstring(tree.body[0]) is None
    assert ast.dump(tree) == ast.dump(_strip_docstrings(ast.parse(code)))
  assert planted.plant(CODE, "no_comments").split("\n")[2] == "    out = {}"


def test_bad_names(snippets):
  for code in snippets:
    out = planted.plant(code, "bad_names")
    before, after = ast.parse(code), ast.parse(out)
    assert after.body[0].name == "f"
    # Only identifiers change: the same tree once every name is blanked
    for tree in (before, after):
      for node in ast.walk(tree):
        for field in ("id", "arg", "name"):
          if isinstance(getattr(node, field, None), str) and not isinstance(node, ast.alias):
            setattr(node, field, "_")
    assert ast.dump(before) == ast.dump(after)
  out = planted.plant(CODE, "bad_names")
  assert "def f(a, *, limit=10)" not in out  # every parameter renamed ...
  assert "def f(a, *, b=10):" in out
  assert "sorted(d.items(), key=lambda h: h[0])" in out  # ... but not the keyword `key=`
  assert "c = {}  # key -> total" in out and "c[e] = j" in out and "return dict(k[:b])" in out


def test_plant_is_deterministic_and_refuses_unknown_kinds():
  for kind in planted.KINDS:
    assert planted.plant(CODE, kind, seed=3, donor=OTHER) == \
        planted.plant(CODE, kind, seed=3, donor=OTHER) != CODE
  with pytest.raises(ValueError, match="unknown planted defect"):
    planted.plant(CODE, "typos")


def test_build_pairs():
  recs = [{"id": "a", "path": "a.py", "language": "python", "text": OTHER + "\n" + CODE},
          {"id": "js", "path": "x.js", "language": "javascript", "text": CODE},
          {"id": "b", "path": "b.py", "language": "python", "text": "x = 1\n"},
          {"id": "c", "path": "c.py", "language": "python",
           "text": CODE.replace("merge_counts", "merge")}]
  pairs = planted.build_pairs(recs, n_files=5, max_chars=1000)
  assert [p["id"] for p in pairs[:2]] == ["a#debug_prints", "a#commented_out"]
  assert len(pairs) == 2 * len(planted.KINDS) and {p["path"] for p in pairs} == {"a.py", "c.py"}
  assert pairs[1]["degraded"].count("# class Table:") == 1  # the file's other code as donor
  one_each = planted.build_pairs(recs, n_files=2, max_chars=1000, all_kinds=False)
  assert [(p["path"], p["kind"]) for p in one_each] == [("a.py", "debug_prints"),
                                                        ("c.py", "commented_out")]
  with pytest.raises(ValueError, match="unknown planted defects"):
    planted.build_pairs(recs, n_files=1, max_chars=1000, kinds=("nope",))


def test_wilson_interval_hand_computed():
  # 8 of 10, z = 1.96: centre (0.8 + 0.19207) / 1.38415 = 0.71673, half-width
  # 1.96 * sqrt(0.016 + 0.00960) / 1.38415 = 0.22658 (the textbook (0.490, 0.943)).
  low, high = planted.wilson_interval(8, 10)
  assert math.isclose(low, 0.49016, abs_tol=1e-4) and math.isclose(high, 0.94331, abs_tol=1e-4)
  # 16 of 32: symmetric about 0.5, half-width 1.96 * sqrt(1/128 + 3.8415/4096) / 1.12005.
  low, high = planted.wilson_interval(16, 32)
  half = 1.959964 * math.sqrt(0.25 / 32 + 1.959964 ** 2 / (4 * 32 * 32)) / (1 + 1.959964 ** 2 / 32)
  assert math.isclose(0.5 - low, half, rel_tol=1e-6) and math.isclose(high - 0.5, half, rel_tol=1e-6)
  assert planted.wilson_interval(0, 0) == (0.0, 1.0)
  assert planted.wilson_interval(0, 5)[0] == 0.0 and planted.wilson_interval(5, 5)[1] == 1.0


def test_accuracy_hand_computed():
  got = planted.accuracy([(5, 3), (2, 4), (3, 3), (None, 1), (7, 6)])
  assert got["n"] == 4 and got["unrated"] == 1 and got["wins"] == 2 and got["ties"] == 1
  assert got["accuracy"] == 2.5 / 4
  assert got["ci95"] == list(planted.wilson_interval(2.5, 4))
  assert got["verdict"] == "not distinguishable from chance"
  assert planted.accuracy([(1, 0)] * 30 + [(0, 1)] * 2)["verdict"] == "better than chance"
  assert planted.accuracy([(0, 1)] * 30 + [(1, 0)] * 2)["verdict"].startswith("worse than chance")
  assert planted.accuracy([(None, 1)]) == {"n": 0, "unrated": 1, "wins": 0, "ties": 0,
                                           "accuracy": None, "ci95": [0.0, 1.0],
                                           "verdict": "no pairs rated"}


def test_rate_pairs_and_sentence_with_a_fake_rater():
  pairs = planted.build_pairs([{"id": "a", "path": "a.py", "language": "python", "text": CODE}],
                              n_files=1, max_chars=1000)
  calls = []

  def shorter_is_better(records):  # rates each distinct text once, in one call
    calls.append(len(records))
    return [-len(r["text"]) for r in records]

  result = planted.rate_pairs(pairs, shorter_is_better)
  assert calls == [1 + len(planted.KINDS)]
  wins = {k: r["wins"] for k, r in result["by_kind"].items()}
  # Right exactly where the defect makes the text longer.
  assert wins == {"debug_prints": 1, "commented_out": 1, "repeated_code": 1, "hardcoded_data": 1,
                  "syntax_error": 0, "truncated": 0, "no_comments": 0, "bad_names": 0}
  assert result["overall"]["accuracy"] == 0.5
  low, high = result["overall"]["ci95"]
  assert planted.sentence("oracle", result) == (
      f"The oracle ranks originals above planted defects in 50% of 8 pairs (95% CI "
      f"{100 * low:.0f}-{100 * high:.0f}%): not distinguishable from chance.")
  assert planted.sentence("x", planted.pairwise_accuracy(pairs, [None] * 8, [1.0] * 8)) == \
      "The x rated no planted pair on both sides (8 unrated)."


class FakeOracle:
  """Rates by the heuristic plus one point for a file that parses: no model."""
  name, model = "fake", "fake"

  def rate(self, prompts):
    out = []
    for m in prompts:
      code = m[0]["content"].split("```python\n", 1)[1].rsplit("\n```", 1)[0]
      try:
        ast.parse(code)
        bonus = 1.0
      except SyntaxError:
        bonus = 0.0
      from seedcoder_jax.input import source_files
      out.append(oracle_lib.Answer(min(10.0, source_files.heuristic_score(code) / 2 + bonus), "ok"))
    return out


def test_pipeline_check_with_a_fake_oracle_and_the_report_line(tmp_path, monkeypatch):
  from seedcoder_jax.curation import oracle_backends
  made = []
  monkeypatch.setattr(oracle_backends, "make_backend", lambda cfg: made.append(cfg) or FakeOracle())
  cfg = oracle_lib.OracleConfig(max_code_chars=1200, planted_pairs=9,
                                cache_path=str(tmp_path / "cache.sqlite"))
  sample = [{"id": "a", "path": "pkg/a.py", "language": "python", "text": OTHER + "\n" + CODE},
            {"id": "j", "path": "x.js", "language": "javascript", "text": "let x = 1;\n"}]
  got = planted.pipeline_check(cfg, sample)["planted"]
  assert got["n_pairs"] == got["n_files"] == 9 and got["from_sample"] == 1
  assert got["kinds"] == list(planted.KINDS) and got["snippet_chars"] == 480
  assert made[0].max_code_chars == 1920 and made[0].max_prompt_tokens == 384 + planted.PROMPT_ROOM
  assert list(got["raters"]) == ["oracle", "heuristic"]
  oracle = got["raters"]["oracle"]
  assert oracle["overall"]["n"] == 9 and oracle["by_kind"]["syntax_error"]["wins"] == 1
  assert oracle["by_kind"]["debug_prints"]["n"] == 2  # 9 files, 8 kinds in turn
  assert len(oracle_lib.OracleCache(cfg.cache_path)) == 18  # every side's answer cached
  assert planted.pipeline_check(oracle_lib.OracleConfig(planted_pairs=0), sample) == {}
  # The report says it in a sentence per rater, and per defect kind.
  stats = {"input": 1, "kept": 1, "rejected": {}, "passes": {}, "score_source": "scorer",
           "planted": got}
  path = report.write_report(tmp_path, stats, [0] * report.SCORE_BINS, {}, [])
  page = path.read_text()
  assert "Planted defects" in page and oracle["sentence"] in page
  assert "<td>syntax_error</td><td>1.00 (n=1)</td>" in page


def test_config_value():
  with pytest.raises(ValueError, match="planted_pairs=-1"):
    oracle_lib.OracleConfig(planted_pairs=-1)
  import importlib.util
  import pathlib
  path = pathlib.Path(__file__).resolve().parents[1] / "configs" / "curation.py"
  spec = importlib.util.spec_from_file_location("curation_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  assert module.get_config("tiny").oracle.planted_pairs == 16
  assert module.get_config("full").oracle.planted_pairs == 64
