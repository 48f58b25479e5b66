"""Group Relative Policy Optimization (Shao et al., DeepSeekMath, arXiv 2402.03300) with verifiable
rewards, on TRL's GRPOTrainer (written against TRL 1.16.0).

The rewards are the plain TRL functions of align/rewards/ (``f(prompts, completions, **columns)``),
named in the recipe (``reward_funcs``) and weighted by TRL (``reward_weights``). TRL hands every
dataset column (``answer``, ``tests``, ...) to each reward as a keyword argument and logs
``rewards/<name>/mean`` and ``/std`` itself; ``Logged`` adds, from each reward's typed
``RewardResult`` records (``.results``):

- ``rewards/<name>/pass_rate``: share of the step's completions scored 1.0 or more (full marks);
- ``rewards/<name>/scored``: share with a verdict (``None`` is no verdict, never 0; TRL leaves such a
  completion out of its group's mean and std, and a reward with no verdict for any completion of a
  step stops the run in one line: align/rewards/combine.py);
- ``rewards/<name>/status/<status>``: share of each status (``correct``, ``wrong``, ``no_answer``, ...);
  a status the reward has never returned in this process is not logged, so in a multi-process
  run a status one process has not met yet is averaged over the processes that have;

and, through TRL's ``log_extra``, each completion's status and reason into TRL's completions table
(``trl.log_completions: true`` writes it to ``completions/*.parquet``). All of it lands in
metrics.json's ``log_history`` (tests/test_grpo.py::test_grpo_trains_two_steps_and_logs_each_reward).

Each process scores whole groups (``check_whole_groups``), whatever the batch settings and the number of
processes: the judge reward compares the completions of one group with each other.

Generation is transformers ``generate`` unless ``use_vllm`` (GPUs; see recipes/gpu-7b-grpo.yaml).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

from align.card import finish, resolve_model
from align.config import GRPORecipe, _has_accelerator
from align.data import AlignData, load_grpo_data
from align.rewards.combine import require_a_verdict, reward_results, silence
from plumbing.recipes import RecipeError

log = logging.getLogger(__name__)


class Logged:
    """A reward that also logs its pass rate, verdict share and statuses (see the module docstring),
    and stops the run when it gives no verdict for any completion of a step, all processes together
    (align/rewards/combine.py: ``require_a_verdict``). A completion without a verdict in a step that has
    some is left to TRL, which ignores it in its group's mean and std.

    Calls ``reward.results`` when the reward has it (the built-in ones), else the reward itself
    (a user's ``module:function``, whose statuses are ``scored`` / ``no_verdict``)."""

    def __init__(self, name: str, reward: Callable):
        self.reward = reward
        self.__name__ = name  # TRL names the reward's metrics after it
        self.seen: set[str] = set()

    def __call__(self, prompts, completions, **kwargs) -> list[float | None]:
        records = reward_results(self.reward, prompts, completions, **kwargs)
        scores, statuses = [r.score for r in records], [r.status for r in records]
        verdicts, total, why = _everyone(silence(records))
        require_a_verdict(self.__name__, verdicts, total, why, "GRPO")
        n = max(len(scores), 1)
        log_metric, log_extra = kwargs.get("log_metric"), kwargs.get("log_extra")
        if log_metric is not None:
            log_metric(f"rewards/{self.__name__}/pass_rate", sum(s is not None and s >= 1.0 for s in scores) / n)
            log_metric(f"rewards/{self.__name__}/scored", sum(s is not None for s in scores) / n)
            counts = Counter(statuses)
            self.seen.update(counts)
            for status in sorted(self.seen):
                log_metric(f"rewards/{self.__name__}/status/{status}", counts[status] / n)
        if log_extra is not None:
            log_extra(f"{self.__name__}/status", statuses)
            log_extra(f"{self.__name__}/reason", [r.reason for r in records])
        return scores


def _everyone(local: tuple[int, int, Counter]) -> tuple[int, int, Counter]:
    """``silence`` summed over the processes (TRL calls each reward on every process, so all of them
    reach this collective together and all stop, or none)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return local
    from accelerate.utils import gather_object

    parts = gather_object([local])
    return sum(p[0] for p in parts), sum(p[1] for p in parts), sum((p[2] for p in parts), Counter())


def make_rewards(recipe: GRPORecipe) -> list[Logged]:
    """The recipe's rewards, each wrapped for logging; ``judge`` builds its engine here (a model may load)."""
    from align.rewards import get_reward
    from align.rewards.judge import build_judge_reward

    return [Logged(name.rpartition(":")[2], build_judge_reward(recipe.judge) if name == "judge" else get_reward(name))
            for name in recipe.reward_funcs]


def build_trainer(recipe: GRPORecipe, data: AlignData):
    """TRL's GRPOTrainer on ``data`` with the recipe's rewards; the model loads here."""
    from trl import GRPOTrainer

    if recipe.use_vllm:
        if not _has_accelerator():
            raise RecipeError("use_vllm: true needs a GPU; on a CPU GRPO generates with transformers "
                              "(set use_vllm: false)")
    init = dict(recipe.trl.get("model_init_kwargs") or {})
    if not _has_accelerator():
        # transformers loads a bf16 checkpoint (the embedded model) in bf16, which a CPU without native bf16
        # emulates; training is float32 here as everywhere on CPUs (generator/engines/vllm_cpu.py). One step
        # of 16 completions x 32 tokens on the embedded model, on a loaded 2-core AVX2 box: 185 s in bf16,
        # 159 s in float32 (one run each, not a controlled comparison).
        init.setdefault("dtype", "float32")
    forced: dict[str, Any] = {"remove_unused_columns": False}  # the rewards read the other columns
    if not _has_accelerator() and "gradient_checkpointing" not in recipe.trl:
        # TRL turns gradient checkpointing on for GRPO; a CPU has the memory, and recomputing the forward
        # pass cost 17 of 103 s in a profiled step of the embedded model (8 completions x 32 tokens).
        forced["gradient_checkpointing"] = False
    args = recipe.trl_args(model_init_kwargs=init or None, **forced)
    check_whole_groups(args, evaluates=data.eval is not None)
    return GRPOTrainer(model=resolve_model(recipe.model), reward_funcs=make_rewards(recipe),
                       args=args, train_dataset=data.train, eval_dataset=data.eval)


def check_whole_groups(args, evaluates: bool) -> None:
    """Every process holds whole groups, in training and in the final evaluation.

    TRL 1.16 (``GRPOConfig.__post_init__``) checks only that the generation batch of all processes,
    ``generation_batch_size = per_device_train_batch_size x num_processes x steps_per_generation``,
    holds whole groups: it gathers the rewards before taking each group's mean. But its sampler lays
    each prompt's ``num_generations`` copies side by side and accelerate hands process ``i`` the ``i``-th
    contiguous slice of ``per_device_train_batch_size x steps_per_generation`` of them, and each process
    calls the rewards on its slice alone; the judge reward compares the completions of a group with
    each other (align/rewards/judge.py), so a group cut between processes is judged by halves. The
    same holds for the evaluation batch (``per_device_eval_batch_size``, groups of
    ``num_generations_eval``), which TRL checks only when it evaluates during training.
    e.g. 2 processes x 4 completions with num_generations 8: TRL accepts it, each process holds half
    a group (tests/test_grpo.py::test_every_process_holds_whole_groups)."""
    local = args.per_device_train_batch_size * args.steps_per_generation
    if local % args.num_generations:
        raise RecipeError(
            f"each of the {args.world_size} process(es) scores {args.per_device_train_batch_size} x "
            f"{args.steps_per_generation} = {local} completions per generation (per_device_train_batch_size x "
            f"steps_per_generation; generation_batch_size {args.generation_batch_size} over {args.world_size}), "
            f"not a multiple of num_generations ({args.num_generations}): a group would be split between "
            f"processes; make the completions per process a multiple of num_generations")
    group = args.num_generations_eval or args.num_generations
    if evaluates and args.per_device_eval_batch_size % group:
        raise RecipeError(
            f"trl.per_device_eval_batch_size {args.per_device_eval_batch_size} is not a multiple of the "
            f"evaluation group ({'num_generations_eval' if args.num_generations_eval else 'num_generations'} "
            f"{group}): the held-out prompts' groups would be split between batches and processes; set "
            f"trl.per_device_eval_batch_size to a multiple of {group}")


def train(recipe: GRPORecipe) -> dict[str, Any]:
    """GRPO-train ``recipe.model`` on the prompts with the recipe's rewards; returns the metrics of metrics.json."""
    data = load_grpo_data(recipe)  # checks data and rewards before any model loads
    trainer = build_trainer(recipe, data)
    result = trainer.train()
    return finish(trainer, recipe, data, result)
