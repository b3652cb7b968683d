"""Isolated execution of untrusted, model-written code (evaluation, SFT/DPO filtering, RL rewards).

`run_code(source, *, language, stdin, timeout_s, memory_mb) -> Result` runs one program and
`run_many(jobs, workers=N)` runs many in parallel. runner.run_code lists every limit; isolation.py
says what the sandbox hides and how the whole process tree is killed, budget.py how a run's memory
and processes are capped together, seccomp.py which system calls are refused.
"""

from seedcoder_jax.sandbox.languages import LANGUAGES, toolchain_missing
from seedcoder_jax.sandbox.pool import run_many
from seedcoder_jax.sandbox.runner import (STATUSES, Result, SandboxUnavailable, resolve_isolation,
                                          run_code)

__all__ = ["LANGUAGES", "STATUSES", "Result", "SandboxUnavailable", "resolve_isolation", "run_code",
           "run_many", "toolchain_missing"]
