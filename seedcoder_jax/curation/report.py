"""DIR/report.html: what the curation kept and dropped, with three matplotlib figures.

  score_histogram.png   scores of the kept records (0-10)
  languages.png         kept records per language
  rejections.png        rejections per "<stage>/<reason>"
"""

from __future__ import annotations

import html
import json
import pathlib

import numpy as np

SCORE_BINS = 20  # histogram bins over scores 0-10 (0.5 wide)
SCORE_EDGES = np.linspace(0, 10, SCORE_BINS + 1)


def score_bin(score: float) -> int:
  """The histogram bin of a score, as numpy's histogram puts it (the last bin is closed; a score
  outside 0-10 is clipped into the first or last bin)."""
  return int(min(max(np.searchsorted(SCORE_EDGES, score, side="right") - 1, 0), SCORE_BINS - 1))


def score_histogram(scores) -> list[int]:
  return [int(n) for n in np.bincount([score_bin(s) for s in scores], minlength=SCORE_BINS)]


def _bar(ax, labels, values, title):
  y = np.arange(len(labels))
  ax.barh(y, values, color="#4c72b0")
  ax.set_yticks(y, labels)
  ax.invert_yaxis()
  ax.set_title(title)
  for i, v in enumerate(values):
    ax.text(v, i, f" {v}", va="center", fontsize=8)


def write_figures(out: pathlib.Path, stats: dict, score_hist: list[int],
                  languages: dict[str, int]) -> list[str]:
  """The PNGs; `score_hist`: kept records per score bin (score_histogram; counted by Beam)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  names = []
  fig, ax = plt.subplots(figsize=(6, 3.5))
  centres = (SCORE_EDGES[:-1] + SCORE_EDGES[1:]) / 2
  ax.hist(centres, bins=SCORE_EDGES, weights=np.asarray(score_hist, np.float64), color="#4c72b0")
  ax.set_xlabel(f"score ({stats.get('score_source', '?')})")
  ax.set_ylabel("kept records")
  ax.set_title(f"Scores of {int(sum(score_hist))} kept records")
  fig.tight_layout()
  fig.savefig(out / "score_histogram.png", dpi=100)
  plt.close(fig)
  names.append("score_histogram.png")
  for name, counts, title in [("languages.png", languages, "Kept records per language"),
                              ("rejections.png", stats["rejected"], "Rejections per stage/reason")]:
    items = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    fig, ax = plt.subplots(figsize=(7, 0.35 * max(len(items), 3) + 1))
    _bar(ax, [k or "(none)" for k, _ in items], [v for _, v in items], title)
    fig.tight_layout()
    fig.savefig(out / name, dpi=100)
    plt.close(fig)
    names.append(name)
  return names


def _table(rows, header) -> str:
  head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
  body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>"
                 for r in rows)
  return f"<table><tr>{head}</tr>{body}</table>"


def planted_section(planted: dict) -> list[str]:
  """The report's planted-defect check (curation/planted.py): one sentence per rater, then each
  rater's accuracy per defect kind."""
  raters = planted["raters"]
  kinds = planted["kinds"]

  def cell(acc):
    return "-" if acc["accuracy"] is None else f"{acc['accuracy']:.2f} (n={acc['n']})"

  return [
      "<h2>Does the filter filter? Planted defects</h2>",
      f"<p>{planted['n_pairs']} pairs: a real function ({planted['n_files']} files, "
      f"{planted.get('from_sample', 0)} of them from the oracle sample) against a copy with one "
      "defect of the oracle's rubric planted; a rater is right when it scores the original "
      "higher (ties count half).</p>",
      *[f"<p><b>{html.escape(r['sentence'])}</b></p>" for r in raters.values()],
      _table([(k, *(cell(r["by_kind"][k]) for r in raters.values())) for k in kinds]
             + [("all", *(cell(r["overall"]) for r in raters.values()))],
             ["defect", *raters]),
  ]


def write_report(out: str | pathlib.Path, stats: dict, score_hist: list[int],
                 languages: dict[str, int], matches: list[dict]) -> pathlib.Path:
  """Writes the PNGs and report.html into local directory `out`; returns the HTML path.

  `matches`: the first decontamination matches (stats["decontamination_matches"] counts all)."""
  out = pathlib.Path(out)
  figures = write_figures(out, stats, score_hist, languages)
  n_matches = stats.get("decontamination_matches", len(matches))
  total_rej = sum(stats["rejected"].values())
  parts = [
      "<!doctype html><html><head><meta charset='utf-8'><title>Curation report</title>",
      "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
      "td,th{border:1px solid #ccc;padding:2px 8px;text-align:left}</style></head><body>",
      "<h1>Curation report</h1>",
      f"<p>{stats['input']} inputs: {stats['kept']} kept + {total_rej} rejected "
      f"(score source: {html.escape(str(stats.get('score_source')))}).</p>",
      *([f"<p><b>Score fallback ({html.escape(stats['score_fallback']['reason'])})</b>: "
         f"{html.escape(stats['score_fallback']['detail'])}</p>"]
        if "score_fallback" in stats else []),
      *(planted_section(stats["planted"]) if "planted" in stats else []),
      "<h2>Passes</h2>",
      _table([(k, v["in"], v["kept"], v["rejected"]) for k, v in stats["passes"].items()],
             ["pass", "in", "kept", "rejected"]),
      "<h2>Rejections</h2>",
      _table(sorted(stats["rejected"].items()), ["stage/reason", "records"]),
      "<h2>Figures</h2>",
      *[f"<p><img src='{f}' alt='{f}'></p>" for f in figures],
      "<h2>Decontamination matches</h2>",
      *([f"<p>The first {len(matches)} of {n_matches} (all in decontamination.jsonl).</p>"]
        if n_matches > len(matches) else []),
      _table([(m["id"], ", ".join(m["task_ids"])) for m in matches], ["record", "benchmark tasks"])
      if matches else "<p>none</p>",
      "<h2>stats.json</h2>",
      f"<pre>{html.escape(json.dumps(stats, indent=2))}</pre>",
      "</body></html>",
  ]
  path = out / "report.html"
  path.write_text("\n".join(parts), encoding="utf-8")
  return path
