"""Stage 4, the LLM quality oracle: prompt, rating parser, cache, HTTP client against a real local
server (good, garbage, 500 and too-slow answers), chat template, G-Eval maths and agreement maths.

The real SmolLM2-135M-Instruct G-Eval reading is checked against the decoder's own logits in a
slow test.
"""

import dataclasses
import http.server
import json
import math
import os
import pathlib
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from seedcoder_jax.curation import oracle, oracle_agreement, oracle_backends
from seedcoder_jax.curation import records as records_lib
from refenv import REF_PYTHON

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _record(i, text="def f(x):\n    return x + 1\n", language="python"):
  return records_lib.make_record(kind="file", text=text, repo="r", path=f"m{i}.py",
                                 language=language)


# ----------------------------------------------------------------------------- config + prompt


def test_config_refuses_unknown_and_bad_values():
  with pytest.raises(ValueError, match=r"unknown OracleConfig keys \['sample_sise'\]"):
    oracle.OracleConfig.from_dict({"sample_sise": 3}, where="configs/curation.py:oracle")
  with pytest.raises(ValueError, match="backend='gpt'"):
    oracle.OracleConfig(backend="gpt")
  with pytest.raises(ValueError, match="needs base_url"):
    oracle.OracleConfig(backend="http")
  with pytest.raises(ValueError, match="out_of_range='ignore'"):
    oracle.OracleConfig(out_of_range="ignore")
  assert oracle.OracleConfig.from_dict({"sample_size": 5}).sample_size == 5


# The paper's rubric: each criterion with its sub-points, as phrases the prompt must state under
# that criterion (not anywhere in the prompt).
RUBRIC = {
    "Readability": ["comments or docstrings", "consistent naming",
                    "common formatting and structure"],
    "Modularity": ["well-structured", "no overly complex or long functions",
                   "logic split into functions or classes"],
    "Clarity": ["repeated code", "commented-out code blocks", "debug print statements",
                "clear intent"],
    "Reusability": ["no syntax or logic errors", "no excessive hard-coded data",
                    "complete functionality", "easy to reuse"],
}
ZERO_SCORE_POLICY = ["mostly configuration or data", "has little logic", "is auto-generated"]


def _criteria(content):
  """{criterion: its text} from the prompt's "- Name: ..." items (continuation lines joined)."""
  block = content[content.index("four criteria:"):content.index("Give 0")]
  items = re.findall(r"^- (\w+): (.*?)(?=^- |\Z)", block, re.MULTILINE | re.DOTALL)
  return {name: " ".join(text.split()) for name, text in items}


def test_prompt_applies_the_papers_criteria_and_fills_the_record():
  template = oracle.load_prompt_template(oracle.DEFAULT_PROMPT)
  code = "int main(void) { return {0}; }\n" + "x" * 5000
  messages = oracle.build_messages(_record(0, code, "c"), template, max_code_chars=100)
  content = messages[0]["content"]
  criteria = _criteria(content)
  assert list(criteria) == list(RUBRIC)  # the paper's four criteria, in its order
  for name, items in RUBRIC.items():
    for item in items:
      assert item in criteria[name], (name, item, criteria[name])
  policy = " ".join(content[content.index("Give 0"):content.index("File:")].split())
  assert "zero-score policy" in policy and all(p in policy for p in ZERO_SCORE_POLICY), policy
  assert messages[0]["role"] == "user" and "```c\nint main(void) { return {0}; }" in content
  assert "File: m0.py" in content and oracle.TRUNCATION_NOTE in content and "x" * 200 not in content
  # The format is described, not shown with a placeholder a model would copy ("[[X]]" pulled
  # G-Eval's next-token mass onto "X"): no "[[...]]" in the prompt parses or holds a short token.
  request = " ".join(content[content.rindex("```") + 3:].split())
  assert request.startswith("Explain briefly") and '"Rating: [["' in request and '"]]"' in request
  assert "0 to 10" in request
  assert not re.search(r"\[\[\s*\S{0,3}\s*\]\]", content), re.findall(r"\[\[.{0,5}", content)
  assert oracle.parse_rating(content) == (None, "unparsable")


def test_bad_template_is_refused(tmp_path):
  bad = tmp_path / "p.txt"
  bad.write_text("Rate {code} please")
  with pytest.raises(ValueError, match="lacks"):
    oracle.load_prompt_template(bad)
  with pytest.raises(FileNotFoundError, match="not found"):
    oracle.load_prompt_template(tmp_path / "missing.txt")


# ----------------------------------------------------------------------------- parsing


@pytest.mark.parametrize("text, expected", [
    ("Nice code. Rating: [[7]]", (7.0, "ok")),
    ("Format is Rating: [[X]] ... Rating: [[3]] no wait, Rating: [[8.5]]", (8.5, "ok")),
    ("**Rating:** [[ 6 ]]", (6.0, "ok")),
    ("Rating: [[9/10]]", (9.0, "ok")),
    ("Rating: [[0]] (data file)", (0.0, "ok")),
    ("final answer [[4]]", (4.0, "ok")),
    ("Rating: [[11]]", (None, "out_of_range")),
    ("Rating: [[-2]]", (None, "out_of_range")),
    ("I would give it seven out of ten.", (None, "unparsable")),
    ("Rating: [[X]]", (None, "unparsable")),
    ("   \n", (None, "empty_answer")),
    (None, (None, "empty_answer")),
])
def test_parse_rating(text, expected):
  assert oracle.parse_rating(text) == expected


def test_parse_rating_clamps_when_asked():
  assert oracle.parse_rating("Rating: [[12]]", "clamp") == (10.0, "ok")
  assert oracle.parse_rating("Rating: [[-1.5]]", "clamp") == (0.0, "ok")


# ----------------------------------------------------------------------------- cache


def test_cache_roundtrip_and_survives_a_kill_mid_write(tmp_path):
  path = tmp_path / "cache.sqlite"
  cache = oracle.OracleCache(path)
  key = oracle.OracleCache.key("http", "m", "abc")
  assert key != oracle.OracleCache.key("geval", "m", "abc") != oracle.OracleCache.key("http", "m2", "abc")
  cache.put_many([(key, "http", "m", 7.5, "ok", "d")])
  assert cache.get_many([key, "nope"]) == {key: (7.5, "ok", "d")}
  cache.close()
  # A writer killed (SIGKILL) in the middle of endless batch transactions leaves a readable cache
  # holding only whole batches.
  writer = ("import sys; sys.path.insert(0, %r)\n"
            "from seedcoder_jax.curation.oracle import OracleCache\n"
            "c = OracleCache(%r)\n"
            "for b in range(10**6):\n"
            "  c.put_many([(f'k{b}-{i}', 'x', 'm', float(i), 'ok', 'y' * 1000) for i in range(50)])\n"
            "  print(b, flush=True)\n") % (str(ROOT), str(path))
  proc = subprocess.Popen([sys.executable, "-c", writer], stdout=subprocess.PIPE, text=True)
  for _ in range(5):
    proc.stdout.readline()
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait()
  reopened = oracle.OracleCache(path)
  n = len(reopened)
  assert n >= 1 + 5 * 50 and (n - 1) % 50 == 0, n
  assert reopened.get_many([key])[key] == (7.5, "ok", "d")


@pytest.mark.parametrize("backend, changes", [
    ("http", {"temperature": 0.7, "max_new_tokens": 64, "out_of_range": "clamp"}),
    ("sampler", {"temperature": 0.7, "max_new_tokens": 64, "max_prompt_tokens": 128,
                 "out_of_range": "clamp"}),
    ("geval", {"max_prompt_tokens": 128, "geval_min_digit_mass": 0.3}),
])
def test_cache_key_covers_the_settings_that_change_answers(backend, changes, tmp_path):
  """Changing any setting that changes the answer changes the key; settings the backend ignores
  (here the G-Eval floor for http, http's temperature for G-Eval) do not."""
  base = oracle.OracleConfig(backend=backend, base_url="http://x/v1")
  key = lambda cfg: oracle.OracleCache.key(backend, cfg.model, "abc",
                                           oracle.cache_settings(cfg, backend))
  for name, value in changes.items():
    assert key(dataclasses.replace(base, **{name: value})) != key(base), name
  others = {"geval_min_digit_mass": 0.3, "temperature": 0.7, "max_new_tokens": 64,
            "max_prompt_tokens": 128}
  for name, value in others.items():
    if name not in changes:
      assert key(dataclasses.replace(base, **{name: value})) == key(base), name
  # annotate keys its cache the same way: an answer cached at one temperature is not reused at
  # another, and is at the same one.
  class Fixed:
    name, model = backend, "m"
    calls = 0

    def rate(self, prompts):
      Fixed.calls += len(prompts)
      return [oracle.Answer(5.0, "ok") for _ in prompts]

  cache = oracle.OracleCache(tmp_path / "c.sqlite")
  template = oracle.load_prompt_template(oracle.DEFAULT_PROMPT)
  name, value = next(iter(changes.items()))
  for cfg in (base, base, dataclasses.replace(base, **{name: value})):
    oracle.annotate([_record(0)], Fixed(), cfg, template=template, cache=cache)
  assert Fixed.calls == 2 and len(cache) == 2


# ----------------------------------------------------------------------------- HTTP backend


class _Server:
  """A minimal OpenAI-compatible /v1/chat/completions: the answer depends on the file's path."""

  def __init__(self):
    self.requests = []
    outer = self

    class Handler(http.server.BaseHTTPRequestHandler):
      def log_message(self, *args):
        pass

      def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        content = body["messages"][-1]["content"]
        outer.requests.append(body)
        if self.path != "/v1/chat/completions":
          return self._send(404, b"{}")
        if "File: slow" in content:
          time.sleep(1.0)
          return self._send(200, self._answer("Rating: [[5]]"))
        if "File: error" in content:
          return self._send(500, b'{"error": "boom"}')
        if "File: flaky" in content and sum("File: flaky" in r["messages"][-1]["content"]
                                            for r in outer.requests) == 1:
          return self._send(503, b'{"error": "busy"}')
        if "File: garbage" in content:
          return self._send(200, self._answer("This code is fine I guess."))
        if "File: notjson" in content:
          return self._send(200, b"<html>gateway</html>")
        if "File: high" in content:
          return self._send(200, self._answer("Rating: [[42]]"))
        rating = len(content) % 11  # deterministic, differs between files
        return self._send(200, self._answer(f"Readable.\nRating: [[{rating}]]"))

      def _answer(self, text):
        return json.dumps({"id": "x", "object": "chat.completion", "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text},
             "finish_reason": "stop"}]}).encode()

      def _send(self, code, payload):
        try:
          self.send_response(code)
          self.send_header("Content-Type", "application/json")
          self.send_header("Content-Length", str(len(payload)))
          self.end_headers()
          self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
          pass  # the client timed out and left

    self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
    threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def server():
  s = _Server()
  yield s
  s.httpd.shutdown()


def test_http_backend_counts_every_failure_under_a_named_reason(server, tmp_path):
  cfg = oracle.OracleConfig(backend="http", base_url=server.url, model="m", timeout_s=0.3,
                            max_retries=2, backoff_s=0.01, batch_size=4,
                            cache_path=str(tmp_path / "c.sqlite"))
  sleeps = []
  backend = oracle_backends.HttpBackend(cfg, sleep=sleeps.append)
  names = ["good1", "good2", "slow", "error", "flaky", "garbage", "notjson", "high"]
  records = [records_lib.make_record(kind="file", text=f"x = {i}\n", repo="r", path=n,
                                     language="python") for i, n in enumerate(names)]
  template = oracle.load_prompt_template(cfg.prompt_path)
  cache = oracle.OracleCache(cfg.cache_path)
  out = {r["path"]: r for r in oracle.annotate(records, backend, cfg, template=template, cache=cache)}
  assert [out[n]["oracle_status"] for n in names] == [
      "ok", "ok", "timeout", "http_error", "ok", "unparsable", "bad_response", "out_of_range"]
  assert 0 <= out["good1"]["oracle_score"] <= 10 and out["flaky"]["oracle_score"] is not None
  assert "after 3 attempts" in out["slow"]["oracle_detail"]
  assert "HTTP 500" in out["error"]["oracle_detail"]
  # Exponential backoff: 0.01, 0.02 for each of the two exhausted prompts, 0.01 for the flaky one.
  assert sorted(sleeps) == [0.01] * 3 + [0.02] * 2
  summary = oracle.summarize(out.values())
  assert summary["n"] == 8 and summary["labelled"] == 3 and summary["statuses"]["timeout"] == 1
  # The rerun pays only for the transient failures (timeout, 500): the rest come from the cache.
  n_before = len(server.requests)
  again = {r["path"]: r for r in oracle.annotate(records, backend, cfg, template=template,
                                                 cache=cache)}
  assert len(server.requests) - n_before == 2 * 3
  assert {n: again[n]["oracle_score"] for n in names} == {n: out[n]["oracle_score"] for n in names}


def test_http_backend_connection_refused_is_counted(tmp_path):
  cfg = oracle.OracleConfig(backend="http", base_url="http://127.0.0.1:9/v1", max_retries=1,
                            backoff_s=0.0, timeout_s=2.0)
  answer = oracle_backends.HttpBackend(cfg, sleep=lambda s: None).rate([[{"role": "user",
                                                                          "content": "hi"}]])[0]
  assert answer.status == "connection_error" and answer.score is None


def test_oracle_beam_transform_on_the_local_server(server):
  import apache_beam as beam
  from apache_beam.testing.util import assert_that, equal_to
  cfg = oracle.OracleConfig(backend="http", base_url=server.url, model="m", sample_size=3,
                            batch_size=2, timeout_s=5)
  records = [_record(i, f"y = {i}\n") for i in range(7)]
  expected_ids = sorted(r["id"] for r in oracle.select_sample(records, cfg))
  with beam.Pipeline() as p:
    out = (p | beam.Create(records) | oracle.OracleSample(cfg) | oracle.OracleAnnotate(cfg)
           | beam.Map(lambda r: (r["id"], r["oracle_status"])))
    assert_that(out, equal_to([(i, "ok") for i in expected_ids]))


# ----------------------------------------------------------------------------- chat + G-Eval maths


# The GGUF's tokenizer.chat_template (its Jinja string literals hold real newlines).
SMOL_TEMPLATE = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' "
                 "%}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by "
                 "Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' "
                 "+ message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if "
                 "add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def test_smollm2_template_and_digit_tokens():
  """The GGUF's chat template is the one rendered below; "10" is two tokens ("1", "0")."""
  from seedcoder_jax import tokenizer as tokenizer_lib
  from seedcoder_jax.interop import gguf
  info = gguf.load_tokenizer_info(gguf.smollm2_path())
  assert info.chat_template == SMOL_TEMPLATE
  tok = tokenizer_lib.load("gguf:smollm2")
  digits = [tok.encode(str(d)) for d in range(10)]
  assert all(len(d) == 1 for d in digits) and tok.encode("10") == digits[1] + digits[0]
  ids = oracle_backends.encode_chat(tok, "<|im_start|>user\nhi<|im_end|>\n")
  assert ids[0] == tok.special_ids["im_start"] and ids[-2] == tok.special_ids["im_end"]
  # A long file is cut to fit max_prompt_tokens; the request for the rating survives at the end.
  cfg = oracle.OracleConfig(max_prompt_tokens=300, max_code_chars=20_000)
  template = oracle.load_prompt_template(cfg.prompt_path)
  messages = oracle.build_messages(_record(0, "x = 1  # comment\n" * 2000), template, 20_000)
  prompt = oracle_backends._LocalPrompts(cfg, tok, info.chat_template, reserve=10).ids(messages)
  text = tok.decode(prompt)
  assert 200 < len(prompt) <= 290 and oracle.TRUNCATION_NOTE in text
  assert text.endswith('and "]]".\n<|im_end|>\n<|im_start|>assistant\n'), text[-200:]


def test_chatml_rendering_matches_jinja2():
  """The ChatML writer equals jinja2's rendering of SmolLM2's template (jinja2 from .venv-ref)."""
  if not REF_PYTHON.exists():
    pytest.skip(f"reference environment missing: {REF_PYTHON} (has jinja2)")
  conversations = [[{"role": "user", "content": "Rate {this}\n```py\nx = '}}'\n```"}],
                   [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]]
  script = ("import json, sys; from jinja2.sandbox import ImmutableSandboxedEnvironment as E\n"
            "t, convs = json.load(sys.stdin)\n"
            "env = E(trim_blocks=True, lstrip_blocks=True)\n"
            "print(json.dumps([env.from_string(t).render(messages=c, add_generation_prompt=True) "
            "for c in convs]))")
  proc = subprocess.run([str(REF_PYTHON), "-c", script], input=json.dumps([SMOL_TEMPLATE,
                        conversations]), capture_output=True, text=True, timeout=60, check=True)
  expected = json.loads(proc.stdout)
  system = oracle_backends.chatml_default_system(SMOL_TEMPLATE)
  assert system == "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
  for conv, want in zip(conversations, expected):
    assert oracle_backends.render_chatml(conv, default_system=system) == want
    assert oracle_backends.render_chat(conv, SMOL_TEMPLATE) == want


def test_geval_answer_hand_computed():
  p = np.zeros(10)
  p[7], p[8], p[1] = 0.3, 0.1, 0.2   # digit mass 0.6
  # After "1": P("0") = 0.3, P("]]"-like) = 0.1 -> q = 0.75: w10 = 0.15, w1 = 0.05.
  answer = oracle_backends.geval_answer(p, 0.3, 0.1, min_digit_mass=0.5)
  expected = (7 * 0.3 + 8 * 0.1 + 1 * 0.05 + 10 * 0.15) / 0.6
  assert answer.status == "ok" and math.isclose(answer.score, expected, rel_tol=1e-12)
  assert "digit_mass=0.600" in answer.detail
  low = oracle_backends.geval_answer(p, 0.3, 0.1, min_digit_mass=0.7)
  assert low.status == "low_digit_mass" and low.score is None


def test_agreement_maths_against_scipy():
  from scipy import stats
  x = [1.0, 2.0, 2.0, 5.0, 3.0, 9.0]
  y = [2.0, 1.0, 4.0, 4.0, 6.0, 7.0]
  np.testing.assert_allclose(oracle_agreement.rankdata(x), stats.rankdata(x))
  assert math.isclose(oracle_agreement.pearson(x, y), stats.pearsonr(x, y)[0], rel_tol=1e-12)
  assert math.isclose(oracle_agreement.spearman(x, y), stats.spearmanr(x, y)[0], rel_tol=1e-12)
  assert oracle_agreement.pearson([1, 1], [2, 3]) is None
  a = {"a": 1.0, "b": 2.0, "c": None, "d": 4.0}
  b = {"a": 2.0, "b": 4.0, "c": 1.0, "d": 8.0, "e": 3.0}
  got = oracle_agreement.agreement(a, b)
  assert got["n_both"] == 3 and math.isclose(got["pearson"], 1.0) and got["spearman"] == 1.0
  assert math.isclose(got["mean_abs_diff"], (1 + 2 + 4) / 3)
  annotated = {"x": [{"id": "a", "oracle_score": 3.0, "oracle_status": "ok"},
                     {"id": "b", "oracle_score": None, "oracle_status": "unparsable"}]}
  assert oracle_agreement.compare_backends(annotated)["parse"]["x"] == {
      "n": 2, "parsed": 1, "parse_rate": 0.5, "statuses": {"ok": 1, "unparsable": 1}}


# ----------------------------------------------------------------------------- real model (slow)


@pytest.mark.slow
def test_geval_on_smollm2_matches_the_decoders_logits():
  """The backend's rating equals the same maths on model.forward's full logits (two passes)."""
  import jax
  from seedcoder_jax import model as model_lib
  from seedcoder_jax.input import source_files
  cfg = oracle.OracleConfig(batch_size=2, max_code_chars=300, max_prompt_tokens=384,
                            geval_min_digit_mass=0.0)
  backend = oracle_backends.GEvalBackend(cfg)
  mcfg, params, tok, _ = oracle_backends.load_local_model(cfg.model)
  template = oracle.load_prompt_template(cfg.prompt_path)
  root = source_files.default_source_dir()
  records = [_record(0, (root / "bisect.py").read_text()),
             _record(1, (root / "encodings" / "cp1252.py").read_text())]
  messages = [oracle.build_messages(r, template, cfg.max_code_chars) for r in records]
  answers = backend.rate(messages)
  for m, answer in zip(messages, answers):
    prompt = backend.prompts.ids(m) + tok.encode("Rating: [[")
    logits = model_lib.forward(mcfg, params, np.array([prompt + tok.encode("1")]))[0]
    p_first = np.asarray(jax.nn.softmax(logits[-2]), np.float64)
    p_after_one = np.asarray(jax.nn.softmax(logits[-1]), np.float64)
    digits = [tok.encode(str(d))[0] for d in range(10)]
    close = [i for i in range(mcfg.vocab_size) if tok.id_to_piece(i).startswith("]")]
    want = oracle_backends.geval_answer(p_first[digits], p_after_one[digits[0]],
                                        p_after_one[close].sum(), 0.0)
    assert answer.status == "ok" and 0.0 <= answer.score <= 10.0
    assert math.isclose(answer.score, want.score, abs_tol=1e-3), (answer, want)


@pytest.mark.slow
def test_http_backend_on_the_projects_server_equals_the_sampler_backend(tmp_path):
  """The HTTP client against the project's own OpenAI-compatible server (SmolLM2, greedy) gets
  the same answers as the local sampler backend on the same prompts."""
  from seedcoder_jax import sampling
  from seedcoder_jax.sampling import server, server_chat
  from seedcoder_jax.input import source_files
  cfg = oracle.OracleConfig(backend="sampler", max_code_chars=300, max_prompt_tokens=448,
                            max_new_tokens=64, batch_size=4)
  root = source_files.default_source_dir()
  records = [_record(i, (root / name).read_text()) for i, name in
             enumerate(("bisect.py", "colorsys.py", "keyword.py"))]
  template = oracle.load_prompt_template(cfg.prompt_path)
  local = oracle.annotate(records, oracle_backends.SamplerBackend(cfg), cfg, template=template)
  mcfg, params, tok = sampling.load_model("gguf:smollm2")
  sampler = sampling.Sampler(mcfg, params, tokenizer=tok, max_batch=4, max_len=512)
  chat = server_chat.load_chat_format(tok, model_spec="gguf:smollm2")
  srv = server.OpenAIServer(sampler, tok, server.ServerConfig(
      model_name="smollm2", context_len=512, max_tokens_limit=64,
      add_bos=server.default_add_bos(tok)), chat_format=chat)
  with server.BackgroundServer(server.make_app(srv)) as bg:
    hcfg = oracle.OracleConfig(backend="http", base_url=bg.base_url, model="smollm2",
                               max_code_chars=300, max_new_tokens=64, timeout_s=300)
    remote = oracle.annotate(records, oracle_backends.HttpBackend(hcfg), hcfg, template=template)
  for a, b in zip(local, remote):
    assert a["oracle_status"] in oracle.STATUSES and b["oracle_status"] in oracle.STATUSES
    assert (a["oracle_score"], a["oracle_status"]) == (b["oracle_score"], b["oracle_status"]), (a, b)
