"""Stage 8: code-related web pages from WARC files or HTML files, recalled, categorised and rated.

Inputs (`WebConfig.inputs`; empty = the embedded default, `default_html_dir()`): WARC files
(`.warc`, `.warc.gz`), HTML files (`.html`, `.htm`, `.xhtml`) and directories, searched
recursively for both. Every page is one input and ends as a record (kind "web", id
"web:<url-or-path>#<n>", n = the record's index in its WARC, 0 for an HTML file) or as one
rejection of stage "web":

- "malformed_warc_record": a response without a target URI or with an unparsable HTTP head, a
  record shorter than its Content-Length, or bytes that are no WARC record at all (or a .gz cut
  short); warcio cannot resynchronise after the latter, so the rest of that file counts as that
  one input (the detail says so);
- "not_html": a response/resource whose Content-Type is not HTML, or an input file that is
  neither HTML nor WARC (named explicitly in `inputs`; inside directories only HTML and WARC files
  are read). warcinfo, request, metadata and revisit records are not pages and not inputs;
- "no_text": fewer than `min_chars` characters of text after extraction (web_extract.py: code
  blocks fenced, navigation/scripts/styles dropped);
- "not_code_related": neither recall path fires. Recall = the paper's two paths: the tag rule
  (at least one `<pre>` or `min_code_tags` `<code>` elements) or the fastText-style classifier
  (web_classifier.py, trained on data/web_seeds/ with hard negatives) at >= `classifier_threshold`.
  The record's `recall` field says which ("rule", "classifier", or "rule+classifier");
- "exact_duplicate", "near_duplicate": the curation pipeline deduplicates the kept pages among
  themselves (curation/dedup.py's Beam dedup with stage "web": SHA-256 of the normalised text,
  then MinHash LSH with the files' `dedup.near` settings); the kept copy is the smallest id;
- "below_threshold": the page's quality rating (0-10) is under its category's threshold
  (`thresholds`); "oracle_failed": a `rate` returned no score (None or NaN) for it.

Where the rating comes from. In the curation pipeline (curation/pipeline.py) pages are rated in
the score pass by the same model-centric rating as code files: the quality scorer trained on the
oracle's labels (or the heuristic score when the oracle/scorer are off), then `RateScoredPages`
applies the per-category thresholds. `threshold_kind` says what a threshold means: "score" (the
paper's: a minimum 0-10 rating) or "percentile" (the bottom p % of each category's pages by score
is dropped: for a scorer whose absolute scale means little, e.g. the tiny variant's 135M oracle,
whose ratings sit near 3/10). Used alone, `WebRecords(cfg, rate)` / `iter_web_records` rate pages
with `rate(texts) -> scores` (e.g. an oracle) and apply score thresholds to `oracle_score`;
without a `rate` they keep pages unrated (no `oracle_score` field).

Categories (`categorize`): "qa", "tutorial", "documentation", "other", read from the URL or path,
the title and a few textual cues; each has its own rating threshold, as in the paper.

The embedded default is the HTML documentation that the `pygame` wheel ships (pygame==2.6.1:
78 pages under pygame/docs/generated/: tutorials, the reference, the C API; human-written and
rich in Python and C code), found through importlib without importing pygame.
"""

from __future__ import annotations

import dataclasses
import gzip
import importlib.util
import math
import os
import pathlib
import re
import tempfile
import zlib
from typing import Any, Callable, Iterable, Iterator, Sequence

import apache_beam as beam

from seedcoder_jax.curation import records, web_classifier, web_extract

STAGE = "web"
CATEGORIES = ("qa", "tutorial", "documentation", "other")
THRESHOLD_KINDS = ("score", "percentile")
HTML_SUFFIXES = (".html", ".htm", ".xhtml")
WARC_SUFFIXES = (".warc", ".warc.gz", ".arc.gz")
DEFAULT_PACKAGE = "pygame"  # pinned: pygame==2.6.1 (its wheel ships docs/generated/**/*.html)

Rater = Callable[[list[str]], Sequence[Any]]

_CATEGORY_RULES = (
    ("qa", re.compile(r"stackoverflow|stackexchange|/questions?/|forum|/answers?/|\bfaq\b|q&a",
                      re.I), re.compile(r"\b(asked|answered|accepted answer|votes?)\b", re.I)),
    ("tutorial", re.compile(r"tutorial|/tut/|guide|how-?to|getting[-_ ]started|lesson|intro",
                            re.I), re.compile(r"\b(step \d|in this tutorial|let's)\b", re.I)),
    ("documentation", re.compile(r"/api/|/ref/|reference|/docs?/|documentation|manual|/man/",
                                 re.I), re.compile(r"\b(parameters|returns|raises)\b", re.I)),
)


def default_html_dir() -> pathlib.Path:
  """The embedded default input: pygame's shipped HTML docs (not imported: no SDL start-up)."""
  spec = importlib.util.find_spec(DEFAULT_PACKAGE)
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError("the web stage's default input needs the pygame wheel's HTML docs: "
                            "pip install pygame==2.6.1 (or set web.inputs)")
  d = pathlib.Path(list(spec.submodule_search_locations)[0]) / "docs" / "generated"
  if not d.is_dir():
    raise FileNotFoundError(f"pygame is installed but ships no HTML docs at {d} "
                            "(pin pygame==2.6.1, or set web.inputs)")
  return d


@dataclasses.dataclass(frozen=True)
class WebConfig:
  """Stage 8 settings.

  Attributes:
    inputs: WARC/HTML files and directories; empty = `default_html_dir()`.
    min_chars: pages with less extracted text are rejected "no_text".
    min_code_tags: the tag rule fires on any <pre>, or on this many <code> elements.
    use_classifier: recall by the classifier too (else the tag rule alone).
    classifier_threshold: P(code-related) at or above which the classifier recalls a page.
    seeds_dir: labelled seed files for the classifier ("" = data/web_seeds/ of this project).
    thresholds: category -> threshold; every category of CATEGORIES needed. With threshold_kind
      "score", the minimum rating (0-10) kept; with "percentile", the percentile [0, 100) of the
      category's page scores below which pages are dropped (pipeline only: RateScoredPages).
    threshold_kind: "score" | "percentile" (see the module docstring).
    max_rate_chars: the text given to the rater is cut to this many characters.
    rate_batch_size: pages per `rate` call.
    model_path: where WebRecords writes the trained classifier for its workers to load, any Beam
      filesystem path ("" = DIR/stages/filter/web_classifier.npz in the curation pipeline; a
      temporary local file when WebRecords is used alone, fine on an in-process runner).
  """
  inputs: tuple[str, ...] = ()
  min_chars: int = 200
  min_code_tags: int = 3
  use_classifier: bool = True
  classifier_threshold: float = 0.5
  seeds_dir: str = ""
  thresholds: tuple[tuple[str, float], ...] = (("qa", 5.0), ("tutorial", 4.0),
                                              ("documentation", 4.0), ("other", 6.0))
  threshold_kind: str = "score"
  max_rate_chars: int = 6000
  rate_batch_size: int = 16
  model_path: str = ""

  def __post_init__(self):
    object.__setattr__(self, "inputs", tuple(str(i) for i in self.inputs))
    t = self.thresholds
    t = t.to_dict() if hasattr(t, "to_dict") else t  # an ml_collections ConfigDict group
    t = tuple(sorted(dict(t).items()))
    missing = sorted(set(CATEGORIES) - {c for c, _ in t})
    unknown = sorted({c for c, _ in t} - set(CATEGORIES))
    if missing or unknown:
      raise ValueError(f"WebConfig.thresholds: missing categories {missing}, unknown {unknown} "
                       f"(categories: {CATEGORIES})")
    object.__setattr__(self, "thresholds", tuple((c, float(v)) for c, v in t))
    if self.threshold_kind not in THRESHOLD_KINDS:
      raise ValueError(f"WebConfig.threshold_kind={self.threshold_kind!r} is not one of "
                       f"{THRESHOLD_KINDS}")
    hi = 10.0 if self.threshold_kind == "score" else 100.0
    bad = {c: v for c, v in self.thresholds if not (0.0 <= v <= hi and
                                                    (v < hi or self.threshold_kind == "score"))}
    if bad:
      raise ValueError(f"WebConfig.thresholds {bad}: a {self.threshold_kind} threshold must be in "
                       f"[0, {hi:g}{']' if self.threshold_kind == 'score' else ')'}")
    for name in ("min_chars", "min_code_tags", "max_rate_chars", "rate_batch_size"):
      v = getattr(self, name)
      if not isinstance(v, int) or isinstance(v, bool) or v < (1 if name == "rate_batch_size" else 0):
        raise ValueError(f"WebConfig.{name} must be a non-negative int (batch >= 1), got {v!r}")
    if not 0.0 <= self.classifier_threshold <= 1.0:
      raise ValueError(f"WebConfig.classifier_threshold must be in [0, 1], "
                       f"got {self.classifier_threshold}")

  @classmethod
  def from_dict(cls, d: dict | Any) -> "WebConfig":
    """From a dict or ConfigDict; unknown keys are refused, naming them."""
    d = dict(d.to_dict() if hasattr(d, "to_dict") else d)
    unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
      raise ValueError(f"unknown web config key(s): {', '.join(unknown)} "
                       f"(known: {', '.join(f.name for f in dataclasses.fields(cls))})")
    if isinstance(d.get("inputs"), (str, os.PathLike)):
      d["inputs"] = (d["inputs"],)
    return cls(**d)

  def threshold(self, category: str) -> float:
    return dict(self.thresholds)[category]

  def input_paths(self) -> tuple[str, ...]:
    return self.inputs or (str(default_html_dir()),)


def check_inputs(cfg: WebConfig) -> None:
  """Refuses missing input paths before any work."""
  missing = [p for p in cfg.input_paths() if not os.path.exists(p)]
  if missing:
    raise FileNotFoundError(f"web.inputs: path(s) not found: {', '.join(missing)}")


def input_files(paths: Iterable[str]) -> list[tuple[str, str]]:
  """(file path, display name) of every file to read, sorted within each directory.

  The display name (a page's `path` when it has no URL) is relative to the input's parent, so it
  does not depend on where the input lies on this machine: "generated/tut/MoveIt.html".
  """
  out = []
  for p in paths:
    p = pathlib.Path(p)
    if p.is_dir():
      for f in sorted(p.rglob("*")):
        if f.is_file() and f.name.lower().endswith(HTML_SUFFIXES + WARC_SUFFIXES):
          out.append((str(f), str(f.relative_to(p.parent))))
    else:
      out.append((str(p), p.name))
  return out


def read_pages(path: str, name: str) -> Iterator[dict]:
  """Pages ({"id", "path", "url", "html"}) and rejections of one input file."""
  low = path.lower()
  if low.endswith(HTML_SUFFIXES):
    rid = f"web:{name}#0"
    try:
      data = pathlib.Path(path).read_bytes()
    except OSError as e:
      yield records.reject(rid, STAGE, "unreadable", f"{path}: {e}")
      return
    yield {"id": rid, "path": name, "url": "", "html": web_extract.decode_html(data)}
  elif low.endswith(WARC_SUFFIXES):
    yield from _read_warc(path, name)
  else:
    yield records.reject(f"web:{name}#0", STAGE, "not_html", f"{path}: neither HTML nor WARC")


def _gzip_complete(path: str) -> bool:
  """Whether every gzip member of `path` is complete (one more pass of C decompression)."""
  try:
    with gzip.open(path, "rb") as f:
      while f.read(1 << 20):
        pass
  except (EOFError, OSError, zlib.error):
    return False
  return True


def _read_warc(path: str, name: str) -> Iterator[dict]:
  from warcio.archiveiterator import ArchiveIterator
  from warcio.exceptions import ArchiveLoadFailed
  low = path.lower()
  n = 0
  with open(path, "rb") as f:
    it = iter(ArchiveIterator(f))
    while True:
      try:
        rec = next(it)
      except StopIteration:
        # warcio ends quietly where a .gz stops early: check the gzip stream's end marker.
        if low.endswith(".gz") and not _gzip_complete(path):
          yield records.reject(f"web:{name}#{n}", STAGE, "malformed_warc_record",
                               f"{path}: gzip stream truncated after record {n}")
        return
      except (ArchiveLoadFailed, ValueError, EOFError, OSError, zlib.error) as e:
        yield records.reject(f"web:{name}#{n}", STAGE, "malformed_warc_record",
                             f"{path} record {n}: {type(e).__name__}: {str(e)[:200]} "
                             "(the rest of the file cannot be read)")
        return
      if rec.rec_type not in ("response", "resource"):
        continue  # warcinfo, request, metadata, revisit: not pages
      url = rec.rec_headers.get_header("WARC-Target-URI") or ""
      rid = f"web:{url or name}#{n}"
      n += 1
      if rec.rec_type == "response":
        h = rec.http_headers
        if not url or h is None or not (h.protocol or "").upper().startswith("HTTP/"):
          yield records.reject(rid, STAGE, "malformed_warc_record",
                               f"{path}: response without a target URI or an HTTP head")
          continue
        ctype = h.get_header("Content-Type") or ""
      else:
        ctype = rec.rec_headers.get_header("Content-Type") or ""
      if "html" not in ctype.lower():
        yield records.reject(rid, STAGE, "not_html", f"Content-Type {ctype!r}")
        continue
      try:
        data = rec.content_stream().read()
      except Exception as e:  # a truncated or corrupt payload (chunked/gzip errors)
        yield records.reject(rid, STAGE, "malformed_warc_record",
                             f"{path}: payload unreadable: {type(e).__name__}: {e}")
        continue
      if getattr(rec.raw_stream, "limit", 0):  # Content-Length promised more than the file has
        yield records.reject(rid, STAGE, "malformed_warc_record",
                             f"{path}: record truncated ({rec.raw_stream.limit} bytes missing)")
        continue
      yield {"id": rid, "path": url or name, "url": url, "html": web_extract.decode_html(data, ctype)}


def categorize(location: str, title: str, text: str) -> str:
  """"qa" | "tutorial" | "documentation" | "other", from URL/path and title first, then text."""
  for category, where, _ in _CATEGORY_RULES:
    if where.search(location) or where.search(title):
      return category
  head = text[:3000]
  for category, _, cue in _CATEGORY_RULES:
    if len(cue.findall(head)) >= 2:
      return category
  return "other"


def page_language(langs: Sequence[str]) -> str:
  """The most frequent declared code-block language ("" when none is declared)."""
  langs = [l for l in langs if l]
  return max(sorted(set(langs)), key=langs.count) if langs else ""


def process_page(page: dict, cfg: WebConfig, classifier=None) -> dict:
  """Page -> record (not yet rated) or rejection: extraction, no_text, recall, category."""
  try:
    ex = web_extract.extract(page["html"])
  except (ValueError, AssertionError, RecursionError) as e:  # html.parser on hostile markup
    return records.reject(page["id"], STAGE, "unparsable_html", f"{type(e).__name__}: {e}")
  if len(ex.text.strip()) < cfg.min_chars:
    return records.reject(page["id"], STAGE, "no_text", f"{len(ex.text.strip())} characters")
  rule = ex.n_pre > 0 or ex.n_code >= max(cfg.min_code_tags, 1)
  p_code = None
  if classifier is not None and cfg.use_classifier:
    p_code = float(classifier.predict_proba([ex.text])[0])
  by_clf = p_code is not None and p_code >= cfg.classifier_threshold
  if not (rule or by_clf):
    return records.reject(page["id"], STAGE, "not_code_related",
                          f"no <pre>, {ex.n_code} <code>, classifier p={p_code}")
  record = records.make_record(
      kind="web", id=page["id"], text=ex.text, path=page["path"],
      language=page_language(ex.code_languages), url=page["url"], title=ex.title,
      category=categorize(page["url"] or page["path"], ex.title, ex.text),
      recall="+".join(n for n, on in (("rule", rule), ("classifier", by_clf)) if on),
      n_code_blocks=ex.n_pre)
  if p_code is not None:
    record["code_prob"] = p_code
  return record


def rate_pages(pages: list[dict], rate: Rater | None, cfg: WebConfig) -> list[dict]:
  """Records rated by `rate` (0-10) and kept, or rejections (below_threshold, oracle_failed)."""
  if rate is None or not pages:
    return list(pages)
  return filter_rated(pages, list(rate([p["text"][:cfg.max_rate_chars] for p in pages])), cfg)


def filter_rated(pages: list[dict], scores: Sequence[Any], cfg: WebConfig) -> list[dict]:
  """Pages given their ratings (0-10 or None) -> kept (with `oracle_score`) or rejections.

  The pure core of rate_pages, for a pipeline that rates pages elsewhere (e.g. in the driver's
  oracle step beside the files) and applies the per-category thresholds afterwards.
  """
  if cfg.threshold_kind != "score":
    raise ValueError(f"web: rating pages with `rate` needs threshold_kind='score' (0-10 "
                     f"minimums), not {cfg.threshold_kind!r}: percentile thresholds apply to a "
                     "whole collection (RateScoredPages)")
  if len(scores) != len(pages):
    raise ValueError(f"web: {len(scores)} scores for {len(pages)} pages"
                     + (f" (first page {pages[0]['id']})" if pages else ""))
  out = []
  for page, s in zip(pages, scores):
    if s is None or (isinstance(s, float) and math.isnan(s)):
      out.append(records.reject(page, STAGE, "oracle_failed", "no score"))
    elif float(s) < cfg.threshold(page["category"]):
      out.append(records.reject(page, STAGE, "below_threshold",
                                f"{page['category']}: {float(s):.2f} < {cfg.threshold(page['category'])}"))
    else:
      out.append(dict(page, oracle_score=float(s)))
  return out


def judge_scored(page: dict, cfg: WebConfig, cutoffs: dict[str, float] | None = None) -> dict:
  """A scored web record (`score`, 0-10) -> itself, or a "below_threshold" rejection.

  cutoffs: category -> the minimum score kept, for threshold_kind "percentile" (the category's
  score at its percentile, computed over all pages by RateScoredPages); a category missing from
  it keeps everything. With threshold_kind "score" the config's thresholds are the cutoffs.
  """
  category = page["category"]
  if cfg.threshold_kind == "score":
    cut, how = cfg.threshold(category), "threshold"
  else:
    cut = (cutoffs or {}).get(category, float("-inf"))
    how = f"p{cfg.threshold(category):g} of {category} pages"
  s = float(page["score"])
  if s < cut:
    return records.reject(page, STAGE, "below_threshold",
                          f"{category}: {page.get('score_source', 'score')} {s:.3f} < {how} "
                          f"{cut:.3f}")
  return page


class RateScoredPages(beam.PTransform):
  """Scored web records (each with `score` 0-10 and `category`) -> {"kept", "rejected"}: the
  per-category thresholds applied (judge_scored). For threshold_kind "percentile", each
  category's cutoff comes from Beam's approximate quantiles per category (a side input of four
  numbers: no worker or driver holds the pages)."""

  def __init__(self, cfg: WebConfig):
    super().__init__()
    self.cfg = cfg

  def expand(self, pages):
    from apache_beam.transforms.stats import ApproximateQuantiles
    cfg = self.cfg
    if cfg.threshold_kind == "score":
      out = pages | "Judge" >> beam.Map(lambda r: _split(judge_scored(r, cfg))).with_outputs(
          records.REJECTED, main="kept")
    else:
      pct = dict(cfg.thresholds)

      def cutoff(category, qs):
        qs = list(qs)
        return category, float(qs[int(round(pct[category] * 10))]) if qs else float("-inf")

      cutoffs = (pages | "CategoryScores" >> beam.Map(lambda r: (r["category"], float(r["score"])))
                 | "Quantiles" >> ApproximateQuantiles.PerKey(1001)
                 | "Cutoffs" >> beam.MapTuple(cutoff))
      out = pages | "Judge" >> beam.Map(
          lambda r, cuts: _split(judge_scored(r, cfg, cuts)),
          beam.pvalue.AsDict(cutoffs)).with_outputs(records.REJECTED, main="kept")
    return {"kept": out.kept, "rejected": out[records.REJECTED]}


def build_classifier(cfg: WebConfig) -> web_classifier.CodePageClassifier | None:
  """The recall classifier trained on the seed files (None when cfg.use_classifier is off)."""
  if not cfg.use_classifier:
    return None
  texts, labels = web_classifier.load_seeds(cfg.seeds_dir or web_classifier.SEEDS_DIR)
  return web_classifier.train(texts, labels)


def iter_web_records(cfg: WebConfig, rate: Rater | None = None, classifier=None
                     ) -> Iterator[tuple[bool, dict]]:
  """(kept, record-or-rejection) for every page of every input, without Beam."""
  check_inputs(cfg)
  if classifier is None:
    classifier = build_classifier(cfg)
  pending = []
  for path, name in input_files(cfg.input_paths()):
    for page in read_pages(path, name):
      r = page if "stage" in page else process_page(page, cfg, classifier)
      if "stage" in r:
        yield False, r
        continue
      pending.append(r)
      if len(pending) == cfg.rate_batch_size:
        yield from ((("stage" not in x), x) for x in rate_pages(pending, rate, cfg))
        pending = []
  yield from ((("stage" not in x), x) for x in rate_pages(pending, rate, cfg))


def _split(r: dict):
  return beam.pvalue.TaggedOutput(records.REJECTED, r) if "stage" in r else r


class _ProcessPage(beam.DoFn):
  """process_page with the classifier loaded once per worker from a file: pickling its 4 MB of
  parameters into the DoFn made Beam's graph serialisation take ~20 s on this machine."""

  def __init__(self, cfg: WebConfig, model_path: str | None):
    self.cfg, self.model_path = cfg, model_path

  def setup(self):
    self.clf = (web_classifier.CodePageClassifier.load(self.model_path)
                if self.model_path else None)

  def process(self, page):
    yield _split(process_page(page, self.cfg, self.clf))


class WebRecords(beam.PTransform):
  """PBegin -> {"kept": web records, "rejected": rejections}; inputs come from the config.

  `rate` (picklable, list[str] -> scores on 0-10 or None) is called once per batch of
  `rate_batch_size` pages; the classifier is trained here, in the driver, before the pipeline
  runs, unless one is given, and saved to `cfg.model_path` for the workers. Missing input paths
  are refused at construction.
  """

  def __init__(self, cfg: WebConfig, rate: Rater | None = None, classifier=None):
    super().__init__()
    check_inputs(cfg)
    self.cfg, self.rate = cfg, rate
    clf = classifier if classifier is not None else build_classifier(cfg)
    self.model_path = None
    if clf is not None and cfg.use_classifier:
      self.model_path = cfg.model_path or os.path.join(
          tempfile.mkdtemp(prefix="web_classifier_"), "classifier.npz")
      clf.save(self.model_path)

  def expand(self, pbegin):
    cfg, rate = self.cfg, self.rate
    pages = (pbegin
             | "Files" >> beam.Create(input_files(cfg.input_paths()))
             | "Read" >> beam.FlatMapTuple(lambda path, name: (_split(p) for p in read_pages(path, name)))
             .with_outputs(records.REJECTED, main="pages"))
    processed = (pages.pages
                 | "Spread" >> beam.Reshuffle()
                 | "Extract" >> beam.ParDo(_ProcessPage(cfg, self.model_path))
                 .with_outputs(records.REJECTED, main="kept"))
    rated = (processed.kept
             | "Batch" >> beam.BatchElements(min_batch_size=1, max_batch_size=cfg.rate_batch_size)
             | "Rate" >> beam.FlatMap(lambda batch: (_split(r) for r in rate_pages(batch, rate, cfg)))
             .with_outputs(records.REJECTED, main="kept"))
    rejected = ((pages[records.REJECTED], processed[records.REJECTED], rated[records.REJECTED])
                | "AllRejected" >> beam.Flatten())
    return {"kept": rated.kept, "rejected": rejected}
