"""Stage 4: the LLM quality oracle rates a sample of files 0-10 (the scorer's training labels).

The prompt (data/prompts/oracle_quality.txt) applies the paper's criteria (readability, modularity,
clarity, reusability, each with the paper's sub-points; 0 for configuration/data, little logic or
auto-generated files) and asks for the rating at the end as "Rating: [[", the score, "]]"
(described, not shown with a placeholder: a literal `[[X]]` drew G-Eval's next-token mass onto
"X"). Backends (oracle_backends.py): an OpenAI-compatible HTTP endpoint, a local checkpoint
through the project's sampler (generate, then parse), and "geval": the probability-weighted
rating that a local model puts on the tokens after `Rating: [[` (G-Eval).

Every answer ends in one status: "ok" or a named failure (STATUSES). The oracle never drops a
file: a record leaves this stage with `oracle_score` (float, or None) and `oracle_status`; the
pipeline counts statuses in stats.json (`summarize`). Answers are cached in SQLite keyed by
(backend, model, sha256 of the prompt, the backend's CACHE_SETTINGS), committed per batch, so a
rerun or a killed run never pays twice for an answer it already has; transient failures
(timeouts, HTTP 5xx, refused connections) are not cached, so a rerun retries them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import pathlib
import re
import sqlite3
import time
from typing import Any, Iterable, Sequence

STAGE = "oracle"
BACKENDS = ("geval", "sampler", "http")
OUT_OF_RANGE_POLICIES = ("reject", "clamp")
# Answer statuses. TRANSIENT ones are retried by the backend and never cached.
STATUSES = ("ok", "unparsable", "out_of_range", "empty_answer", "low_digit_mass", "bad_response",
            "timeout", "http_error", "connection_error")
TRANSIENT = frozenset({"timeout", "http_error", "connection_error"})
DEFAULT_PROMPT = pathlib.Path(__file__).resolve().parents[2] / "data" / "prompts" / "oracle_quality.txt"
PROMPT_FIELDS = ("{language}", "{path}", "{code}")
TRUNCATION_NOTE = "\n... [truncated]"
# The OracleConfig fields that change a backend's answer to the same prompt and model: they are
# part of the cache key, so a cache shared between configs never returns another setting's answer
# (max_code_chars and the prompt file already change the prompt's hash).
CACHE_SETTINGS = {
    "http": ("temperature", "max_new_tokens", "out_of_range"),
    "sampler": ("temperature", "max_new_tokens", "max_prompt_tokens", "out_of_range"),
    "geval": ("max_prompt_tokens", "geval_min_digit_mass"),
}


@dataclasses.dataclass(frozen=True)
class OracleConfig:
  """How the oracle labels files (configs/curation.py's `oracle` group has the same keys).

  backend: "geval" (local model, probability-weighted rating: one forward pass per file),
    "sampler" (local model generates an answer that is parsed), or "http" (OpenAI-compatible).
  model: for geval/sampler a model spec ("gguf:smollm2", "gguf:/x.gguf", "orbax:/dir", "hf:/dir");
    for http the served model name.
  base_url: http only: the endpoint's base, e.g. "http://localhost:8000/v1".
  api_key_env: http only: the environment variable holding the bearer token ("" = none).
  prompt_file: the prompt template ("" = data/prompts/oracle_quality.txt).
  sample_size: how many files the pipeline sends to the oracle (chosen by `sample_key`).
  max_code_chars / max_prompt_tokens: the file is cut to fit both (local backends count the
    prompt's tokens, chat template included; the sampler adds max_new_tokens after them).
  cache_path: SQLite file ("" = no cache; the pipeline passes WORKDIR/oracle_cache.sqlite).
  out_of_range: a rating outside [0, 10] is "reject"ed (status out_of_range) or "clamp"ed.
  geval_min_digit_mass: geval answers whose next-token mass on "0".."9" is below this are
    reported as low_digit_mass (the model was not going to write a rating there).
  planted_pairs: the pipeline also rates this many (real function, copy with one planted defect)
    pairs and reports how often the oracle prefers the real one (curation/planted.py; 0 = off).
  """

  backend: str = "geval"
  model: str = "gguf:smollm2"
  base_url: str = ""
  api_key_env: str = ""
  prompt_file: str = ""
  sample_size: int = 40
  sample_seed: int = 0
  max_code_chars: int = 600
  max_prompt_tokens: int = 384
  batch_size: int = 8
  cache_path: str = ""
  timeout_s: float = 60.0
  max_retries: int = 3
  backoff_s: float = 1.0
  concurrency: int = 4
  max_new_tokens: int = 256
  temperature: float = 0.0
  out_of_range: str = "reject"
  geval_min_digit_mass: float = 0.1
  planted_pairs: int = 0

  def __post_init__(self):
    errors = []
    if self.backend not in BACKENDS:
      errors.append(f"backend={self.backend!r} is not one of {BACKENDS}")
    if self.backend == "http" and not self.base_url:
      errors.append("backend='http' needs base_url (e.g. 'http://localhost:8000/v1')")
    if self.out_of_range not in OUT_OF_RANGE_POLICIES:
      errors.append(f"out_of_range={self.out_of_range!r} is not one of {OUT_OF_RANGE_POLICIES}")
    for name in ("sample_size", "max_code_chars", "max_prompt_tokens", "batch_size", "concurrency",
                 "max_new_tokens"):
      if getattr(self, name) <= 0:
        errors.append(f"{name}={getattr(self, name)} must be positive")
    if self.max_retries < 0 or self.backoff_s < 0 or self.timeout_s <= 0:
      errors.append(f"max_retries={self.max_retries} and backoff_s={self.backoff_s} must be >= 0, "
                    f"timeout_s={self.timeout_s} > 0")
    if not 0.0 <= self.geval_min_digit_mass <= 1.0:
      errors.append(f"geval_min_digit_mass={self.geval_min_digit_mass} must be in [0, 1]")
    if self.planted_pairs < 0:
      errors.append(f"planted_pairs={self.planted_pairs} must be >= 0 (0 = no planted check)")
    if self.temperature < 0:
      errors.append(f"temperature={self.temperature} must be >= 0")
    if errors:
      raise ValueError("invalid OracleConfig: " + "; ".join(errors))

  @classmethod
  def from_dict(cls, fields: dict, where: str = "oracle config") -> "OracleConfig":
    """Builds the config; unknown keys are an error naming them and `where` they came from."""
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(fields) - set(known))
    if unknown:
      raise ValueError(f"{where}: unknown OracleConfig keys {unknown}; known: {known}")
    return cls(**dict(fields))

  @property
  def prompt_path(self) -> pathlib.Path:
    return pathlib.Path(self.prompt_file) if self.prompt_file else DEFAULT_PROMPT


# ----------------------------------------------------------------------------- prompt


def load_prompt_template(path: str | pathlib.Path) -> str:
  """The template text; it must contain each of PROMPT_FIELDS and ask for `Rating: [[`."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"oracle prompt template not found: {path}")
  text = path.read_text(encoding="utf-8")
  missing = [f for f in PROMPT_FIELDS if f not in text]
  if missing or "Rating: [[" not in text:
    raise ValueError(f"oracle prompt template {path} lacks {missing or ''}"
                     f"{' the request for Rating: [[X]]' if 'Rating: [[' not in text else ''}")
  return text


def truncate_code(text: str, max_chars: int) -> str:
  """The file cut to `max_chars` at a line boundary where possible, with a visible note."""
  if len(text) <= max_chars:
    return text
  cut = text[:max_chars]
  newline = cut.rfind("\n")
  if newline > max_chars // 2:
    cut = cut[:newline]
  return cut + TRUNCATION_NOTE


def build_messages(record: dict, template: str, max_code_chars: int) -> list[dict]:
  """The chat messages asking for one record's rating (a single user turn)."""
  language = record.get("language") or "source"
  # str.replace, not str.format: code is full of braces.
  content = (template.replace("{language}", language).replace("{path}", record.get("path", ""))
             .replace("{code}", truncate_code(record["text"], max_code_chars)))
  return [{"role": "user", "content": content}]


def prompt_sha(messages: Sequence[dict]) -> str:
  return hashlib.sha256(json.dumps(list(messages), sort_keys=True).encode()).hexdigest()


# ----------------------------------------------------------------------------- parsing

# The rating as the prompt asks for it, tolerating markdown (**Rating:**) and "X/10"; the last
# match wins (models often quote the format before answering).
_RATING = re.compile(r"rating\W{0,8}\[\[\s*([+-]?\d+(?:\.\d+)?)\s*(?:/\s*10\s*)?\]\]", re.IGNORECASE)
_BARE = re.compile(r"\[\[\s*([+-]?\d+(?:\.\d+)?)\s*(?:/\s*10\s*)?\]\]")


def parse_rating(text: str | None, out_of_range: str = "reject") -> tuple[float | None, str]:
  """(score, status) from an answer: the last `Rating: [[X]]` (else the last bare `[[X]]`).

  X may be an int or a decimal. Outside [0, 10]: status "out_of_range" (policy "reject") or the
  clamped value with status "ok" ("clamp"). No rating: "unparsable"; blank answer: "empty_answer".
  """
  if text is None or not text.strip():
    return None, "empty_answer"
  matches = _RATING.findall(text) or _BARE.findall(text)
  if not matches:
    return None, "unparsable"
  value = float(matches[-1])
  if not math.isfinite(value):
    return None, "unparsable"
  if 0.0 <= value <= 10.0:
    return value, "ok"
  if out_of_range == "clamp":
    return min(10.0, max(0.0, value)), "ok"
  return None, "out_of_range"


# ----------------------------------------------------------------------------- cache


class OracleCache:
  """Answers in SQLite keyed by sha256(backend, model, prompt sha); safe to kill mid-write.

  Each `put_many` is one transaction: a killed process leaves the last committed batch, never a
  torn row. Pickles as its path (Beam ships DoFns); each process opens its own connection.
  """

  def __init__(self, path: str | pathlib.Path):
    self.path = str(path)
    self._conn = None

  def __getstate__(self):
    return {"path": self.path, "_conn": None}

  def __setstate__(self, state):
    self.__dict__.update(state)

  @staticmethod
  def key(backend: str, model: str, prompt_hash: str, settings: dict | None = None) -> str:
    """settings: what else changes the answer (`cache_settings`)."""
    return hashlib.sha256(json.dumps([backend, model, prompt_hash, settings or {}],
                                     sort_keys=True).encode()).hexdigest()

  @property
  def conn(self) -> sqlite3.Connection:
    if self._conn is None:
      pathlib.Path(self.path).parent.mkdir(parents=True, exist_ok=True)
      self._conn = sqlite3.connect(self.path, timeout=60.0)
      self._conn.execute("PRAGMA journal_mode=WAL")
      self._conn.execute("CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, backend TEXT, "
                         "model TEXT, score REAL, status TEXT, detail TEXT, created REAL)")
      self._conn.commit()
    return self._conn

  def get_many(self, keys: Sequence[str]) -> dict[str, tuple[float | None, str, str]]:
    out = {}
    for i in range(0, len(keys), 500):  # SQLite's bound-variable limit
      chunk = list(keys[i:i + 500])
      rows = self.conn.execute(
          f"SELECT key, score, status, detail FROM answers WHERE key IN ({','.join('?' * len(chunk))})",
          chunk).fetchall()
      out.update({k: (s, st, d) for k, s, st, d in rows})
    return out

  def put_many(self, rows: Iterable[tuple[str, str, str, float | None, str, str]]) -> None:
    """rows: (key, backend, model, score, status, detail); one transaction."""
    with self.conn:
      self.conn.executemany("INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?, ?, ?, ?)",
                            [(*r, time.time()) for r in rows])

  def __len__(self) -> int:
    return self.conn.execute("SELECT COUNT(*) FROM answers").fetchone()[0]

  def close(self) -> None:
    if self._conn is not None:
      self._conn.close()
      self._conn = None


# ----------------------------------------------------------------------------- annotation


@dataclasses.dataclass
class Answer:
  """One backend answer: score in [0, 10] or None, a status of STATUSES, and a short detail."""

  score: float | None
  status: str
  detail: str = ""


def cache_settings(cfg: OracleConfig, backend: str) -> dict[str, Any]:
  """The settings of `cfg` that change `backend`'s answers ({} for a backend not in
  CACHE_SETTINGS, e.g. a test's fake)."""
  return {name: getattr(cfg, name) for name in CACHE_SETTINGS.get(backend, ())}


def annotate(records: Sequence[dict], backend, cfg: OracleConfig, *, template: str,
             cache: OracleCache | None = None) -> list[dict]:
  """Each record with `oracle_score`, `oracle_status`, `oracle_detail`, `oracle_backend` added.

  backend: an object with `name`, `model` and `rate(list of messages lists) -> list[Answer]`
  (oracle_backends.py). Cached answers are reused; new non-transient answers are cached per batch.
  """
  messages = [build_messages(r, template, cfg.max_code_chars) for r in records]
  settings = cache_settings(cfg, backend.name)
  keys = [OracleCache.key(backend.name, backend.model, prompt_sha(m), settings) for m in messages]
  answers: dict[int, Answer] = {}
  if cache is not None:
    hits = cache.get_many(keys)
    answers = {i: Answer(*hits[k]) for i, k in enumerate(keys) if k in hits}
  todo = [i for i in range(len(records)) if i not in answers]
  for start in range(0, len(todo), cfg.batch_size):
    chunk = todo[start:start + cfg.batch_size]
    got = backend.rate([messages[i] for i in chunk])
    if len(got) != len(chunk):
      raise RuntimeError(f"oracle backend {backend.name} returned {len(got)} answers for "
                         f"{len(chunk)} prompts")
    answers.update(zip(chunk, got))
    if cache is not None:
      cache.put_many((keys[i], backend.name, backend.model, a.score, a.status, a.detail[:500])
                     for i, a in zip(chunk, got) if a.status not in TRANSIENT)
  out = []
  for i, record in enumerate(records):
    a = answers[i]
    if a.status not in STATUSES:
      raise RuntimeError(f"oracle backend {backend.name} gave unknown status {a.status!r} for "
                         f"record {record.get('id')!r}")
    out.append({**record, "oracle_score": a.score, "oracle_status": a.status,
                "oracle_detail": a.detail[:200], "oracle_backend": backend.name})
  return out


def summarize(annotated: Iterable[dict]) -> dict[str, Any]:
  """{"n", "labelled", "parse_rate", "statuses": {status: n}, "mean_score"} for stats.json."""
  statuses: dict[str, int] = {}
  scores = []
  for r in annotated:
    statuses[r["oracle_status"]] = statuses.get(r["oracle_status"], 0) + 1
    if r["oracle_status"] == "ok":
      scores.append(r["oracle_score"])
  n = sum(statuses.values())
  return {"n": n, "labelled": len(scores), "parse_rate": len(scores) / n if n else 0.0,
          "statuses": dict(sorted(statuses.items())),
          "mean_score": sum(scores) / len(scores) if scores else None}


def sample_key(record_id: str, seed: int = 0) -> int:
  """A stable pseudo-random rank: the oracle sample is the `sample_size` smallest keys."""
  return int.from_bytes(hashlib.sha256(f"{seed}:{record_id}".encode()).digest()[:8], "big")


def select_sample(records: Iterable[dict], cfg: OracleConfig) -> list[dict]:
  """The records the oracle labels (deterministic: independent of input order)."""
  return sorted(records, key=lambda r: sample_key(r["id"], cfg.sample_seed))[:cfg.sample_size]


# ----------------------------------------------------------------------------- Beam


def _beam():
  import apache_beam as beam  # lazy: the pure functions above need no Beam
  return beam


class OracleDoFn(_beam().DoFn):
  """Annotates batches (lists) of records; the backend (model) is built once per worker."""

  def __init__(self, cfg: OracleConfig):
    self.cfg = cfg
    self.backend = None
    self.cache = None
    self.template = None

  def setup(self):
    from seedcoder_jax.curation import oracle_backends
    self.template = load_prompt_template(self.cfg.prompt_path)
    self.backend = oracle_backends.make_backend(self.cfg)
    self.cache = OracleCache(self.cfg.cache_path) if self.cfg.cache_path else None

  def process(self, batch):
    yield from annotate(list(batch), self.backend, self.cfg, template=self.template,
                        cache=self.cache)

  def teardown(self):
    if self.cache is not None:
      self.cache.close()


class OracleSample(_beam().PTransform):
  """PCollection[record] -> PCollection[record]: the deterministic `sample_size` oracle sample."""

  def __init__(self, cfg: OracleConfig):
    super().__init__()
    self.cfg = cfg

  def expand(self, records):
    beam = _beam()
    seed = self.cfg.sample_seed
    return (records
            | "Smallest" >> beam.combiners.Top.Of(self.cfg.sample_size,
                                                  key=lambda r: -sample_key(r["id"], seed))
            | "Explode" >> beam.FlatMap(lambda rs: rs))


class OracleAnnotate(_beam().PTransform):
  """PCollection[record] -> the same records with oracle fields (none dropped)."""

  def __init__(self, cfg: OracleConfig):
    super().__init__()
    self.cfg = cfg

  def expand(self, records):
    beam = _beam()
    return (records
            | "Batch" >> beam.BatchElements(min_batch_size=self.cfg.batch_size,
                                            max_batch_size=self.cfg.batch_size)
            | "Rate" >> beam.ParDo(OracleDoFn(self.cfg)))
