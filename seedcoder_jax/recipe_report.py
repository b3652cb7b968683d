"""WORKDIR/report.md and report.html: the whole recipe on one page.

Built from what the stages left (each stage's DONE.json, the trainers' run/metrics.jsonl, the
post-training measurements), so it can be rebuilt at any time and shows unfinished stages as such:
  - per stage: status, seconds and its key numbers;
  - the models along the chain (imported base -> SFT -> DPO; RL from the base or the LongCoT
    warmup) on the same held-out problems and HumanEval, where measured;
  - the loss curves of every training stage (report_curves.png);
  - a link to the curation report (curate/report.html).

  write(workdir, stages) -> (report.md path, report.html path)
"""

from __future__ import annotations

import html
import json
import pathlib
from typing import Optional

DONE = "DONE.json"
TRAINING = ("pretrain", "pretrain_phase2", "sft", "dpo", "warmup", "rl")
_SKIP = {"seconds", "outputs", "new_tokens", "prompt", "continuation", "eval", "source", "hf_dir",
         "machine"}
# Stages whose summaries open with configuration: the measured figures to show first.
_FIRST = {"model_bench": ("tokens_per_s", "mfu", "batch_size", "seq_len", "peak_source")}


def _done(workdir: pathlib.Path, stage: str) -> Optional[dict]:
  path = workdir / stage / DONE
  return json.loads(path.read_text()) if path.exists() else None


def _numbers(summary: dict, where: str = "", limit: int = 8,
             first: tuple[str, ...] = ()) -> list[tuple[str, str]]:
  """The summary's scalar entries (nested ones dotted), numbers rounded, at most `limit`; the
  top-level keys in `first` lead, in that order."""
  out = []
  ordered = [k for k in first if k in summary] + [k for k in summary if k not in first]
  for key in ordered:
    value = summary[key]
    if key in _SKIP:
      continue
    path = f"{where}{key}"
    if isinstance(value, dict):
      out += _numbers(value, f"{path}.", limit)
    elif isinstance(value, bool) or value is None:
      continue
    elif isinstance(value, float):
      out.append((path, f"{value:.4g}"))
    elif isinstance(value, (int, str)) and len(str(value)) <= 40:
      out.append((path, str(value)))
  return out[:limit]


def _chain(workdir: pathlib.Path) -> list[tuple[str, str, str]]:
  """(model, held-out pass rate, HumanEval pass@1) along the post-training chain."""
  rows = []
  evaluate, sft, dpo, rl = (_done(workdir, s) for s in ("evaluate", "sft", "dpo", "rl"))
  fmt = lambda m, k: (f"{m[k]['pass_rate']:.3f} (n={m[k]['n']})" if m and k in m else "—")
  he = lambda m: (f"{m['humaneval']['pass_at_1']:.3f} (n={m['humaneval']['num_problems']})"
                  if m and "humaneval" in m else "—")
  base_he = "—"
  if evaluate and "pass_at_k" in evaluate:
    base_he = f"{evaluate['pass_at_k'].get('pass@1', float('nan')):.3f} (n={evaluate.get('num_problems')})"
  base = (sft or {}).get("before")
  rows.append(("imported base (SmolLM2-135M-Instruct)", fmt(base, "heldout"),
               he(base) if base and "humaneval" in base else base_he))
  if sft:
    rows.append(("after SFT", fmt(sft.get("after"), "heldout"), he(sft.get("after"))))
  if dpo:
    rows.append(("after DPO", fmt(dpo.get("after"), "heldout"), he(dpo.get("after"))))
  if rl and rl.get("eval"):
    first, last = rl["eval"][0], rl["eval"][-1]
    start = " from the LongCoT warmup (reasoning prompt)" if rl.get("init") == "warmup" else ""
    rows.append((f"RL{start} step {first['step']} -> {last['step']}",
                 f"{first['pass_rate']:.3f} -> {last['pass_rate']:.3f} (n={last.get('n', '?')})",
                 "—"))
  return rows


def _curves(workdir: pathlib.Path, stages: list[str]) -> Optional[str]:
  runs = [(s, workdir / s / "run" / "metrics.jsonl") for s in stages if s in TRAINING]
  runs = [(s, p) for s, p in runs if p.exists()]
  if not runs:
    return None
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, len(runs), figsize=(4 * len(runs), 3.2), squeeze=False)
  for ax, (stage, path) in zip(axes[0], runs):
    rows = [json.loads(line) for line in path.open()]
    for key, style in (("loss", "-"), ("eval_loss", "o-")):
      points = sorted({r["step"]: r[key] for r in rows if r.get(key) is not None}.items())
      if points:
        ax.plot(*zip(*points), style, label=key, markersize=3)
    ax.set_title(stage)
    ax.set_xlabel("step")
    ax.legend()
  fig.tight_layout()
  fig.savefig(workdir / "report_curves.png", dpi=90)
  plt.close(fig)
  return "report_curves.png"


def write(workdir, stages: list[str]) -> tuple[pathlib.Path, pathlib.Path]:
  workdir = pathlib.Path(workdir)
  stage_rows = []
  for s in stages:
    d = _done(workdir, s)
    status = "done" if d else ("started, unfinished" if (workdir / s).exists() else "not run")
    numbers = ", ".join(f"{k} {v}" for k, v in _numbers(d, first=_FIRST.get(s, ()))) if d else ""
    stage_rows.append((s, status, f"{d['seconds']:.0f}" if d and "seconds" in d else "—", numbers))
  chain = _chain(workdir)
  curves = _curves(workdir, stages)
  curation = workdir / "curate" / "report.html"
  total = sum(float(_done(workdir, s).get("seconds", 0)) for s in stages if _done(workdir, s))

  md = [f"# Seed-Coder recipe: {workdir}", "",
        f"{sum(r[1] == 'done' for r in stage_rows)} of {len(stages)} stages done, "
        f"{total / 60:.1f} minutes of stage time.", "",
        "| stage | status | seconds | key numbers |", "|---|---|---|---|"]
  md += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in stage_rows]
  md += ["", "## The models along the chain (greedy, sandboxed)", "",
         "| model | held-out problems pass rate | HumanEval pass@1 |", "|---|---|---|"]
  md += [f"| {a} | {b} | {c} |" for a, b, c in chain]
  if curves:
    md += ["", "## Training curves", "", f"![loss curves]({curves})"]
  if curation.exists():
    md += ["", f"Curation report: [curate/report.html](curate/report.html)"]
  md_path = workdir / "report.md"
  md_path.write_text("\n".join(md) + "\n")

  table = lambda header, rows: (
      "<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>" +
      "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>"
              for r in rows) + "</table>")
  body = [f"<h1>Seed-Coder recipe: {html.escape(str(workdir))}</h1>",
          f"<p>{html.escape(md[2])}</p>",
          table(["stage", "status", "seconds", "key numbers"], stage_rows),
          "<h2>The models along the chain (greedy, sandboxed)</h2>",
          table(["model", "held-out problems pass rate", "HumanEval pass@1"], chain)]
  if curves:
    body += ["<h2>Training curves</h2>", f'<img src="{curves}" alt="loss curves">']
  if curation.exists():
    body += ['<p><a href="curate/report.html">Curation report</a></p>']
  html_path = workdir / "report.html"
  html_path.write_text("<!doctype html><html><head><meta charset='utf-8'><title>Seed-Coder "
                       "recipe report</title><style>body{font-family:sans-serif;max-width:70em}"
                       "td,th{border:1px solid #ccc;padding:2px 6px}table{border-collapse:"
                       "collapse}</style></head><body>" + "\n".join(body) + "</body></html>\n")
  return md_path, html_path
