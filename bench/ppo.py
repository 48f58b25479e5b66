"""``rlaif bench ppo``: seconds per PPO step on the tiny recipe, split into rollout (sampling and the
policy/reference/value passes), reward (reward model and reward functions) and train (PPO epochs).

The toy task is the one of tests/test_ppo_train.py: a tiny random Llama over a 64-word tokenizer is
the policy, a reward model (``rlaif align reward``, same tokenizer) learns from toy judge pairs that
one word family is preferred, and PPO (recipes/cpu-tiny-ppo.yaml) moves the policy towards it. The bench reports the reward and KL of
the first and last 10 steps beside the timings.
"""

from __future__ import annotations

import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path

import typer

from bench.align import BAD, GOOD, TOPICS, write_toy_preference_run

ROOT = Path(__file__).resolve().parents[1]
TINY_RECIPE = ROOT / "recipes" / "cpu-tiny-ppo.yaml"


CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|> {{ m['role'] }} {{ m['content'] }} <|im_end|> {% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|> assistant {% endif %}")


def toy_tokenizer(out_dir: str | Path):
    """A word-level tokenizer over the toy task's words (64 ids): a tiny policy over it samples the
    rewarded words often enough for PPO to find them within tens of steps, and its output layer costs
    nothing (SmolLM2's has 49152 rows)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<unk>", "<pad>", "<|im_start|>", "<|im_end|>", "user", "assistant", "system", "Tell", "me", "about",
             "(", ")", ").", ".", *GOOD, *BAD, *{w for t in TOPICS for w in t.split()}, *map(str, range(10))]
    words += [f"<extra_{i}>" for i in range(64 - len(words))]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", eos_token="<|im_end|>",
                                   bos_token=None, additional_special_tokens=["<|im_start|>"])
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out_dir)
    return fast


def toy_policy(out_dir: str | Path) -> str:
    """A 2-layer, hidden-64 random Llama over ``toy_tokenizer``'s 64 ids."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = toy_tokenizer(out_dir)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=256,
                         pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=None,
                         tie_word_embeddings=True)
    torch.manual_seed(0)
    LlamaForCausalLM(config).to(torch.float32).save_pretrained(out_dir)
    return str(out_dir)


def build_toy_task(folder: str | Path) -> dict[str, str]:
    """Prompts (a judge run), a tiny random policy and a reward model trained by `rlaif align reward`
    on the toy pairs (chosen replies use one word family, rejected ones another), under ``folder``."""
    from align import build_recipe
    from align.reward import train as train_reward

    folder = Path(folder)
    others = [w for w in [*BAD, *{w for t in TOPICS for w in t.split()}, *map(str, range(10))] if w not in GOOD]
    judge = write_toy_preference_run(folder / "judge", n=80, seed=0, eval_n=20, rejected_words=others)
    policy = toy_policy(folder / "policy")
    with contextlib.redirect_stdout(sys.stderr):  # TRL prints its logs; stdout is for the result (--json)
        metrics = train_reward(build_recipe("reward", {
            "model": policy, "data": {"path": str(judge), "eval_split": "test"}, "output_dir": str(folder / "rm"),
            "max_steps": 20, "learning_rate": 1e-3, "per_device_train_batch_size": 8, "max_length": 64,
            "quiet": True, "seed": 0}))
    return {"prompts": str(judge), "policy": policy, "reward_model": str(folder / "rm"),
            "rm_eval_accuracy": metrics["eval"]["eval_accuracy"]}


def bench_ppo(steps: int = 20, num_processes: int = 1) -> dict:
    from align import load_recipe, run
    from bench.generate import machine_info

    with tempfile.TemporaryDirectory(prefix="rlaif-bench-ppo-") as tmp:
        toy = build_toy_task(tmp)
        out = Path(tmp) / "ppo"
        recipe = load_recipe("ppo", TINY_RECIPE, [f"model={toy['policy']}", f"data.path={toy['prompts']}",
                                                  f"reward_model={toy['reward_model']}", f"output_dir={out}",
                                                  f"max_steps={steps}", "quiet=true"])
        start = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):
            metrics = run(recipe)
        wall = time.perf_counter() - start
    history = metrics["log_history"]

    def mean(key: str) -> float:
        return round(sum(h[key] for h in history) / len(history), 4)

    return {"bench": "align.ppo", "recipe": str(TINY_RECIPE.relative_to(ROOT)), "steps": steps,
            "seconds_per_step": mean("seconds"), "rollout_s_per_step": mean("rollout_s"),
            "reward_s_per_step": mean("reward_s"), "train_s_per_step": mean("train_s"), "wall_s": round(wall, 2),
            "reward_first10_mean": metrics["reward_first10_mean"], "reward_last10_mean": metrics["reward_last10_mean"],
            "kl_first10_mean": metrics["kl_first10_mean"], "kl_last10_mean": metrics["kl_last10_mean"],
            "machine": machine_info()}


def register(bench_app: typer.Typer) -> None:
    @bench_app.command("ppo")
    def ppo(steps: int = typer.Option(20, "--steps", help="PPO steps on the tiny recipe."),
            as_json: bool = typer.Option(False, "--json", help="Print one JSON object.")) -> None:
        """Seconds per PPO step on recipes/cpu-tiny-ppo.yaml, split into rollout, reward and train."""
        from bench.args import require_positive
        from bench.generate import describe_machine

        require_positive(steps=steps)
        result = bench_ppo(steps=steps)
        if as_json:
            typer.echo(json.dumps(result))
            return
        typer.echo(f"PPO on the tiny recipe, {steps} steps: {result['seconds_per_step']:.3f} s/step (rollout "
                   f"{result['rollout_s_per_step']:.3f}, reward {result['reward_s_per_step']:.3f}, train "
                   f"{result['train_s_per_step']:.3f}); reward {result['reward_first10_mean']:.3f} -> "
                   f"{result['reward_last10_mean']:.3f}, KL {result['kl_first10_mean']:.3f} -> "
                   f"{result['kl_last10_mean']:.3f}")
        typer.echo(describe_machine(result["machine"]))
