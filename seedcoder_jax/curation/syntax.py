"""Stage 2, syntax filter: files whose Tree-sitter parse tree has errors are rejected.

Grammars come from the per-language wheels (tree-sitter-python, tree-sitter-c, ...), which work
offline (tree-sitter-language-pack downloads its grammars on first use). A language without an
installed grammar passes unchecked; its records carry `syntax = "no_grammar"` and the pipeline
counts them per language in stats.json's stages, so an unchecked share is visible.
"""

from __future__ import annotations

import dataclasses
import importlib
import re

from seedcoder_jax.curation import records

STAGE = "syntax"
# language -> (grammar module, function returning the language pointer)
GRAMMARS = {
    "python": ("tree_sitter_python", "language"),
    "c": ("tree_sitter_c", "language"),
    "cpp": ("tree_sitter_cpp", "language"),
    "java": ("tree_sitter_java", "language"),
    "javascript": ("tree_sitter_javascript", "language"),
    "typescript": ("tree_sitter_typescript", "language_typescript"),
    "go": ("tree_sitter_go", "language"),
    "rust": ("tree_sitter_rust", "language"),
    "shell": ("tree_sitter_bash", "language"),
}
_PARSERS: dict[str, object] = {}  # per process: parsers are not picklable, so built lazily
# The C++ linkage guard of C headers meant for C++ too:
#   #ifdef __cplusplus / extern "C" { / #endif   ...   #ifdef __cplusplus / } / #endif
# Tree-sitter parses a conditional's body as code, so a brace opened in one conditional and
# closed in another is an error in the C and C++ grammars alike ("missing #endif"). These blocks
# are blanked before parsing C and C++ (their newlines kept: error positions stay right).
_LINKAGE_GUARD = re.compile(
    r'^[ \t]*#[ \t]*if(?:def[ \t]+__cplusplus|[ \t]+defined[ \t]*\(?[ \t]*__cplusplus[ \t]*\)?)'
    r'[ \t]*\n[ \t]*(?:extern[ \t]+"C"[ \t]*\{|\})[^\n]*\n[ \t]*#[ \t]*endif[^\n]*', re.MULTILINE)


@dataclasses.dataclass(frozen=True)
class SyntaxConfig:
  max_error_lines: int = 3  # how many error positions the rejection's detail lists


def parser_for(language: str):
  """A cached tree_sitter.Parser for `language`, or None when no grammar wheel is installed."""
  if language in _PARSERS:
    return _PARSERS[language]
  parser = None
  if language in GRAMMARS:
    module, fn = GRAMMARS[language]
    try:
      import tree_sitter
      grammar = getattr(importlib.import_module(module), fn)()
      parser = tree_sitter.Parser(tree_sitter.Language(grammar))
    except ImportError:
      parser = None
  _PARSERS[language] = parser
  return parser


def parse(language: str, text: str):
  """The Tree-sitter tree of `text`, or None when `language` has no installed grammar."""
  parser = parser_for(language)
  if parser is None:
    return None
  if language in ("c", "cpp"):
    text = _LINKAGE_GUARD.sub(lambda m: "\n" * m.group(0).count("\n"), text)
  return parser.parse(text.encode("utf-8"))


def available_grammars() -> list[str]:
  return [lang for lang in GRAMMARS if parser_for(lang) is not None]


def _error_positions(root, limit: int) -> list[str]:
  """"line:col" (1-based) of the first ERROR / missing nodes, depth first."""
  out, stack = [], [root]
  while stack and len(out) < limit:
    node = stack.pop()
    if node.is_error or node.is_missing:
      out.append(f"{node.start_point[0] + 1}:{node.start_point[1] + 1}"
                 + (" missing " + node.type if node.is_missing else ""))
      continue
    if node.has_error:
      stack.extend(reversed(node.children))
  return out


def check_syntax(record: dict, cfg: SyntaxConfig = SyntaxConfig()) -> dict:
  """The record with `syntax` set ("ok" | "no_grammar"), or a "syntax_error" rejection. Pure."""
  tree = parse(record["language"], record["text"])
  if tree is None:
    return {**record, "syntax": "no_grammar"}
  if tree.root_node.has_error:
    where = _error_positions(tree.root_node, cfg.max_error_lines)
    return records.reject(record, STAGE, "syntax_error", "errors at " + ", ".join(where))
  return {**record, "syntax": "ok"}


def syntax_transform(cfg: SyntaxConfig = SyntaxConfig()):
  """Beam PTransform: records -> kept (main) and rejections (tag REJECTED)."""
  import apache_beam as beam

  def route(record):
    out = check_syntax(record, cfg)
    return out if "text" in out else records.tagged_rejection(out)

  return beam.Map(route).with_outputs(records.REJECTED, main="kept")
