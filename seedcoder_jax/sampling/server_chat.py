"""Chat prompts for the server: OpenAI `messages` -> the model's own chat format -> token ids.

Two formats:
- `JinjaChatFormat`: the model's Jinja chat template (a GGUF's `tokenizer.chat_template`, or a
  Hugging Face directory's tokenizer_config.json / chat_template.jinja), rendered as transformers'
  `apply_chat_template` does (sandboxed Jinja, trim_blocks, lstrip_blocks, `raise_exception`,
  `tojson`, `bos_token`, `eos_token`, `add_generation_prompt`), then tokenized with the
  vocabulary's special and added tokens matched whole, as `apply_chat_template(tokenize=True)` does.
- `RoleTokenChatFormat`: the project's SentencePiece vocabulary has no template, but dedicated
  chat tokens (tokenizer.SPECIAL_TOKENS); a conversation is
      <s><|im_start|><|system|>CONTENT<|im_end|><|im_start|><|user|>CONTENT<|im_end|>...
      <|im_start|><|assistant|>
  with each CONTENT encoded as plain text (so message text can never inject control tokens), and
  the reply ends at <|im_end|>. SFT data for our own models must be laid out the same way.

Both raise `ChatError` (the server turns it into a 400) for messages they cannot render.
"""

from __future__ import annotations

import abc
import dataclasses
import datetime
import functools
import json
import pathlib
import re
from typing import Optional, Sequence

from seedcoder_jax import tokenizer as tokenizer_lib

# OpenAI's roles that chat templates understand; "developer" is OpenAI's newer name for "system".
ROLES = ("system", "user", "assistant")
_ROLE_ALIASES = {"developer": "system"}


class ChatError(ValueError):
  """Messages that cannot be rendered; `param` names the offending request field."""

  def __init__(self, message: str, param: str = "messages"):
    super().__init__(message)
    self.param = param


def normalize_messages(messages) -> list[dict]:
  """Validates OpenAI chat messages -> [{"role": r, "content": str}, ...].

  Content may be a string or a list of {"type": "text", "text": ...} parts (joined); images,
  audio and tool calls are refused with the index of the message at fault.
  """
  if not isinstance(messages, list) or not messages:
    raise ChatError("'messages' must be a non-empty array of message objects")
  out = []
  for i, m in enumerate(messages):
    where = f"messages[{i}]"
    if not isinstance(m, dict):
      raise ChatError(f"{where} must be an object with 'role' and 'content', got "
                      f"{type(m).__name__}", where)
    role = m.get("role")
    if not isinstance(role, str):
      raise ChatError(f"{where}.role is missing or not a string", f"{where}.role")
    role = _ROLE_ALIASES.get(role, role)
    if role not in ROLES:
      raise ChatError(f"{where}.role {m['role']!r} is not supported; use one of "
                      f"{list(ROLES) + list(_ROLE_ALIASES)}", f"{where}.role")
    if m.get("tool_calls"):
      raise ChatError(f"{where}.tool_calls: tool calls are not supported", f"{where}.tool_calls")
    out.append({"role": role, "content": _content_text(m.get("content"), where)})
  return out


def _content_text(content, where: str) -> str:
  if isinstance(content, str):
    return content
  if isinstance(content, list):
    texts = []
    for j, part in enumerate(content):
      if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(
          part.get("text"), str):
        kind = part.get("type") if isinstance(part, dict) else type(part).__name__
        raise ChatError(f"{where}.content[{j}]: only text parts ({{'type': 'text', 'text': ...}}) "
                        f"are supported, got {kind!r}", f"{where}.content[{j}]")
      texts.append(part["text"])
    return "".join(texts)
  raise ChatError(f"{where}.content must be a string or an array of text parts, got "
                  f"{type(content).__name__}", f"{where}.content")


def special_pieces(tok: tokenizer_lib.Tokenizer) -> dict[str, int]:
  """Every string the vocabulary treats as one indivisible token: its special and added tokens."""
  pieces = {tok.id_to_piece(i): i for i in tok.special_ids.values() if i is not None}
  backend = getattr(tok, "backend", None)
  # A Hugging Face `tokenizers.Tokenizer` (tokenizer.json, GGUF) also lists its added tokens.
  hf = backend[0] if isinstance(backend, tuple) and backend else None
  if hasattr(hf, "get_added_tokens_decoder"):
    for i, added in hf.get_added_tokens_decoder().items():
      pieces.setdefault(added.content, int(i))
  return pieces


def encode_with_specials(tok: tokenizer_lib.Tokenizer, text: str,
                         pieces: Optional[dict[str, int]] = None) -> list[int]:
  """Token ids of rendered template text: special/added token strings become their ids.

  `Tokenizer.encode` deliberately treats such strings as text (documents must not inject control
  tokens); a rendered chat template is the one place where they are meant as tokens.
  """
  pieces = special_pieces(tok) if pieces is None else pieces
  if not pieces:
    return tok.encode(text)
  pattern = _piece_pattern(tuple(sorted(pieces, key=len, reverse=True)))
  ids: list[int] = []
  pos = 0
  for match in pattern.finditer(text):
    if match.start() > pos:
      ids.extend(tok.encode(text[pos:match.start()]))
    ids.append(pieces[match.group(0)])
    pos = match.end()
  if pos < len(text):
    ids.extend(tok.encode(text[pos:]))
  return ids


@functools.lru_cache(maxsize=8)
def _piece_pattern(pieces: tuple[str, ...]) -> re.Pattern:
  return re.compile("|".join(re.escape(p) for p in pieces if p))


class ChatFormat(abc.ABC):
  """messages -> prompt token ids; `stop_token_ids` end the assistant's turn."""

  name: str
  stop_token_ids: tuple[int, ...]

  @abc.abstractmethod
  def prompt_ids(self, messages: Sequence[dict]) -> list[int]:
    """The prompt's token ids, ending where the assistant's reply begins."""


def _turn_end_ids(tok: tokenizer_lib.Tokenizer) -> tuple[int, ...]:
  # EOS, plus ChatML's <|im_end|> where the vocabulary has it (our SentencePiece EOS is </s>).
  return tuple(dict.fromkeys(i for i in (tok.eos_id, tok.im_end_id) if i is not None))


class JinjaChatFormat(ChatFormat):
  """A Hugging Face-style Jinja chat template (see the module docstring)."""

  def __init__(self, template: str, tok: tokenizer_lib.Tokenizer, *, source: str):
    import jinja2
    from jinja2 import sandbox
    env = sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                                extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.datetime.now().strftime(fmt)
    try:
      self._template = env.from_string(template)
    except jinja2.TemplateSyntaxError as e:
      raise ValueError(f"chat template from {source} does not compile: {e} "
                       f"(line {e.lineno})") from e
    self._tok = tok
    self._pieces = special_pieces(tok)
    self._bos = tok.id_to_piece(tok.bos_id) if tok.bos_id is not None else ""
    self._eos = tok.id_to_piece(tok.eos_id) if tok.eos_id is not None else ""
    self.name = f"jinja chat template ({source})"
    self.stop_token_ids = _turn_end_ids(tok)

  def render(self, messages: Sequence[dict], add_generation_prompt: bool = True) -> str:
    import jinja2
    try:
      return self._template.render(messages=list(messages),
                                   add_generation_prompt=add_generation_prompt,
                                   bos_token=self._bos, eos_token=self._eos, tools=None,
                                   documents=None)
    except _TemplateRaised as e:
      raise ChatError(f"the chat template refused these messages: {e}") from e
    except jinja2.TemplateError as e:
      raise ChatError(f"the chat template failed on these messages: {type(e).__name__}: {e}") from e

  def prompt_ids(self, messages: Sequence[dict]) -> list[int]:
    return encode_with_specials(self._tok, self.render(messages), self._pieces)


class _TemplateRaised(Exception):
  pass


def _raise_exception(message):
  raise _TemplateRaised(message)


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
  return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                    sort_keys=sort_keys)


class RoleTokenChatFormat(ChatFormat):
  """The project's SentencePiece chat layout from its role tokens (see the module docstring)."""

  def __init__(self, tok: tokenizer_lib.Tokenizer):
    self._tok = tok
    self._bos = tok.bos_id
    self._start, self._end = tok.require("im_start", "im_end")
    self._role_ids = dict(zip(ROLES, tok.require(*ROLES)))
    self.name = "role tokens (<|im_start|><|role|>...<|im_end|>)"
    self.stop_token_ids = _turn_end_ids(tok)

  def prompt_ids(self, messages: Sequence[dict]) -> list[int]:
    ids = [] if self._bos is None else [self._bos]
    for m in messages:
      ids += [self._start, self._role_ids[m["role"]], *self._tok.encode(m["content"]), self._end]
    return ids + [self._start, self._role_ids["assistant"]]


def load_chat_format(tok: tokenizer_lib.Tokenizer, *, model_spec: str = "",
                     template_file: Optional[str] = None) -> ChatFormat:
  """The chat format of a model: an explicit template file, else the model's own template, else
  role tokens for our SentencePiece vocabulary; a clear error when none applies.
  """
  if template_file:
    path = pathlib.Path(template_file)
    if not path.is_file():
      raise ValueError(f"chat template file not found: {template_file}")
    return JinjaChatFormat(path.read_text(encoding="utf-8"), tok, source=str(path))
  template, source = _model_template(model_spec, tok)
  if template:
    return JinjaChatFormat(template, tok, source=source)
  if all(tok.special_ids.get(n) is not None for n in ("im_start", "im_end", *ROLES)):
    return RoleTokenChatFormat(tok)
  raise ValueError(f"model {model_spec!r} (tokenizer {tok.spec!r}) has no chat template and no "
                   "chat role tokens; pass a Jinja template file (--chat_template)")


@dataclasses.dataclass(frozen=True)
class GGUFChatInfo:
  path: str
  chat_template: Optional[str]
  add_bos: bool


@functools.lru_cache(maxsize=4)
def gguf_tokenizer_info(path: str) -> GGUFChatInfo:
  """What the server needs from a GGUF's tokenizer metadata ("smollm2" = the packaged model),
  read once per process: parsing the metadata takes seconds."""
  from seedcoder_jax.interop import gguf
  file = str(gguf.smollm2_path() if path == "smollm2" else path)
  info = gguf.load_tokenizer_info(file)
  return GGUFChatInfo(file, info.chat_template, info.add_bos)


def _model_template(model_spec: str, tok: tokenizer_lib.Tokenizer) -> tuple[Optional[str], str]:
  """(template, where it came from) for gguf:/hf: models, or (None, "")."""
  kind, _, path = model_spec.partition(":")
  tok_kind, _, tok_path = tok.spec.partition(":")
  if kind != "gguf" and tok_kind == "gguf":
    kind, path = "gguf", tok_path
  if kind == "gguf":
    info = gguf_tokenizer_info(path)
    return info.chat_template, f"tokenizer.chat_template of {info.path}"
  if kind == "hf" or tok_kind == "hf":
    directory = pathlib.Path(path if kind == "hf" else tok_path)
    directory = directory if directory.is_dir() else directory.parent
    jinja_file = directory / "chat_template.jinja"
    if jinja_file.is_file():
      return jinja_file.read_text(encoding="utf-8"), str(jinja_file)
    config_file = directory / "tokenizer_config.json"
    if config_file.is_file():
      template = json.loads(config_file.read_text(encoding="utf-8")).get("chat_template")
      # Several named templates: [{"name": "default", "template": ...}, {"name": "tool_use", ...}]
      if isinstance(template, list):
        template = {t.get("name"): t.get("template") for t in template}.get("default")
      if template:
        return template, f"chat_template of {config_file}"
  return None, ""
