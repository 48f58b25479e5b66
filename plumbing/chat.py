"""Small helpers on chat messages (``list[{"role", "content"}]``)."""

from __future__ import annotations

from collections.abc import Sequence


def last_user_message(conversation: Sequence[dict]) -> str:
    """The content of the last user turn ('' when there is none): the ``prompt`` a principle sees."""
    return next((m["content"] for m in reversed(conversation) if m.get("role") == "user"), "")
