"""Evaluation harness: benchmarks (registry), pass@k, sandboxed scoring, reports.

Entry point: eval/run.py -> harness.evaluate(harness.EvalConfig(...)).
"""
