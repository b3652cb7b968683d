"""AOT compilation for TPU topologies (seedcoder_jax/aot.py, launch/aot_compile.py).

The parsing and config tests need nothing; the compile tests need libtpu (optional:
requirements-tpu.txt) and run the tool in a subprocess, because this test process has already
imported JAX with 8 fake CPU devices and the tool sets its own environment before importing JAX.
"""

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from seedcoder_jax import aot

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(ROOT, "launch", "aot_compile.py")


@pytest.mark.parametrize("name, libtpu, chips", [
    ("v5p-8", "v5p:2x2x1", 4),
    ("v5p-128", "v5p:4x4x4", 64),
    ("v5p-256", "v5p:4x4x8", 128),
    ("v5p-1024", "v5p:8x8x8", 512),
    ("v6e-256", "v6e:16x16", 256),
    ("v6e-8", "v6e:2x4", 8),
    ("v5e-1", "v5e:1x1", 1),
    ("v5litepod-16", "v5e:4x4", 16),
    ("v5p:4x4x12", "v5p:4x4x12", 192),
    ("v6e=8x16", "v6e:8x16", 128),
])
def test_parse_topology(name, libtpu, chips):
  topo = aot.parse_topology(name)
  assert (topo.libtpu_string, topo.n_chips) == (libtpu, chips)


@pytest.mark.parametrize("name, message", [
    ("v5p-7", "multiple of 2"),
    ("v5p-96", "no standard"),
    ("v9x-8", "unknown TPU generation"),
    ("tpu", "cannot parse"),
    ("v5e:2x2x2", "2 positive dims"),
    ("v4-32", "megacore"),
    ("v4:2x2x2", "megacore"),
])
def test_parse_topology_errors(name, message):
  with pytest.raises(aot.AotError, match=message):
    aot.parse_topology(name)


def test_hbm_table():
  assert aot.parse_topology("v5p-128").hbm_bytes_per_chip == 95 * aot.GIB
  assert aot.parse_topology("v6e-256").hbm_bytes_per_chip == 32 * aot.GIB
  assert aot.parse_topology("v5e-8").hbm_bytes_per_chip == 16 * aot.GIB


def test_parse_mesh():
  assert aot.parse_mesh("fsdp:-1,tensor:4") == {"fsdp": -1, "tensor": 4}
  assert aot.parse_mesh(" data:2 , fsdp:-1 ") == {"data": 2, "fsdp": -1}
  with pytest.raises(aot.AotError, match="AXIS:SIZE"):
    aot.parse_mesh("fsdp=4")


def test_build_spec_defaults_and_precedence(tmp_path):
  spec = aot.build_spec()
  assert spec.preset == "seed_coder_8b" and spec.seq_len == 8192 and spec.batch_size is None
  assert (spec.model.remat, spec.model.compute_dtype) == ("full", "bfloat16")
  assert dict(spec.mesh) == {"fsdp": -1}

  config = tmp_path / "pretrain.py"
  config.write_text(textwrap.dedent("""
      import ml_collections

      def get_config(arg=None):
        c = ml_collections.ConfigDict()
        c.model = ml_collections.ConfigDict({"preset": "1b" if arg == "1b" else "tiny",
                                             "remat": "dots", "rope_scaling": {"factor": 4.0}})
        c.data = ml_collections.ConfigDict({"batch_size": 32, "seq_len": 256})
        c.mesh = "fsdp:-1,tensor:2"
        c.opt = ml_collections.ConfigDict({"peak_lr": 1e-3, "grad_accum_steps": 2})
        return c
      """))
  spec = aot.build_spec(config=f"{config}:1b")
  assert spec.preset == "1b" and spec.model.remat == "dots" and spec.model.compute_dtype == "bfloat16"
  assert spec.model.rope_scaling.factor == 4.0
  assert (spec.batch_size, spec.seq_len, spec.grad_accum_steps) == (32, 256, 2)
  assert dict(spec.mesh) == {"fsdp": -1, "tensor": 2} and spec.opt.peak_lr == 1e-3
  # Explicit arguments (the command line) win over the file.
  spec = aot.build_spec(config=str(config), preset="tiny", seq_len=128,
                        model_overrides={"remat": "none", "compute_dtype": None})
  assert (spec.preset, spec.seq_len, spec.model.remat) == ("tiny", 128, "none")
  # The project's config files list every ModelConfig key, None meaning "the preset's": None
  # keys never override the training defaults.
  spec = aot.build_spec(config="configs/pretrain.py:tiny")
  assert (spec.model.remat, spec.model.compute_dtype) == ("full", "bfloat16")
  # compute_dtype="auto" (configs/pretrain.py:100m, configs/sft.py:demo) means bfloat16 on the
  # accelerator the tool compiles for, whatever this host's CPU is.
  for config in ("configs/pretrain.py:100m", "configs/sft.py:demo", "configs/dpo.py:demo"):
    assert aot.build_spec(config=config).model.compute_dtype == "bfloat16", config


def test_missing_config_file_is_a_clear_error():
  with pytest.raises(aot.AotError, match="does not exist"):
    aot.build_spec(config="configs/no_such_file.py:8b")


def test_unknown_preset_is_a_clear_error():
  with pytest.raises(aot.AotError, match="unknown model preset"):
    aot.build_spec(preset="70b")


def _run_tool(*args, timeout=900):
  env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_PLATFORMS")}
  env["PYTHONPATH"] = ROOT
  return subprocess.run([sys.executable, TOOL, *args], capture_output=True, text=True, env=env,
                        timeout=timeout, cwd=ROOT)


needs_libtpu = pytest.mark.skipif(
    importlib.util.find_spec("libtpu") is None,
    reason="libtpu is not installed (optional: `pip install -r requirements-tpu.txt`); compiling "
           "for a TPU topology needs its XLA:TPU compiler")


def test_tool_reports_missing_config_file():
  result = _run_tool("--config=configs/no_such_file.py:8b", "--topology=v5e-8", timeout=300)
  assert result.returncode == 2
  assert "does not exist" in result.stderr


# Each compile takes 5-20 s on a 2-core CPU (up to ~50 s when other jobs load it): not marked slow.
@needs_libtpu
def test_tiny_train_step_compiles_for_v5e_8():
  result = _run_tool("--preset=tiny", "--topology=v5e-8", "--seq_len=128", "--mesh=fsdp:4,tensor:2")
  assert result.returncode == 0, result.stderr[-3000:]
  lines = result.stdout.strip().splitlines()
  assert len(lines) == 1, result.stdout
  report = json.loads(lines[0])
  assert report["topology"] == "v5e-8" and report["libtpu_topology"] == "v5e:2x4"
  assert report["n_chips"] == report["n_devices"] == 8
  assert report["mesh"] == {"data": 1, "fsdp": 4, "tensor": 2}
  assert report["model"]["hidden_size"] == 128 and report["model"]["num_key_value_heads"] == 4
  assert report["batch_size"] == 4 and report["seq_len"] == 128  # one sequence per fsdp shard
  for key in ("argument_bytes", "output_bytes", "alias_bytes", "temp_bytes"):
    assert isinstance(report[key], int) and report[key] >= 0
  assert report["alias_bytes"] > 0  # the donated train state aliases the new one
  assert report["total_bytes_per_device"] == (
      report["argument_bytes"] + report["output_bytes"] - report["alias_bytes"]
      + report["temp_bytes"] + report["generated_code_bytes"])
  assert report["hbm_bytes_per_chip"] == 16 * 2 ** 30 and report["fits"] is True
  # The scanned stack's body is counted once; the 2-layer unrolled copy gives every layer.
  assert report["xla_flops_scan_body_counted_once"] is True
  assert report["xla_flops_per_device_all_layers"] > report["xla_flops_per_device"] > 0
  assert report["xla_flops_global"] == report["xla_flops_per_device_all_layers"] * 8
  # Full remat recomputes the forward pass and the XLA attention skips no masked tiles: XLA's
  # count lies above the 6*N*tokens + causal-attention estimate, within a factor of two.
  assert 1.0 < report["xla_over_estimate"] < 2.0
  assert report["involuntary_full_rematerializations"] == []
  # FSDP over 4 chips gathers the weights: the HLO's collectives are counted into the report.
  assert set(report["collectives"]) == set(aot.COLLECTIVE_KINDS)
  assert report["collectives"]["all-gather"]["count"] > 0
  assert report["collective_bytes_per_device"] == sum(
      v["bytes"] for v in report["collectives"].values()) > 0


@needs_libtpu
def test_splash_attention_compiles_to_the_tpu_kernel():
  """On a CPU host the program must hold the Mosaic TPU kernel, not the interpreted one."""
  spec = aot.build_spec(preset="tiny", seq_len=256, model_overrides={"attention_impl": "splash"})
  topology = aot.parse_topology("v5e-8")
  mesh = aot.topology_mesh(spec.mesh, aot.topology_devices(topology))
  compiled, _, _ = aot._compile(spec.model, spec, mesh, 8, [])
  assert "tpu_custom_call" in compiled.as_text()


@needs_libtpu
def test_step_that_exceeds_hbm_is_refused():
  # 8192 sequences of 512 tokens without remat: each of the 8 devices would keep ~1024 sequences'
  # attention probabilities for the backward pass, tens of GiB against v5e's 16 GiB.
  result = _run_tool("--preset=tiny", "--topology=v5e-8", "--seq_len=512", "--batch_size=8192",
                     "--remat=none")
  assert result.returncode == 1, result.stderr[-3000:]
  assert "does not fit: needs" in result.stderr and "v5e has 16 GiB per chip" in result.stderr, (
      result.stderr[-3000:])
  assert "try --remat=full" in result.stderr and "tensor:2" in result.stderr
  assert "Traceback" not in result.stderr
  report = json.loads(result.stdout.strip().splitlines()[-1])
  assert report["fits"] is False and report["total_bytes_per_device"] > 16 * 2 ** 30
  assert report["model"]["hidden_size"] == 128 and report["batch_size"] == 8192


_POST_CONFIG = '''
from seedcoder_jax import config_files


def get_config(arg):
  c = config_files.load("{root}/configs/" + arg + ".py:demo")
  c.model.update(preset="tiny", max_seq_len=512)
  c.init.update(kind="gguf", path="")
  c.mesh.update(data=1, fsdp=4, tensor=2)
  c.data.update(batch_size=4, seq_len=128)
  if arg == "rl":
    c.rl.stages = ((1, 64, 4),)
    c.rl.mini_batches = 2
  return c
'''


@needs_libtpu
@pytest.mark.parametrize("trainer, rows", [("dpo", 8), pytest.param("rl", 8, marks=pytest.mark.slow)])
def test_post_training_steps_compile_for_v5e_8(tmp_path, trainer, rows):
  """The DPO step (chosen + rejected rows) and the GRPO update (batch x G / mini_batches rows)
  compile through the same tool, picked by the config's trainer."""
  (tmp_path / "post.py").write_text(_POST_CONFIG.format(root=ROOT))
  result = _run_tool(f"--config={tmp_path / 'post.py'}:{trainer}", "--topology=v5e-8",
                     "--noexact_flops")
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(result.stdout.strip().splitlines()[-1])
  assert report["trainer"] == {"dpo": "dpo", "rl": "grpo"}[trainer]
  assert report["batch_rows"] == rows and report["seq_len"] == 128 and report["fits"] is True


@pytest.mark.slow
@needs_libtpu
def test_rollout_decode_chunk_compiles_for_v5e_8(tmp_path):
  """The RL loop's decode program (rollout engine) compiles for the training mesh."""
  (tmp_path / "post.py").write_text(_POST_CONFIG.format(root=ROOT))
  result = _run_tool(f"--config={tmp_path / 'post.py'}:rl", "--topology=v5e-8", "--decode",
                     "--seq_len=256")
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(result.stdout.strip().splitlines()[-1])
  assert report["what"] == "rollout decode chunk" and report["cache_len"] == 256
  assert report["slots"] == 32 and report["fits"] is True
  # The cache (k and v: 2 layers x 32 rows x 256 columns x 4 kv heads x 16 dims, float32), split
  # over the 8 chips (rows over fsdp 4, kv heads over tensor 2), is among the arguments.
  itemsize = 2 if report["compute_dtype"] == "bfloat16" else 4
  assert report["argument_bytes"] >= 2 * 2 * 32 * 256 * 4 * 16 * itemsize // 8


@pytest.mark.parametrize("name, slices, expected", [
    ("2xv5p-128", 1, ("v5p:4x4x4", 64, 2)),
    ("v5p-128", 2, ("v5p:4x4x4", 64, 2)),
    ("4xv6e-256", 4, ("v6e:16x16", 256, 4)),
    ("v5e-8", 1, ("v5e:2x4", 8, 1)),
])
def test_parse_multi_slice_topology(name, slices, expected):
  topo = aot.parse_topology(name, slices)
  assert (topo.libtpu_string, topo.n_chips, topo.num_slices) == expected


def test_parse_multi_slice_topology_errors():
  with pytest.raises(aot.AotError, match="names 2 slices but num_slices=3"):
    aot.parse_topology("2xv5p-128", 3)
  with pytest.raises(aot.AotError, match="num_slices=0"):
    aot.parse_topology("v5p-128", 0)


@needs_libtpu
def test_multi_slice_step_compiles_with_the_data_axis_across_slices():
  """libtpu describes 2 x v5e-4 (devices with slice_index); the data axis spans the slices."""
  topology = aot.parse_topology("v5e-4", 2)
  devices = aot.topology_devices(topology)
  assert len(devices) == 8 and sorted({d.slice_index for d in devices}) == [0, 1]
  mesh = aot.topology_mesh({"fsdp": -1, "tensor": 2}, devices)
  assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
  for i, block in enumerate(mesh.devices):
    assert {d.slice_index for d in block.flat} == {i}
  result = _run_tool("--preset=tiny", "--topology=v5e-4", "--num_slices=2", "--seq_len=128",
                     "--mesh=fsdp:-1,tensor:2", "--noexact_flops")
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(result.stdout.strip().splitlines()[-1])
  assert report["num_slices"] == 2 and report["n_chips"] == report["n_devices"] == 8
  assert report["mesh"] == {"data": 2, "fsdp": 2, "tensor": 2} and report["fits"] is True


def test_hlo_collectives_parses_sync_async_and_tuple_results():
  text = textwrap.dedent("""\
      ENTRY %main {
        %p = f32[8,16]{1,0} parameter(0)
        %all-gather.1 = f32[64,16]{1,0} all-gather(f32[8,16]{1,0} %p), dimensions={0}
        %ags = (f32[8,16]{1,0}, bf16[64,16]{1,0:T(8,128)(2,1)}) all-gather-start(%p), dimensions={0}
        %agd = bf16[64,16]{1,0:T(8,128)(2,1)} all-gather-done(%ags)
        %ar = (f32[4]{0}, /*index=1*/s32[2]{0}) all-reduce(%a, %b), to_apply=%add
        %rs = bf16[2,3]{1,0} reduce-scatter(%q), dimensions={0}, to_apply=%add
        %all-reduce-start.2 = f32[5]{0} all-reduce-start(%c), to_apply=%add
        %all-reduce-done.2 = f32[5]{0} all-reduce-done(%all-reduce-start.2)
        ROOT %cp-done = u8[10]{0} collective-permute-done(%cps)
      }
      """)
  got = aot.hlo_collectives(text, top=2)
  assert got["per_kind"] == {
      "all-gather": {"count": 2, "bytes": 64 * 16 * 4 + 64 * 16 * 2},
      "reduce-scatter": {"count": 1, "bytes": 12},
      "all-reduce": {"count": 2, "bytes": 4 * 4 + 2 * 4 + 5 * 4},
      "all-to-all": {"count": 0, "bytes": 0},
      "collective-permute": {"count": 1, "bytes": 10}}
  assert got["bytes"] == 4096 + 2048 + 12 + 44 + 10
  assert got["largest"] == [{"name": "all-gather.1", "kind": "all-gather", "bytes": 4096},
                            {"name": "agd", "kind": "all-gather", "bytes": 2048}]


def test_hlo_collectives_of_a_sharded_cpu_compile():
  """8 fake CPU devices: an explicit all-gather, reduce-scatter and all-reduce, bytes by hand."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from jax.sharding import Mesh, NamedSharding, PartitionSpec as P  # pylint: disable=g-import-not-at-top,g-multiple-import
  assert jax.device_count() == 8
  mesh = Mesh(np.array(jax.devices()), ("d",))

  # f32 throughout: XLA:CPU runs a bf16 reduce-scatter in f32 (converts around it).
  def body(x, y):  # per device: x [8, 16], y [64, 32]
    gathered = jax.lax.all_gather(x, "d", tiled=True)           # [64, 16] f32: 4096 bytes
    scattered = jax.lax.psum_scatter(y, "d", tiled=True)        # [8, 32] f32: 1024 bytes
    total = jax.lax.psum(jnp.sum(gathered, axis=0), "d")        # [16] f32: 64 bytes
    return gathered * total, scattered

  fn = jax.jit(jax.shard_map(body, mesh=mesh, in_specs=(P("d"), P(None)),
                             out_specs=(P(None), P("d")), check_vma=False))
  x = jax.ShapeDtypeStruct((64, 16), jnp.float32, sharding=NamedSharding(mesh, P("d")))
  y = jax.ShapeDtypeStruct((64, 32), jnp.float32, sharding=NamedSharding(mesh, P(None)))
  got = aot.hlo_collectives(fn.lower(x, y).compile().as_text())["per_kind"]
  assert got["all-gather"] == {"count": 1, "bytes": 64 * 16 * 4}
  assert got["reduce-scatter"] == {"count": 1, "bytes": 8 * 32 * 4}
  assert got["all-reduce"] == {"count": 1, "bytes": 16 * 4}
  assert got["all-to-all"]["count"] == got["collective-permute"]["count"] == 0
