"""stats.json: every input accounted for, per stage and reason.

The passes count into flat dicts of "<key>": n (Beam CombinePerKey, written per pass):

  input/<source>                    an input of source files | commits | web (a record or rejection)
  rejected/<stage>/<reason>         a rejection
  kept/<kind>                       a record leaving the pass
  stage/<stage>/<name...>           anything else a stage reports (e.g. stage/syntax/no_grammar/shell)

`build_stats` turns the counts of all passes into the DESIGN.md contract

  {"input": N, "kept": K, "rejected": {"<stage>/<reason>": n, ...}, "stages": {...}, ...}

and `check_accounting` refuses any result where N != K + sum(rejected), at the end of each pass
(the records a pass reads are the records the previous pass kept) and overall.
"""

from __future__ import annotations

from typing import Iterable


class AccountingError(RuntimeError):
  """Inputs and outputs of the curation do not add up; the message has the numbers."""


def merge_counts(parts: Iterable[dict[str, int]]) -> dict[str, int]:
  out: dict[str, int] = {}
  for part in parts:
    for k, n in part.items():
      out[k] = out.get(k, 0) + int(n)
  return dict(sorted(out.items()))


def _prefixed(counts: dict[str, int], prefix: str) -> dict[str, int]:
  return {k[len(prefix):]: n for k, n in counts.items() if k.startswith(prefix)}


def _nested(flat: dict[str, int]) -> dict:
  out: dict = {}
  for key, n in sorted(flat.items()):
    node = out
    *parents, leaf = key.split("/")
    for p in parents:
      node = node.setdefault(p, {})
      if not isinstance(node, dict):
        raise AccountingError(f"stage counter {key!r} nests under a counter")
    node[leaf] = n
  return out


def check_pass(name: str, counts: dict[str, int], num_in: int) -> dict:
  """The pass's {in, kept, rejected}; raises AccountingError when in != kept + rejected."""
  kept = sum(_prefixed(counts, "kept/").values())
  rejected = sum(_prefixed(counts, "rejected/").values())
  if num_in != kept + rejected:
    raise AccountingError(f"pass {name!r}: {num_in} records in, but {kept} kept + {rejected} "
                          f"rejected = {kept + rejected}; counts: {counts}")
  return {"in": num_in, "kept": kept, "rejected": rejected}


def build_stats(passes: dict[str, dict[str, int]], *, extra: dict | None = None) -> dict:
  """stats.json from the counts of each pass (in order: the first one counts the inputs).

  The kept count of the overall result is the last pass's; rejections of all passes add up.
  """
  names = list(passes)
  inputs = _prefixed(passes[names[0]], "input/")
  n_in = sum(inputs.values())
  per_pass = {}
  for name in names:
    per_pass[name] = check_pass(name, passes[name], n_in)
    n_in = per_pass[name]["kept"]
  everything = merge_counts(passes.values())
  rejected = _prefixed(everything, "rejected/")
  stats = {
      "input": sum(inputs.values()),
      "kept": per_pass[names[-1]]["kept"],
      "rejected": rejected,
      "input_by_source": inputs,
      "kept_by_kind": _prefixed(passes[names[-1]], "kept/"),
      "passes": per_pass,
      "stages": _nested(_prefixed(everything, "stage/")),
      **(extra or {}),
  }
  check_accounting(stats)
  return stats


def check_accounting(stats: dict) -> None:
  """N = K + sum(rejected), or AccountingError naming the numbers."""
  total = sum(stats["rejected"].values())
  if stats["input"] != stats["kept"] + total:
    raise AccountingError(f"stats: input {stats['input']} != kept {stats['kept']} + rejected "
                          f"{total}; rejected = {stats['rejected']}")
