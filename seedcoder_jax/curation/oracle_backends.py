"""The oracle's backends: OpenAI-compatible HTTP, local sampler (generate + parse), local G-Eval.

Each backend has `name`, `model` (with the prompt and the config's oracle.CACHE_SETTINGS for
that name, they key the cache) and
`rate(list of chat-message lists) -> list[oracle.Answer]`, one answer per prompt, in order.
The sampler and HTTP backends also have `generate(list of chat-message lists, max_new_tokens=None)
-> list[Generation]`: the answer's text itself, for callers that want text rather than a rating
(the instruction-data pipeline, seedcoder_jax.posttrain.instruct_data). G-Eval reads logits only
and cannot generate.

G-Eval reading (`GEvalBackend`): one forward pass over the chat-templated prompt plus the assistant
prefix "Rating: [[" plus the token "1". SmolLM2's tokenizer splits numbers into single digits, so
"10" is "1" then "0": the logits after "[[" give P(first digit d), d = 0..9, and the logits after
"[[1" tell "10" from "1" (P("0") against the closing-bracket tokens). The rating is
  E[score] = sum_r r * w_r / sum_r w_r over r = 0..10,
  w_d = P(d) for d != 1, w_1 = P(1) * (1 - q), w_10 = P(1) * q, q = P("0") / (P("0") + P("]..."))
and `digit_mass` = sum_d P(d) says how much the model meant to write a digit at all.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import json
import os
import re
import socket
import time
import urllib.error
import urllib.request
from typing import Sequence

import numpy as np

from seedcoder_jax.curation import oracle as oracle_lib
from seedcoder_jax.curation.oracle import Answer, OracleConfig

ASSISTANT_PREFIX = "Rating: [["
CHATML_SPECIALS = ("<|im_start|>", "<|im_end|>")


@dataclasses.dataclass
class Generation:
  """One generated answer: its text (None when there is none), a status and a short detail.

  status: "ok", "empty_answer", or one of the HTTP failures of oracle.STATUSES ("bad_response",
  and the transient "timeout" / "http_error" / "connection_error", retried before they get here).
  """
  text: str | None
  status: str
  detail: str = ""


# ----------------------------------------------------------------------------- chat format


def chatml_default_system(template: str | None) -> str | None:
  """The system message a ChatML template inserts when the conversation has none (or None)."""
  if not template:
    return None
  # Jinja string literals may hold the newline escaped ("\\n") or raw (SmolLM2's GGUF).
  m = re.search(r"<\|im_start\|>system(?:\\n|\n)(.*?)<\|im_end\|>", template, re.DOTALL)
  return m.group(1) if m else None


def render_chatml(messages: Sequence[dict], *, add_generation_prompt: bool = True,
                  default_system: str | None = None) -> str:
  """ChatML as SmolLM2's template writes it: `<|im_start|>ROLE\\nCONTENT<|im_end|>\\n` per turn."""
  out = []
  if default_system is not None and messages and messages[0]["role"] != "system":
    out.append(f"<|im_start|>system\n{default_system}<|im_end|>\n")
  for m in messages:
    out.append(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n")
  if add_generation_prompt:
    out.append("<|im_start|>assistant\n")
  return "".join(out)


def render_chat(messages: Sequence[dict], template: str | None) -> str:
  """The model's chat template rendered with jinja2 when installed, else its ChatML equivalent."""
  try:
    from jinja2 import sandbox
  except ImportError:
    sandbox = None
  if template and sandbox is not None:
    env = sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(template).render(messages=list(messages), add_generation_prompt=True)
  if template and "<|im_start|>" not in template:
    raise ValueError("the model's chat template is not ChatML and jinja2 is not installed to "
                     "render it (pip install jinja2)")
  return render_chatml(messages, default_system=chatml_default_system(template))


def encode_chat(tok, text: str) -> list[int]:
  """Token ids of rendered chat text: the ChatML control strings become their special ids."""
  ids = tok.special_ids
  control = {"<|im_start|>": ids.get("im_start"), "<|im_end|>": ids.get("im_end")}
  if None in control.values():
    raise ValueError(f"tokenizer {tok!r} has no <|im_start|>/<|im_end|> ids: not a chat model")
  out: list[int] = []
  for part in re.split(r"(<\|im_start\|>|<\|im_end\|>)", text):
    if part in control:
      out.append(control[part])
    elif part:
      out.extend(tok.encode(part))
  return out


# ----------------------------------------------------------------------------- local models


@functools.lru_cache(maxsize=2)
def load_local_model(spec: str):
  """(cfg, params, tokenizer, chat_template) for "gguf:smollm2" / "gguf:PATH" / other sampler specs."""
  kind, _, path = spec.partition(":")
  if kind == "gguf":
    from seedcoder_jax import tokenizer as tokenizer_lib
    from seedcoder_jax.interop import gguf
    from seedcoder_jax.interop.gguf_tokenizer import open_reader
    reader = open_reader(gguf.smollm2_path() if path == "smollm2" else path)
    cfg, params = gguf.load(reader)
    template = gguf.load_tokenizer_info(reader).chat_template
    return cfg, params, tokenizer_lib.load(spec), template
  from seedcoder_jax import sampling  # orbax:/hf: specs go through the sampler's loader
  cfg, params, tok = sampling.load_model(spec)
  if tok is None:
    raise ValueError(f"oracle model {spec!r} has no tokenizer; the oracle needs one")
  return cfg, params, tok, None


class _LocalPrompts:
  """Shared by the local backends: messages -> token ids that fit `max_prompt_tokens`."""

  def __init__(self, cfg: OracleConfig, tok, template: str | None, reserve: int):
    self.cfg, self.tok, self.template, self.reserve = cfg, tok, template, reserve

  def ids(self, messages: Sequence[dict]) -> list[int]:
    budget = self.cfg.max_prompt_tokens - self.reserve

    def encode(content: str) -> list[int]:
      turn = {**messages[-1], "content": content}
      return encode_chat(self.tok, render_chat([*messages[:-1], turn], self.template))

    content = messages[-1]["content"]
    ids = encode(content)
    if len(ids) <= budget:
      return ids
    # The code sits between the fences; the request for the rating comes after it. Keep the
    # longest prefix of the code that fits (binary search: ~15 fast tokenizations).
    start = content.find("\n", content.find("```")) + 1 if "```" in content else 0
    end = content.rfind("```") if content.count("```") >= 2 else len(content)
    head, code = content[:start], content[start:end]
    tail = oracle_lib.TRUNCATION_NOTE + "\n" + content[end:]
    lo, hi, best = 0, len(code), None
    while lo <= hi:
      mid = (lo + hi) // 2
      candidate = encode(head + code[:mid] + tail)
      if len(candidate) <= budget:
        lo, best = mid + 1, candidate
      else:
        hi = mid - 1
    if best is None:
      raise ValueError(f"the oracle prompt needs {len(encode(head + tail))} tokens without any "
                       f"code; max_prompt_tokens={self.cfg.max_prompt_tokens} leaves {budget}")
    return best


def _bucket(n: int, step: int = 64) -> int:
  return -(-n // step) * step


class GEvalBackend:
  """The probability-weighted rating after `Rating: [[` (see the module docstring)."""

  name = "geval"

  def __init__(self, cfg: OracleConfig, model=None):
    """model: (cfg, params, tokenizer, chat_template), default `load_local_model(cfg.model)`."""
    import jax
    import jax.numpy as jnp

    from seedcoder_jax import model as model_lib
    self.cfg = cfg
    self.model = cfg.model
    mcfg, params, tok, template = model if model is not None else load_local_model(cfg.model)
    self.params, self.tok = params, tok
    self.prefix_ids = tok.encode(ASSISTANT_PREFIX)
    self.digit_ids = np.array([self._single_id(str(d)) for d in range(10)], np.int32)
    vocab = [tok.id_to_piece(i) for i in range(mcfg.vocab_size)]
    self.close_ids = np.array([i for i, p in enumerate(vocab) if p.startswith("]")], np.int32)
    self.prompts = _LocalPrompts(cfg, tok, template, reserve=len(self.prefix_ids) + 1)

    def read(params, tokens_BL, last_B):
      hidden_BLD = model_lib.hidden_states(mcfg, params, tokens_BL)
      rows = jnp.arange(tokens_BL.shape[0])
      h_B2D = jnp.stack([hidden_BLD[rows, last_B - 1], hidden_BLD[rows, last_B]], axis=1)
      head_DV = params["embed"]["embedding"].T if mcfg.tie_embeddings else params["lm_head"]["kernel"]
      logp_B2V = jax.nn.log_softmax(jnp.einsum("bkd,dv->bkv", h_B2D, head_DV), axis=-1)
      p_B2V = jnp.exp(logp_B2V)
      return (p_B2V[:, 0][:, self.digit_ids], p_B2V[:, 1, self.digit_ids[0]],
              p_B2V[:, 1][:, self.close_ids].sum(-1))

    self._read = jax.jit(read)

  def _single_id(self, text: str) -> int:
    ids = self.tok.encode(text)
    if len(ids) != 1:
      raise ValueError(f"tokenizer {self.tok!r} splits {text!r} into {ids}; G-Eval needs one token")
    return ids[0]

  def tokens(self, messages: Sequence[dict]) -> list[int]:
    """Prompt + "Rating: [[" + "1": the last two positions give both distributions."""
    return self.prompts.ids(messages) + self.prefix_ids + [int(self.digit_ids[1])]

  def rate(self, prompts: Sequence[Sequence[dict]]) -> list[Answer]:
    seqs = [self.tokens(m) for m in prompts]
    length = _bucket(max(len(s) for s in seqs))
    batch = self.cfg.batch_size
    answers = []
    for start in range(0, len(seqs), batch):
      chunk = seqs[start:start + batch]
      tokens = np.zeros((batch, length), np.int32)  # fixed shapes: one compile per bucket
      last = np.zeros((batch,), np.int32) + 1
      for i, s in enumerate(chunk):
        tokens[i, :len(s)] = s
        last[i] = len(s) - 1
      p_digit, p_zero, p_close = (np.asarray(x, np.float64) for x in self._read(self.params, tokens, last))
      for i in range(len(chunk)):
        answers.append(geval_answer(p_digit[i], p_zero[i], p_close[i], self.cfg.geval_min_digit_mass))
    return answers


def geval_answer(p_digit: np.ndarray, p_zero_after_one: float, p_close_after_one: float,
                 min_digit_mass: float) -> Answer:
  """The expected rating over 0..10 from the first-digit distribution and the "1" -> "10" split."""
  mass = float(np.sum(p_digit))
  denom = p_zero_after_one + p_close_after_one
  q = p_zero_after_one / denom if denom > 0 else 0.0
  w = np.concatenate([p_digit, [0.0]]).astype(np.float64)
  w[10] = p_digit[1] * q
  w[1] = p_digit[1] * (1.0 - q)
  if mass <= 0:
    return Answer(None, "low_digit_mass", "digit_mass=0")
  score = float(np.dot(np.arange(11), w) / np.sum(w))
  detail = f"digit_mass={mass:.3f} p10={w[10] / np.sum(w):.3f}"
  if mass < min_digit_mass:
    return Answer(None, "low_digit_mass", detail + f" score={score:.2f}")
  return Answer(score, "ok", detail)


class SamplerBackend:
  """Generates an answer with the project's sampler and parses `Rating: [[X]]` from it."""

  name = "sampler"

  def __init__(self, cfg: OracleConfig, model=None):
    from seedcoder_jax import sampling
    self.cfg = cfg
    self.model = f"{cfg.model}|t={cfg.temperature}|n={cfg.max_new_tokens}"
    mcfg, params, tok, template = model if model is not None else load_local_model(cfg.model)
    self.tok = tok
    self.prompts = _LocalPrompts(cfg, tok, template, reserve=0)
    self.sampler = sampling.Sampler(mcfg, params, tokenizer=tok, max_batch=cfg.batch_size,
                                    max_len=cfg.max_prompt_tokens + cfg.max_new_tokens)
    self.params = sampling.SamplingParams(
        max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
        stop_token_ids=(tok.special_ids["im_end"],))

  def rate(self, prompts: Sequence[Sequence[dict]]) -> list[Answer]:
    completions = self.sampler.generate([self.prompts.ids(m) for m in prompts], self.params)
    answers = []
    for c in completions:
      text = c.text if c.text is not None else self.tok.decode(c.tokens)
      score, status = oracle_lib.parse_rating(text, self.cfg.out_of_range)
      answers.append(Answer(score, status, f"finish={c.finish_reason} tail={text[-120:]!r}"))
    return answers

  def generate(self, prompts: Sequence[Sequence[dict]],
               max_new_tokens: int | None = None) -> list[Generation]:
    """The generated text of each prompt (greedy at temperature 0), in order."""
    params = self.params
    if max_new_tokens is not None:
      params = dataclasses.replace(params, max_new_tokens=min(max_new_tokens,
                                                              self.cfg.max_new_tokens))
    completions = self.sampler.generate([self.prompts.ids(m) for m in prompts], params)
    out = []
    for c in completions:
      text = c.text if c.text is not None else self.tok.decode(c.tokens)
      status = "ok" if text.strip() else "empty_answer"
      out.append(Generation(text, status, f"finish={c.finish_reason} tokens={len(c.tokens)}"))
    return out


# ----------------------------------------------------------------------------- HTTP


class HttpBackend:
  """POST {base_url}/chat/completions (OpenAI's format) with timeouts, retries and backoff.

  Transient failures (timeout, HTTP 429/5xx, refused connection) are retried `max_retries` times,
  sleeping backoff_s * 2**attempt; other HTTP errors and malformed responses are final.
  """

  name = "http"

  def __init__(self, cfg: OracleConfig, sleep=time.sleep):
    self.cfg = cfg
    self.model = cfg.model
    self.url = cfg.base_url.rstrip("/") + "/chat/completions"
    self.sleep = sleep
    self.headers = {"Content-Type": "application/json"}
    if cfg.api_key_env:
      key = os.environ.get(cfg.api_key_env)
      if not key:
        raise ValueError(f"oracle api_key_env={cfg.api_key_env!r} is not set in the environment")
      self.headers["Authorization"] = f"Bearer {key}"

  def rate(self, prompts: Sequence[Sequence[dict]]) -> list[Answer]:
    with concurrent.futures.ThreadPoolExecutor(self.cfg.concurrency) as pool:
      return list(pool.map(self.rate_one, prompts))

  def rate_one(self, messages: Sequence[dict]) -> Answer:
    return self._retrying(lambda: self._attempt(messages))

  def _retrying(self, attempt_fn):
    """attempt_fn() until its result's status is not transient, at most max_retries + 1 times."""
    answer = Answer(None, "connection_error", "no attempt")
    for attempt in range(self.cfg.max_retries + 1):
      if attempt:
        self.sleep(self.cfg.backoff_s * 2 ** (attempt - 1))
      answer = attempt_fn()
      if answer.status not in oracle_lib.TRANSIENT:
        return answer
    answer.detail = f"after {self.cfg.max_retries + 1} attempts: {answer.detail}"
    return answer

  def _post(self, messages: Sequence[dict], max_new_tokens: int | None = None):
    """(message content, None) from one POST, or (None, failure Answer)."""
    body = json.dumps({"model": self.cfg.model, "messages": list(messages),
                       "temperature": self.cfg.temperature,
                       "max_tokens": max_new_tokens or self.cfg.max_new_tokens}).encode()
    request = urllib.request.Request(self.url, data=body, headers=self.headers, method="POST")
    try:
      with urllib.request.urlopen(request, timeout=self.cfg.timeout_s) as response:
        raw = response.read()
    except urllib.error.HTTPError as e:
      status = "http_error" if e.code == 429 or e.code >= 500 else "bad_response"
      return None, Answer(None, status, f"HTTP {e.code} {e.reason}")
    except (TimeoutError, socket.timeout) as e:
      return None, Answer(None, "timeout", f"no answer within {self.cfg.timeout_s}s ({e})")
    except urllib.error.URLError as e:
      if isinstance(e.reason, (TimeoutError, socket.timeout)):
        return None, Answer(None, "timeout", f"no answer within {self.cfg.timeout_s}s ({e.reason})")
      return None, Answer(None, "connection_error", str(e.reason))
    except (ConnectionError, OSError) as e:
      return None, Answer(None, "connection_error", str(e))
    try:
      content = json.loads(raw)["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError) as e:
      return None, Answer(None, "bad_response", f"{type(e).__name__}: {raw[:200]!r}")
    if content is not None and not isinstance(content, str):
      return None, Answer(None, "bad_response", f"message content is {type(content).__name__}")
    return content, None

  def _attempt(self, messages: Sequence[dict]) -> Answer:
    content, failure = self._post(messages)
    if failure is not None:
      return failure
    score, status = oracle_lib.parse_rating(content, self.cfg.out_of_range)
    return Answer(score, status, (content or "")[-200:])

  def generate(self, prompts: Sequence[Sequence[dict]],
               max_new_tokens: int | None = None) -> list[Generation]:
    """The answer text of each prompt (requests `concurrency` at a time), in order."""
    with concurrent.futures.ThreadPoolExecutor(self.cfg.concurrency) as pool:
      return list(pool.map(lambda m: self.generate_one(m, max_new_tokens), prompts))

  def generate_one(self, messages: Sequence[dict],
                   max_new_tokens: int | None = None) -> Generation:
    """One answer's text, with the same retries and backoff as `rate_one`."""
    def attempt() -> Answer:
      content, failure = self._post(messages, max_new_tokens)
      if failure is not None:
        return failure
      if content is None or not content.strip():
        return Answer(None, "empty_answer", "")
      return Answer(None, "ok", content)
    answer = self._retrying(attempt)
    if answer.status == "ok":
      return Generation(answer.detail, "ok", "")
    return Generation(None, answer.status, answer.detail)


def make_backend(cfg: OracleConfig):
  if cfg.backend == "http":
    return HttpBackend(cfg)
  if cfg.backend == "sampler":
    return SamplerBackend(cfg)
  return GEvalBackend(cfg)
