"""The instruction pipeline's non-LLM checks: Tree-sitter syntax, benchmark n-grams, sandbox tests.

Each is the one curation or evaluation already uses, so synthetic SFT data is held to the same
rules as the pretraining corpus and the same verdicts as evaluation:
- syntax: seedcoder_jax.curation.syntax's Tree-sitter parser (python grammar);
- decontamination: curation.decontam's 10-gram index over every evaluated benchmark, built once
  per process and shared by all threads;
- tests: the response's code followed by its asserts, sealed with a fresh token
  (evaluation.verdict) and judged by evaluation.execution, so an early `sys.exit(0)`, `os._exit(0)`
  or exit hook is "exited_early", never a pass.
"""

from __future__ import annotations

import functools
import hashlib
import threading
from typing import Optional

_INDEX_LOCK = threading.Lock()


def syntax_error(code: str, language: str = "python") -> Optional[str]:
  """None when Tree-sitter parses `code` without errors, else where the errors are."""
  from seedcoder_jax.curation import syntax
  if syntax.parser_for(language) is None:
    raise RuntimeError(f"no Tree-sitter grammar for {language!r} is installed "
                       "(pip install tree-sitter-python); the syntax filter cannot run")
  out = syntax.check_syntax({"text": code, "language": language, "id": "response"})
  return None if "text" in out else out.get("detail", "syntax error")


@functools.lru_cache(maxsize=4)
def _index(n: int, benchmarks: tuple[str, ...]):
  from seedcoder_jax.curation import decontam
  cfg = decontam.DecontamConfig(n=n, **({"benchmarks": benchmarks} if benchmarks else {}))
  return cfg, decontam.benchmark_index(cfg)


def benchmark_index(n: int = 10, benchmarks: tuple[str, ...] = ()):
  """(DecontamConfig, n-gram index); () = every benchmark the harness evaluates. Cached."""
  with _INDEX_LOCK:  # built once even when many threads ask first
    return _index(n, tuple(benchmarks))


def overlaps(text: str, n: int = 10, benchmarks: tuple[str, ...] = ()) -> dict[str, int]:
  """benchmark task id -> n-grams of `text` it shares ({} when clean)."""
  from seedcoder_jax.curation import decontam
  cfg, index = benchmark_index(n, benchmarks)
  return decontam.find_matches(text, index, cfg.n)


def run_tests(code: str, tests: str, *, timeout_s: float, memory_mb: int,
              semaphore: Optional[threading.Semaphore] = None):
  """evaluation.execution.Execution of `code` then `tests` in the sandbox (sealed verdict).

  semaphore bounds how many sandbox runs the pipeline's threads start at once (generation
  concurrency can be far above what the CPUs can execute).
  """
  from seedcoder_jax.evaluation import benchmarks, execution
  task_id = "instruct/" + hashlib.sha256(code.encode()).hexdigest()[:12]
  problem = benchmarks.Problem(task_id=task_id, prompt=code.rstrip("\n") + "\n",
                               language="python", tests=tests)
  if semaphore is None:
    return execution.run_many([(problem, "")], workers=1, timeout_s=timeout_s,
                              memory_mb=memory_mb)[0]
  with semaphore:
    return execution.run_many([(problem, "")], workers=1, timeout_s=timeout_s,
                              memory_mb=memory_mb)[0]


def failure_text(result, max_chars: int) -> str:
  """What the generator is told about a failed run: the status and the end of stderr."""
  detail = (result.detail or "").strip()
  if result.status == "timeout":
    detail = detail or "the program did not finish within the time limit (an endless loop?)"
  text = f"status: {result.status}\n{detail}" if detail else f"status: {result.status}"
  return text if len(text) <= max_chars else "..." + text[-max_chars:]
