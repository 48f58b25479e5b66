"""Direct Preference Optimization (Rafailov et al., arXiv 2305.18290) on AI preferences with TRL's
DPOTrainer. TRL's ``loss_type``s pass through unchanged (sigmoid, ipo, robust, ...); the recipe's
``soft_labels`` switches to conservative DPO with the judge's per-pair uncertainty
``eps_i = 1 - p_chosen_i`` (align/losses.py), which TRL 1.16 does not have.

``precompute_ref_log_probs`` scores the data with the reference model once, before training, and
does not keep the reference model in memory (``rlaif bench align dpo`` measures the speed-up).
"""

from __future__ import annotations

from typing import Any

from align.card import finish, resolve_model
from align.config import DPORecipe
from align.data import AlignData, load_data
from align.losses import conservative_dpo_loss
from align.reward import WithPChosen

_NON_MODEL_KEYS = {"completion_mask", "ref_chosen_logps", "ref_rejected_logps"}


def _soft_trainer_class():
    from trl import DPOTrainer

    class SoftLabelDPOTrainer(DPOTrainer):
        """DPOTrainer with the cDPO loss at a per-pair ``eps_i = 1 - p_chosen_i``; written against TRL 1.16.0.

        Only ``compute_loss`` changes. TRL 1.16's ``_compute_loss`` reduces the loss to a batch mean
        inside one long method, so the per-pair weight cannot be applied after it; this override
        redoes its sigmoid / reverse-KL path (the only one ``soft_labels`` allows, see
        ``DPORecipe``): summed completion log-probs of policy and reference through TRL's fused LM
        head (``compute_ref_log_probs`` for the reference, or the precomputed columns), then
        ``-(1-eps) log s(beta h) - eps log s(-beta h)``. Mixture-of-Experts policies get TRL's
        router load-balancing term exactly as TRL adds it (``output_router_logits`` on the policy
        forward only, ``+ router_aux_loss_coef * aux_loss``, logged as ``aux_loss``). At
        ``p_chosen = 1`` the loss equals TRL's own ``DPOTrainer`` loss on the same batch, for a
        dense and for a MoE model (tests/test_align_dpo_trl.py). It logs TRL's reward metrics under
        TRL's names (rewards/chosen, rewards/rejected, rewards/accuracies, rewards/margins, logps/*).
        """

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            mode = "train" if self.model.training else "eval"
            p_chosen = inputs.pop("p_chosen")
            model_kwargs = {k: v for k, v in inputs.items() if k not in _NON_MODEL_KEYS}
            if self.aux_loss_enabled:  # as TRL: the policy returns outputs.aux_loss, the reference does not
                model_kwargs["output_router_logits"] = True
            completion_mask = inputs["completion_mask"]
            labels = inputs["input_ids"].masked_fill(completion_mask == 0, -100)
            outputs = model(**model_kwargs, labels=labels, use_cache=False, fused_lm_head=True)
            seq_len = completion_mask.size(1) - 1
            chosen_logps, rejected_logps = outputs.log_probs[:, -seq_len:].sum(dim=1).chunk(2, dim=0)
            if self.precompute_ref_logps:
                ref_chosen, ref_rejected = inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]
            else:
                ref_chosen, ref_rejected = self.compute_ref_log_probs(
                    self.ref_model if self.ref_model is not None else self.model, inputs)
            chosen_logratios, rejected_logratios = chosen_logps - ref_chosen, rejected_logps - ref_rejected
            loss = conservative_dpo_loss(chosen_logratios, rejected_logratios, p_chosen, self.beta).mean()
            gather = self.accelerator.gather
            if self.aux_loss_enabled:
                loss = loss + self.router_aux_loss_coef * outputs.aux_loss
                aux = self.accelerator.gather_for_metrics(outputs.aux_loss.detach())
                self._metrics[mode]["aux_loss"].append(aux.mean().item())
            chosen_rewards = self.beta * chosen_logratios.detach()
            rejected_rewards = self.beta * rejected_logratios.detach()
            logged = {"rewards/chosen": chosen_rewards, "rewards/rejected": rejected_rewards,
                      "rewards/accuracies": (chosen_rewards > rejected_rewards).float(),
                      "rewards/margins": chosen_rewards - rejected_rewards,
                      "logps/chosen": chosen_logps.detach(), "logps/rejected": rejected_logps.detach(),
                      "p_chosen": p_chosen}
            for key, value in logged.items():
                self._metrics[mode][key].append(gather(value).mean().item())
            return (loss, outputs) if return_outputs else loss

    return SoftLabelDPOTrainer


def build_trainer(recipe: DPORecipe, data: AlignData):
    """TRL's DPOTrainer (or the soft-label one) on ``data``, as ``train`` runs it; the model loads here."""
    from trl import DPOTrainer

    forced = {"remove_unused_columns": False} if recipe.soft_labels else {}
    args = recipe.trl_args(**forced)
    cls = _soft_trainer_class() if recipe.soft_labels else DPOTrainer
    trainer = cls(model=resolve_model(recipe.model), args=args, train_dataset=data.train, eval_dataset=data.eval)
    if recipe.soft_labels:
        # After __init__: TRL's precompute pass (in __init__) feeds batches to the reference model,
        # which must not see p_chosen.
        trainer.data_collator = WithPChosen(trainer.data_collator)
    return trainer


def train(recipe: DPORecipe) -> dict[str, Any]:
    """DPO-train ``recipe.model`` against a frozen copy of itself; returns the metrics written to metrics.json."""
    data = load_data(recipe.data, "dpo", soft_labels=recipe.soft_labels, seed=recipe.seed)
    trainer = build_trainer(recipe, data)
    result = trainer.train()
    return finish(trainer, recipe, data, result)
