"""SFT input: chat corpora -> rendered conversations -> packed rows with an assistant-only loss.

    it = make_iterator(cfg, process_index=0, process_count=1)   # Grain; get_state()/set_state()
    batches = make_eval_batches(cfg, num_batches=4)

Each conversation is rendered in the model's chat format (chat_template.ChatRenderer) into token
ids and an assistant mask; the (input, target) pairs of a conversation are its ids shifted by one,
and a target's weight is the mask of that target token, so the loss covers exactly the assistant
tokens (content and turn end). Conversations are truncated to seq_len + 1 tokens (the start
kept); one whose prompt alone fills that is dropped (it has nothing to learn from). Rows are packed
first-fit by Grain with segment ids, like pretraining: no attention or loss crosses conversations.

Difficulty-aware sampling: each epoch, example i appears w_i / mean(w) times in expectation
(the integer part always, the fraction with that probability), in a seeded random order, where
w_i = difficulty_weights[difficulty] (unrated: unrated_weight). Equal weights give plain epochs,
every example exactly once. Held out: records whose id hash falls under eval_fraction (stable
under reordering and resharding), or a separate held-out corpus.
"""

from __future__ import annotations

import dataclasses
import sys
import threading
from typing import Iterator, Sequence

import grain
import numpy as np

from seedcoder_jax.input import packing
from seedcoder_jax.posttrain import chat_corpus
from seedcoder_jax.posttrain.chat_template import ChatRenderer, ChatTemplateError

N_DIFFICULTY = 11  # ratings 0..10


class SFTDataError(ValueError):
  """Bad SFT data settings or data (the message names the key or the record)."""


@dataclasses.dataclass(frozen=True)
class SFTDataConfig:
  corpora: tuple[str, ...]               # chat corpus directories (kind "sft"), concatenated
  tokenizer: str                         # tokenizer spec: its chat template is used when it has one
  seq_len: int
  global_batch_size: int
  template_file: str = ""                # a Jinja chat template overriding the tokenizer's
  system_prompt: str = ""                # prepended when a conversation has no system message
  difficulty_weights: tuple[float, ...] = ()  # 11 weights for ratings 0..10; () = all equal
  unrated_weight: float = 1.0            # the weight of records without a difficulty
  heldout_corpus: str = ""               # "" = hold out eval_fraction of the corpora by id hash
  eval_fraction: float = 0.02
  seed: int = 0
  packing_bins: int = 0                  # 0 = the per-process batch size
  read_threads: int = 2

  def __post_init__(self):
    def bad(key, why):
      raise SFTDataError(f"config.sft.{key}: {why}")
    if not self.corpora:
      bad("corpora", "no chat corpus given")
    if self.difficulty_weights and len(self.difficulty_weights) != N_DIFFICULTY:
      bad("difficulty_weights", f"{len(self.difficulty_weights)} values; give one per rating "
          f"0..10 ({N_DIFFICULTY}) or none")
    if any(w < 0 for w in self.difficulty_weights) or self.unrated_weight < 0:
      bad("difficulty_weights", "weights must be >= 0")
    if not 0 <= self.eval_fraction < 1:
      bad("eval_fraction", f"{self.eval_fraction} must lie in [0, 1)")


def example_weights(difficulty_N: np.ndarray, cfg: SFTDataConfig) -> np.ndarray:
  """Float64 [N] sampling weights from difficulty ratings (-1 = unrated)."""
  w = np.asarray(cfg.difficulty_weights or (1.0,) * N_DIFFICULTY, np.float64)
  d = np.asarray(difficulty_N, np.int64)
  return np.where(d < 0, cfg.unrated_weight, w[np.clip(d, 0, N_DIFFICULTY - 1)])


def epoch_order(weights_N: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """One epoch's example indices: i appears w_i / mean(w) times in expectation, shuffled."""
  expected = weights_N / weights_N.mean()
  copies = np.floor(expected).astype(np.int64)
  copies += rng.random(len(expected)) < (expected - copies)
  return rng.permutation(np.repeat(np.arange(len(expected)), copies))


class DifficultyEpochs:
  """Units repeated forever, epoch by epoch (epoch_order), as a random-access source.

  Epoch lengths vary with the stochastic rounding, so the start of each epoch is recorded as
  epochs are first reached; an index maps to (epoch, offset). Grain's read threads call
  __getitem__ concurrently, so the cache is only touched under a lock (without it two threads
  extend the epoch starts twice and the order of the stream depends on thread timing). Pickles
  without the cache."""

  def __init__(self, units: Sequence, weights_N: np.ndarray, seed: tuple[int, ...]):
    self.units, self.weights, self.seed = units, np.asarray(weights_N, np.float64), tuple(seed)
    if not len(units) or not self.weights.sum() > 0:
      raise SFTDataError("every training example has weight 0 (config.sft.difficulty_weights)")
    self._starts, self._orders, self._lock = [0], {}, threading.Lock()

  def __getstate__(self):
    return {k: v for k, v in self.__dict__.items() if k not in ("_starts", "_orders", "_lock")}

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._starts, self._orders, self._lock = [0], {}, threading.Lock()

  def __len__(self) -> int:
    return sys.maxsize

  def _order(self, epoch: int) -> np.ndarray:
    order = self._orders.get(epoch)
    if order is None:
      order = epoch_order(self.weights, np.random.default_rng((*self.seed, epoch)))
      self._orders = {e: o for e, o in self._orders.items() if e >= epoch - 1}
      self._orders[epoch] = order
    return order

  def __getitem__(self, index: int):
    index = int(index)
    with self._lock:
      while self._starts[-1] <= index:  # reach the epoch holding `index`
        epoch = len(self._starts) - 1
        self._starts.append(self._starts[-1] + len(self._order(epoch)))
      epoch = int(np.searchsorted(self._starts, index, side="right")) - 1
      unit = self._order(epoch)[index - self._starts[epoch]]
    return self.units[unit]


class ReadRecord(grain.transforms.Map):
  """(corpus index, record index) -> the record."""

  def __init__(self, sources: Sequence[chat_corpus.ChatSource]):
    self.sources = list(sources)

  def map(self, unit):
    c, i = unit
    return self.sources[int(c)][int(i)]


class Render(grain.transforms.Map):
  """A record -> {"inputs", "targets", "weights"} of at most seq_len pairs (weights: the
  assistant mask of each target), or None when nothing of the reply fits."""

  def __init__(self, renderer: ChatRenderer, seq_len: int):
    self.renderer, self.seq_len = renderer, seq_len

  def map(self, record):
    try:
      ids, mask = self.renderer.render(record["messages"])
    except ChatTemplateError as e:
      raise SFTDataError(f"record {record.get('id')!r}: {e}") from e
    ids = np.asarray(ids[:self.seq_len + 1], np.int32)
    weights = np.asarray(mask[1:self.seq_len + 1], np.float32)
    if not weights.any():
      return None
    return {"inputs": ids[:-1], "targets": ids[1:], "weights": weights}


class ToBatchFormat(grain.transforms.Map):
  """Grain's packed features -> the trainer's batch keys, weights = the packed assistant mask."""

  def map(self, packed: dict) -> dict:
    return {"inputs": packed["inputs"].astype(np.int32),
            "targets": packed["targets"].astype(np.int32),
            "segment_ids": packed["inputs_segment_ids"].astype(np.int32),
            "positions": packed["inputs_positions"].astype(np.int32),
            "weights": packed["weights"].astype(np.float32)}


def _open(path: str, key: str):
  try:
    source, _ = chat_corpus.open_corpus(path, kind="sft")
    return source, chat_corpus.read_index(path)
  except chat_corpus.ChatCorpusError as e:
    raise SFTDataError(f"{key}={path!r}: {e}") from e


def _units(cfg: SFTDataConfig, split: str, process_index: int, process_count: int):
  """(sources, units [(corpus, record)], difficulty per unit) of one split for this process."""
  if split == "eval" and cfg.heldout_corpus:
    paths, keys = [cfg.heldout_corpus], ["config.sft.heldout_corpus"]
  else:
    paths = list(cfg.corpora)
    keys = [f"config.sft.corpora[{i}]" for i in range(len(paths))]
  sources, units, difficulty = [], [], []
  for c, (path, key) in enumerate(zip(paths, keys)):
    source, index = _open(path, key)
    sources.append(source)
    held = index["id_hash"].astype(np.float64) / 2.0**32 < cfg.eval_fraction
    if cfg.heldout_corpus:
      held = np.full(len(source), split == "eval")
    take = np.flatnonzero(held if split == "eval" else ~held)
    units += [(c, int(i)) for i in take]
    difficulty.append(index["difficulty"][take])
  units = units[process_index::process_count]
  difficulty = np.concatenate(difficulty)[process_index::process_count]
  return sources, units, difficulty


def _per_process(cfg: SFTDataConfig, process_count: int) -> int:
  if cfg.global_batch_size % process_count:
    raise SFTDataError(f"config.data.batch_size={cfg.global_batch_size} is not divisible by the "
                       f"{process_count} processes")
  return cfg.global_batch_size // process_count


def _packed(cfg: SFTDataConfig, ds: grain.MapDataset, batch_size: int, threads: int):
  renderer = ChatRenderer(cfg.tokenizer, template_file=cfg.template_file,
                          system_prompt=cfg.system_prompt)
  ds = ds.map(Render(renderer, cfg.seq_len)).filter(lambda x: x is not None)
  read = grain.ReadOptions(num_threads=threads, prefetch_buffer_size=4 * max(1, threads))
  packed = grain.experimental.FirstFitPackIterDataset(
      ds.to_iter_dataset(read),
      length_struct={"inputs": cfg.seq_len, "targets": cfg.seq_len, "weights": cfg.seq_len},
      num_packing_bins=cfg.packing_bins or batch_size, shuffle_bins=False)
  return packed.map(ToBatchFormat())


def make_iterator(cfg: SFTDataConfig, *, process_index: int = 0,
                  process_count: int = 1) -> grain.DatasetIterator:
  """An infinite iterator of this process's packed batches (resumable via get_state/set_state)."""
  batch_size = _per_process(cfg, process_count)
  sources, units, difficulty = _units(cfg, "train", process_index, process_count)
  if not units:
    raise SFTDataError(f"config.sft.corpora={list(cfg.corpora)}: no training examples for "
                       f"process {process_index}/{process_count} (eval_fraction="
                       f"{cfg.eval_fraction})")
  epochs = DifficultyEpochs(units, example_weights(difficulty, cfg), seed=(cfg.seed,))
  ds = grain.MapDataset.source(epochs).map(ReadRecord(sources))
  return iter(_packed(cfg, ds, batch_size, cfg.read_threads).batch(batch_size, drop_remainder=True))


def make_eval_batches(cfg: SFTDataConfig, *, num_batches: int, process_index: int = 0,
                      process_count: int = 1) -> list[dict]:
  """Exactly `num_batches` held-out batches: one pass over the held-out conversations in order,
  the last batch padded with weight-0 rows and all-padding batches after it (so processes step in
  lockstep and a weighted mean ignores the padding)."""
  batch_size = _per_process(cfg, process_count)
  sources, units, _ = _units(cfg, "eval", process_index, process_count)
  if not units:
    raise SFTDataError(
        f"no held-out conversations for process {process_index}/{process_count} (config.sft."
        f"{'heldout_corpus=' + repr(cfg.heldout_corpus) if cfg.heldout_corpus else f'eval_fraction={cfg.eval_fraction}'}"
        "): raise eval_fraction, give a heldout_corpus, or set config.eval.every_steps=0 and "
        "config.eval.at_end=False")
  out = []
  if units:
    ds = grain.MapDataset.source(units).map(ReadRecord(sources))
    for batch in _packed(cfg, ds, batch_size, 1).batch(batch_size, drop_remainder=False):
      if len(out) == num_batches:
        break
      out.append(packing.pad_batch(batch, batch_size))
  while len(out) < num_batches:
    out.append(packing.empty_rows(batch_size, cfg.seq_len))
  return out


def first_batches(cfg: SFTDataConfig, n: int) -> Iterator[dict]:
  """The first `n` training batches (tests, inspection)."""
  it = make_iterator(cfg)
  for _ in range(n):
    yield next(it)
