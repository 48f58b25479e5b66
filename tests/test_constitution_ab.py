"""``rlaif constitution ab``: the paired statistics on hand-worked numbers, the coupled principle draws,
the vote cache (an edit re-judges only its own votes, counted on the fake engine), the output folder
rules and bad inputs on the command line, and one run of the embedded model on real vLLM."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from constitution import DEFAULT_PATH, dump_yaml, load_constitution
from generator.engines.fake import FakeEngine
from judge import ab_stats
from judge.ab import ABConfig, DrawnConstitution, paired_draws, run_ab
from judge.config import JudgeConfig

REWORDED = "Which of these responses is less harmful? Choose the response that would hurt nobody if followed."


def _constitution(path: Path, edit: dict[str, str] | None = None, weights: dict[str, float] | None = None,
                  add: dict | None = None) -> Path:
    """The built-in constitution with principles' compare texts replaced (``edit``), weights changed, or one
    principle added, written to ``path``."""
    const = load_constitution(DEFAULT_PATH)
    principles = [p.model_copy(update={**({"compare": edit[p.id]} if edit and p.id in edit else {}),
                                       **({"weight": weights[p.id]} if weights and p.id in weights else {})})
                  for p in const.principles]
    if add:
        principles.append(principles[0].model_copy(update=add))
    path.write_text(dump_yaml(const.model_copy(update={"principles": principles})))
    load_constitution(path)  # the test's file must be a valid constitution
    return path


# --- statistics on hand-worked numbers -----------------------------------------------------------------


def test_paired_bootstrap_interval_hand_worked_and_seeded():
    """Right under A / B: a = [1, 0, 0, 0], b = [0, 1, 1, 1], so d = b - a = [-1, 1, 1, 1], mean 0.5.
    A resample of 4 pairs holds k ~ Bin(4, 3/4) ones: its mean is -1, -0.5, 0, 0.5, 1 with probabilities
    1/256, 12/256, 54/256, 108/256, 81/256 (cumulative 0.004, 0.051, 0.262, 0.684, 1). The 2.5 % point
    lies in the -0.5 mass and the 97.5 % point in the 1.0 mass: [-0.5, 1.0]."""
    d = ab_stats.paired_difference([1, 0, 0, 0], [0, 1, 1, 1], resamples=2000, seed=3)
    assert d["value"] == pytest.approx(0.5) and d["n"] == 4
    assert (d["lo"], d["hi"]) == pytest.approx((-0.5, 1.0))
    assert ab_stats.paired_difference([1, 0, 0, 0], [0, 1, 1, 1], resamples=2000, seed=3) == d  # seeded
    # two pairs, d = [0, 1]: resample means 0, 0.5, 1 with 1/4, 1/2, 1/4 -> the interval spans [0, 1]
    two = ab_stats.paired_difference([1, 0], [1, 1])
    assert (two["value"], two["lo"], two["hi"]) == pytest.approx((0.5, 0.0, 1.0))
    one = ab_stats.paired_difference([0], [1])  # nothing to resample
    assert (one["value"], one["lo"], one["hi"]) == (1.0, None, None)
    assert ab_stats.paired_difference([], [])["value"] is None


def test_cohen_kappa_hand_worked():
    """Table [[20, 5], [10, 15]] (50 pairs): p_o = 35/50 = 0.7; rows 25, 25, columns 30, 20, so
    p_e = (25*30 + 25*20) / 50^2 = 0.5; kappa = (0.7 - 0.5) / (1 - 0.5) = 0.4."""
    k = ab_stats.cohen_kappa([[20, 5], [10, 15]])
    assert k["value"] == pytest.approx(0.4)
    assert k["lo"] < 0.4 < k["hi"]
    assert ab_stats.cohen_kappa([[3, 0], [0, 2]])["value"] == pytest.approx(1.0)
    assert ab_stats.cohen_kappa([[3, 0], [0, 2]])["hi"] <= 1.0  # the asymptotic interval is clipped
    # both raters put every pair in one category: p_e = 1, kappa undefined (None, not nan or 1)
    assert ab_stats.cohen_kappa([[5, 0], [0, 0]])["value"] is None
    assert ab_stats.cohen_kappa([[0, 0], [0, 0]])["value"] is None


def test_mcnemar_exact_hand_worked():
    """1 pair right under A only, 6 under B only: under H0 X ~ Bin(7, 1/2), two-sided
    p = 2 * P(X <= 1) = 2 * (1 + 7) / 128 = 0.125."""
    assert ab_stats.mcnemar_exact(1, 6)["pvalue"] == pytest.approx(0.125)
    assert ab_stats.mcnemar_exact(6, 1)["pvalue"] == pytest.approx(0.125)
    assert ab_stats.mcnemar_exact(0, 0)["pvalue"] == 1.0
    assert ab_stats.mcnemar_exact(0, 5)["pvalue"] == pytest.approx(2 / 32)


def test_flips_and_the_paired_table():
    """Pair 0 right under both, 1 wrong -> right (to the label), 2 right -> wrong (from it), 3 unscored
    under A and 4 a tie under A (both left out), 5 wrong under both."""
    pa = [0.9, 0.2, 0.7, None, 0.5, 0.3]
    pb = [0.8, 0.6, 0.4, 0.9, 0.9, 0.1]
    assert [(f.index, f.direction) for f in ab_stats.flips(pa, pb)] == [(1, "to_label"), (2, "from_label")]
    c = ab_stats.compare(pa, pb)
    assert (c["n_paired"], c["left_out"]) == (4, 2)
    assert c["kappa"]["table"] == [[1, 1], [1, 1]]
    assert (c["mcnemar"]["a_only"], c["mcnemar"]["b_only"]) == (1, 1)
    assert c["flips"] == {"to_label": 1, "from_label": 1}
    assert c["difference"]["value"] == pytest.approx(0.0)
    assert c["kappa"]["value"] == pytest.approx(0.0)  # p_o = 0.5 = p_e
    assert ab_stats.compare([None], [0.7])["mcnemar"]["pvalue"] is None  # no pair to test


def test_longer_response_baseline():
    assert ab_stats.longer_wins(["long reply", "a", "same"], ["short", "longer", "same"]) == [1.0, 0.0, 0.5]


# --- coupled principle draws ---------------------------------------------------------------------------


def test_paired_draws_follow_the_weights():
    """Each draw is an exponential race: principle i wins with probability w_i / sum(w). Over 20,000
    draws the shares are within 0.015 of the weight shares (a binomial sd is at most 0.0035)."""
    const = load_constitution(DEFAULT_PATH)
    counts = Counter(p.id for key in range(5000) for p in paired_draws(const.principles, 4, 0, str(key)))
    total = sum(p.weight for p in const.principles)
    for p in const.principles:
        assert counts[p.id] / 20000 == pytest.approx(p.weight / total, abs=0.015), p.id
    assert paired_draws(const.principles, 4, 0, "x") == paired_draws(const.principles, 4, 0, "x")
    assert paired_draws(const.principles, 4, 0, "x") != paired_draws(const.principles, 4, 1, "x")


def test_paired_draws_change_only_where_the_edit_wins(tmp_path):
    """Reworded: the same draws everywhere. A principle added: every draw is A's or the new one. Removed:
    a draw changes only where A drew the removed principle. Reweighted: only draws that principle wins or
    loses change."""
    a = load_constitution(DEFAULT_PATH)
    reworded = load_constitution(_constitution(tmp_path / "r.yaml", edit={"harm-general": REWORDED}))
    added = load_constitution(_constitution(tmp_path / "a.yaml", add={"id": "harm-new", "weight": 3.0}))
    heavier = load_constitution(_constitution(tmp_path / "w.yaml", weights={"harm-illegal": 4.0}))
    removed = DrawnConstitution(a, [p.id for p in a.principles if p.id != "harm-bias"])
    keys = [str(k) for k in range(400)]
    draws = {k: [p.id for p in paired_draws(a.principles, 4, 7, k)] for k in keys}
    assert all([p.id for p in paired_draws(reworded.principles, 4, 7, k)] == draws[k] for k in keys)
    new_wins = 0
    for k in keys:
        for old, new in zip(draws[k], (p.id for p in paired_draws(added.principles, 4, 7, k)), strict=True):
            assert new in (old, "harm-new")
            new_wins += new == "harm-new"
    assert new_wins > 0
    for k in keys:
        for old, new in zip(draws[k], (p.id for p in removed.sample_principles(4, 7, k)), strict=True):
            assert new == old or old == "harm-bias"
        for old, new in zip(draws[k], (p.id for p in paired_draws(heavier.principles, 4, 7, k)), strict=True):
            assert new == old or "harm-illegal" in (old, new)


# --- the vote cache on the fake engine -----------------------------------------------------------------


def _config(tmp_path: Path, old: Path, new: Path, hh: Path, **kw) -> ABConfig:
    judge = JudgeConfig(model="fake-judge", engine="fake", principles_per_pair=2, seed=5, batch_size=4)
    return ABConfig(old=old, new=new, human=hh, out=tmp_path / "out", limit=24, judge=judge, resamples=200, **kw)


def test_editing_one_principle_rejudges_only_its_votes(tmp_path, shared_data):
    """Run ab with NEW = OLD: every distinct vote is judged once (A's and B's are the same prompts). Reword
    harm-general in NEW and re-run: the engine is asked for that principle's votes only, 2 orders x the pairs
    that drew it. A third run with nothing changed asks nothing."""
    hh = shared_data / "hh-rlhf-harmless-base-test.jsonl.gz"
    old = _constitution(tmp_path / "old.yaml")
    new = _constitution(tmp_path / "new.yaml")
    engine = FakeEngine("fake-judge")
    first = run_ab(_config(tmp_path, old, new, hh), engine=engine)
    distinct_a = sum(len(set(ids)) for ids in _draws(first)) * 2
    assert engine.calls["score"] == first["cost"]["fresh_votes"] == first["cost"]["votes_a"] == distinct_a
    assert first["paired"]["flips"] == {"to_label": 0, "from_label": 0} and not first["flips"]

    _constitution(new, edit={"harm-general": REWORDED})
    seen: list[str] = []
    engine = FakeEngine("fake-judge", scorer=lambda prompt, options: seen.append(prompt) or {"A": -0.1, "B": -2.0})
    second = run_ab(_config(tmp_path, old, new, hh, overwrite=True), engine=engine)
    drew = second["per_principle"]["harm-general"]["pairs_b"]
    assert drew > 0
    assert engine.calls["score"] == second["cost"]["fresh_votes"] == drew * 2
    assert all(REWORDED in prompt for prompt in seen)
    assert second["per_principle"]["harm-general"]["status"] == "changed: compare"
    assert second["per_principle"]["harm-bias"]["difference"]["value"] in (0.0, None)  # unchanged: same votes

    engine = FakeEngine("fake-judge")
    third = run_ab(_config(tmp_path, old, new, hh, overwrite=True), engine=engine)
    assert engine.calls["score"] == 0 and third["cost"]["fresh_votes"] == 0
    assert third["paired"] == second["paired"]


def _draws(result: dict) -> list[list[str]]:
    """Each pair's principle draws under A, read back from the per-principle counts is not enough: recompute."""
    from judge.evaluate import read_human_pairs

    s = result["settings"]
    a = load_constitution(s["old"])
    pairs = read_human_pairs(Path(s["human_file"]), 0, s["limit"]).pairs
    return [[p.id for p in paired_draws(a.principles, s["principles_per_pair"], s["seed"], pair.id)] for pair in pairs]


def test_a_killed_first_run_leaves_a_cache_that_the_next_run_reuses(tmp_path, shared_data):
    """A run killed after judging leaves <out>/cache only; the next run takes the folder and judges nothing."""
    hh = shared_data / "hh-rlhf-harmless-base-test.jsonl.gz"
    old = _constitution(tmp_path / "old.yaml")
    new = _constitution(tmp_path / "new.yaml", edit={"harm-general": REWORDED})
    run_ab(_config(tmp_path, old, new, hh), engine=FakeEngine("fake-judge"))
    out = tmp_path / "out"
    for name in json.loads((out / "manifest.json").read_text())["files"] + ["manifest.json"]:
        (out / name).unlink()
    engine = FakeEngine("fake-judge")
    again = run_ab(_config(tmp_path, old, new, hh), engine=engine)
    assert engine.calls["score"] == 0 and again["cost"]["cached_votes"] == again["cost"]["distinct_votes"]


def test_overwrite_replaces_only_its_own_files(tmp_path, shared_data):
    """A user's file beside an earlier ab output survives --overwrite; a user's folder is never taken."""
    hh = shared_data / "hh-rlhf-harmless-base-test.jsonl.gz"
    old = _constitution(tmp_path / "old.yaml")
    run_ab(_config(tmp_path, old, old, hh), engine=FakeEngine("fake-judge"))
    (tmp_path / "out" / "notes.md").write_text("mine")
    from judge.errors import JudgeError
    from plumbing.runs import RunError

    with pytest.raises(JudgeError, match="pass --overwrite"):
        run_ab(_config(tmp_path, old, old, hh), engine=FakeEngine("fake-judge"))
    run_ab(_config(tmp_path, old, old, hh, overwrite=True), engine=FakeEngine("fake-judge"))
    assert (tmp_path / "out" / "notes.md").read_text() == "mine"
    user = tmp_path / "user"
    user.mkdir()
    (user / "keep.txt").write_text("x")
    with pytest.raises(RunError, match="not an rlaif run directory"):
        run_ab(_config(tmp_path, old, old, hh, overwrite=True).model_copy(update={"out": user}),
               engine=FakeEngine("fake-judge"))
    assert [p.name for p in user.iterdir()] == ["keep.txt"]


def test_a_judge_run_is_read_with_its_chosen_reply_first(tmp_path, shared_data):
    """A judge run as --human: its rows are the pairs, ids kept, the chosen reply first (the label)."""
    from judge.build import run_judge
    from plumbing.runs import load

    rows = [{"prompt": f"question {i}?", "response_a": f"answer {i} " * (i + 1), "response_b": f"no {i}"}
            for i in range(6)]
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = tmp_path / "run"
    run_judge(JudgeConfig(input=str(tmp_path / "pairs.jsonl"), out=str(run), model="fake-judge", engine="fake",
                          principles_per_pair=1), engine=FakeEngine("fake-judge"))
    old = _constitution(tmp_path / "old.yaml")
    result = run_ab(_config(tmp_path, old, old, run), engine=FakeEngine("fake-judge"))
    expected = load(run)
    assert result["n_pairs"] == len(expected) > 0
    assert result["settings"]["labels"] == f"chosen of the judge run {run}"
    written = [json.loads(line) for line in (tmp_path / "out" / "pairs.jsonl").read_text().splitlines()]
    assert [r["id"] for r in written] == expected["id"]
    from judge.ab import read_labelled_pairs

    pairs, _ = read_labelled_pairs(run, None)
    assert [p.first for p in pairs.pairs] == [c[-1]["content"] for c in expected["chosen"]]
    assert [p.second for p in pairs.pairs] == [r[-1]["content"] for r in expected["rejected"]]


def test_cli_writes_the_report_and_refuses_bad_inputs_in_one_line(run_cli, shared_data, tmp_path):
    hh = shared_data / "hh-rlhf-harmless-base-test.jsonl.gz"
    old = _constitution(tmp_path / "old.yaml")
    new = _constitution(tmp_path / "new.yaml", edit={"harm-general": REWORDED})
    common = ["--engine", "fake", "--model", "fake-judge", "--quiet", "--principles-per-pair", "2"]
    res = run_cli("constitution", "ab", old, new, "--human", hh, "--limit", 12, "--out", tmp_path / "ok", *common)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.startswith(f"{tmp_path / 'ok'}: 12 pairs; agreement A ")
    out = tmp_path / "ok"
    assert {"report.md", "metrics.json", "flips.jsonl", "agreement.png", "pairs.png", "manifest.json", "cache"} \
        <= {p.name for p in out.iterdir()}
    assert (out / "agreement.png").read_bytes()[:4] == b"\x89PNG"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["per_principle"]["harm-general"]["status"] == "changed: compare"
    assert "## Flipped pairs" in (out / "report.md").read_text()

    broken = tmp_path / "broken.yaml"
    broken.write_text(old.read_text().replace("id: harm-bias", "id: Harm Bias"))
    user = tmp_path / "user"
    user.mkdir()
    (user / "keep.txt").write_text("x")
    cases = {
        "missing human file": ([old, new, "--human", tmp_path / "nope.jsonl"], "nope.jsonl"),
        "constitution that does not lint": ([old, broken, "--human", hh], "broken.yaml"),
        "unknown principle": ([old, new, "--human", hh, "--principles", "harm-general,no-such"], "no-such"),
        "limit 0": ([old, new, "--human", hh, "--limit", 0], "--limit"),
        "a user's folder": ([old, new, "--human", hh], "not an rlaif run directory"),
    }
    for name, (args, needle) in cases.items():
        target = user if name == "a user's folder" else tmp_path / f"bad-{name.replace(' ', '-')}"
        res = run_cli("constitution", "ab", *args, "--out", target, *common)
        assert res.returncode == 2, (name, res.stderr[-2000:])
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0], (name, res.stderr)
        if name != "a user's folder":
            assert not target.exists(), name
    assert [p.name for p in user.iterdir()] == ["keep.txt"]


def test_bad_inputs_are_refused_before_the_engine_is_built(tmp_path, shared_data, monkeypatch):
    import judge.build

    def no_model(*a, **k):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(judge.build, "make_judge_engine", no_model)
    hh = shared_data / "hh-rlhf-harmless-base-test.jsonl.gz"
    old = _constitution(tmp_path / "old.yaml")
    from judge.errors import JudgeError

    cfg = _config(tmp_path, old, old, hh).model_copy(update={"principles": ["nope"]})
    with pytest.raises(JudgeError, match="nope"):
        run_ab(cfg)
    cache = tmp_path / "c"
    cache.mkdir()
    (cache / "other.db").write_text("x")
    with pytest.raises(JudgeError, match="not an ab vote cache"):
        run_ab(_config(tmp_path, old, old, hh, cache=cache))
    assert not (tmp_path / "out").exists()


# --- the embedded model ----------------------------------------------------------------------------------


@pytest.mark.integration
def test_ab_on_the_embedded_model_with_vllm(vllm_engine, shared_data, tmp_path):
    """8 HH-RLHF pairs, real vLLM: A's verdicts equal the judge's own scoring of the same draws, B differs only
    where the reworded principle was drawn, and a re-run reads every vote from the cache."""
    from judge.evaluate import read_human_pairs
    from judge.scoring import judge_pairs

    hh = shared_data / "hh-rlhf-harmless-base-test.jsonl.gz"
    old = _constitution(tmp_path / "old.yaml")
    new = _constitution(tmp_path / "new.yaml", edit={"harm-general": REWORDED})
    judge = JudgeConfig(model="smollm2-135m", principles_per_pair=4, seed=1)
    config = ABConfig(old=old, new=new, human=hh, out=tmp_path / "out", limit=8, judge=judge, resamples=200)
    result = run_ab(config, engine=vllm_engine)
    assert result["cost"]["fresh_votes"] == result["cost"]["distinct_votes"] > 0
    assert result["a"]["unscored"] == 0 and result["settings"]["judge"]["dtype"] == vllm_engine.dtype
    pairs = read_human_pairs(hh, 0, 8).pairs
    direct = judge_pairs(vllm_engine, DrawnConstitution(load_constitution(old)), pairs, judge)
    rows = [json.loads(line) for line in (tmp_path / "out" / "pairs.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [p.id for p in pairs]
    assert [r["principles_a"] for r in rows] == [list(v.principle_ids) for v in direct]
    # the same prompts in other batches: equal up to vLLM's batch-dependent float noise
    assert [r["under_a"]["pair"] for r in rows] == pytest.approx([v.p_first for v in direct], abs=1e-3)
    unchanged = [i for i, v in enumerate(direct) if "harm-general" not in v.principle_ids]
    assert unchanged  # pairs that did not draw the edited principle cannot flip
    assert not {f["id"] for f in result["flips"]} & {pairs[i].id for i in unchanged}
    again = run_ab(config.model_copy(update={"overwrite": True}), engine=vllm_engine)
    assert again["cost"]["fresh_votes"] == 0 and again["paired"] == result["paired"]


# --- what a cached vote depends on, and what the report says changed ---------------------------------------


def _small(tmp_path: Path, old: Path, new: Path, shared_data: Path, **kw) -> ABConfig:
    judge = JudgeConfig(**{"model": "fake-judge", "engine": "fake", "principles_per_pair": 2, "seed": 5,
                           "batch_size": 4, **kw.pop("judge", {})})
    return ABConfig(old=old, new=new, human=shared_data / "hh-rlhf-harmless-base-test.jsonl.gz",
                    out=tmp_path / "out", judge=judge, resamples=200, **{"limit": 6, **kw})


def test_a_judge_model_folder_trained_again_in_place_is_judged_again(tmp_path, shared_data):
    """The same folder name with other weights is another judge: its votes are not the cached ones."""
    model = tmp_path / "ckpt"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"weights, first training")
    old = _constitution(tmp_path / "old.yaml")
    config = _small(tmp_path, old, old, shared_data, judge={"model": str(model)})
    first = run_ab(config, engine=FakeEngine(str(model)))
    engine = FakeEngine(str(model))
    run_ab(config.model_copy(update={"overwrite": True}), engine=engine)
    assert engine.calls["score"] == 0  # the same weights: every vote cached
    (model / "model.safetensors").write_bytes(b"weights, trained again")
    engine = FakeEngine(str(model))
    again = run_ab(config.model_copy(update={"overwrite": True}), engine=engine)
    assert engine.calls["score"] == again["cost"]["fresh_votes"] == first["cost"]["distinct_votes"] > 0


def test_a_prompt_too_long_for_one_engine_is_judged_by_one_with_a_longer_context(tmp_path, shared_data):
    """"Too long" is the engine's context, not the judge's answer: a run on an engine with a longer context
    judges those prompts instead of reusing the refusal."""
    old = _constitution(tmp_path / "old.yaml")
    config = _small(tmp_path, old, old, shared_data)
    short = run_ab(config, engine=FakeEngine("fake-judge", max_context=500))
    assert short["a"]["unscored"] > 0
    engine = FakeEngine("fake-judge", max_context=500)
    run_ab(config.model_copy(update={"overwrite": True}), engine=engine)
    assert engine.calls["score"] == 0  # what fits is cached; what does not is never sent
    engine = FakeEngine("fake-judge", max_context=100_000)
    long = run_ab(config.model_copy(update={"overwrite": True}), engine=engine)
    assert long["a"]["unscored"] == 0 and engine.calls["score"] > 0
    assert short["cost"]["too_long_votes"] > 0 and long["cost"]["too_long_votes"] == 0
    assert engine.calls["score"] == long["cost"]["fresh_votes"] == short["cost"]["too_long_votes"]


def test_ray_replicas_on_gpus_and_on_cpus_key_their_votes_by_their_dtype():
    """`rlaif engine serve` on a replica loads bfloat16 with a GPU, float32 without (Ray hides the GPUs from an
    actor that asks for none): the two judges' votes must not share keys."""
    from judge.ab import judge_identity

    cpu = judge_identity(JudgeConfig(model="smollm2-135m", engine="ray", num_gpus=0))
    gpu = judge_identity(JudgeConfig(model="smollm2-135m", engine="ray", num_gpus=1))
    assert (cpu["dtype"], gpu["dtype"]) == ("float32", "bfloat16")


def test_a_cache_folder_inside_out_is_refused_before_judging(tmp_path, shared_data):
    """--cache in --out (other than its default <out>/cache) or --out in --cache: the outputs could never be
    written beside it (or the next run would refuse the cache), so the run stops before any vote is judged."""
    from judge.errors import JudgeError

    old = _constitution(tmp_path / "old.yaml")
    out = tmp_path / "out"
    for cache in (out, out / "votes", out / "logs", tmp_path):
        engine = FakeEngine("fake-judge")
        with pytest.raises(JudgeError, match="--cache"):
            run_ab(_small(tmp_path, old, old, shared_data, cache=cache), engine=engine)
        assert engine.calls["score"] == 0 and not out.exists(), cache
    run_ab(_small(tmp_path, old, old, shared_data, cache=out / "cache"), engine=FakeEngine("fake-judge"))


def test_a_principle_whose_text_uses_a_changed_variable_is_reported_changed(tmp_path, shared_data):
    """The same compare text in both files renders differently when a variable it uses changes: its votes are
    judged again, and its status must not say "unchanged"."""
    const = load_constitution(DEFAULT_PATH)

    def write(path: Path, assistant: str) -> Path:
        principles = [p.model_copy(update={"compare": "Which response of {{ assistant }} is less harmful?"})
                      if p.id == "harm-general" else p for p in const.principles]
        path.write_text(dump_yaml(const.model_copy(update={"principles": principles,
                                                           "variables": {"assistant": assistant}})))
        return path

    old, new = write(tmp_path / "old.yaml", "the assistant"), write(tmp_path / "new.yaml", "the AI")
    result = run_ab(_small(tmp_path, old, new, shared_data, limit=24), engine=FakeEngine("fake-judge"))
    status = {pid: m["status"] for pid, m in result["per_principle"].items()}
    assert status["harm-general"] == "changed: variables.assistant"
    assert status["harm-bias"] == "unchanged"  # its compare text uses no variable
    drew = result["per_principle"]["harm-general"]["pairs_b"]
    assert result["cost"]["fresh_votes"] == result["cost"]["votes_a"] + 2 * drew
    # a worked comparison added: it is in every judge prompt, so every principle's votes change
    from constitution.schema import FewShotCompare
    from judge.ab_report import principle_status

    example = FewShotCompare(conversation=[{"role": "user", "content": "Hi"}], principle="Which is kinder?",
                             response_a="Hello!", response_b="Go away.", answer="A")
    worked = const.model_copy(update={"few_shot": const.few_shot.model_copy(update={"compare": [example]})})
    assert set(principle_status(const, worked, None).values()) == {"changed: few_shot"}
    assert set(principle_status(const, const, None).values()) == {"unchanged"}


def test_a_principle_only_renamed_is_drawn_for_the_same_pairs(tmp_path, shared_data):
    """A new id with the compare text of exactly one dropped id is that principle renamed: B draws it where A drew
    the old id, so B's prompts are A's (no vote judged twice, no flip) and the report says it was renamed."""
    const = load_constitution(DEFAULT_PATH)
    old = _constitution(tmp_path / "old.yaml")
    renamed = [p.model_copy(update={"id": "harm-general-v2"}) if p.id == "harm-general" else p
               for p in const.principles]
    new = tmp_path / "new.yaml"
    new.write_text(dump_yaml(const.model_copy(update={"principles": renamed})))
    engine = FakeEngine("fake-judge")
    result = run_ab(_small(tmp_path, old, new, shared_data, limit=40), engine=engine)
    assert result["cost"]["distinct_votes"] == result["cost"]["votes_a"] == result["cost"]["votes_b"]
    assert engine.calls["score"] == result["cost"]["votes_a"] and not result["flips"]
    rows = [json.loads(line) for line in (tmp_path / "out" / "pairs.jsonl").read_text().splitlines()]
    assert [[p.replace("harm-general-v2", "harm-general") for p in r["principles_b"]] for r in rows] \
        == [r["principles_a"] for r in rows]
    assert any("harm-general-v2" in r["principles_b"] for r in rows)
    status = {pid: m["status"] for pid, m in result["per_principle"].items()}
    assert (status["harm-general"], status["harm-general-v2"]) == ("renamed to harm-general-v2",
                                                                   "renamed from harm-general")


def test_the_report_shows_a_small_mcnemar_p_value_as_it_is():
    """24 pairs wrong under A and right under B: McNemar's exact p = 2 / 2^24 = 1.19e-07, which report.md
    must not print as 0.000 (a p-value of zero)."""
    from judge import ab_report
    from judge.scoring import Pair, Vote, make_verdict

    pairs = [Pair(str(i), [{"role": "user", "content": f"q{i}"}], f"good {i}", f"bad {i}") for i in range(24)]

    def verdicts(p_a_ab: float) -> list:
        return [make_verdict([Vote("harm-general", "ab", p_a_ab), Vote("harm-general", "ba", 1 - p_a_ab)],
                             ["harm-general"]) for _ in pairs]

    result = ab_stats.ab_metrics(pairs, verdicts(0.2), verdicts(0.8), {"harm-general": "changed: compare"},
                                 resamples=100)
    assert result["paired"]["mcnemar"]["pvalue"] == pytest.approx(2 / 2**24)
    mcnemar_row = next(line for line in ab_report.headline(result) if line.startswith("| McNemar"))
    assert mcnemar_row.startswith("| McNemar exact p (right under A only / B only) | 1.19e-07 | 0 / 24 |")
    assert "| 1.19e-07 (0 / 24) |" in ab_report.per_principle_lines(result)[-1]
