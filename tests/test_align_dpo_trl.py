"""Our soft-label DPO loss against TRL 1.16's own DPOTrainer: at p_chosen = 1 they must agree.

Both trainers are built the way ``align.dpo.train`` builds them (``align.dpo.build_trainer``) on
the same tiny random model, the same judge run (every ``p_chosen`` = 1) and the same recipe; one
collated batch goes through each trainer's ``compute_loss`` in eval mode (dropout off). For a
Mixture-of-Experts model the loss includes the router load-balancing term TRL adds.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from align import build_recipe
from align.data import load_data

ROWS = 6


def write_judge_run(out: Path, p_chosen: float, n: int = ROWS) -> str:
    from judge.records import PREFERENCES
    from plumbing.runs import RunWriter

    writer = RunWriter(out, "judge", {"toy": "parity", "p": p_chosen}, PREFERENCES)
    writer.write([{"id": f"r{i}", "prompt": [{"role": "user", "content": f"Tell me about item {i}, briefly."}],
                   "chosen": [{"role": "assistant", "content": "A kind and bright answer " * (1 + i % 3)}],
                   "rejected": [{"role": "assistant", "content": f"Cold grim {i}."}],
                   "p_chosen": p_chosen, "votes": [], "principle_ids": ["p"], "position_consistent": True,
                   "judge_model": "toy", "constitution_sha256": "0" * 64, "template_sha256": "0" * 64}
                  for i in range(n)])
    writer.finish()
    return str(out)


@pytest.fixture(scope="module")
def tiny_moe_dir(tmp_path_factory, embedded_model_dir) -> str:
    """A tiny random Mixtral (4 experts, top-2, router_aux_loss_coef 0.5) with the embedded tokenizer."""
    from transformers import AutoTokenizer, MixtralConfig, MixtralForCausalLM

    tok = AutoTokenizer.from_pretrained(embedded_model_dir)
    config = MixtralConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, head_dim=8, num_local_experts=4,
                           num_experts_per_tok=2, router_aux_loss_coef=0.5, max_position_embeddings=512,
                           bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                           pad_token_id=tok.pad_token_id, tie_word_embeddings=True)
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tiny-moe")
    MixtralForCausalLM(config).to(torch.float32).save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


def _batch_loss(model_dir: str, run: str, out: Path, soft: bool) -> tuple[float, object, dict]:
    from align.dpo import build_trainer

    recipe = build_recipe("dpo", {"model": model_dir, "data": run, "output_dir": str(out), "soft_labels": soft,
                                  "beta": 0.1, "max_length": 64, "seed": 0, "quiet": True})
    trainer = build_trainer(recipe, load_data(recipe.data, "dpo", soft_labels=soft, seed=0))
    # Move the policy away from its reference (the same step in both trainers): at init they are equal,
    # h = 0 and every DPO loss is log 2, which would prove nothing.
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in trainer.model.parameters():
            param.add_(0.05 * torch.randn(param.shape, generator=gen))
    rows = [trainer.train_dataset[i] for i in range(ROWS)]
    batch = trainer._prepare_inputs(trainer.data_collator(rows))
    trainer.model.eval()
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, dict(batch))
    metrics = {k: v[-1] for k, v in trainer._metrics["eval"].items()}
    return loss.item(), trainer, {"batch": batch, **metrics}


@pytest.mark.parametrize("moe", [False, True], ids=["dense", "moe"])
def test_soft_loss_at_p1_equals_trl_sigmoid_loss(request, tmp_path, moe):
    model_dir = request.getfixturevalue("tiny_moe_dir" if moe else "tiny_model_dir")
    run = write_judge_run(tmp_path / "judge", p_chosen=1.0)
    trl_loss, trl_trainer, trl_m = _batch_loss(model_dir, run, tmp_path / "trl", soft=False)
    our_loss, our_trainer, our_m = _batch_loss(model_dir, run, tmp_path / "ours", soft=True)
    assert type(trl_trainer).__name__ == "DPOTrainer" and type(our_trainer).__name__ == "SoftLabelDPOTrainer"
    assert torch.equal(trl_m["batch"]["input_ids"], our_m["batch"]["input_ids"])  # the same pairs, same order
    assert our_m["batch"]["p_chosen"].tolist() == [1.0] * ROWS
    assert trl_trainer.aux_loss_enabled is moe and our_trainer.aux_loss_enabled is moe
    assert our_loss == pytest.approx(trl_loss, rel=1e-6, abs=1e-7)
    assert abs(trl_loss - 0.6931472) > 1e-3  # the policy differs from the reference: not the trivial log 2
    for key in ("rewards/margins", "rewards/chosen", "logps/chosen", "logps/rejected"):
        assert our_m[key] == pytest.approx(trl_m[key], rel=1e-6, abs=1e-7), key
    if moe:  # the router term is really in both losses, and large enough that leaving it out would show
        assert our_m["aux_loss"] == pytest.approx(trl_m["aux_loss"], rel=1e-6)
        assert 0.5 * trl_m["aux_loss"] > 0.1


def test_soft_loss_below_p1_adds_eps_beta_h(tiny_model_dir, tmp_path):
    """At p = 0.8 the soft loss is TRL's plus mean(eps * beta * h) = 0.2 * mean margin (align/losses.py identity)."""
    hard = write_judge_run(tmp_path / "hard", p_chosen=1.0)
    soft = write_judge_run(tmp_path / "soft", p_chosen=0.8)
    trl_loss, _, trl_m = _batch_loss(tiny_model_dir, hard, tmp_path / "trl", soft=False)
    our_loss, _, our_m = _batch_loss(tiny_model_dir, soft, tmp_path / "ours", soft=True)
    assert our_m["rewards/margins"] == pytest.approx(trl_m["rewards/margins"], rel=1e-6, abs=1e-7)
    assert our_loss == pytest.approx(trl_loss + 0.2 * trl_m["rewards/margins"], rel=1e-5, abs=1e-6)
    assert abs(0.2 * trl_m["rewards/margins"]) > 1e-3  # the term is not zero, so the check bites
