"""Planted defects: does a quality rater rank a real function above a copy with one flaw added?

An unlabelled sample only says whether two raters agree; the planted set says whether a rater
sees quality at all. From real Python files (one top-level function with a docstring per file,
short enough that both sides of a pair fit the oracle's prompt whole) `build_pairs` makes
(original, degraded) pairs, the degraded side carrying exactly one defect that the oracle
prompt's rubric (data/prompts/oracle_quality.txt) names:

  debug_prints    Clarity: debug print statements (`print("DEBUG ...")` after assignments)
  commented_out   Clarity: a commented-out code block (another function's lines, `# `-prefixed)
  repeated_code   Clarity: repeated code (the function pasted again as `<name>_2`)
  hardcoded_data  Reusability: excessive hard-coded data (a 24-number table inside the body)
  syntax_error    Reusability: a syntax error (one block-opening colon deleted)
  truncated       Reusability: incomplete (the function cut after about half of its lines)
  no_comments     Readability: no docstrings or comments (all stripped, the code unchanged)
  bad_names       Readability: meaningless names (function, parameters, locals -> f, a, b, ...)

Each pair is labelled "original is better". `pairwise_accuracy` is the share of rated pairs
where the rater scores the original higher (ties count half), with a Wilson 95 % interval; a
rater is "better than chance" only when the interval's lower end is above 0.5. The transforms
are pure, deterministic functions of (code, seed); tests/test_curation_planted.py checks that
each applies its defect and leaves the rest of the code as it was.
"""

from __future__ import annotations

import ast
import io
import keyword
import math
import random
import sys
import tokenize
from typing import Callable, Sequence

KINDS = ("debug_prints", "commented_out", "repeated_code", "hardcoded_data", "syntax_error",
         "truncated", "no_comments", "bad_names")
Z95 = 1.959963984540054  # the normal quantile of a two-sided 95 % interval


# ----------------------------------------------------------------------------- snippets


def _function_source(lines: list[str], node: ast.AST) -> str:
  start = min([d.lineno for d in node.decorator_list] + [node.lineno])
  return "\n".join(lines[start - 1:node.end_lineno]) + "\n"


def _top_functions(text: str) -> list[ast.AST]:
  try:
    tree = ast.parse(text)
  except (SyntaxError, ValueError):
    return []
  return [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


def _top_sources(text: str) -> list[str]:
  """The source of every top-level function and class of a file."""
  lines = text.split("\n")
  return [_function_source(lines, n) for n in ast.parse(text).body
          if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]


def candidate_functions(text: str, max_chars: int, min_chars: int = 120) -> list[str]:
  """The top-level functions of a Python file that every transform applies to: a docstring, two
  or more statements after it, something to rename, between min_chars and max_chars long."""
  lines = text.split("\n")
  out = []
  for node in _top_functions(text):
    src = _function_source(lines, node)
    if not min_chars <= len(src) <= max_chars or ast.get_docstring(node) is None:
      continue
    if len(node.body) < 3 or not _renamable(_top_functions(src)[0]) or not _colons(src):
      continue
    out.append(src)
  return out


def snippet(text: str, max_chars: int) -> str | None:
  """The longest candidate function of a file (None when it has none)."""
  found = candidate_functions(text, max_chars)
  return max(found, key=len) if found else None


# ----------------------------------------------------------------------------- helpers


def _indent(line: str) -> str:
  return line[:len(line) - len(line.lstrip())]


def _body_start(code: str) -> tuple[int, str]:
  """(0-based line index after the function's docstring, the body's indentation)."""
  fn = _top_functions(code)[0]
  lines = code.split("\n")
  first = fn.body[1] if ast.get_docstring(fn) is not None else fn.body[0]
  return fn.body[0].end_lineno, _indent(lines[first.lineno - 1])


def _insert(code: str, at: int, new_lines: Sequence[str]) -> str:
  lines = code.split("\n")
  return "\n".join(lines[:at] + list(new_lines) + lines[at:])


def _tokens(code: str) -> list[tokenize.TokenInfo]:
  return list(tokenize.generate_tokens(io.StringIO(code).readline))


def _colons(code: str) -> list[tokenize.TokenInfo]:
  """The block-opening colons: `:` at bracket depth 0 that end their line."""
  toks, depth, out = _tokens(code), 0, []
  for i, t in enumerate(toks):
    if t.type == tokenize.OP and t.string in "([{":
      depth += 1
    elif t.type == tokenize.OP and t.string in ")]}":
      depth -= 1
    elif t.type == tokenize.OP and t.string == ":" and depth == 0 and \
        toks[i + 1].type in (tokenize.NEWLINE, tokenize.COMMENT):
      out.append(t)
  return out


def _renamable(fn: ast.AST) -> list[str]:
  """The function's name, then its parameters and local variables in order of appearance
  (self, cls and global/nonlocal names stay)."""
  names, fixed = [fn.name], {"self", "cls"}
  for node in ast.walk(fn):
    if isinstance(node, (ast.Global, ast.Nonlocal)):
      fixed.update(node.names)
  found = []
  for node in ast.walk(fn):
    if isinstance(node, ast.arg):
      found.append((node.lineno, node.col_offset, node.arg))
    elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
      found.append((node.lineno, node.col_offset, node.id))
  for _, _, name in sorted(found):
    if name not in fixed and name not in names:
      names.append(name)
  return names if len(names) > 1 else []


def _replace_spans(code: str, spans: list[tuple[int, int, int, str]]) -> str:
  """spans: (row 1-based, col start, col end, new text), on single lines."""
  lines = code.split("\n")
  for row, c0, c1, new in sorted(spans, reverse=True):
    lines[row - 1] = lines[row - 1][:c0] + new + lines[row - 1][c1:]
  return "\n".join(lines)


# ----------------------------------------------------------------------------- transforms


def debug_prints(code: str, rng: random.Random, donor: str = "") -> str:
  """`print("DEBUG ...")` on entry and after up to two simple assignments."""
  fn = _top_functions(code)[0]
  lines = code.split("\n")
  inserts = {}
  at, indent = _body_start(code)
  inserts[at] = [f'{indent}print("DEBUG: {fn.name} called")']
  assigns = []
  for node in ast.walk(fn):
    if isinstance(node, ast.Assign) and len(node.targets) == 1 and \
        isinstance(node.targets[0], ast.Name) and node.lineno > at:
      line, end = lines[node.lineno - 1], lines[node.end_lineno - 1]
      if not line[:node.col_offset].strip() and not end[node.end_col_offset:].strip():
        assigns.append(node)
  for node in sorted(rng.sample(assigns, min(2, len(assigns))), key=lambda n: n.lineno):
    name = node.targets[0].id
    inserts.setdefault(node.end_lineno, []).append(
        f'{" " * node.col_offset}print("DEBUG {name} =", {name})')
  for row in sorted(inserts, reverse=True):
    code = _insert(code, row, inserts[row])
  return code


def commented_out(code: str, rng: random.Random, donor: str = "") -> str:
  """The first lines of other code (`donor`, else this function), commented out, at the top of
  the body: 3 lines at least, then more up to 8 lines or 240 characters."""
  at, indent = _body_start(code)
  block = []
  for line in (l for l in (donor or code).rstrip("\n").split("\n") if l.strip()):
    if len(block) >= 8 or (len(block) >= 3 and sum(map(len, block)) + len(line) > 240):
      break
    block.append(line)
  base = min(len(_indent(l)) for l in block)
  return _insert(code, at, [f"{indent}# {l[base:]}".rstrip() for l in block])


def repeated_code(code: str, rng: random.Random, donor: str = "") -> str:
  """The function pasted again under the name `<name>_2`."""
  fn = _top_functions(code)[0]
  row = fn.lineno - 1
  lines = code.rstrip("\n").split("\n")
  copy = list(lines)
  copy[row] = copy[row].replace(f"def {fn.name}(", f"def {fn.name}_2(", 1)
  return "\n".join(lines + ["", ""] + copy) + "\n"


def hardcoded_data(code: str, rng: random.Random, donor: str = "") -> str:
  """A 24-number literal table assigned at the top of the body (never used; three digits each:
  SmolLM2's tokenizer spends a token per digit, and the pair must fit the prompt)."""
  at, indent = _body_start(code)
  values = [rng.randrange(100, 1000) for _ in range(24)]
  rows = [", ".join(str(v) for v in values[i:i + 8]) for i in range(0, 24, 8)]
  return _insert(code, at, [f"{indent}table = ["] + [f"{indent}    {r}," for r in rows]
                 + [f"{indent}]"])


def syntax_error(code: str, rng: random.Random, donor: str = "") -> str:
  """One block-opening colon (def, if, for, ...) deleted."""
  t = rng.choice(_colons(code))
  return _replace_spans(code, [(t.start[0], t.start[1], t.end[1], "")])


def truncated(code: str, rng: random.Random, donor: str = "") -> str:
  """The function cut after about half of its lines (at least one line after the docstring)."""
  lines = code.rstrip("\n").split("\n")
  at, _ = _body_start(code)
  keep = max(at + 1, len(lines) // 2)
  return "\n".join(lines[:min(keep, len(lines) - 1)]) + "\n"


def no_comments(code: str, rng: random.Random, donor: str = "") -> str:
  """Every docstring and comment removed (a docstring that is a body's only statement stays)."""
  tree = ast.parse(code)
  drop = set()
  for node in ast.walk(tree):
    body = getattr(node, "body", None)
    if isinstance(body, list) and len(body) > 1 and isinstance(body[0], ast.Expr) and \
        isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
      drop.update(range(body[0].lineno, body[0].end_lineno + 1))
  comments = {t.start[0]: t.start[1] for t in _tokens(code) if t.type == tokenize.COMMENT}
  out = []
  for row, line in enumerate(code.split("\n"), 1):
    if row in drop:
      continue
    if row in comments:
      line = line[:comments[row]].rstrip()
      if not line:
        continue
    out.append(line)
  return "\n".join(out)


def _fresh_names(n: int, taken: set[str]) -> list[str]:
  out, i = [], 0
  while len(out) < n:
    letter, rnd = "abcdeghjkmnpqrstuvwxyz"[i % 22], i // 22
    name = letter if rnd == 0 else f"{letter}{rnd}"
    if name not in taken and not keyword.iskeyword(name):
      out.append(name)
    i += 1
  return out


def bad_names(code: str, rng: random.Random, donor: str = "") -> str:
  """The function renamed `f`, its parameters and locals `a`, `b`, ... (keyword arguments of calls
  and attributes keep their names: the code means the same)."""
  fn = _top_functions(code)[0]
  old = _renamable(fn)
  toks = _tokens(code)
  taken = {t.string for t in toks if t.type == tokenize.NAME} | {"f"}
  new = dict(zip(old, ["f"] + _fresh_names(len(old) - 1, taken)))
  spans, stack = [], []  # stack: for each open bracket, is it a def's parameter list?
  for i, t in enumerate(toks):
    if t.type == tokenize.OP and t.string in "([{":
      stack.append(t.string == "(" and i >= 2 and toks[i - 2].string == "def")
    elif t.type == tokenize.OP and t.string in ")]}":
      stack.pop()
    elif t.type == tokenize.NAME and t.string in new:
      after_dot = i > 0 and toks[i - 1].string == "."
      keyword_arg = stack and not stack[-1] and toks[i + 1].string == "=" and \
          toks[i - 1].string in ("(", ",")
      if not after_dot and not keyword_arg:
        spans.append((t.start[0], t.start[1], t.end[1], new[t.string]))
  return _replace_spans(code, spans)


TRANSFORMS: dict[str, Callable[..., str]] = {
    "debug_prints": debug_prints, "commented_out": commented_out, "repeated_code": repeated_code,
    "hardcoded_data": hardcoded_data, "syntax_error": syntax_error, "truncated": truncated,
    "no_comments": no_comments, "bad_names": bad_names}
assert tuple(TRANSFORMS) == KINDS


def plant(code: str, kind: str, seed: int = 0, donor: str = "") -> str:
  """`code` (a candidate function) with the defect `kind`; `donor`: commented_out's block."""
  if kind not in TRANSFORMS:
    raise ValueError(f"unknown planted defect {kind!r}; known: {KINDS}")
  return TRANSFORMS[kind](code, random.Random(f"{seed}:{kind}"), donor)


# ----------------------------------------------------------------------------- pairs


def build_pairs(records: Sequence[dict], *, n_files: int, max_chars: int, kinds=KINDS,
                all_kinds: bool = True, seed: int = 0) -> list[dict]:
  """Pairs from the first `n_files` Python records (in the given order) that have a candidate
  function of at most `max_chars`. all_kinds: every kind per file; else one kind per file, in
  turn (pairs then share no original, so they are independent draws).

  A pair: {"id", "kind", "path", "language", "original", "degraded"}; the donor of commented_out
  is the file's first other top-level function or class, else the previous file's snippet."""
  kinds = tuple(kinds)
  unknown = sorted(set(kinds) - set(KINDS))
  if unknown:
    raise ValueError(f"unknown planted defects {unknown}; known: {KINDS}")
  pairs, files, previous = [], 0, ""
  for r in records:
    if files >= n_files:
      break
    if r.get("language") != "python":
      continue
    found = sorted(candidate_functions(r["text"], max_chars), key=len, reverse=True)
    if not found:
      continue
    code = found[0]
    donor = next((d for d in _top_sources(r["text"]) if d != code), previous)
    for kind in (kinds if all_kinds else (kinds[files % len(kinds)],)):
      pairs.append({"id": f"{r.get('id', r.get('path'))}#{kind}", "kind": kind,
                    "path": r.get("path", ""), "language": "python", "original": code,
                    "degraded": plant(code, kind, seed, donor)})
    files, previous = files + 1, code
  return pairs


# ----------------------------------------------------------------------------- accuracy


def wilson_interval(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
  """Wilson's score interval for a binomial proportion (successes may be fractional: ties)."""
  if n <= 0:
    return 0.0, 1.0
  p = successes / n
  denom = 1.0 + z * z / n
  centre = (p + z * z / (2 * n)) / denom
  half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
  return max(0.0, centre - half), min(1.0, centre + half)


def verdict(low: float, high: float, n: int) -> str:
  if n == 0:
    return "no pairs rated"
  if low > 0.5:
    return "better than chance"
  if high < 0.5:
    return "worse than chance (prefers the planted defects)"
  return "not distinguishable from chance"


def accuracy(scores: Sequence[tuple[float | None, float | None]]) -> dict:
  """scores: (original, degraded) per pair, None = unrated. Wins, ties, accuracy (ties half),
  the Wilson 95 % interval and the verdict over the pairs rated on both sides."""
  rated = [(a, b) for a, b in scores if a is not None and b is not None]
  wins = sum(a > b for a, b in rated)
  ties = sum(a == b for a, b in rated)
  n = len(rated)
  low, high = wilson_interval(wins + 0.5 * ties, n)
  return {"n": n, "unrated": len(scores) - n, "wins": wins, "ties": ties,
          "accuracy": (wins + 0.5 * ties) / n if n else None, "ci95": [low, high],
          "verdict": verdict(low, high, n)}


def pairwise_accuracy(pairs: Sequence[dict], original: Sequence[float | None],
                      degraded: Sequence[float | None]) -> dict:
  """{"overall": accuracy(...), "by_kind": {kind: accuracy(...)}} (kinds in KINDS order)."""
  rows = list(zip(pairs, original, degraded))
  by_kind = {k: accuracy([(a, b) for p, a, b in rows if p["kind"] == k])
             for k in KINDS if any(p["kind"] == k for p in pairs)}
  return {"overall": accuracy([(a, b) for _, a, b in rows]), "by_kind": by_kind}


def sentence(rater: str, result: dict) -> str:
  """The report's line for one rater's overall accuracy."""
  o = result["overall"]
  if not o["n"]:
    return f"The {rater} rated no planted pair on both sides ({o['unrated']} unrated)."
  low, high = o["ci95"]
  return (f"The {rater} ranks originals above planted defects in {100 * o['accuracy']:.0f}% of "
          f"{o['n']} pairs (95% CI {100 * low:.0f}-{100 * high:.0f}%): {o['verdict']}.")


def rate_pairs(pairs: Sequence[dict], rate: Callable[[list[dict]], list[float | None]]) -> dict:
  """Rates both sides of every pair with `rate` (records -> scores, None = unrated) in one call;
  each side is a record {"id", "path", "language", "text"} (the original once per file)."""
  texts = sorted({p["original"] for p in pairs} | {p["degraded"] for p in pairs})
  path_of = {}
  for p in pairs:
    path_of.setdefault(p["original"], p["path"])
    path_of.setdefault(p["degraded"], p["path"])
  recs = [{"id": f"planted/{i}", "path": path_of[t], "language": "python", "text": t}
          for i, t in enumerate(texts)]
  score = dict(zip(texts, rate(recs)))
  return pairwise_accuracy(pairs, [score[p["original"]] for p in pairs],
                           [score[p["degraded"]] for p in pairs])


# ----------------------------------------------------------------------------- raters and the check


def stdlib_records(seed: int = 0):
  """The running interpreter's standard-library .py files as records, lazily, in the order of
  oracle_agreement.stdlib_sample (oracle.sample_key of the record id): a prefix costs a prefix."""
  import os
  from seedcoder_jax.curation import oracle as oracle_lib
  from seedcoder_jax.curation import records as records_lib
  from seedcoder_jax.input import source_files
  root = source_files.default_source_dir()
  found = []
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames[:] = [d for d in dirnames
                   if not d.startswith((".", "__pycache__")) and d != "site-packages"]
    for name in filenames:
      rel = os.path.relpath(os.path.join(dirpath, name), root).replace(os.sep, "/")
      if name.endswith(".py") and not os.path.islink(os.path.join(dirpath, name)):
        parts = rel.split("/")
        repo = parts[0] if len(parts) > 1 else parts[0][:-3]
        found.append((records_lib.record_id("file", repo, rel), rel))
  for rid, rel in sorted(found, key=lambda f: oracle_lib.sample_key(f[0], seed)):
    try:
      text = (root / rel).read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError):
      continue
    yield {"id": rid, "path": rel, "language": "python", "text": text}


def oracle_rater(backend, cfg, *, template: str, cache=None):
  """records -> oracle scores (None where the answer's status is not "ok"), through the cache."""
  from seedcoder_jax.curation import oracle as oracle_lib

  def rate(records):
    out = oracle_lib.annotate(records, backend, cfg, template=template, cache=cache)
    return [r["oracle_score"] if r["oracle_status"] == "ok" else None for r in out]
  return rate


def heuristic_rater(records):
  from seedcoder_jax.input import source_files
  return [float(source_files.heuristic_score(r["text"])) for r in records]


def scorer_rater(scorer):
  return lambda records: [float(s) for s in scorer.score_texts([r["text"] for r in records])]


def check(records, raters: dict, *, n_files: int, max_chars: int, all_kinds: bool,
          seed: int = 0) -> dict:
  """Pairs from `records` (an iterable: consumed only until n_files have a candidate), each rater
  of `raters` (name -> records -> scores) on both sides: {"n_pairs", "n_files", "snippet_chars",
  "raters": {name: pairwise_accuracy + "sentence" + "seconds"}}."""
  import time
  pairs = build_pairs(records, n_files=n_files, max_chars=max_chars, all_kinds=all_kinds,
                      seed=seed)
  out = {"n_pairs": len(pairs), "n_files": len({p["original"] for p in pairs}),
         "snippet_chars": max_chars, "kinds": sorted({p["kind"] for p in pairs},
                                                     key=KINDS.index), "raters": {}}
  for name, rate in raters.items():
    t0 = time.perf_counter()
    result = rate_pairs(pairs, rate)
    out["raters"][name] = {**result, "sentence": sentence(name, result),
                           "seconds": round(time.perf_counter() - t0, 1)}
  return out


SNIPPET_SHARE = 0.4  # snippets of at most this share of oracle.max_code_chars ...
PROMPT_ROOM = 128  # ... and this many more prompt tokens: both sides of every pair fit whole


def check_oracle_config(cfg):
  """The oracle config of the check's prompts: room for the longest degraded side (a pasted
  copy, a table spending a token per digit), so no prompt is cut and no side carries a
  truncation note the other lacks."""
  import dataclasses
  return dataclasses.replace(cfg, max_code_chars=4 * snippet_chars(cfg),
                             max_prompt_tokens=cfg.max_prompt_tokens + PROMPT_ROOM)


def snippet_chars(cfg) -> int:
  return int(SNIPPET_SHARE * cfg.max_code_chars)


def pipeline_check(cfg, sample, scorer=None) -> dict:
  """The curation's check (oracle.planted_pairs > 0): one pair per file, defects in turn, from
  the oracle sample's Python files and then the interpreter's standard library; rated by the
  oracle (answers cached in cfg.cache_path), the scorer when given, and the heuristic score.
  {"planted": check(...) + "from_sample"} or {} when switched off."""
  import itertools
  from seedcoder_jax.curation import oracle as oracle_lib
  from seedcoder_jax.curation import oracle_backends
  if cfg.planted_pairs <= 0:
    return {}
  ccfg = check_oracle_config(cfg)
  cache = oracle_lib.OracleCache(cfg.cache_path) if cfg.cache_path else None
  raters = {"oracle": oracle_rater(oracle_backends.make_backend(ccfg), ccfg, cache=cache,
                                   template=oracle_lib.load_prompt_template(cfg.prompt_path))}
  if scorer is not None:
    raters["scorer"] = scorer_rater(scorer)
  raters["heuristic"] = heuristic_rater
  own = [r for r in sample if r.get("language") == "python"]
  seen = {r["text"] for r in own}
  rest = (r for r in stdlib_records(cfg.sample_seed) if r["text"] not in seen)
  result = check(itertools.chain(own, rest), raters, n_files=cfg.planted_pairs,
                 max_chars=snippet_chars(cfg), all_kinds=False, seed=cfg.sample_seed)
  from_sample = len({p["original"] for p in build_pairs(
      own, n_files=cfg.planted_pairs, max_chars=snippet_chars(cfg), all_kinds=False)})
  for r in result["raters"].values():
    print(f"[curate] planted check: {r['sentence']}", file=sys.stderr, flush=True)
  return {"planted": {**result, "from_sample": from_sample}}
