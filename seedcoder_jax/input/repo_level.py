"""Repository-level documents: a repository's files in dependency order, joined with separators.

Layout (StarCoder2's, with our special tokens):

  <s> <repo_name> name <file_sep> path \\n content <file_sep> path \\n content ... </s>

Python files come in topological order of their imports (a module before the modules that import
it, read from `import x.y` / `from .x import y` statements by a regular expression: no AST, so
files with syntax errors still order); files of other languages have no edges. Ties, and cycles,
are broken by a random rank seeded per repository, which is also the whole order of non-Python
repositories (the paper: dependency order for Python, random order otherwise).
"""

from __future__ import annotations

import heapq
import re

import numpy as np

_IMPORT_RE = re.compile(
    r"^[ \t]*(?:from[ \t]+(?P<src>\.*[\w.]*)[ \t]+import[ \t]+(?P<names>\([^)]*\)|[\w., \t]+|\*)"
    r"|import[ \t]+(?P<mods>[\w. \t,]+))", re.MULTILINE)


def module_name(path: str) -> str:
  """Dotted module of a Python file path: "pkg/sub/mod.py" -> "pkg.sub.mod", "pkg/__init__.py" -> "pkg"."""
  parts = path[:-3].split("/") if path.endswith(".py") else path.split("/")
  if parts and parts[-1] == "__init__":
    parts = parts[:-1]
  return ".".join(parts)


def imported_modules(text: str, module: str, is_package: bool) -> set[str]:
  """Module names that `text` (the source of `module`) may import, relative imports resolved."""
  package = module if is_package else module.rpartition(".")[0]
  out = set()
  for m in _IMPORT_RE.finditer(text):
    if m.group("mods"):
      for name in m.group("mods").split(","):
        name = name.split()[0] if name.split() else ""
        if name:
          out.add(name)
      continue
    src = m.group("src")
    level = len(src) - len(src.lstrip("."))
    base = src[level:]
    if level:
      anchor = package.split(".") if package else []
      anchor = anchor[:len(anchor) - (level - 1)] if level > 1 else anchor
      base = ".".join(anchor + ([base] if base else []))
    if base:
      out.add(base)
    names = m.group("names").strip("()")
    for name in names.split(","):
      name = name.split()[0] if name.split() else ""  # "x as y" -> "x"
      if name and name != "*":
        out.add(f"{base}.{name}" if base else name)
  # `import a.b.c` also runs a and a.b (their __init__ modules).
  for name in list(out):
    parts = name.split(".")
    out.update(".".join(parts[:k]) for k in range(1, len(parts)))
  return out


def dependency_order(paths: list[str], texts: list[str], languages: list[str],
                     rng: np.random.Generator) -> list[int]:
  """Indices of the files in dependency order (imported modules first), seeded random ties."""
  n = len(paths)
  rank = rng.permutation(n)
  # Paths start at the repository root, possibly above the import root ("repo/src/pkg/mod.py" is
  # imported as "pkg.mod"): every dotted suffix names the module, the shallowest file winning.
  own_name, modules = {}, {}
  python = [i for i in range(n) if languages[i] == "python" and paths[i].endswith(".py")]
  for i in sorted(python, key=lambda i: (paths[i].count("/"), paths[i])):
    own_name[i] = module_name(paths[i])
    parts = own_name[i].split(".")
    for k in range(len(parts)):
      modules.setdefault(".".join(parts[k:]), i)
  deps = [set() for _ in range(n)]  # deps[i]: files that must come before file i
  for i, name in own_name.items():
    for dep in imported_modules(texts[i], name, paths[i].endswith("__init__.py")):
      j = modules.get(dep)
      if j is not None and j != i:
        deps[i].add(j)
  users = [[] for _ in range(n)]
  for i in range(n):
    for j in deps[i]:
      users[j].append(i)
  remaining = [len(d) for d in deps]
  ready = [(rank[i], i) for i in range(n) if remaining[i] == 0]
  heapq.heapify(ready)
  done = np.zeros(n, bool)
  order = []
  while len(order) < n:
    if not ready:
      # A cycle: release its member of lowest rank, as if its unmet imports came later.
      i = min((i for i in range(n) if not done[i]), key=lambda i: rank[i])
      remaining[i] = 0
      heapq.heappush(ready, (rank[i], i))
    _, i = heapq.heappop(ready)
    if done[i]:
      continue
    done[i] = True
    order.append(i)
    for u in users[i]:
      remaining[u] -= 1
      if remaining[u] == 0 and not done[u]:
        heapq.heappush(ready, (rank[u], u))
  return order
