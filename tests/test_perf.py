"""perf: the published peak of every chip of every host (peak_flops), and the benches' same-run
comparison with transformers (versus_torch)."""

import dataclasses

import jax
import pytest

from seedcoder_jax import perf


@dataclasses.dataclass
class FakeDevice:
  device_kind: str
  platform: str = "tpu"


def _fake_pod(monkeypatch, kind: str, *, processes: int, local: int):
  monkeypatch.setattr(jax, "devices", lambda *a: [FakeDevice(kind)] * (processes * local))
  monkeypatch.setattr(jax, "device_count", lambda *a: processes * local)
  monkeypatch.setattr(jax, "local_device_count", lambda *a: local)
  monkeypatch.setattr(jax, "process_count", lambda *a: processes)
  monkeypatch.setattr(perf, "measured_matmul_peak",
                      lambda *a, **k: pytest.fail(f"{kind!r} fell back to a timed matmul"))


@pytest.mark.parametrize("kind, per_chip", [("TPU v5", 459e12), ("TPU v5p", 459e12),
                                            ("TPU v5 lite", 197e12), ("TPU v5e", 197e12),
                                            ("TPU v6 lite", 918e12), ("TPU v4", 275e12),
                                            ("NVIDIA H100 80GB HBM3", 989e12)])
def test_published_peak_counts_every_chip_of_every_host(monkeypatch, kind, per_chip):
  _fake_pod(monkeypatch, kind, processes=16, local=4)  # e.g. v5p-128: 64 chips on 16 hosts
  peak, source = perf.peak_flops("bfloat16")
  assert peak == per_chip * 64 and kind in source
  # MFU of global tokens: 64 chips each at their peak is 1, not 16.
  assert perf.mfu(1.0, peak, peak) == 1.0


def test_measured_peak_is_summed_over_processes(monkeypatch):
  monkeypatch.setattr(jax, "devices", lambda *a: [FakeDevice("cpu", "cpu")] * 8)
  monkeypatch.setattr(jax, "process_count", lambda *a: 2)
  monkeypatch.setattr(perf, "measured_matmul_peak", lambda *a, **k: 1e9)
  peak, source = perf.peak_flops("float32")
  assert peak == 2e9 and "measured" in source  # fake CPU devices share one host's cores


def test_the_measured_peak_takes_the_fastest_call_not_the_median(monkeypatch):
  # A throttled host: most calls slow, one at full speed. The peak is the fast one; the median
  # (what time_fn reports for benchmarks) would understate it and put MFU above 1.
  durations = iter([0.0, 0.0, 0.2, 0.001, 0.2])  # 2 warm-up calls, then 3 timed
  clock = {"t": 0.0}
  monkeypatch.setattr(perf.time, "perf_counter", lambda: clock["t"])

  def fn():
    clock["t"] += next(durations)

  assert perf.time_fn(fn, iters=3, best=True) == pytest.approx(0.001)
  durations = iter([0.0, 0.0, 0.2, 0.001, 0.2])
  assert perf.time_fn(fn, iters=3) == pytest.approx(0.2)


def test_versus_torch_is_over_torchs_faster_dtype():
  runs = {"float32": {"tokens_per_s": 100.0, "prefill_s": 2.0},
          "bfloat16": {"tokens_per_s": 160.0, "prefill_s": 1.0}}
  line = perf.versus_torch(240.0, runs, keys=("tokens_per_s", "prefill_s"))
  assert line == {"torch_tokens_per_s": 100.0, "torch_prefill_s": 2.0,
                  "torch_bf16_tokens_per_s": 160.0, "torch_bf16_prefill_s": 1.0,
                  "speedup_vs_torch": 1.5, "torch_best_dtype": "bfloat16", "torch": runs}
  assert perf.versus_torch(240.0, {"float32": runs["float32"]})["speedup_vs_torch"] == 2.4
  for bad in ([], ["float16"], ["float32", "int8"]):
    with pytest.raises(ValueError, match="--torch_dtypes"):
      perf.check_torch_dtypes(bad)
  perf.check_torch_dtypes(["bfloat16"])
