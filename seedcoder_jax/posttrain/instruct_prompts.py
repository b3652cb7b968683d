"""The instruction pipeline's words: meta-styles and their blends, prompt templates, answer parsing.

Styles (data/instruct_styles.json): a dozen short descriptions of kinds of requests. Every pair is
blended into one new style ("A, framed as B"), so 12 meta-styles give 66 blends; each seed draws
one blend from a hash of (run seed, seed id), so a rerun draws the same style for the same seed
whatever order seeds finish in. (The paper has an LLM blend styles; a fixed template keeps the
draw reproducible and costs no calls.)

Templates (data/prompts/instruct_*.txt) are filled with str.replace, never str.format: code is
full of braces. The generator must answer in three sections (### Instruction / ### Response /
### Tests); `parse_generation` takes them apart and names what is missing, which becomes the
seed's rejection reason.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import itertools
import json
import pathlib
import re
import warnings
from typing import Optional

from seedcoder_jax.curation import oracle as oracle_lib
from seedcoder_jax.posttrain.problems import python_code  # pylint: disable=unused-import

DATA_DIR = pathlib.Path(__file__).resolve().parents[2] / "data"
DEFAULT_STYLES = DATA_DIR / "instruct_styles.json"
# Prompt kind -> (default file, fields the template must contain).
TEMPLATES = {
    "generate": ("instruct_generate.txt", ("{style}", "{kind}", "{language}", "{seed}")),
    "revise": ("instruct_revise.txt", ("{instruction}", "{tests}", "{error}", "{code}")),
    "judge": ("instruct_judge.txt", ("{instruction}", "{response}")),
    "difficulty": ("instruct_difficulty.txt", ("{instruction}",)),
}


class PromptError(ValueError):
  """A missing or malformed styles file or prompt template (the message names the file)."""


# ----------------------------------------------------------------------------- styles


def load_styles(path: Optional[str | pathlib.Path] = None) -> list[dict]:
  """The meta-styles ({"name", "description"}) of a styles file, checked."""
  path = pathlib.Path(path or DEFAULT_STYLES)
  if not path.is_file():
    raise PromptError(f"styles file not found: {path}")
  try:
    styles = json.loads(path.read_text(encoding="utf-8"))["styles"]
  except (json.JSONDecodeError, KeyError, TypeError) as e:
    raise PromptError(f"{path}: expected {{\"styles\": [{{name, description}}, ...]}} ({e})") from e
  names = set()
  for i, s in enumerate(styles):
    if not isinstance(s, dict) or set(s) != {"name", "description"} or not all(
        isinstance(v, str) and v.strip() for v in s.values()):
      raise PromptError(f"{path}: style {i} must have exactly non-empty 'name' and 'description'")
    if s["name"] in names:
      raise PromptError(f"{path}: duplicate style name {s['name']!r}")
    names.add(s["name"])
  if len(styles) < 2:
    raise PromptError(f"{path}: blending needs at least 2 styles, got {len(styles)}")
  return styles


def blend_styles(styles: list[dict]) -> list[dict]:
  """Every pair of meta-styles as one new style {"name": "a+b", "description"}, in a fixed order."""
  return [{"name": f"{a['name']}+{b['name']}",
           "description": f"{a['description']}, framed as {b['description']}"}
          for a, b in itertools.combinations(styles, 2)]


def draw_style(blends: list[dict], run_seed: int, seed_id: str) -> dict:
  """The blended style for one seed: a hash of (run seed, seed id), independent of seed order."""
  h = hashlib.sha256(f"style:{run_seed}:{seed_id}".encode()).digest()
  return blends[int.from_bytes(h[:8], "big") % len(blends)]


# ----------------------------------------------------------------------------- templates


def template_path(kind: str, override: str = "") -> pathlib.Path:
  if kind not in TEMPLATES:
    raise PromptError(f"unknown prompt kind {kind!r}; known: {sorted(TEMPLATES)}")
  return pathlib.Path(override) if override else DATA_DIR / "prompts" / TEMPLATES[kind][0]


def load_template(kind: str, override: str = "") -> str:
  """The template text of one prompt kind; it must contain each of its fields."""
  path = template_path(kind, override)
  if not path.is_file():
    raise PromptError(f"{kind} prompt template not found: {path}")
  text = path.read_text(encoding="utf-8")
  missing = [f for f in TEMPLATES[kind][1] if f not in text]
  if missing:
    raise PromptError(f"{kind} prompt template {path} lacks the field(s) {missing}")
  return text


def fill(template: str, **fields: str) -> list[dict]:
  """One user turn: the template with each {field} replaced (str.replace: code has braces)."""
  text = template
  for name, value in fields.items():
    text = text.replace("{" + name + "}", value)
  return [{"role": "user", "content": text}]


# ----------------------------------------------------------------------------- parsing

# A heading line: "### Tests", "**Response:**", "Instruction:" or "## Instruction: Write ...".
# A bare word without '#', '**' or ':' is no heading ("Response time matters" is text).
_HEADING = re.compile(r"^[ \t]*(#{1,4}[ \t]*)?(\*\*)?[ \t]*(instruction|response|tests?)[ \t]*"
                      r"(\*\*)?[ \t]*(:)?[ \t]*(\*\*)?[ \t]*(.*)$", re.IGNORECASE | re.MULTILINE)


@dataclasses.dataclass(frozen=True)
class Generation:
  """The generator's answer taken apart: `response` is the assistant turn, `code` its solution."""
  instruction: str
  response: str
  code: str
  tests: str


def sections(text: str) -> dict[str, str]:
  """heading (instruction | response | tests) -> its text; the first of each heading wins.

  Lines inside fenced code blocks are never headings (a "# Tests" comment stays code)."""
  fences = [m.start() for m in re.finditer(r"^[ \t]*```", text, re.MULTILINE)]
  marks = []
  for m in _HEADING.finditer(text):
    hashes, bold, word, _, colon, _, rest = m.groups()
    in_code = sum(f < m.start() for f in fences) % 2 == 1
    if not in_code and (hashes or bold or colon) and (not rest or colon):
      marks.append((m, "tests" if word.lower().startswith("test") else word.lower(), rest))
  out: dict[str, str] = {}
  for (m, name, rest), nxt in zip(marks, marks[1:] + [None]):
    body = text[m.end():nxt[0].start() if nxt else len(text)]
    out.setdefault(name, (rest + body).strip())
  return out


def _parses(code: str) -> Optional[ast.Module]:
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", SyntaxWarning)
      return ast.parse(code)
  except (SyntaxError, ValueError):
    return None


def parse_generation(text: Optional[str]) -> tuple[Optional[Generation], Optional[str]]:
  """(generation, None), or (None, reason): "unparsable" (a section or the solution's code block
  is missing) or "no_tests" (no tests section whose code holds an assert statement)."""
  parts = sections(text or "")
  instruction, response = parts.get("instruction", ""), parts.get("response", "")
  code = python_code(response) if response else None
  if not instruction or code is None:
    return None, "unparsable"
  tests_text = parts.get("tests", "")
  tests = python_code(tests_text) if tests_text else None
  if tests is None and tests_text:
    tests = tests_text.strip() + "\n"  # unfenced asserts are still tests when they parse
  tree = _parses(tests) if tests else None
  if tree is None or not any(isinstance(n, ast.Assert) for n in ast.walk(tree)):
    return None, "no_tests"
  return Generation(instruction=instruction, response=response, code=code, tests=tests), None


def parse_revision(text: Optional[str]) -> tuple[Optional[str], Optional[str]]:
  """(response text, code) of a revision answer (a ### Response section when there is one)."""
  if not text:
    return None, None
  response = sections(text).get("response") or text.strip()
  code = python_code(response)
  return (response, code) if code is not None else (None, None)


def parse_score(text: Optional[str]) -> Optional[int]:
  """The last `[[X]]` rating (0..10) of an answer, rounded to an int; None when there is none."""
  score, status = oracle_lib.parse_rating(text, "reject")
  return int(round(score)) if status == "ok" else None
