"""A fastText-style code-page classifier in JAX (stage 8's recall model).

fastText's supervised model (Joulin et al., 2017): a page is the average of hashed embeddings of
its words, word bigrams and character n-grams (of "<word>", 3 to 5 characters, as fastText's
subwords), followed by a linear softmax. PyPI's `fasttext` stopped with "Encountered NaN" on a
trivial task on these machines (DESIGN.md pitfalls), so the same model is trained here with optax
(Adam, full batch: seed sets are small). Words keep punctuation runs as tokens ("(", "):", "=>",
"{") because symbols are what separates code from prose that merely names code words.

Hashing uses CRC32 (stable across processes and machines, unlike Python's salted `hash`), so
features computed in a Beam worker match the ones the model was trained on.

    clf = train(texts, labels, ClassifierConfig())   # labels: 1 = code-related, 0 = not
    p_N = clf.predict_proba(texts)                    # P(code-related), numpy
"""

from __future__ import annotations

import dataclasses
import io
import json
import pathlib
import re
import zlib
from typing import Sequence

import numpy as np

_TOKEN_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|\d+|[^\sA-Za-z0-9_]+")
SEEDS_DIR = pathlib.Path(__file__).resolve().parents[2] / "data" / "web_seeds"
SEED_FILES = {"code.txt": 1, "noncode.txt": 0, "hard_negatives.txt": 0}


@dataclasses.dataclass(frozen=True)
class ClassifierConfig:
  """Model and training settings (fastText's names where they exist)."""
  buckets: int = 1 << 16   # hashed feature rows (fastText -bucket)
  dim: int = 16            # embedding width (-dim)
  min_n: int = 3           # char n-gram lengths (-minn, -maxn); 0 disables subwords
  max_n: int = 5
  word_ngrams: int = 2     # 1: words only, 2: + bigrams (-wordNgrams)
  max_tokens: int = 2000   # tokens read per page (long pages: the head decides)
  epochs: int = 60         # full-batch Adam steps
  lr: float = 0.05
  seed: int = 0


def tokens(text: str, max_tokens: int) -> list[str]:
  return [t.lower() for t in _TOKEN_RE.findall(text)[:max_tokens]]


def feature_ids(text: str, cfg: ClassifierConfig) -> np.ndarray:
  """Hashed feature rows of one text: words, word n-grams, char n-grams. int32 [F] (F >= 1)."""
  toks = tokens(text, cfg.max_tokens)
  feats = list(toks)
  for n in range(2, cfg.word_ngrams + 1):
    feats += [" ".join(toks[i:i + n]) for i in range(len(toks) - n + 1)]
  if cfg.min_n > 0:
    for t in set(toks):
      w = f"<{t}>"
      feats += ["#" + w[i:i + n] for n in range(cfg.min_n, cfg.max_n + 1)
                for i in range(len(w) - n + 1) if len(w) > n]
  if not feats:
    feats = ["</s>"]  # fastText's end-of-line token: an empty page still has one feature
  return np.array([zlib.crc32(f.encode()) % cfg.buckets for f in feats], np.int32)


def pad_features(texts: Sequence[str], cfg: ClassifierConfig) -> tuple[np.ndarray, np.ndarray]:
  """(ids_NF int32, mask_NF float32), padded to the longest feature list."""
  ids = [feature_ids(t, cfg) for t in texts]
  f = max(len(i) for i in ids)
  ids_NF = np.zeros((len(ids), f), np.int32)
  mask_NF = np.zeros((len(ids), f), np.float32)
  for n, i in enumerate(ids):
    ids_NF[n, :len(i)] = i
    mask_NF[n, :len(i)] = 1.0
  return ids_NF, mask_NF


def logits(params: dict, ids_NF, mask_NF, xp=np):
  """Average of embedding rows, then linear: [N, 2] logits. `xp` is numpy or jax.numpy."""
  emb_NFD = params["embed"][ids_NF]
  h_ND = (emb_NFD * mask_NF[..., None]).sum(1) / mask_NF.sum(1, keepdims=True)
  return h_ND @ params["w"] + params["b"]


@dataclasses.dataclass(frozen=True)
class CodePageClassifier:
  """Trained parameters (numpy) + the config that hashes features; picklable for Beam workers."""
  params: dict
  cfg: ClassifierConfig

  def predict_proba(self, texts: Sequence[str], batch: int = 64) -> np.ndarray:
    """P(code-related) per text, float32 [N]; numpy only (no JAX in pipeline workers)."""
    out = []
    for s in range(0, len(texts), batch):
      z = logits(self.params, *pad_features(texts[s:s + batch], self.cfg))
      z = z - z.max(1, keepdims=True)
      p = np.exp(z)
      out.append((p[:, 1] / p.sum(1)).astype(np.float32))
    return np.concatenate(out) if out else np.zeros(0, np.float32)

  def save(self, path: str) -> None:
    """Writes params + config as one .npz (local or any Beam filesystem path, e.g. gs://)."""
    from apache_beam.io.filesystems import FileSystems
    buf = io.BytesIO()
    np.savez(buf, config=np.array(json.dumps(dataclasses.asdict(self.cfg))), **self.params)
    with FileSystems.create(path) as f:
      f.write(buf.getvalue())

  @classmethod
  def load(cls, path: str) -> "CodePageClassifier":
    from apache_beam.io.filesystems import FileSystems
    with FileSystems.open(path) as f:
      z = np.load(io.BytesIO(f.read()))
    cfg = ClassifierConfig(**json.loads(str(z["config"])))
    return cls({k: z[k] for k in ("embed", "w", "b")}, cfg)


def train(texts: Sequence[str], labels: Sequence[int], cfg: ClassifierConfig = ClassifierConfig()
          ) -> CodePageClassifier:
  """Trains the classifier on (text, 0/1 label) pairs with softmax cross-entropy and Adam."""
  import jax
  import jax.numpy as jnp
  import optax

  y_N = np.asarray(labels, np.int32)
  if len(texts) != len(y_N) or not len(texts):
    raise ValueError(f"train: {len(texts)} texts and {len(y_N)} labels (need equal, non-zero)")
  if set(np.unique(y_N)) != {0, 1}:
    raise ValueError(f"train: labels must contain both 0 and 1, got {sorted(set(y_N.tolist()))}")
  ids_NF, mask_NF = pad_features(texts, cfg)
  # fastText's init: input embeddings uniform in +-1/dim, output weights zero.
  params = {"embed": jax.random.uniform(jax.random.key(cfg.seed), (cfg.buckets, cfg.dim),
                                        jnp.float32, -1.0 / cfg.dim, 1.0 / cfg.dim),
            "w": jnp.zeros((cfg.dim, 2), jnp.float32), "b": jnp.zeros((2,), jnp.float32)}
  # Classes are weighted to balance: seed sets rarely have as many positives as negatives.
  counts = np.bincount(y_N, minlength=2).astype(np.float32)
  w_N = jnp.asarray((len(y_N) / (2.0 * counts))[y_N])
  opt = optax.adam(cfg.lr)

  def loss_fn(p):
    z_N2 = logits(p, ids_NF, mask_NF, xp=jnp)
    ce_N = optax.softmax_cross_entropy_with_integer_labels(z_N2, y_N)
    return (ce_N * w_N).sum() / w_N.sum()

  def step(carry, _):
    p, s = carry
    loss, g = jax.value_and_grad(loss_fn)(p)
    updates, s = opt.update(g, s, p)
    return (optax.apply_updates(p, updates), s), loss

  # One compiled scan over all epochs: compiling dominates on seed-sized data.
  run = jax.jit(lambda p, s: jax.lax.scan(step, (p, s), None, length=cfg.epochs))
  (params, _), losses = run(params, opt.init(params))
  loss = losses[-1]
  if not np.isfinite(float(loss)):
    raise FloatingPointError(f"classifier training diverged (loss {float(loss)}); lower lr={cfg.lr}")
  return CodePageClassifier({k: np.asarray(v) for k, v in params.items()}, cfg)


def read_seed_docs(path: str | pathlib.Path) -> list[str]:
  """Documents of a seed file: blocks separated by blank lines; blocks of "# " lines are notes."""
  text = pathlib.Path(path).read_text(encoding="utf-8")
  docs = [d.strip("\n") for d in re.split(r"\n[ \t]*\n", text)]
  return [d for d in docs
          if d.strip() and not all(l.startswith("# ") or l == "#" for l in d.splitlines())]


def load_seeds(seeds_dir: str | pathlib.Path = SEEDS_DIR, names: Sequence[str] = tuple(SEED_FILES)
               ) -> tuple[list[str], list[int]]:
  """(texts, labels) of the labelled seed files `names` (default: all of SEED_FILES) in
  `seeds_dir`; the hard-negatives ablation leaves "hard_negatives.txt" out."""
  unknown = [n for n in names if n not in SEED_FILES]
  if unknown:
    raise ValueError(f"load_seeds: unknown seed files {unknown}; known: {list(SEED_FILES)}")
  texts, labels = [], []
  for name, label in ((n, SEED_FILES[n]) for n in names):
    path = pathlib.Path(seeds_dir) / name
    if not path.is_file():
      raise FileNotFoundError(f"web classifier seed file missing: {path}")
    docs = read_seed_docs(path)
    texts += docs
    labels += [label] * len(docs)
  return texts, labels


def scores(y_N: Sequence[int], pred_N: Sequence[bool]) -> dict:
  """Confusion counts, precision, recall and F1 (each 0.0 where its denominator is 0)."""
  tp = sum(1 for y, p in zip(y_N, pred_N) if y and p)
  fp = sum(1 for y, p in zip(y_N, pred_N) if not y and p)
  fn = sum(1 for y, p in zip(y_N, pred_N) if y and not p)
  precision = tp / (tp + fp) if tp + fp else 0.0
  recall = tp / (tp + fn) if tp + fn else 0.0
  f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
  return {"precision": precision, "recall": recall, "f1": f1, "tp": tp, "fp": fp, "fn": fn}


def precision_recall(p_N: np.ndarray, y_N: Sequence[int], threshold: float) -> tuple[float, float]:
  """(precision, recall) of `p_N >= threshold` against labels (1 = positive)."""
  s = scores(y_N, [bool(p >= threshold) for p in np.asarray(p_N)])
  return s["precision"], s["recall"]
