"""How a reward model of ``rlaif align reward`` is read: the text it is given and the token it scores.

Training (TRL 1.16 ``RewardTrainer``): a preference row ``prompt + chosen`` is one conversation, rendered
and tokenised by the tokenizer's chat template (``_prepare_dataset``), right-padded by
``DataCollatorForPreference``, and scored by the model's own ``*ForSequenceClassification`` forward
(transformers ``GenericForSequenceClassification``), which reads the rightmost token that is not
``config.pad_token_id``. For SmolLM2 the template closes every turn with ``<|im_end|>\\n`` and pad, EOS and
``<|im_end|>`` are one id, so the reward model learns to score the ``\\n`` after EOS; a template that ends
on EOS with pad == EOS would make it score the token before EOS. Whichever it is, that is where the
model's score means something.

Reading the model anywhere else (PPO's rollouts) therefore goes through ``reward_scores`` below: it
renders prompt + response with the same chat template into the same token ids (``conversation_ids``),
right-pads them with the model's pad id, and lets the same forward pick the position. There is no
second copy of the position rule, so the token read at inference is the one read in training by
construction (tests/test_ppo_sampling.py::test_ppo_reads_the_reward_model_where_training_did). Reading
the reward "at the EOS token" (arXiv 2403.17031, detail "extract reward from the EOS token") is right
only when training read it there too; the point of that detail is that training and scoring read the
same position of the same format.

Why render the trained text instead of training the model to read at EOS: the checkpoint stays the
standard one that every other reader of a Hub reward model assumes (TRL's GRPOTrainer renders the chat
template of prompt + completion, right-pads and reads the model's logits; vLLM's classify pooling reads
the last token of the rendered text), so one reward model scores the same in all of them. A response
cut by the length limit (no EOS) is rendered as a closed turn, like every response the model was
trained on; PPO's ``missing_eos_penalty`` is what marks it. The response is scored from its text
(decoded, then re-tokenised), as the training rows were: those rows are text too.
"""

from __future__ import annotations

import torch
from torch import nn


def conversation_ids(tokenizer, prompt: list[dict], completion: str) -> list[int]:
    """Token ids of ``prompt`` followed by the assistant's ``completion``, as RewardTrainer tokenises the
    conversational explicit-prompt row ``{"prompt": prompt, "chosen": [assistant completion]}``."""
    conversation = [*prompt, {"role": "assistant", "content": completion}]
    return list(tokenizer.apply_chat_template(conversation, tokenize=True, return_dict=True)["input_ids"])


@torch.no_grad()
def reward_scores(rm: nn.Module, tokenizer, prompts: list[list[dict]], completions: list[str]) -> torch.Tensor:
    """The reward model's score of each (prompt, completion) conversation, read where training read it.

    Rows are right-padded with the model's ``pad_token_id`` (as TRL's collator pads them), so each row's
    positions are 0..n-1 as in training. A model without a pad id scores each row alone, where its
    forward reads the last token."""
    ids = [conversation_ids(tokenizer, p, c) for p, c in zip(prompts, completions, strict=True)]
    pad = rm.config.get_text_config().pad_token_id
    groups = [ids] if pad is not None else [[x] for x in ids]
    scores = []
    for group in groups:
        width = max(len(x) for x in group)
        input_ids = torch.tensor([x + [pad] * (width - len(x)) for x in group], device=rm.device)
        mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in group], device=rm.device)
        scores.append(rm(input_ids=input_ids, attention_mask=mask, use_cache=False).logits[:, 0].float())
    return torch.cat(scores)
