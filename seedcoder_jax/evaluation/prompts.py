"""Prompt building (base and chat style) and completion post-processing.

Base style feeds the problem's prompt as it is and the model continues the function. Chat style
wraps it in a ChatML user turn asking for the completion, and pre-fills the assistant turn with a
code fence plus the same prompt, so an instruct model continues the function body too and both
styles score through the same `prompt + completion` program.
"""

from __future__ import annotations

from typing import Optional, Sequence

from seedcoder_jax.evaluation.benchmarks import Problem

PROMPT_STYLES = ("base", "chat")
_FENCE_LANG = {"python": "python", "cpp": "cpp", "java": "java"}
_LANG_NAME = {"python": "Python", "cpp": "C++", "java": "Java"}
CHAT_SYSTEM = "You are a helpful coding assistant."


def chat_user_message(problem: Problem) -> str:
  """The user turn of a chat-style prompt."""
  lang = problem.language
  return (f"Complete the following {_LANG_NAME.get(lang, lang)} code. Write only the code.\n"
          f"```{_FENCE_LANG.get(lang, lang)}\n{problem.prompt}```")


def chat_response_prefix(problem: Problem) -> str:
  """The text the assistant turn starts with: a code fence and the prompt to continue."""
  return f"```{_FENCE_LANG.get(problem.language, problem.language)}\n{problem.prompt}"


def prompt_text(problem: Problem, style: str) -> str:
  """The prompt as text (ChatML written out for chat style), for logs and samples files."""
  _check_style(style)
  if style == "base":
    return problem.prompt
  return (f"<|im_start|>system\n{CHAT_SYSTEM}<|im_end|>\n"
          f"<|im_start|>user\n{chat_user_message(problem)}<|im_end|>\n"
          f"<|im_start|>assistant\n{chat_response_prefix(problem)}")


def prompt_ids(problem: Problem, style: str, tokenizer) -> list[int]:
  """Token ids of the prompt. Chat delimiters are the tokenizer's special ids, never text.

  (The project's tokenizers encode special-token strings inside text as plain text, so ChatML
  cannot be spelled out and encoded.)
  """
  _check_style(style)
  if style == "base":
    return list(tokenizer.encode(problem.prompt))
  im_start, im_end = tokenizer.require("im_start", "im_end")
  newline = list(tokenizer.encode("\n"))
  ids = []
  for role, content in (("system", CHAT_SYSTEM), ("user", chat_user_message(problem))):
    ids += [im_start, *tokenizer.encode(f"{role}\n{content}"), im_end, *newline]
  ids += [im_start, *tokenizer.encode(f"assistant\n{chat_response_prefix(problem)}")]
  return ids


def stop_sequences(problem: Problem, style: str) -> tuple[str, ...]:
  """Where generation may stop: the problem's stops, plus the closing code fence in chat style."""
  _check_style(style)
  return tuple(problem.stop) + (("\n```", "```") if style == "chat" else ())


def truncate(text: str, stops: Sequence[str]) -> str:
  """`text` cut at the earliest occurrence of any stop sequence (the stop itself excluded)."""
  cut = len(text)
  for stop in stops:
    if stop:
      i = text.find(stop)
      if 0 <= i < cut:
        cut = i
  return text[:cut]


def postprocess(problem: Problem, text: str, style: str = "base") -> str:
  """The completion to score from raw generated text: cut at the stop sequences.

  Stops are applied again here because the sampler may have stopped on EOS or length, and a
  samples file may hold untruncated text.
  """
  return truncate(text, stop_sequences(problem, style))


def fim_prompt_ids(tokenizer, prefix: str, suffix: str, order: str = "spm") -> list[int]:
  """Token ids asking for the middle between prefix and suffix, in the training layout.

  Built by seedcoder_jax.input.fim (the pretraining FIM transform) with an empty middle, so the
  prompt is exactly what the model saw before a middle: SPM `<fim_suffix>S<fim_prefix>P<fim_middle>`
  or PSM `<fim_prefix>P<fim_suffix>S<fim_middle>`.
  """
  from seedcoder_jax.input import fim
  tokenizer.require("fim_prefix", "fim_middle", "fim_suffix")
  return fim.encode_parts(fim.arrange(prefix, "", suffix, order), tokenizer)


def fim_middle_text(text: str) -> str:
  """The predicted middle of a single-line FIM sample: everything before the first newline."""
  return text.split("\n", 1)[0]


def _check_style(style: Optional[str]) -> None:
  if style not in PROMPT_STYLES:
    raise ValueError(f"unknown prompt style {style!r}; expected one of {', '.join(PROMPT_STYLES)}")
