"""The DPO trainer (`config.trainer = "dpo"`): preference pairs, a frozen reference, TRL's metrics.

    python launch/train.py --config=configs/dpo.py:demo --workdir=DIR

The pretraining loop (train.trainer.train: mesh, checkpoints with the data position, exact
resume, metrics.jsonl + TensorBoard, held-out evaluation) with the DPO objective:

1. Pairs (chat_corpus kind "pairs") are tokenized once: the prompt in the policy's chat format,
   each reply as the model generates it (text, then the turn end). A row is prompt + reply, right
   padded to seq_len; a reply that does not fit is cut (its mask too) and counted.
2. The reference log-probabilities (summed over each reply's tokens) are computed once, before
   training, by a forward pass of the frozen reference = the config.init weights, and stored in
   WORKDIR/reference.npz with a fingerprint of those weights and of the pairs. A rerun reuses
   the file only if both match; a pairs corpus that already carries ref_chosen/ref_rejected must
   name the same reference fingerprint in its metadata, or training is refused.
3. Each step: the policy's summed log-probs of chosen and rejected (rows interleaved: 2i chosen,
   2i+1 rejected), `posttrain.dpo_loss` per pair (sigmoid / ipo with length-normalised log-probs /
   label-smoothed cDPO), plus `rpo_alpha` x the chosen reply's mean token NLL (RPO). Sums over
   pairs, divided by the global pair count: microbatching does not change the update.
Metrics: loss, dpo_loss, rewards/chosen|rejected|margins|accuracies, logps/chosen|rejected (and
the same with an eval_ prefix on the held-out pairs: eval_rewards/accuracies is the held-out
preference accuracy).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib
from typing import Any, Mapping

import grain
import jax
import jax.numpy as jnp
import numpy as np

from seedcoder_jax import sharding as sharding_lib
from seedcoder_jax.posttrain import chat_corpus
from seedcoder_jax.posttrain import dpo as dpo_lib
from seedcoder_jax.posttrain import logprobs
from seedcoder_jax.posttrain import sft as sft_lib
from seedcoder_jax.posttrain import sft_data
from seedcoder_jax.posttrain.chat_template import ChatRenderer
from seedcoder_jax.train import step as step_lib
from seedcoder_jax.train import trainer as trainer_lib
from seedcoder_jax.train.config import ConfigError, PretrainConfig, from_tree

REFERENCE_FILE = "reference.npz"
BATCH_KEYS = ("tokens", "mask", "ref_logps", "pair_weight")


@dataclasses.dataclass(frozen=True)
class DPOConfig:
  pairs: str                       # a chat corpus of kind "pairs" (data/make_dpo_pairs.py)
  heldout_pairs: str = ""          # pairs for held-out preference accuracy ("" = none)
  beta: float = 0.1
  loss_type: str = "sigmoid"       # sigmoid | ipo
  label_smoothing: float = 0.0     # > 0: conservative DPO (sigmoid only)
  rpo_alpha: float = 0.0           # > 0: + alpha x chosen NLL (RPO)
  template_file: str = ""
  system_prompt: str = "You are a helpful coding assistant."
  reference_batch: int = 8         # pairs per forward pass of the reference

  def __post_init__(self):
    try:  # the loss's own checks, before any work
      dpo_lib.dpo_loss(jnp.zeros(1), jnp.zeros(1), jnp.zeros(1), jnp.zeros(1), beta=self.beta,
                       loss_type=self.loss_type, label_smoothing=self.label_smoothing)
    except ValueError as e:
      raise ConfigError(f"config.dpo: {e}") from e
    if self.rpo_alpha < 0:
      raise ConfigError(f"config.dpo.rpo_alpha={self.rpo_alpha} must be >= 0")
    if self.reference_batch < 1:
      raise ConfigError(f"config.dpo.reference_batch={self.reference_batch} must be >= 1")


def config_from_tree(tree: Mapping[str, Any]) -> tuple[PretrainConfig, DPOConfig, str]:
  """Validates a DPO config tree -> (trainer config, DPO config, tokenizer spec)."""
  base, dpo, data = sft_lib.post_training_tree(
      tree, "dpo", tuple(f.name for f in dataclasses.fields(DPOConfig)))
  if not dpo.get("pairs"):
    raise ConfigError("config.dpo.pairs is empty: give a pairs corpus (data/make_dpo_pairs.py)")
  cfg = from_tree({**base, "data": data, "prepare": {}})
  if cfg.init.kind == "random":
    raise ConfigError("config.init.kind='random': DPO starts from a trained policy (the frozen "
                      "reference is the same weights); give workdir, hf, gguf or orbax")
  return cfg, DPOConfig(**dpo), data["tokenizer"]


# --- pairs -> arrays --------------------------------------------------------------------------------

@dataclasses.dataclass
class PairArrays:
  tokens: np.ndarray   # [N, 2, T] int32: prompt + reply, right-padded (0: chosen, 1: rejected)
  mask: np.ndarray     # [N, 2, T] float32: 1 on the reply's tokens (turn end included)
  ids: list            # [N] record ids
  truncated: int       # replies cut to fit seq_len


def encode_pairs(path: str, renderer: ChatRenderer, seq_len: int, key: str) -> PairArrays:
  """Every pair of the corpus at `path`, tokenized (errors name `key` and the record)."""
  try:
    records, _ = chat_corpus.read_all(path, kind="pairs")
  except chat_corpus.ChatCorpusError as e:
    raise ConfigError(f"{key}={path!r}: {e}") from e
  n = len(records)
  tokens = np.zeros((n, 2, seq_len), np.int32)
  mask = np.zeros((n, 2, seq_len), np.float32)
  truncated = 0
  for i, r in enumerate(records):
    prompt = renderer.prompt_ids(r["prompt"])
    if len(prompt) >= seq_len:
      raise ConfigError(f"{key}={path!r} record {i} (id={r['id']!r}): its prompt has "
                        f"{len(prompt)} tokens, no room for a reply in seq_len={seq_len}")
    for j, text in enumerate((r["chosen"], r["rejected"])):
      row = prompt + renderer.completion_ids(text)
      truncated += len(row) > seq_len
      row = row[:seq_len]
      tokens[i, j, :len(row)] = row
      mask[i, j, len(prompt):len(row)] = 1.0
  return PairArrays(tokens, mask, [r["id"] for r in records], truncated)


# --- the frozen reference -----------------------------------------------------------------------

def params_fingerprint(params) -> str:
  """sha256 over every leaf's shape, dtype and a strided sample of its exact float32 bits (up to
  4096 entries a leaf): cheap at any size, and any retraining changes it."""
  h = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_leaves_with_path(params):
    flat = jnp.ravel(leaf)
    stride = max(1, flat.shape[0] // 4096)
    sample = np.asarray(jax.device_get(flat[::stride].astype(jnp.float32)))
    h.update(f"{jax.tree_util.keystr(path)}{tuple(leaf.shape)}".encode())
    h.update(sample.tobytes())
  return h.hexdigest()


def pairs_fingerprint(arrays: PairArrays) -> str:
  h = hashlib.sha256()
  h.update(arrays.tokens.tobytes())
  h.update(arrays.mask.tobytes())
  return h.hexdigest()


def reference_logps(model_cfg, params, arrays: PairArrays, batch: int, mesh) -> np.ndarray:
  """[N, 2] float32 summed reply log-probs under `params` (no gradient, batches of `batch`)."""
  fn = jax.jit(lambda p, t, m: logprobs.sequence_logprobs(model_cfg, p, t, m))
  n, _, t = arrays.tokens.shape
  rows = batch * 2
  multiple = mesh.shape["data"] * mesh.shape["fsdp"]
  rows = -(-rows // multiple) * multiple
  out = np.zeros((n * 2,), np.float32)
  flat_t, flat_m = arrays.tokens.reshape(n * 2, t), arrays.mask.reshape(n * 2, t)
  with sharding_lib.activate(mesh):
    for s in range(0, n * 2, rows):
      tt, mm = flat_t[s:s + rows], flat_m[s:s + rows]
      k = len(tt)
      if k < rows:  # pad the last batch: one compiled shape
        tt = np.concatenate([tt, np.zeros((rows - k, t), np.int32)])
        mm = np.concatenate([mm, np.zeros((rows - k, t), np.float32)])
      got = fn(params, *sharding_lib.place_batch((tt, mm), mesh))
      out[s:s + k] = np.asarray(jax.device_get(got))[:k]
  return out.reshape(n, 2)


def _identity(cfg: PretrainConfig, dpo: DPOConfig, train: PairArrays, heldout) -> dict:
  return {"init": dataclasses.asdict(cfg.init), "seq_len": cfg.seq_len,
          "template_file": dpo.template_file, "system_prompt": dpo.system_prompt,
          "pairs": pairs_fingerprint(train),
          "heldout_pairs": pairs_fingerprint(heldout) if heldout is not None else ""}


def _carried(path: str, ids: list, key: str):
  """Reference log-probs carried in the corpus records, with their fingerprint, or None."""
  records, meta = chat_corpus.read_all(path, kind="pairs")
  have = ["ref_chosen" in r and "ref_rejected" in r for r in records]
  if not any(have):
    return None
  if not all(have) or not meta.get("reference_fingerprint"):
    raise ConfigError(f"{key}={path!r}: only some records carry ref_chosen/ref_rejected, or the "
                      "corpus metadata lacks reference_fingerprint: recompute them all")
  return (np.asarray([[r["ref_chosen"], r["ref_rejected"]] for r in records], np.float32),
          meta["reference_fingerprint"])


def prepare_reference(cfg: PretrainConfig, dpo: DPOConfig, train: PairArrays, heldout,
                      workdir: pathlib.Path) -> tuple[np.ndarray, Any]:
  """(train refs [N, 2], held-out refs [M, 2] or None): WORKDIR/reference.npz when it matches
  this config and these pairs, else one pass of the frozen reference (stored there)."""
  path = workdir / REFERENCE_FILE
  identity = _identity(cfg, dpo, train, heldout)
  if path.is_file():
    with np.load(path, allow_pickle=False) as f:
      stored = json.loads(str(f["identity"]))
      if stored != identity:
        changed = sorted(k for k in identity if stored.get(k) != identity[k])
        raise ConfigError(
            f"{path} holds reference log-probs for other {', '.join(changed)} than this run's "
            "config: use a fresh workdir (or delete the file to recompute it)")
      return f["train"], (f["heldout"] if heldout is not None else None)
  mesh = sharding_lib.make_mesh(dict(cfg.mesh))
  params, source = trainer_lib.initial_params(cfg, mesh)
  fingerprint = params_fingerprint(params)
  refs = []
  for arrays, p, key in ((train, dpo.pairs, "config.dpo.pairs"),
                         (heldout, dpo.heldout_pairs, "config.dpo.heldout_pairs")):
    if arrays is None:
      refs.append(None)
      continue
    carried = _carried(p, arrays.ids, key)
    if carried is not None:
      if carried[1] != fingerprint:
        raise ConfigError(
            f"{key}={p!r} carries reference log-probs of other weights (fingerprint "
            f"{carried[1][:12]}..., config.init gives {fingerprint[:12]}... from {source})")
      refs.append(carried[0])
    else:
      print(f"[dpo] reference log-probs of {len(arrays.ids)} pairs ({key}) from {source}",
            flush=True)
      refs.append(reference_logps(cfg.model, params, arrays, dpo.reference_batch, mesh))
  del params
  if jax.process_index() == 0:
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, train=refs[0], heldout=refs[1] if refs[1] is not None else np.zeros((0, 2)),
             identity=np.asarray(json.dumps(identity)), fingerprint=np.asarray(fingerprint))
    tmp.replace(path)
  return refs[0], refs[1]


# --- the objective --------------------------------------------------------------------------------

def dpo_objective(dpo: DPOConfig) -> step_lib.Objective:
  """DPO over rows interleaved chosen/rejected; sums over pairs weighted by pair_weight."""

  def loss_sums(model_cfg, params, batch):
    mask_RT = batch["mask"]
    logp_R = logprobs.sequence_logprobs(model_cfg, params, batch["tokens"], mask_RT)
    ref_R = batch["ref_logps"]
    n_R = jnp.maximum(jnp.sum(mask_RT, axis=-1), 1.0)
    if dpo.loss_type == "ipo":  # IPO on length-normalised log-probs (dpo.py's docstring)
      pol_R, ref_R = logp_R / n_R, ref_R / n_R
    else:
      pol_R = logp_R
    pair = lambda x_R: x_R.reshape(-1, 2)
    pol_P2, ref_P2, w_P = pair(pol_R), pair(ref_R), batch["pair_weight"][0::2]

    def one(pc, pr, rc, rr):
      return dpo_lib.dpo_loss(pc[None], pr[None], rc[None], rr[None], beta=dpo.beta,
                              loss_type=dpo.loss_type, label_smoothing=dpo.label_smoothing)

    loss_P, metrics_P = jax.vmap(one)(pol_P2[:, 0], pol_P2[:, 1], ref_P2[:, 0], ref_P2[:, 1])
    sums = {k: jnp.sum(w_P * v) for k, v in metrics_P.items()}
    sums["dpo_loss"] = jnp.sum(w_P * loss_P)
    total = sums["dpo_loss"]
    if dpo.rpo_alpha:
      nll_P = -pair(logp_R)[:, 0] / pair(n_R)[:, 0]
      sums["rpo_nll"] = jnp.sum(w_P * nll_P)
      total = total + dpo.rpo_alpha * sums["rpo_nll"]
    sums["loss"] = total
    sums["tokens"] = jnp.sum(w_P)  # the count: pairs
    return total, sums

  def batch_shapes(batch_size, seq_len):
    rows = 2 * batch_size
    return {"tokens": jax.ShapeDtypeStruct((rows, seq_len), jnp.int32),
            "mask": jax.ShapeDtypeStruct((rows, seq_len), jnp.float32),
            "ref_logps": jax.ShapeDtypeStruct((rows,), jnp.float32),
            "pair_weight": jax.ShapeDtypeStruct((rows,), jnp.float32)}

  return step_lib.Objective("dpo", loss_sums, batch_shapes)


# --- input ------------------------------------------------------------------------------------------

class PairRows(grain.transforms.Map):
  """A pair index -> its two rows (chosen, rejected) with their reference log-probs."""

  def __init__(self, tokens, mask, refs):
    self.tokens, self.mask, self.refs = tokens, mask, refs

  def map(self, i):
    return {"tokens": self.tokens[i], "mask": self.mask[i],
            "ref_logps": self.refs[i].astype(np.float32), "pair_weight": np.ones(2, np.float32)}


class Interleave(grain.transforms.Map):
  """[P, 2, ...] -> [2P, ...]: rows 2i (chosen) and 2i+1 (rejected) of pair i."""

  def map(self, batch):
    return {k: v.reshape(-1, *v.shape[2:]) for k, v in batch.items()}


def data_source(cfg: PretrainConfig, train: PairArrays, train_refs, heldout, heldout_refs, seed):
  def train_iter(pi, pc):
    if cfg.batch_size % pc:
      raise ConfigError(f"config.data.batch_size={cfg.batch_size} is not divisible by {pc} processes")
    units = list(range(len(train.ids)))[pi::pc]
    epochs = sft_data.DifficultyEpochs(units, np.ones(len(units)), seed=(seed,))
    ds = grain.MapDataset.source(epochs).map(PairRows(train.tokens, train.mask, train_refs))
    return iter(ds.to_iter_dataset().batch(cfg.batch_size // pc, drop_remainder=True)
                .map(Interleave()))

  def eval_batches(pi, pc):
    per = cfg.batch_size // pc
    idx = list(range(len(heldout.ids)))[pi::pc]
    rows = PairRows(heldout.tokens, heldout.mask, heldout_refs)
    out = []
    for s in range(0, max(len(idx), 1), per):
      items = [rows.map(i) for i in idx[s:s + per]]
      while len(items) < per:  # pad with weight-0 pairs (the last batch, or a process with none)
        items.append({k: np.zeros_like(v) for k, v in rows.map(0).items()})
      out.append(Interleave().map({k: np.stack([it[k] for it in items]) for k in BATCH_KEYS}))
    return out

  return trainer_lib.DataSource(train=train_iter, eval=eval_batches if heldout is not None else None)


def run(config, workdir) -> dict:
  """The trainer boundary (launch/train.py): config -> pairs, reference pass -> train."""
  raw = config.to_dict() if hasattr(config, "to_dict") else dict(config)
  cfg, dpo, tokenizer = config_from_tree(raw)
  workdir = pathlib.Path(workdir).absolute()
  try:  # the device checks too, before the pairs and the reference pass
    trainer_lib.validate(cfg, sharding_lib.make_mesh(dict(cfg.mesh)), rows_per_example=2)
  except sharding_lib.MeshError as e:
    raise ConfigError(f"config.mesh={dict(cfg.mesh)}: {e}") from e
  workdir.mkdir(parents=True, exist_ok=True)
  renderer = ChatRenderer(tokenizer, template_file=dpo.template_file,
                          system_prompt=dpo.system_prompt)
  train = encode_pairs(dpo.pairs, renderer, cfg.seq_len, "config.dpo.pairs")
  heldout = (encode_pairs(dpo.heldout_pairs, renderer, cfg.seq_len, "config.dpo.heldout_pairs")
             if dpo.heldout_pairs else None)
  if len(train.ids) < cfg.batch_size:
    raise ConfigError(f"config.dpo.pairs={dpo.pairs!r} has {len(train.ids)} pairs, fewer than "
                      f"config.data.batch_size={cfg.batch_size} pairs per step")
  if train.truncated and jax.process_index() == 0:
    print(f"[dpo] {train.truncated} replies cut to fit seq_len={cfg.seq_len}", flush=True)
  train_refs, heldout_refs = prepare_reference(cfg, dpo, train, heldout, workdir)
  if heldout is not None and not (cfg.eval.every_steps or cfg.eval.at_end):
    heldout = None
  data = data_source(cfg, train, train_refs, heldout, heldout_refs, cfg.seed)
  return trainer_lib.train(cfg, workdir, data=data, raw_config=raw, objective=dpo_objective(dpo),
                           name="dpo", rows_per_example=2)
