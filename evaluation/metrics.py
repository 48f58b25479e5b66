"""The metrics of ``rlaif eval`` over its judged rows (evaluation/evaluate.py); the math is in evaluation/winrate.py."""

from __future__ import annotations

GENERATING = ("policy", "reference")


def _principle_probabilities(rows: list[dict]) -> dict[str, list[float | None]]:
    from judge.scoring import Vote, principle_probability

    per: dict[str, list[float | None]] = {}
    for r in rows:
        votes = [Vote(v["principle_id"], v["order"], v["p_a"], v["reason"]) for v in r["votes"]]
        for pid in dict.fromkeys(r["principle_ids"]):  # a principle drawn twice is one judgement of the pair
            per.setdefault(pid, []).append(principle_probability([v for v in votes if v.principle_id == pid]))
    return per


def pick_reward(reward: str, answers: list[str]) -> str | None:
    """The answer checker for ``answers`` (None: no checking)."""
    if reward == "none" or not answers:
        return None
    if reward == "auto":
        return "gsm8k" if all("####" in a for a in answers) else "math"
    return reward


def answer_accuracy(rows: list[dict], reward: str) -> dict | None:
    """Accuracy of both models with the ``reward`` checker (align/rewards/) on the rows with an answer."""
    from align.rewards import REWARDS
    from evaluation import winrate

    checked = [r for r in rows if r["answer"] is not None]
    name = pick_reward(reward, [r["answer"] for r in checked])
    if name is None:
        return None
    out: dict = {"reward": name, "n": len(checked)}
    for role in GENERATING:
        results = REWARDS[name].results([r["prompt"] for r in checked], [r[role] for r in checked],
                                        answer=[r["answer"] for r in checked])
        out[role] = {**winrate.accuracy([x.score for x in results]),
                     "statuses": {s: sum(x.status == s for x in results) for s in sorted({x.status for x in results})}}
    return out


def _mean(xs: list) -> float | None:
    return sum(xs) / len(xs) if xs else None


def compute_metrics(rows: list[dict], *, reward: str = "auto", resamples: int = 1000, seed: int = 0) -> dict:
    """Every metric of the judged rows (evaluation/winrate.py says how each is computed)."""
    from evaluation import winrate
    from judge.metrics import proportion

    p = [r["p_policy"] for r in rows]
    delta = [len(r["policy"]) - len(r["reference"]) for r in rows]
    consistent = [r["position_consistent"] for r in rows if r["position_consistent"] is not None]
    return {
        "n_prompts": len(rows), "identical_responses": sum(r["policy"] == r["reference"] for r in rows),
        "policy_first": sum(bool(r["policy_first"]) for r in rows),
        "win_rate": winrate.win_rate(p, resamples=resamples, seed=seed),
        "length_controlled_win_rate": winrate.length_controlled(p, delta),
        "length": {"unit": "characters", "mean_policy": _mean([len(r["policy"]) for r in rows]),
                   "mean_reference": _mean([len(r["reference"]) for r in rows]), "mean_difference": _mean(delta),
                   "mean_policy_tokens": _mean([r["policy_tokens"] for r in rows]),
                   "mean_reference_tokens": _mean([r["reference_tokens"] for r in rows]),
                   "correlation": winrate.length_correlation(p, delta)},
        "per_principle": {pid: winrate.win_rate(ps, resamples=resamples, seed=seed)
                          for pid, ps in sorted(_principle_probabilities(rows).items())},
        "position_consistency": proportion(sum(consistent), len(consistent)).to_dict(),
        "accuracy": answer_accuracy(rows, reward),
    }
