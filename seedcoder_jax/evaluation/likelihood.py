"""Teacher-forced likelihood of known answers: evaluation that moves at small scale.

A 2-core pretraining run is far too small for pass@1 to leave zero, but the per-token loss of a
benchmark's canonical solutions given its prompts falls as a code model improves, and so does the
loss of a masked middle given a FIM prompt (the paper's FIM ablation, measured without sampling).

  loss = target_loss(cfg, params, pairs)                      # pairs: [(context_ids, target_ids)]
  solution_loss(cfg, params, tok, problems)                   # canonical solution | prompt
  fim_middle_loss(cfg, params, tok, problems, order="spm")    # middle | FIM prompt (fim_humaneval)
  cross_file_loss(cfg, params, tok, repos)                    # a file | its repository's others

Every figure is sum(-log p(target token)) / (number of target tokens), float32, over all pairs;
solution_loss also gives it per character of the solutions (`nats_per_char`), which compares
models with different tokenizers.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from seedcoder_jax import model as model_lib
from seedcoder_jax.input import fim, repo_level
from seedcoder_jax.train import losses


@functools.partial(jax.jit, static_argnums=0)
def _sums(cfg, params, tokens_BT, targets_BT, weights_BT):
  logits = model_lib.forward(cfg, params, tokens_BT)
  nll, _, n = losses.cross_entropy(logits, targets_BT, weights_BT)
  return nll, n


def _bucket(n: int, step: int = 64) -> int:
  return -(-n // step) * step


def target_loss(cfg, params, pairs: Sequence[tuple[Sequence[int], Sequence[int]]], *,
                batch_size: int = 8, max_len: int | None = None) -> dict:
  """{"loss": per-token NLL of the targets, "tokens", "examples", "truncated"}.

  Each pair is run as context + target; only the target tokens are scored. Pairs longer than
  `max_len` (default: the model's max_seq_len) lose context from the left, then target from the
  right; `truncated` counts them.
  """
  max_len = max_len or cfg.max_seq_len
  rows, truncated = [], 0
  for context, target in pairs:
    context, target = list(context), list(target)
    if not target:
      raise ValueError("a pair with an empty target has nothing to score")
    if len(context) + len(target) > max_len + 1:
      truncated += 1
      target = target[:max_len]
      context = context[-(max_len + 1 - len(target)):]
    if not context:  # nothing to condition the first target token on: it is context
      context, target = target[:1], target[1:]
    if target:
      rows.append((context, target))
  rows.sort(key=lambda r: len(r[0]) + len(r[1]))  # similar lengths share a padded batch
  nll_total, n_total = 0.0, 0.0
  for s in range(0, len(rows), batch_size):
    batch = rows[s:s + batch_size]
    length = min(_bucket(max(len(c) + len(t) for c, t in batch) - 1), max_len)
    tokens = np.zeros((batch_size, length), np.int32)
    targets = np.zeros((batch_size, length), np.int32)
    weights = np.zeros((batch_size, length), np.float32)
    for r, (context, target) in enumerate(batch):
      ids = np.asarray(context + target, np.int32)
      tokens[r, :len(ids) - 1] = ids[:-1]
      targets[r, :len(ids) - 1] = ids[1:]
      weights[r, len(context) - 1:len(ids) - 1] = 1.0
    nll, n = _sums(cfg, params, jnp.asarray(tokens), jnp.asarray(targets), jnp.asarray(weights))
    nll_total += float(nll)
    n_total += float(n)
  return {"loss": nll_total / max(n_total, 1.0), "tokens": int(n_total), "examples": len(rows),
          "truncated": truncated}


def _with_bos(tok, ids: list[int]) -> list[int]:
  return ([tok.bos_id] if tok.bos_id is not None else []) + ids


def solution_loss(cfg, params, tok, problems, **kw) -> dict:
  """Per-token loss of each problem's canonical solution after its prompt (BOS first, as in
  pretraining); problems without a canonical solution are skipped and counted."""
  pairs = [(_with_bos(tok, tok.encode(p.prompt)), tok.encode(p.canonical_solution))
           for p in problems if p.canonical_solution]
  if not pairs:
    raise ValueError(f"none of the {len(problems)} problems has a canonical solution to score")
  out = target_loss(cfg, params, pairs, **kw)
  out["skipped"] = len(problems) - len(pairs)
  # Per character: comparable across tokenizers (unless a pair was truncated).
  chars = sum(len(p.canonical_solution) for p in problems if p.canonical_solution)
  out["nats_per_char"] = out["loss"] * out["tokens"] / chars
  return out


def fim_middle_loss(cfg, params, tok, problems, order: str = fim.SPM, **kw) -> dict:
  """Per-token loss of each infilling problem's middle (`target`) after its FIM prompt in `order`
  (the pretraining layout, sampling.fim_prompt's), BOS first."""
  from seedcoder_jax.sampling import fim_prompt
  pairs = [(_with_bos(tok, fim_prompt(tok, p.prompt, p.suffix, order)), tok.encode(p.target))
           for p in problems if p.target]
  return target_loss(cfg, params, pairs, **kw)


def cross_file_pairs(tok, repo, *, files_per_repo: int, target_tokens: int, context_tokens: int):
  """(with-context pair, without-context pair) per target file of one repository.

  The files are laid out as the pretraining pipeline's repository-level documents
  (input/repo_level.py: dependency order, `<s> <repo_name> name <file_sep> path \\n content ...`),
  with a fixed tie-break seed. The targets are the last `files_per_repo` files of that order (the
  ones with the most of the repository before them), each cut to its first `target_tokens` tokens.
  With context, the files before it (nearest first, up to `context_tokens` tokens) and its own
  header precede it; without, only the repository and file header do. Same target tokens in both.
  """
  paths = [p for p, _ in repo.files]
  texts = [t for _, t in repo.files]
  order = repo_level.dependency_order(paths, texts, ["python"] * len(paths),
                                      np.random.default_rng(0))
  head = [tok.bos_id, tok.repo_id] + tok.encode(repo.name)
  file_ids = lambda i: [tok.file_sep_id] + tok.encode(paths[i] + "\n")
  text_ids = functools.cache(lambda i: tok.encode(texts[i]))  # a target is the next one's context
  out = []
  for k in range(max(1, len(order) - files_per_repo), len(order)):
    target = text_ids(order[k])[:target_tokens]
    if len(target) < 2:
      continue
    before = []
    for j in reversed(order[:k]):  # nearest files first, until the context budget is spent
      before = file_ids(j) + text_ids(j) + before
      if len(before) >= context_tokens:
        break
    own = file_ids(order[k])
    with_context = (head + before + own)[-context_tokens:]
    out.append(((with_context, target), (head + own, target)))
  return out


def cross_file_loss(cfg, params, tok, repos, *, files_per_repo: int = 8, target_tokens: int = 128,
                    max_len: int | None = None, **kw) -> dict:
  """Repository-level likelihood: the per-token loss of held-out files given the other files of
  their repository before them (`loss`), the same tokens given only the repository and file
  header (`loss_alone`), and `gain` = loss_alone - loss, the nats per token the model takes from
  other files (what repository-level pretraining should teach). `repos`: repo_heldout.load()'s.
  Each row holds at most `max_len` tokens (default: the model's max_seq_len); the context fills
  what the target leaves."""
  missing = [n for n in ("repo_name", "file_sep") if tok.special_ids.get(n) is None]
  if missing:
    raise ValueError(f"the tokenizer has no {missing} token(s): repository-level documents "
                     "cannot be laid out (train it with the project's special tokens)")
  max_len = max_len or cfg.max_seq_len
  if target_tokens >= max_len:
    raise ValueError(f"target_tokens={target_tokens} leaves no context in rows of {max_len}")
  pairs = [p for repo in repos for p in cross_file_pairs(
      tok, repo, files_per_repo=files_per_repo, target_tokens=target_tokens,
      context_tokens=max_len + 1 - target_tokens)]
  if not pairs:
    raise ValueError(f"no target file in {len(repos)} repositories")
  with_context = target_loss(cfg, params, [w for w, _ in pairs], max_len=max_len, **kw)
  alone = target_loss(cfg, params, [a for _, a in pairs], max_len=max_len, **kw)
  return {"loss": with_context["loss"], "loss_alone": alone["loss"],
          "gain": alone["loss"] - with_context["loss"], "tokens": with_context["tokens"],
          "examples": with_context["examples"], "truncated": with_context["truncated"],
          "repos": [r.name for r in repos]}
