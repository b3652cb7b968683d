"""The prepared GPU check script, dry-run on CPU with the tiny shape (its GPU figures come from a
lent device machine: `bash bench/gpu_checks.sh` there); bench/rollout.py's JSON line at a small
shape."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from refenv import REF_PYTHON

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_checks_script_runs_every_check_on_cpu(tmp_path):
  if not REF_PYTHON.exists():
    pytest.skip(f"reference environment missing: {REF_PYTHON} (run `make install-ref`)")
  # One CPU device, as on the GPU machine (the suite's conftest fakes 8 through XLA_FLAGS).
  env = {k: v for k, v in os.environ.items() if not k.startswith("XLA_")}
  env.update({"PY": sys.executable, "TORCH_PY": str(REF_PYTHON), "PRESET": "tiny",
         "BATCH": "2", "SEQ": "256", "IMPLS": "flash xla", "OUT": str(tmp_path / "out"),
         "DATA": str(tmp_path / "data"), "JAX_PLATFORMS": "cpu"})
  subprocess.run(["bash", str(ROOT / "bench" / "gpu_checks.sh")], env=env, check=True,
                 capture_output=True, timeout=900)
  lines = [json.loads(l) for l in (tmp_path / "out" / "gpu_checks.jsonl").read_text().splitlines()]
  assert not [l for l in lines if "failed" in l], lines
  fb = [l for l in lines if l.get("bench") == "forward_backward"]
  assert [l["attention_impl"] for l in fb] == ["flash", "xla"]
  assert all(l["seq_len"] == 256 and l["batch_size"] == 2 and l["tokens_per_s"] > 0 for l in fb)
  torch_line = next(l for l in lines if "attn_implementation" in l)
  assert torch_line["device"] == "cpu" and torch_line["bfloat16"]["tokens_per_s"] > 0
  trainer = lines[-1]
  assert trainer["hidden_size"] == 128 and trainer["seq_len"] == 256 and trainer["steps"] == 10


def test_rollout_bench_prints_one_json_line():
  env = {k: v for k, v in os.environ.items() if not k.startswith("XLA_")}
  env["JAX_PLATFORMS"] = "cpu"
  proc = subprocess.run(
      [sys.executable, str(ROOT / "bench" / "rollout.py"), "--preset=tiny", "--prompts=3",
       "--group_size=2", "--max_new_tokens=8", "--slots=4", "--chunk=4", "--prompt_len=20"],
      env=env, check=True, capture_output=True, text=True, timeout=300, cwd=ROOT)
  [line] = proc.stdout.strip().splitlines()
  result = json.loads(line)
  assert result["hidden_size"] == 128 and result["batch_size"] == 3 and result["group_size"] == 2
  assert result["rows"] == 6 and result["tokens"] <= 6 * 8 and result["tokens_per_s"] > 0
  # 6 rollouts through 4 slots: one prefill per prompt, 2 slots refilled.
  assert result["stats"]["prefills"] == 3 and result["stats"]["refills"] == 2
  # Without --slots, every rollout gets a slot at once (as generate decodes them): no refill.
  proc = subprocess.run(
      [sys.executable, str(ROOT / "bench" / "rollout.py"), "--preset=tiny", "--prompts=2",
       "--group_size=2", "--max_new_tokens=4", "--chunk=4", "--prompt_len=8"],
      env=env, check=True, capture_output=True, text=True, timeout=300, cwd=ROOT)
  default = json.loads(proc.stdout.strip().splitlines()[-1])
  assert default["slots"] == 4 and default["stats"]["refills"] == 0
  assert result["machine"]["platform"] == "cpu"
