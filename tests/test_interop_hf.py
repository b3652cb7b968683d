"""Hugging Face Llama interop: config mapping, logit parity with transformers in both directions,
bit-identical round trips, streaming memory, sharded loading, bad input, and launch/convert.py."""

import json
import os
import pathlib
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from seedcoder_jax import model as model_lib
from seedcoder_jax import sharding as sharding_lib
from seedcoder_jax.interop import hf
from seedcoder_jax.model.config import RopeScaling
from numerics import assert_close_to_scale
from refenv import ROOT, run_reference

# config.json of ByteDance-Seed/Seed-Coder-8B-Base as published on the Hugging Face hub.
SEED_CODER_8B_BASE_CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.1,
    "bos_token_id": 0,
    "eos_token_id": 2,
    "hidden_act": "silu",
    "hidden_size": 4096,
    "initializer_range": 0.009882118,
    "intermediate_size": 14336,
    "layer_norm_eps": None,
    "max_position_embeddings": 32768,
    "mlp_bias": False,
    "model_type": "llama",
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "num_key_value_heads": 8,
    "resid_pdrop": 0.1,
    "rms_norm_eps": 1e-06,
    "rope_theta": 500000.0,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "transformers_version": "4.46.2",
    "use_cache": True,
    "vocab_size": 155136,
}

_LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
           "original_max_position_embeddings": 8}

# Random transformers models (tests/reference/hf_llama.py make): name -> (config, dtype, shard size).
REFERENCE_MODELS = {
    # GQA, odd sizes, theta 500k, float32, one file.
    "gqa_odd": (dict(vocab_size=101, hidden_size=48, intermediate_size=80, num_hidden_layers=3,
                     num_attention_heads=6, num_key_value_heads=2, rope_theta=500000.0,
                     max_position_embeddings=64), "float32", None),
    # Llama-3.1 RoPE scaling with a short original context so every frequency band is exercised;
    # head_dim given explicitly and unequal to hidden/heads.
    "llama3_rope": (dict(vocab_size=97, hidden_size=40, intermediate_size=72, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=12,
                         rope_theta=500000.0, rope_scaling=_LLAMA3, rms_norm_eps=1e-5,
                         max_position_embeddings=64), "float32", None),
    # Tied embeddings, plain multi-head attention.
    "tied_mha": (dict(vocab_size=67, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4, rope_theta=10000.0,
                      rms_norm_eps=1e-5, tie_word_embeddings=True, max_position_embeddings=64),
                 "float32", None),
    # The published Seed-Coder config (all its extra keys) shrunk, stored like the release:
    # bf16, sharded, with an index.
    "seed_coder_small": ({**{k: v for k, v in SEED_CODER_8B_BASE_CONFIG.items()
                             if k not in ("architectures", "model_type", "transformers_version",
                                          "torch_dtype")},
                          "vocab_size": 155, "hidden_size": 64, "intermediate_size": 96,
                          "num_hidden_layers": 4, "num_attention_heads": 8,
                          "num_key_value_heads": 2}, "bfloat16", "60KB"),
}
TOKENS_SHAPE = (2, 13)


def _tokens(vocab_size, seed=0):
  return np.random.default_rng(seed).integers(0, vocab_size, TOKENS_SHAPE).astype(np.int32)


def _files(directory):
  return {p.name: p.read_bytes() for p in sorted(pathlib.Path(directory).iterdir())}


def _scaled_init(cfg, seed=0):
  """Random params with O(1) logits (init_std 0.02 gives tiny ones) and norms not all ones."""
  rng = np.random.default_rng(seed)
  def draw(path, leaf):
    x = rng.standard_normal(leaf.shape, np.float32)
    if jax.tree_util.keystr(path).endswith("['scale']"):
      return jnp.asarray(1.0 + 0.2 * x)
    return jnp.asarray(x / np.sqrt(cfg.d_model))
  return jax.tree_util.tree_map_with_path(draw, model_lib.abstract_params(cfg))


# Our random models saved by hf.save, for transformers to load: name -> (config, dtype, shard bytes).
OUR_MODELS = {
    "ours_f32": (model_lib.ModelConfig(
        vocab_size=89, d_model=48, n_layers=2, n_heads=6, n_kv_heads=3, head_dim=8, d_ff=100,
        rope_theta=500000.0, max_seq_len=64,
        rope_scaling=RopeScaling(original_max_position_embeddings=8)), "float32", hf.DEFAULT_MAX_SHARD_BYTES),
    "ours_tied_bf16": (model_lib.ModelConfig(
        vocab_size=64, d_model=32, n_layers=3, n_heads=4, n_kv_heads=2, head_dim=8, d_ff=48,
        rms_norm_eps=1e-5, tie_embeddings=True), "bfloat16", 4000),
}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """One run of tests/reference/hf_llama.py for the whole module.

  Returns name -> (checkpoint dir, tokens, transformers' float32 logits) for REFERENCE_MODELS
  (made and saved by transformers) and OUR_MODELS (saved by hf.save, loaded by transformers).
  """
  root = tmp_path_factory.mktemp("hf_reference")
  jobs = []
  def job(name, op, vocab_size, token_seed, **extra):
    np.save(root / f"{name}_tokens.npy", _tokens(vocab_size, seed=token_seed))
    jobs.append(dict(op=op, dir=str(root / name), tokens=str(root / f"{name}_tokens.npy"),
                     logits=str(root / f"{name}_logits.npy"), **extra))
  for i, (name, (config, dtype, shard)) in enumerate(REFERENCE_MODELS.items()):
    job(name, "make", config["vocab_size"], i, config=config, seed=i, dtype=dtype,
        max_shard_size=shard)
  for i, (name, (cfg, dtype, shard)) in enumerate(OUR_MODELS.items()):
    hf.save(root / name, cfg, _scaled_init(cfg, seed=10 + i), dtype=dtype, max_shard_bytes=shard)
    job(name, "logits", cfg.vocab_size, 10 + i)
  (root / "jobs.json").write_text(json.dumps(jobs))
  run_reference("hf_llama.py", root / "jobs.json")
  return {name: (root / name, np.load(root / f"{name}_tokens.npy"),
                 np.load(root / f"{name}_logits.npy"))
          for name in [*REFERENCE_MODELS, *OUR_MODELS]}


# ---------------------------------------------------------------------------------------------
# config.json


def test_seed_coder_8b_config_is_the_preset():
  cfg = hf.config_from_hf(SEED_CODER_8B_BASE_CONFIG)
  assert cfg == model_lib.preset("seed_coder_8b")
  assert cfg.hf_names() == model_lib.preset("8b").hf_names()
  # The tensors its sharded checkpoint must hold, under transformers' names.
  shapes = hf.hf_tensor_shapes(cfg)
  assert len(shapes) == 3 + 9 * 32
  assert shapes["model.embed_tokens.weight"] == (155136, 4096)
  assert shapes["lm_head.weight"] == (155136, 4096)
  assert shapes["model.layers.31.self_attn.k_proj.weight"] == (1024, 4096)
  assert shapes["model.layers.0.mlp.down_proj.weight"] == (4096, 14336)
  assert sum(np.prod(s) for s in shapes.values()) == cfg.n_params


@pytest.mark.parametrize("cfg", [
    model_lib.preset("seed_coder_8b"), model_lib.preset("smollm2_135m"),
    model_lib.preset("tiny", rope_scaling=RopeScaling(factor=4.0, original_max_position_embeddings=64)),
])
def test_config_round_trip(cfg):
  assert hf.config_from_hf(hf.config_to_hf(cfg)) == cfg


def test_config_reads_transformers_v5_rope_parameters():
  v5 = {k: v for k, v in hf.config_to_hf(model_lib.preset("tiny")).items()
        if k not in ("rope_theta", "rope_scaling")}
  v5["rope_parameters"] = {**_LLAMA3, "rope_theta": 123.0}
  cfg = hf.config_from_hf(v5)
  assert cfg.rope_theta == 123.0 and cfg.rope_scaling == RopeScaling(original_max_position_embeddings=8)
  v5["rope_parameters"] = {"rope_type": "default", "rope_theta": 7.0}
  assert hf.config_from_hf(v5).rope_scaling is None and hf.config_from_hf(v5).rope_theta == 7.0


@pytest.mark.parametrize("change, message", [
    ({"attention_bias": True}, "attention_bias=True"),
    ({"mlp_bias": True}, "mlp_bias=True"),
    ({"hidden_act": "gelu"}, "hidden_act='gelu'"),
    ({"architectures": ["MistralForCausalLM"]}, "architectures=['MistralForCausalLM']"),
    ({"model_type": "qwen2"}, "model_type='qwen2'"),
    ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "rope_scaling.rope_type='yarn'"),
    ({"rope_scaling": {"type": "linear", "factor": 2.0}}, "rope_scaling.rope_type='linear'"),
    ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, "lacks ['low_freq_factor'"),
    ({"quantization_config": {"bits": 4}}, "quantization_config"),
    ({"hidden_size": 50, "head_dim": None}, "hidden_size=50 is not a multiple"),
])
def test_config_refuses_what_we_cannot_represent(change, message):
  hf_config = {**SEED_CODER_8B_BASE_CONFIG, **change}
  with pytest.raises(hf.HFFormatError, match=re.escape(message)):
    hf.config_from_hf(hf_config)


def test_config_missing_key_is_named():
  hf_config = dict(SEED_CODER_8B_BASE_CONFIG)
  del hf_config["intermediate_size"]
  with pytest.raises(hf.HFFormatError, match="intermediate_size"):
    hf.config_from_hf(hf_config)


# ---------------------------------------------------------------------------------------------
# Logit parity with transformers
#
# torch and XLA compute the same float32 model with different kernels and summation orders (and
# both pick kernels by CPU generation): measured differences are ~4e-6 on logits up to ~4.3. The
# 1e-4 absolute tolerance is 2.5e-5 of that scale (8 eps32 * sqrt(~600)): above any CPU's rounding,
# yet a wrong weight layout, RoPE or norm moves the logits by O(0.1-1).


@pytest.mark.reference
@pytest.mark.parametrize("name", list(REFERENCE_MODELS))
def test_load_matches_transformers_logits(reference, name):
  directory, tokens, ref_logits = reference[name]
  cfg, params = hf.load(directory)
  assert cfg == hf.config_from_hf(json.loads((directory / "config.json").read_text()))
  assert float(np.std(ref_logits)) > 0.3, "reference logits too small to test the mapping"
  logits = np.asarray(model_lib.forward(cfg, params, tokens))
  np.testing.assert_allclose(logits, ref_logits, atol=1e-4, rtol=0)


@pytest.mark.reference
def test_reference_checkpoint_layout(reference):
  """The bf16 release-like checkpoint really is sharded with an index, and loads unscanned too."""
  directory, tokens, ref_logits = reference["seed_coder_small"]
  names = sorted(p.name for p in directory.iterdir())
  assert hf.INDEX_FILE in names and sum(n.endswith(".safetensors") for n in names) >= 3
  cfg, params = hf.load(directory, scan_layers=False)
  assert "layers_3" in params and not cfg.scan_layers
  np.testing.assert_allclose(np.asarray(model_lib.forward(cfg, params, tokens)), ref_logits,
                             atol=1e-4, rtol=0)


@pytest.mark.reference
@pytest.mark.parametrize("name", list(OUR_MODELS))
def test_saved_checkpoint_loads_in_transformers(reference, name):
  """hf.save output (float32 one file; tied bf16 sharded) -> from_pretrained gives our logits."""
  directory, tokens, ref_logits = reference[name]
  cfg, dtype, _ = OUR_MODELS[name]
  assert (directory / hf.INDEX_FILE).exists() == (dtype == "bfloat16")
  assert float(np.std(ref_logits)) > 0.3, "reference logits too small to test the mapping"
  # Our params as stored (bf16-rounded where saved in bf16): the generating ones, rounded.
  params = _scaled_init(cfg, seed=10 + list(OUR_MODELS).index(name))
  if dtype == "bfloat16":
    params = jax.tree.map(lambda x: x.astype(jnp.bfloat16).astype(jnp.float32), params)
  logits = np.asarray(model_lib.forward(cfg, params, tokens))
  np.testing.assert_allclose(logits, ref_logits, atol=1e-4, rtol=0)


# ---------------------------------------------------------------------------------------------
# Round trips, sharding, streaming

SMALL = model_lib.ModelConfig(vocab_size=96, d_model=32, n_layers=2, n_heads=8, n_kv_heads=4,
                              head_dim=8, d_ff=64, max_seq_len=128)


@pytest.mark.parametrize("dtype, max_shard_bytes", [("float32", 10**9), ("bfloat16", 5000)])
def test_save_load_save_is_bit_identical(tmp_path, dtype, max_shard_bytes):
  hf.save(tmp_path / "a", SMALL, _scaled_init(SMALL), dtype=dtype, max_shard_bytes=max_shard_bytes)
  cfg, params = hf.load(tmp_path / "a")
  hf.save(tmp_path / "b", cfg, params, dtype=dtype, max_shard_bytes=max_shard_bytes)
  first, second = _files(tmp_path / "a"), _files(tmp_path / "b")
  assert (hf.INDEX_FILE in first) == (max_shard_bytes < 10**9)
  assert first.keys() == second.keys() and all(first[k] == second[k] for k in first)
  # Files are valid safetensors for the reference library too.
  for name in first:
    if name.endswith(".safetensors"):
      assert load_file(tmp_path / "a" / name)
  # Unscanned params save the same bytes.
  _, unscanned = hf.load(tmp_path / "a", scan_layers=False)
  hf.save(tmp_path / "c", cfg, unscanned, dtype=dtype, max_shard_bytes=max_shard_bytes)
  assert _files(tmp_path / "c") == first


@pytest.mark.parametrize("scan_layers", [True, False])
def test_sharded_load_on_2x4_mesh(tmp_path, scan_layers):
  mesh = sharding_lib.make_mesh({"data": 1, "fsdp": 2, "tensor": 4})
  hf.save(tmp_path, SMALL, _scaled_init(SMALL), max_shard_bytes=20000)
  cfg, sharded = hf.load(tmp_path, mesh=mesh, scan_layers=scan_layers)
  _, single = hf.load(tmp_path, scan_layers=scan_layers)
  expected = sharding_lib.param_shardings(cfg, mesh)
  flat_expected = dict(jax.tree_util.tree_leaves_with_path(expected))
  for path, x in jax.tree_util.tree_leaves_with_path(sharded):
    assert x.sharding.is_equivalent_to(flat_expected[path], x.ndim), jax.tree_util.keystr(path)
  assert any(len(x.sharding.device_set) == 8 and not x.sharding.is_fully_replicated
             for x in jax.tree.leaves(sharded))
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
               sharded, single)
  tokens = _tokens(cfg.vocab_size)
  with sharding_lib.activate(mesh):
    logits = jax.jit(lambda p, t: model_lib.forward(cfg, p, t))(sharded, tokens)
  # Sharded contractions sum in another order: float32 reassociation relative to the logits'
  # scale (tests/numerics.py); the raw atol of 1e-5 it replaces was 5x the measured 2e-6.
  assert_close_to_scale(np.asarray(logits), np.asarray(model_lib.forward(cfg, single, tokens)),
                        terms=cfg.d_ff)


_STREAMING_PROBE = """
import json, re, sys
import jax
from seedcoder_jax.interop import hf

def status_kib(key):
  with open("/proc/self/status") as f:
    return int(re.search(key + r":\\s+(\\d+)", f.read()).group(1))

jax.block_until_ready(hf.load(sys.argv[1])[1])  # warm-up: tracing, compilation, allocator pools
# Reset the peak (VmHWM) to the current RSS. ru_maxrss would not do: Linux carries the parent's
# peak across fork+exec, so a large pytest process would hide the child's own peak.
with open("/proc/self/clear_refs", "w") as f:
  f.write("5")
base = status_kib("VmRSS")
cfg, params = hf.load(sys.argv[2])
jax.block_until_ready(params)
print(json.dumps({"base_kib": base, "peak_kib": status_kib("VmHWM"),
                  "params_bytes": sum(x.nbytes for x in jax.tree.leaves(params))}))
"""


def test_load_streams_without_materialising_twice(tmp_path):
  """A ~330 MB float32 checkpoint loads with peak RSS growth well under twice its size."""
  if not os.access("/proc/self/clear_refs", os.W_OK):
    pytest.skip("needs Linux's /proc/self/clear_refs to reset the peak RSS")
  big = model_lib.ModelConfig(vocab_size=32000, d_model=512, n_layers=16, n_heads=8, n_kv_heads=4,
                              head_dim=64, d_ff=1536, max_seq_len=512)
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda a: rng.standard_normal(a.shape, np.float32),
                        model_lib.abstract_params(big))
  hf.save(tmp_path / "big", big, params, max_shard_bytes=100 * 10**6)
  del params
  hf.save(tmp_path / "tiny", SMALL, _scaled_init(SMALL))
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env.update(JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
  proc = subprocess.run([sys.executable, "-c", _STREAMING_PROBE, str(tmp_path / "tiny"),
                         str(tmp_path / "big")], capture_output=True, text=True, env=env,
                        timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  stats = json.loads(proc.stdout.strip().splitlines()[-1])
  size = stats["params_bytes"]
  assert size > 300 * 10**6
  growth = (stats["peak_kib"] - stats["base_kib"]) * 1024
  # The loaded params themselves take `size`; one leaf in flight adds at most its own size
  # (the largest here, the embedding, is 20% of the total). Reading everything first would add
  # another `size` on top.
  print(f"streaming load: params {size / 1e6:.0f} MB, peak RSS growth {growth / 1e6:.0f} MB")
  assert growth < 1.5 * size, stats


# ---------------------------------------------------------------------------------------------
# Bad input


@pytest.fixture
def small_checkpoint(tmp_path):
  hf.save(tmp_path, SMALL, _scaled_init(SMALL))
  return tmp_path


def _edit_tensors(directory, edit):
  path = directory / hf.SINGLE_FILE
  tensors = load_file(path)
  edit(tensors)
  save_file(tensors, path, metadata={"format": "pt"})


def test_missing_tensor_is_named(small_checkpoint):
  _edit_tensors(small_checkpoint, lambda t: t.pop("model.layers.1.mlp.up_proj.weight"))
  with pytest.raises(hf.HFFormatError, match=r"'model\.layers\.1\.mlp\.up_proj\.weight'.*missing"):
    hf.load(small_checkpoint)


def test_wrong_shape_is_named_with_its_file(small_checkpoint):
  def edit(t):
    t["model.layers.0.self_attn.k_proj.weight"] = np.zeros((8, 32), np.float32)
  _edit_tensors(small_checkpoint, edit)
  with pytest.raises(hf.HFFormatError, match=r"'model\.layers\.0\.self_attn\.k_proj\.weight' in "
                     r"model\.safetensors has shape \[8, 32\], expected \[32, 32\]"):
    hf.load(small_checkpoint)


def test_unexpected_tensor_is_named_with_its_file(small_checkpoint):
  def edit(t):
    t["model.layers.0.self_attn.q_proj.bias"] = np.zeros((64,), np.float32)
  _edit_tensors(small_checkpoint, edit)
  with pytest.raises(hf.HFFormatError, match=r"unexpected tensor 'model\.layers\.0\.self_attn\."
                     r"q_proj\.bias' in model\.safetensors"):
    hf.load(small_checkpoint)


def test_unsupported_config_in_checkpoint(small_checkpoint):
  config_path = small_checkpoint / hf.CONFIG_FILE
  config = json.loads(config_path.read_text())
  config["attention_bias"] = True
  config_path.write_text(json.dumps(config))
  with pytest.raises(hf.HFFormatError, match="attention_bias=True"):
    hf.load(small_checkpoint)


def test_index_naming_a_missing_shard(tmp_path):
  hf.save(tmp_path, SMALL, _scaled_init(SMALL), max_shard_bytes=20000)
  victim = sorted(tmp_path.glob("model-*.safetensors"))[1]
  victim.unlink()
  with pytest.raises(hf.HFFormatError, match=f"shard '{victim.name}'"):
    hf.load(tmp_path)


def test_save_refuses_mismatched_params_and_existing_checkpoint(small_checkpoint, tmp_path):
  params = _scaled_init(SMALL)
  bad = jax.tree.map(lambda x: x, params)
  bad["final_norm"]["scale"] = jnp.ones((31,))
  with pytest.raises(hf.HFFormatError, match=r"\['final_norm'\]\['scale'\] has shape \[31\]"):
    hf.save(tmp_path / "bad", SMALL, bad)
  with pytest.raises(hf.HFFormatError, match="already holds a checkpoint"):
    hf.save(small_checkpoint, SMALL, params)
  hf.save(small_checkpoint, SMALL, params, overwrite=True)


# ---------------------------------------------------------------------------------------------
# launch/convert.py


def _convert(*args):
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env.update(JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
  return subprocess.run([sys.executable, str(ROOT / "launch" / "convert.py"), *args],
                        capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)


def test_convert_hf_orbax_hf_is_bit_identical(tmp_path):
  hf.save(tmp_path / "hf", SMALL, _scaled_init(SMALL), dtype="bfloat16", max_shard_bytes=30000)
  proc = _convert("--from=hf", "--to=orbax", f"--input={tmp_path / 'hf'}",
                  f"--output={tmp_path / 'orbax'}", "--dtype=bfloat16")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert (tmp_path / "orbax" / "model_config.json").exists()
  proc = _convert("--from=orbax", "--to=hf", f"--input={tmp_path / 'orbax'}",
                  f"--output={tmp_path / 'back'}", "--dtype=bfloat16", "--max_shard_mb=1")
  assert proc.returncode == 0, proc.stderr[-3000:]
  # One shard instead of several: same tensors, same bytes per tensor.
  original = {}
  for p in sorted((tmp_path / "hf").glob("*.safetensors")):
    original.update(load_file(p))
  back = load_file(tmp_path / "back" / hf.SINGLE_FILE)
  assert original.keys() == back.keys()
  for k in original:
    assert original[k].dtype == back[k].dtype and original[k].tobytes() == back[k].tobytes(), k


def test_convert_help_names_formats():
  proc = _convert("--help")  # absl prints the help and exits with status 1
  for word in ("--from", "--to", "--input", "--output", "--dtype", "gguf", "orbax"):
    assert word in proc.stdout, word
