"""Writes a pre-scored corpus (ArrayRecord) from a directory of source files.

  python data/make_corpus.py --output=/tmp/corpus                       # CPython's stdlib
  python data/make_corpus.py --source_dir=~/src/myrepos --output=DIR --num_shards=4

Each file becomes one record (kind "file"): repository = top-level directory, language from the
extension, score = a transparent rule-based heuristic (seedcoder_jax.input.source_files), standing
in for the LLM quality scorer of the curation stage until that exists; corpus.json says so.
Prints one JSON line: output, records, repositories, languages.
"""

import json

from absl import app, flags

from seedcoder_jax.input import corpus, source_files

_SOURCE = flags.DEFINE_string("source_dir", None,
                              "directory of source files (default: this interpreter's stdlib)")
_OUTPUT = flags.DEFINE_string("output", None, "corpus directory to write", required=True)
_SHARDS = flags.DEFINE_integer("num_shards", 1, "number of ArrayRecord shards")
_MAX_BYTES = flags.DEFINE_integer("max_bytes", 1_000_000, "skip files larger than this")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "replace an existing corpus in --output")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  src = _SOURCE.value or source_files.default_source_dir()
  meta = corpus.write_corpus(
      source_files.iter_source_records(src, max_bytes=_MAX_BYTES.value), _OUTPUT.value,
      num_shards=_SHARDS.value, overwrite=_OVERWRITE.value,
      metadata={"source_dir": str(src), "score": source_files.SCORE_DESCRIPTION,
                "score_kind": "heuristic"})
  print(json.dumps({"output": _OUTPUT.value, "records": meta["num_records"],
                    "repositories": meta["num_repos"], "languages": meta["languages"]}))


if __name__ == "__main__":
  app.run(main)
