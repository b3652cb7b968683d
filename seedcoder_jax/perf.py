"""Throughput accounting: peak matmul FLOP/s measured in-process, MFU, machine description.

MFU here is model FLOPs (ModelConfig.flops_per_token: 6N plus causal attention, no remat
recomputation) per second over the peak of a large jitted matmul in the compute dtype, measured
on the same devices in the same process, or, in bfloat16 on accelerators with a published peak
(PUBLISHED_PEAK_BF16), that peak; either way summed over every device of every process, since the
trainer's tokens per second count the global batch.
"""

from __future__ import annotations

import os
import platform
import time

import jax
import jax.numpy as jnp

# Published dense peaks per chip (bf16), FLOP/s, for MFU on known accelerators, keyed by
# `device.device_kind` as the runtime reports it: v5p chips call themselves "TPU v5", v5e chips
# "TPU v5 lite" (older runtimes: "TPU v5e"), v6e (Trillium) chips "TPU v6 lite".
PUBLISHED_PEAK_BF16 = {
    "NVIDIA H100 80GB HBM3": 989e12,
    "NVIDIA H200": 989e12,
    "TPU v4": 275e12,
    "TPU v5": 459e12,
    "TPU v5p": 459e12,
    "TPU v5 lite": 197e12,
    "TPU v5e": 197e12,
    "TPU v6 lite": 918e12,
    "TPU v6e": 918e12,
}


def time_fn(fn, *args, warmup: int = 2, iters: int = 5, best: bool = False) -> float:
  """Median (best: fastest) seconds of fn(*args) with results blocked on; compilation excluded
  by warm-up."""
  for _ in range(warmup):
    jax.block_until_ready(fn(*args))
  times = []
  for _ in range(iters):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
  return min(times) if best else sorted(times)[len(times) // 2]


def measured_matmul_peak(dtype: str = "float32", n: int = 2048) -> float:
  """FLOP/s of a jitted n x n matmul on the default device (fp32 accumulation), from the fastest
  of 9 calls: a peak is the best the device does, and on a shared or throttled host the median
  call can be several times slower, which put MFU above 1 (docs/benchmarks.md, scorer inference)."""
  dt = jnp.bfloat16 if dtype == "bfloat16" else jnp.float32
  a = jnp.ones((n, n), dt)
  b = jnp.ones((n, n), dt)
  f = jax.jit(lambda a, b: jnp.dot(a, b, preferred_element_type=jnp.float32))
  return 2 * n ** 3 / time_fn(f, a, b, iters=9, best=True)


def peak_flops(dtype: str = "float32") -> tuple[float, str]:
  """(peak FLOP/s of all devices of all processes, where it came from): the denominator of MFU
  for global tokens per second."""
  dev = jax.devices()[0]
  published = PUBLISHED_PEAK_BF16.get(dev.device_kind)
  if published is not None and dtype == "bfloat16":
    return published * jax.device_count(), f"published bf16 peak of {dev.device_kind}"
  n = 4096 if dev.platform != "cpu" else 2048
  # Fake CPU devices share the same cores, so one device's measurement is the machine's peak.
  per_process = 1 if dev.platform == "cpu" else jax.local_device_count()
  return (measured_matmul_peak(dtype, n) * per_process * jax.process_count(),
          f"measured {n}x{n} {dtype} matmul")


def mfu(flops_per_token: float, tokens_per_s: float, peak: float) -> float:
  return flops_per_token * tokens_per_s / peak


# CPU feature flags (Linux /proc/cpuinfo) that mean bfloat16 dot products in hardware: x86's
# AVX-512 BF16 (Cooper Lake, Sapphire Rapids, Zen 4 and later) and AMX, Arm's BF16 extension.
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
  """Whether this CPU multiplies bfloat16 natively (its flags/Features lines name one of
  NATIVE_BF16_FLAGS); False where /proc/cpuinfo cannot be read. `cpuinfo` is for tests."""
  if cpuinfo is None:
    try:
      with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
        cpuinfo = f.read()
    except OSError:
      return False
  for line in cpuinfo.splitlines():
    key, _, value = line.partition(":")
    if key.strip().lower() in ("flags", "features") and NATIVE_BF16_FLAGS & set(value.split()):
      return True
  return False


def auto_compute_dtype(backend: str | None = None, cpuinfo: str | None = None) -> str:
  """The compute dtype for `compute_dtype="auto"`: bfloat16 on accelerators and on CPUs with
  native bf16 dot products; float32 on other CPUs, where XLA emulates bf16 matmuls and they are
  slower than float32 (docs/benchmarks.md, "Same-run ratios on a CPU with native bf16")."""
  backend = backend or jax.default_backend()
  return "bfloat16" if backend != "cpu" or cpu_has_native_bf16(cpuinfo) else "float32"


def resolve_compute_dtype(dtype: str, backend: str | None = None) -> str:
  """`dtype`, with "auto" replaced by auto_compute_dtype(backend): ModelConfig only sees real
  dtypes (train/config.py, aot.py and the benches resolve through here)."""
  return auto_compute_dtype(backend) if dtype == "auto" else dtype


def machine() -> dict:
  dev = jax.devices()[0]
  out = {
      "platform": dev.platform,
      "device_kind": dev.device_kind,
      "device_count": jax.device_count(),
      "cpu_count": os.cpu_count(),
      "processor": platform.processor() or platform.machine(),
      "jax": jax.__version__,
  }
  if dev.platform == "cpu":
    out["native_bf16"] = cpu_has_native_bf16()
  return out


TORCH_DTYPES = ("float32", "bfloat16")  # the dtypes the benches' transformers peers run in


def check_torch_dtypes(dtypes) -> None:
  """Refuses a --torch_dtypes list that is empty or names a dtype the peers do not run."""
  if not dtypes or set(dtypes) - set(TORCH_DTYPES):
    raise ValueError(f"--torch_dtypes: got {list(dtypes)}; choose from {', '.join(TORCH_DTYPES)}")


def versus_torch(tokens_per_s: float, runs: dict, keys=("tokens_per_s",)) -> dict:
  """A bench line's same-run comparison with transformers, from the torch runs by dtype: each of
  `keys` as torch_KEY (float32) and torch_bf16_KEY, speedup_vs_torch over torch's faster dtype
  (the issue's "torch at its best setting"), torch_best_dtype, and the runs under "torch"."""
  out = {}
  for dtype, prefix in (("float32", "torch_"), ("bfloat16", "torch_bf16_")):
    if dtype in runs:
      out.update({prefix + key: runs[dtype][key] for key in keys})
  best = max(runs, key=lambda d: runs[d]["tokens_per_s"])
  return {**out, "speedup_vs_torch": round(tokens_per_s / runs[best]["tokens_per_s"], 2),
          "torch_best_dtype": best, "torch": runs}
