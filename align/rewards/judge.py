"""The constitution judge as a GRPO reward (RLAIF, Bai et al. arXiv 2212.08073 sec 4; as a
group-relative reward, Shao et al. arXiv 2402.03300): each completion is judged by
``judge.scoring.judge_pairs`` against the row's ``reference`` column when there is one, else
against every other completion of its group (same prompt). Its reward is the mean probability
that it is the better response over its pairs::

    r_i = mean_j p(i better than j)       (None when no pair of i got a verdict)

e.g. three completions where the judge prefers c0 over c1 with 0.8, c0 over c2 with 0.6 and c1
over c2 with 0.3: r = (0.7, 0.25, 0.55) (tests/test_rewards.py::test_judge_reward_groups).
Unscored votes stay None (judge/scoring.py), never 0.5.

In a GRPO recipe the reward is named ``judge`` and configured by the recipe's ``judge:`` mapping
(``JudgeReward``): the constitution, the judge model and its engine (in-process vLLM, or
``base_urls`` of ``rlaif engine serve`` servers), principles per pair; ``build_judge_reward`` builds
it when training starts (tests/test_grpo.py::test_grpo_with_the_judge_reward_through_the_cli).
"""

from __future__ import annotations

from collections import defaultdict
from itertools import combinations

from pydantic import ConfigDict, Field

from align.rewards.base import RewardResult, completion_text, scores
from generator.engines.options import EngineSettings
from generator.engines.pool import EnginePool
from judge.config import JudgeConfig
from judge.scoring import Pair, judge_pairs
from plumbing.hashing import item_id
from plumbing.ranges import Seed


def _conversation(prompt) -> list[dict]:
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)


def make_judge_reward(engine, constitution, config: JudgeConfig | None = None):
    """A TRL reward judging with ``engine`` (e.g. ``EngineOptions(...).build()``) under ``constitution``."""
    config = config or JudgeConfig()

    def results(prompts, completions, **columns) -> list[RewardResult]:
        texts = [completion_text(c) for c in completions]
        convs = [_conversation(p) for p in prompts]
        refs = columns.get("reference")
        pairs, owners = [], []
        if refs is not None:
            for i, (conv, text, ref) in enumerate(zip(convs, texts, refs, strict=True)):
                pairs.append(Pair(item_id(conv, text, ref), conv, text, str(ref)))
                owners.append((i, None))
        else:
            groups: dict[str, list[int]] = defaultdict(list)
            for i, conv in enumerate(convs):
                groups[item_id(conv)].append(i)
            for members in groups.values():
                for i, j in combinations(members, 2):
                    pairs.append(Pair(item_id(convs[i], texts[i], texts[j], i, j), convs[i], texts[i], texts[j]))
                    owners.append((i, j))
        verdicts = judge_pairs(engine, constitution, pairs, config)
        got: list[list[float]] = [[] for _ in texts]
        notes: list[list[str]] = [[] for _ in texts]
        for (i, j), v in zip(owners, verdicts, strict=True):
            for k, p in ((i, v.p_first), (j, None if v.p_first is None else 1.0 - v.p_first)):
                if k is None:
                    continue
                (got[k].append(p) if p is not None else notes[k].append(v.reason or "no verdict"))
        out = []
        for k in range(len(texts)):
            if got[k]:
                out.append(RewardResult(sum(got[k]) / len(got[k]), "judged", f"{len(got[k])} pairs", raw=got[k]))
            else:
                why = "; ".join(notes[k]) or "no other completion in its group and no 'reference' column"
                out.append(RewardResult(None, "unjudged", why))
        return out

    def judge_reward(prompts, completions, **columns) -> list[float | None]:
        return scores(results(prompts, completions, **columns))

    judge_reward.results = results
    return judge_reward


class JudgeReward(EngineSettings):
    """The judge of the ``judge`` reward (a GRPO recipe's ``judge:``): its model and engine settings
    (generator/engines/options.py EngineSettings), checked before any model loads."""

    model_config = ConfigDict(extra="forbid")
    constitution: str | None = Field(None, description="Constitution YAML file; default: the built-in one.")
    principles_per_pair: int = Field(2, ge=1, description="Principles sampled per judged pair.")
    seed: Seed = Field(0, description="Seed of the principle draw and of the judge's engine (0 .. 2**32 - 1).")

    def load_constitution(self):
        from constitution import load_constitution, path_or_default

        return load_constitution(path_or_default(self.constitution))

    def judge_config(self) -> JudgeConfig:
        return JudgeConfig(model=self.model, engine=self.engine, base_urls=self.base_urls,
                           principles_per_pair=self.principles_per_pair, seed=self.seed)


def build_judge_reward(options: JudgeReward, pool: EnginePool | None = None):
    """The ``judge`` reward of a recipe: its engine is built here (a model may load) with the judge's engine
    settings, through ``pool`` (generator/engines/pool.py) when the caller shares one."""
    config = options.judge_config()
    engine = (pool or EnginePool()).get(config.engine_options(), seed=options.seed)
    return make_judge_reward(engine, options.load_constitution(), config)
