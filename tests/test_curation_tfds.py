"""The curated corpus as a TFDS dataset: the same records through open_corpus and through
tfds.data_source (ArrayRecord files with a feature spec), and into Grain."""

import numpy as np
import pytest

from seedcoder_jax.curation import tfds_corpus
from seedcoder_jax.input import corpus as corpus_lib

pytest.importorskip("tensorflow_datasets")


def _records():
  texts = ["def f():\n    return 1\n", "int main() { return 0; }\n",
           "line\u2028separator\u2029and\x85next-line", "", "# é ü 中文\nprint('x')\n"]
  return [{"text": t * (1 + i % 2), "language": ("python", "c", "python", "markdown", "python")[i % 5],
           "kind": "web" if i % 5 == 3 else "file", "repo": f"repo{i % 2}", "path": f"p/{i}.py",
           "score": 0.5 + 1.25 * i} for i, t in enumerate(texts * 3)]


def test_same_records_both_ways(tmp_path):
  recs = _records()
  corpus_lib.write_corpus(recs, tmp_path / "corpus", num_shards=3, metadata={"score_kind": "x"})
  corpus = corpus_lib.open_corpus(tmp_path / "corpus")
  builder = tfds_corpus.prepare(str(tmp_path / "corpus"), str(tmp_path / "tfds"))
  assert builder.info.splits["train"].num_examples == len(recs)
  assert builder.info.file_format.value == "array_record"
  assert sorted(p.name for p in (tmp_path / "tfds" / "seedcoder_corpus" / "1.0.0").iterdir()
                if "array_record" in p.name)  # ArrayRecord shards
  src = tfds_corpus.data_source(str(tmp_path / "tfds"))
  assert len(src) == len(corpus) == len(recs)
  ours = [corpus.source[i] for i in range(len(corpus))]
  theirs = [tfds_corpus.as_record(src[i]) for i in range(len(src))]
  assert theirs == ours
  assert [r["text"] for r in theirs] == [r["text"] for r in recs]  # corpus order kept
  # Read-only, from the files alone (no builder class): the feature spec comes from features.json.
  import tensorflow_datasets as tfds
  ro = tfds.builder_from_directory(tfds_corpus.dataset_dir(str(tmp_path / "tfds")))
  assert [tfds_corpus.as_record(x) for x in ro.as_data_source(split="train")] == ours
  assert ro.info.features["score"].dtype == np.float32
  # Grain over the TFDS source, as over the corpus's own.
  import grain
  got = list(grain.MapDataset.source(src).map(tfds_corpus.as_record))
  assert got == list(grain.MapDataset.source(corpus.source))
