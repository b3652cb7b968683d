"""xla_cpu.set_scheduler: the flag reaches XLA before its backend starts, XLA accepts it, the
environment's own value wins, and a late or unknown choice is refused."""

import os
import subprocess
import sys

import pytest

from seedcoder_jax import config_files, xla_cpu
from seedcoder_jax.train import config as config_lib

FLAG = xla_cpu.FLAG


def _fresh(code: str, xla_flags: str = "") -> subprocess.CompletedProcess:
  env = {**os.environ, "XLA_FLAGS": xla_flags, "JAX_PLATFORMS": "cpu"}
  return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                        timeout=120, check=False)


_SCHEDULE = """
import hashlib, os, sys
import jax, jax.numpy as jnp
from seedcoder_jax import xla_cpu
from seedcoder_jax import model as model_lib
from seedcoder_jax.model import kv_cache
name = xla_cpu.set_scheduler(sys.argv[1])
cfg = model_lib.preset("tiny")
params = model_lib.init_params(cfg)
cache = {"k": jnp.zeros(kv_cache.shape(cfg, 4, 64)), "v": jnp.zeros(kv_cache.shape(cfg, 4, 64)),
         "valid": jnp.zeros((4, 64), bool)}
step = jax.jit(lambda p, c, t: kv_cache.decode_step(cfg, p, c, t, t, 3))
text = step.lower(params, cache, jnp.zeros(4, jnp.int32)).compile().as_text()
body = "\\n".join(line for line in text.splitlines() if not line.startswith("HloModule"))
print(name, hashlib.sha256(body.encode()).hexdigest(), os.environ["XLA_FLAGS"],
      xla_cpu.set_scheduler(sys.argv[1]))
"""


def test_the_scheduler_reaches_xla_and_changes_the_schedule():
  # XLA aborts on a flag it does not know, so a compiled program proves the name is XLA's, and
  # the compiled (scheduled) HLO of the same decode step differs between the two schedulers.
  out = {}
  for name in ("bfs", "dfs"):
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
           "JAX_PLATFORMS": "cpu", "JAX_ENABLE_COMPILATION_CACHE": "false"}
    proc = subprocess.run([sys.executable, "-c", _SCHEDULE, name], env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out[name] = proc.stdout.split()
  for name, value in (("bfs", "true"), ("dfs", "false")):
    got, digest, device_flag, flag, again = out[name]
    assert (got, again) == (name, name)  # again: already set, so no change after the start
    assert (device_flag, flag) == ("--xla_force_host_platform_device_count=2", f"{FLAG}={value}")
  assert out["bfs"][1] != out["dfs"][1]


def test_a_change_after_the_backend_started_is_refused():
  # In a fresh process whose XLA_FLAGS name no scheduler, so the refusal does not depend on the
  # flags this test run was started with.
  code = ("import jax\n"
          "from seedcoder_jax import xla_cpu\n"
          "jax.devices()\n"
          "try:\n"
          "  xla_cpu.set_scheduler('dfs')\n"
          "except RuntimeError as e:\n"
          "  print('refused:', e)\n"
          "print(xla_cpu.set_scheduler(''), xla_cpu.current())\n")
  proc = _fresh(code)
  assert proc.returncode == 0, proc.stderr[-2000:]
  first, second = proc.stdout.strip().split("\n")
  assert first.startswith("refused:") and "before JAX's backend starts" in first
  assert second == "bfs bfs"  # "" changes nothing, so it is allowed; the default stayed


def test_the_environment_wins_and_says_so():
  code = ("from seedcoder_jax import xla_cpu\n"
          "print(xla_cpu.set_scheduler('dfs'))\n")
  proc = _fresh(code, xla_flags=f"{FLAG}=true")
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert proc.stdout.strip() == "bfs"
  assert f"XLA_FLAGS sets {FLAG}=true, which wins" in proc.stderr


def test_flag_parsing_follows_xla():
  assert xla_cpu._flag_value("") is None
  assert xla_cpu._flag_value(f"--a=1 {FLAG}") == "true"  # a bare boolean flag means true
  assert xla_cpu._flag_value(f"{FLAG}=false --b {FLAG}=true") == "true"  # the last one wins
  assert xla_cpu._flag_value(f"{FLAG}=False") == "false"


def test_unknown_names_are_refused_by_the_function_and_the_config():
  with pytest.raises(ValueError, match="'lifo' is not one of"):
    xla_cpu.set_scheduler("lifo")
  c = config_files.load(f"{config_files.CONFIG_DIR / 'pretrain.py'}:tiny").to_dict()
  c["xla_cpu_scheduler"] = "lifo"
  with pytest.raises(config_lib.ConfigError, match="config.xla_cpu_scheduler='lifo'"):
    config_lib.from_tree(c)
