"""One seed through the instruction pipeline: generate, filter, verify in the sandbox, judge.

`Pipeline.process(seed)` returns the seed's outcome, kept (with its SFT record) or rejected under
one of REASONS, checked in this order:
  backend_error       no answer: an HTTP failure after retries (transient ones are retried on a
                      rerun) or a prompt the local model cannot fit
  unparsable          no instruction, response, or python code block in the response
  no_tests            no tests section whose code holds an assert
  syntax_error        Tree-sitter finds errors in the response's code (first or revised)
  benchmark_overlap   a 10-gram shared with an evaluated benchmark (instruction, response, tests)
  difficulty_unrated  the difficulty answer holds no [[X]] (or is empty)
  too_easy            difficulty (0-10) below filters.min_difficulty (the paper: 3)
  tests_failed        the code failed its tests in the sandbox, and every one of up to
                      sandbox.max_revisions revisions (the generator sees the error) failed too
  judge_unrated       the correctness judge's answer holds no [[X]]
  judge_rejected      the judge's correctness score is below filters.judge_min_score
Cheap checks run before LLM calls. The judge sees the version that passed (a revision changes the
code it would judge, and code that never passes needs no judge). Tests stay as generated: a
generator allowed to rewrite them could make any code "pass". Sandbox runs are sealed
(instruct_filters.run_tests), so an early exit is "exited_early", never a pass.
"""

from __future__ import annotations

import threading

from seedcoder_jax.curation import oracle as oracle_lib
from seedcoder_jax.posttrain import chat_corpus
from seedcoder_jax.posttrain import instruct_filters as filters_lib
from seedcoder_jax.posttrain import instruct_prompts as prompts_lib

REASONS = ("backend_error", "unparsable", "no_tests", "syntax_error", "benchmark_overlap",
           "difficulty_unrated", "too_easy", "tests_failed", "judge_unrated", "judge_rejected")


class _Locked:
  """A backend whose generate() runs one call at a time (the local sampler is not thread-safe)."""

  def __init__(self, backend):
    self.backend, self.lock = backend, threading.Lock()
    self.name, self.model = backend.name, backend.model

  def generate(self, prompts, max_new_tokens=None):
    with self.lock:
      return self.backend.generate(prompts, max_new_tokens=max_new_tokens)


class Pipeline:
  """Generation, filters and sandbox self-correction for one seed at a time (thread-safe).

  backend: an object with `name`, `model` and `generate(list of message lists,
  max_new_tokens=None) -> list` of objects with `text` and `status` (oracle_backends.Generation).
  """

  def __init__(self, cfg, backend):
    """cfg: instruct_data.InstructConfig."""
    self.cfg = cfg
    safe = getattr(backend, "thread_safe", backend.name == "http")
    self.backend = backend if safe else _Locked(backend)
    self.templates = {k: prompts_lib.load_template(k, getattr(cfg.prompts, k))
                      for k in prompts_lib.TEMPLATES}
    self.blends = prompts_lib.blend_styles(prompts_lib.load_styles(cfg.styles_file or None))
    self.sandbox_slots = threading.Semaphore(cfg.sandbox.workers)

  def _ask(self, messages, max_new_tokens=None):
    """(text, None) or (None, failure detail) from one generator call.

    An empty answer is an answer (its parse fails under the step's own reason); a prompt the
    local model cannot fit even with its code cut (ValueError) fails this seed, not the run."""
    try:
      g = self.backend.generate([messages], max_new_tokens=max_new_tokens)[0]
    except ValueError as e:
      return None, {"backend_status": "prompt_too_long", "detail": str(e)[-300:],
                    "transient": False}
    if g.status == "empty_answer" or (g.status == "ok" and not (g.text or "").strip()):
      return "", None
    if g.status == "ok":
      return g.text, None
    return None, {"backend_status": g.status, "detail": str(getattr(g, "detail", ""))[-300:],
                  "transient": g.status in oracle_lib.TRANSIENT}

  def process(self, seed) -> dict:
    """The seed's outcome: {"seed_id", "status": kept|rejected, "reason", "record", ...}."""
    cfg = self.cfg
    style = prompts_lib.draw_style(self.blends, cfg.seed, seed.id)
    out = {"seed_id": seed.id, "status": "rejected", "reason": None, "record": None,
           "style": style["name"], "seed": seed.provenance, "revisions": 0, "verdicts": [],
           "difficulty": None, "judge": None}

    def reject(reason, **extra):
      return {**out, "reason": reason, **extra}

    text, failure = self._ask(prompts_lib.fill(
        self.templates["generate"], style=style["description"], kind=seed.kind,
        language=seed.language, seed=seed.text))
    if failure:
      return reject("backend_error", stage="generate", **failure)
    gen, reason = prompts_lib.parse_generation(text)
    if gen is None:  # the answer's start shows best how the format went wrong
      return reject(reason, detail=text[:1000])
    err = filters_lib.syntax_error(gen.code)
    if err:
      return reject("syntax_error", detail=err)
    hits = filters_lib.overlaps("\n".join((gen.instruction, gen.response, gen.tests)),
                                cfg.filters.decontam_n, cfg.filters.decontam_benchmarks)
    if hits:
      return reject("benchmark_overlap", detail=",".join(hits))

    answer, failure = self._ask(prompts_lib.fill(self.templates["difficulty"],
                                                 instruction=gen.instruction),
                                cfg.filters.judge_max_new_tokens)
    if failure:
      return reject("backend_error", stage="difficulty", **failure)
    difficulty = prompts_lib.parse_score(answer)
    out["difficulty"] = difficulty
    if difficulty is None:
      return reject("difficulty_unrated", detail=answer[-300:])
    if difficulty < cfg.filters.min_difficulty:
      return reject("too_easy")

    # Sandbox self-correction: the tests stay fixed; the code is revised with the error shown.
    response, code = gen.response, gen.code
    for revision in range(cfg.sandbox.max_revisions + 1):
      if revision:
        answer, failure = self._ask(prompts_lib.fill(
            self.templates["revise"], instruction=gen.instruction, tests=gen.tests,
            error=error, code=code))
        if failure:
          return reject("backend_error", stage=f"revise {revision}", **failure)
        new_response, new_code = prompts_lib.parse_revision(answer)
        out["revisions"] = revision
        if new_code is None:  # no code in the answer: the same code fails the same way again
          out["verdicts"].append("no_code")
          continue
        response, code = new_response, new_code
      result = filters_lib.run_tests(code, gen.tests, timeout_s=cfg.sandbox.timeout_s,
                                     memory_mb=cfg.sandbox.memory_mb,
                                     semaphore=self.sandbox_slots)
      out["verdicts"].append("passed" if result.passed else result.status)
      if result.passed:
        break
      error = filters_lib.failure_text(result, cfg.sandbox.max_error_chars)
    else:
      return reject("tests_failed", detail=error[-500:])
    err = filters_lib.syntax_error(code)  # the revised code, by the same rule as the first
    if err:
      return reject("syntax_error", detail=err)

    answer, failure = self._ask(prompts_lib.fill(self.templates["judge"],
                                                 instruction=gen.instruction, response=response),
                                cfg.filters.judge_max_new_tokens)
    if failure:
      return reject("backend_error", stage="judge", **failure)
    judge = prompts_lib.parse_score(answer)
    out["judge"] = judge
    if judge is None:
      return reject("judge_unrated", detail=answer[-300:])
    if judge < cfg.filters.judge_min_score:
      return reject("judge_rejected")
    record = {"id": "instruct/" + seed.id.split("/", 1)[1],
              "messages": [{"role": "user", "content": gen.instruction},
                           {"role": "assistant", "content": response}],
              "difficulty": difficulty, "source": "synthetic",
              "meta": {"seed": {**seed.provenance, "id": seed.id, "kind": seed.kind,
                                "language": seed.language},
                       "style": style["name"], "style_description": style["description"],
                       "revisions": out["revisions"], "verdict": "passed",
                       "verdicts": out["verdicts"], "judge": judge, "tests": gen.tests,
                       "code": code, "generator": self.backend.model}}
    chat_corpus.check_record(record, "sft", f"seed {seed.id}")
    return {**out, "status": "kept", "record": record}
