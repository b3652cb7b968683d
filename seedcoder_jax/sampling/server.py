"""An OpenAI-compatible HTTP server over the sampler (starlette + uvicorn).

Routes:
  POST /v1/completions       prompt: a string, a list of strings, a list of token ids, or a
                             list of token-id lists; `suffix` makes a fill-in-the-middle prompt
                             (SPM order, the model's FIM tokens); logprobs=0 returns each token's
                             log-probability
  POST /v1/chat/completions  messages rendered with the model's own chat template (server_chat.py)
  GET  /v1/models, /v1/models/{id}, /health, /v1/stats (batching counters)

Request fields: model, prompt | messages, max_tokens (chat also max_completion_tokens),
temperature, top_p, top_k and repetition_penalty (extensions), stop, seed, n, logprobs, echo and
suffix (completions), logprobs with top_logprobs=0 (chat). The response carries usage counts and
each choice's finish_reason ("stop" for EOS, end of turn or a stop sequence; "length").

`stream: true` answers in OpenAI's server-sent-events protocol, but only once the completion is
finished: each choice's text arrives as one chunk (the sampler returns whole completions), so
streaming clients work, without token-by-token latency.

Not supported, refused with a 400 that says so: top-k alternatives in logprobs (the sampler
returns the sampled token's log-probability only), presence/frequency penalties, logit_bias,
best_of != n, tools, structured response formats, and any field this server does not know
("Unrecognized request argument supplied", as OpenAI answers). Log-probabilities are the
sampler's (see sampling/ops.py: the distribution each token was drawn from).

Errors use OpenAI's shape, {"error": {"message", "type", "param", "code"}}: 400 for bad JSON,
missing or mistyped fields, values out of range, max_tokens above the server's limit and prompts
too long for the context ("context_length_exceeded"); 404 for an unknown model ("model_not_found")
or route; 405 for a wrong method; 413 for an oversized body; 429 while more than
max_pending_rows rows wait (clients retry later); 500 when generation fails.

Concurrent requests are batched: `server_threads.BatchingWorker` runs every `Sampler.generate`
call on one worker thread, gathering requests for `batch_window_ms` up to `max_batch` rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import pathlib
import secrets
import time
import uuid
from typing import Any, Optional, Sequence

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from seedcoder_jax import sampling
from seedcoder_jax import tokenizer as tokenizer_lib
from seedcoder_jax.input import fim
from seedcoder_jax.sampling import server_chat
# BackgroundServer is part of this module's API: server.BackgroundServer(server.make_app(s)).
from seedcoder_jax.sampling.server_threads import BackgroundServer, BatchingWorker, Overloaded

MAX_STOP_SEQUENCES = 4  # as OpenAI


@dataclasses.dataclass(frozen=True)
class ServerConfig:
  """Limits and defaults of one server.

  context_len: prompt tokens + max_tokens may not exceed it (the sampler's max_len).
  max_tokens_limit: the largest max_tokens a request may ask for.
  default_max_tokens: /v1/completions without max_tokens (OpenAI's default is 16); chat requests
    without it get what the context leaves, up to max_tokens_limit.
  add_bos: prepend the tokenizer's BOS to text prompts (as the model saw documents in training).
  fim_order: layout of `suffix` prompts ("spm", the paper's order, or "psm").
  """

  model_name: str
  context_len: int
  max_tokens_limit: int = 1024
  default_max_tokens: int = 16
  max_batch: int = 16
  batch_window_ms: float = 10.0
  max_n: int = 16
  max_pending_rows: int = 1024
  add_bos: bool = False
  fim_order: str = fim.SPM
  max_body_bytes: int = 8 << 20

  def __post_init__(self):
    errors = [f"{k}={getattr(self, k)} must be at least 1" for k in
              ("context_len", "max_tokens_limit", "default_max_tokens", "max_batch", "max_n",
               "max_pending_rows")
              if getattr(self, k) < 1]
    if self.batch_window_ms < 0:
      errors.append(f"batch_window_ms={self.batch_window_ms} must not be negative")
    if self.fim_order not in (fim.SPM, fim.PSM):
      errors.append(f"fim_order={self.fim_order!r} is not {fim.SPM!r} or {fim.PSM!r}")
    if not self.model_name:
      errors.append("model_name must not be empty")
    if errors:
      raise ValueError("invalid ServerConfig: " + "; ".join(errors))


class ApiError(Exception):
  """A request the server refuses; rendered as OpenAI's error JSON with this HTTP status."""

  def __init__(self, status: int, message: str, *, param: Optional[str] = None,
               code: Optional[str] = None, type_: str = "invalid_request_error"):
    super().__init__(message)
    self.status, self.message, self.param, self.code = status, message, param, code
    self.type = type_

  def response(self) -> JSONResponse:
    return JSONResponse({"error": {"message": self.message, "type": self.type, "param": self.param,
                                   "code": self.code}}, status_code=self.status)


# ---- request fields ----

_TYPE_NAMES = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
               list: "an array", dict: "an object"}


def _field(body: dict, name: str, kind: type, default=None):
  """body[name] checked against `kind` (float accepts ints; int refuses booleans); null = absent."""
  value = body.get(name)
  if value is None:
    return default
  ok = (isinstance(value, (int, float)) and not isinstance(value, bool) if kind is float else
        isinstance(value, int) and not isinstance(value, bool) if kind is int else
        isinstance(value, kind))
  if not ok:
    raise ApiError(400, f"Invalid type for '{name}': expected {_TYPE_NAMES[kind]}, but got "
                   f"{_json_type(value)} instead.", param=name, code="invalid_type")
  return float(value) if kind is float else value


def _json_type(value) -> str:
  for kind in (bool, int, float, str, list, dict):
    if isinstance(value, kind):
      return _TYPE_NAMES[kind]
  return "null"


def _check_range(name: str, value, lo=None, hi=None, *, lo_open: bool = False) -> None:
  if value is None:
    return
  if lo is not None and (value <= lo if lo_open else value < lo):
    bound = f"> {lo}" if lo_open else f">= {lo}"
    raise ApiError(400, f"Invalid '{name}': expected a value {bound}, but got {value} instead.",
                   param=name, code="invalid_value")
  if hi is not None and value > hi:
    raise ApiError(400, f"Invalid '{name}': expected a value <= {hi}, but got {value} instead.",
                   param=name, code="invalid_value")


# The fields each route reads; anything else is refused by name, as OpenAI's API does, rather
# than silently ignored. "user", "metadata", "store" and "service_tier" only label a request.
_COMMON_FIELDS = {
    "model", "max_tokens", "temperature", "top_p", "top_k", "repetition_penalty", "n", "stop",
    "seed", "logprobs", "stream", "stream_options", "presence_penalty", "frequency_penalty",
    "logit_bias", "user", "metadata", "store", "service_tier"}
COMPLETION_FIELDS = _COMMON_FIELDS | {"prompt", "suffix", "echo", "best_of"}
CHAT_FIELDS = _COMMON_FIELDS | {"messages", "max_completion_tokens", "top_logprobs",
                                "response_format", "tools", "tool_choice", "functions",
                                "function_call", "parallel_tool_calls"}


def _refuse_unsupported(body: dict, known: set) -> None:
  unknown = sorted(set(body) - known)
  if unknown:
    raise ApiError(400, f"Unrecognized request argument supplied: {', '.join(unknown)}",
                   param=unknown[0], code="unknown_parameter")
  _field(body, "stream", bool)
  _field(body, "stream_options", dict)
  for name in ("presence_penalty", "frequency_penalty"):
    if _field(body, name, float, 0.0) != 0.0:
      raise ApiError(400, f"'{name}' is not supported (use the 'repetition_penalty' extension).",
                     param=name, code="unsupported_parameter")
  if _field(body, "logit_bias", dict):
    raise ApiError(400, "'logit_bias' is not supported.", param="logit_bias",
                   code="unsupported_parameter")
  for name in ("tools", "functions"):
    if body.get(name):
      raise ApiError(400, "Tool and function calling are not supported.", param=name,
                     code="unsupported_parameter")
  response_format = _field(body, "response_format", dict)
  if response_format is not None and response_format.get("type") != "text":
    raise ApiError(400, "Only response_format {'type': 'text'} is supported.",
                   param="response_format", code="unsupported_value")


def _stop_sequences(body: dict) -> tuple[str, ...]:
  stop = body.get("stop")
  if stop is None:
    return ()
  stops = [stop] if isinstance(stop, str) else stop
  if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
    raise ApiError(400, "Invalid type for 'stop': expected a string or an array of strings.",
                   param="stop", code="invalid_type")
  if len(stops) > MAX_STOP_SEQUENCES or any(not s for s in stops):
    raise ApiError(400, f"Invalid 'stop': at most {MAX_STOP_SEQUENCES} non-empty strings, got "
                   f"{stops!r}.", param="stop", code="invalid_value")
  return tuple(stops)


@dataclasses.dataclass(frozen=True)
class _Sampling:
  """The sampling fields of a request, before max_tokens is set per prompt."""

  max_tokens: Optional[int]
  n: int
  seed: int
  params: Any  # sampling.SamplingParams without max_new_tokens and seed


def _parse_sampling(body: dict, config: ServerConfig, *, max_tokens_names: Sequence[str],
                    extra_stop_ids: Sequence[int] = ()) -> _Sampling:
  max_tokens = None
  for name in max_tokens_names:
    value = _field(body, name, int)
    _check_range(name, value, 1)
    if value is not None and value > config.max_tokens_limit:
      raise ApiError(400, f"Invalid '{name}': {value} is above this server's limit of "
                     f"{config.max_tokens_limit} tokens per request.", param=name,
                     code="invalid_value")
    max_tokens = value if max_tokens is None else max_tokens
  temperature = _field(body, "temperature", float, 1.0)
  _check_range("temperature", temperature, 0.0, 2.0)
  top_p = _field(body, "top_p", float, 1.0)
  _check_range("top_p", top_p, 0.0, 1.0, lo_open=True)
  top_k = _field(body, "top_k", int, 0)
  _check_range("top_k", top_k, 0)
  repetition_penalty = _field(body, "repetition_penalty", float, 1.0)
  _check_range("repetition_penalty", repetition_penalty, 0.0, lo_open=True)
  n = _field(body, "n", int, 1)
  _check_range("n", n, 1, config.max_n)
  best_of = _field(body, "best_of", int)
  if best_of is not None and best_of != n:
    raise ApiError(400, "'best_of' other than n is not supported.", param="best_of",
                   code="unsupported_value")
  seed = _field(body, "seed", int)
  # Without a seed, sampling differs from call to call, as with OpenAI's API.
  seed = secrets.randbits(31) if seed is None else seed
  params = sampling.SamplingParams(
      temperature=temperature, top_k=top_k, top_p=top_p, repetition_penalty=repetition_penalty,
      stop=_stop_sequences(body), stop_token_ids=tuple(extra_stop_ids))
  return _Sampling(max_tokens, n, seed, params)


# ---- the server ----

class OpenAIServer:
  """The request logic, independent of HTTP: validate, tokenize, queue, build responses."""

  def __init__(self, sampler, tok, config: ServerConfig, *,
               chat_format: Optional[server_chat.ChatFormat] = None):
    if tok is None:
      raise ValueError("the server needs a tokenizer (text prompts, stop sequences, chat)")
    self.sampler, self.tok, self.config, self.chat_format = sampler, tok, config, chat_format
    self.worker = BatchingWorker(sampler.generate, max_batch=config.max_batch,
                                 window_s=config.batch_window_ms / 1000,
                                 max_pending_rows=config.max_pending_rows)
    self.created = int(time.time())

  # -- prompts --

  def _text_ids(self, text: str) -> list[int]:
    bos = [self.tok.bos_id] if self.config.add_bos and self.tok.bos_id is not None else []
    return bos + self.tok.encode(text)

  def _fim_ids(self, prefix: str, suffix: str) -> list[int]:
    try:
      ids = sampling.fim_prompt(self.tok, prefix, suffix, self.config.fim_order)
    except tokenizer_lib.TokenizerError as e:
      raise ApiError(400, f"'suffix' (fill-in-the-middle) needs FIM tokens: {e}", param="suffix",
                     code="unsupported_parameter") from e
    bos = [self.tok.bos_id] if self.config.add_bos and self.tok.bos_id is not None else []
    return bos + ids

  def completion_prompts(self, body: dict) -> list[tuple[list[int], str]]:
    """[(token ids, prompt text)] of a completions request's `prompt` (and `suffix`)."""
    if "prompt" not in body or body["prompt"] is None:
      raise ApiError(400, "Missing required parameter: 'prompt'.", param="prompt",
                     code="missing_required_parameter")
    prompt = body["prompt"]
    suffix = _field(body, "suffix", str)
    vocab = self.sampler_vocab_size()
    if isinstance(prompt, str):
      items = [prompt]
    elif isinstance(prompt, list) and prompt and all(_is_int(t) for t in prompt):
      items = [prompt]
    elif isinstance(prompt, list) and prompt and all(
        isinstance(p, str) or (isinstance(p, list) and all(_is_int(t) for t in p)) for p in prompt):
      items = prompt
    else:
      raise ApiError(400, "Invalid type for 'prompt': expected a string, an array of strings, an "
                     "array of token ids or an array of token-id arrays (non-empty).",
                     param="prompt", code="invalid_type")
    out = []
    for i, item in enumerate(items):
      where = "prompt" if len(items) == 1 else f"prompt[{i}]"
      if isinstance(item, str):
        ids = self._fim_ids(item, suffix) if suffix is not None else self._text_ids(item)
        text = item
      else:
        if suffix is not None:
          raise ApiError(400, "'suffix' needs text prompts, not token ids.", param="suffix",
                         code="invalid_value")
        bad = [t for t in item if not 0 <= t < vocab]
        if bad:
          raise ApiError(400, f"Invalid '{where}': token id {bad[0]} is outside the vocabulary "
                         f"[0, {vocab}).", param=where, code="invalid_value")
        ids, text = list(item), self.tok.decode(item)
      if not ids:
        raise ApiError(400, f"Invalid '{where}': the prompt is empty.", param=where,
                       code="invalid_value")
      out.append((ids, text))
    return out

  def sampler_vocab_size(self) -> int:
    cfg = getattr(self.sampler, "cfg", None)
    return cfg.vocab_size if cfg is not None else self.tok.vocab_size

  def _max_new_tokens(self, requested: Optional[int], prompt_len: int, where: str,
                      default: Optional[int]) -> int:
    room = self.config.context_len - prompt_len
    wanted = requested if requested is not None else (
        default if default is not None else min(self.config.max_tokens_limit, room))
    if wanted > room or room < 1:
      raise ApiError(400, f"This model's maximum context length is {self.config.context_len} "
                     f"tokens. However, you requested {prompt_len + max(wanted, 1)} tokens "
                     f"({prompt_len} in the {where}, {max(wanted, 1)} in the completion). Please "
                     "reduce the length of the prompt or the completion.", param=where,
                     code="context_length_exceeded")
    return wanted

  # -- requests --

  async def _generate(self, prompt_ids: list[list[int]], sampling_: _Sampling,
                      max_new: list[int]) -> list:
    rows, params = [], []
    for ids, m in zip(prompt_ids, max_new):
      for j in range(sampling_.n):
        rows.append(ids)
        params.append(dataclasses.replace(sampling_.params, max_new_tokens=m,
                                          seed=(sampling_.seed + j) & 0x7FFFFFFF))
    try:
      future = self.worker.submit(rows, params)
    except Overloaded as e:
      raise ApiError(429, f"The server is busy: {e}.", type_="server_error",
                     code="server_busy") from e
    try:
      return await asyncio.wrap_future(future)
    except Exception as e:
      logging.exception("generation failed")
      raise ApiError(500, f"Generation failed: {type(e).__name__}: {e}",
                     type_="server_error") from e

  def check_model(self, body: dict) -> None:
    model = body.get("model")
    if model is None:
      raise ApiError(400, "Missing required parameter: 'model'.", param="model",
                     code="missing_required_parameter")
    if not isinstance(model, str):
      raise ApiError(400, f"Invalid type for 'model': expected a string, but got "
                     f"{_json_type(model)} instead.", param="model", code="invalid_type")
    if model != self.config.model_name:
      raise ApiError(404, f"The model `{model}` does not exist; this server serves "
                     f"`{self.config.model_name}`.", param="model", code="model_not_found")

  async def completions(self, body: dict) -> dict:
    self.check_model(body)
    _refuse_unsupported(body, COMPLETION_FIELDS)
    logprobs = _field(body, "logprobs", int)
    _check_range("logprobs", logprobs, 0, 0)  # top alternatives: the sampler does not return them
    echo = _field(body, "echo", bool, False)
    if echo and logprobs is not None:
      raise ApiError(400, "'echo' with 'logprobs' is not supported (no prompt log-probabilities).",
                     param="echo", code="unsupported_value")
    sampling_ = _parse_sampling(body, self.config, max_tokens_names=("max_tokens",))
    prompts = self.completion_prompts(body)
    default = min(self.config.default_max_tokens, self.config.max_tokens_limit)
    max_new = [self._max_new_tokens(sampling_.max_tokens, len(ids), "prompt", default)
               for ids, _ in prompts]
    completions = await self._generate([ids for ids, _ in prompts], sampling_, max_new)
    choices = []
    for k, c in enumerate(completions):
      prompt_text = prompts[k // sampling_.n][1]
      text = self._text(c)
      choices.append({"text": prompt_text + text if echo else text, "index": k,
                      "logprobs": None if logprobs is None else self._completion_logprobs(
                          c, len(prompt_text)),
                      "finish_reason": c.finish_reason})
    return {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion",
            "created": int(time.time()), "model": self.config.model_name, "choices": choices,
            "usage": _usage([ids for ids, _ in prompts], completions)}

  async def chat_completions(self, body: dict) -> dict:
    self.check_model(body)
    _refuse_unsupported(body, CHAT_FIELDS)
    if self.chat_format is None:
      raise ApiError(400, "This model has no chat format; use /v1/completions.",
                     code="unsupported_route")
    if "messages" not in body:
      raise ApiError(400, "Missing required parameter: 'messages'.", param="messages",
                     code="missing_required_parameter")
    want_logprobs = _field(body, "logprobs", bool, False)
    top_logprobs = _field(body, "top_logprobs", int)
    _check_range("top_logprobs", top_logprobs, 0, 0)  # alternatives: not returned by the sampler
    sampling_ = _parse_sampling(body, self.config,
                                max_tokens_names=("max_completion_tokens", "max_tokens"),
                                extra_stop_ids=self.chat_format.stop_token_ids)
    try:
      ids = self.chat_format.prompt_ids(server_chat.normalize_messages(body["messages"]))
    except server_chat.ChatError as e:
      raise ApiError(400, str(e), param=e.param, code="invalid_value") from e
    max_new = self._max_new_tokens(sampling_.max_tokens, len(ids), "messages", None)
    completions = await self._generate([ids], sampling_, [max_new])
    choices = [{"index": k, "message": {"role": "assistant", "content": self._text(c)},
                "logprobs": {"content": self._chat_logprobs(c)} if want_logprobs else None,
                "finish_reason": c.finish_reason} for k, c in enumerate(completions)]
    return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion",
            "created": int(time.time()), "model": self.config.model_name, "choices": choices,
            "usage": _usage([ids], completions)}

  def _text(self, completion) -> str:
    return completion.text if completion.text is not None else self.tok.decode(completion.tokens)

  def _token_strings(self, completion) -> list[str]:
    return [self.tok.decode([t]) for t in completion.tokens]

  def _completion_logprobs(self, completion, offset: int) -> dict:
    tokens = self._token_strings(completion)
    offsets = []
    for t in tokens:
      offsets.append(offset)
      offset += len(t)
    return {"tokens": tokens, "token_logprobs": [float(x) for x in completion.logprobs],
            "top_logprobs": None, "text_offset": offsets}

  def _chat_logprobs(self, completion) -> list[dict]:
    return [{"token": t, "logprob": float(lp), "bytes": list(t.encode("utf-8")), "top_logprobs": []}
            for t, lp in zip(self._token_strings(completion), completion.logprobs)]

  def models(self) -> dict:
    return {"object": "list", "data": [self.model_card()]}

  def model_card(self) -> dict:
    return {"id": self.config.model_name, "object": "model", "created": self.created,
            "owned_by": "seedcoder-jax", "context_length": self.config.context_len}


def _is_int(x) -> bool:
  return isinstance(x, int) and not isinstance(x, bool)


def _usage(prompt_ids: Sequence[Sequence[int]], completions: Sequence) -> dict:
  prompt = sum(len(p) for p in prompt_ids)
  completion = sum(len(c.tokens) for c in completions)
  return {"prompt_tokens": prompt, "completion_tokens": completion,
          "total_tokens": prompt + completion}


# ---- HTTP ----

async def _json_body(request: Request, limit: int) -> dict:
  raw = await request.body()
  if len(raw) > limit:
    raise ApiError(413, f"The request body is {len(raw)} bytes; the limit is {limit}.",
                   code="request_too_large")
  try:
    body = json.loads(raw)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ApiError(400, f"We could not parse the JSON body of your request ({e}). The body must "
                   "be a JSON object.", code="invalid_json") from None
  if not isinstance(body, dict):
    raise ApiError(400, f"The JSON body must be an object, got {_json_type(body)}.",
                   code="invalid_json")
  return body


def stream_chunks(response: dict, include_usage: bool) -> list[dict]:
  """A finished response as the chunks of OpenAI's streaming protocol: per choice its whole text
  in one chunk, then its finish_reason; usage last when asked for (stream_options.include_usage).
  """
  chat = response["object"] == "chat.completion"
  head = {k: response[k] for k in ("id", "created", "model")}
  head["object"] = "chat.completion.chunk" if chat else "text_completion"
  chunks = []
  for choice in response["choices"]:
    if chat:
      delta = {"role": "assistant", "content": choice["message"]["content"]}
      chunks.append({**head, "choices": [{"index": choice["index"], "delta": delta,
                                          "logprobs": choice["logprobs"], "finish_reason": None}]})
      chunks.append({**head, "choices": [{"index": choice["index"], "delta": {}, "logprobs": None,
                                          "finish_reason": choice["finish_reason"]}]})
    else:
      chunks.append({**head, "choices": [choice]})
  if include_usage:
    chunks.append({**head, "choices": [], "usage": response["usage"]})
  return chunks


async def _sse(chunks: list[dict]):
  for chunk in chunks:
    yield f"data: {json.dumps(chunk)}\n\n"
  yield "data: [DONE]\n\n"


def make_app(server: OpenAIServer) -> Starlette:
  """The starlette app; its lifespan starts and stops the batching worker."""

  def endpoint(handler):
    async def run(request: Request):
      try:
        if request.method == "POST":
          body = await _json_body(request, server.config.max_body_bytes)
          response = await handler(body)
          if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return StreamingResponse(_sse(stream_chunks(response, include_usage)),
                                     media_type="text/event-stream")
          return JSONResponse(response)
        return JSONResponse(handler(request))
      except ApiError as e:
        return e.response()
      except Exception as e:  # a bug, not the client's fault: still OpenAI's error shape
        logging.exception("%s %s failed", request.method, request.url.path)
        return ApiError(500, f"Internal error: {type(e).__name__}: {e}",
                        type_="server_error").response()
    return run

  async def not_found(request: Request, exc: HTTPException):
    if exc.status_code == 405:
      return ApiError(405, f"Method {request.method} is not allowed for {request.url.path}.",
                      code="method_not_allowed").response()
    if exc.status_code == 404:
      return ApiError(404, f"Invalid URL ({request.method} {request.url.path})",
                      code="unknown_url").response()
    return ApiError(exc.status_code, str(exc.detail)).response()

  @contextlib.asynccontextmanager
  async def lifespan(app):
    server.worker.start()
    try:
      yield
    finally:
      server.worker.stop()

  routes = [
      Route("/v1/completions", endpoint(server.completions), methods=["POST"]),
      Route("/v1/chat/completions", endpoint(server.chat_completions), methods=["POST"]),
      Route("/v1/models", endpoint(lambda r: server.models()), methods=["GET"]),
      Route("/v1/models/{model_id:path}", endpoint(lambda r: _model(server, r)), methods=["GET"]),
      Route("/v1/stats", endpoint(lambda r: server.worker.stats.to_dict()), methods=["GET"]),
      Route("/health", endpoint(lambda r: {"status": "ok"}), methods=["GET"]),
  ]
  app = Starlette(routes=routes, lifespan=lifespan,
                  exception_handlers={HTTPException: not_found})
  app.state.server = server
  return app


def _model(server: OpenAIServer, request: Request) -> dict:
  model_id = request.path_params["model_id"]
  if model_id != server.config.model_name:
    raise ApiError(404, f"The model `{model_id}` does not exist.", param="model",
                   code="model_not_found")
  return server.model_card()


def build(model_spec: str, *, tokenizer_spec: Optional[str] = None,
          model_name: Optional[str] = None, max_len: int = 2048,
          chat_template: Optional[str] = None, add_bos: Optional[bool] = None,
          **config_fields) -> OpenAIServer:
  """Loads a model ("gguf:smollm2", "gguf:FILE", "hf:DIR", "orbax:DIR") and wraps it in a server.

  max_len: the sampler's KV-cache length and the server's context (at most cfg.max_seq_len).
  add_bos: None = the tokenizer's convention (our SentencePiece models: yes; a GGUF: its
    add_bos_token flag; tokenizer.json: no).
  """
  # Bad settings are refused before the (slow) model load.
  config = ServerConfig(model_name=model_name or default_model_name(model_spec),
                        context_len=max_len, **config_fields)
  if chat_template and not pathlib.Path(chat_template).is_file():
    raise ValueError(f"chat template file not found: {chat_template}")
  tok = tokenizer_lib.load(tokenizer_spec) if tokenizer_spec else None
  cfg, params, model_tok = sampling.load_model(model_spec)
  tok = tok or model_tok
  if tok is None:
    raise ValueError(f"model {model_spec!r} comes with no tokenizer; pass one "
                     "(--tokenizer=spm:PATH, hf:tokenizer.json or gguf:FILE)")
  max_len = min(max_len, cfg.max_seq_len)
  sampler = sampling.Sampler(cfg, params, tokenizer=tok, max_batch=config.max_batch,
                             max_len=max_len)
  chat_format = server_chat.load_chat_format(tok, model_spec=model_spec,
                                             template_file=chat_template)
  config = dataclasses.replace(config, context_len=max_len,
                               add_bos=default_add_bos(tok) if add_bos is None else add_bos)
  logging.info("serving %s as %r: context %d, chat format %s, BOS %s", model_spec,
               config.model_name, max_len, chat_format.name, config.add_bos)
  return OpenAIServer(sampler, tok, config, chat_format=chat_format)


def default_add_bos(tok) -> bool:
  kind, _, path = tok.spec.partition(":")
  if kind == "spm":
    return True
  if kind == "gguf":
    return server_chat.gguf_tokenizer_info(path).add_bos
  return False


def default_model_name(model_spec: str) -> str:
  """"gguf:smollm2" -> "smollm2"; "hf:/ckpt/Seed-Coder-8B/" -> "Seed-Coder-8B"."""
  path = model_spec.partition(":")[2].rstrip("/")
  name = path.rsplit("/", 1)[-1]
  return name[:-len(".gguf")] if name.endswith(".gguf") else name or model_spec


def serve(server: OpenAIServer, *, host: str = "127.0.0.1", port: int = 8000) -> None:
  """Runs the server in the foreground until interrupted (launch/serve.py)."""
  uvicorn.run(make_app(server), host=host, port=port, log_level="info")
