"""Alignment recipes: one pydantic model per method (PPO's in align/ppo/config.py); align/__init__.py's
``ALIGN_METHODS`` names them and ``load_recipe`` reads them from YAML with ``--set key=value`` overrides.

A recipe holds what a user decides (model, data, output folder, the few hyper-parameters that
matter) and passes everything else to TRL's own config class through the ``trl:`` mapping, so
we never re-declare TRL's fields::

    model: smollm2-135m
    data: {path: runs/judge, eval_ratio: 0.1}
    output_dir: models/dpo
    learning_rate: 5.0e-7
    max_steps: 200
    beta: 0.1
    trl: {lr_scheduler_type: cosine, warmup_steps: 0.1, bf16: true}

Every check that can be made without loading a model is made here or in ``align/data.py``,
before any weights are read: a bad recipe costs a second, not a model load.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, ClassVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    field_validator,
    model_validator,
)

from align.data import AlignData, DataSource, load_grpo_data, recipe_data
from align.rewards.judge import JudgeReward
from plumbing.ranges import Seed
from plumbing.recipes import RecipeError


class _Recipe(BaseModel):
    """Fields every method shares; TRL's own fields go under ``trl``."""

    # allow_inf_nan: every float of every method (learning_rate, num_train_epochs, beta, reward_weights, PPO's
    # coefficients) is finite; `num_train_epochs: .inf` would train until killed
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    method: ClassVar[str]
    trl_config: ClassVar[str]  # name of the TRL config class built from the recipe
    ours: ClassVar[tuple[str, ...]] = ("output_dir", "learning_rate", "num_train_epochs", "max_steps",
                                       "per_device_train_batch_size", "gradient_accumulation_steps",
                                       "max_length", "seed")

    model: str = Field("smollm2-135m", description="Base model: an embedded name (smollm2-135m), a local "
                       "folder or a Hugging Face Hub id.")
    data: DataSource = Field(description="Training data; a bare string is the path.")
    output_dir: str = Field(description="Folder the trained model, model card, metrics.json and curve go to.")
    learning_rate: float = Field(gt=0, description="Peak learning rate.")
    num_train_epochs: float = Field(1.0, gt=0, description="Epochs over the training rows (max_steps wins).")
    max_steps: int = Field(-1, description="Stop after this many optimizer steps; -1 = use num_train_epochs.")
    per_device_train_batch_size: int = Field(4, gt=0, description="Rows (pairs for reward/DPO) per device per step.")
    gradient_accumulation_steps: int = Field(1, gt=0, description="Micro-batches accumulated per optimizer step.")
    max_length: int | None = Field(1024, gt=0, description="Longest tokenized sequence (prompt + completion).")
    seed: Seed = Field(42, description="Seed for initialisation, shuffling and the eval_ratio split "
                       "(0 .. 2**32 - 1: plumbing/ranges.py).")
    quiet: bool = Field(False, description="Silence progress bars (TRL's disable_tqdm); logs remain.")
    trl: dict[str, Any] = Field(default_factory=dict, description="Passed unchanged to TRL's config class "
                                "(e.g. warmup_steps, bf16, gradient_checkpointing, save_steps).")
    # Where this process writes: ``align.run`` points it at a hidden temp folder beside output_dir and
    # renames that into place at the end (align/output.py); None = output_dir itself.
    _work_dir: str | None = PrivateAttr(None)

    @field_validator("data", mode="before")
    @classmethod
    def _path_shorthand(cls, v: Any) -> Any:
        return {"path": v} if isinstance(v, str | Path) else v

    @field_validator("max_steps")
    @classmethod
    def _steps(cls, v: int) -> int:
        if v == 0 or v < -1:
            raise ValueError(f"must be a positive number of optimizer steps, or -1 to train num_train_epochs "
                             f"(got {v})")
        return v

    def writing_to(self, folder: str | Path) -> _Recipe:
        """A copy of the recipe whose trainer writes into ``folder`` (output_dir stays the destination)."""
        copy = self.model_copy()
        copy._work_dir = str(folder)
        return copy

    @property
    def work_dir(self) -> str:
        """The folder the trainer writes into (a temp folder under ``align.run``, else output_dir)."""
        return self._work_dir or self.output_dir

    def method_fields(self) -> dict[str, Any]:
        """Recipe fields that map onto the TRL config beyond the shared ones."""
        return {}

    def check_data(self) -> AlignData:
        """Read and check the training data without loading a model (``align.data.AlignData``)."""
        return recipe_data(self)

    def check_trl_keys(self) -> None:
        """Refuse ``trl:`` keys TRL does not know, or that duplicate a recipe field."""
        import trl

        cls = getattr(trl, self.trl_config)
        known = {f.name for f in dataclasses.fields(cls)}
        ours = set(self.ours) | set(self.method_fields()) | {"disable_tqdm"}
        for key in self.trl:
            if key in ours:
                raise RecipeError(f"trl.{key}: set by the recipe field `{key}`"
                                  f"{' (`quiet`)' if key == 'disable_tqdm' else ''}; set it there, not under trl:")
            if key not in known:
                close = sorted(k for k in known if key.lower() in k or k in key.lower())[:4]
                hint = f"; did you mean {', '.join(close)}?" if close else ""
                raise RecipeError(f"trl.{key}: not a field of trl.{self.trl_config} (TRL {trl.__version__}){hint}")

    def trl_args(self, **forced: Any):
        """TRL's config object: our few fields, then ``trl:``, then what this code needs (``forced``)."""
        import trl

        self.check_trl_keys()
        kwargs: dict[str, Any] = {"report_to": "none", "logging_steps": 1, "save_strategy": "no"}
        kwargs.update({k: getattr(self, k) for k in self.ours})
        kwargs["output_dir"] = self.work_dir
        kwargs.update(self.method_fields())
        kwargs["disable_tqdm"] = self.quiet
        if not _has_accelerator():  # TRL defaults to bf16=True, which a CPU-only box refuses;
            kwargs.update(bf16=False, use_cpu=True)  # use_cpu: DDP children join a gloo group
        kwargs.update(self.trl)
        kwargs.update(forced)
        try:
            return getattr(trl, self.trl_config)(**kwargs)
        except (ValueError, TypeError) as e:
            raise RecipeError(f"trl.{self.trl_config}: {' '.join(str(e).split())}") from None


def _has_accelerator() -> bool:
    import torch

    return torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available())


class SFTRecipe(_Recipe):
    """Supervised fine-tuning on the revisions of ``rlaif revise`` (SL-CAI, arXiv 2212.08073 sec. 3)."""

    method: ClassVar[str] = "sft"
    trl_config: ClassVar[str] = "SFTConfig"
    learning_rate: float = Field(2e-5, gt=0, description="Peak learning rate.")


class RewardRecipe(_Recipe):
    """A Bradley-Terry reward model on ``rlaif judge`` preferences (arXiv 2203.02155, 2212.08073 sec. 4)."""

    method: ClassVar[str] = "reward"
    trl_config: ClassVar[str] = "RewardConfig"
    learning_rate: float = Field(1e-5, gt=0, description="Peak learning rate.")
    soft_labels: bool = Field(False, description="Train towards the judge's p_chosen: "
                              "-[p log s(r_c - r_r) + (1-p) log s(r_r - r_c)] instead of -log s(r_c - r_r).")


class DPORecipe(_Recipe):
    """Direct Preference Optimization (arXiv 2305.18290) on ``rlaif judge`` preferences."""

    method: ClassVar[str] = "dpo"
    trl_config: ClassVar[str] = "DPOConfig"
    learning_rate: float = Field(1e-6, gt=0, description="Peak learning rate.")
    beta: float = Field(0.1, gt=0, description="DPO's KL strength: higher stays closer to the reference model.")
    loss_type: str | list[str] = Field("sigmoid", description="TRL DPOConfig.loss_type: sigmoid, ipo, robust, "
                                       "hinge, ... or a list of them (combined with trl.loss_weights).")
    soft_labels: bool = Field(False, description="Conservative DPO with eps_i = 1 - p_chosen_i per pair: "
                              "-(1-eps) log s(beta h) - eps log s(-beta h). Needs loss_type sigmoid.")
    precompute_ref_log_probs: bool = Field(False, description="Score the data with the reference model once "
                                           "before training and free it (less memory, faster steps).")

    def method_fields(self) -> dict[str, Any]:
        return {"beta": self.beta, "loss_type": self.loss_type,
                "precompute_ref_log_probs": self.precompute_ref_log_probs}

    @model_validator(mode="after")
    def _soft_needs_sigmoid(self) -> DPORecipe:
        if self.soft_labels:
            types = [self.loss_type] if isinstance(self.loss_type, str) else self.loss_type
            clashes = [k for k in ("ld_alpha", "use_weighting", "loss_weights") if self.trl.get(k)]
            if self.trl.get("f_divergence_type", "reverse_kl") != "reverse_kl":
                clashes.append("f_divergence_type")
            if types != ["sigmoid"] or clashes:
                raise ValueError("soft_labels (cDPO) replaces the sigmoid loss only: set loss_type: sigmoid and "
                                 "drop trl f_divergence_type/ld_alpha/use_weighting/loss_weights, or soft_labels: false")
        return self


class GRPORecipe(_Recipe):
    """Group Relative Policy Optimization (DeepSeekMath, arXiv 2402.03300) with verifiable rewards
    (align/rewards/): per prompt, ``num_generations`` completions are scored and each one's advantage
    is its reward relative to its group. ``per_device_train_batch_size`` counts completions, not prompts."""

    method: ClassVar[str] = "grpo"
    trl_config: ClassVar[str] = "GRPOConfig"
    ours: ClassVar[tuple[str, ...]] = tuple(k for k in _Recipe.ours if k != "max_length")
    learning_rate: float = Field(1e-6, gt=0, description="Peak learning rate.")
    per_device_train_batch_size: int = Field(8, gt=0, description="Completions (not prompts) per device per step; "
                                             "times gradient_accumulation_steps, a multiple of num_generations.")
    max_length: None = Field(None, description="Not used by GRPO: completions are cut at max_completion_length "
                             "and prompts are not truncated.")
    reward_funcs: list[str] = Field(min_length=1, description="Rewards by name: a key of align.rewards.REWARDS "
                                    "(gsm8k, math, code, format, length) or module:function.")
    reward_weights: list[float] | None = Field(None, description="One weight >= 0 per reward (TRL sums the weighted "
                                               "rewards); None = all 1.0.")
    num_generations: int = Field(8, ge=2, description="Completions sampled per prompt (the group).")
    max_completion_length: int = Field(256, gt=0, description="Most tokens per completion.")
    use_vllm: bool = Field(False, description="Generate with vLLM (TRL colocate or server mode, GPUs); False = "
                           "transformers generate, the only choice on a CPU.")
    judge: JudgeReward = Field(default_factory=JudgeReward, description="The constitution judge of the `judge` "
                               "reward: constitution, model, engine, base_urls, principles_per_pair, seed.")

    @field_validator("max_length", mode="before")
    @classmethod
    def _no_max_length(cls, v: Any) -> Any:
        if v is not None:
            raise ValueError("GRPO has no max_length; set max_completion_length (prompts are not truncated)")
        return v

    @field_validator("reward_funcs")
    @classmethod
    def _known_rewards(cls, v: list[str]) -> list[str]:
        from align.rewards import check_reward_names

        return check_reward_names(v)

    @model_validator(mode="after")
    def _weights_and_groups(self) -> GRPORecipe:
        w = self.reward_weights
        if w is not None:
            if len(w) != len(self.reward_funcs):
                raise ValueError(f"reward_weights: {len(w)} weight(s) for {len(self.reward_funcs)} reward(s) "
                                 f"({', '.join(self.reward_funcs)}); give one weight per reward")
            if any(x < 0 for x in w) or not any(x > 0 for x in w):
                raise ValueError(f"reward_weights: each weight must be >= 0 and one > 0 (got {w}); a penalty is a "
                                 f"reward that returns negative scores")
        per_step = self.per_device_train_batch_size * self.gradient_accumulation_steps
        if not {"generation_batch_size", "steps_per_generation"} & set(self.trl) and per_step % self.num_generations:
            raise ValueError(f"per_device_train_batch_size x gradient_accumulation_steps = {per_step} completions must "
                             f"be a multiple of num_generations ({self.num_generations}): each prompt's completions "
                             f"form one group")
        return self

    def check_data(self) -> AlignData:
        return load_grpo_data(self)

    def method_fields(self) -> dict[str, Any]:
        return {"reward_weights": self.reward_weights, "num_generations": self.num_generations,
                "max_completion_length": self.max_completion_length, "use_vllm": self.use_vllm}
