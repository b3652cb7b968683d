"""The KV-cache sampler against full-forward greedy decoding, hand-checked sampling maths, stops,
seeds, compilation counts, FIM prompts, sharding, and transformers' greedy generate (slow)."""

import dataclasses
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from numerics import assert_close_to_scale
from seedcoder_jax import model as model_lib
from seedcoder_jax import sharding as sharding_lib
from seedcoder_jax import tokenizer as tokenizer_lib
from seedcoder_jax.model import decoder, kv_cache
from seedcoder_jax.input import fim
from seedcoder_jax.sampling import Sampler, SamplingParams, fim_prompt, generate, ops, reference
from seedcoder_jax.sampling import sampler as sampler_lib

CFG = model_lib.preset("tiny")
N_NEW = 12
# Most tests share one batch shape (4 rows, prompt bucket 64, cache 128) so they share programs.
LENGTHS = (1, 20, 7, 40, 33, 3, 64, 12)
PAD_TO = 64 + N_NEW


@pytest.fixture(scope="module")
def params():
  return model_lib.init_params(CFG, seed=1)


@pytest.fixture(scope="module")
def sampler(params):
  return Sampler(CFG, params, max_batch=4, max_len=2048)


@pytest.fixture(scope="module")
def prompts():
  rng = np.random.default_rng(0)
  return [rng.integers(0, CFG.vocab_size, n).tolist() for n in LENGTHS]


@pytest.fixture(scope="module")
def greedy(sampler, prompts):
  return sampler.generate(prompts, SamplingParams(max_new_tokens=N_NEW))  # two batches of 4


@pytest.fixture(scope="module")
def logits_of(params):
  """Full-forward logits [n, V] of one unpadded sequence (right-padded to one compiled length:
  causality keeps the padding out of the positions read)."""
  fwd = jax.jit(lambda p, t: model_lib.forward(CFG, p, t))

  def logits_of(seq):
    tokens = np.zeros((1, PAD_TO), np.int32)
    tokens[0, :len(seq)] = seq
    return np.asarray(fwd(params, tokens))[0, :len(seq)]
  return logits_of


def _log_softmax_at(logits_of, prompt, new):
  """log_softmax of the full forward's logits at the positions that produced `new`."""
  logp = np.asarray(jax.nn.log_softmax(logits_of(prompt + new)[len(prompt) - 1:-1], axis=-1))
  return logp[np.arange(len(new)), new]


# --- exactness against full forward passes ----------------------------------------------------

def test_greedy_matches_full_forward_reference(params, prompts, greedy, logits_of):
  # Exact token equality across two summation orders holds on any CPU only without near-ties: the
  # smallest top-2 logit gap on this data is 1.2e-4 (logits up to 0.76), ~8x the float32 bound of
  # tests/numerics.py and ~200x the measured cache-vs-forward difference. New data: check the gap.
  # A 40-token prompt in a padded batch against reference.greedy_continue (it compiles per length).
  assert greedy[3].tokens == reference.greedy_continue(CFG, params, prompts[3], N_NEW)
  # Every row (two padded batches) against step-by-step argmax of the full forward.
  for i, (p, c) in enumerate(zip(prompts, greedy)):
    seq = list(p)
    for _ in range(N_NEW):
      seq.append(int(np.argmax(logits_of(seq)[-1])))
    assert c.tokens == seq[len(p):], i
    assert c.finish_reason == "length" and c.prompt_tokens == len(p) and c.text is None


def test_design_generate_contract(params, prompts, greedy):
  out = generate(CFG, params, prompts[:4], max_new_tokens=N_NEW)
  assert out == [g.tokens for g in greedy[:4]]


def test_logprobs_are_log_softmax_of_forward_logits(sampler, prompts, greedy, logits_of):
  # The KV-cache decode and the full forward sum attention and the 512-way log-sum-exp in other
  # orders: float32 reassociation relative to the log-probs' scale (tests/numerics.py; ~1.4e-4 at
  # |logp| ~ 7, measured 5e-7), not a raw atol.
  for p, c in zip(prompts[:4], greedy[:4]):
    assert_close_to_scale(c.logprobs, _log_softmax_at(logits_of, p, c.tokens), terms=CFG.vocab_size)
  # Temperature 1 without top-k/top-p samples from the model's own distribution (the fourth row's
  # top-k puts the batch on the filtered path, which must leave the other rows whole).
  rows = [SamplingParams(max_new_tokens=N_NEW, temperature=1.0, seed=i) for i in range(3)]
  rows.append(SamplingParams(max_new_tokens=N_NEW, temperature=1.0, top_k=5))
  out = sampler.generate(prompts[:4], rows)
  for p, c in zip(prompts[:3], out):
    assert_close_to_scale(c.logprobs, _log_softmax_at(logits_of, p, c.tokens), terms=CFG.vocab_size)


def test_mixed_rows_and_per_row_lengths(sampler, prompts, greedy):
  # Sampled and greedy rows, different lengths, in one batch: greedy rows are unaffected.
  rows = [SamplingParams(max_new_tokens=N_NEW), SamplingParams(max_new_tokens=5, temperature=0.8),
          SamplingParams(max_new_tokens=3), SamplingParams(max_new_tokens=N_NEW, temperature=1.5, top_p=0.9)]
  out = sampler.generate(prompts[:4], rows)
  assert out[0].tokens == greedy[0].tokens
  assert out[2].tokens == greedy[2].tokens[:3]
  assert [len(c.tokens) for c in out] == [N_NEW, 5, 3, N_NEW]
  assert all(c.finish_reason == "length" for c in out)


# --- seeds ------------------------------------------------------------------------------------

def test_same_seed_same_samples(sampler, prompts):
  sp = SamplingParams(max_new_tokens=N_NEW, temperature=1.0, top_k=50, top_p=0.95,
                      repetition_penalty=1.2, seed=7)
  batch = [prompts[3]] * 4  # 40 tokens: the shared shape
  first, again = sampler.generate(batch, sp), sampler.generate(batch, sp)
  assert [c.tokens for c in first] == [c.tokens for c in again]
  # n copies of one prompt in one call are n different samples (pass@k); another seed differs.
  assert len({tuple(c.tokens) for c in first}) == 4
  other = sampler.generate(batch, dataclasses.replace(sp, seed=8))
  assert [c.tokens for c in other] != [c.tokens for c in first]


# --- compilation ------------------------------------------------------------------------------

def test_prompt_lengths_in_a_bucket_do_not_recompile(sampler, greedy):
  rng = np.random.default_rng(1)
  prefill, decode = sampler_lib._prefill._cache_size(), sampler_lib._decode._cache_size()
  for lengths in ((33, 50, 64, 41), (40, 2, 63, 17)):  # all in the 64 bucket, as `greedy` was
    batch = [rng.integers(0, CFG.vocab_size, n).tolist() for n in lengths]
    assert [len(c.tokens) for c in sampler.generate(batch, SamplingParams(N_NEW))] == [N_NEW] * 4
  assert sampler_lib._prefill._cache_size() == prefill
  assert sampler_lib._decode._cache_size() == decode


@pytest.mark.slow
def test_1k_prompts_prefill_without_per_length_compiles(sampler, params, logits_of):
  rng = np.random.default_rng(2)
  sp = SamplingParams(max_new_tokens=4)
  sampler.generate([rng.integers(0, CFG.vocab_size, 1000).tolist()], sp)  # the 1024 bucket
  prefill, decode = sampler_lib._prefill._cache_size(), sampler_lib._decode._cache_size()
  for n in (600, 777, 1024):
    prompt = rng.integers(0, CFG.vocab_size, n).tolist()
    [c] = sampler.generate([prompt], sp)
    if n == 1024:
      assert c.tokens == reference.greedy_continue(CFG, params, prompt, 4)
  assert sampler_lib._prefill._cache_size() == prefill
  assert sampler_lib._decode._cache_size() == decode


# --- sampling maths on a hand-checkable distribution ------------------------------------------

PROBS = np.array([0.5, 0.2, 0.15, 0.1, 0.05])


@pytest.mark.parametrize("top_k,top_p,kept", [
    (0, 1.0, [0, 1, 2, 3, 4]),
    (2, 1.0, [0, 1]),
    (0, 0.5, [0]),            # mass before token 1 is 0.5, not below 0.5
    (0, 0.6, [0, 1]),
    (0, 0.8, [0, 1, 2]),      # 0.7 before token 2 < 0.8; 0.85 before token 3
    (3, 0.85, [0, 1, 2]),     # after top-3: 0.588, 0.235, 0.176; 0.824 before token 2
    (3, 0.8, [0, 1]),
    (1, 1.0, [0]),
])
def test_top_k_top_p_support(top_k, top_p, kept):
  logits = np.log(PROBS)[None].astype(np.float32)
  mask = ops.top_k_top_p_mask(logits, np.array([top_k]), np.array([top_p], np.float32))
  assert np.flatnonzero(np.asarray(mask[0])).tolist() == kept


@pytest.mark.parametrize("temperature,top_k,top_p", [
    (1.0, 0, 1.0), (0.5, 0, 1.0), (2.0, 2, 1.0), (1.0, 0, 0.8), (1.0, 3, 0.85)])
def test_sampling_frequencies(temperature, top_k, top_p):
  n = 20_000
  logits = np.tile(np.log(PROBS).astype(np.float32), (n, 1))
  keys = jax.random.split(jax.random.key(0), n)
  tokens, logprobs = jax.jit(ops.select, static_argnames="kind")(
      logits, keys, temperature_B=np.full(n, temperature, np.float32),
      top_k_B=np.full(n, top_k, np.int32), top_p_B=np.full(n, top_p, np.float32),
      penalty_B=np.ones(n, np.float32), seen_BV=np.zeros(logits.shape, bool),
      kind="filtered" if top_k > 0 or top_p < 1 else "sample")
  expected = PROBS ** (1 / temperature)
  kept = np.asarray(ops.top_k_top_p_mask(np.log(PROBS)[None], np.array([top_k]),
                                         np.array([top_p], np.float32))[0])
  expected = np.where(kept, expected, 0)
  expected /= expected.sum()
  freq = np.bincount(np.asarray(tokens), minlength=5) / n
  assert set(np.flatnonzero(freq)) == set(np.flatnonzero(expected))  # support restricted exactly
  np.testing.assert_allclose(freq, expected, atol=0.015)
  # float32 against float64 over 5 tokens: a few ulps of |logp| <= ~5 (~6e-7).
  np.testing.assert_allclose(np.asarray(logprobs), np.log(expected)[np.asarray(tokens)], atol=1e-5)


def test_greedy_select_and_repetition_penalty():
  logits = np.array([[2.0, -1.0, 0.5, 1.9]], np.float32)
  seen = np.array([[True, True, False, False]])
  penalised = ops.repetition_penalty(logits, seen, np.array([2.0], np.float32))
  np.testing.assert_allclose(penalised, [[1.0, -2.0, 0.5, 1.9]])
  token, logprob = ops.select(logits, jax.random.split(jax.random.key(0), 1),
                              temperature_B=np.zeros(1, np.float32), top_k_B=np.zeros(1, np.int32),
                              top_p_B=np.ones(1, np.float32), penalty_B=np.array([2.0], np.float32),
                              seen_BV=seen, kind="greedy")
  assert int(token[0]) == 3  # 1.9 beats the penalised 2.0 -> 1.0
  np.testing.assert_allclose(logprob, jax.nn.log_softmax(penalised[0])[3], atol=1e-6)


def test_bad_params_are_refused(sampler, prompts):
  with pytest.raises(ValueError, match="top_p"):
    SamplingParams(top_p=0.0)
  with pytest.raises(ValueError, match="max_new_tokens"):
    SamplingParams(max_new_tokens=0)
  with pytest.raises(ValueError, match="prompt 1 is empty"):
    sampler.generate([[1], []])
  with pytest.raises(ValueError, match="prompt 0: 2000 prompt tokens"):
    sampler.generate([[1] * 2000], SamplingParams(max_new_tokens=100))
  with pytest.raises(ValueError, match="no tokenizer"):
    sampler.generate(["text"])
  with pytest.raises(ValueError, match="outside"):
    sampler.generate([[CFG.vocab_size]])


# --- tokenizer: text prompts, EOS, stop ids and stop sequences, FIM ---------------------------

def _train_bpe(directory, specials, vocab_size):
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
  texts = [pathlib.Path(m.__file__).read_text() for m in (json, dataclasses, pathlib)]
  tok.train_from_iterator(texts, trainer)
  tok.save(str(directory / "tokenizer.json"))
  return tokenizer_lib.load(f"hf:{directory / 'tokenizer.json'}")


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
  """A byte-level BPE with the tiny model's 512 ids, EOS (<|endoftext|>) and FIM tokens."""
  return _train_bpe(tmp_path_factory.mktemp("bpe"),
                    ["<|endoftext|>", "<fim_prefix>", "<fim_middle>", "<fim_suffix>"], CFG.vocab_size)


@pytest.fixture(scope="module")
def text_sampler(params, tok):
  assert tok.vocab_size == CFG.vocab_size
  return Sampler(CFG, params, tokenizer=tok, max_batch=4, max_len=2048)


def test_eos_and_stop_token_ids(text_sampler, tok, prompts, greedy):
  # The greedy rows never emit EOS by chance, so a tokenizer changes nothing but the text.
  assert all(tok.eos_id not in g.tokens for g in greedy[:4])
  out = text_sampler.generate(prompts[:4], SamplingParams(max_new_tokens=N_NEW))
  assert [c.tokens for c in out] == [g.tokens for g in greedy[:4]]
  assert [c.text for c in out] == [tok.decode(g.tokens) for g in greedy[:4]]
  # Stopping at a token the row would emit at step 5: everything before it, finish "stop".
  stops = [g.tokens[5] for g in greedy[:4]]
  rows = [SamplingParams(max_new_tokens=N_NEW, stop_token_ids=(t,)) for t in stops]
  for c, g, t in zip(text_sampler.generate(prompts[:4], rows), greedy, stops):
    assert c.tokens == g.tokens[:g.tokens.index(t)] and c.finish_reason == "stop"
    assert c.logprobs == pytest.approx(g.logprobs[:len(c.tokens)], abs=1e-5)


def test_text_stop_sequences(text_sampler, tok, prompts, greedy):
  full = [tok.decode(g.tokens) for g in greedy[:4]]
  stops = [text[len(text) // 2:len(text) // 2 + 2] for text in full]
  rows = [SamplingParams(max_new_tokens=N_NEW, stop=(s, "\x00never")) for s in stops]
  for c, g, text, stop in zip(text_sampler.generate(prompts[:4], rows), greedy, full, stops):
    cut = text.index(stop)
    assert c.text == text[:cut] and c.finish_reason == "stop"
    # Tokens: the longest greedy prefix whose text ends before the stop sequence starts.
    m = max(m for m in range(len(g.tokens) + 1) if len(tok.decode(g.tokens[:m])) <= cut)
    assert c.tokens == g.tokens[:m] and len(c.logprobs) == m


def test_text_prompts(text_sampler, tok, prompts):
  source = pathlib.Path(json.__file__).read_text()
  texts = []
  for start in (0, 500, 1000, 1500):
    text = source[start:start + 400]
    while len(tok.encode(text)) > 60:  # stay in the shared 64-token prompt bucket
      text = text[:-10]
    texts.append(text)
  ids = [tok.encode(t) for t in texts]
  by_text = text_sampler.generate(texts, SamplingParams(N_NEW))
  by_ids = text_sampler.generate(ids, SamplingParams(N_NEW))
  assert [c.prompt_tokens for c in by_text] == [len(i) for i in ids]
  assert [c.tokens for c in by_text] == [c.tokens for c in by_ids]
  assert all(c.text == tok.decode(c.tokens) for c in by_text)


def test_fim_prompts(text_sampler, tok, logits_of, tmp_path):
  prefix, suffix = "def add(a, b):\n    ", "\n    return c\n"
  fp, fm, fs = tok.require("fim_prefix", "fim_middle", "fim_suffix")
  spm = fim_prompt(tok, prefix, suffix)
  psm = fim_prompt(tok, prefix, suffix, order=fim.PSM)
  assert spm == [fs, *tok.encode(suffix), fp, *tok.encode(prefix), fm]
  assert psm == [fp, *tok.encode(prefix), fs, *tok.encode(suffix), fm]
  batch = [spm, psm, fim_prompt(tok, "x = [", "]\n"), fim_prompt(tok, "", "pass\n", fim.PSM)]
  out = text_sampler.generate(batch, SamplingParams(max_new_tokens=N_NEW))
  for p, c in zip(batch, out):
    seq = list(p)
    while len(seq) < len(p) + N_NEW:
      seq.append(int(np.argmax(logits_of(seq)[-1])))
    expected = seq[len(p):]
    if tok.eos_id in expected:
      expected = expected[:expected.index(tok.eos_id)]
    assert c.tokens == expected and c.text == tok.decode(expected)
  no_fim = _train_bpe(tmp_path, ["<|endoftext|>"], 300)
  with pytest.raises(tokenizer_lib.TokenizerError, match="fim_prefix"):
    fim_prompt(no_fim, prefix, suffix)


# --- sharding ---------------------------------------------------------------------------------

def test_sharded_equals_single_device(params, sampler, prompts):
  assert len(jax.devices()) == 8
  mesh = sharding_lib.make_mesh({"data": 2, "fsdp": 1, "tensor": 4})
  sharded = Sampler(CFG, params, max_batch=4, max_len=2048, mesh=mesh)
  rows = [SamplingParams(max_new_tokens=N_NEW),
          SamplingParams(max_new_tokens=N_NEW, temperature=1.0, top_k=50, top_p=0.95, seed=3),
          SamplingParams(max_new_tokens=N_NEW, repetition_penalty=1.3),
          SamplingParams(max_new_tokens=N_NEW, temperature=0.7, seed=4)]
  expected = sampler.generate(prompts[:4], rows)
  got = sharded.generate(prompts[:4], rows)
  assert [c.tokens for c in got] == [c.tokens for c in expected]
  for c, e in zip(got, expected):
    # Sharded matmuls and softmax sum in another order: relative to the log-probs' scale.
    assert_close_to_scale(c.logprobs, e.logprobs, terms=CFG.vocab_size)


@pytest.mark.parametrize("tie", [False, True])
def test_kernels_cast_once_give_the_same_logits(tie):
  """kv_cache.cast_params (the sampler's and the rollout engine's parameters) casts each kernel to
  the compute dtype once; the model casts float32 kernels on every application. Same operands, so
  the same logits and cache to the last bit, in prefill and in decoding."""
  cfg = CFG.replace(compute_dtype="bfloat16", tie_embeddings=tie)
  params = model_lib.init_params(cfg, seed=2)
  cast = kv_cache.cast_params(cfg, params)
  kernels = [x for p, x in jax.tree_util.tree_leaves_with_path(cast) if p[-1].key == "kernel"]
  assert kernels and all(x.dtype == jnp.bfloat16 for x in kernels)
  assert cast["embed"]["embedding"].dtype == jnp.float32  # the lookup reads float32
  assert (decoder.TIED_HEAD in cast) == tie
  rng = np.random.default_rng(3)
  tokens = jnp.asarray(rng.integers(0, cfg.vocab_size, (2, 8)), jnp.int32)
  ones, positions = jnp.ones_like(tokens), jnp.broadcast_to(jnp.arange(8), tokens.shape)
  prefill = jax.jit(kv_cache.prefill, static_argnums=(0, 5))
  decode = jax.jit(kv_cache.decode_step, static_argnums=0)
  out = {}
  for name, p in (("float32", params), ("cast", cast)):
    logits, cache = prefill(cfg, p, tokens, ones, positions, 16)
    step_logits, cache = decode(cfg, p, cache, tokens[:, -1], jnp.full((2,), 8), 8)
    out[name] = (logits, step_logits, cache["k"], cache["v"])
  for a, b in zip(out["float32"], out["cast"]):
    np.testing.assert_array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32))
  # float32 compute: nothing to cast
  f32 = CFG.replace(tie_embeddings=tie)
  same = kv_cache.cast_params(f32, model_lib.init_params(f32, seed=2))
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(same))
  assert decoder.TIED_HEAD not in same


# --- transformers' greedy generate on SmolLM2-135M's real weights -----------------------------

HF_PROMPTS = [
    "def is_prime(n):\n",
    '# Python\ndef fibonacci(n):\n    """Return the n-th Fibonacci number."""\n',
    "import numpy as np\n\n\n# The mean of a list of numbers.\ndef mean(xs):",
]


@pytest.mark.slow
def test_greedy_matches_transformers_generate_smollm2(tmp_path):
  from seedcoder_jax.interop import gguf
  from seedcoder_jax.sampling import load_model
  from refenv import run_reference
  try:
    path = gguf.smollm2_path()
  except FileNotFoundError as e:
    pytest.skip(str(e))
  cfg, params, tok = load_model("gguf:smollm2")
  ids = [tok.encode(p) for p in HF_PROMPTS]
  n_new = 24
  out = Sampler(cfg, params, tokenizer=tok, max_batch=4).generate(ids, SamplingParams(n_new))
  (tmp_path / "request.json").write_text(json.dumps({"prompts": ids, "max_new_tokens": n_new}))
  # transformers alone takes minutes to load this GGUF and generate on a busy 2-core machine.
  run_reference("gguf_generate.py", path, tmp_path / "request.json", tmp_path, timeout=2400)
  result = json.loads((tmp_path / "result.json").read_text())
  eos = result["eos_token_id"]
  eos = {eos} if isinstance(eos, int) else set(eos)
  assert tok.eos_id in eos
  for c, ref in zip(out, result["generated"]):
    stopped = bool(ref) and ref[-1] in eos
    assert c.tokens == (ref[:-1] if stopped else ref)
    assert c.finish_reason == ("stop" if stopped else "length")


def test_load_model_specs(params, tok, tmp_path):
  from seedcoder_jax.interop import hf
  from seedcoder_jax.sampling import load_model
  hf.save(tmp_path / "hf", CFG, params)
  (tmp_path / "hf" / "tokenizer.json").write_bytes(pathlib.Path(tok.spec[3:]).read_bytes())
  cfg, loaded, loaded_tok = load_model(f"hf:{tmp_path / 'hf'}")  # orbax: the same path, unsaved
  assert cfg.replace(max_seq_len=CFG.max_seq_len) == CFG
  for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(params)):
    np.testing.assert_array_equal(a, b)
  assert loaded_tok.encode("def f(x):") == tok.encode("def f(x):")
  with pytest.raises(ValueError, match="must be one of"):
    load_model("safetensors:/x")
  with pytest.raises(FileNotFoundError, match="nowhere"):
    load_model(f"hf:{tmp_path / 'nowhere'}")
