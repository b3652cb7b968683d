"""Procedural function-writing problems: a problem set a 135M model already solves sometimes.

CodeI/O (problems.py) is too hard for SmolLM2-135M-Instruct: 0/32 greedy passes. The RL demo
(configs/rl.py:demo) needs a verifiable set on which its starting greedy pass rate is between
roughly 10% and 60%, so this module makes short, single-answer Python tasks from templates: list
filters / counts / sums under a predicate, element-wise maps, list aggregates, string edits and
counts, integer digit arithmetic, two-argument arithmetic. Each template with its parameters
("the numbers greater than 7", "every 'e' replaced by 'x'") is one problem with its own reference
`main_solution`; its tests are inputs drawn from Random(f"{seed}:{id}:{i}") with the expected
values the reference returns (JSON round trip), plus one more input shown in the prompt as an
example (never one of the tests). Everything is made in-process from this file: no download, no
package beyond the standard library (reasoning-gym 0.1.25 is installed --no-deps, and its package
import needs sympy, so its generators are not used).

The problems are then checked like problem_set.make_problems checks CodeI/O: duplicates (same
reference) dropped, decontaminated against every evaluated benchmark (curation/decontam.py, on
prompt + reference), a problem whose tests all expect one value dropped (a constant passes it),
and the reference run through the sealed test path (problems.check) must pass its own tests.
Every candidate is kept or rejected under one of REASONS, `input == kept + sum(rejected)`. The
split is problems.split_of on the id (a hash), the same as CodeI/O's.

Held-out problems are new parameterisations of the templates the train split also has (a
threshold, a character, a multiplier): held-out gains measure generalisation across problems of
known kinds, not to new kinds of task.

Measured starting greedy pass rate of SmolLM2-135M-Instruct (`gguf:smollm2`, Q4_1 dequantised;
chat prompt [{"role": "user", "content": problem.prompt}] with system prompt "You are a helpful
coding assistant." through chat_template.ChatRenderer; judged by dpo_pairs.judge, i.e. the first
```python block against the problem's tests in the sealed sandbox), on the set
`data/make_problems.py --source=synthetic --output=DIR` writes (seed 0, 5 tests, heldout_fraction
0.25: 326 candidates -> 310 kept, 223 train / 87 held-out; rejected: duplicate 9,
constant_output 7), measured 2026-12-03 on the shared 2-core CPU:

  held-out, all 87 problems, greedy, max_new_tokens 192: 38 / 87 passed (43.7%); every reply had
  a ```python block, none hit the token limit (65 tokens on average), generation 434 s (batch 16).

The same model on CodeI/O: 0/32 (and 0/32 on its 32 smallest references, asked for code only).
On this set its failures are slips, not format: "<= 3" for "less than 3", a sum where a count
is asked, `n / 11.0` for "rounded down", `n % 3 == 0` for "the remainder". Table:
docs/benchmarks.md.
"""

from __future__ import annotations

import collections
import hashlib
import json
import random
from typing import Callable, Iterator, Optional

from seedcoder_jax.posttrain import problems as P

SOURCE = "seedcoder-synthetic-v1"
REASONS = ("duplicate", "benchmark_overlap", "reference_error", "constant_output",
           "reference_fails_tests")
# The request every prompt ends with: only a code block (SmolLM2 otherwise explains after the
# code and runs out of tokens).
REPLY_FORMAT = ("Reply with only the complete function in one ```python code block, without "
                "explanation.")
# The measurement above: (split, problems, max_new_tokens, passed, date).
MEASURED = ("heldout", 87, 192, 38, "2026-12-03")


class Template:
  """One problem: prompt text, reference code and an input generator."""

  def __init__(self, family: str, args: str, arg_doc: str, task: str, body: str,
               gen: Callable[[random.Random], dict]):
    self.family, self.args, self.arg_doc, self.task, self.body, self.gen = (
        family, args, arg_doc, task, body, gen)

  @property
  def reference(self) -> str:
    return f"def main_solution({self.args}):\n    {self.body}\n"

  def prompt(self, example_kwargs: dict, example_out) -> str:
    call = ", ".join(f"{k}={v!r}" for k, v in example_kwargs.items())
    return (f"Write a Python function `main_solution({self.args})` that takes {self.arg_doc} and "
            f"returns {self.task}.\n\nExample: `main_solution({call})` returns "
            f"`{example_out!r}`.\n\n{REPLY_FORMAT}")


def _ints(rng, lo=-20, hi=20, n=(5, 10)):
  return [rng.randint(lo, hi) for _ in range(rng.randint(*n))]


def _nums(rng):
  return {"nums": _ints(rng)}


_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _text(rng, must: str = "", words=(2, 5)):
  """Lower-case words over a small alphabet that often contains `must`."""
  alphabet = "".join(rng.sample(_LETTERS, 5)) + must * 2
  return " ".join("".join(rng.choice(alphabet) for _ in range(rng.randint(2, 6)))
                  for _ in range(rng.randint(*words)))


def _list_templates() -> Iterator[Template]:
  nums_doc = "a list of integers `nums`"
  preds = ([("even", "x % 2 == 0"), ("odd", "x % 2 != 0"), ("positive", "x > 0"),
            ("negative", "x < 0")] +
           [(f"greater than {k}", f"x > {k}") for k in range(-5, 11)] +
           [(f"less than {k}", f"x < {k}") for k in range(-5, 11)] +
           [(f"divisible by {k}", f"x % {k} == 0") for k in range(2, 10)])
  for text, expr in preds:
    yield Template("count_if", "nums", nums_doc,
                   f"how many numbers in `nums` are {text}",
                   f"return sum(1 for x in nums if {expr})", _nums)
    yield Template("sum_if", "nums", nums_doc,
                   f"the sum of the numbers in `nums` that are {text} (0 if there are none)",
                   f"return sum(x for x in nums if {expr})", _nums)
    yield Template("filter", "nums", nums_doc,
                   f"a list of the numbers in `nums` that are {text}, in their original order",
                   f"return [x for x in nums if {expr}]", _nums)
  maps = ([(f"increased by {k}", f"x + {k}") for k in range(1, 11)] +
          [(f"decreased by {k}", f"x - {k}") for k in range(1, 11)] +
          [(f"multiplied by {k}", f"x * {k}") for k in range(2, 11)] +
          [(f"replaced by the remainder of its division by {k}", f"x % {k}")
           for k in range(2, 10)] +
          [("squared", "x * x"), ("negated", "-x"), ("replaced by its absolute value", "abs(x)")])
  for text, expr in maps:
    yield Template("map", "nums", nums_doc,
                   f"a new list in which every number of `nums` is {text}",
                   f"return [{expr} for x in nums]", _nums)
  aggregates = [
      ("the largest number in `nums`", "return max(nums)"),
      ("the smallest number in `nums`", "return min(nums)"),
      ("the difference between the largest and the smallest number in `nums`",
       "return max(nums) - min(nums)"),
      ("the number of elements in `nums`", "return len(nums)"),
      ("the sum of the squares of the numbers in `nums`", "return sum(x * x for x in nums)"),
      ("the product of all numbers in `nums`",
       "p = 1\n    for x in nums:\n        p *= x\n    return p"),
      ("`nums` sorted in increasing order", "return sorted(nums)"),
      ("`nums` sorted in decreasing order", "return sorted(nums, reverse=True)"),
      ("`nums` in reverse order", "return nums[::-1]"),
      ("the numbers of `nums` without duplicates, each kept at its first occurrence",
       "return list(dict.fromkeys(nums))"),
      ("the number of distinct values in `nums`", "return len(set(nums))"),
      ("the index of the largest number in `nums` (the first one if it occurs more than once)",
       "return nums.index(max(nums))"),
      ("the sum of the numbers at even indexes (0, 2, 4, ...) of `nums`", "return sum(nums[::2])"),
      ("the list of running totals of `nums` (element i is the sum of nums[0..i])",
       "out, t = [], 0\n    for x in nums:\n        t += x\n        out.append(t)\n    return out"),
      ("True if `nums` is sorted in non-decreasing order, else False",
       "return all(a <= b for a, b in zip(nums, nums[1:]))"),
  ]
  for text, body in aggregates:
    yield Template("aggregate", "nums", nums_doc, text, body, _nums)
  for k in range(1, 6):
    yield Template("slice", "nums", nums_doc, f"the sum of the first {k} numbers of `nums`",
                   f"return sum(nums[:{k}])", _nums)
    yield Template("slice", "nums", nums_doc, f"`nums` without its first {k} elements",
                   f"return nums[{k}:]", _nums)
    yield Template("slice", "nums", nums_doc, f"the last {k} elements of `nums`",
                   f"return nums[-{k}:]", _nums)


def _sorted_or_not(rng):
  nums = _ints(rng)
  return {"nums": sorted(nums) if rng.random() < 0.5 else nums}


def _string_templates() -> Iterator[Template]:
  s_doc = "a string `s`"
  for c in "aeiorstn":
    gen = lambda rng, c=c: {"s": _text(rng, c)}
    yield Template("count_char", "s", s_doc, f"how many times the character '{c}' occurs in `s`",
                   f"return s.count({c!r})", gen)
    yield Template("remove_char", "s", s_doc, f"`s` with every '{c}' removed",
                   f"return s.replace({c!r}, '')", gen)
    d = "x" if c != "x" else "z"
    yield Template("replace_char", "s", s_doc, f"`s` with every '{c}' replaced by '{d}'",
                   f"return s.replace({c!r}, {d!r})", gen)
    yield Template("find_char", "s", s_doc,
                   f"the index of the first '{c}' in `s`, or -1 if `s` has no '{c}'",
                   f"return s.find({c!r})", gen)
  text = lambda rng: {"s": _text(rng)}
  mixed = lambda rng: {"s": "".join(ch.upper() if rng.random() < 0.4 else ch
                                    for ch in _text(rng))}
  maybe_pal = lambda rng: {"s": (lambda w: w + w[::-1][rng.randint(0, 1):])(
      _text(rng, words=(1, 1))) if rng.random() < 0.5 else _text(rng, words=(1, 1))}
  fixed = [
      ("`s` reversed", "return s[::-1]", text),
      ("`s` in upper case", "return s.upper()", mixed),
      ("`s` in lower case", "return s.lower()", mixed),
      ("`s` with the case of every letter swapped", "return s.swapcase()", mixed),
      ("the number of vowels (a, e, i, o, u) in `s`",
       "return sum(1 for ch in s if ch in 'aeiou')", text),
      ("the number of words in `s` (words are separated by single spaces)",
       "return len(s.split())", text),
      ("the words of `s` in reverse order, joined by single spaces",
       "return ' '.join(s.split()[::-1])", text),
      ("`s` with the first letter of every word in upper case (words are separated by single "
       "spaces)", "return ' '.join(w[:1].upper() + w[1:] for w in s.split(' '))", text),
      ("the length of the longest word in `s` (words are separated by single spaces)",
       "return max(len(w) for w in s.split())", text),
      ("the list of the words of `s` (separated by single spaces) sorted alphabetically",
       "return sorted(s.split())", text),
      ("True if `s` reads the same forwards and backwards, else False",
       "return s == s[::-1]", maybe_pal),
      ("`s` without its spaces", "return s.replace(' ', '')", text),
      ("the number of characters of `s` that are not spaces",
       "return len(s) - s.count(' ')", text),
      ("`s` with every character doubled (\"ab\" becomes \"aabb\")",
       "return ''.join(ch * 2 for ch in s)", text),
      ("the characters of `s` at even indexes (0, 2, 4, ...) as a string", "return s[::2]", text),
  ]
  for text_, body, gen in fixed:
    yield Template("string", "s", s_doc, text_, body, gen)
  for k in range(1, 5):
    yield Template("string_slice", "s", s_doc, f"the first {k} characters of `s`",
                   f"return s[:{k}]", text)
    yield Template("string_slice", "s", s_doc, f"the last {k} characters of `s`",
                   f"return s[-{k}:]", text)
  for k in range(2, 5):
    yield Template("string_repeat", "s", s_doc, f"`s` repeated {k} times", f"return s * {k}", text)


def _int_templates() -> Iterator[Template]:
  n_doc = "a non-negative integer `n`"
  big = lambda rng: {"n": rng.randint(0, 99999)}
  small = lambda rng: {"n": rng.randint(0, 12)}
  fixed = [
      ("the sum of the decimal digits of `n`", "return sum(int(d) for d in str(n))", big),
      ("the number of decimal digits of `n`", "return len(str(n))", big),
      ("the last decimal digit of `n`", "return n % 10", big),
      ("the first decimal digit of `n`", "return int(str(n)[0])", big),
      ("the number formed by the digits of `n` in reverse order (leading zeros dropped)",
       "return int(str(n)[::-1])", big),
      ("the number of even decimal digits of `n`",
       "return sum(1 for d in str(n) if int(d) % 2 == 0)", big),
      ("the sum of all integers from 1 to `n`", "return n * (n + 1) // 2", big),
      ("the factorial of `n`", "r = 1\n    for i in range(2, n + 1):\n        r *= i\n    return r",
       small),
      ("the number of 1 bits in the binary representation of `n`", "return bin(n).count('1')", big),
      ("the binary representation of `n` as a string of 0s and 1s, without a prefix",
       "return bin(n)[2:]", big),
      ("`n` squared", "return n * n", big),
  ]
  for text, body, gen in fixed:
    yield Template("integer", "n", n_doc, text, body, gen)
  for k in range(2, 13):
    yield Template("int_mod", "n", n_doc, f"the remainder of `n` divided by {k}",
                   f"return n % {k}", big)
    yield Template("int_div", "n", n_doc, f"`n` divided by {k}, rounded down",
                   f"return n // {k}", big)
    yield Template("int_divisible", "n", n_doc, f"True if `n` is divisible by {k}, else False",
                   f"return n % {k} == 0",
                   lambda rng, k=k: {"n": rng.randint(0, 999) * (k if rng.random() < 0.5 else 1)})
  ab_doc = "two integers `a` and `b`"
  ab = lambda rng: {"a": rng.randint(-50, 50), "b": rng.randint(-50, 50)}
  pos = lambda rng: {"a": rng.randint(1, 200), "b": rng.randint(1, 200)}
  pairs = [
      ("the sum of `a` and `b`", "return a + b", ab),
      ("`a` minus `b`", "return a - b", ab),
      ("the product of `a` and `b`", "return a * b", ab),
      ("the larger of `a` and `b`", "return max(a, b)", ab),
      ("the smaller of `a` and `b`", "return min(a, b)", ab),
      ("the absolute difference between `a` and `b`", "return abs(a - b)", ab),
      ("the greatest common divisor of `a` and `b` (both positive)",
       "while b:\n        a, b = b, a % b\n    return a", pos),
      ("the remainder of `a` divided by `b` (both positive)", "return a % b", pos),
      ("True if `a` and `b` are both even, else False", "return a % 2 == 0 and b % 2 == 0", ab),
      ("the sum of all integers from `a` to `b` inclusive (0 if `a` > `b`)",
       "return sum(range(a, b + 1))", ab),
  ]
  for text, body, gen in pairs:
    yield Template("pair", "a, b", ab_doc, text, body, gen)
  for k in range(2, 6):
    for m in range(1, 4):
      yield Template("linear", "a, b", ab_doc, f"{k} times `a` plus {m} times `b`",
                     f"return {k} * a + {m} * b", ab)


def templates() -> list[Template]:
  """Every candidate problem, in a fixed order."""
  return [*_list_templates(), *_string_templates(), *_int_templates()]


def _plain(value):
  return json.loads(json.dumps(value, allow_nan=False))


def problem_id(t: Template) -> str:
  return f"synthetic/{t.family}/" + hashlib.sha256(t.reference.encode()).hexdigest()[:16]


def _run_reference(t: Template, pid: str, seed: int, n_tests: int):
  """(example kwargs, example output, tests): inputs from Random(f"{seed}:{pid}:{i}")."""
  ns: dict = {}
  exec(compile(t.reference, pid, "exec"), ns)  # this module's own code, not untrusted data
  out = []
  for i in range(n_tests + 1):
    kwargs = _plain(t.gen(random.Random(f"{seed}:{pid}:{i}")))
    out.append((kwargs, _plain(ns["main_solution"](**kwargs))))
  return out[-1][0], out[-1][1], out[:-1]


def make_problems(*, seed: int = 0, n_tests: int = 5, heldout_fraction: float = 0.2,
                  workers: int = 2, limit: Optional[int] = None, timeout_s: float = 10.0,
                  memory_mb: int = 1024, decontam_cfg=None) -> tuple[list[P.Problem], dict]:
  """(kept problems, stats) from templates() (the first `limit` of them)."""
  from seedcoder_jax.curation import decontam
  cands = templates()
  if limit is not None:
    cands = cands[:limit]
  cfg = decontam_cfg or decontam.DecontamConfig()
  index = decontam.benchmark_index(cfg)
  rejected: collections.Counter = collections.Counter()
  overlaps, seen, candidates = {}, set(), []
  for t in cands:
    pid = problem_id(t)
    if pid in seen:
      rejected["duplicate"] += 1
      continue
    seen.add(pid)
    try:
      ex_in, ex_out, tests = _run_reference(t, pid, seed, n_tests)
    except Exception:  # pylint: disable=broad-except
      rejected["reference_error"] += 1
      continue
    prompt = t.prompt(ex_in, ex_out)
    hits = decontam.find_matches(prompt + "\n" + t.reference, index, cfg.n)
    if hits:
      overlaps[pid] = sorted(hits)
      rejected["benchmark_overlap"] += 1
      continue
    if len({json.dumps(o, sort_keys=True) for _, o in tests}) < 2:
      rejected["constant_output"] += 1
      continue
    candidates.append(P.Problem(
        id=pid, prompt=prompt, tests=tuple((kw, o) for kw, o in tests), reference=t.reference,
        split=P.split_of(pid, heldout_fraction),
        provenance={"source": SOURCE, "family": t.family, "seed": seed}))
  verdicts = P.check([(p, p.reference) for p in candidates], workers=workers,
                     timeout_s=timeout_s, memory_mb=memory_mb)
  kept = []
  for problem, verdict in zip(candidates, verdicts):
    if verdict.passed:
      kept.append(problem)
    else:
      rejected["reference_fails_tests"] += 1
  stats = {"input": len(cands), "kept": len(kept),
           "rejected": {r: rejected[r] for r in REASONS if rejected[r]},
           "splits": {s: sum(p.split == s for p in kept) for s in P.SPLITS},
           "families": dict(collections.Counter(p.provenance["family"] for p in kept)),
           "seed": seed, "n_tests": n_tests, "heldout_fraction": heldout_fraction,
           "source": SOURCE, "benchmarks": list(cfg.benchmarks), "benchmark_overlaps": overlaps}
  assert stats["input"] == stats["kept"] + sum(stats["rejected"].values()), stats
  return kept, stats
