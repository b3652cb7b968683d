"""The instruction-data pipeline (seedcoder_jax.posttrain.instruct_data) with a real sandbox.

The LLM is a scripted double (same `name` / `model` / `generate` interface as the oracle backends)
answering fixed texts per planted seed; syntax, decontamination and the sealed sandbox verdicts are
the real ones. One slow test runs the packaged SmolLM2-135M-Instruct end to end on two seeds.
"""

import http.server
import json
import pathlib
import subprocess
import sys
import threading
import time

import pytest

from seedcoder_jax.curation import oracle_backends
from seedcoder_jax.evaluation import benchmarks
from seedcoder_jax.input import corpus as corpus_lib
from seedcoder_jax.posttrain import chat_corpus, instruct_data, instruct_prompts, problem_set
from seedcoder_jax.posttrain import problems as problems_lib
from seedcoder_jax.sandbox import isolation

ROOT = pathlib.Path(__file__).resolve().parents[1]
BWRAP_OK, BWRAP_WHY = isolation.bwrap_works()
needs_sandbox = pytest.mark.skipif(not BWRAP_OK, reason=f"bubblewrap cannot run here: {BWRAP_WHY}")

GOOD = "def add(a, b):\n    return a + b\n"
WRONG = "def add(a, b):\n    return a - b\n"
EARLY_EXIT = "import sys\n\ndef add(a, b):\n    return a - b\n\nsys.exit(0)\n"
TESTS = "assert add(1, 2) == 3\nassert add(-1, 1) == 0\n"


def generation(name, code=GOOD, tests=TESTS):
  return (f"### Instruction\nTask {name}: write add(a, b) returning the sum of two integers.\n"
          f"### Response\nAdd them.\n```python\n{code}```\n### Tests\n```python\n{tests}```\n")


def revision(code):
  return f"The fix.\n```python\n{code}```\n"


def humaneval_copy():
  prompt = benchmarks.get("humaneval").load()[0].prompt  # has_close_elements
  return prompt + "    return False\n"


class Scripted:
  """The LLM double: plan[name] = {kind: text or [texts, one per call]}; kind from the prompt."""

  name, model, thread_safe = "scripted", "scripted-v1", True

  def __init__(self, plan, default=None):
    self.plan, self.default = plan, default or {}
    self.calls = []
    self.lock = threading.Lock()

  @staticmethod
  def kind(text):
    if "Rate how difficult" in text:
      return "difficulty"
    if "You are a strict reviewer" in text:
      return "judge"
    if "did not pass its tests" in text:
      return "revise"
    return "generate"

  def generate(self, prompts, max_new_tokens=None):
    out = []
    for messages in prompts:
      text = messages[-1]["content"]
      kind = self.kind(text)
      name = next(n for n in self.plan if f"SEED_{n}" in text or f"Task {n}:" in text)
      with self.lock:
        self.calls.append((name, kind))
        n = sum(c == (name, kind) for c in self.calls) - 1
      answer = self.plan[name].get(kind, self.default.get(kind))
      if isinstance(answer, list):
        answer = answer[min(n, len(answer) - 1)]
      if isinstance(answer, Exception):
        raise answer
      if answer is None:
        out.append(oracle_backends.Generation(None, "bad_response", "HTTP 400 Bad Request"))
      else:
        out.append(oracle_backends.Generation(answer, "ok"))
    return out


DEFAULT = {"difficulty": "Needs a loop. Difficulty: [[5]]", "judge": "Correct. Rating: [[9]]"}


def seeds(names):
  return [instruct_data.Seed(id=f"seed/{n}", text=f"# SEED_{n}\nx = 1\n", kind="file",
                             language="python", provenance={"planted": n}) for n in names]


def config(**groups):
  d = {"sandbox": {"max_revisions": 1, "workers": 2, "timeout_s": 10.0}, "concurrency": 2}
  for k, v in groups.items():
    d[k] = {**d.get(k, {}), **v} if isinstance(v, dict) else v
  return instruct_data.InstructConfig.from_dict(d)


PLAN = {
    "backend": {"generate": None},
    "unparsable": {"generate": "I am not sure what you mean."},
    "notests": {"generate": generation("notests", tests="print(add(1, 2))\n")},
    "syntax": {"generate": generation("syntax", code="def add(a, b:\n    return a + b\n")},
    "overlap": {"generate": generation("overlap", code=humaneval_copy(),
                                       tests="assert not has_close_elements([1.0], 0.5)\n")},
    "unrated": {"generate": generation("unrated"), "difficulty": "It is quite hard."},
    "emptyrating": {"generate": generation("emptyrating"), "difficulty": ""},
    "easy": {"generate": generation("easy"), "difficulty": "Difficulty: [[1]]"},
    "failing": {"generate": generation("failing", code=WRONG), "revise": revision(WRONG)},
    "early": {"generate": generation("early", code=EARLY_EXIT), "revise": revision(EARLY_EXIT)},
    "judgeunrated": {"generate": generation("judgeunrated"), "judge": "Fine by me."},
    "judgelow": {"generate": generation("judgelow"), "judge": "Partly wrong. Rating: [[2]]"},
    "fixed": {"generate": generation("fixed", code=WRONG), "revise": revision(GOOD)},
    "clean": {"generate": generation("clean")},
}
EXPECTED = {"backend_error": 1, "unparsable": 1, "no_tests": 1, "syntax_error": 1,
            "benchmark_overlap": 1, "difficulty_unrated": 2, "too_easy": 1, "tests_failed": 2,
            "judge_unrated": 1, "judge_rejected": 1}


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
  if not BWRAP_OK:
    pytest.skip(f"bubblewrap cannot run here: {BWRAP_WHY}")
  out = tmp_path_factory.mktemp("instruct")
  backend = Scripted(PLAN, DEFAULT)
  stats = instruct_data.run_generate(config(), out, backend=backend, seeds=seeds(PLAN))
  journal = [json.loads(l) for l in (out / "journal.jsonl").read_text().splitlines()[1:]]
  return out, stats, {o["seed_id"].split("/")[1]: o for o in journal}, backend


@needs_sandbox
def test_every_rejection_reason_is_planted_and_counted_exactly(planted):
  out, stats, outcomes, _ = planted
  assert set(EXPECTED) == set(instruct_data.REASONS)
  assert stats["rejected"] == EXPECTED
  assert stats["input"] == len(PLAN) == stats["kept"] + sum(stats["rejected"].values())
  assert stats["kept"] == 2 and json.loads((out / "stats.json").read_text()) == stats
  assert "HumanEval/0" in outcomes["overlap"]["detail"].split(",")
  assert outcomes["backend"]["status"] == "rejected" and not outcomes["backend"]["transient"]
  assert stats["backend"] == "scripted" and "2 of 14 seeds kept" in stats["notes"][0]


@needs_sandbox
def test_self_correction_fixes_a_failing_response_on_revision_1(planted):
  out, stats, outcomes, _ = planted
  records, meta = chat_corpus.read_all(out / "corpus", kind="sft")
  by_seed = {r["meta"]["seed"]["id"]: r for r in records}
  # In seed order, whatever order the threads finished in.
  assert list(by_seed) == ["seed/fixed", "seed/clean"] and meta["source"] == "generate"
  fixed = by_seed["seed/fixed"]
  assert fixed["meta"]["revisions"] == 1 and fixed["meta"]["verdicts"] == ["error", "passed"]
  assert fixed["meta"]["code"] == GOOD and "return a + b" in fixed["messages"][-1]["content"]
  assert fixed["messages"][0]["content"].startswith("Task fixed:")
  assert fixed["difficulty"] == 5 and fixed["meta"]["judge"] == 9
  assert fixed["meta"]["tests"] == TESTS and fixed["meta"]["style"].count("+") == 1
  assert by_seed["seed/clean"]["meta"]["revisions"] == 0
  assert stats["kept_by_revisions"] == {"0": 1, "1": 1}


@needs_sandbox
def test_an_early_exit_is_never_a_pass(planted):
  _, _, outcomes, _ = planted
  early = outcomes["early"]
  assert early["status"] == "rejected" and early["reason"] == "tests_failed"
  assert early["verdicts"] == ["exited_early", "exited_early"]
  assert outcomes["failing"]["verdicts"] == ["error", "error"]


@needs_sandbox
def test_resume_skips_done_seeds_and_refuses_another_config(planted, tmp_path):
  out, stats, _, _ = planted
  # A killed run: the backend dies on the last seed (one worker: the others finish before it).
  names = ["clean", "easy", "judgelow", "fixed"]
  dying = {**PLAN, "fixed": {"generate": RuntimeError("endpoint process killed")}}
  with pytest.raises(RuntimeError, match="killed"):
    instruct_data.run_generate(config(concurrency=1), tmp_path, backend=Scripted(dying, DEFAULT),
                               seeds=seeds(names))
  assert not (tmp_path / "stats.json").exists()
  lines = (tmp_path / "journal.jsonl").read_text().splitlines()
  assert len(lines) == 4  # header + clean, easy, judgelow
  with open(tmp_path / "journal.jsonl", "a") as f:
    f.write('{"seed_id": "seed/torn", "sta')  # killed mid-write
  backend = Scripted(PLAN, DEFAULT)
  stats = instruct_data.run_generate(config(concurrency=1), tmp_path, backend=backend,
                                     seeds=seeds(names))
  assert {n for n, _ in backend.calls} == {"fixed"}
  assert stats["resumed"] == 3 and stats["journal_torn_lines"] == 1
  assert stats["input"] == 4 and stats["kept"] == 2
  assert stats["rejected"] == {"too_easy": 1, "judge_rejected": 1}
  # Everything done: a rerun calls nothing and writes the same stats.
  again = Scripted(PLAN, DEFAULT)
  assert instruct_data.run_generate(config(concurrency=1), tmp_path, backend=again,
                                    seeds=seeds(names))["kept"] == 2 and not again.calls
  with pytest.raises(instruct_data.InstructDataError, match="filters.min_difficulty: 3 -> 5"):
    instruct_data.run_generate(config(filters={"min_difficulty": 5}), tmp_path,
                               backend=Scripted(PLAN, DEFAULT), seeds=seeds(names))


@needs_sandbox
def test_transient_failures_are_retried_on_a_rerun(tmp_path):
  class Flaky(Scripted):
    def generate(self, prompts, max_new_tokens=None):
      if not self.calls:
        self.calls.append(("clean", "generate"))
        return [oracle_backends.Generation(None, "timeout", "no answer within 60s")]
      return super().generate(prompts, max_new_tokens)

  first = instruct_data.run_generate(config(), tmp_path, backend=Flaky(PLAN, DEFAULT),
                                     seeds=seeds(["clean"]))
  assert first["rejected"] == {"backend_error": 1}
  second = instruct_data.run_generate(config(), tmp_path, backend=Scripted(PLAN, DEFAULT),
                                      seeds=seeds(["clean"]))
  assert second["kept"] == 1 and second["rejected"] == {} and second["resumed"] == 0


class _OpenAIServer:
  """A local OpenAI-compatible chat endpoint answering from a Scripted plan (503 once: "fixed")."""

  def __init__(self, plan):
    script, outer = Scripted(plan, DEFAULT), self
    self.in_flight = self.max_in_flight = 0
    self.failed_once = False
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
      def log_message(self, *args):
        pass

      def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with lock:
          outer.in_flight += 1
          outer.max_in_flight = max(outer.max_in_flight, outer.in_flight)
          fail = "Task fixed:" in body["messages"][-1]["content"] and not outer.failed_once
          outer.failed_once = outer.failed_once or fail
        time.sleep(0.05)  # long enough for concurrent requests to overlap
        if fail:
          payload, code = b'{"error": "busy"}', 503
        else:
          text = script.generate([body["messages"]])[0].text
          payload, code = json.dumps({"choices": [{"message": {"role": "assistant",
                                                               "content": text}}]}).encode(), 200
        with lock:
          outer.in_flight -= 1
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
    threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@needs_sandbox
def test_http_backend_runs_seeds_concurrently_with_retries(tmp_path):
  plan = {k: v for k, v in PLAN.items() if k != "backend"}
  server = _OpenAIServer(plan)
  try:
    cfg = config(concurrency=4, generator={"backend": "http", "base_url": server.url,
                                           "model": "served", "backoff_s": 0.01})
    stats = instruct_data.run_generate(cfg, tmp_path, seeds=seeds(plan))
  finally:
    server.httpd.shutdown()
  assert stats["kept"] == 2 and stats["backend"] == "http" and stats["model"] == "served"
  assert stats["rejected"] == {**{k: v for k, v in EXPECTED.items() if k != "backend_error"}}
  assert server.failed_once and server.max_in_flight > 1


def test_config_refuses_unknown_and_bad_keys():
  with pytest.raises(instruct_data.InstructDataError, match=r"filters.min_dificulty"):
    instruct_data.InstructConfig.from_dict({"filters": {"min_dificulty": 3}})
  with pytest.raises(instruct_data.InstructDataError, match="geval"):
    instruct_data.InstructConfig.from_dict({"generator": {"backend": "geval"}})
  with pytest.raises(instruct_data.InstructDataError, match="unknown OracleConfig keys"):
    instruct_data.InstructConfig.from_dict({"generator": {"modle": "x"}})
  with pytest.raises(instruct_data.InstructDataError, match="min_difficulty=11"):
    instruct_data.InstructConfig.from_dict({"filters": {"min_difficulty": 11}})
  from seedcoder_jax import config_files
  for variant in ("demo", "scale"):
    cfg = instruct_data.InstructConfig.from_dict(
        config_files.load(f"configs/instruct_data.py:{variant}").to_dict())
    assert cfg.filters.min_difficulty == 3
  assert cfg.concurrency == 64 and cfg.generator.backend == "http"


def test_styles_blend_two_at_a_time_and_draw_deterministically():
  styles = instruct_prompts.load_styles()
  blends = instruct_prompts.blend_styles(styles)
  assert 10 <= len(styles) <= 16 and len(blends) == len(styles) * (len(styles) - 1) // 2
  a = [instruct_prompts.draw_style(blends, 0, f"seed/{i}")["name"] for i in range(40)]
  assert a == [instruct_prompts.draw_style(blends, 0, f"seed/{i}")["name"] for i in range(40)]
  assert len(set(a)) > 10 and a != [instruct_prompts.draw_style(blends, 1, f"seed/{i}")["name"]
                                    for i in range(40)]


def test_parse_generation_names_what_is_missing():
  gen, reason = instruct_prompts.parse_generation(generation("x"))
  assert reason is None and gen.code == GOOD and gen.tests == TESTS
  assert gen.instruction.startswith("Task x:") and "```python" in gen.response
  loose = "**Instruction:**\nDo it.\n**Response:**\n```py\nx = 1\n```\n**Tests:**\nassert x == 1\n"
  assert instruct_prompts.parse_generation(loose)[0].tests == "assert x == 1\n"
  assert instruct_prompts.parse_generation("### Instruction\nDo it.\n")[1] == "unparsable"
  assert instruct_prompts.parse_generation(generation("x", tests="x = 1\n"))[1] == "no_tests"
  # Headings with text on their line; a "# Tests" comment inside code is code, not a heading.
  inline = ("## Instruction: Do it.\n### Response\nSo.\n```python\n# Tests\nx = 1\n```\n"
            "Response time matters.\nTests:\nassert x == 1\n")
  gen = instruct_prompts.parse_generation(inline)[0]
  assert gen.instruction == "Do it." and gen.code == "# Tests\nx = 1\n"
  assert gen.response.endswith("Response time matters.") and gen.tests == "assert x == 1\n"
  assert instruct_prompts.parse_score("so... Difficulty: [[7]]") == 7
  assert instruct_prompts.parse_score("Rating: [[11]]") is None


def test_seeds_come_from_top_scored_files_and_web_documents(tmp_path):
  records = [{"text": "".join(f"x{i}_{j} = {j}\n" for j in range(200)), "language": "python",
              "kind": "file",
              "repo": "r", "path": f"f{i}.py", "score": float(i)} for i in range(10)]
  records += [{"text": "int main() { return 0; }\n" * 20, "language": "c", "kind": "file",
               "repo": "r", "path": "m.c", "score": 9.5},
              {"text": "How to read a file in Python: use open().\n" * 10, "language": "markdown",
               "kind": "web", "repo": "web", "path": "page.html", "score": 1.0}]
  corpus_lib.write_corpus(records, tmp_path / "c")
  cfg = instruct_data.SeedsConfig(corpus=str(tmp_path / "c"), top_fraction=0.5, num_files=3,
                                  num_web=1, max_chars=300)
  chosen, info = instruct_data.select_seeds(cfg, run_seed=0)
  files = [s for s in chosen if s.kind == "file"]
  assert len(files) == 3 and [s.kind for s in chosen].count("web") == 1
  assert all(s.language == "python" and s.provenance["score"] >= 5 for s in files)
  assert all(len(s.text) <= 300 and s.text.endswith("\n") for s in files)
  assert info["files"] == 3 and info["web"] == 1
  assert instruct_data.select_seeds(cfg, run_seed=0)[0] == chosen  # deterministic
  more = instruct_data.select_seeds(
      instruct_data.SeedsConfig(**{**cfg.__dict__, "num_files": 4}), run_seed=0)[0]
  assert [s.id for s in more if s.kind == "file"][:3] == [s.id for s in files]  # grows in place


def _problem(i, split, difficulty=7):
  return problems_lib.Problem(
      id=f"codeio/p{i}", prompt=f"Write main_solution(n) returning n + {i}.",
      tests=(({"n": 1}, 1 + i),), reference=f"def main_solution(n):\n    return n + {i}\n",
      split=split, provenance={"source": problems_lib.SOURCE, "difficulty": difficulty})


def test_problems_become_sft_records_from_the_train_split_only(tmp_path):
  problem_list = [_problem(0, "train"), _problem(1, "heldout"), _problem(2, "train", None)]
  records, stats = instruct_data.problem_records(problem_list, system_prompt="Be brief.")
  assert [r["id"] for r in records] == ["codeio/p0", "codeio/p2"]
  assert stats == {"source": "problems", "input": 3, "kept": 2,
                   "rejected": {"heldout_split": 1}}
  r = records[0]
  assert [m["role"] for m in r["messages"]] == ["system", "user", "assistant"]
  assert r["messages"][2]["content"] == "```python\ndef main_solution(n):\n    return n + 0\n```"
  assert r["difficulty"] == 7 and records[1]["difficulty"] is None and r["source"] == "codeio"
  assert r["meta"]["problem_id"] == "codeio/p0"
  # Through the entry point, from a problem set directory.
  set_dir = tmp_path / "set"
  set_dir.mkdir()
  (set_dir / problem_set.PROBLEMS_FILE).write_text("".join(
      json.dumps({f: getattr(p, f) for f in problem_set._FIELDS}) + "\n" for p in problem_list))
  (set_dir / problem_set.STATS_FILE).write_text(json.dumps({"splits": {"train": 2, "heldout": 1}}))
  proc = subprocess.run(
      [sys.executable, "data/make_instructions.py", "--config=configs/instruct_data.py:demo",
       f"--workdir={tmp_path / 'out'}", "--source=problems", f"--problems={set_dir}",
       "--noprogress"], cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]
  line = json.loads(proc.stdout.strip().splitlines()[-1])
  assert line["kept"] == 2 and line["rejected"] == {"heldout_split": 1}
  out_records, _ = chat_corpus.read_all(tmp_path / "out" / "corpus", kind="sft")
  assert [r["id"] for r in out_records] == ["codeio/p0", "codeio/p2"]
  saved = json.loads((tmp_path / "out" / "stats.json").read_text())
  assert saved["input"] == saved["kept"] + sum(saved["rejected"].values())


@pytest.mark.slow
@needs_sandbox
def test_smollm2_end_to_end_on_two_seeds(tmp_path):
  """The real local generator (packaged SmolLM2-135M-Instruct) on two stdlib seeds."""
  proc = subprocess.run(
      [sys.executable, "data/make_instructions.py", "--config=configs/instruct_data.py:demo",
       f"--workdir={tmp_path}", "--config.seeds.num_files=2",
       "--config.generator.max_new_tokens=256", "--noprogress"],
      cwd=ROOT, capture_output=True, text=True, timeout=1800,
      env={**__import__("os").environ, "JAX_PLATFORMS": "cpu"})
  assert proc.returncode == 0, proc.stderr[-3000:]
  stats = json.loads((tmp_path / "stats.json").read_text())
  assert stats["input"] == 2 == stats["kept"] + sum(stats["rejected"].values())
  assert stats["backend"] == "sampler" and "smollm2" in stats["model"]
  assert any("SmolLM2-135M-Instruct seldom" in n for n in stats["notes"])
  assert set(stats["rejected"]) <= set(instruct_data.REASONS)
  journal = (tmp_path / "journal.jsonl").read_text().splitlines()
  assert len(journal) == 3
