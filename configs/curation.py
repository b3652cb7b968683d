r"""Curation (Apache Beam): raw repositories, commits and web pages -> the pre-scored corpus.

  python data/curate.py --config=configs/curation.py:tiny --workdir=/tmp/cur      # a few minutes
  python data/curate.py --config=configs/curation.py:tiny --workdir=/tmp/cur \
      --input=~/src/repo_a --input=/data/repo_b.tar.gz --config.dedup.near.threshold=0.7
  # on a cluster: the `full` variant plus Beam's own options, passed through unchanged
  python data/curate.py --config=configs/curation.py:full --workdir=/mnt/curation \
      --runner=DataflowRunner --project=my-project --region=us-central1 \
      --temp_location=gs://my-bucket/tmp --setup_file=./setup.py   # or FlinkRunner / SparkRunner

Passes (each resumable: DIR/stages/<pass>/DONE is written last, and a rerun skips finished passes):
  filter  ingest (1) -> syntax (2) -> dedup (3: repository, exact, near), plus commits (7) and web
          pages (8) -> DIR/stages/filter/
  scorer  the oracle labels a sample (4) and the quality scorer trains on it (5), in the driver
  score   every record scored, files below scorer.drop_percentile dropped, decontamination (9),
          repository-level records (6) -> DIR/stages/score/
  output  DIR/corpus/ (files + web pages; write_corpus: ArrayRecord + index), DIR/commit_corpus/
          (commits: phase 2 only), DIR/repo_corpus/, DIR/stats.json,
          DIR/decontamination.jsonl, DIR/report.html + PNGs (10)

Every group but `ingest` and `output` has `enabled`; a key this file does not define is refused
before any work, naming it.

Variants:
  tiny:  18 packages of this interpreter's CPython standard library as repositories (~280 files),
         the project's own git history for commits, the HTML docs of the pygame wheel for web
         pages; the packaged SmolLM2-135M as G-Eval oracle on 32 files and as a 2-layer scorer;
         a few minutes on 2 CPU cores.
  full:  a cluster run. ingest.inputs are gs:// PLACEHOLDERS (gs://YOUR_BUCKET/...): one .tar.gz
         per repository, e.g. GitHub's codeload tarballs; replace them (or pass --input) before
         running. Paper-scale MinHash (256 permutations); the oracle through `http` (a judge
         model of your choice: set oracle.base_url and oracle.model, refused without them) on a
         222K-file sample, the scorer (the whole backbone) on every file and web page.
"""

import os
import sysconfig

import ml_collections

# Small, real packages of CPython's standard library: each directory is one repository.
TINY_PACKAGES = ("asyncio", "concurrent", "ctypes", "email", "html", "http", "importlib", "json",
                 "lib2to3", "logging", "multiprocessing", "sqlite3", "tomllib", "unittest",
                 "urllib", "wsgiref", "xml", "zoneinfo")


def _minhash(threshold: float, num_perm: int, bands: int, rows: int) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      enabled=True,
      num_perm=num_perm,  # signature length
      bands=bands, rows=rows,  # LSH banding: bands * rows <= num_perm
      threshold=threshold,  # estimated Jaccard at which two candidates are duplicates
      shingle="word",  # word | char
      ngram=5,  # shingle length (words or characters)
      seed=1,  # hash permutations
      max_bucket=1000,  # larger LSH buckets: compare with the smallest id only
      # Beam: large-star/small-star rounds that resolve duplicate clusters (stars and cliques take
      # 1, a chain of n pairs ~log2(n)); a graph that needs more stops the run naming this key.
      cluster_rounds=8,
  ))


def base() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()

  # Stage 1: one repository per input path (directory, git working tree, .tar/.tar.gz archive).
  c.ingest = ml_collections.ConfigDict()
  c.ingest.inputs = ()  # paths; --input=PATH on the command line replaces them
  c.ingest.languages = ("c", "cpp", "go", "java", "javascript", "markdown", "python", "rust",
                        "shell", "typescript")  # other files are rejected "unknown_language"
  c.ingest.max_bytes = 1_000_000  # larger files are rejected "too_large"

  # Stage 2: Tree-sitter parse; files with errors are rejected "syntax_error".
  c.syntax = ml_collections.ConfigDict(dict(enabled=True))

  # Stage 3: repository-level near dedup (MinHash over file-hash sets), then exact, then near.
  c.dedup = ml_collections.ConfigDict()
  c.dedup.exact = True
  c.dedup.near = _minhash(threshold=0.8, num_perm=128, bands=16, rows=8)
  c.dedup.repo = _minhash(threshold=0.9, num_perm=128, bands=32, rows=4)

  # Stages 4-5: the LLM oracle labels a sample, the scorer learns it (helper F's modules). Off:
  # records are scored by seedcoder_jax.input.source_files.heuristic_score (stats.json says so).
  # oracle: seedcoder_jax.curation.oracle.OracleConfig (any of its fields may be set here).
  c.oracle = ml_collections.ConfigDict(dict(
      enabled=False,
      backend="geval",  # geval | sampler | http (OpenAI-compatible: also set base_url, model)
      model="gguf:smollm2",  # the packaged SmolLM2-135M-Instruct
      base_url="",
      sample_size=48,  # files labelled (a deterministic sample)
      max_code_chars=1000,
      max_prompt_tokens=512,
      batch_size=8,
      cache_path="",  # "" = DIR/oracle_cache.sqlite
      geval_min_digit_mass=0.5,  # geval: answers with less next-token mass on digits fail
      # Does the filter filter? Oracle, scorer and heuristic also rate this many pairs of (real
      # function, copy with one planted rubric defect); stats.json["planted"] and the report say
      # how often each prefers the real one, with a 95% interval (0 = off; curation/planted.py).
      planted_pairs=16,
  ))
  # scorer: seedcoder_jax.curation.scorer.ScorerConfig (any of its fields may be set here).
  c.scorer = ml_collections.ConfigDict(dict(
      enabled=False,
      backbone="gguf:smollm2",  # pretrained decoder + a regression head
      n_layers=4,  # keep the first n blocks (0 = all)
      max_tokens=256, buckets=(64, 128, 256),  # texts cut to max_tokens; padded to a bucket
      batch_size=8,
      epochs=1,
      drop_percentile=10.0,  # files scoring below this percentile are dropped (the paper: ~10%)
      checkpoint_dir="",  # "" = DIR/stages/scorer/model
  ))

  # Stage 6: repository-level records, repositories selected by mean file score.
  c.repo = ml_collections.ConfigDict(dict(
      enabled=True,
      min_mean_score=5.0,  # mean file score (0-10) a repository needs
      select_percentile=0.0,  # > 0: and at least this percentile of all repositories' means
      min_files=2,
      seed=0,  # the random file order of non-Python repositories
  ))

  # Stage 7: commit records from git histories (seedcoder_jax.curation.commits.CommitsConfig).
  c.commits = ml_collections.ConfigDict(dict(enabled=False, repos=(), max_commits=200))

  # Stage 8: code-related web pages (seedcoder_jax.curation.web.WebConfig); inputs empty = the
  # HTML documentation shipped in the pygame wheel. Kept pages are deduplicated among themselves
  # (dedup.exact / dedup.near settings) and rated like the files (the scorer, or the heuristic
  # when it is off) against a per-category threshold: threshold_kind "score" = a minimum 0-10
  # rating (the paper's), "percentile" = drop each category's bottom p % of pages.
  c.web = ml_collections.ConfigDict(dict(
      enabled=False, inputs=(), min_chars=200, use_classifier=True, classifier_threshold=0.5,
      threshold_kind="score",
      thresholds=dict(qa=5.0, tutorial=4.0, documentation=4.0, other=6.0)))

  # Stage 9: n-gram overlap with every benchmark eval/run.py scores (MultiPL-E's data comes from
  # `make eval-data`).
  c.decontam = ml_collections.ConfigDict(dict(
      enabled=True, n=10, max_task_share=0.05,
      benchmarks=("humaneval", "fim_humaneval", "multipl_e_cpp", "multipl_e_java",
                  "multipl_e_mbpp_py")))

  # Stage 10: outputs.
  c.output = ml_collections.ConfigDict(dict(
      num_shards=1,  # ArrayRecord shards of DIR/corpus
      report=True,  # DIR/report.html and its PNGs
      # DIR/corpus also as a TFDS dataset, DIR/tfds/seedcoder_corpus/1.0.0 (ArrayRecord files,
      # feature spec; tfds.data_source("seedcoder_corpus", data_dir=DIR/tfds) -> Grain).
      tfds=False,
  ))
  return c


def tiny() -> ml_collections.ConfigDict:
  c = base()
  stdlib = sysconfig.get_paths()["stdlib"]
  # lib2to3 left the stdlib in Python 3.13: take the packages this interpreter has.
  c.ingest.inputs = tuple(f"{stdlib}/{p}" for p in TINY_PACKAGES if os.path.isdir(f"{stdlib}/{p}"))
  c.commits.enabled = True  # the project's own history (commits.repos empty = this checkout)
  c.commits.max_commits = 40
  c.web.enabled = True  # pygame's HTML docs (~80 pages)
  # A 135M oracle's ratings (and the scorer trained on them) sit near 3/10 whatever the page: an
  # absolute threshold would keep all or nothing, so drop each category's bottom share instead.
  c.web.threshold_kind = "percentile"
  c.web.thresholds = dict(qa=10.0, tutorial=10.0, documentation=10.0, other=20.0)
  # Oracle (G-Eval with the packaged SmolLM2) on a 32-file sample, a 2-layer scorer on its labels.
  c.oracle.enabled = True
  c.oracle.sample_size = 32
  c.oracle.max_code_chars = 600
  c.oracle.max_prompt_tokens = 384
  c.oracle.geval_min_digit_mass = 0.05  # a 135M model puts little mass on the rating digits
  c.scorer.enabled = True
  c.scorer.n_layers = 2
  c.scorer.max_tokens = 128
  c.scorer.buckets = (64, 128)
  # A 135M oracle rates the stdlib ~3/10: select the better half of repositories, not a fixed 5.
  c.repo.min_mean_score = 0.0
  c.repo.select_percentile = 50.0
  c.output.tfds = True
  return c


def full() -> ml_collections.ConfigDict:
  c = base()
  # PLACEHOLDERS: replace with real archives (one .tar.gz per repository) or pass --input.
  c.ingest.inputs = ("gs://YOUR_BUCKET/repos/000000.tar.gz", "gs://YOUR_BUCKET/repos/000001.tar.gz")
  c.dedup.near = _minhash(threshold=0.8, num_perm=256, bands=32, rows=8)
  c.dedup.repo = _minhash(threshold=0.9, num_perm=256, bands=64, rows=4)
  c.commits.enabled = True
  c.commits.repos = ("/mnt/git/REPLACE_ME",)  # PLACEHOLDER: git repositories (local paths)
  c.commits.max_commits = 10_000
  c.web.enabled = True
  c.web.inputs = ("/mnt/warc/REPLACE_ME",)  # PLACEHOLDER: WARC files or directories (local paths)
  # The paper's point: the model filters. A judge model of your choice behind an OpenAI-compatible
  # endpoint (vLLM, this project's launch/serve.py) labels a sample; the scorer learns the labels
  # and scores every file and web page. REQUIRED: --config.oracle.base_url=http://HOST:PORT/v1 and
  # --config.oracle.model=NAME (the run is refused before any work without an endpoint).
  c.oracle.enabled = True
  c.oracle.backend = "http"
  c.oracle.base_url = ""  # PLACEHOLDER: the judge's endpoint
  c.oracle.model = "REPLACE_ME"  # PLACEHOLDER: the served model's name
  c.oracle.sample_size = 222_000  # the paper's oracle-labelled training set
  c.oracle.max_code_chars = 8000
  c.oracle.max_prompt_tokens = 4096
  c.oracle.batch_size = 64
  c.oracle.geval_min_digit_mass = 0.1
  c.oracle.concurrency = 32
  c.oracle.planted_pairs = 64  # +-12 points at 95%: enough to tell a judge from chance
  c.scorer.enabled = True
  c.scorer.n_layers = 0  # the whole pretrained backbone (set scorer.backbone to your decoder)
  c.scorer.max_tokens = 1024
  c.scorer.buckets = (256, 512, 1024)
  c.scorer.batch_size = 32
  c.scorer.shard = True  # data-parallel over each worker's local devices
  c.output.num_shards = 256
  return c


VARIANTS = {"tiny": tiny, "full": full}


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  if arg not in VARIANTS:
    raise ValueError(f"unknown curation variant {arg!r}; choose one of {sorted(VARIANTS)}")
  return VARIANTS[arg]()
