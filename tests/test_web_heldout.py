"""The web recall classifier on held-out pages (curation/web_heldout.py) and its recipe stage,
`web_classifier_eval`, which configs/ablations.py:web_hard_negatives runs with and without the
hard-negative seeds."""

import json

import pytest

from seedcoder_jax import recipe
from seedcoder_jax.curation import web_classifier, web_heldout
from seedcoder_jax.curation.web_heldout import Page


def test_scores_by_hand():
  # labels 1 1 1 0 0, predicted 1 0 1 1 0: tp 2, fp 1, fn 1.
  out = web_heldout.scores([1, 1, 1, 0, 0], [True, False, True, True, False])
  assert (out["tp"], out["fp"], out["fn"]) == (2, 1, 1)
  assert out["precision"] == pytest.approx(2 / 3) and out["recall"] == pytest.approx(2 / 3)
  assert out["f1"] == pytest.approx(2 / 3)  # 2PR / (P + R) with P = R
  out = web_heldout.scores([1, 1, 0, 0], [True, True, True, True])
  assert (out["precision"], out["recall"], out["f1"]) == (0.5, 1.0, pytest.approx(2 / 3))
  # Nothing predicted positive: precision, recall and F1 are 0, not a division by zero.
  assert web_heldout.scores([1, 0], [False, False])["f1"] == 0.0


@pytest.mark.parametrize("options, message", [
    ({"hard_negative": False}, r"unknown options \['hard_negative'\]"),
    ({"hard_negatives": "no"}, "hard_negatives must be true or false"),
    ({"threshold": 1.5}, r"threshold must be a number in \[0, 1\]"),
    ({"threshold": True}, "threshold must be"),
    ({"seed": -1}, "seed must be an integer"),
    ({"seed": 0.5}, "seed must be an integer")])
def test_stage_refuses_bad_options_before_any_work(tmp_path, options, message):
  with pytest.raises(ValueError, match=message):
    recipe.web_classifier_eval(options, tmp_path, tmp_path)


def test_pages_overlapping_the_seeds_are_refused():
  seed_doc = web_classifier.read_seed_docs(web_classifier.SEEDS_DIR / "hard_negatives.txt")[0]
  pages = [Page("pygame:ok.html", "def f(x):\n  return x + 1\n" * 10, 1),
           Page("licence:leaky@0", "Preamble.\n" + seed_doc.replace(" ", "\n  ") + "\nEnd.", 0)]
  with pytest.raises(ValueError, match=r"licence:leaky@0 vs hard_negatives.txt: 'The Burmese"):
    web_heldout.check_disjoint(pages)
  web_heldout.check_disjoint(pages[:1])  # no overlap: no error


def test_heldout_pages_need_the_licence_texts(tmp_path):
  (tmp_path / "a.html").write_text("<html><body><p>x = 1</p></body></html>")
  with pytest.raises(FileNotFoundError, match="no licence texts at /no/such/dir"):
    web_heldout.heldout_pages(tmp_path, "/no/such/dir")
  (tmp_path / "licences").mkdir()
  (tmp_path / "licences" / "L").write_text("Permission is granted to copy this text.")
  with pytest.raises(FileNotFoundError, match="need both kinds: 0 code pages"):
    web_heldout.heldout_pages(tmp_path, tmp_path / "licences")  # a.html is under 500 characters


def _real_pages():
  try:
    return web_heldout.heldout_pages()
  except FileNotFoundError as e:
    pytest.skip(f"prerequisite missing: {e}")


def test_hard_negatives_matter_stage_both_arms(tmp_path):
  """The recipe stage as the ablation's two arms run it, on the real held-out pages (~7 s):
  without the hard-negative seeds the classifier takes licence texts (which talk about "source
  code", "programs", "compiling") for code pages. Measured (seed 0, threshold 0.5): precision
  1.000 with them, 0.615 without (47 of 50 licence chunks recalled); recall 0.737 vs 0.987."""
  pages = _real_pages()
  assert (sum(p.label for p in pages), sum(1 - p.label for p in pages)) == (76, 50)
  web_heldout.check_disjoint(pages)
  out = {}
  for arm, hard in (("with", True), ("without", False)):
    options = {"web_classifier_eval": {"hard_negatives": hard, "threshold": 0.5, "seed": 0}}
    out[arm] = recipe.run(["web_classifier_eval"], options, tmp_path / arm)["web_classifier_eval"]
    done = json.loads((tmp_path / arm / "web_classifier_eval" / recipe.DONE).read_text())
    assert done["precision"] == out[arm]["precision"]
  w, wo = out["with"], out["without"]
  assert (w["n_pos"], w["n_neg"], w["threshold"]) == (76, 50, 0.5)
  assert w["seed_files"] == list(web_classifier.SEED_FILES)
  assert wo["seed_files"] == ["code.txt", "noncode.txt"]
  assert w["precision"] >= 0.95 and wo["precision"] < 0.8, (w, wo)
  assert w["precision"] > wo["precision"] and wo["recall"] > w["recall"]
  for s in (w, wo):
    assert s["tp"] + s["fn"] == 76 and len(s["false_positives"]) == s["fp"]
    assert s["f1"] == pytest.approx(2 * s["precision"] * s["recall"]
                                    / (s["precision"] + s["recall"]))
