"""Dataset schemas (``datasets.Features``) of the generator's runs (the record schemas listed in the README).

Conversational, explicit-prompt TRL format: ``prompt`` is a list of chat messages.
"""

from __future__ import annotations

from datasets import Features, List, Value

MESSAGE = {"role": Value("string"), "content": Value("string")}
MESSAGES = List(MESSAGE)

RESPONSES = Features({
    "id": Value("string"),
    "prompt": MESSAGES,
    "responses": List(Value("string")),
    "model": Value("string"),
    "sampling": Value("string"),  # canonical JSON of the Sampling used
})

# Names follow HuggingFaceH4/cai-conversation-harmless.
REVISIONS = Features({
    "id": Value("string"),
    "prompt": MESSAGES,
    "messages": MESSAGES,  # the prompt + the final revision as the assistant turn
    "init_response": Value("string"),
    "critiques": List(Value("string")),
    "revisions": List(Value("string")),
    "principle_ids": List(Value("string")),
    "model": Value("string"),
    "constitution_sha256": Value("string"),
    "template_sha256": Value("string"),
})
