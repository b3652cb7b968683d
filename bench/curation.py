r"""Throughput of the curation pipeline per pass at two input sizes: one JSON line per size.

  python bench/curation.py                                    # configs/curation.py:tiny, sizes 0.1, 1
  python bench/curation.py --sizes=0.25,1 --config.commits.enabled=False --config.web.enabled=False
  python bench/curation.py --direct_running_mode=multi_processing --direct_num_workers=2

A size is the fraction of the config's ingest.inputs (repositories) taken, in order (at least
one); each size runs the whole pipeline in a fresh temporary workdir (under --workdir if given).
Per pass (filter, scorer step, score, output): seconds, records in, MB in, files_per_s (records
in / s) and MB_per_s. Filter: records in = every input (files, commits, web pages), MB in = the
bytes under the repository paths (commits and web pages, not scaled by the size, are left out
of MB); scorer: the oracle's sample; score and output: the JSON lines the pass reads. `files_per_s` at the top = source files ingested / wall seconds of the whole run.
Beam options pass through (e.g. the multi-process runner above).
"""

import json
import os
import pathlib
import tempfile
import time

from absl import app, flags
from ml_collections import config_flags

from seedcoder_jax import perf
from seedcoder_jax.curation import pipeline

_ROOT = pathlib.Path(__file__).resolve().parents[1]
_CONFIG = config_flags.DEFINE_config_file("config", str(_ROOT / "configs" / "curation.py") + ":tiny",
                                          "curation config", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "parent of the per-size workdirs (default: temp)")
_SIZES = flags.DEFINE_list("sizes", ["0.1", "1"], "fractions of ingest.inputs, one run each")


def _bytes_of(paths) -> int:
  total = 0
  for p in map(pathlib.Path, paths):
    if p.is_file():
      total += p.stat().st_size
    elif p.is_dir():
      total += sum(f.stat().st_size for f in p.rglob("*") if f.is_file() and not f.is_symlink())
  return total


def _jsonl_bytes(pattern: str) -> int:
  from apache_beam.io.filesystems import FileSystems
  return sum(m.size_in_bytes for r in FileSystems.match([pattern]) for m in r.metadata_list)


def _run(fraction: float, parent: str, beam_args) -> dict:
  inputs = list(_CONFIG.value.ingest.inputs)
  take = inputs[:max(1, round(fraction * len(inputs)))]
  workdir = tempfile.mkdtemp(prefix=f"curation_bench_{fraction:g}_", dir=parent)
  t0 = time.perf_counter()
  stats = pipeline.run(_CONFIG.value, workdir, inputs=take, beam_args=beam_args)
  seconds = time.perf_counter() - t0
  st = f"{workdir}/stages"

  def done_seconds(name):
    return json.loads(pathlib.Path(f"{st}/{name}/DONE").read_text()).get("seconds")

  passes = {
      "filter": (stats["input"], _bytes_of(take)),
      "scorer": (stats.get("oracle", {}).get("n", 0), None),
      "score": (stats["passes"]["score"]["in"], _jsonl_bytes(f"{st}/filter/records*.jsonl")),
      "output": (stats["kept"], _jsonl_bytes(f"{st}/score/records*.jsonl")),
  }
  per_pass = {}
  for name, (n, nbytes) in passes.items():
    s = done_seconds(name)
    per_pass[name] = {
        "seconds": s, "records_in": n, "MB_in": None if nbytes is None else nbytes / 1e6,
        "files_per_s": n / s if s else None,
        "MB_per_s": nbytes / 1e6 / s if s and nbytes is not None else None}
  oracle, scorer = stats.get("oracle", {}), stats.get("scorer", {})
  files = stats["input_by_source"].get("files", 0)
  return {
      "benchmark": "curation", "size": fraction, "input_paths": len(take),
      "files_per_s": files / seconds, "MB_per_s": _bytes_of(take) / 1e6 / seconds,
      "inputs_per_s": stats["input"] / seconds, "seconds": seconds, "passes": per_pass,
      "oracle_files_per_s": oracle["n"] / oracle["seconds"] if oracle.get("seconds") else None,
      "scorer_train_tokens_per_s": scorer.get("train_tokens_per_s"),
      "files": files, "inputs": stats["input"], "input_by_source": stats["input_by_source"],
      "kept": stats["kept"], "rejected": sum(stats["rejected"].values()),
      "score_source": stats["score_source"], "beam_args": list(beam_args),
      "machine": {**perf.machine(), "cpu_count": os.cpu_count()}}


def main(argv):
  sizes = [float(s) for s in _SIZES.value]
  if len(sizes) < 1 or not all(0 < s <= 1 for s in sizes):
    raise app.UsageError(f"--sizes={_SIZES.value}: fractions in (0, 1]")
  with tempfile.TemporaryDirectory(prefix="curation_bench_") as tmp:
    parent = _WORKDIR.value or tmp
    os.makedirs(parent, exist_ok=True)
    for fraction in sizes:
      print(json.dumps(_run(fraction, parent, argv[1:])), flush=True)


if __name__ == "__main__":
  app.run(main, flags_parser=lambda argv: flags.FLAGS(argv, known_only=True))
