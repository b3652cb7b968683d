"""Ablations: the plan's checks, the runner (resume, failed arms), verdicts, configs/ablations.py;
the likelihood metrics they compare (evaluation/likelihood.py) against a hand computation."""

import json
import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seedcoder_jax import ablation, config_files, model, recipe
from seedcoder_jax.evaluation import likelihood
from tests.numerics import f32_rtol

CALLS = []


def _make(options, stage_dir, workdir):
  CALLS.append((workdir.parent.name, workdir.name, "make"))
  if options.get("fail"):
    raise RuntimeError("this arm breaks")
  return {"value": options["x"] + options["seed"] * 0.01}


def _score(options, stage_dir, workdir):
  CALLS.append((workdir.parent.name, workdir.name, "score"))
  made = json.loads((workdir / "make" / "DONE.json").read_text())["value"]
  return {"metric": made * options["scale"]}


def _shared(options, stage_dir, workdir):
  CALLS.append(("shared", workdir.name, "prep"))
  return {"ok": True}


@pytest.fixture
def fake_stages(monkeypatch):
  monkeypatch.setitem(recipe.STAGES, "prep", _shared)
  monkeypatch.setitem(recipe.STAGES, "make", _make)
  monkeypatch.setitem(recipe.STAGES, "score", _score)
  CALLS.clear()


def _spec(**over):
  spec = {
      "name": "toy", "description": "toy ablation",
      "stages": ["prep", "make", "score"], "shared": ["prep"],
      "base": {"prep": {"n": 1}, "make": {"x": 1.0, "seed": 0, "fail": False},
               "score": {"scale": 2.0}},
      "arms": {"a": {}, "b": {"make": {"x": 2.0}}, "broken": {"make": {"fail": True}}},
      "keys": ["make.x", "make.fail"], "seeds": [0, 1], "seed_keys": ["make.seed"],
      "metrics": [{"name": "metric", "stage": "score", "key": "metric", "better": "lower"}],
      "expect": [{"metric": "metric", "better": "a", "worse": "b", "claim": "a beats b"},
                 {"metric": "metric", "better": "a", "worse": "broken", "claim": "a beats broken"}],
  }
  spec.update(over)
  return spec


def test_arms_differing_outside_the_named_keys_are_refused(fake_stages):
  spec = _spec()
  spec["arms"]["b"] = {"make": {"x": 2.0}, "score": {"scale": 3.0}}  # a budget change by accident
  with pytest.raises(ablation.AblationError, match=r"(?s)arm 'b'.*score.scale: base 2.0 -> b 3.0"):
    ablation.check(spec)
  spec = _spec(keys=["make", "prep.n"])
  spec["arms"]["b"] = {"prep": {"n": 2}}
  with pytest.raises(ablation.AblationError, match="shared stages"):
    ablation.check(spec)
  with pytest.raises(ablation.AblationError, match="no such key"):
    ablation.check(_spec(arms={"a": {}, "b": {"make": {"typo": 1}}}))
  with pytest.raises(ablation.AblationError, match="unknown recipe stages"):
    ablation.check(_spec(stages=["prep", "nope"]))
  with pytest.raises(ablation.AblationError, match="at least two arms"):
    ablation.check(_spec(arms={"a": {}}))
  with pytest.raises(ablation.AblationError, match="seed_keys"):
    ablation.check(_spec(seed_keys=["prep.n"]))
  with pytest.raises(ablation.AblationError, match="per_arm"):
    ablation.check(_spec(per_arm=["score"]))
  # A base option no stage reads (a real stage's misspelt key) is refused before any arm runs.
  spec = config_files.load("configs/ablations.py:commits_repo").to_dict()
  spec["base"]["likelihood_eval"]["cross_files"] = True
  with pytest.raises(ablation.AblationError,
                     match=r"recipe option likelihood_eval\.cross_files: not an option"):
    ablation.check(spec)


def test_runner_runs_every_arm_resumes_and_reports_failed_arms(fake_stages, tmp_path):
  result = ablation.run(_spec(), tmp_path)
  assert CALLS.count(("shared", "shared", "prep")) == 1  # shared stages run once
  assert (tmp_path / "a" / "seed1" / "prep").is_symlink()
  arms = result["arms"]
  assert arms["a"]["seeds"][0]["status"] == "done" and arms["b"]["seeds"][1]["status"] == "done"
  assert arms["broken"]["seeds"][0]["status"] == "failed"
  assert "this arm breaks" in arms["broken"]["seeds"][0]["error"]
  # Final metric: mean and spread over seeds, hand-computed (make: x + seed/100; score: 2x).
  a = result["final"]["a"]["metric"]
  assert a["values"] == pytest.approx([2.0, 2.02]) and a["mean"] == pytest.approx(2.01)
  assert a["std"] == pytest.approx(math.sqrt(2) * 0.01)
  v = {x["claim"]: x for x in result["verdicts"]}
  assert v["a beats b"]["result"] == "reproduced"  # margin 2.0, noise ~0.01
  assert v["a beats b"]["margin"] == pytest.approx(2.0)
  assert v["a beats broken"]["result"] == "not measured"
  md = (tmp_path / "ablation.md").read_text()
  assert "| broken |" in md and "failed (RuntimeError: this arm breaks)" in md
  assert "a beats b: reproduced" in md
  saved = json.loads((tmp_path / "ablation.json").read_text())
  assert saved["arms"]["b"]["diff"] == {"make.x": 2.0}
  # Again: finished stages are skipped, the failed arm is retried.
  CALLS.clear()
  ablation.run(_spec(), tmp_path)
  assert {c[2] for c in CALLS} == {"make"} and {c[0] for c in CALLS} == {"broken"}


def test_per_arm_stages_run_once_per_arm(fake_stages, tmp_path):
  spec = _spec(per_arm=["make"], seed_keys=["score.seed"], keys=["make.x", "make.fail"],
               arms={"a": {}, "b": {"make": {"x": 2.0}}}, expect=[])
  spec["base"]["score"]["seed"] = 0
  result = ablation.run(spec, tmp_path)
  assert sorted(c[:2] for c in CALLS if c[2] == "make") == [("a", "common"), ("b", "common")]
  assert (tmp_path / "b" / "seed1" / "make").is_symlink()
  assert result["final"]["b"]["metric"]["values"] == [4.0, 4.0]
  with pytest.raises(ablation.AblationError, match="run its seed 0 first"):
    ablation.run({**spec, "arms": {**spec["arms"], "c": {"make": {"x": 3.0}}}}, tmp_path,
                 only=("c", 1))


def test_one_arm_job_needs_the_shared_stages_first(fake_stages, tmp_path):
  with pytest.raises(ablation.AblationError, match="--shared first"):
    ablation.run(_spec(), tmp_path, only=("a", 0))
  ablation.run_shared(_spec(), tmp_path)
  result = ablation.run(_spec(), tmp_path, only=("b", 1))
  assert result["arms"]["b"]["seeds"][1]["status"] == "done"
  assert result["arms"]["a"]["seeds"][0]["status"] == "unfinished"


def test_report_names_the_code_and_warns_when_runs_used_different_code(fake_stages, tmp_path,
                                                                      monkeypatch):
  spec = _spec(arms={"a": {}, "b": {"make": {"x": 2.0}}}, seeds=[0], expect=[])
  monkeypatch.setattr(ablation, "code_version", lambda: "abc123")
  ablation.run(spec, tmp_path, only=None)
  assert (tmp_path / "shared" / "prep" / ablation.CODE).read_text().strip() == "abc123"
  assert "Code: every stage ran on `abc123`." in (tmp_path / "ablation.md").read_text()
  # Arm b is rerun after a change landed: its own stages record the new code, the shared one keeps
  # the old; the report warns instead of comparing silently.
  for stage in ("make", "score"):
    (tmp_path / "b" / "seed0" / stage / "DONE.json").unlink()
  monkeypatch.setattr(ablation, "code_version", lambda: "def456+dirty:0f0f0f0f")
  result = ablation.run(spec, tmp_path)
  assert result["code"] == ["abc123", "def456+dirty:0f0f0f0f"]
  assert result["arms"]["b"]["seeds"][0]["code"] == {
      "prep": "abc123", "make": "def456+dirty:0f0f0f0f", "score": "def456+dirty:0f0f0f0f"}
  md = (tmp_path / "ablation.md").read_text()
  assert "**Warning: the stages ran on different code**" in md
  assert "b seed 0: prep `abc123`, make `def456+dirty:0f0f0f0f`" in md
  assert "a seed 0: prep `abc123`, make `abc123`, score `abc123`" in md


def test_code_version_is_this_checkouts_commit():
  version = ablation.code_version()
  assert version == "unknown" or len(version.split("+")[0]) == 12


def test_verdicts_by_hand():
  metric = {"name": "m", "better": "higher"}
  expect = {"metric": "m", "better": "x", "worse": "y", "claim": "x > y"}
  s = lambda vals: ablation._stats(vals)
  v = ablation.verdict(expect, metric, {"x": {"m": s([1.0, 1.2])}, "y": {"m": s([1.05, 1.1])}})
  # margin 0.025; variances 0.02 and 0.00125 over 2 seeds each: se = sqrt(0.01 + 0.000625)
  assert v["margin"] == pytest.approx(0.025) and v["noise"] == pytest.approx(math.sqrt(0.010625))
  assert v["result"] == "within noise"
  v = ablation.verdict(expect, metric, {"x": {"m": s([1.0])}, "y": {"m": s([2.0])}})
  assert v["result"] == "opposite direction" and "noise not measured" in v["line"]
  v = ablation.verdict(expect, metric, {"x": {"m": s([0.7126])}, "y": {"m": s([0.7126])}})
  assert v["result"] == "no difference" and v["margin"] == 0  # a tie is neither direction
  # One arm finished two seeds, the other one (a seed failed or was cut off): no noise estimate.
  v = ablation.verdict(expect, metric, {"x": {"m": s([1.0, 1.2])}, "y": {"m": s([1.05])}})
  assert v["result"] == "same direction" and v["noise"] is None
  assert "2+1 seeds" in v["line"] and "noise not measured" in v["line"]


@pytest.mark.parametrize("name", ["fim_order", "fim_level", "quality_filter", "commits_repo",
                                  "rl_schedule", "rl_curriculum", "web_hard_negatives"])
def test_the_paper_ablations_are_well_formed(name):
  spec = config_files.load(f"configs/ablations.py:{name}").to_dict()
  ablation.check(spec)
  for arm in spec["arms"]:  # every arm resolves against the recipe's and the trainers' options
    options = ablation.arm_options(spec, arm, spec["seeds"][-1])
    for stage, spec_file in (("rl", "rl:demo"),):
      if stage in options:
        from seedcoder_jax import recipe_posttrain
        recipe_posttrain._trainer_config(spec_file, {}, options[stage])


def test_quality_filter_rules_only_arm_drops_nothing_by_quality_score():
  from seedcoder_jax import recipe as recipe_lib
  from seedcoder_jax.curation import pipeline
  spec = config_files.load("configs/ablations.py:quality_filter").to_dict()
  plans = {}
  for arm in ("llm_filter", "rules_only"):
    options = ablation.arm_options(spec, arm, 0)["curate"]
    config = config_files.load(f"curation:{options['variant']}")
    recipe_lib._override(config, options["overrides"])
    plans[arm] = pipeline.make_plan(config, inputs=[str(pathlib.Path(pipeline.__file__).parent)])
  assert plans["llm_filter"].scorer is not None and plans["llm_filter"].drop_percentile == 10.0
  rules = plans["rules_only"]
  assert rules.oracle is None and rules.scorer is None and rules.drop_percentile == 0.0
  assert all(v == 0.0 for _, v in rules.web.thresholds)


def test_web_hard_negatives_arms_differ_only_in_the_seed_files():
  spec = config_files.load("configs/ablations.py:web_hard_negatives").to_dict()
  arms = {arm: ablation.arm_options(spec, arm, 3) for arm in spec["arms"]}
  assert arms["with_hard_negatives"] == {"web_classifier_eval": {
      "hard_negatives": True, "threshold": 0.5, "seed": 3}}
  assert ablation.diff(arms["with_hard_negatives"], arms["without_hard_negatives"]) == {
      "web_classifier_eval.hard_negatives": (True, False)}
  assert [e["metric"] for e in spec["expect"]] == ["precision", "recall"]


def test_target_loss_equals_a_hand_computation():
  cfg = model.preset("tiny", vocab_size=97, max_seq_len=32)
  params = model.init_params(cfg, seed=1)
  rng = np.random.default_rng(0)
  pairs = [(list(rng.integers(1, 97, n)), list(rng.integers(1, 97, m)))
           for n, m in [(3, 4), (10, 1), (1, 7), (30, 9)]]  # the last one outgrows 32 tokens
  got = likelihood.target_loss(cfg, params, pairs, batch_size=3)
  nll, count = 0.0, 0
  for context, target in pairs:
    ids = (context + target)[-33:]
    context_len = len(ids) - len(target)
    logp = jax.nn.log_softmax(model.forward(cfg, params, jnp.asarray([ids[:-1]]))[0], axis=-1)
    for t in range(context_len, len(ids)):
      nll -= float(logp[t - 1, ids[t]])
      count += 1
  assert got["tokens"] == count and got["truncated"] == 1 and got["examples"] == 4
  np.testing.assert_allclose(got["loss"], nll / count, rtol=f32_rtol(cfg.vocab_size))


@pytest.mark.slow
def test_likelihood_eval_stage_on_a_trained_run(tmp_path):
  """The recipe's likelihood_eval stage on a 4-step tiny pretraining run: every figure finite and
  in the range of a near-uniform model over the tokenizer's vocabulary."""
  base = config_files.load("configs/pretrain.py:tiny")
  config = base.to_dict()
  config["opt"].update(total_steps=4, warmup_steps=1)
  config["ckpt"].update(every_steps=4, async_save=False)
  config["eval"].update(every_steps=0, batches=1)
  config["log"].update(every_steps=1, progress_bar=False)
  (tmp_path / "tokenizer").mkdir()
  (tmp_path / "tokenizer" / recipe.DONE).write_text(json.dumps({"spec": base.data.tokenizer}))
  options = {"pretrain": {"config": config, "corpora": [str(pathlib.Path(base.data.corpora[0]).absolute())],
                          "data": {"score_drop_fraction": 0.0}},
             "likelihood_eval": {"model": "pretrain", "limit": 8, "cross_file": True}}
  out = recipe.run(["pretrain", "likelihood_eval"], options, tmp_path)["likelihood_eval"]
  vocab = base.prepare.vocab_size  # the tiny tokenizer the run trains with
  for key in ("humaneval_solution_loss", "fim_middle_loss_spm", "fim_middle_loss_psm",
              "cross_file_loss", "cross_file_loss_alone"):
    assert 0.5 < out[key] < 2 * math.log(vocab), (key, out[key])
  assert out["cross_file_gain"] == out["cross_file_loss_alone"] - out["cross_file_loss"]
  assert out["cross_file_tokens"] > 1000 and "idlelib" in out["cross_file_repos"]
  assert out["fim_order_trained"] == "spm" and out["fim_middle_loss"] == out["fim_middle_loss_spm"]
  assert out["humaneval_solution_nats_per_char"] > 0 and out["humaneval_solution_tokens"] > 100


class _CharTokenizer:
  """Characters as ids (ord + 10), with the special tokens repository-level documents use."""
  bos_id, eos_id, repo_id, file_sep_id = 1, 2, 3, 4
  special_ids = {"bos": 1, "eos": 2, "repo_name": 3, "file_sep": 4}

  def encode(self, text):
    return [ord(c) % 80 + 10 for c in text]


def _repo(files):
  from seedcoder_jax.evaluation import repo_heldout
  return repo_heldout.Repository("pkg", tuple(sorted(files.items())))


def test_cross_file_pairs_follow_the_repository_document_layout():
  tok = _CharTokenizer()
  enc = tok.encode
  # c imports b, b imports a: dependency order a, b, c whatever the tie-break.
  repo = _repo({"c.py": "from . import b\n", "a.py": "A = 1\n", "b.py": "from . import a\n"})
  pairs = likelihood.cross_file_pairs(tok, repo, files_per_repo=2, target_tokens=5,
                                      context_tokens=1000)
  head = [1, 3] + enc("pkg")
  part = lambda p, t: [4] + enc(p + "\n") + enc(t)
  (with_b, alone_b), (with_c, alone_c) = pairs
  assert with_b == (head + part("a.py", "A = 1\n") + [4] + enc("b.py\n"), enc("from ")[:5])
  assert alone_b == (head + [4] + enc("b.py\n"), with_b[1])
  assert with_c[0] == (head + part("a.py", "A = 1\n") + part("b.py", "from . import a\n")
                       + [4] + enc("c.py\n"))
  assert alone_c == (head + [4] + enc("c.py\n"), enc("from "))
  # A context budget keeps the nearest tokens: the end of b.py and c.py's own header.
  _, ((short, _), _) = likelihood.cross_file_pairs(tok, repo, files_per_repo=2, target_tokens=5,
                                                   context_tokens=12)
  assert short == with_c[0][-12:]


def test_cross_file_loss_is_target_loss_with_and_without_the_other_files():
  cfg = model.preset("tiny", vocab_size=97, max_seq_len=64)
  params = model.init_params(cfg, seed=2)
  tok = _CharTokenizer()
  repo = _repo({"a.py": "def f():\n  return 1\n" * 3, "b.py": "from . import a\nx = a.f()\n",
                "c.py": "import b\nprint(b.x)\n"})
  got = likelihood.cross_file_loss(cfg, params, tok, [repo], target_tokens=16, max_len=48)
  pairs = likelihood.cross_file_pairs(tok, repo, files_per_repo=8, target_tokens=16,
                                      context_tokens=33)
  with_ctx = likelihood.target_loss(cfg, params, [w for w, _ in pairs], max_len=48)
  alone = likelihood.target_loss(cfg, params, [a for _, a in pairs], max_len=48)
  assert got["loss"] == with_ctx["loss"] and got["loss_alone"] == alone["loss"]
  assert got["gain"] == alone["loss"] - with_ctx["loss"] and got["truncated"] == 0
  assert got["examples"] == 2 and got["tokens"] == with_ctx["tokens"] == alone["tokens"] == 32
  assert got["repos"] == ["pkg"]
  no_sep = type("NoSep", (_CharTokenizer,), {"special_ids": {"bos": 1, "repo_name": 3}})()
  with pytest.raises(ValueError, match=r"no \['file_sep'\] token"):
    likelihood.cross_file_loss(cfg, params, no_sep, [repo])
  with pytest.raises(ValueError, match="leaves no context"):
    likelihood.cross_file_loss(cfg, params, tok, [repo], target_tokens=48, max_len=48)


def test_heldout_repositories_are_not_curated_and_load_as_ingest_names_them(tmp_path):
  from seedcoder_jax.evaluation import repo_heldout
  curated = {pathlib.Path(p).name for p in config_files.load("curation:tiny").ingest.inputs}
  assert "json" in curated and not set(repo_heldout.PACKAGES) & curated
  (tmp_path / "re" / "__pycache__").mkdir(parents=True)
  (tmp_path / "re" / "_parser.py").write_text("P = 1\n")
  (tmp_path / "re" / "__init__.py").write_text("from . import _parser\n")
  (tmp_path / "re" / "__pycache__" / "x.py").write_text("cached\n")
  (tmp_path / "re" / "notes.txt").write_text("not python\n")
  (tmp_path / "venv").mkdir()
  (tmp_path / "venv" / "__init__.py").write_text("alone\n")  # one file: no cross-file context
  repos = repo_heldout.load(root=tmp_path)
  assert repos == [repo_heldout.Repository(
      "re", (("__init__.py", "from . import _parser\n"), ("_parser.py", "P = 1\n")))]
  with pytest.raises(FileNotFoundError, match="none of the held-out packages"):
    repo_heldout.load(packages=("venv", "absent"), root=tmp_path)
  assert len(repo_heldout.load()) >= 5  # this interpreter's stdlib
