"""The PPO recipe: prompts, a frozen reward model (``rlaif align reward``) and/or reward functions
(align/rewards/), and the PPO knobs of arXiv 2403.17031 with their defaults there.

One PPO step = sample ``per_device_train_batch_size x gradient_accumulation_steps x num_mini_batches``
responses per process, score them, then ``num_ppo_epochs`` passes over them in ``num_mini_batches``
shuffled minibatches (one optimizer step each, accumulated over ``gradient_accumulation_steps``
micro-batches). There is no ``trl:`` pass-through: TRL 1.16 has no PPO trainer, align/ppo/ is ours.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field, field_validator, model_validator

from align.config import _Recipe
from align.data import AlignData
from align.ppo.data import load_prompts
from plumbing.recipes import RecipeError


class PPORecipe(_Recipe):
    """PPO against a reward model (RL-CAI, arXiv 2212.08073 sec. 4; InstructGPT, arXiv 2203.02155)."""

    method: ClassVar[str] = "ppo"
    trl_config: ClassVar[str] = ""
    learning_rate: float = Field(1e-6, gt=0, description="Adam learning rate of the policy and value model.")
    max_length: int | None = Field(None, gt=0, description="Longest prompt in tokens; longer prompts keep their "
                                   "last max_length tokens. None = no limit.")
    per_device_train_batch_size: int = Field(4, gt=0, description="Responses per micro-batch per process.")
    reward_model: str | None = Field(None, description="Folder written by `rlaif align reward` (a 1-output sequence "
                                     "classifier with the policy's tokenizer); frozen. The value model starts from it.")
    reward_funcs: list[str] = Field(default_factory=list, description="Rewards of align.rewards.REWARDS or "
                                    "module:function, added to the reward model's score (or replacing it when "
                                    "there is no reward_model).")
    reward_weights: list[float] | None = Field(None, description="One weight >= 0 per reward_funcs entry; None = 1.0.")
    reward_model_weight: float = Field(1.0, ge=0, description="Weight of the (normalised) reward-model score.")
    value_model: str | None = Field(None, description="Folder the value model starts from; None = reward_model, "
                                    "or the policy with a new 1-output head when there is no reward model.")
    num_mini_batches: int = Field(1, gt=0, description="Optimizer steps per PPO epoch.")
    num_ppo_epochs: int = Field(4, gt=0, description="Passes over each batch of rollouts (arXiv 2403.17031: 4).")
    max_new_tokens: int = Field(53, gt=0, description="Longest response in tokens (the length limit).")
    temperature: float = Field(0.7, gt=0, description="Sampling temperature; the same temperature scales the logits "
                               "when log-probabilities are computed for the loss (arXiv 2403.17031).")
    kl_coef: float = Field(0.05, ge=0, description="Initial KL coefficient beta of the per-token penalty.")
    kl_target: float | None = Field(None, gt=0, description="Target summed KL per response for the adaptive controller "
                                    "(arXiv 1909.08593); None = a fixed kl_coef.")
    kl_horizon: int = Field(10000, gt=0, description="Horizon of the adaptive KL controller.")
    missing_eos_penalty: float = Field(1.0, ge=0, description="Subtracted from the score of a response that hits "
                                       "max_new_tokens without EOS.")
    normalize_reward: bool = Field(True, description="Normalise the reward-model score with its running mean and std.")
    whiten_rewards: bool = Field(False, description="Whiten the per-token rewards (keeping their mean) before GAE.")
    gamma: float = Field(1.0, ge=0, le=1, description="Discount of GAE.")
    lam: float = Field(0.95, ge=0, le=1, description="Lambda of GAE.")
    cliprange: float = Field(0.2, gt=0, description="Clip range epsilon of the policy ratio.")
    cliprange_value: float = Field(0.2, gt=0, description="Clip range of the value-function update.")
    vf_coef: float = Field(0.1, ge=0, description="Weight of the value loss.")
    ent_coef: float = Field(0.0, ge=0, description="Weight of the entropy bonus (0 = entropy only logged).")
    target_kl: float | None = Field(None, gt=0, description="Stop a step's remaining PPO updates once the "
                                    "approximate KL to the rollout policy exceeds this; None = never.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping norm (under DeepSpeed: its engine's "
                                 "gradient_clipping, written into its config).")
    save_steps: int = Field(0, ge=0, description="Checkpoint every N steps (resumed after a kill); 0 = never.")
    checkpoint_dir: str | None = Field(None, description="Where checkpoints go; None = `.<out name>.ppo-checkpoints` "
                                       "beside output_dir. Removed when training ends well.")
    bf16: bool = Field(False, description="Train in bfloat16 autocast (GPUs); CPUs train in float32.")
    gradient_checkpointing: bool = Field(False, description="Recompute activations in the backward pass.")

    @field_validator("trl")
    @classmethod
    def _no_trl(cls, v: dict[str, Any]) -> dict[str, Any]:
        if v:
            raise ValueError(f"PPO is the project's own trainer (TRL 1.16 has none), so it takes no trl: options "
                             f"(got {', '.join(v)}); set its fields (bf16, gradient_checkpointing, ...) directly")
        return v

    @field_validator("reward_funcs")
    @classmethod
    def _known_rewards(cls, v: list[str]) -> list[str]:
        from align.rewards import check_reward_names

        return check_reward_names(v, built=())  # the judge reward is GRPO's (it judges a group)

    @model_validator(mode="after")
    def _rewards(self) -> PPORecipe:
        if not self.reward_model and not self.reward_funcs:
            raise ValueError("reward_model: PPO needs a reward: give reward_model (a `rlaif align reward` output, "
                             "--reward-model) and/or reward_funcs")
        w = self.reward_weights
        if w is not None and len(w) != len(self.reward_funcs):
            raise ValueError(f"reward_weights: {len(w)} weight(s) for {len(self.reward_funcs)} reward(s); "
                             f"give one per reward_funcs entry")
        if w is not None and any(x < 0 for x in w):
            raise ValueError(f"reward_weights: each weight must be >= 0 (got {w})")
        return self

    def check_trl_keys(self) -> None:
        """PPO has no TRL config; ``trl:`` is refused by its validator."""

    @property
    def rollouts_per_device(self) -> int:
        return self.per_device_train_batch_size * self.gradient_accumulation_steps * self.num_mini_batches

    @property
    def checkpoints(self) -> Path:
        if self.checkpoint_dir:
            return Path(self.checkpoint_dir)
        out = Path(self.output_dir)
        return out.with_name(f".{out.name}.ppo-checkpoints")

    def check_data(self) -> AlignData:
        """Prompts and the reward model, checked without loading any weights (align/ppo/data.py)."""
        data = load_prompts(self)
        check_reward_model(self)
        return data


def check_reward_model(recipe: PPORecipe, policy_dir: str | None = None) -> None:
    """The reward model is a 1-output sequence classifier folder whose tokenizer is the policy's (the
    reward model reads the policy's token ids). ``policy_dir`` is the policy's folder once known; an
    embedded policy not yet converted is compared after its conversion, before any weights load."""
    for key in ("reward_model", "value_model"):
        folder = getattr(recipe, key)
        if folder:
            _check_classifier(key, Path(folder).expanduser())
    policy = policy_dir or _local_policy(recipe.model)
    if policy is None:
        return
    for key in ("reward_model", "value_model"):
        folder = getattr(recipe, key)
        if folder and not same_tokenizer(policy, folder):
            raise RecipeError(f"{key} {folder}: its tokenizer is not the policy's ({recipe.model}); train the reward "
                              f"model with `rlaif align reward --model {recipe.model}` (same tokenizer family)")


def _check_classifier(key: str, folder: Path) -> None:
    hint = "give the output folder of `rlaif align reward`"
    if not folder.is_dir():
        raise RecipeError(f"{key} {folder}: no such folder; {hint}")
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        raise RecipeError(f"{key} {folder}: no readable config.json, so not a model; {hint}") from None
    archs = config.get("architectures") or []
    labels = len(config.get("id2label") or {"0": ""}) if "num_labels" not in config else config["num_labels"]
    if not any(a.endswith("ForSequenceClassification") for a in archs) or labels != 1:
        raise RecipeError(f"{key} {folder}: not a 1-output sequence classifier (architectures {archs}, "
                          f"{labels} labels); {hint}")


def _local_policy(name: str) -> str | None:
    from generator.models import EMBEDDED, cache_dir

    if name in EMBEDDED:
        folder = cache_dir() / name
        return str(folder) if (folder / "config.json").is_file() else None
    path = Path(name).expanduser()
    return str(path) if path.is_dir() else None


def same_tokenizer(a: str | Path, b: str | Path) -> bool:
    """Both folders' tokenizers map every token to the same id (tokenizer files only, no weights)."""
    from transformers import AutoTokenizer

    def vocab(folder):
        try:
            return AutoTokenizer.from_pretrained(str(folder)).get_vocab()
        except (OSError, ValueError, TypeError) as e:
            raise RecipeError(f"{folder}: cannot read its tokenizer ({' '.join(str(e).split())[:160]})") from None

    return vocab(a) == vocab(b)
