"""Evaluation reports: one JSON document per run plus a Markdown table for docs/benchmarks.md."""

from __future__ import annotations

import json
import pathlib

_SUMMARY_KEYS = ("benchmark", "num_problems", "num_scored", "samples_per_problem", "pass_at_k",
                 "exact_match", "missing", "unsupported", "unsupported_policy", "malformed",
                 "isolation", "statuses", "generation")


def markdown_table(report: dict) -> str:
  """A Markdown table (one row) of a report's headline figures, then the isolation level."""
  metrics = dict(report.get("pass_at_k") or {})
  if report.get("exact_match") is not None:
    metrics["exact match"] = report["exact_match"]
  gen = report.get("generation") or {}
  header = ["benchmark", "problems", "samples/problem", *metrics, "missing",
            "cannot run here (failures)", "exited early", "malformed", "sandbox isolation",
            "model", "prompt style", "temperature"]
  spp = report.get("samples_per_problem") or {}
  spp_text = (str(spp.get("min")) if spp.get("min") == spp.get("max")
              else f"{spp.get('min')}-{spp.get('max')}")
  isolation = ", ".join(f"{k} ({v})" for k, v in sorted((report.get("isolation") or {}).items()))
  row = [report["benchmark"], str(report["num_scored"]), spp_text,
         *(f"{100 * v:.2f}%" for v in metrics.values()),
         str(len(report.get("missing") or [])), str(len(report.get("unsupported") or {})),
         str((report.get("statuses") or {}).get("exited_early", 0)),
         str((report.get("malformed") or {}).get("count", 0)),
         isolation or "n/a", str(gen.get("checkpoint", "samples file")),
         str(gen.get("prompt_style", "-")), str(gen.get("temperature", "-"))]
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
           "| " + " | ".join(row) + " |"]
  return "\n".join(lines) + "\n"


def per_problem_markdown(report: dict, limit: int = 1000) -> str:
  """A Markdown table of per-problem results (task, samples, passed, first failure status)."""
  lines = ["| task | n | passed | statuses |", "|---|---|---|---|"]
  for row in report.get("per_problem", [])[:limit]:
    statuses = ", ".join(f"{k} {v}" for k, v in sorted(row.get("statuses", {}).items()))
    lines.append(f"| {row['task_id']} | {row['n']} | {row['c']} | {statuses} |")
  return "\n".join(lines) + "\n"


def write(report: dict, output: str | pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
  """Writes OUTPUT (JSON) and OUTPUT with a .md suffix (summary and per-problem tables)."""
  output = pathlib.Path(output)
  output.parent.mkdir(parents=True, exist_ok=True)
  output.write_text(json.dumps(report, indent=1, sort_keys=False) + "\n", encoding="utf-8")
  md = output.with_suffix(".md")
  md.write_text(f"# {report['benchmark']}\n\n{markdown_table(report)}\n## Per problem\n\n"
                f"{per_problem_markdown(report)}", encoding="utf-8")
  return output, md


def summary(report: dict) -> dict:
  """The report without per-problem rows (what the CLI prints)."""
  out = {k: report[k] for k in _SUMMARY_KEYS if k in report}
  if isinstance(out.get("malformed"), dict):
    out["malformed"] = {k: v for k, v in out["malformed"].items() if k != "lines"}
  return out
