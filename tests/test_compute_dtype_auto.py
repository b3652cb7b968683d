"""compute_dtype="auto": bfloat16 where bf16 dot products are native, float32 on other CPUs."""

import pytest

from seedcoder_jax import config_files, perf
from seedcoder_jax.train import config as config_lib

ZEN4 = """processor\t: 0
vendor_id\t: AuthenticAMD
flags\t\t: fpu sse2 avx avx2 avx512f avx512bw avx512_bf16 avx512_vnni
"""
SKYLAKE = """processor\t: 0
flags\t\t: fpu sse2 avx avx2 avx512f avx512bw avx512_vnni
"""
SAPPHIRE_RAPIDS_AMX_ONLY = "flags\t: fpu avx2 amx_tile amx_bf16 amx_int8\n"
NEOVERSE_V1 = "processor\t: 0\nFeatures\t: fp asimd aes sha2 sve bf16 i8mm\n"
NEOVERSE_N1 = "processor\t: 0\nFeatures\t: fp asimd aes sha2 crc32 atomics\n"


@pytest.mark.parametrize("cpuinfo, native", [
    (ZEN4, True), (SKYLAKE, False), (SAPPHIRE_RAPIDS_AMX_ONLY, True), (NEOVERSE_V1, True),
    (NEOVERSE_N1, False), ("", False),
    # A flag name inside another field's value (here the model name) is not a feature flag.
    ("model name\t: bf16 avx512_bf16 lookalike\nflags\t: fpu avx2\n", False)])
def test_native_bf16_from_cpuinfo(cpuinfo, native):
  assert perf.cpu_has_native_bf16(cpuinfo) is native


def test_auto_compute_dtype():
  assert perf.auto_compute_dtype("cpu", ZEN4) == "bfloat16"
  assert perf.auto_compute_dtype("cpu", SKYLAKE) == "float32"
  assert perf.auto_compute_dtype("tpu", SKYLAKE) == "bfloat16"
  assert perf.auto_compute_dtype("gpu", "") == "bfloat16"


@pytest.mark.parametrize("native, dtype", [(True, "bfloat16"), (False, "float32")])
def test_config_resolves_auto_before_the_model_sees_it(monkeypatch, native, dtype):
  monkeypatch.setattr(perf, "cpu_has_native_bf16", lambda cpuinfo=None: native)
  tree = config_files.load("configs/pretrain.py:100m").to_dict()
  assert tree["model"]["compute_dtype"] == "auto"
  assert config_lib.from_tree(tree).model.compute_dtype == dtype


def test_unknown_compute_dtype_is_refused():
  tree = config_files.load("configs/pretrain.py:tiny").to_dict()
  tree["model"]["compute_dtype"] = "float16"
  with pytest.raises(config_lib.ConfigError, match="compute_dtype='float16'"):
    config_lib.from_tree(tree)
