"""The constitution file as pydantic models, plus hashing, principle sampling and rendering.

A constitution is a list of principles, each with three Jinja texts (arXiv 2212.08073,
appendix C): a *critique* request and a *revision* request for supervised CAI, and a
*compare* question for the RL-CAI preference judge. Texts render in the one sandbox of
:mod:`prompts` with the constitution's ``variables`` plus the item's ``prompt`` (the last
user message) and ``conversation`` (a list of ``{"role", "content"}`` dicts).

A principle text is plain text with ``{{ expressions }}`` and ``{% if %}`` only: loops,
assignments, macros, calls, includes, imports and every other tag are refused when the file is
loaded and again when a text is rendered (``PRINCIPLE_TAGS``). ``{% if %}`` stays because it runs
each branch at most once, so a text without the other tags does work in proportion to its length;
every render is further bounded by the sandbox's limits (``prompts/limits.py``, proven by
``tests/test_sandbox.py``). Loops belong in the prompt templates (``prompts/``, ``--templates``).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from functools import lru_cache
from typing import Literal

from jinja2 import Template, TemplateError
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from plumbing.chat import last_user_message
from prompts import SecurityError, environment, statement_tags
from prompts.limits import Budget, budget_scope

FIELDS: tuple[str, ...] = ("critique", "revision", "compare")
# Names every principle text may use besides the constitution's own ``variables``.
ITEM_VARIABLES: frozenset[str] = frozenset({"prompt", "conversation"})
_ID_RE = re.compile(r"^[a-z0-9-]+$")
_VAR_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class ConstitutionError(ValueError):
    """A constitution cannot be used. The message is one line:
    ``<file>:<line>: <principle id or field>: <what is wrong>; <how to fix>``."""


# Compiling a text costs ~0.1-0.3 ms per Jinja node (prompts.node_count), so these bound the time a
# constitution takes to load (measured on a 2-core machine: under 0.5 s for the costliest 4,000-character
# text, 0.4 s to refuse 40 texts of 300 nodes each). The texts of constitution/default.yaml are at most
# 244 characters and 154 nodes in all.
MAX_TEXT_CHARS = 4_000
MAX_TEMPLATE_NODES = 3_000
# The only statement a principle text may use (see the module docstring).
PRINCIPLE_TAGS: frozenset[str] = frozenset({"if"})
TAG_FIX = ("a principle text is plain text with {{ expressions }} and {% if %} only; put loops and "
           "assignments in a prompt template (prompts/, --templates DIR)")


class TemplateProblem(Exception):
    """A principle text failed to render; the message says why (no location)."""


def disallowed_tags(text: str) -> list[tuple[int, str]]:
    """``(line, tag)`` for every ``{% tag %}`` a principle text may not use (raises ``TemplateSyntaxError``)."""
    return [(line, tag) for line, tag in statement_tags(text) if tag not in PRINCIPLE_TAGS]


@lru_cache(maxsize=4096)
def compile_text(source: str) -> Template:
    """One principle text compiled in the sandbox (raises ``TemplateProblem`` for a tag it may not use,
    jinja2's ``TemplateError`` for other problems)."""
    # The same sandboxed environment as ``prompts.render_text``, but each principle text is compiled
    # once instead of once per item (compiling costs ~1 ms; a run renders every text for every item).
    bad = disallowed_tags(source)
    if bad:
        raise TemplateProblem(f"'{{% {bad[0][1]} %}}' is not allowed in a principle text")
    return environment(None).from_string(source)


def render_source(source: str, context: dict, budget: Budget | None = None) -> str:
    """Render one constitution text in the sandbox, turning every failure into :class:`TemplateProblem`.
    ``budget`` (a fresh one by default) lets several renders share the sandbox's limits; compiling is
    not charged to it."""
    try:
        template = compile_text(source)
        with budget_scope(budget):
            return template.render(**context)
    except SecurityError as e:
        raise TemplateProblem(f"unsafe construct refused by the sandbox ({e})") from None
    except TemplateError as e:
        raise TemplateProblem(f"{type(e).__name__}: {e.message or e}") from None
    except (TypeError, ValueError, ArithmeticError, LookupError) as e:  # e.g. {{ 1 / 0 }}, {{ "a" + 1 }}
        raise TemplateProblem(f"{type(e).__name__}: {' '.join(str(e).split())}") from None
    except RecursionError:
        raise TemplateProblem("nested too deeply (Python's recursion limit)") from None


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _not_blank(value: str, what: str) -> str:
    if not value.strip():
        raise ValueError(f"{what} is empty; write the text or remove the entry")
    return value


class Message(_Model):
    """One chat message, in the OpenAI / TRL conversational format."""

    role: Literal["system", "user", "assistant"] = Field(description="Who speaks: system, user or assistant.")
    content: str = Field(description="The message text (literal, not a template).")


class Principle(_Model):
    """One principle: a critique request, a revision request and a comparison question."""

    id: str = Field(description="Unique id, lowercase letters, digits and '-', e.g. 'harm-general'.")
    critique: str = Field(description="Jinja text asking the model to critique its last response (SL-CAI).")
    revision: str = Field(description="Jinja text asking the model to rewrite the response after the critique.")
    compare: str = Field(description="Jinja question for the judge whose answer is an option letter (RL-CAI).")
    weight: float = Field(1.0, gt=0, description="Relative sampling weight (> 0).")
    tags: list[str] = Field(default_factory=list, description="Free labels, e.g. harmlessness, honesty.")

    @field_validator("id")
    @classmethod
    def _id_format(cls, v: str) -> str:
        if not _ID_RE.match(v):
            raise ValueError(f"id {v!r} is not valid; use lowercase letters, digits and '-' only")
        return v

    @field_validator("critique", "revision", "compare")
    @classmethod
    def _text_not_blank(cls, v: str, info) -> str:
        return _not_blank(v, f"{info.field_name} text")

    def text(self, field: str) -> str:
        if field not in FIELDS:
            raise ConstitutionError(f"{self.id}: unknown field {field!r}; use one of {', '.join(FIELDS)}")
        return getattr(self, field)


class FewShotChat(_Model):
    """A worked SL-CAI example prepended before the conversation: user prompt, assistant response,
    user critique request, assistant critique, user revision request, assistant revision."""

    messages: list[Message] = Field(min_length=2, description="The chat, alternating user/assistant.")

    @model_validator(mode="after")
    def _alternates(self) -> FewShotChat:
        roles = [m.role for m in self.messages if m.role != "system"]
        expected = ["user", "assistant"] * (len(roles) // 2 + 1)
        if not roles or roles != expected[: len(roles)] or roles[-1] != "assistant":
            raise ValueError("roles must alternate user, assistant, ... and end with assistant; "
                             "fix the order of the messages")
        return self


class FewShotCompare(_Model):
    """A worked comparison shown to the judge before the real one (arXiv 2212.08073, section 4.1)."""

    conversation: list[Message] = Field(min_length=1, description="The conversation before the responses.")
    principle: str = Field(description="The compare question (a Jinja text, like a principle's compare).")
    response_a: str = Field(description="Option (A).")
    response_b: str = Field(description="Option (B).")
    answer: Literal["A", "B"] = Field(description="The better option: A or B.")

    @field_validator("principle")
    @classmethod
    def _principle_not_blank(cls, v: str) -> str:
        return _not_blank(v, "principle text")


class FewShot(_Model):
    """Optional worked examples."""

    revision: list[FewShotChat] = Field(default_factory=list, description="Chats prepended in SL-CAI.")
    compare: list[FewShotCompare] = Field(default_factory=list, description="Examples shown to the judge.")


class Constitution(_Model):
    """A named, versioned set of principles."""

    name: str = Field(min_length=1, description="Short name, e.g. 'harmless-helpful'.")
    version: int = Field(ge=1, description="Bump when the meaning of the principles changes.")
    description: str = Field("", description="Free text for humans.")
    variables: dict[str, str] = Field(default_factory=dict,
                                      description="Values available in every principle text, e.g. assistant.")
    principles: list[Principle] = Field(min_length=1, description="The principles (unique ids).")
    few_shot: FewShot = Field(default_factory=FewShot, description="Optional worked examples.")

    _source: str = PrivateAttr(default="<constitution>")

    @field_validator("variables")
    @classmethod
    def _variable_names(cls, v: dict[str, str]) -> dict[str, str]:
        for key in v:
            if not _VAR_RE.match(key):
                raise ValueError(f"variable name {key!r} is not an identifier; use letters, digits and '_'")
            if key in ITEM_VARIABLES:
                raise ValueError(f"variable name {key!r} is reserved for the item; rename it")
        return v

    @model_validator(mode="after")
    def _unique_ids(self) -> Constitution:
        seen: set[str] = set()
        for p in self.principles:
            if p.id in seen:
                raise ValueError(f"duplicate principle id {p.id!r}; give every principle its own id")
            seen.add(p.id)
        return self

    @property
    def source(self) -> str:
        """The file this constitution was loaded from (for error messages)."""
        return self._source

    def sha256(self) -> str:
        """sha256 of the canonical JSON of the content: YAML layout, key order and comments do not count."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"),
                               ensure_ascii=False)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    def principle(self, id: str) -> Principle:  # noqa: A002 - the field is called id
        for p in self.principles:
            if p.id == id:
                return p
        known = ", ".join(p.id for p in self.principles)
        raise ConstitutionError(f"{self._source}: {id}: no such principle; known ids: {known}")

    def sample_principles(self, k: int, seed: int, key: str = "") -> list[Principle]:
        """``k`` independent draws, each principle with probability ``weight / sum(weights)``
        (WITH replacement, so a principle may come up more than once).

        This is where the weights act, and the only place: the judge then averages its draws plainly,
        so a principle's expected share of a verdict is exactly ``weight / sum(weights)`` — its
        influence relative to another principle is the ratio of their weights
        (tests/test_judge_scoring.py::test_principle_influence_follows_the_weights). Drawing without
        replacement would compress that ratio, and weighting the average as well would square it.
        Deterministic for ``(seed, key)``: pass the item id as ``key`` so each item has its own draw.
        """
        if k <= 0:
            return []
        rng = random.Random(f"{seed}:{key}")
        return rng.choices(self.principles, weights=[p.weight for p in self.principles], k=k)

    def context(self, *, prompt: str, conversation: list[dict]) -> dict:
        """The names a principle text sees: ``variables`` + ``prompt`` + ``conversation``."""
        return {**self.variables, "prompt": prompt, "conversation": conversation}

    def render(self, principle: Principle | str, field: Literal["critique", "revision", "compare"], *,
               prompt: str, conversation: list[dict]) -> str:
        """Render ``principle``'s ``field`` text for one item (sandboxed, StrictUndefined)."""
        p = self.principle(principle) if isinstance(principle, str) else principle
        try:
            return render_source(p.text(field), self.context(prompt=prompt, conversation=conversation))
        except TemplateProblem as e:
            raise ConstitutionError(f"{self._source}: {p.id}.{field}: {e}; fix the principle text") from None

    def few_shot_compare(self) -> list[dict]:
        """The few-shot comparison examples as plain dicts, their ``principle`` texts rendered, ready for
        ``prompts/judge/pairwise.jinja``'s ``few_shot`` variable."""
        out = []
        for i, ex in enumerate(self.few_shot.compare):
            conv = [m.model_dump() for m in ex.conversation]
            prompt = last_user_message(conv)
            try:
                text = render_source(ex.principle, self.context(prompt=prompt, conversation=conv))
            except TemplateProblem as e:
                raise ConstitutionError(f"{self._source}: few_shot.compare[{i}].principle: {e}; "
                                        "fix the text") from None
            out.append({"conversation": conv, "principle": text, "response_a": ex.response_a,
                        "response_b": ex.response_b, "answer": ex.answer})
        return out

    def few_shot_chat(self) -> list[dict]:
        """All few-shot revision chats concatenated, as message dicts (prepended before the SL-CAI chat)."""
        return [m.model_dump() for chat in self.few_shot.revision for m in chat.messages]
