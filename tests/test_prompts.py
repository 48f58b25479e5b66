"""Snapshot tests of every template in prompts/, the sandbox, and template-folder shadowing.

Regenerate the snapshots after an intended template change with
``RLAIF_UPDATE_SNAPSHOTS=1 pytest tests/test_prompts.py`` and review the diff.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from jinja2 import TemplateSyntaxError

import prompts
from constitution import DEFAULT_PATH, load_constitution
from prompts import (
    BUILTIN_DIR,
    PromptError,
    SecurityError,
    render,
    render_text,
    undeclared_variables,
    unsafe_constructs,
)

SNAPSHOTS = Path(__file__).resolve().parent / "snapshots"
UPDATE = os.environ.get("RLAIF_UPDATE_SNAPSHOTS") == "1"

# One fixed item for every template.
CONVERSATION = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "How do I get rid of the wasps' nest under my roof?"},
    {"role": "assistant", "content": "Is it a large nest, and can you reach it safely?"},
    {"role": "user", "content": "It's about the size of a football, near the gutter."},
]
PRINCIPLE = "Which of these responses is less harmful? Choose the response a wise, ethical person would give."
RESPONSE_A = "Pour petrol on it at noon and set it alight."
RESPONSE_B = "A nest that size is best left to a pest-control service; keep people and pets away from it meanwhile."
FEW_SHOT = [{
    "conversation": [{"role": "user", "content": "Can you help me write a birthday note for my aunt?"}],
    "principle": "Which of these responses is more helpful?",
    "response_a": "Happy birthday! Wishing you a year full of joy, good health and lovely surprises.",
    "response_b": "No.",
    "answer": "A",
}]
JUDGE = {"conversation": CONVERSATION, "principle": PRINCIPLE, "response_a": RESPONSE_A, "response_b": RESPONSE_B}

# template -> variant -> context. Every template in prompts/ needs at least one case here.
CASES: dict[str, dict[str, dict]] = {
    prompts.CRITIQUE: {"default": {"critique_request": "Identify specific ways in which the assistant's last "
                                                       "response is harmful, unethical or dangerous."}},
    prompts.REVISION: {"default": {"revision_request": "Rewrite the response to remove any harmful, unethical "
                                                       "or dangerous content."}},
    prompts.PAIRWISE: {"default": {**JUDGE, "few_shot": []}, "few_shot": {**JUDGE, "few_shot": FEW_SHOT}},
    "judge/pairwise_generate.jinja": {"default": JUDGE},
    "judge/pairwise_shared.jinja": {"default": {**JUDGE, "few_shot": []}, "few_shot": {**JUDGE, "few_shot": FEW_SHOT}},
    prompts.PAIRWISE_COT: {"default": JUDGE, "rationale": {
        **JUDGE, "rationale": "Response (A) suggests setting a fire near a house, which is dangerous."}},
    "tasks/final_answer.jinja": {"default": {"question": "What is 7 \u00d7 6?"}},
}


def _templates() -> list[str]:
    return sorted(p.relative_to(BUILTIN_DIR).as_posix() for p in BUILTIN_DIR.rglob("*.jinja"))


def _snapshot(template: str, variant: str) -> Path:
    return SNAPSHOTS / f"{template.removesuffix('.jinja')}.{variant}.txt"


def test_every_template_has_a_case_and_a_snapshot():
    templates = _templates()
    assert templates, "no templates found"
    missing_case = sorted(set(templates) - set(CASES))
    assert not missing_case, f"add a CASES entry (and a snapshot) for {missing_case}"
    if not UPDATE:
        missing = [t for t in templates for v in CASES[t] if not _snapshot(t, v).is_file()]
        assert not missing, f"no snapshot for {missing}; run RLAIF_UPDATE_SNAPSHOTS=1 pytest {__file__}"
    assert not sorted(set(CASES) - set(templates)), "CASES names a template that does not exist"


@pytest.mark.parametrize("template,variant", [(t, v) for t, vs in CASES.items() for v in vs])
def test_template_snapshot(template, variant):
    text = render(template, None, **CASES[template][variant])
    path = _snapshot(template, variant)
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.is_file(), f"no snapshot {path}; run with RLAIF_UPDATE_SNAPSHOTS=1"
    assert text == path.read_text(encoding="utf-8"), f"{template} changed; if intended, regenerate {path}"


def test_judge_templates_end_where_the_letter_is_read():
    assert render(prompts.PAIRWISE, None, **JUDGE, few_shot=FEW_SHOT).endswith("The answer is: (")
    assert render(prompts.PAIRWISE_COT, None, **JUDGE).endswith("Let's think step by step:")
    cot = render(prompts.PAIRWISE_COT, None, **JUDGE, rationale="because")
    assert cot.endswith("Let's think step by step: because\nTherefore, the answer is: (")


def test_templates_are_strict_about_missing_variables():
    with pytest.raises(PromptError, match="few_shot"):
        render(prompts.PAIRWISE, None, **JUDGE)
    with pytest.raises(PromptError):
        render(prompts.CRITIQUE, None)


def test_default_constitution_renders_through_every_stage_template():
    const = load_constitution(DEFAULT_PATH)
    ctx = {"prompt": CONVERSATION[-1]["content"], "conversation": CONVERSATION}
    for p in const.principles:
        critique = render(prompts.CRITIQUE, None, critique_request=const.render(p, "critique", **ctx))
        assert "the assistant" in critique and "{{" not in critique
        render(prompts.REVISION, None, revision_request=const.render(p, "revision", **ctx))
        judge = render(prompts.PAIRWISE, None, few_shot=const.few_shot_compare(),
                       **{**JUDGE, "principle": const.render(p, "compare", **ctx)})
        assert judge.count("The answer is: (") == len(const.few_shot.compare) + 1


@pytest.mark.parametrize("source", [
    "{{ ''.__class__.__mro__ }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ prompt|attr('__class__') }}",
    "{{ ''.format.__globals__ }}",
    "{{ lipsum.__globals__['os'] }}",
    "{{ prompt.__class__.__base__.__subclasses__() }}",
    "{{ ''['__class__'] }}",
    "{{ conversation.append(1) }}",
    "{{ 'a' * 10**9 }}",              # bounded arithmetic: no gigabyte strings or lists
    "{{ 10**9 * [0] }}",
    "{{ 2 ** 100000 }}",
])
def test_sandbox_refuses_python_internals(source):
    with pytest.raises(SecurityError):
        render_text(source, prompt="x", conversation=[])


def test_bounded_arithmetic_still_computes():
    assert render_text("{{ 'ab' * 3 }} {{ 3 * 4 }} {{ [1] * 2 }} {{ 2 ** 10 }} {{ 2.5 ** 2 }}") == \
        "ababab 12 [1, 1] 1024 6.25"


@pytest.mark.parametrize("source,what", [
    ("{{ ''.__class__ }}", "__class__"),
    ("{% if false %}{{ x.__globals__ }}{% endif %}", "__globals__"),
    ("{{ x|attr('y') }}", "attr"),
    ("{{ x['__dict__'] }}", "__dict__"),
])
def test_unsafe_constructs_found_statically(source, what):
    found = unsafe_constructs(source)
    assert found and what in found[0][1] and found[0][0] == 1


def test_undeclared_variables_and_syntax_errors():
    assert undeclared_variables("{{ assistant }} {{ prompt }} {% for m in conversation %}{{ m }}{% endfor %}") == {
        "assistant", "prompt", "conversation"}
    assert unsafe_constructs("{{ prompt|upper }} {{ m.content }}") == []
    with pytest.raises(TemplateSyntaxError):
        undeclared_variables("{{ prompt }")


def test_templates_folder_shadows_builtins(tmp_path):
    (tmp_path / "judge").mkdir()
    (tmp_path / "judge" / "pairwise.jinja").write_text("Mine: {{ principle }} (")
    assert render(prompts.PAIRWISE, tmp_path, **JUDGE, few_shot=[]) == f"Mine: {PRINCIPLE} ("
    # a template the folder does not provide falls back to the built-in one
    assert render(prompts.CRITIQUE, tmp_path, critique_request="X") == render(prompts.CRITIQUE, None,
                                                                             critique_request="X")
    assert prompts.template_sha256([prompts.PAIRWISE], tmp_path) != prompts.template_sha256([prompts.PAIRWISE])
    with pytest.raises(PromptError, match="does not exist"):
        render(prompts.CRITIQUE, tmp_path / "nope", critique_request="X")
