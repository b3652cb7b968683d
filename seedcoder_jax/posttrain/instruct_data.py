"""Synthetic, sandbox-verified instruction data (Seed-Coder section 3.1); SFT data from problems.

Two sources write the same chat corpus (posttrain.chat_corpus, kind "sft") plus DIR/stats.json
({"input", "kept", "rejected": {reason: n}, ...} with input == kept + sum(rejected), always):

`generate` (run_generate): seeds are bounded snippets of the curated corpus's best files (top
fraction by quality score) and its code-text documents ("web" records). Per seed, with a blended
style drawn for it (instruct_prompts), the generator LLM writes an instruction, a response with
code and unit tests, which syntax, decontamination, difficulty, sandbox self-correction and a
correctness judge filter (instruct_pipeline: the order and the named REASONS). Seeds run
`concurrency` at a time in threads (generation is I/O-bound against an endpoint). Every outcome is
appended to DIR/journal.jsonl and flushed before the next (instruct_journal), so a killed run
resumes where it stopped; a journal written under another configuration is refused, never
silently restarted. The corpus is written from the journal at the end.

`problems` (problem_records / run_problems): the TRAIN split of a verifiable problem set
(posttrain.problem_set) as SFT records, the reference solution as the answer; held-out problems
never become SFT data.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import os
import pathlib
import random
from typing import Any, Optional, Sequence

from seedcoder_jax.curation import oracle as oracle_lib
from seedcoder_jax.posttrain import chat_corpus
from seedcoder_jax.posttrain import instruct_filters as filters_lib
from seedcoder_jax.posttrain.instruct_pipeline import REASONS, Pipeline

SOURCES = ("generate", "problems")
JOURNAL_FILE = "journal.jsonl"
STATS_FILE = "stats.json"
CORPUS_DIR = "corpus"


class InstructDataError(ValueError):
  """A bad config, seed corpus or journal (the message names the key, file or line)."""


# ----------------------------------------------------------------------------- config


@dataclasses.dataclass(frozen=True)
class SeedsConfig:
  """Which snippets seed the generator (configs/instruct_data.py documents every key)."""
  corpus: str = ""  # a pre-scored corpus dir; "" = this interpreter's stdlib, heuristic scores
  top_fraction: float = 0.5
  num_files: int = 4
  num_web: int = 0
  languages: tuple[str, ...] = ("python",)
  min_chars: int = 200
  max_chars: int = 1200


@dataclasses.dataclass(frozen=True)
class FiltersConfig:
  min_difficulty: int = 3
  judge_min_score: int = 6
  judge_max_new_tokens: int = 256
  decontam_n: int = 10
  decontam_benchmarks: tuple[str, ...] = ()  # () = every benchmark the harness evaluates


@dataclasses.dataclass(frozen=True)
class SandboxConfig:
  max_revisions: int = 2
  timeout_s: float = 10.0
  memory_mb: int = 1024
  workers: int = 2
  max_error_chars: int = 1500


@dataclasses.dataclass(frozen=True)
class ProblemsConfig:
  dir: str = ""  # a built problem set; "" = build one under DIR/problems
  build_limit: int = 200
  system_prompt: str = ""


@dataclasses.dataclass(frozen=True)
class PromptsConfig:
  generate: str = ""
  revise: str = ""
  judge: str = ""
  difficulty: str = ""


_GROUPS = {"seeds": SeedsConfig, "filters": FiltersConfig, "sandbox": SandboxConfig,
           "problems": ProblemsConfig, "prompts": PromptsConfig}
# OracleConfig keys of the rating oracle that generation never reads (left out of stats.json).
_UNUSED_GENERATOR_KEYS = {"prompt_file", "sample_size", "sample_seed", "max_code_chars",
                          "cache_path", "out_of_range", "geval_min_digit_mass"}
# Keys that change how fast a run goes, not what it produces: a resumed run may change them.
_OPERATIONAL = {"concurrency", "progress", "sandbox.workers", "generator.concurrency",
                "generator.timeout_s", "generator.max_retries", "generator.backoff_s",
                "generator.batch_size", "seeds.num_files", "seeds.num_web"}


@dataclasses.dataclass(frozen=True)
class InstructConfig:
  source: str = "generate"
  seed: int = 0
  concurrency: int = 1
  styles_file: str = ""
  generator: oracle_lib.OracleConfig = oracle_lib.OracleConfig(
      backend="sampler", max_prompt_tokens=1024, max_new_tokens=512, batch_size=1)
  seeds: SeedsConfig = SeedsConfig()
  filters: FiltersConfig = FiltersConfig()
  sandbox: SandboxConfig = SandboxConfig()
  problems: ProblemsConfig = ProblemsConfig()
  prompts: PromptsConfig = PromptsConfig()

  def __post_init__(self):
    errors = []
    if self.source not in SOURCES:
      errors.append(f"source={self.source!r} is not one of {SOURCES}")
    if self.generator.backend not in ("sampler", "http"):
      errors.append(f"generator.backend={self.generator.backend!r}: generation needs 'sampler' "
                    "or 'http' (geval reads a rating's logits and writes no text)")
    s, f, b = self.seeds, self.filters, self.sandbox
    if not 0.0 < s.top_fraction <= 1.0:
      errors.append(f"seeds.top_fraction={s.top_fraction} must be in (0, 1]")
    if s.num_files < 0 or s.num_web < 0 or s.num_files + s.num_web == 0:
      errors.append(f"seeds.num_files={s.num_files} and seeds.num_web={s.num_web} must be >= 0, "
                    "not both 0")
    if not 0 < s.min_chars <= s.max_chars:
      errors.append(f"seeds.min_chars={s.min_chars} must be in (0, seeds.max_chars={s.max_chars}]")
    for name, v in (("filters.min_difficulty", f.min_difficulty),
                    ("filters.judge_min_score", f.judge_min_score)):
      if not 0 <= v <= 10:
        errors.append(f"{name}={v} must be in 0..10")
    for name, v in (("concurrency", self.concurrency), ("sandbox.workers", b.workers),
                    ("sandbox.memory_mb", b.memory_mb), ("filters.decontam_n", f.decontam_n),
                    ("filters.judge_max_new_tokens", f.judge_max_new_tokens),
                    ("sandbox.max_error_chars", b.max_error_chars)):
      if v < 1:
        errors.append(f"{name}={v} must be >= 1")
    if b.max_revisions < 0 or b.timeout_s <= 0:
      errors.append(f"sandbox.max_revisions={b.max_revisions} must be >= 0 and "
                    f"sandbox.timeout_s={b.timeout_s} > 0")
    if self.problems.build_limit < 1:
      errors.append(f"problems.build_limit={self.problems.build_limit} must be >= 1")
    if errors:
      raise InstructDataError("invalid instruction-data config: " + "; ".join(errors))

  @classmethod
  def from_dict(cls, d: dict, where: str = "instruction-data config") -> "InstructConfig":
    """From configs/instruct_data.py's dict; an unknown key is an error naming it."""
    d = dict(d)
    top = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - top)
    if unknown:
      raise InstructDataError(f"{where}: unknown key(s) {unknown}; known: {sorted(top)}")
    kwargs: dict[str, Any] = {k: v for k, v in d.items() if k not in _GROUPS and k != "generator"}
    for name, group in _GROUPS.items():
      if name in d:
        sub = dict(d[name])
        known = [f.name for f in dataclasses.fields(group)]
        bad = sorted(set(sub) - set(known))
        if bad:
          raise InstructDataError(f"{where}: unknown key(s) {[f'{name}.{k}' for k in bad]}; "
                                  f"known: {known}")
        for k in ("languages", "decontam_benchmarks"):
          if k in sub:
            sub[k] = tuple(sub[k])
        kwargs[name] = group(**sub)
    if "generator" in d:
      try:
        kwargs["generator"] = oracle_lib.OracleConfig.from_dict(dict(d["generator"]),
                                                                f"{where}: generator")
      except ValueError as e:
        raise InstructDataError(str(e)) from e
    return cls(**kwargs)

  def flat(self) -> dict:
    """{"group.key": value} of every setting (stats.json, the journal's fingerprint)."""
    out = {}
    for k, v in dataclasses.asdict(self).items():
      if isinstance(v, dict):
        out.update({f"{k}.{kk}": list(vv) if isinstance(vv, tuple) else vv for kk, vv in v.items()
                    if not (k == "generator" and kk in _UNUSED_GENERATOR_KEYS)})
      else:
        out[k] = v
    return out


# ----------------------------------------------------------------------------- seeds


@dataclasses.dataclass(frozen=True)
class Seed:
  """A snippet the generator starts from; `id` is a hash of its text (stable across runs)."""
  id: str
  text: str
  kind: str      # "file" | "web"
  language: str
  provenance: dict  # corpus, record index, repo, path, score, offset of the window


def snippet(text: str, max_chars: int, rng: random.Random) -> tuple[int, str]:
  """(offset, window): at most max_chars of `text`, starting and ending on line boundaries."""
  if len(text) <= max_chars:
    return 0, text
  starts = [0] + [i + 1 for i, c in enumerate(text[:len(text) - max_chars]) if c == "\n"]
  start = rng.choice(starts)
  window = text[start:start + max_chars]
  cut = window.rfind("\n")
  return start, window[:cut + 1] if cut > max_chars // 2 else window


def select_seeds(cfg: SeedsConfig, run_seed: int = 0) -> tuple[list[Seed], dict]:
  """(seeds, description) from the seed corpus: files in the top `top_fraction` by score and of
  `languages`, and web records, visited in a seeded random order until both counts are met.
  Growing num_files / num_web keeps the earlier seeds (the same order is walked further)."""
  import numpy as np
  if cfg.corpus:
    from seedcoder_jax.input import corpus as corpus_lib
    try:
      corpus = corpus_lib.open_corpus(cfg.corpus)
    except corpus_lib.CorpusError as e:
      raise InstructDataError(f"seeds.corpus: {e}") from e
    scores = np.asarray(corpus.scores, np.float64)
    get, where = corpus.source.__getitem__, cfg.corpus
  else:
    from seedcoder_jax.input import source_files
    records = list(source_files.iter_source_records(source_files.default_source_dir()))
    scores = np.asarray([r["score"] for r in records], np.float64)
    get, where = records.__getitem__, f"stdlib:{source_files.default_source_dir()}"
  if len(scores) == 0:
    raise InstructDataError(f"seed corpus {where} is empty")
  threshold = float(np.quantile(scores, 1.0 - cfg.top_fraction))
  order = list(range(len(scores)))
  rng = random.Random(f"seeds:{run_seed}")
  rng.shuffle(order)
  files, web, seen = [], [], set()
  for index in order:
    if len(files) >= cfg.num_files and len(web) >= cfg.num_web:
      break
    want_file = len(files) < cfg.num_files and scores[index] >= threshold
    if not want_file and len(web) >= cfg.num_web:
      continue
    r = get(index)
    is_web = r["kind"] == "web"
    if (is_web and len(web) >= cfg.num_web) or (not is_web and (
        not want_file or r["kind"] != "file" or r["language"] not in cfg.languages)):
      continue
    if len(r["text"].strip()) < cfg.min_chars:
      continue
    offset, text = snippet(r["text"], cfg.max_chars, random.Random(f"window:{run_seed}:{index}"))
    sid = "seed/" + hashlib.sha256(f"{r['kind']}\n{text}".encode()).hexdigest()[:16]
    if sid in seen:
      continue
    seen.add(sid)
    seed = Seed(id=sid, text=text, kind=r["kind"], language=r["language"],
                provenance={"corpus": where, "index": index, "repo": r["repo"], "path": r["path"],
                            "score": round(float(scores[index]), 3), "offset": offset})
    (web if is_web else files).append(seed)
  description = {"corpus": where, "score_threshold": round(threshold, 3), "files": len(files),
                 "web": len(web), "candidates": len(scores)}
  return files + web, description


# ----------------------------------------------------------------------------- runs


def fingerprint_parts(cfg: InstructConfig, pipeline: Pipeline) -> dict:
  """What decides a seed's outcome besides the seed: templates, styles, outcome-shaping config."""
  return {"config": {k: v for k, v in cfg.flat().items() if k not in _OPERATIONAL},
          "templates": {k: hashlib.sha256(t.encode()).hexdigest()[:16]
                        for k, t in pipeline.templates.items()},
          "styles": hashlib.sha256(json.dumps(pipeline.blends).encode()).hexdigest()[:16],
          "generator_model": pipeline.backend.model}


def _write_atomic(path: pathlib.Path, text: str) -> None:
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_text(text, encoding="utf-8")
  os.replace(tmp, path)


def _clear_outputs(out: pathlib.Path) -> None:
  """Old stats and corpus must not vouch for a run that is about to change them."""
  (out / STATS_FILE).unlink(missing_ok=True)
  (out / CORPUS_DIR / chat_corpus.METADATA_FILE).unlink(missing_ok=True)


def _progress(total: int, enabled: bool, desc: str):
  if not enabled:
    return None
  from tqdm import tqdm
  return tqdm(total=total, desc=desc, unit="seed", dynamic_ncols=True)


def run_generate(cfg: InstructConfig, workdir, *, backend=None,
                 seeds: Optional[Sequence[Seed]] = None, overwrite: bool = False,
                 progress: bool = False) -> dict:
  """Generates, filters and verifies one example per seed; writes DIR/corpus and DIR/stats.json.

  Args:
    cfg: the run's settings (InstructConfig.from_dict of configs/instruct_data.py).
    workdir: DIR; DIR/journal.jsonl holds every finished seed's outcome (resume state).
    backend: the generator (default oracle_backends.make_backend(cfg.generator)); anything with
      its `name`, `model` and `generate` interface.
    seeds: default select_seeds(cfg.seeds, cfg.seed).
    overwrite: start over, discarding the journal (otherwise a rerun resumes from it).
    progress: a tqdm bar over the seeds.

  Returns the stats (also DIR/stats.json): input == kept + sum(rejected), always.
  """
  from seedcoder_jax.posttrain import instruct_journal
  out = pathlib.Path(workdir)
  out.mkdir(parents=True, exist_ok=True)
  _clear_outputs(out)
  if overwrite:
    (out / JOURNAL_FILE).unlink(missing_ok=True)
  seed_info = {"corpus": "given", "files": None, "web": None}
  if seeds is None:
    seeds, seed_info = select_seeds(cfg.seeds, cfg.seed)
  ids = [s.id for s in seeds]
  if len(set(ids)) != len(ids):
    raise InstructDataError("two seeds share an id (the same snippet twice)")
  if backend is None:
    from seedcoder_jax.curation import oracle_backends
    backend = oracle_backends.make_backend(cfg.generator)
  pipeline = Pipeline(cfg, backend)
  try:
    journal = instruct_journal.Journal(out / JOURNAL_FILE, fingerprint_parts(cfg, pipeline))
  except instruct_journal.JournalError as e:
    raise InstructDataError(str(e)) from e
  # Seeds whose last outcome was a transient endpoint failure are tried again.
  todo = [s for s in seeds if s.id not in journal.done or journal.done[s.id].get("transient")]
  resumed = len(seeds) - len(todo)
  bar = _progress(len(todo), progress, "instructions")
  filters_lib.benchmark_index(cfg.filters.decontam_n, cfg.filters.decontam_benchmarks)
  kept_so_far = sum(o["status"] == "kept" for o in journal.done.values())
  # At most 2 x concurrency seeds are submitted at a time: a million seeds are not a million
  # futures, and a killed run loses at most the seeds in flight.
  queue, pending = iter(todo), set()
  with concurrent.futures.ThreadPoolExecutor(cfg.concurrency) as pool:
    try:
      while True:
        while len(pending) < 2 * cfg.concurrency:
          seed = next(queue, None)
          if seed is None:
            break
          pending.add(pool.submit(pipeline.process, seed))
        if not pending:
          break
        done, pending = concurrent.futures.wait(
            pending, return_when=concurrent.futures.FIRST_COMPLETED)
        errors = [f.exception() for f in done if f.exception() is not None]
        for f in done:
          if f.exception() is None:
            journal.append(f.result())
            kept_so_far += f.result()["status"] == "kept"
            if bar is not None:
              bar.update(1)
              bar.set_postfix(kept=kept_so_far)
        if errors:  # an unexpected error stops the run; everything finished is journaled
          raise errors[0]
    except BaseException:
      for f in pending:
        f.cancel()
      raise
    finally:
      if bar is not None:
        bar.close()

  outcomes = [journal.done[s.id] for s in seeds]
  kept = [o for o in outcomes if o["status"] == "kept"]
  rejected: dict[str, int] = {}
  for o in outcomes:
    if o["status"] != "kept":
      rejected[o["reason"]] = rejected.get(o["reason"], 0) + 1
  revisions: dict[str, int] = {}
  for o in kept:
    revisions[str(o["revisions"])] = revisions.get(str(o["revisions"]), 0) + 1
  first_runs: dict[str, int] = {}
  for o in outcomes:
    if o["verdicts"]:
      first_runs[o["verdicts"][0]] = first_runs.get(o["verdicts"][0], 0) + 1
  stats = {
      "source": "generate", "input": len(seeds), "kept": len(kept),
      "rejected": {r: rejected[r] for r in REASONS if r in rejected},
      "kept_by_revisions": dict(sorted(revisions.items())),
      "first_sandbox_run": first_runs,
      "sandbox_runs": sum(len(o["verdicts"]) for o in outcomes),
      "difficulty": {str(d): sum(o["difficulty"] == d for o in kept)
                     for d in sorted({o["difficulty"] for o in kept})},
      "resumed": resumed, "journal_torn_lines": journal.torn_lines,
      "backend": pipeline.backend.name, "model": pipeline.backend.model,
      "seeds": seed_info, "styles": len(pipeline.blends), "config": cfg.flat(),
      "corpus": CORPUS_DIR if kept else None,
  }
  unknown = sorted(set(rejected) - set(REASONS))
  if unknown:
    raise InstructDataError(f"{out / JOURNAL_FILE}: outcomes with unknown reasons {unknown}")
  stats["notes"] = _notes(stats)
  assert stats["input"] == stats["kept"] + sum(stats["rejected"].values()), stats
  if kept:  # streamed from the journal, in seed order
    chat_corpus.write(journal.records(o["seed_id"] for o in kept), out / CORPUS_DIR, kind="sft",
                      overwrite=True, metadata={"source": "generate", "stats": STATS_FILE,
                                                "generator": pipeline.backend.model})
  _write_atomic(out / STATS_FILE, json.dumps(stats, indent=1) + "\n")
  return stats


def _notes(stats: dict) -> list[str]:
  n, k = stats["input"], stats["kept"]
  notes = [f"generator: {stats['backend']} backend, model {stats['model']}; "
           f"{k} of {n} seeds kept ({100.0 * k / max(n, 1):.1f}%)."]
  if stats["backend"] == "sampler" and "smollm2" in str(stats["model"]).lower():
    notes.append("SmolLM2-135M-Instruct seldom follows the three-section format, and its code "
                 "seldom passes its own tests: this run shows the machinery (every seed accounted "
                 "for), not a usable SFT set. The CPU demo trains on source=problems instead.")
  if k == 0:
    notes.append("nothing was kept, so no corpus was written (a chat corpus is never empty).")
  return notes


def problem_records(problem_list, *, system_prompt: str = "") -> tuple[list[dict], dict]:
  """(SFT records, stats) from a problem set's problems: only the TRAIN split becomes records.

  Each record: user = the problem's prompt, assistant = its reference solution in a python block
  (verified against the problem's tests when the set was built), difficulty = the source's rating
  when it is an integer 0..10, source "codeio", meta = the problem id and provenance. Held-out
  problems are counted as rejected "heldout_split": what RL and evaluation measure stays unseen.
  """
  records, heldout = [], 0
  for p in problem_list:
    if p.split != "train":
      heldout += 1
      continue
    d = p.provenance.get("difficulty")
    difficulty = d if isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= 10 else None
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    messages += [{"role": "user", "content": p.prompt},
                 {"role": "assistant", "content": f"```python\n{p.reference.strip()}\n```"}]
    records.append({"id": p.id, "messages": messages, "difficulty": difficulty, "source": "codeio",
                    "meta": {"problem_id": p.id, "split": p.split, "provenance": p.provenance,
                             "verdict": "reference passed its tests at build time"}})
  stats = {"source": "problems", "input": len(records) + heldout, "kept": len(records),
           "rejected": {"heldout_split": heldout} if heldout else {}}
  assert stats["input"] == stats["kept"] + sum(stats["rejected"].values()), stats
  return records, stats


def run_problems(cfg: InstructConfig, workdir, *, progress: bool = False) -> dict:
  """SFT records from a problem set's train split -> DIR/corpus + DIR/stats.json.

  The set is cfg.problems.dir, or, when that is empty, one built under DIR/problems from the
  first problems.build_limit CodeI/O entries (problem_set.build; reused when already built).
  """
  from seedcoder_jax.posttrain import problem_set
  from seedcoder_jax.posttrain import problems as problems_lib
  out = pathlib.Path(workdir)
  out.mkdir(parents=True, exist_ok=True)
  _clear_outputs(out)
  set_dir = pathlib.Path(cfg.problems.dir) if cfg.problems.dir else out / "problems"
  if not cfg.problems.dir and not (set_dir / problem_set.STATS_FILE).exists():
    if progress:
      print(f"building the problem set in {set_dir} ({cfg.problems.build_limit} CodeI/O entries)")
    problem_set.build(set_dir, limit=cfg.problems.build_limit, seed=cfg.seed,
                      workers=cfg.sandbox.workers)
  try:
    problem_list = problem_set.load(set_dir)
  except problems_lib.ProblemsError as e:
    raise InstructDataError(f"problems.dir: {e}") from e
  records, stats = problem_records(problem_list, system_prompt=cfg.problems.system_prompt)
  set_stats = json.loads((set_dir / problem_set.STATS_FILE).read_text())
  stats.update({"problem_set": str(set_dir), "problem_set_splits": set_stats.get("splits"),
                "difficulty": {str(d): sum(r["difficulty"] == d for r in records)
                               for d in sorted({r["difficulty"] for r in records}, key=str)},
                "corpus": CORPUS_DIR if records else None, "config": cfg.flat(),
                "notes": ["reference solutions of the problem set's train split, each verified "
                          "against its sandbox-made tests when the set was built; held-out "
                          "problems are never SFT data."]})
  if records:
    chat_corpus.write(records, out / CORPUS_DIR, kind="sft", overwrite=True,
                      metadata={"source": "problems", "problem_set": str(set_dir),
                                "stats": STATS_FILE})
  _write_atomic(out / STATS_FILE, json.dumps(stats, indent=1) + "\n")
  return stats


def run(cfg: InstructConfig, workdir, **kwargs) -> dict:
  """The configured source's run (run_generate or run_problems)."""
  if cfg.source == "problems":
    kwargs.pop("overwrite", None)
    return run_problems(cfg, workdir, progress=kwargs.get("progress", False))
  return run_generate(cfg, workdir, **kwargs)
