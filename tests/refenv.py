"""Runs reference implementations (torch + transformers) in the separate Python 3.11 environment.

`make test` creates `.venv-ref` from requirements-ref.txt. Reference scripts live in
tests/reference/, read their inputs from files and write .npy/.json outputs, so no torch object
ever crosses into the JAX environment.
"""

import os
import pathlib
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
REF_PYTHON = pathlib.Path(os.environ.get("SEEDCODER_REF_PYTHON", ROOT / ".venv-ref" / "bin" / "python"))
REFERENCE_DIR = ROOT / "tests" / "reference"


def run_reference(script: str, *args, timeout: float = 600) -> str:
  """Runs tests/reference/<script> with the reference interpreter; returns its stdout."""
  if not REF_PYTHON.exists():
    pytest.skip(f"reference environment missing: {REF_PYTHON} (run `make install-ref`)")
  env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_"))}
  env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
  proc = subprocess.run([str(REF_PYTHON), str(REFERENCE_DIR / script), *map(str, args)],
                        capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
  if proc.returncode:
    raise RuntimeError(f"reference script {script} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
  return proc.stdout
