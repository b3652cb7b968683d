"""Ablations: a base recipe plus named arms, each a small diff, run alike and compared.

  python launch/ablate.py --config=configs/ablations.py:fim_order --workdir=DIR

An ablation (a ConfigDict from configs/ablations.py) names:
  stages   recipe stages (seedcoder_jax.recipe.STAGES) every arm runs, in order;
  shared   the leading stages all arms share: run once in DIR/shared/, linked into each arm;
  per_arm  the stages after those that depend on the arm but not the seed: run once per arm in
           DIR/<arm>/common/ (e.g. each arm's own curation and tokenizer), linked into its seeds;
  base     every stage's recipe options (configs/recipe.py's, say), the same for all arms;
  arms     {arm: nested options}: each arm's whole difference from `base`, merged into it;
  keys     the option keys (or key prefixes) the ablation varies: an arm that touches anything
           else (a seed, a step count, by accident) is refused with the difference printed;
  seeds    the repeats: each arm runs once per seed, the seed written into every `seed_keys` key;
  metrics  [{"name", "stage", "key", "better": "lower" | "higher"}]: a number in the stage's
           summary (its DONE.json), compared across arms;
  curves   [{"name", "stage", "y", "x"}]: a metrics.jsonl column of the stage's run/ over
           training tokens (x "tokens", the default: steps x batch x seq_len) or steps ("step");
  expect   [{"metric", "better", "worse", "claim"}]: the paper's direction, checked honestly.

Each (arm, seed) is a recipe workdir DIR/<arm>/seed<k>/: finished stages are skipped
(recipe.run's DONE.json), so a killed ablation resumes where it was. An arm that fails is
reported as failed (its traceback in FAILED.txt), never dropped, and the others still run.
Outputs: DIR/ablation.json (every arm's diff, summaries, curves, final metrics),
DIR/ablation.md (the table and a verdict line per expectation) and DIR/<curve>.png.

Every stage run records the code it ran on (`code_version()`: the commit, plus a hash of any
uncommitted change to seedcoder_jax/, configs/ or launch/) in its directory's CODE.txt; the
report names that code, and warns when the runs it compares used different code (say, one arm
run before a change to curation landed and one after): then the arms differ in more than the
named keys.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import pathlib
import subprocess
import traceback
from typing import Any, Optional

import numpy as np

DONE = "DONE.json"
FAILED = "FAILED.txt"
CODE = "CODE.txt"


class AblationError(ValueError):
  """A malformed ablation; the message names the key and what is wrong."""


# --- the plan -----------------------------------------------------------------------------------

def _get(tree: dict, dotted: str):
  node = tree
  for part in dotted.split("."):
    if not isinstance(node, dict) or part not in node:
      raise AblationError(f"option {dotted!r}: no such key ({part!r} missing)")
    node = node[part]
  return node


def merge(tree: dict, changes: dict, where: str = "") -> None:
  """Nested `changes` into the option tree in place; a key the tree lacks is an error."""
  for key, value in changes.items():
    if not isinstance(tree, dict) or key not in tree:
      raise AblationError(f"option {where}{key}: no such key in the base options")
    if isinstance(value, dict) and isinstance(tree[key], dict):
      merge(tree[key], value, f"{where}{key}.")
    else:
      tree[key] = copy.deepcopy(value)


def flatten(tree: dict, where: str = "") -> dict:
  """{dotted key: leaf} of a nested dict (an arm's diff, for reports)."""
  out = {}
  for key, value in tree.items():
    path = f"{where}.{key}" if where else str(key)
    out.update(flatten(value, path) if isinstance(value, dict) and value else {path: value})
  return out


def diff(a: Any, b: Any, where: str = "") -> dict[str, tuple]:
  """{dotted key: (a's value, b's value)} for every leaf where two option trees differ."""
  if isinstance(a, dict) and isinstance(b, dict):
    out = {}
    for key in sorted(set(a) | set(b), key=str):
      path = f"{where}.{key}" if where else str(key)
      if key not in a or key not in b:
        out[path] = (a.get(key, "<absent>"), b.get(key, "<absent>"))
      else:
        out.update(diff(a[key], b[key], path))
    return out
  norm = lambda x: json.loads(json.dumps(x, default=str))  # tuples == lists
  return {} if norm(a) == norm(b) else {where: (a, b)}


def _covered(key: str, prefixes) -> bool:
  return any(key == p or key.startswith(p + ".") for p in prefixes)


def arm_options(ablation: dict, arm: str, seed: int) -> dict:
  """The recipe options of one (arm, seed): base, the arm's diff, the seed in every seed key."""
  options = copy.deepcopy(ablation["base"])
  merge(options, ablation["arms"][arm])
  for key in ablation.get("seed_keys", []):
    _get(options, key)  # names a missing key
    merge(options, _nest(key, seed))
  return options


def _nest(dotted: str, value) -> dict:
  for part in reversed(dotted.split(".")):
    value = {part: value}
  return value


def check(ablation: dict) -> None:
  """Refuses a malformed ablation before any work, naming what is wrong."""
  for field in ("stages", "base", "arms", "keys"):
    if not ablation.get(field):
      raise AblationError(f"ablation.{field} is missing or empty")
  from seedcoder_jax import recipe
  unknown = [s for s in ablation["stages"] if s not in recipe.STAGES]
  if unknown:
    raise AblationError(f"ablation.stages: unknown recipe stages {unknown}")
  shared = list(ablation.get("shared", []))
  if shared != list(ablation["stages"][:len(shared)]):
    raise AblationError(f"ablation.shared={shared} must be the leading stages of {ablation['stages']}")
  per_arm = list(ablation.get("per_arm", []))
  if per_arm != list(ablation["stages"][len(shared):len(shared) + len(per_arm)]):
    raise AblationError(f"ablation.per_arm={per_arm} must be the stages right after the shared "
                        f"ones in {ablation['stages']}")
  if len(ablation["arms"]) < 2:
    raise AblationError("ablation.arms: an ablation compares at least two arms")
  seeds = ablation.get("seeds", [0])
  seed_keys = ablation.get("seed_keys", [])
  for key in seed_keys:
    if key.split(".")[0] in shared + per_arm:
      raise AblationError(f"ablation.seed_keys: {key!r} is in a shared or per-arm stage (those "
                          "run once for every seed)")
  base = ablation["base"]
  for arm in ablation["arms"]:
    for seed in seeds:
      options = arm_options(ablation, arm, seed)
      try:
        recipe.check_options(list(ablation["stages"]), options)
      except ValueError as e:
        raise AblationError(f"ablation.base or arm {arm!r}: {e}") from e
      changed = diff(base, options)
      stray = {k: v for k, v in changed.items()
               if not _covered(k, ablation["keys"]) and k not in seed_keys}
      if stray:
        lines = "\n".join(f"  {k}: base {a!r} -> {arm} {b!r}" for k, (a, b) in stray.items())
        raise AblationError(f"arm {arm!r} differs from the base outside ablation.keys="
                            f"{list(ablation['keys'])}:\n{lines}")
      in_shared = [k for k in changed if k.split(".")[0] in shared and k not in seed_keys]
      if in_shared:
        raise AblationError(f"arm {arm!r} changes {in_shared}, options of shared stages "
                            f"{shared}: make those stages per-arm")
  names = {m["name"] for m in ablation.get("metrics", [])}
  for m in ablation.get("metrics", []):
    if m["stage"] not in ablation["stages"] or m.get("better") not in ("lower", "higher"):
      raise AblationError(f"ablation.metrics {m['name']!r}: stage must be one of the stages and "
                          "better 'lower' or 'higher'")
  for e in ablation.get("expect", []):
    if e["metric"] not in names or {e["better"], e["worse"]} - set(ablation["arms"]):
      raise AblationError(f"ablation.expect {e}: metric or arms unknown")


def runs(ablation: dict) -> list[tuple[str, int]]:
  return [(arm, seed) for arm in ablation["arms"] for seed in ablation.get("seeds", [0])]


def run_dir(workdir: pathlib.Path, arm: str, seed: int) -> pathlib.Path:
  return workdir / arm / f"seed{seed}"


# --- running ------------------------------------------------------------------------------------

def code_version() -> str:
  """The commit this library runs from, with "+dirty:<hash of the uncommitted diff>" when its
  code (seedcoder_jax/, configs/, launch/) differs from it; "unknown" outside a git checkout."""
  root = pathlib.Path(__file__).resolve().parent.parent
  git = lambda *a: subprocess.run(["git", "-C", str(root), *a], capture_output=True, check=True,
                                  timeout=60).stdout
  try:
    head = git("rev-parse", "--short=12", "HEAD").decode().strip()
    diff = git("diff", "HEAD", "--", "seedcoder_jax", "configs", "launch")
  except (OSError, subprocess.SubprocessError):
    return "unknown"
  return head + (f"+dirty:{hashlib.sha256(diff).hexdigest()[:8]}" if diff else "")


def _run_stages(stages: list[str], options: dict, directory: pathlib.Path) -> None:
  """recipe.run, then CODE.txt in each stage it finished (the skipped ones keep theirs)."""
  from seedcoder_jax import recipe
  pending = [s for s in stages if not (directory / s / DONE).exists()]
  version = code_version() if pending else None
  try:
    recipe.run(stages, options, directory)
  finally:
    for s in pending:
      if (directory / s / DONE).exists():
        (directory / s / CODE).write_text(version + "\n")


def run_shared(ablation: dict, workdir: pathlib.Path) -> None:
  shared = list(ablation.get("shared", []))
  if shared:
    _run_stages(shared, ablation["base"], workdir / "shared")


def _link(directory: pathlib.Path, stages, target: pathlib.Path) -> None:
  for stage in stages:
    link = directory / stage
    if not link.exists():
      link.symlink_to(target / stage)


def run_arm(ablation: dict, workdir: pathlib.Path, arm: str, seed: int) -> Optional[str]:
  """Runs one (arm, seed); None when it finished, else the error (also in FAILED.txt)."""
  directory = run_dir(workdir, arm, seed)
  common = workdir / arm / "common"
  per_arm = list(ablation.get("per_arm", []))
  for d in (directory, common) if per_arm else (directory,):
    d.mkdir(parents=True, exist_ok=True)
    _link(d, ablation.get("shared", []), pathlib.Path("..", "..", "shared"))
  _link(directory, per_arm, pathlib.Path("..", "common"))
  options = arm_options(ablation, arm, seed)
  (directory / "options.json").write_text(json.dumps(options, indent=2, default=str) + "\n")
  (directory / FAILED).unlink(missing_ok=True)
  try:
    if per_arm:
      _run_stages(per_arm, options, common)
    _run_stages(list(ablation["stages"]), options, directory)
  except Exception as e:  # an arm that fails is reported, not dropped; the others still run
    (directory / FAILED).write_text(traceback.format_exc())
    print(f"[ablate] arm {arm} seed {seed} FAILED: {type(e).__name__}: {e}")
    return f"{type(e).__name__}: {e}"
  return None


def run(ablation: dict, workdir, *, only: Optional[tuple[str, int]] = None) -> dict:
  """Runs every (arm, seed) not yet done (or only one), then writes the report."""
  check(ablation)
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  if only is None:
    run_shared(ablation, workdir)
  else:  # one job of many: the shared stages must be done already (never raced by several jobs)
    missing = [s for s in ablation.get("shared", []) if _summary(workdir / "shared", s) is None]
    if missing:
      raise AblationError(f"shared stages {missing} are not done in {workdir / 'shared'}: run "
                          "launch/ablate.py --shared first")
    first = ablation.get("seeds", [0])[0]
    common = workdir / only[0] / "common"
    missing = [s for s in ablation.get("per_arm", []) if _summary(common, s) is None]
    if only[1] != first and missing:
      raise AblationError(f"per-arm stages {missing} of arm {only[0]!r} are not done in {common}: "
                          f"run its seed {first} first (it runs them)")
  for arm, seed in runs(ablation):
    if only is None or only == (arm, seed):
      run_arm(ablation, workdir, arm, seed)
  return collect(ablation, workdir)


# --- results ------------------------------------------------------------------------------------

def _summary(directory: pathlib.Path, stage: str) -> Optional[dict]:
  done = directory / stage / DONE
  return json.loads(done.read_text()) if done.exists() else None


def _curve(directory: pathlib.Path, stage: str, y: str, x: str = "tokens") -> list[tuple[float, float]]:
  """(tokens seen or step, y) from the stage's run/metrics.jsonl (tokens: step x batch x seq_len)."""
  path = directory / stage / "run" / "metrics.jsonl"
  config = directory / stage / "run" / "config.json"
  if not path.exists() or not config.exists():
    return []
  data = json.loads(config.read_text())["data"]
  per_step = data["batch_size"] * data["seq_len"] if x == "tokens" else 1
  points = {}
  for line in path.open():
    row = json.loads(line)
    if y in row and row[y] is not None:
      points[row["step"]] = float(row[y])  # a resumed run may log a step twice: keep the last
  return [(step * per_step, value) for step, value in sorted(points.items())]


def _stats(values: list[float]) -> dict:
  v = np.asarray(values, np.float64)
  return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else None,
          "n": int(len(v)), "values": [float(x) for x in v]}


def verdict(expect: dict, metric: dict, final: dict) -> dict:
  """Did the paper's direction reproduce? The margin and, with repeats, its noise."""
  better, worse = final[expect["better"]].get(metric["name"]), final[expect["worse"]].get(metric["name"])
  out = {**expect}
  if better is None or worse is None:
    out.update(result="not measured", line=f"{expect['claim']}: not measured (an arm failed or is "
                                            "unfinished)")
    return out
  sign = -1.0 if metric["better"] == "lower" else 1.0
  margin = sign * (better["mean"] - worse["mean"])  # > 0: the expected direction
  # The difference's noise needs the spread of both arms: an arm with one finished seed has none.
  if better["std"] is not None and worse["std"] is not None:
    noise = math.sqrt(better["std"] ** 2 / better["n"] + worse["std"] ** 2 / worse["n"])
    if margin > 2 * noise:
      result = "reproduced"
    elif margin < -2 * noise:
      result = "reversed"
    else:
      result = "within noise"
    noise_text = f"noise (standard error of the difference) {noise:.4f} over {better['n']}+{worse['n']} seeds"
  else:
    # An exact tie (e.g. arms that never differed in a batch) is neither direction.
    noise = None
    result = ("same direction" if margin > 0 else "opposite direction" if margin < 0
              else "no difference")
    noise_text = (f"{better['n']}+{worse['n']} seeds: an arm with one seed has no spread, so "
                  "run-to-run noise not measured and no claim either way")
  out.update(result=result, margin=margin, noise=noise,
             line=f"{expect['claim']}: {result} — {metric['name']} {expect['better']} "
                  f"{better['mean']:.4f} vs {expect['worse']} {worse['mean']:.4f} (margin "
                  f"{margin:+.4f}, positive = the expected direction; {noise_text})")
  return out


def collect(ablation: dict, workdir) -> dict:
  """DIR/ablation.json, ablation.md and the curve plots from whatever has finished."""
  workdir = pathlib.Path(workdir)
  arms = {}
  for arm in ablation["arms"]:
    seeds = {}
    for seed in ablation.get("seeds", [0]):
      directory = run_dir(workdir, arm, seed)
      failed = directory / FAILED
      stages = {s: _summary(directory, s) for s in ablation["stages"]}
      status = ("failed" if failed.exists() else
                "done" if all(v is not None for v in stages.values()) else "unfinished")
      seeds[seed] = {
          "status": status,
          "error": failed.read_text().strip().splitlines()[-1] if failed.exists() else None,
          "metrics": {m["name"]: _number(stages.get(m["stage"]), m["key"])
                      for m in ablation.get("metrics", [])},
          "curves": {c["name"]: _curve(directory, c["stage"], c["y"], c.get("x", "tokens"))
                     for c in ablation.get("curves", [])},
          "code": {s: (directory / s / CODE).read_text().strip()
                   for s in ablation["stages"] if (directory / s / CODE).exists()}}
    arms[arm] = {"diff": flatten(ablation["arms"][arm]), "seeds": seeds}
  final = {arm: {m["name"]: _final(a, m["name"]) for m in ablation.get("metrics", [])}
           for arm, a in arms.items()}
  metrics = {m["name"]: m for m in ablation.get("metrics", [])}
  verdicts = [verdict(e, metrics[e["metric"]], final) for e in ablation.get("expect", [])]
  code = sorted({v for a in arms.values() for s in a["seeds"].values() for v in s["code"].values()})
  result = {"name": ablation.get("name", ""), "description": ablation.get("description", ""),
            "keys": list(ablation["keys"]), "seeds": list(ablation.get("seeds", [0])),
            "arms": arms, "final": final, "verdicts": verdicts, "code": code}
  (workdir / "ablation.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
  plots = _plot(ablation, arms, workdir)
  (workdir / "ablation.md").write_text(_markdown(ablation, result, plots))
  return result


def _number(summary: Optional[dict], key: str):
  if summary is None:
    return None
  value = summary
  for part in key.split("."):
    if not isinstance(value, dict) or part not in value:
      return None
    value = value[part]
  return float(value) if isinstance(value, (int, float)) else None


def _final(arm: dict, name: str) -> Optional[dict]:
  values = [s["metrics"][name] for s in arm["seeds"].values()
            if s["status"] == "done" and s["metrics"][name] is not None]
  return _stats(values) if values else None


def _plot(ablation: dict, arms: dict, workdir: pathlib.Path) -> list[str]:
  curves = ablation.get("curves", [])
  if not curves:
    return []
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  files = []
  for c in curves:
    fig, ax = plt.subplots(figsize=(6, 4))
    for arm, a in arms.items():
      for seed, s in a["seeds"].items():
        points = s["curves"][c["name"]]
        if points:
          x, y = zip(*points)
          ax.plot(x, y, label=f"{arm} (seed {seed})" if len(a["seeds"]) > 1 else arm)
    ax.set_xlabel("training tokens" if c.get("x", "tokens") == "tokens" else "step")
    ax.set_ylabel(f"{c['stage']}: {c['y']}")
    ax.set_title(f"{ablation.get('name', '')}: {c['name']}")
    ax.legend()
    fig.tight_layout()
    name = f"{c['name']}.png"
    fig.savefig(workdir / name, dpi=100)
    plt.close(fig)
    files.append(name)
  return files


def _markdown(ablation: dict, result: dict, plots: list[str]) -> str:
  metrics = ablation.get("metrics", [])
  lines = [f"# Ablation: {result['name']}", "", result["description"], "",
           f"Varied keys: {', '.join(result['keys'])}; seeds {result['seeds']}.", ""]
  head = ["arm", "diff", "status"] + [f"{m['name']} ({m['better']} is better)" for m in metrics]
  lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for arm, a in result["arms"].items():
    statuses = sorted({s["status"] for s in a["seeds"].values()})
    errors = [s["error"] for s in a["seeds"].values() if s["error"]]
    status = "/".join(statuses) + (f" ({errors[0]})" if errors else "")
    cells = []
    for m in metrics:
      f = result["final"][arm][m["name"]]
      cells.append("—" if f is None else f"{f['mean']:.4f}" + (
          f" ± {f['std']:.4f} (n={f['n']})" if f["std"] is not None else ""))
    diff_text = ", ".join(f"`{k}={v}`" for k, v in a["diff"].items()) or "(base)"
    lines.append(f"| {arm} | {diff_text} | {status} | " + " | ".join(cells) + " |")
  if len(result["code"]) == 1:
    lines += ["", f"Code: every stage ran on `{result['code'][0]}`."]
  elif len(result["code"]) > 1:
    where = "; ".join(f"{arm} seed {seed}: " + ", ".join(f"{st} `{v}`" for st, v in s["code"].items())
                      for arm, a in result["arms"].items() for seed, s in a["seeds"].items())
    lines += ["", f"**Warning: the stages ran on different code** ({', '.join(result['code'])}), so "
                  f"the arms may differ in more than the varied keys: {where}."]
  if result["verdicts"]:
    lines += ["", "## Did the paper's direction reproduce at this scale?", ""]
    lines += [f"- {v['line']}" for v in result["verdicts"]]
  if plots:
    lines += ["", "## Curves", ""] + [f"![{p}]({p})" for p in plots]
  return "\n".join(lines) + "\n"
