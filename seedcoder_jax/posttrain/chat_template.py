"""Conversations -> token ids with an assistant mask, in the model's own chat format.

    renderer = ChatRenderer("gguf:smollm2")            # the tokenizer spec; its template if it has one
    ids, mask = renderer.render(messages)               # mask[i] = 1 on assistant tokens
    prompt = renderer.prompt_ids(messages)              # ends where the assistant's reply begins

The format is the one the server uses (sampling.server_chat.load_chat_format): a Jinja template
(the GGUF's or Hugging Face directory's, or `template_file`), else the project's role tokens.

Message text is never parsed for control tokens: the template is rendered with a unique sentinel
in place of every message's content, the template text between sentinels is tokenized with its
special pieces (<|im_start|>, ...) as single tokens, and each content is tokenized as plain text.
So a message that contains "<|im_end|>" cannot end its turn early or inject a turn, and the
content's tokens are exactly what `tokenizer.encode(content)` gives (what a generated reply is).

The assistant mask covers an assistant message's content and the template text after it up to
and including the first turn-end token (<|im_end|> or EOS): the model learns to stop. Whatever the
template writes after that (a newline) and every other token is 0. A template that alters content
(e.g. `| trim`) is followed on the template side only; the content is taken as given.
"""

from __future__ import annotations

import re
import secrets
from typing import Optional, Sequence

from seedcoder_jax import tokenizer as tokenizer_lib
from seedcoder_jax.sampling import server_chat


class ChatTemplateError(ValueError):
  """A conversation the chat format cannot render (the message names the problem)."""


class ChatRenderer:
  """Renders conversations for training and prompting. Picklable: holds specs only and loads the
  tokenizer and template lazily (a Grain worker builds its own)."""

  def __init__(self, tokenizer_spec: str, *, template_file: str = "", system_prompt: str = ""):
    self.tokenizer_spec = tokenizer_spec
    self.template_file = template_file
    self.system_prompt = system_prompt
    self._loaded = None

  def __getstate__(self):
    return {**self.__dict__, "_loaded": None}

  def __setstate__(self, state):
    self.__dict__.update(state)

  def _load(self):
    if self._loaded is None:
      tok = tokenizer_lib.load(self.tokenizer_spec)
      fmt = server_chat.load_chat_format(tok, model_spec=self.tokenizer_spec,
                                         template_file=self.template_file or None)
      pieces = server_chat.special_pieces(tok)
      self._loaded = (tok, fmt, pieces, frozenset(fmt.stop_token_ids))
    return self._loaded

  @property
  def tokenizer(self):
    return self._load()[0]

  @property
  def stop_token_ids(self) -> tuple[int, ...]:
    return tuple(self._load()[1].stop_token_ids)

  @property
  def name(self) -> str:
    return self._load()[1].name

  def with_system(self, messages: Sequence[dict]) -> list[dict]:
    """The messages with the configured system prompt first, unless they have their own."""
    messages = [dict(m) for m in messages]
    if self.system_prompt and not (messages and messages[0]["role"] == "system"):
      messages.insert(0, {"role": "system", "content": self.system_prompt})
    return messages

  def render(self, messages: Sequence[dict]) -> tuple[list[int], list[int]]:
    """(token ids, assistant mask) of a whole conversation (no generation prompt)."""
    if not any(m["role"] == "assistant" for m in messages):
      raise ChatTemplateError(f"conversation without an assistant turn (roles "
                              f"{[m['role'] for m in messages]}): nothing to train on")
    return self._ids(self.with_system(messages), add_generation_prompt=False)

  def prompt_ids(self, messages: Sequence[dict]) -> list[int]:
    """Token ids of a prompt that ends where the assistant's reply begins."""
    if messages and messages[-1]["role"] == "assistant":
      raise ChatTemplateError("a prompt must not end with an assistant turn")
    return self._ids(self.with_system(messages), add_generation_prompt=True)[0]

  def completion_ids(self, text: str) -> list[int]:
    """A reply's token ids as the model would generate them: the text, then the turn end."""
    tok, fmt, _, _ = self._load()
    return list(tok.encode(text)) + [fmt.stop_token_ids[0]]

  # --- rendering ------------------------------------------------------------------------------

  def _ids(self, messages: list[dict], *, add_generation_prompt: bool):
    tok, fmt, pieces, stops = self._load()
    if isinstance(fmt, server_chat.RoleTokenChatFormat):
      return self._role_token_ids(tok, messages, add_generation_prompt)
    marker = f"\u2063SEEDCODER{secrets.token_hex(8)}\u2063"
    slotted = [{"role": m["role"], "content": f"{marker}{i}{marker}"} for i, m in enumerate(messages)]
    try:
      text = fmt.render(slotted, add_generation_prompt=add_generation_prompt)
    except server_chat.ChatError as e:
      raise ChatTemplateError(f"{fmt.name}: {e}") from e
    parts = re.split(f"{re.escape(marker)}(\\d+){re.escape(marker)}", text)
    order = [int(k) for k in parts[1::2]]
    if order != list(range(len(messages))):
      raise ChatTemplateError(
          f"{fmt.name} does not write each message's content once and in order (it wrote "
          f"messages {order} of {len(messages)}; roles {[m['role'] for m in messages]})")
    ids, mask = [], []
    after_assistant = False
    for j, chunk in enumerate(parts):
      if j % 2:  # a message's content: plain text
        m = messages[int(chunk)]
        content_ids = list(tok.encode(m["content"]))
        after_assistant = m["role"] == "assistant"
        ids += content_ids
        mask += [int(after_assistant)] * len(content_ids)
        continue
      chunk_ids = server_chat.encode_with_specials(tok, chunk, pieces)
      chunk_mask = [0] * len(chunk_ids)
      if after_assistant:  # the turn end belongs to the reply: up to and including the first stop
        end = next((k for k, t in enumerate(chunk_ids) if t in stops), None)
        if end is None:
          raise ChatTemplateError(f"{fmt.name}: no turn-end token ({sorted(stops)}) after an "
                                  "assistant message")
        chunk_mask[:end + 1] = [1] * (end + 1)
      ids += chunk_ids
      mask += chunk_mask
      after_assistant = False
    return ids, mask

  @staticmethod
  def _role_token_ids(tok, messages, add_generation_prompt):
    """<s><|im_start|><|role|>CONTENT<|im_end|>... (sampling.server_chat.RoleTokenChatFormat)."""
    start, end = tok.require("im_start", "im_end")
    roles = dict(zip(server_chat.ROLES, tok.require(*server_chat.ROLES)))
    ids = [] if tok.bos_id is None else [tok.bos_id]
    mask = [0] * len(ids)
    for m in messages:
      content = list(tok.encode(m["content"]))
      a = int(m["role"] == "assistant")
      ids += [start, roles[m["role"]], *content, end]
      mask += [0, 0] + [a] * (len(content) + 1)
    if add_generation_prompt:
      ids += [start, roles["assistant"]]
      mask += [0, 0]
    return ids, mask


def check_messages(messages, where: str) -> Optional[str]:
  """None if `messages` is a renderable conversation shape, else why not (for data validation)."""
  if not isinstance(messages, list) or not messages:
    return f"{where}: messages must be a non-empty list"
  for i, m in enumerate(messages):
    if not isinstance(m, dict) or m.get("role") not in server_chat.ROLES or not isinstance(
        m.get("content"), str):
      return f"{where}: message {i} must be {{role: system|user|assistant, content: str}}"
  return None
