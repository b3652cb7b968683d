"""The curation pipeline at scale, in small: Beam's multi-process runner (worker processes, no
shared memory) gives the in-process runner's outputs, and the driver's own steps hold no records
(their peak memory stays flat while the input grows 10x). Both slow (Beam stage start-up)."""

import json
import os
import pathlib
import random
import shutil
import sys
import tracemalloc

import pytest
from apache_beam.io.filesystem import (CompressedFile, CompressionTypes, FileMetadata,
                                       FileSystem)

from seedcoder_jax.curation import output as output_lib
from seedcoder_jax.curation import pipeline
from seedcoder_jax.input import corpus as corpus_lib

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from test_curation_pipeline import _config, inputs  # noqa: E402,F401  (the fixture)

# Fewer star rounds than the default keep the multi-process graph small; the planted clusters
# are pairs, resolved in one round.
FAST = {"dedup.near.cluster_rounds": 2, "dedup.repo.cluster_rounds": 2,
        "ingest.max_bytes": 200_000, "repo.min_mean_score": 0.0}


def _outputs(workdir: pathlib.Path) -> dict:
  stats = json.loads((workdir / "stats.json").read_text())
  for o in stats["outputs"].values():  # the only field naming the workdir
    o["path"] = o["path"].rsplit("/", 1)[1]
  out = {"stats": stats,
         "decontamination": (workdir / "decontamination.jsonl").read_text()}
  for name in ("corpus", "repo_corpus"):
    c = corpus_lib.open_corpus(workdir / name)
    out[name] = ([c.source[i] for i in range(len(c))], c.scores.tolist(), c.repo_ids.tolist(),
                 c.repo_names.tolist(), c.metadata)
  out["rejected"] = sorted(l for f in workdir.glob("stages/*/rejected*.jsonl")
                           for l in f.read_text().split("\n") if l)
  return out


@pytest.fixture(scope="module")
def in_process(inputs, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("inproc")
  pipeline.run(_config(**FAST), str(workdir), inputs=inputs)
  return _outputs(workdir)


@pytest.mark.slow
def test_multi_process_runner_gives_the_in_process_outputs(inputs, in_process, tmp_path):
  pipeline.run(_config(**FAST), str(tmp_path / "multi"), inputs=inputs,
               beam_args=["--direct_running_mode=multi_processing", "--direct_num_workers=2"])
  a, b = in_process, _outputs(tmp_path / "multi")
  assert a["stats"]["rejected"]["dedup/near_duplicate"] == 1  # the run has something to agree on
  assert a["stats"]["decontamination_matches"] == 1
  for key in a:
    assert a[key] == b[key], key


class _BucketFS(FileSystem):
  """A gs://-like filesystem for the test ("bucket://..."): no directories, prefix listing,
  files kept under ROOT. Nothing in the pipeline may reach them by a local path."""
  ROOT = None

  @classmethod
  def scheme(cls):
    return "bucket"

  def _local(self, path):
    assert path.startswith("bucket://"), path
    return os.path.join(self.ROOT, path[len("bucket://"):])

  def join(self, base, *paths):
    return "/".join([base.rstrip("/")] + [p.strip("/") for p in paths])

  def split(self, path):
    head, tail = path.rstrip("/").rsplit("/", 1)
    return head, tail

  def has_dirs(self):
    return False

  def mkdirs(self, path):
    pass

  def _list(self, prefix):
    for dirpath, _, files in os.walk(self.ROOT):
      for f in files:
        local = os.path.join(dirpath, f)
        remote = "bucket://" + os.path.relpath(local, self.ROOT)
        if remote.startswith(prefix):
          yield FileMetadata(remote, os.path.getsize(local), os.path.getmtime(local))

  def _open(self, path, mode, compression_type):
    if "w" in mode:
      os.makedirs(os.path.dirname(self._local(path)), exist_ok=True)
    raw = open(self._local(path), mode)
    ctype = FileSystem._get_compression_type(path, compression_type)
    return raw if ctype == CompressionTypes.UNCOMPRESSED else CompressedFile(raw, ctype)

  def create(self, path, mime_type="application/octet-stream",
             compression_type=CompressionTypes.AUTO):
    return self._open(path, "wb", compression_type)

  def open(self, path, mime_type="application/octet-stream",
           compression_type=CompressionTypes.AUTO):
    return self._open(path, "rb", compression_type)

  def copy(self, sources, destinations):
    for a, b in zip(sources, destinations):
      os.makedirs(os.path.dirname(self._local(b)), exist_ok=True)
      shutil.copyfile(self._local(a), self._local(b))

  def rename(self, sources, destinations):
    for a, b in zip(sources, destinations):
      os.makedirs(os.path.dirname(self._local(b)), exist_ok=True)
      os.replace(self._local(a), self._local(b))

  def exists(self, path):
    return os.path.isfile(self._local(path))  # a prefix is no object

  def size(self, path):
    return os.path.getsize(self._local(path))

  def last_updated(self, path):
    return os.path.getmtime(self._local(path))

  def checksum(self, path):
    return str(self.size(path))

  def metadata(self, path):
    return FileMetadata(path, self.size(path), self.last_updated(path))

  def delete(self, paths):
    for p in paths:
      os.remove(self._local(p))

  def report_lineage(self, path, lineage, level=None):
    pass


@pytest.mark.slow
def test_workdir_on_a_bucket_filesystem(inputs, in_process, tmp_path, monkeypatch):
  """DIR as a URL of a directory-less filesystem (as gs://) gives the local run's outputs: every
  pass, artifact, corpus shard and the report go through Beam's FileSystems."""
  monkeypatch.setattr(_BucketFS, "ROOT", str(tmp_path / "bucket"))
  monkeypatch.chdir(tmp_path)  # a pathlib use of the URL would make ./bucket:/data/cur here
  stats = pipeline.run(_config(**{**FAST, "output.report": True}), "bucket://data/cur",
                       inputs=inputs)
  root = tmp_path / "bucket" / "data" / "cur"
  assert {"report.html", "score_histogram.png", "config.json"} <= {p.name for p in root.iterdir()}
  got = _outputs(root)
  assert got["stats"] == stats | {"outputs": got["stats"]["outputs"]}
  for key in in_process:
    assert got[key] == in_process[key], key
  assert pipeline.run(_config(**{**FAST, "output.report": True}), "bucket://data/cur",
                      inputs=inputs) == stats  # resumes: every DONE found through FileSystems
  assert not (tmp_path / "bucket:").exists()


def _synthetic_repos(root: pathlib.Path, n_files: int, seed: int = 0) -> list[str]:
  """n_files distinct, valid Python files (~20 KB each) in repositories of 20 files."""
  rng = random.Random(seed)
  words = [f"{a}{b}" for a in ("load", "save", "parse", "merge", "split", "count", "scan")
           for b in ("_rows", "_names", "_items", "_paths", "_keys", "_blocks")]
  paths = []
  for i in range(n_files):
    repo = root / f"repo{i // 20:03d}"
    repo.mkdir(parents=True, exist_ok=True)
    funcs = []
    for j in range(100):
      name = f"{rng.choice(words)}_{i}_{j}"
      funcs.append(f"def {name}(values, limit={rng.randrange(100)}):\n"
                   f"  \"\"\"{' '.join(rng.choice(words) for _ in range(8))}.\"\"\"\n"
                   f"  out = [v * {rng.randrange(1, 9)} for v in values if v < limit]\n"
                   f"  return sorted(out)[:{rng.randrange(1, 50)}]\n")
    (repo / f"mod{i:04d}.py").write_text("\n\n".join(funcs))
    if not paths or paths[-1] != str(repo):
      paths.append(str(repo))
  return paths


@pytest.mark.slow
def test_driver_memory_flat_while_input_grows_10x(tmp_path, monkeypatch):
  """tracemalloc around every driver step (the oracle step, which reads the oracle's sample,
  and the stats/report step): its peak must not follow the input. The Beam passes run in the
  runner (in-process here; Dataflow/Flink/Spark workers on a cluster) and are not measured.
  Before, these steps read every record (the sample was drawn from all filtered files, the
  corpus written from all scored ones): their peak grew with the input. The report (matplotlib)
  and the planted-defect check (stdlib functions parsed: ~14 MB, whatever the input) are
  constant costs, off so that a record-sized leak would show."""
  from seedcoder_jax.curation import oracle as oracle_lib
  from seedcoder_jax.curation import oracle_backends

  class Fixed:  # an oracle answering at once: the step's memory is the sample's
    name, model = "fixed", "fake"

    def rate(self, prompts):
      return [oracle_lib.Answer(*oracle_lib.parse_rating("Rating: [[7]]"), "Rating: [[7]]")
              for _ in prompts]

  monkeypatch.setattr(oracle_backends, "make_backend", lambda cfg: Fixed())
  peaks = {}

  def measured(name, fn):
    def wrapper(*args, **kwargs):
      tracemalloc.start()
      try:
        return fn(*args, **kwargs)
      finally:
        peaks[name] = max(peaks.get(name, 0), tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    return wrapper

  monkeypatch.setattr(pipeline, "_scorer_step", measured("scorer", pipeline._scorer_step))
  monkeypatch.setattr(output_lib, "output_step", measured("output", output_lib.output_step))
  c = _config(**{**FAST, "oracle.enabled": True, "oracle.sample_size": 8,
                 "decontam.enabled": False, "dedup.near.enabled": False,
                 "dedup.repo.enabled": False, "output.report": False,
                 "oracle.planted_pairs": 0})
  result = {}
  for n in (30, 300):
    peaks.clear()
    paths = _synthetic_repos(tmp_path / f"in{n}", n)
    stats = pipeline.run(c, str(tmp_path / f"cur{n}"), inputs=paths)
    assert stats["input"] == n and stats["oracle"]["n"] == 8, stats
    mb = sum(f.stat().st_size for f in (tmp_path / f"in{n}").rglob("*.py")) / 1e6
    result[n] = {"input_mb": round(mb, 2), **{k: round(v / 1e6, 2) for k, v in peaks.items()}}
  print(json.dumps(result))
  assert result[300]["input_mb"] > 9 * result[30]["input_mb"] > 1.5
  for step in ("scorer", "output"):
    # Flat: well under the 10x of the input, and under the large input's own size.
    assert result[300][step] < 3 * result[30][step] + 0.5, result
    assert result[300][step] < 0.5 * result[300]["input_mb"], result
