"""Prompt -> token ids, shared by the in-process engines (vLLM and transformers).

A chat prompt (list of messages) is rendered with the tokenizer's own chat template, ending
in the assistant's generation prompt; the rendered text already holds the special tokens, so
it is encoded without adding any. A raw string is encoded as the engine would encode it
(special tokens as the tokenizer adds them), so both engines see the same ids.
"""

from __future__ import annotations

from collections.abc import Sequence

from generator.engines.base import Prompt


def render(tokenizer, prompt: Prompt) -> str:
    """The text the model sees for ``prompt``."""
    if isinstance(prompt, str):
        return prompt
    return tokenizer.apply_chat_template(list(prompt), tokenize=False, add_generation_prompt=True)


def prompt_ids(tokenizer, prompt: Prompt) -> list[int]:
    """Token ids of ``prompt``: chat template applied to messages, raw strings as is."""
    if isinstance(prompt, str):
        return list(tokenizer(prompt)["input_ids"])
    return list(tokenizer(render(tokenizer, prompt), add_special_tokens=False)["input_ids"])


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """``text`` up to (excluding) the earliest stop string, as vLLM returns it; and whether one was hit."""
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)
