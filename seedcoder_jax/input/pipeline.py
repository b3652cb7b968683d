"""The pretraining input pipeline (Grain): corpora -> packed batches for the trainer.

  cfg = InputConfig(corpora=("/data/files", "/data/repos"), weights=(0.7, 0.3),
                    repo_level=(False, True), tokenizer="spm:/data/tok.model",
                    seq_len=8192, global_batch_size=512, score_drop_fraction=0.1, fim_rate=0.5)
  it = make_iterator(cfg, process_index=jax.process_index(), process_count=jax.process_count())
  batch = next(it)          # {"inputs", "targets", "segment_ids", "positions", "weights"}: [B, T]
  state = it.get_state()    # a small dict (JSON-able): save it with the model checkpoint ...
  it.set_state(state)       # ... and restore it into a fresh make_iterator(cfg, ...) to resume
  eval_batches = make_eval_batches(cfg, num_batches=8)  # a fixed held-out list

B = global_batch_size / process_count (this process's rows), T = seq_len. process_index and
process_count name a data shard: the trainer passes sharding.data_shard(mesh), which is the
process's own index and count unless the tensor axis crosses hosts (then hosts share a shard).
Batch format as in seedcoder_jax.train.step: `targets` are next tokens within the same packed
document, `segment_ids` number documents from 1 per row (0 = padding), `positions` restart at 0 per
document, `weights` is 1.0 where the loss counts.

Per source (corpus directory), in order:
1. score threshold: the `score_drop_fraction` lowest-scored records of the corpus are dropped
   (rank over the whole corpus, ties by record order, so exactly floor(fraction * N) go);
2. held-out split: a fixed hash of the record index (of the repository, for repo-level sources)
   sends `eval_fraction` of the units to make_eval_batches and the rest to training; it does not
   depend on the seed, so every run holds out the same data;
3. units: single records, or (repo_level) all kept files of one repository, read together and
   joined in dependency order (repo_level.py);
4. per-process sharding: process p takes units p, p + P, p + 2P, ... (disjoint, covering);
5. repeated forever, each epoch in a new seeded random order (EpochShuffled).
Then: mixture by `weights` (grain.MapDataset.mix: exact deterministic proportions), FIM (fim.py:
per row-sized window of a file with fim_level "context", per document with "document") and
tokenisation with BOS/EOS per document, chunking and first-fit packing (packing.py), batching, and
with `num_workers` > 0 Grain multiprocessing prefetch (workers load the tokenizer lazily).

Deterministic given `seed` (and `num_workers`, which changes the interleaving of workers' output).
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Iterator, Optional, Sequence

import grain
import numpy as np
from absl import flags

from seedcoder_jax import tokenizer as tokenizer_lib
from seedcoder_jax.input import corpus as corpus_lib
from seedcoder_jax.input import fim, packing, transforms


class InputConfigError(ValueError):
  """An invalid InputConfig; the message names the field and the value."""


@dataclasses.dataclass(frozen=True)
class InputConfig:
  corpora: tuple[str, ...]                  # corpus directories (seedcoder_jax.input.corpus)
  tokenizer: str                            # "spm:PATH", "hf:PATH" or "gguf:PATH" (tokenizer.load)
  seq_len: int                              # T: tokens per row
  global_batch_size: int                    # rows per step over all processes
  weights: Optional[tuple[float, ...]] = None  # mixture weights per corpus (None: equal)
  repo_level: bool | tuple[bool, ...] = False  # per corpus: repository-level documents
  score_drop_fraction: float = 0.0          # drop this lowest-scored share of each corpus
  fim_rate: float = 0.5                     # share of file documents turned into FIM
  fim_spm_fraction: float = 1.0             # share of FIM documents in SPM order (rest PSM)
  fim_level: str = "context"                # "context": FIM per row-sized window; "document"
  eval_fraction: float = 0.01               # held-out share of each corpus's units
  seed: int = 0
  num_workers: int = 0                      # Grain worker processes (0: in this process)
  worker_buffer_size: int = 2               # batches each worker prefetches
  read_threads: int = 2                     # threads reading + tokenizing ahead in each process
  packing_bins: int = 0                     # first-fit bins (0: the per-process batch size)

  def __post_init__(self):
    def bad(field, why):
      raise InputConfigError(f"InputConfig.{field}={getattr(self, field)!r}: {why}")

    if isinstance(self.corpora, str):
      object.__setattr__(self, "corpora", (self.corpora,))
    object.__setattr__(self, "corpora", tuple(str(c) for c in self.corpora))
    n = len(self.corpora)
    if n == 0:
      bad("corpora", "at least one corpus directory is needed")
    weights = (1.0,) * n if self.weights is None else tuple(float(w) for w in self.weights)
    if len(weights) != n:
      bad("weights", f"{len(weights)} weights for {n} corpora")
    if any(not np.isfinite(w) or w < 0 for w in weights) or sum(weights) <= 0:
      bad("weights", "weights must be finite, >= 0, and not all 0")
    object.__setattr__(self, "weights", weights)
    repo = (self.repo_level,) * n if isinstance(self.repo_level, bool) else tuple(self.repo_level)
    if len(repo) != n or not all(isinstance(r, (bool, np.bool_)) for r in repo):
      bad("repo_level", f"a bool or one bool per corpus ({n})")
    object.__setattr__(self, "repo_level", tuple(bool(r) for r in repo))
    if not isinstance(self.tokenizer, str) or ":" not in self.tokenizer:
      bad("tokenizer", "expected 'spm:PATH', 'hf:PATH' or 'gguf:PATH'")
    for field in ("seq_len", "global_batch_size"):
      if not isinstance(getattr(self, field), (int, np.integer)) or getattr(self, field) < 1:
        bad(field, "must be a positive integer")
    for field in ("score_drop_fraction", "eval_fraction"):
      if not 0.0 <= getattr(self, field) < 1.0:
        bad(field, "must be in [0, 1)")
    for field in ("fim_rate", "fim_spm_fraction"):
      if not 0.0 <= getattr(self, field) <= 1.0:
        bad(field, "must be in [0, 1]")
    if self.fim_level not in fim.LEVELS:
      bad("fim_level", f"must be one of {fim.LEVELS}")
    for field in ("num_workers", "packing_bins", "read_threads"):
      if getattr(self, field) < 0:
        bad(field, "must be >= 0")
    if self.worker_buffer_size < 1:
      bad("worker_buffer_size", "must be >= 1")

  def per_process_batch_size(self, process_count: int) -> int:
    if self.global_batch_size % process_count:
      raise InputConfigError(f"InputConfig.global_batch_size={self.global_batch_size} is not "
                             f"divisible by process_count={process_count}")
    return self.global_batch_size // process_count


def score_keep_mask(scores: np.ndarray, drop_fraction: float) -> np.ndarray:
  """[N] bool: False on the floor(drop_fraction * N) lowest scores (ties: earlier records first)."""
  n_drop = int(np.floor(drop_fraction * len(scores)))
  keep = np.ones(len(scores), bool)
  keep[np.argsort(scores, kind="stable")[:n_drop]] = False
  return keep


def held_out_mask(unit_ids: np.ndarray, eval_fraction: float) -> np.ndarray:
  """[U] bool: a fixed pseudo-random `eval_fraction` of unit ids (splitmix64 hash, no seed)."""
  with np.errstate(over="ignore"):
    z = unit_ids.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
  return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53) < eval_fraction


def corpus_units(c: corpus_lib.Corpus, *, repo_level: bool, drop_fraction: float,
                 eval_fraction: float, split: str) -> list:
  """The units of one split ("train" or "eval"): record indices, or per-repository index arrays."""
  keep = score_keep_mask(c.scores, drop_fraction)
  if not repo_level:
    idx = np.nonzero(keep)[0]
    held = held_out_mask(idx, eval_fraction)
    return list(idx[held if split == "eval" else ~held])
  kept = np.nonzero(keep)[0]
  repos = c.repo_ids[kept]
  order = np.argsort(repos, kind="stable")  # group by repository, files in corpus order
  repos_sorted, kept_sorted = repos[order], kept[order]
  starts = np.flatnonzero(np.r_[True, repos_sorted[1:] != repos_sorted[:-1]])
  groups = np.split(kept_sorted, starts[1:]) if len(kept_sorted) else []
  group_repo = repos_sorted[starts] if len(kept_sorted) else np.zeros(0, np.int64)
  held = held_out_mask(group_repo, eval_fraction)
  return [g for g, h in zip(groups, held) if h == (split == "eval")]


class EpochShuffled:
  """Units repeated forever, each epoch in its own seeded random order (a random-access source).

  Grain's MapDataset.shuffle computes every index with a Feistel permutation that cost ~1 ms per
  element here (the pipeline's largest cost on short documents); a numpy permutation per epoch,
  cached, is exact and cheap. Pickles without the cache.
  """

  def __init__(self, units: Sequence, seed: tuple[int, ...]):
    self.units = units
    self.seed = tuple(seed)
    self._perms = {}

  def __getstate__(self):
    return {**self.__dict__, "_perms": {}}

  def __setstate__(self, state):
    self.__dict__.update(state)

  def __len__(self) -> int:
    return sys.maxsize

  def __getitem__(self, index: int):
    epoch, k = divmod(int(index), len(self.units))
    perm = self._perms.get(epoch)
    if perm is None:
      perm = np.random.default_rng((*self.seed, epoch)).permutation(len(self.units))
      # Keep two epochs: reader threads straddle an epoch boundary for a while.
      self._perms = {e: p for e, p in self._perms.items() if e == epoch - 1}
      self._perms[epoch] = perm
    return self.units[perm[k]]


def _tokenizer(cfg: InputConfig) -> tokenizer_lib.Tokenizer:
  try:
    tok = tokenizer_lib.load(cfg.tokenizer)
    tok.require("bos", "eos")
    if cfg.fim_rate > 0:
      tok.require("fim_prefix", "fim_middle", "fim_suffix")
    if any(cfg.repo_level):
      tok.require("repo_name", "file_sep")
  except tokenizer_lib.TokenizerError as e:
    hint = " (set fim_rate=0 or repo_level=False, or use a tokenizer with these tokens)"
    raise InputConfigError(f"InputConfig.tokenizer={cfg.tokenizer!r}: {e}{hint}") from e
  return tok


def _open(cfg: InputConfig, i: int) -> corpus_lib.Corpus:
  try:
    return corpus_lib.open_corpus(cfg.corpora[i])
  except corpus_lib.CorpusError as e:
    raise InputConfigError(f"InputConfig.corpora[{i}]={cfg.corpora[i]!r}: {e}") from e


def _no_units(cfg: InputConfig, i: int, split: str, process_index: int, process_count: int,
              n_records: int) -> InputConfigError:
  return InputConfigError(
      f"InputConfig.corpora[{i}]={cfg.corpora[i]!r}: no {split} units left for process "
      f"{process_index}/{process_count} ({n_records} records, score_drop_fraction="
      f"{cfg.score_drop_fraction}, eval_fraction={cfg.eval_fraction})")


def _source_dataset(cfg: InputConfig, i: int, split: str, process_index: int,
                    process_count: int, allow_empty: bool = False) -> grain.MapDataset | None:
  c = _open(cfg, i)
  units = corpus_units(c, repo_level=cfg.repo_level[i], drop_fraction=cfg.score_drop_fraction,
                       eval_fraction=cfg.eval_fraction, split=split)
  units = units[process_index::process_count]
  if not units:
    if allow_empty:
      return None
    raise _no_units(cfg, i, split, process_index, process_count, len(c))
  if split == "train":
    units = EpochShuffled(units, seed=(cfg.seed, i))
  return grain.MapDataset.source(units).map(transforms.ReadUnit(c.source))


def _check_process(process_index: int, process_count: int):
  if not 0 <= process_index < process_count:
    raise InputConfigError(f"process_index={process_index} not in [0, process_count={process_count})")


def _packed(cfg: InputConfig, ds: grain.MapDataset, tok, batch_size: int) -> grain.IterDataset:
  ds = ds.random_map(transforms.Tokenize(tok, seq_len=cfg.seq_len, fim_rate=cfg.fim_rate,
                                         fim_spm_fraction=cfg.fim_spm_fraction,
                                         fim_level=cfg.fim_level), seed=cfg.seed)
  read = grain.ReadOptions(num_threads=cfg.read_threads, prefetch_buffer_size=4 * max(1, cfg.read_threads))
  return packing.pack(ds.to_iter_dataset(read), cfg.seq_len, cfg.packing_bins or batch_size)


def make_dataset(cfg: InputConfig, *, process_index: int = 0, process_count: int = 1) -> grain.IterDataset:
  """The training IterDataset of this process's batches (infinite)."""
  _check_process(process_index, process_count)
  batch_size = cfg.per_process_batch_size(process_count)
  tok = _tokenizer(cfg)
  sources = [_source_dataset(cfg, i, "train", process_index, process_count)
             for i in range(len(cfg.corpora))]
  ds = sources[0] if len(sources) == 1 else grain.MapDataset.mix(sources, list(cfg.weights))
  out = _packed(cfg, ds, tok, batch_size).batch(batch_size, drop_remainder=True)
  if cfg.num_workers > 0:
    # Grain's multiprocessing reads its absl flags; outside an absl app (tests, notebooks) they
    # are unparsed and reading them raises, so take their defaults.
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()
    out = out.mp_prefetch(grain.MultiprocessingOptions(
        num_workers=cfg.num_workers, per_worker_buffer_size=cfg.worker_buffer_size))
  return out


def make_iterator(cfg: InputConfig, *, process_index: int = 0,
                  process_count: int = 1) -> grain.DatasetIterator:
  """An infinite iterator of this process's batches; `get_state()` / `set_state()` resume it exactly."""
  return iter(make_dataset(cfg, process_index=process_index, process_count=process_count))


def make_eval_batches(cfg: InputConfig, *, num_batches: int, process_index: int = 0,
                      process_count: int = 1) -> list[dict]:
  """Exactly `num_batches` held-out batches (the same list on every call).

  One pass over the eval units of every corpus in order (corpora that hold out nothing are
  skipped), FIM as in training. When the held-out
  data ends first, the last batch is padded with weight-0 rows and all-padding batches follow, so
  every process returns the same number of batches (a multi-process evaluation steps in lockstep)
  and a token-weighted mean loss ignores the padding."""
  _check_process(process_index, process_count)
  batch_size = cfg.per_process_batch_size(process_count)
  if cfg.eval_fraction <= 0:
    raise InputConfigError("InputConfig.eval_fraction=0: no held-out split to evaluate on")
  tok = _tokenizer(cfg)
  # A small corpus (a few repositories, say) may hold out nothing at this eval_fraction; the loss
  # is token-weighted over whatever the others hold out. Only no held-out data at all is an error.
  sources = [_source_dataset(cfg, i, "eval", process_index, process_count, allow_empty=True)
             for i in range(len(cfg.corpora))]
  sources = [s for s in sources if s is not None]
  if not sources:
    raise InputConfigError(
        f"InputConfig.corpora={list(cfg.corpora)}: no corpus holds out any eval units for process "
        f"{process_index}/{process_count} (eval_fraction={cfg.eval_fraction}, score_drop_fraction="
        f"{cfg.score_drop_fraction})")
  ds = grain.MapDataset.concatenate(sources) if len(sources) > 1 else sources[0]
  batched = _packed(dataclasses.replace(cfg, read_threads=min(cfg.read_threads, 1)), ds, tok,
                    batch_size).batch(batch_size, drop_remainder=False)
  out = []
  for batch in batched:
    if len(out) == num_batches:
      break
    out.append(packing.pad_batch(batch, batch_size))
  while len(out) < num_batches:
    out.append(packing.empty_rows(batch_size, cfg.seq_len))
  return out


def iterate_batches(cfg: InputConfig, num_batches: int, **kwargs) -> Iterator[dict]:
  """The first `num_batches` training batches (tests, benchmarks)."""
  it = make_iterator(cfg, **kwargs)
  for _ in range(num_batches):
    yield next(it)
