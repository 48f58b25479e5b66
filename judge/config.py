"""``JudgeConfig``: the one config of the judge stage, and the judge's engine settings.

Fields that define the labels (engine kind, model served, principles per pair, orders, CoT,
pairing, seed, ...) go into the run's spec hash; runtime knobs (base URLs, batch size, limit)
do not. ``judge.scoring.judge_pairs`` reads only the scoring fields, so judge
evaluation can build a config without ``input``/``out``.

Every route that judges builds its engine from ``JudgeConfig.engine_options()`` (``rlaif judge``, the
pipeline's judge stage, ``rlaif eval``'s judge, ``rlaif judge-eval``, the GRPO judge reward): options whose
``engine_kwargs`` add the judge's CPU settings (``vllm_judge_kwargs``) to an in-process vLLM engine, however
the engine is built or shared (generator/engines/pool.py; tests/test_judge_engine_settings.py).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import ConfigDict, Field, model_validator

from generator.engines.options import BatchSize, EngineOptions, EngineSettings
from judge.calibration import MIN_VOTES
from judge.prefix import CPU_PREFIX_BLOCK
from plumbing.ranges import Seed

LAYOUTS = ("cai", "shared-prefix")
# The layout of direct (option-letter) judging when none is named; CoT has only the CAI layout.
DEFAULT_LAYOUT = "cai"


def vllm_judge_kwargs() -> dict[str, Any]:
    """What the judge adds to an in-process vLLM engine: ``CPU_PREFIX_BLOCK``-token KV blocks on a CPU
    (judge/prefix.py says why), nothing on a GPU."""
    from generator.engines.vllm_cpu import on_cpu

    return {"block_size": CPU_PREFIX_BLOCK} if on_cpu() else {}


class JudgeEngineOptions(EngineOptions):
    """The judge's engine: EngineOptions plus the judge's settings of an in-process vLLM engine."""

    def engine_kwargs(self) -> dict[str, Any]:
        return vllm_judge_kwargs() if self.engine_name() == "vllm" else {}


class JudgeConfig(EngineSettings):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)  # no inf/nan temperature
    # `rlaif run` checks a judge naming a folder an earlier stage writes (pipeline/stages.py build); the folder is
    # checked by engine_options(), which every route makes before it reads the model (judge/build.py judge_spec)
    check_model_folder: ClassVar[bool] = False

    input: str | None = Field(None, description="A generate run, a revise run, or a pair file "
                                                "(jsonl/json/parquet/csv with prompt, response_a, response_b).")
    out: str | None = Field(None, description="Output run directory of the preference data.")
    constitution: str | None = Field(None, description="Constitution YAML file; default: the built-in one.")
    principles_per_pair: int = Field(4, ge=1, description="Principles sampled (by weight) per pair; "
                                                          "their probabilities are ensembled.")
    orders: Literal["both", "one"] = Field("both", description="'both' scores each pair in both option orders "
                                                               "to cancel position bias; 'one' only as given.")
    cot: bool = Field(False, description="Chain-of-thought: sample rationales, then read the option letter "
                                         "(probabilities clamped to [0.4, 0.6], arXiv 2212.08073 sec 4.1).")
    cot_samples: int = Field(4, ge=1, description="Rationales sampled per (pair, principle, order) with --cot.")
    cot_max_tokens: int = Field(128, ge=1, description="Token budget of one rationale.")
    cot_temperature: float = Field(1.0, ge=0.0, description="Sampling temperature of the rationales.")
    layout: Literal["cai", "shared-prefix"] | None = Field(
        None, description="Prompt layout: 'cai' (principle before the responses, arXiv 2212.08073) or "
                          "'shared-prefix' (the question after the responses, so a (pair, order)'s principles "
                          f"share the prompt up to it); default: {DEFAULT_LAYOUT}, and cai with --cot.")
    calibrate: Literal["none", "batch"] = Field("none", description="'batch': divide each P(A) by the mean P(A) "
                                                "over every scored vote of the run (both orders; needs --orders both) "
                                                "and renormalise before combining the orders (batch calibration, "
                                                "arXiv 2309.17249; "
                                                f"not applied, and recorded so, below {MIN_VOTES} scored votes).")
    pairing: Literal["all", "best-worst"] = Field("all", description="For runs with N responses per prompt: "
                                                  "'all' emits every pair; 'best-worst' ranks the responses "
                                                  "with a Bradley-Terry fit and emits best vs worst.")
    min_confidence: float = Field(0.0, ge=0.0, le=1.0, description="Rows with p_chosen below this go to the "
                                                                   "'filtered' split instead of 'train'.")
    templates: str | None = Field(None, description="Folder whose .jinja files shadow the built-in prompts.")
    seed: Seed = Field(0, description="Seed of principle sampling, CoT rationale sampling and the engine.")
    top_k: int = Field(20, ge=2, le=20, description="Top logprobs read at the option position.")
    batch_size: BatchSize = 64
    limit: int | None = Field(None, ge=1, description="Judge only the first N input items (runtime).")
    overwrite: bool = Field(False, description="Start the output run over if its spec changed.")
    allow_empty: bool = Field(False, description="Accept an input with nothing to judge (an empty run) instead of "
                                                 "refusing it (runtime).")

    @model_validator(mode="after")
    def _options_fit_together(self) -> JudgeConfig:
        if self.cot_samples != 4 and not self.cot:
            raise ValueError("--cot-samples is only used with --cot; add --cot or drop --cot-samples")
        if self.cot and self.layout == "shared-prefix":
            raise ValueError("--layout shared-prefix has no chain-of-thought template; use --layout cai with --cot")
        if self.cot and self.calibrate != "none":
            raise ValueError("--calibrate batch reads uncalibrated option probabilities, but --cot clamps them to "
                             "[0.4, 0.6]; drop one of them")
        if self.orders == "one" and self.calibrate != "none":
            raise ValueError("--calibrate batch needs --orders both: with one order its prior is that order's mean "
                             "P(A), which holds the first response's real advantage and cancels it; drop one of them")
        return self

    def engine_options(self) -> JudgeEngineOptions:
        """How the judge's engine is built, with the judge's engine settings (``JudgeEngineOptions``)."""
        return JudgeEngineOptions(model=self.model, engine=self.engine, base_urls=self.base_urls,
                                  batch_size=self.batch_size, replicas=self.replicas, num_gpus=self.num_gpus,
                                  ray_address=self.ray_address)

    @property
    def resolved_layout(self) -> str:
        """The layout used: the one named, else cai with CoT and ``DEFAULT_LAYOUT`` without."""
        return self.layout or ("cai" if self.cot else DEFAULT_LAYOUT)

    def cot_spec(self) -> dict | None:
        if not self.cot:
            return None
        return {"samples": self.cot_samples, "max_tokens": self.cot_max_tokens,
                "temperature": self.cot_temperature, "clamp": [0.4, 0.6]}

    def runtime(self) -> dict:
        """What is recorded in the manifest but never hashed."""
        return {"base_urls": self.base_urls, "batch_size": self.batch_size, "limit": self.limit,
                "allow_empty": self.allow_empty}
