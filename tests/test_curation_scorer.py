"""Stage 5, the quality scorer: head and loss maths by hand, the ridge probe against brute force,
the scorer learning a real property of real files, checkpoint save/load, sharded scoring, and the
Beam scoring + low-quality drop.

"Learns" uses a documented synthetic target on real CPython stdlib files: 10 x the share of
comment or docstring lines among a file's first 12 non-blank lines (`comment_share`), a real,
visible property of the text. The backbone is the real SmolLM2-135M-Instruct cut to 2 layers.
A slow test runs stages 4 + 5 end to end in Beam with real G-Eval oracle labels.
"""

import itertools
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seedcoder_jax.curation import oracle
from seedcoder_jax.curation import records as records_lib
from seedcoder_jax.curation import scorer
from seedcoder_jax.input import source_files
from seedcoder_jax.model import scorer as head_lib


def comment_share(text: str) -> float:
  """10 x the share of comment/docstring lines among the first 12 non-blank lines."""
  lines = [l.strip() for l in text.splitlines() if l.strip()][:12]
  if not lines:
    return 0.0
  in_doc, n = False, 0
  for line in lines:
    opens = line.startswith(('"""', "'''"))
    if in_doc or opens or line.startswith(("#", "//", "/*", "*")):
      n += 1
    closes_same_line = opens and len(line) >= 6 and line.endswith(('"""', "'''"))
    if opens and not closes_same_line:
      in_doc = not in_doc
    elif in_doc and not opens and line.endswith(('"""', "'''")):
      in_doc = False
  return 10.0 * n / len(lines)


def stdlib_records(n: int, stride: int = 15):
  it = source_files.iter_source_records(source_files.default_source_dir())
  return [{**r, "id": records_lib.record_id("file", r["repo"], r["path"]),
           "label": comment_share(r["text"])}
          for r in itertools.islice(it, 0, n * stride, stride)]


# ----------------------------------------------------------------------------- maths


def test_config_refuses_unknown_and_bad_values():
  with pytest.raises(ValueError, match=r"unknown ScorerConfig keys \['n_layer'\]"):
    scorer.ScorerConfig.from_dict({"n_layer": 2})
  with pytest.raises(ValueError, match="buckets"):
    scorer.ScorerConfig(max_tokens=128, buckets=(64, 256))
  with pytest.raises(ValueError, match="pooling"):
    scorer.ScorerConfig(pooling="max")
  with pytest.raises(ValueError, match="drop_percentile"):
    scorer.ScorerConfig(drop_percentile=100)
  cfg = scorer.ScorerConfig.from_dict({"buckets": [32, 256], "n_layers": 3})
  assert cfg.buckets == (32, 256) and scorer.ScorerConfig.from_dict(cfg.to_dict()) == cfg


def test_pooling_head_and_loss_hand_computed():
  hidden = jnp.array([[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]],
                      [[-1.0, 0.0], [7.0, 1.0], [9.0, 9.0]]])
  mask = jnp.array([[1, 1, 0], [1, 1, 1]])
  np.testing.assert_allclose(head_lib.pool(hidden, mask, "last"), [[3.0, 4.0], [9.0, 9.0]])
  np.testing.assert_allclose(head_lib.pool(hidden, mask, "mean"), [[2.0, 3.0], [5.0, 10.0 / 3]])
  np.testing.assert_allclose(head_lib.pool(hidden, jnp.zeros((2, 3)), "last"), np.zeros((2, 2)))
  head = {"kernel": jnp.array([0.5, -1.0]), "bias": jnp.array(0.25)}
  pred = head_lib.head_apply(head, jnp.array([[3.0, 4.0], [9.0, 9.0]]))
  np.testing.assert_allclose(pred, [1.5 - 4.0 + 0.25, 4.5 - 9.0 + 0.25])
  # MSE: ((1 - 0)^2 * 1 + (3 - 1)^2 * 3 + (anything) * 0) / (1 + 3) = 13 / 4.
  loss = head_lib.mse_loss(jnp.array([1.0, 3.0, 50.0]), jnp.array([0.0, 1.0, 0.0]),
                           jnp.array([1.0, 3.0, 0.0]))
  assert math.isclose(float(loss), 13.0 / 4.0, rel_tol=1e-6)


def test_ridge_probe_matches_brute_force_leave_one_out():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(12, 5))
  y = x @ np.array([1.0, -2.0, 0.0, 0.5, 0.0]) + 0.3 * rng.normal(size=12) + 4.0
  alphas = (0.01, 0.3, 10.0)
  scale = np.mean(np.linalg.svd(x - x.mean(0), compute_uv=False) ** 2)

  def fit(xs, ys, alpha):  # ridge with an unpenalised intercept, by the normal equations
    xm, ym = xs.mean(0), ys.mean()
    w = np.linalg.solve((xs - xm).T @ (xs - xm) + alpha * scale * np.eye(5), (xs - xm).T @ (ys - ym))
    return w, ym - xm @ w

  def loo(alpha):
    errs = []
    for i in range(12):
      keep = np.arange(12) != i
      w, b = fit(x[keep], y[keep], alpha)  # the penalty scale stays the full data's, as in the fit
      errs.append((x[i] @ w + b - y[i]) ** 2)
    return np.mean(errs)

  best = min(alphas, key=loo)
  head, alpha = head_lib.fit_ridge_head(x, y, alphas)
  w, b = fit(x, y, best)
  assert alpha == best
  np.testing.assert_allclose(head["kernel"], w, rtol=1e-4, atol=1e-5)
  assert math.isclose(float(head["bias"]), b, rel_tol=1e-5)


def test_percentile_drop_hand_computed():
  scored = [{"id": f"file:r/{i}.py", "score": float(i)} for i in range(10)]
  threshold = scorer.percentile_threshold([r["score"] for r in scored], 25.0)
  assert math.isclose(threshold, 2.25)  # numpy's linear interpolation: 0.25 * 9 = 2.25
  kept, rejected = scorer.split_by_threshold(scored, threshold, 25.0)
  assert [r["score"] for r in kept] == [3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]
  assert [(r["id"], r["stage"], r["reason"]) for r in rejected] == [
      (f"file:r/{i}.py", "scorer", "low_quality") for i in range(3)]
  assert scorer.percentile_threshold([1.0, 2.0], 0.0) == float("-inf")


# ----------------------------------------------------------------------------- real backbone


@pytest.fixture(scope="module")
def trained():
  """SmolLM2 cut to 2 layers, trained one epoch on comment_share of 96 stdlib files."""
  cfg = scorer.ScorerConfig(n_layers=2, max_tokens=128, buckets=(64, 128), holdout_fraction=0.3)
  records = stdlib_records(96)
  model, report = scorer.train_scorer(records, cfg, label_key="label")
  return cfg, records, model, report


@pytest.fixture(scope="module")
def saved(trained, tmp_path_factory):
  directory = tmp_path_factory.mktemp("scorer") / "ckpt"
  trained[2].save(directory)
  return directory


def test_truncated_backbone_is_the_pretrained_prefix(trained):
  cfg, _, model, _ = trained
  assert model.model_cfg.n_layers == 2 and model.model_cfg.d_model == 576
  assert model.params["backbone"]["layers"]["attn"]["q_proj"]["kernel"].shape[0] == 2
  assert model.params["backbone"]["embed"]["embedding"].shape == (49152, 576)


def test_scorer_learns_real_property(trained):
  _, records, _, report = trained
  assert report["n_train"] + report["n_heldout"] == len(records) and report["n_heldout"] >= 20
  assert report["steps"] == math.ceil(report["n_train"] / 8)
  # Held-out MAE (0-10 units) beats predicting the training mean by a clear margin.
  assert report["mae"] < 0.85 * report["mae_mean_baseline"], report


def test_checkpoint_roundtrip(trained, saved):
  cfg, records, model, _ = trained
  texts = [r["text"] for r in records[:7]] + [""]
  want = model.score_texts(texts)
  assert want.shape == (8,) and np.all((want >= 0) & (want <= 10))
  meta = json.loads((saved / scorer.CONFIG_FILE).read_text())
  assert meta["tokenizer"] == "gguf:smollm2" and meta["scorer"]["n_layers"] == 2
  loaded = scorer.load_scorer(saved)
  np.testing.assert_allclose(loaded.score_texts(texts), want, atol=1e-5)


@pytest.mark.slow
def test_sharded_scoring_equals_single_device(trained, saved):
  """Backbone placed by sharding.param_shardings, batches by place_batch over 8 CPU devices."""
  cfg, records, model, _ = trained
  texts = [r["text"] for r in records[:7]] + [""]
  want = model.score_texts(texts)
  mesh = scorer.scoring_mesh(scorer.ScorerConfig.from_dict({**cfg.to_dict(), "shard": True}))
  assert mesh.shape["data"] == len(jax.devices()) == 8
  sharded = scorer.load_scorer(saved, mesh=mesh)
  np.testing.assert_allclose(sharded.score_texts(texts), want, atol=1e-4)


def test_beam_scoring_and_low_quality_drop(trained, saved):
  import apache_beam as beam
  from apache_beam.testing.util import assert_that, equal_to
  cfg, records, model, _ = trained
  cfg = scorer.ScorerConfig.from_dict({**cfg.to_dict(), "checkpoint_dir": str(saved),
                                       "drop_percentile": 20.0})
  inputs = [{k: r[k] for k in ("id", "text", "language", "kind", "repo", "path")}
            for r in records[:20]]
  scores = model.score_texts([r["text"] for r in inputs])
  # DropLowQuality cuts at Beam's approximate quantiles (exact on 20 values): the score at rank
  # floor(0.2 * 19) = 3 of the sorted scores; the three below it go.
  threshold = sorted(scores)[int(0.2 * (len(scores) - 1))]
  want_rejected = sorted(r["id"] for r, s in zip(inputs, scores) if s < threshold)
  assert 3 <= len(want_rejected) <= 5
  with beam.Pipeline() as p:
    scored = p | beam.Create(inputs) | scorer.ScoreFiles(cfg)
    kept, rejected = scored | scorer.DropLowQuality(cfg)
    assert_that(rejected | "RejIds" >> beam.Map(lambda r: (r["id"], r["reason"])),
                equal_to([(i, "low_quality") for i in want_rejected]), label="rejected")
    assert_that(kept | "Kept" >> beam.Map(lambda r: (r["id"], round(r["score"], 3),
                                                     r["score_source"])),
                equal_to([(r["id"], round(float(s), 3), "scorer") for r, s in zip(inputs, scores)
                          if r["id"] not in want_rejected]), label="kept")


@pytest.mark.slow
def test_quality_stages_end_to_end_with_real_oracle_labels(tmp_path):
  """Stages 4 + 5 in Beam: G-Eval labels from SmolLM2, scorer trained on them, every file scored,
  the bottom 10% dropped; every input is either kept or rejected with a reason."""
  import apache_beam as beam
  from apache_beam.testing.util import assert_that, equal_to
  files = [{k: r[k] for k in ("id", "text", "language", "kind", "repo", "path")}
           for r in stdlib_records(60, stride=11)]
  ocfg = oracle.OracleConfig(sample_size=32, max_code_chars=600, max_prompt_tokens=384,
                             geval_min_digit_mass=0.05, cache_path=str(tmp_path / "cache.sqlite"))
  scfg = scorer.ScorerConfig(n_layers=2, max_tokens=128, buckets=(64, 128),
                             checkpoint_dir=str(tmp_path / "scorer"))
  with beam.Pipeline() as p:
    out = p | beam.Create(files) | scorer.QualityStages(ocfg, scfg)
    ids = (out["kept"] | "K" >> beam.Map(lambda r: r["id"]),
           out["rejected"] | "R" >> beam.Map(lambda r: r["id"])) | beam.Flatten()
    assert_that(ids, equal_to([f["id"] for f in files]), label="accounting")
    out["report"] | beam.Map(lambda r: (tmp_path / "report.json").write_text(json.dumps(r)))
    out["oracle"] | "O" >> beam.combiners.ToList() | beam.Map(
        lambda rs: (tmp_path / "oracle.json").write_text(json.dumps(oracle.summarize(rs))))
  report = json.loads((tmp_path / "report.json").read_text())
  summary = json.loads((tmp_path / "oracle.json").read_text())
  assert summary["n"] == 32 and summary["labelled"] >= 24, summary
  assert report["n_train"] + report["n_heldout"] == summary["labelled"]
  assert 0.0 <= report["mae"] <= 10.0 and len(oracle.OracleCache(ocfg.cache_path)) == 32
  print(json.dumps({"oracle": summary, "scorer": report}))
