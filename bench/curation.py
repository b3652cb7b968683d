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

Scorer inference (when the run trained a scorer): the trained checkpoint scores the filter pass's
first --scorer_records records (files, commits and web pages, as the score pass does) through
`Scorer.score_ids` at the config's batch size and buckets, compilation excluded (one warm-up
pass), timed over --scorer_repeats passes: `scorer_tokens_per_s` (real tokens; texts cut to
scorer.max_tokens) beside `scorer_padded_tokens_per_s` (tokens the device computed, padding
included), `scorer_files_per_s`, the forward MFU and the model shape; the peer figure in the same
line is the heuristic stage (`source_files.heuristic_score`, the score when the scorer is off) on
the same texts: `heuristic_files_per_s`.
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
_SCORER_RECORDS = flags.DEFINE_integer("scorer_records", 128, "records timed through the scorer")
_SCORER_REPEATS = flags.DEFINE_integer("scorer_repeats", 3, "timed passes over them (median)")


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


def _scorer_inference(workdir: str, stats: dict) -> dict:
  """Scorer tokens/s on the run's own records, and the heuristic stage on the same texts."""
  if stats.get("score_source") != "scorer":
    return {"scorer_tokens_per_s": None, "scorer_inference": None}
  from apache_beam.io.filesystems import FileSystems
  from seedcoder_jax import perf
  from seedcoder_jax.curation import scorer as scorer_lib
  from seedcoder_jax.input import source_files
  texts = []
  for path in sorted(m.path for r in FileSystems.match([f"{workdir}/stages/filter/records*.jsonl"])
                     for m in r.metadata_list):
    with open(path, encoding="utf-8") as f:
      for line in f:
        if line.strip():
          texts.append(json.loads(line)["text"])
        if len(texts) >= _SCORER_RECORDS.value:
          break
    if len(texts) >= _SCORER_RECORDS.value:
      break
  scoring = json.loads(pathlib.Path(f"{workdir}/stages/scorer/scoring.json").read_text())
  model = scorer_lib.load_scorer(scoring["checkpoint_dir"])
  t0 = time.perf_counter()
  ids = model.encode(texts)
  encode_s = time.perf_counter() - t0
  model.score_ids(ids)  # compiles every bucket used
  times = []
  for _ in range(max(1, _SCORER_REPEATS.value)):
    t0 = time.perf_counter()
    model.score_ids(ids)
    times.append(time.perf_counter() - t0)
  secs = sorted(times)[len(times) // 2]
  tokens = sum(len(x) for x in ids)
  padded = sum(tok.size for _, tok, _ in model.batches(ids))
  t0 = time.perf_counter()
  for _ in range(max(1, _SCORER_REPEATS.value)):
    for t in texts:
      source_files.heuristic_score(t)
  heur_s = (time.perf_counter() - t0) / max(1, _SCORER_REPEATS.value)
  mcfg = model.model_cfg
  mean_len = padded / max(1, sum(1 for _ in model.batches(ids))) / model.cfg.batch_size
  peak, peak_source = perf.peak_flops(model.cfg.compute_dtype)
  # Forward FLOPs per token: flops_per_token is training (x3) and counts the LM head's
  # vocab x d matmul, which the scorer (a pooled linear head) never computes.
  fwd_flops = (mcfg.flops_per_token(int(mean_len)) - 6.0 * mcfg.vocab_size * mcfg.d_model) / 3.0
  return {
      "scorer_tokens_per_s": tokens / secs,
      "scorer_inference": {
          "records": len(texts), "tokens": tokens, "padded_tokens": padded, "seconds": secs,
          "tokens_per_s": tokens / secs, "padded_tokens_per_s": padded / secs,
          "files_per_s": len(texts) / secs, "encode_files_per_s": len(texts) / encode_s,
          "mfu": perf.mfu(fwd_flops, padded / secs, peak), "peak_flops": peak,
          "peak_source": peak_source, "batch_size": model.cfg.batch_size,
          "buckets": list(model.cfg.buckets), "compute_dtype": model.cfg.compute_dtype,
          "model": {**mcfg.hf_names(), "backbone": model.cfg.backbone},
          "heuristic_files_per_s": len(texts) / heur_s if heur_s else None,
          "scorer_vs_heuristic_time": secs / heur_s if heur_s else None},
  }


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
      **_scorer_inference(workdir, stats),
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
