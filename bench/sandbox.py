"""Sandbox throughput: runs/s one at a time and through the pool, one JSON line.

  python bench/sandbox.py --language=python --runs=40 --workers=2
  python bench/sandbox.py --language=cpp --runs=10 --isolation=rlimits

Each run is a small HumanEval-style program (a function, then asserts on it, stdin echoed). Also
times the same interpreter started bare (no sandbox, no limits) so the sandbox's own share of a
run is visible: per_run_ms - bare_ms. "budget" says how the runs' memory and task budgets were held
(a cgroup per run, or polled: seedcoder_jax/sandbox/budget.py).
"""

import json
import statistics
import subprocess
import time

from absl import app, flags

from seedcoder_jax import perf, sandbox
from seedcoder_jax.sandbox import languages

_LANGUAGE = flags.DEFINE_enum("language", "python", list(languages.LANGUAGES), "program language")
_RUNS = flags.DEFINE_integer("runs", 40, "runs per measurement")
_WORKERS = flags.DEFINE_integer("workers", 0, "pool workers (0: the CPUs this process may use)")
_ISOLATION = flags.DEFINE_enum("isolation", "auto", ["auto", "bwrap", "rlimits"], "isolation")

PROGRAMS = {
    "python": ("def add(a, b):\n  return a + b\n"
               "assert add(2, 3) == 5\nassert add(-1, 1) == 0\nprint(input())\n"),
    "cpp": ("#include <iostream>\n#include <string>\nint add(int a, int b) { return a + b; }\n"
            "int main() { std::string s; std::cin >> s; if (add(2, 3) != 5) return 1;"
            " std::cout << s << std::endl; }\n"),
    "java": ("import java.util.*;\nclass Problem {\n"
             "  static int add(int a, int b) { return a + b; }\n"
             "  public static void main(String[] x) { String s = new Scanner(System.in).next();\n"
             "    assert add(2, 3) == 5; System.out.println(s); }\n}\n"),
    "javascript": ("const add = (a, b) => a + b;\nrequire('assert').equal(add(2, 3), 5);\n"
                   "console.log(require('fs').readFileSync(0, 'utf8').trim());\n"),
}


def _bare_ms(language, runs):
  """Median ms of the language's run command started bare (interpreted languages only)."""
  if language == "python":
    argv = [languages.python_interpreter()[0], "-c", PROGRAMS["python"]]
  elif language == "javascript":
    argv = ["node", "-e", PROGRAMS["javascript"]]
  else:
    return None
  times = []
  for _ in range(runs):
    t = time.perf_counter()
    subprocess.run(argv, input=b"x\n", capture_output=True, check=True)
    times.append(time.perf_counter() - t)
  return statistics.median(times) * 1e3


def main(_):
  language, runs = _LANGUAGE.value, _RUNS.value
  workers = _WORKERS.value or sandbox.pool.default_workers()
  job = dict(source=PROGRAMS[language], language=language, stdin="hello\n", timeout_s=20,
             memory_mb=512, isolation=_ISOLATION.value)
  first = sandbox.run_code(**job)  # warm caches (and the bwrap probe) outside the timings
  if first.status != "ok":
    raise SystemExit(f"the benchmark program failed in the sandbox: {first}")
  times = []
  t0 = time.perf_counter()
  for _ in range(runs):
    t = time.perf_counter()
    r = sandbox.run_code(**job)
    times.append(time.perf_counter() - t)
    assert r.status == "ok", r
  sequential_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  results = sandbox.run_many([job] * runs, workers=workers)
  pool_s = time.perf_counter() - t0
  assert all(r.status == "ok" for r in results), [r for r in results if r.status != "ok"][:1]
  bare = _bare_ms(language, min(runs, 20))
  times.sort()
  print(json.dumps({
      "bench": "sandbox",
      "language": language,
      "isolation": first.isolation,
      "budget": first.budget,
      "runs": runs,
      "workers": workers,
      "sequential_runs_per_s": round(runs / sequential_s, 2),
      "per_run_ms_median": round(statistics.median(times) * 1e3, 1),
      "per_run_ms_p90": round(times[int(0.9 * (len(times) - 1))] * 1e3, 1),
      "compile_ms": round(first.compile_s * 1e3, 1),
      "pool_runs_per_s": round(runs / pool_s, 2),
      "bare_ms_median": round(bare, 1) if bare is not None else None,
      "machine": perf.machine(),
  }))


if __name__ == "__main__":
  app.run(main)
