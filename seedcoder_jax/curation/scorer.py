"""Stage 5: the quality scorer: train on oracle labels, score every file, drop the bottom percentile.

A pretrained decoder (by default SmolLM2-135M-Instruct cut to its first `n_layers` blocks) plus a
linear head on the last non-pad token's hidden state (seedcoder_jax/model/scorer.py), fine-tuned
for one epoch with MSE on oracle scores / 10 (optax AdamW; the head learns faster than the
backbone). Held-out MAE is reported in 0-10 units beside the MAE of predicting the training mean.

Scoring is batched and jitted at fixed shapes: each batch is padded to `batch_size` rows and to
the smallest length bucket that holds its longest text (texts are cut to `max_tokens`), so at most
len(buckets) programs compile. With `shard=True` the backbone is placed with
sharding.param_shardings over a data-parallel mesh of all local devices and batches with
place_batch. In Beam, `ScoreDoFn` loads the scorer once per worker.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import shutil
import tempfile
import time
from typing import Any, Sequence

import numpy as np

from seedcoder_jax.curation import records as records_lib

STAGE = "scorer"
REASON_LOW = "low_quality"
CONFIG_FILE = "scorer_config.json"
HEAD_FILE = "head.npz"
BACKBONE_DIR = "backbone"


@dataclasses.dataclass(frozen=True)
class ScorerConfig:
  """The scorer (configs/curation.py's `scorer` group has the same keys).

  backbone: model spec of the pretrained decoder ("gguf:smollm2", "gguf:/x.gguf", "orbax:/dir").
  n_layers: keep the first n blocks (0 = all): a cheap scorer for the embedded run.
  max_tokens / buckets: texts cut to max_tokens; scoring pads to the smallest bucket that fits.
  pooling: "last" (last non-pad token) or "mean" (see model/scorer.py).
  holdout_fraction: share of labels held out for the reported MAE (chosen by a hash of the id).
  drop_percentile: files scoring below this percentile of all scores are dropped (low_quality).
  checkpoint_dir: where training writes and scoring reads the scorer ("" = the pipeline decides).
  shard: score on a data-parallel mesh over all local devices.
  probe_first: fit the head in closed form (ridge, leave-one-out alpha) on frozen features before
    fine-tuning (LP-FT); then one epoch of AdamW at small learning rates refines backbone + head.
  """

  backbone: str = "gguf:smollm2"
  n_layers: int = 4
  max_tokens: int = 256
  buckets: tuple[int, ...] = (64, 128, 256)
  pooling: str = "mean"
  batch_size: int = 8
  learning_rate: float = 1e-5
  head_learning_rate: float = 1e-5
  weight_decay: float = 0.01
  epochs: int = 1
  probe_first: bool = True
  holdout_fraction: float = 0.25
  seed: int = 0
  drop_percentile: float = 10.0
  compute_dtype: str = "float32"
  checkpoint_dir: str = ""
  shard: bool = False

  def __post_init__(self):
    object.__setattr__(self, "buckets", tuple(int(b) for b in self.buckets))
    errors = []
    if self.pooling not in ("last", "mean"):
      errors.append(f"pooling={self.pooling!r} is not 'last' or 'mean'")
    if self.n_layers < 0 or self.max_tokens <= 0 or self.batch_size <= 0 or self.epochs <= 0:
      errors.append(f"n_layers={self.n_layers} >= 0, max_tokens={self.max_tokens}, "
                    f"batch_size={self.batch_size} and epochs={self.epochs} > 0 required")
    if not self.buckets or list(self.buckets) != sorted(set(self.buckets)) or \
        self.buckets[-1] != self.max_tokens:
      errors.append(f"buckets={self.buckets} must be increasing and end at max_tokens="
                    f"{self.max_tokens}")
    if not 0.0 < self.holdout_fraction < 1.0:
      errors.append(f"holdout_fraction={self.holdout_fraction} must be in (0, 1)")
    if not 0.0 <= self.drop_percentile < 100.0:
      errors.append(f"drop_percentile={self.drop_percentile} must be in [0, 100)")
    if self.compute_dtype not in ("float32", "bfloat16"):
      errors.append(f"compute_dtype={self.compute_dtype!r} is not float32 or bfloat16")
    if errors:
      raise ValueError("invalid ScorerConfig: " + "; ".join(errors))

  @classmethod
  def from_dict(cls, fields: dict, where: str = "scorer config") -> "ScorerConfig":
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(fields) - set(known))
    if unknown:
      raise ValueError(f"{where}: unknown ScorerConfig keys {unknown}; known: {known}")
    return cls(**dict(fields))

  def to_dict(self) -> dict:
    d = dataclasses.asdict(self)
    d["buckets"] = list(self.buckets)
    return d


# ----------------------------------------------------------------------------- model


def load_backbone(cfg: ScorerConfig):
  """(model_cfg, params, tokenizer) of the pretrained decoder, cut to cfg.n_layers blocks."""
  from seedcoder_jax.curation import oracle_backends
  from seedcoder_jax.model import scorer as head_lib
  mcfg, params, tok, _ = oracle_backends.load_local_model(cfg.backbone)
  if cfg.n_layers:
    mcfg, params = head_lib.truncate_layers(mcfg, params, cfg.n_layers)
  return mcfg.replace(compute_dtype=cfg.compute_dtype), params, tok


class Scorer:
  """A trained (or initialised) scorer: backbone + head, its tokenizer, jitted batched scoring."""

  def __init__(self, cfg: ScorerConfig, model_cfg, params: dict, tokenizer, *, mesh=None):
    import jax
    from seedcoder_jax import model as model_lib
    from seedcoder_jax import sharding as sharding_lib
    from seedcoder_jax.model import scorer as head_lib
    self.cfg, self.model_cfg, self.tokenizer, self.mesh = cfg, model_cfg, tokenizer, mesh
    if mesh is not None:
      sharding_lib.check_batch_fits(cfg.batch_size, mesh)
      shardings = {"backbone": sharding_lib.param_shardings(model_cfg, mesh),
                   "head": jax.tree.map(lambda _: jax.sharding.NamedSharding(
                       mesh, jax.sharding.PartitionSpec()), params["head"])}
      params = jax.device_put(params, shardings)
    self.params = params
    self._predict = jax.jit(lambda p, t, m: head_lib.predict(model_cfg, p, t, m, pooling=cfg.pooling))
    self._pool = jax.jit(lambda p, t, m: head_lib.pool(
        model_lib.hidden_states(model_cfg, p, t, segment_ids=m), m, cfg.pooling))

  def encode(self, texts: Sequence[str]) -> list[list[int]]:
    # Cut the text before tokenizing: a 1 MB file must not cost a 1 MB tokenization.
    return [self.tokenizer.encode(t[:self.cfg.max_tokens * 12])[:self.cfg.max_tokens] or [0]
            for t in texts]

  def batches(self, ids: Sequence[list[int]]):
    """(rows, tokens [batch, bucket], mask) per fixed-shape batch, rows grouped by bucket."""
    buckets = self.cfg.buckets
    by_bucket: dict[int, list[int]] = {}
    for i, seq in enumerate(ids):
      b = next(b for b in buckets if b >= len(seq))
      by_bucket.setdefault(b, []).append(i)
    for b, rows in sorted(by_bucket.items()):
      for start in range(0, len(rows), self.cfg.batch_size):
        chunk = rows[start:start + self.cfg.batch_size]
        tokens = np.zeros((self.cfg.batch_size, b), np.int32)
        mask = np.zeros((self.cfg.batch_size, b), np.int32)
        for j, i in enumerate(chunk):
          tokens[j, :len(ids[i])] = ids[i]
          mask[j, :len(ids[i])] = 1
        yield chunk, tokens, mask

  def pooled_ids(self, ids: Sequence[list[int]]) -> np.ndarray:
    """[N, D] pooled hidden states of the backbone (features for the linear probe)."""
    out = np.zeros((len(ids), self.model_cfg.d_model), np.float64)
    for rows, tokens, mask in self.batches(ids):
      out[rows] = np.asarray(self._pool(self.params["backbone"], tokens, mask))[:len(rows)]
    return out

  def score_ids(self, ids: Sequence[list[int]]) -> np.ndarray:
    """Scores on the 0-10 scale (clipped), one per token sequence."""
    from seedcoder_jax import sharding as sharding_lib
    out = np.zeros((len(ids),), np.float64)
    for rows, tokens, mask in self.batches(ids):
      if self.mesh is not None:
        with sharding_lib.activate(self.mesh):
          tokens, mask = sharding_lib.place_batch((tokens, mask), self.mesh)
          pred = self._predict(self.params, tokens, mask)
      else:
        pred = self._predict(self.params, tokens, mask)
      out[rows] = np.clip(np.asarray(pred, np.float64)[:len(rows)], 0.0, 1.0) * 10.0
    return out

  def score_texts(self, texts: Sequence[str]) -> np.ndarray:
    return self.score_ids(self.encode(texts))

  def save(self, directory: str | pathlib.Path) -> None:
    """DIR/backbone (interop.orbax_params), DIR/head.npz, DIR/scorer_config.json (last).

    DIR may be any Beam filesystem path (gs://: written locally, then copied up)."""
    from seedcoder_jax.curation import artifacts
    if not artifacts.is_local(directory):
      tmp = tempfile.mkdtemp(prefix="scorer_")
      try:
        self.save(tmp)
        artifacts.publish(tmp, str(directory), last=CONFIG_FILE)
      finally:
        shutil.rmtree(tmp, ignore_errors=True)
      return
    from seedcoder_jax.interop import orbax_params
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    orbax_params.save(directory / BACKBONE_DIR, self.model_cfg, self.params["backbone"],
                      overwrite=True)
    np.savez(directory / HEAD_FILE, **{k: np.asarray(v) for k, v in self.params["head"].items()})
    meta = {"scorer": self.cfg.to_dict(), "tokenizer": self.tokenizer.spec}
    tmp = directory / (CONFIG_FILE + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    tmp.replace(directory / CONFIG_FILE)  # last: its presence marks a complete checkpoint


def load_scorer(directory: str | pathlib.Path, *, mesh=None) -> Scorer:
  """The scorer saved by `Scorer.save` (its config file is written last: a complete checkpoint);
  any Beam filesystem path (a gs:// one is downloaded to a temporary directory first)."""
  from seedcoder_jax.curation import artifacts
  if not artifacts.is_local(directory):
    if not artifacts._fs().exists(f"{str(directory).rstrip('/')}/{CONFIG_FILE}"):
      raise FileNotFoundError(f"{directory}/{CONFIG_FILE} not found: not a complete scorer "
                              "checkpoint")
    tmp = artifacts.download(str(directory))
    try:
      return load_scorer(tmp, mesh=mesh)
    finally:
      shutil.rmtree(tmp, ignore_errors=True)
  import jax.numpy as jnp
  from seedcoder_jax import tokenizer as tokenizer_lib
  from seedcoder_jax.interop import orbax_params
  directory = pathlib.Path(directory)
  meta_path = directory / CONFIG_FILE
  if not meta_path.is_file():
    raise FileNotFoundError(f"{meta_path} not found: not a complete scorer checkpoint")
  meta = json.loads(meta_path.read_text())
  cfg = ScorerConfig.from_dict(meta["scorer"], where=str(meta_path))
  model_cfg, backbone = orbax_params.load(directory / BACKBONE_DIR)
  with np.load(directory / HEAD_FILE) as f:
    head = {k: jnp.asarray(f[k]) for k in f.files}
  return Scorer(cfg, model_cfg, {"backbone": backbone, "head": head},
                tokenizer_lib.load(meta["tokenizer"]), mesh=mesh)


def scoring_mesh(cfg: ScorerConfig):
  """A data-parallel mesh over all local devices when cfg.shard, else None."""
  if not cfg.shard:
    return None
  from seedcoder_jax import sharding as sharding_lib
  return sharding_lib.make_mesh({"data": -1})


# ----------------------------------------------------------------------------- training


def is_heldout(record_id: str, cfg: ScorerConfig) -> bool:
  from seedcoder_jax.curation.oracle import sample_key
  return (sample_key(record_id, cfg.seed + 1) % 10_000) < cfg.holdout_fraction * 10_000


def labelled_examples(annotated: Sequence[dict]) -> list[dict]:
  """The oracle-annotated records with a usable label (status "ok"), sorted by id."""
  return sorted((r for r in annotated if r.get("oracle_status") == "ok"
                 and r.get("oracle_score") is not None), key=lambda r: r["id"])


def train_scorer(annotated: Sequence[dict], cfg: ScorerConfig, *, backbone=None,
                 label_key: str = "oracle_score") -> tuple[Scorer, dict[str, Any]]:
  """Fine-tunes backbone + head for `epochs` on labels/10 (MSE); returns (scorer, report).

  annotated: records with `text`, `id` and a 0-10 label under `label_key` (oracle_score, status
    "ok"; records without one are skipped and counted).
  backbone: (model_cfg, params, tokenizer), default `load_backbone(cfg)`.
  report: n_train, n_heldout, n_unlabelled, mae and mae_mean_baseline (0-10 units, held out),
    train_loss_first/last, steps, seconds, tokens_per_s.
  """
  import jax
  import jax.numpy as jnp
  import optax
  from seedcoder_jax.model import scorer as head_lib

  start = time.perf_counter()
  usable = [r for r in annotated if r.get(label_key) is not None
            and (label_key != "oracle_score" or r.get("oracle_status") == "ok")]
  usable.sort(key=lambda r: r["id"])
  train = [r for r in usable if not is_heldout(r["id"], cfg)]
  heldout = [r for r in usable if is_heldout(r["id"], cfg)]
  if len(train) < 2 or not heldout:
    raise ValueError(f"scorer training needs >= 2 training and >= 1 held-out labelled records; got "
                     f"{len(train)} and {len(heldout)} of {len(annotated)} annotated "
                     f"({len(annotated) - len(usable)} without a usable {label_key})")
  model_cfg, params, tok = backbone if backbone is not None else load_backbone(cfg)
  model_cfg = model_cfg.replace(compute_dtype=cfg.compute_dtype)
  y_train = np.array([r[label_key] for r in train], np.float32) / 10.0
  head = head_lib.init_head(model_cfg.d_model, bias=float(y_train.mean()), seed=cfg.seed)
  scorer = Scorer(cfg, model_cfg, {"backbone": params, "head": head}, tok)
  ids = scorer.encode([r["text"] for r in train])
  y_held = np.array([r[label_key] for r in heldout], np.float64)
  held_ids = scorer.encode([r["text"] for r in heldout])
  ridge_alpha = probe_mae = None
  if cfg.probe_first:
    head, ridge_alpha = head_lib.fit_ridge_head(scorer.pooled_ids(ids), y_train)
    scorer.params = {"backbone": params, "head": head}
    probe_mae = float(np.mean(np.abs(scorer.score_ids(held_ids) - y_held)))

  # The token embedding stays frozen (a third of SmolLM2's weights; its gradient is a scatter over
  # the whole table and AdamW would carry 3x its size for a few steps). The head learns faster.
  frozen = {"embed": params["embed"]}
  trainable = {"backbone": {k: v for k, v in params.items() if k != "embed"}, "head": head}
  labels = {"backbone": jax.tree.map(lambda _: "backbone", trainable["backbone"]),
            "head": jax.tree.map(lambda _: "head", head)}
  opt = optax.multi_transform(
      {"backbone": optax.adamw(cfg.learning_rate, weight_decay=cfg.weight_decay),
       "head": optax.adamw(cfg.head_learning_rate, weight_decay=cfg.weight_decay)}, labels)
  opt_state = opt.init(trainable)

  def merged(t):
    return {"backbone": {**t["backbone"], **frozen}, "head": t["head"]}

  @jax.jit
  def step(t, s, tokens, mask, target, weight):
    def loss_fn(t):
      pred = head_lib.predict(model_cfg, merged(t), tokens, mask, pooling=cfg.pooling)
      return head_lib.mse_loss(pred, target, weight)
    loss, grads = jax.value_and_grad(loss_fn)(t)
    updates, s = opt.update(grads, s, t)
    return optax.apply_updates(t, updates), s, loss

  rng = np.random.default_rng(cfg.seed)
  losses, tokens_seen = [], 0
  for _ in range(cfg.epochs):
    order = rng.permutation(len(train))
    for b in range(0, len(order), cfg.batch_size):
      rows = order[b:b + cfg.batch_size]
      # Training pads to max_tokens: one compiled step for the whole run.
      tokens = np.zeros((cfg.batch_size, cfg.max_tokens), np.int32)
      mask = np.zeros_like(tokens)
      target = np.zeros((cfg.batch_size,), np.float32)
      weight = np.zeros((cfg.batch_size,), np.float32)
      for j, i in enumerate(rows):
        tokens[j, :len(ids[i])] = ids[i]
        mask[j, :len(ids[i])] = 1
        target[j], weight[j] = y_train[i], 1.0
      trainable, opt_state, loss = step(trainable, opt_state, tokens, mask, target, weight)
      losses.append(float(loss))
      tokens_seen += int(mask.sum())
  scorer.params = merged(trainable)
  train_seconds = time.perf_counter() - start
  pred = scorer.score_ids(held_ids)
  report = {
      "n_train": len(train), "n_heldout": len(heldout),
      "n_unlabelled": len(annotated) - len(usable),
      "mae": float(np.mean(np.abs(pred - y_held))),
      "mae_mean_baseline": float(np.mean(np.abs(y_train.mean() * 10.0 - y_held))),
      "train_loss_first": losses[0], "train_loss_last": losses[-1], "steps": len(losses),
      "train_seconds": train_seconds, "train_tokens_per_s": tokens_seen / max(train_seconds, 1e-9),
      "backbone": cfg.backbone, "n_layers": model_cfg.n_layers, "pooling": cfg.pooling,
      "ridge_alpha": ridge_alpha, "probe_mae": probe_mae,
  }
  return scorer, report


# ----------------------------------------------------------------------------- filtering


def percentile_threshold(scores: Sequence[float], percentile: float) -> float:
  """The score below which files are dropped (numpy's linear-interpolated percentile)."""
  if percentile <= 0 or len(scores) == 0:
    return float("-inf")
  return float(np.percentile(np.asarray(scores, np.float64), percentile))


def split_by_threshold(scored: Sequence[dict], threshold: float, percentile: float):
  """(kept, rejections): records scoring strictly below `threshold` are rejected (low_quality)."""
  kept, rejected = [], []
  for r in scored:
    if r["score"] < threshold:
      rejected.append(records_lib.reject(r, STAGE, REASON_LOW,
                                         f"score={r['score']:.3f} < p{percentile:g}={threshold:.3f}"))
    else:
      kept.append(r)
  return kept, rejected


# ----------------------------------------------------------------------------- Beam


def _beam():
  import apache_beam as beam  # lazy: the functions above need no Beam
  return beam


class ScoreDoFn(_beam().DoFn):
  """Scores batches (lists) of records: adds `score` (0-10) and `score_source` = "scorer".

  The scorer loads once per worker: in `setup()` from `checkpoint_dir`, or, when the checkpoint is
  produced inside the same pipeline, on the first batch from the side input (a `train` report
  with "checkpoint_dir").
  """

  def __init__(self, cfg: ScorerConfig, checkpoint_dir: str = ""):
    self.cfg = cfg
    self.checkpoint_dir = checkpoint_dir
    self.scorer = None
    self._loaded_from = None

  def setup(self):
    if self.checkpoint_dir:
      self._load(self.checkpoint_dir)

  def _load(self, directory: str):
    if self._loaded_from != directory:
      self.scorer = load_scorer(directory, mesh=scoring_mesh(self.cfg))
      self._loaded_from = directory

  def process(self, batch, report=None):
    if report is not None:
      self._load(report["checkpoint_dir"])
    if self.scorer is None:
      raise RuntimeError("ScoreDoFn has no scorer: give checkpoint_dir or the training report")
    batch = list(batch)
    scores = self.scorer.score_texts([r["text"] for r in batch])
    for r, s in zip(batch, scores):
      yield {**r, "score": float(s), "score_source": "scorer"}


def _train_and_save(annotated: list[dict], cfg: ScorerConfig) -> dict:
  if not cfg.checkpoint_dir:
    raise ValueError("ScorerConfig.checkpoint_dir must be set to train inside a pipeline")
  scorer, report = train_scorer(annotated, cfg)
  scorer.save(cfg.checkpoint_dir)
  return {**report, "checkpoint_dir": cfg.checkpoint_dir}


class TrainScorer(_beam().PTransform):
  """PCollection[oracle-annotated record] -> a one-element PCollection: the training report
  (with "checkpoint_dir"), after the scorer is saved there. Runs on one worker (a global combine):
  the labels are a small sample."""

  def __init__(self, cfg: ScorerConfig):
    super().__init__()
    self.cfg = cfg

  def expand(self, annotated):
    beam = _beam()
    cfg = self.cfg
    return (annotated
            | "Gather" >> beam.combiners.ToList()
            | "Train" >> beam.Map(_train_and_save, cfg))


class ScoreFiles(_beam().PTransform):
  """PCollection[record] -> the records with `score`; `report` is TrainScorer's output (or None
  with cfg.checkpoint_dir naming an existing checkpoint)."""

  def __init__(self, cfg: ScorerConfig, report=None):
    super().__init__()
    self.cfg, self.report = cfg, report

  def expand(self, records):
    beam = _beam()
    batched = records | "Batch" >> beam.BatchElements(min_batch_size=self.cfg.batch_size,
                                                      max_batch_size=self.cfg.batch_size * 4)
    if self.report is None:
      return batched | "Score" >> beam.ParDo(ScoreDoFn(self.cfg, self.cfg.checkpoint_dir))
    return batched | "Score" >> beam.ParDo(ScoreDoFn(self.cfg),
                                           beam.pvalue.AsSingleton(self.report))


class _SplitByThreshold(_beam().DoFn):
  def process(self, record, threshold, percentile):
    kept, rejected = split_by_threshold([record], threshold, percentile)
    yield from kept
    for rejection in rejected:
      yield records_lib.tagged_rejection(rejection)


QUANTILES = 1001  # Beam's approximate quantiles at 0.1 % steps: a percentile p is entry round(10 p)


def quantile_threshold(quantiles: Sequence[float], percentile: float) -> float:
  """The drop threshold from ApproximateQuantiles.Globally(QUANTILES)'s list: the score at the
  percentile's rank (records strictly below it go); -inf for no scores or percentile 0."""
  if percentile <= 0 or not quantiles:
    return float("-inf")
  return float(quantiles[int(round(percentile * (len(quantiles) - 1) / 100.0))])


class DropLowQuality(_beam().PTransform):
  """Scored records -> (kept, rejected): the bottom `drop_percentile` % by score is rejected with
  reason "low_quality". The threshold comes from Beam's approximate quantiles of all scores (a
  combine of bounded size, as a side input: no worker holds every score), as in the pipeline's
  score pass; on small inputs it is the score at the percentile's rank (numpy's interpolated
  `percentile_threshold` may put the cut one record higher)."""

  def __init__(self, cfg: ScorerConfig):
    super().__init__()
    self.cfg = cfg

  def expand(self, scored):
    beam = _beam()
    from apache_beam.transforms.stats import ApproximateQuantiles
    pct = self.cfg.drop_percentile
    threshold = (scored
                 | "Scores" >> beam.Map(lambda r: float(r["score"]))
                 | "Quantiles" >> ApproximateQuantiles.Globally(QUANTILES)
                 | "Percentile" >> beam.Map(quantile_threshold, pct))
    out = scored | "Split" >> beam.ParDo(_SplitByThreshold(), beam.pvalue.AsSingleton(threshold),
                                         pct).with_outputs(records_lib.REJECTED, main="kept")
    return out.kept, out[records_lib.REJECTED]


class QualityStages(_beam().PTransform):
  """Stages 4 + 5 on file records: oracle sample -> train scorer -> score all -> drop the bottom.

  Returns a dict of PCollections: "kept" (scored records), "rejected" (low_quality rejections),
  "oracle" (the annotated sample, for `oracle.summarize`), "report" (the scorer's training
  report, one element).
  """

  def __init__(self, oracle_cfg, scorer_cfg: ScorerConfig):
    super().__init__()
    self.oracle_cfg, self.scorer_cfg = oracle_cfg, scorer_cfg

  def expand(self, files):
    from seedcoder_jax.curation import oracle as oracle_lib
    annotated = (files
                 | "OracleSample" >> oracle_lib.OracleSample(self.oracle_cfg)
                 | "OracleAnnotate" >> oracle_lib.OracleAnnotate(self.oracle_cfg))
    report = annotated | "TrainScorer" >> TrainScorer(self.scorer_cfg)
    scored = files | "ScoreFiles" >> ScoreFiles(self.scorer_cfg, report)
    kept, rejected = scored | "DropLowQuality" >> DropLowQuality(self.scorer_cfg)
    return {"kept": kept, "rejected": rejected, "oracle": annotated, "report": report}
