"""Held-out real pages for the web recall classifier, and its precision and recall on them.

Code-related (label 1): pygame 2.6.1's shipped HTML docs (web.default_html_dir()), extracted as
the web stage extracts them, with the ``` fences removed so that the classifier cannot lean on
them; pages of more than 500 characters. Not code-related (label 0): Debian's licence texts
(/usr/share/common-licenses), the first 12,000 characters of each file in 3,000-character chunks,
each distinct text once (GPL is a link to GPL-3): hard negatives for a code classifier, prose
about "source code", "programs" and "compiling". Neither source is in data/web_seeds/, and
`check_disjoint` refuses any page that shares a document with the seeds.

    pages = heldout_pages()
    evaluate(hard_negatives=False, pages=pages)   # {"precision": ..., "recall": ..., "f1": ...}
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Sequence

from seedcoder_jax.curation import web, web_classifier, web_extract

LICENSES = pathlib.Path("/usr/share/common-licenses")
MIN_PAGE_CHARS = 500
CHUNK_CHARS, CHUNKS_PER_LICENCE = 3000, 4
# evaluate()'s options (the recipe stage's): the threshold is the web stage's own default.
DEFAULTS = {"hard_negatives": True, "threshold": web.WebConfig.classifier_threshold, "seed": 0}


@dataclasses.dataclass(frozen=True)
class Page:
  name: str   # "pygame:ref/sprite.html" or "licence:GPL-3@3000"
  text: str
  label: int  # 1 = code-related


def heldout_pages(html_dir: str | pathlib.Path | None = None,
                  licences_dir: str | pathlib.Path = LICENSES) -> list[Page]:
  """The held-out pages, positives first (each kind sorted by path); a FileNotFoundError names
  what is missing."""
  html_dir = pathlib.Path(html_dir) if html_dir is not None else web.default_html_dir()
  licences_dir = pathlib.Path(licences_dir)
  if not licences_dir.is_dir():
    raise FileNotFoundError(f"held-out negatives: no licence texts at {licences_dir} "
                            "(Debian's base-files package ships them)")
  pages = []
  for f in sorted(html_dir.rglob("*.html")):
    text = web_extract.extract(f.read_text(errors="replace")).text.replace("```", "")
    if len(text) > MIN_PAGE_CHARS:
      pages.append(Page(f"pygame:{f.relative_to(html_dir)}", text, 1))
  seen = set()
  for f in sorted(p for p in licences_dir.iterdir() if p.is_file()):
    text = f.read_text(errors="replace")
    for start in range(0, min(len(text), CHUNK_CHARS * CHUNKS_PER_LICENCE), CHUNK_CHARS):
      chunk = text[start:start + CHUNK_CHARS]
      if chunk not in seen:
        seen.add(chunk)
        pages.append(Page(f"licence:{f.name}@{start}", chunk, 0))
  if not any(p.label for p in pages) or all(p.label for p in pages):
    raise FileNotFoundError(f"held-out pages need both kinds: {sum(p.label for p in pages)} code "
                            f"pages from {html_dir}, {sum(1 - p.label for p in pages)} licence "
                            f"chunks from {licences_dir}")
  return pages


def _norm(text: str) -> str:
  return " ".join(text.split()).lower()


def check_disjoint(pages: Sequence[Page], seeds_dir=web_classifier.SEEDS_DIR) -> None:
  """Refuses held-out pages that share a document with any seed file: one text equal to or
  containing the other (whitespace and case aside). The ValueError names both."""
  pages_norm = [(p.name, _norm(p.text)) for p in pages]
  clashes = []
  for name in web_classifier.SEED_FILES:
    for doc in web_classifier.read_seed_docs(pathlib.Path(seeds_dir) / name):
      d = _norm(doc)
      clashes += [f"{page} vs {name}: {doc[:60]!r}" for page, t in pages_norm if d in t or t in d]
  if clashes:
    raise ValueError(f"held-out pages overlap the classifier's seed docs ({len(clashes)}): "
                     + "; ".join(clashes[:5]))


def parse_options(options: dict) -> dict:
  """DEFAULTS updated by `options`; an unknown key or a bad value is a ValueError naming it."""
  unknown = sorted(set(options) - set(DEFAULTS))
  if unknown:
    raise ValueError(f"web_classifier_eval: unknown options {unknown}; known: {sorted(DEFAULTS)}")
  out = {**DEFAULTS, **options}
  if not isinstance(out["hard_negatives"], bool):
    raise ValueError(f"web_classifier_eval.hard_negatives must be true or false, "
                     f"got {out['hard_negatives']!r}")
  t = out["threshold"]
  if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0.0 <= t <= 1.0:
    raise ValueError(f"web_classifier_eval.threshold must be a number in [0, 1], got {t!r}")
  if isinstance(out["seed"], bool) or not isinstance(out["seed"], int) or out["seed"] < 0:
    raise ValueError(f"web_classifier_eval.seed must be an integer >= 0, got {out['seed']!r}")
  return out


scores = web_classifier.scores  # precision, recall, F1 and counts of predictions


def evaluate(hard_negatives: bool = True, threshold: float = DEFAULTS["threshold"], seed: int = 0,
             pages: Sequence[Page] | None = None, seeds_dir=web_classifier.SEEDS_DIR) -> dict:
  """Trains the classifier on the seeds (without hard_negatives.txt unless `hard_negatives`),
  then scores `pages` (default heldout_pages()) at `threshold`."""
  pages = list(pages) if pages is not None else heldout_pages()
  check_disjoint(pages, seeds_dir)
  names = [n for n in web_classifier.SEED_FILES if hard_negatives or n != "hard_negatives.txt"]
  texts, labels = web_classifier.load_seeds(seeds_dir, names)
  clf = web_classifier.train(texts, labels, web_classifier.ClassifierConfig(seed=seed))
  p_N = clf.predict_proba([p.text for p in pages])
  y_N = [p.label for p in pages]
  out = scores(y_N, [float(p) >= threshold for p in p_N])
  false_pos = [p.name for p, q in zip(pages, p_N) if not p.label and q >= threshold]
  return {**out, "n_pos": sum(y_N), "n_neg": len(y_N) - sum(y_N), "threshold": float(threshold),
          "hard_negatives": hard_negatives, "seed": seed, "seed_files": names,
          "n_seed_docs": len(texts), "false_positives": false_pos}
