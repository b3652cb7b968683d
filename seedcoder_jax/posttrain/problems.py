"""Verifiable coding problems shared by SFT filtering, DPO pairs and RL rewards.

Source: reasoning-gym 0.1.25's CodeI/O pool (`reasoning_gym/data/codeio*.jsonl.gz`, read with
gzip/json: importing reasoning_gym would pull sympy and friends for nothing). Each entry has a task
description, an input/output spec, a reference `main_solution` and an input generator
`generate_input(s)(rng)`. Tests are made by running the reference in the sandbox on generated
inputs, twice, in two processes (different hash seeds), so that only deterministic, single-answer
problems stay. Every entry is either kept or rejected under one named reason (REASONS), and
`input == kept + sum(rejected)` always.

A candidate solution is judged by the evaluation's own sealed programs and verdicts
(seedcoder_jax.evaluation.verdict / execution): `program` lays out (head, tests) for
`verdict.seal("python", ...)` and `check` runs them through `execution.run_many`, so an early
`sys.exit(0)` is never a pass. The split into train / held-out is by a hash of the problem id.
Making the set from the pool, its files and their accounting: problem_set.py.
"""

from __future__ import annotations

import ast
import dataclasses
import gzip
import hashlib
import importlib.util
import json
import pathlib
import re
import sys
import warnings
from typing import Any, Optional, Sequence

SOURCE = "reasoning-gym==0.1.25"
SOURCE_FILES = ("codeio.jsonl.gz", "codeio-hq.jsonl.gz")
SPLITS = ("train", "heldout")
# Why an entry is not kept, in the order the checks run.
REASONS = ("duplicate", "syntax_error", "no_main_solution", "non_stdlib_import",
           "benchmark_overlap", "no_input_generator", "generator_error",
           "generator_nondeterministic", "input_not_json", "reference_error", "timeout",
           "output_not_json", "nondeterministic", "constant_output", "tests_too_large",
           "reference_fails_tests")
_MARKER = "seedcoder-problem-report:"


class ProblemsError(ValueError):
  """Missing or malformed problem data (the message names the file and line)."""


@dataclasses.dataclass(frozen=True)
class Problem:
  """One verifiable problem.

  Attributes:
    id: "codeio/<sha256 of the reference, 16 hex>", stable across builds.
    prompt: what the model is asked: the task, its input/output spec and the signature to write.
    tests: ((kwargs, expected), ...): `main_solution(**kwargs)` must equal `expected` (JSON values).
    reference: the reference solution's code (defines main_solution).
    split: "train" or "heldout".
    provenance: where it came from (source package, file, index, difficulty, input seed).
  """
  id: str
  prompt: str
  tests: tuple[tuple[dict, Any], ...]
  reference: str
  split: str
  provenance: dict


def codeio_dir() -> pathlib.Path:
  """reasoning_gym/data inside the installed wheel (found without importing the package)."""
  spec = importlib.util.find_spec("reasoning_gym")
  if spec is None or not spec.origin:
    raise ProblemsError(f"{SOURCE} is not installed: pip install --no-deps -r requirements-data.txt")
  return pathlib.Path(spec.origin).parent / "data"


def load_codeio(data_dir: Optional[pathlib.Path] = None) -> list[dict]:
  """Every CodeI/O entry of both files, in file order, each with its file and index."""
  data_dir = pathlib.Path(data_dir or codeio_dir())
  entries = []
  for name in SOURCE_FILES:
    path = data_dir / name
    if not path.exists():
      raise ProblemsError(f"{path}: missing ({SOURCE} ships it)")
    with gzip.open(path, "rt", encoding="utf-8") as f:
      text = f.read()
    # codeio.jsonl.gz is JSON lines; codeio-hq.jsonl.gz, despite its name, one JSON array.
    if text.lstrip().startswith("["):
      rows = json.loads(text)
    else:
      rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    for i, row in enumerate(rows):
      entries.append({**row, "file": name, "index": i})
  return entries


def problem_id(reference: str) -> str:
  return "codeio/" + hashlib.sha256(reference.encode("utf-8")).hexdigest()[:16]


def split_of(pid: str, heldout_fraction: float) -> str:
  """train or heldout, from a hash of the id alone: the same problem always lands on one side."""
  if not 0.0 <= heldout_fraction <= 1.0:
    raise ValueError(f"heldout_fraction={heldout_fraction} must be in [0, 1]")
  h = int.from_bytes(hashlib.sha256(f"split:{pid}".encode()).digest()[:8], "big") / 2.0**64
  return "heldout" if h < heldout_fraction else "train"


def static_reason(code: str, generator: str) -> tuple[Optional[str], str]:
  """(reason, signature) from the source alone: syntax, main_solution, stdlib-only imports."""
  try:
    with warnings.catch_warnings():  # old code's invalid escapes ("\\.") warn, not fail
      warnings.simplefilter("ignore", SyntaxWarning)
      trees = [ast.parse(code), ast.parse(generator)]
  except (SyntaxError, ValueError):
    return "syntax_error", ""
  mains = [n for n in trees[0].body if isinstance(n, ast.FunctionDef) and n.name == "main_solution"]
  if not mains:
    return "no_main_solution", ""
  for tree in trees:
    for node in ast.walk(tree):
      names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
               [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
      if any(n.split(".")[0] not in sys.stdlib_module_names for n in names):
        return "non_stdlib_import", ""
  return None, f"main_solution({ast.unparse(mains[0].args)})"


def make_prompt(entry: dict, signature: str) -> str:
  return (f"{entry['task_description'].strip()}\n\n{entry['input_output_spec'].strip()}\n\n"
          f"Write a Python function `{signature}` that solves this task. It is called with the "
          "inputs above as keyword arguments and must return the output described above as plain "
          "JSON values (dict, list, str, int, float, bool or None). Use only the Python standard "
          "library.")


# The generator and the reference run in the sandbox inside this harness. Inputs and outputs go
# through a JSON round trip here, as they will in the tests: the reference sees exactly the values
# a candidate will be called with (lists, not tuples), and a value JSON cannot carry is caught.
_HARNESS = r'''
import json, os
from random import Random

def _plain(value):
  return json.loads(json.dumps(value, allow_nan=False))

def _run():
  # Generators use the reference's imports and helpers (reasoning-gym runs both in one namespace).
  gen_ns = {"Random": Random}
  try:
    exec(compile(REFERENCE + "\n\n" + GENERATOR, "generator.py", "exec"), gen_ns)
  except Exception as e:
    return {"reason": "generator_error", "detail": repr(e)}
  gen = gen_ns.get("generate_input") or gen_ns.get("generate_inputs")
  if gen is None:
    return {"reason": "no_input_generator"}
  try:
    first = [gen(Random(SEED + i)) for i in range(N)]
    again = [gen(Random(SEED + i)) for i in range(N)]
  except Exception as e:
    return {"reason": "generator_error", "detail": repr(e)}
  try:
    first, again = [_plain(x) for x in first], [_plain(x) for x in again]
  except (TypeError, ValueError, RecursionError) as e:
    return {"reason": "input_not_json", "detail": repr(e)}
  if first != again:
    return {"reason": "generator_nondeterministic"}
  if not all(isinstance(x, dict) for x in first):
    return {"reason": "input_not_json", "detail": "inputs are not keyword-argument dicts"}
  ref_ns = {"__name__": "reference"}
  outputs = []
  try:
    exec(compile(REFERENCE, "reference.py", "exec"), ref_ns)
    for kwargs in first:
      out = ref_ns["main_solution"](**_plain(kwargs))
      try:
        outputs.append(_plain(out))
      except (TypeError, ValueError, RecursionError) as e:
        return {"reason": "output_not_json", "detail": repr(e)}
  except Exception as e:
    return {"reason": "reference_error", "detail": repr(e)}
  return {"inputs": first, "outputs": outputs}

os.write(1, ("\n" + MARKER + json.dumps(_run()) + "\n").encode())
'''


def harness(entry: dict, *, seed: int, n_tests: int) -> str:
  consts = (f"GENERATOR = {entry['input_generator']!r}\nREFERENCE = {entry['code_sample']!r}\n"
            f"SEED = {int(seed)}\nN = {int(n_tests)}\nMARKER = {_MARKER!r}\n")
  return consts + _HARNESS


def _report(result) -> dict:
  """The harness's report from one sandbox Result (a reason when there is none)."""
  if result.status == "timeout":
    return {"reason": "timeout"}
  lines = [l for l in result.stdout.split("\n") if l.startswith(_MARKER)]
  if result.status != "ok" or not lines:
    # It exited (sys.exit in the reference), crashed or hit a limit before reporting.
    return {"reason": "reference_error", "detail": f"{result.status}: {result.stderr[-300:]}"}
  try:
    return json.loads(lines[-1][len(_MARKER):])
  except json.JSONDecodeError:
    return {"reason": "reference_error", "detail": "unreadable report"}


def judge_runs(first, second, *, max_test_chars: int) -> tuple[Optional[str], list]:
  """(reason, tests) from two independent harness runs of one entry: tests only when reason is None."""
  a, b = _report(first), _report(second)
  for report in (a, b):
    if "reason" in report:
      return report["reason"], []
  if a["inputs"] != b["inputs"]:
    return "generator_nondeterministic", []
  if a["outputs"] != b["outputs"]:
    return "nondeterministic", []
  # A problem whose every test expects one value is passed by a constant: no signal for rewards.
  outs = [json.dumps(o, sort_keys=True) for o in a["outputs"]]
  if len(outs) > 1 and len(set(outs)) == 1:
    return "constant_output", []
  tests = [[i, o] for i, o in zip(a["inputs"], a["outputs"])]
  if len(json.dumps(tests)) > max_test_chars:
    return "tests_too_large", []
  return None, tests


# The tests' comparison. The candidate's module runs first and can patch any module it imports
# (json, math), so the tests use none: expected values and kwargs are Python literals (a JSON value
# is one), and the result is rebuilt from exact builtin types, so an object whose __eq__ always
# says True, or a dict subclass, is no pass. As in json.dumps, tuples count as lists and int keys
# as strings. Floats match within a relative 1e-6 (a correct solution that sums in another order
# differs from the reference in the last bits); bools never equal numbers.
_COMPARE = r'''
_SC_BAD = object()

def _sc_key(k):
  if type(k) is str:
    return k
  if type(k) is bool:
    return "true" if k else "false"
  return str(k) if type(k) is int else _SC_BAD

def _sc_plain(x):
  t = type(x)
  if x is None or t is bool or t is int or t is str:
    return x
  if t is float:
    return x if x - x == 0.0 else _SC_BAD  # NaN and infinities are not JSON
  if t is list or t is tuple:
    return [_sc_plain(v) for v in x]
  if t is dict:
    return {_sc_key(k): _sc_plain(v) for k, v in x.items()}
  return _SC_BAD

def _sc_same(got, want):
  if type(want) is bool or type(got) is bool:
    return got is want
  if type(want) in (int, float) and type(got) in (int, float):
    try:
      return got == want or abs(got - want) <= max(1e-9, 1e-6 * max(abs(got), abs(want)))
    except OverflowError:
      return False
  if type(want) is list:
    return (type(got) is list and len(got) == len(want) and
            all(_sc_same(g, w) for g, w in zip(got, want)))
  if type(want) is dict:
    return (type(got) is dict and got.keys() == want.keys() and
            all(_sc_same(got[k], want[k]) for k in want))
  return type(got) is type(want) and got == want
'''


# A fenced code block: its tag and body; an unclosed fence runs to the end of the text.
_FENCE = re.compile(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
_PYTHON_TAGS = ("", "python", "py", "python3")


def python_code(text: str) -> Optional[str]:
  """The first fenced python (or untagged) code block of `text`, else None."""
  for m in _FENCE.finditer(text):
    if m.group(1).lower() in _PYTHON_TAGS and m.group(2).strip():
      return m.group(2).strip("\n") + "\n"
  return None


def program(problem: Problem, completion_code: str) -> tuple[str, str]:
  """(head, tests) for verdict.seal("python", head, tests, token): top-level asserts, one a test."""
  asserts = [f"assert _sc_same(_sc_plain(main_solution(**{kw!r})), {want!r}), 'test {i}'"
             for i, (kw, want) in enumerate(problem.tests)]
  return f"{completion_code}\n", _COMPARE + "\n" + "\n".join(asserts) + "\n"


def check(problems_and_completions: Sequence[tuple[Problem, str]], workers: int = 4, *,
          timeout_s: Optional[float] = None, memory_mb: Optional[int] = None) -> list:
  """Runs each completion against its problem's tests: list of execution.Execution, in order.

  The program goes through the evaluation's own path (sealed with a fresh token, judged by
  execution.verdict_of), so rewards and filters get exactly the verdicts evaluation gives.
  """
  from seedcoder_jax.evaluation import benchmarks, execution
  jobs = []
  for problem, completion in problems_and_completions:
    head, tests = program(problem, completion)
    # Problem.program lays out prompt + completion + "\n" + tests: the head is the prompt here.
    jobs.append((benchmarks.Problem(task_id=problem.id, prompt=head, language="python",
                                    tests=tests), ""))
  return execution.run_many(jobs, workers=workers, timeout_s=timeout_s, memory_mb=memory_mb)
