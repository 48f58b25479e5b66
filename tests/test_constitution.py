"""The constitution layer: loader errors through the real CLI, hashing, sampling, rendering,
lint, diff and the llm-swarm import."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest
import yaml

from constitution import (
    DEFAULT_PATH,
    Constitution,
    ConstitutionError,
    FewShotChat,
    Principle,
    diff,
    dump_yaml,
    import_hf,
    lint,
    load_constitution,
    parse_constitution,
)
from constitution.import_hf import escape_jinja

DATA = Path(__file__).resolve().parent / "data"
SWARM_LIST = DATA / "llm_swarm_list.json"
SWARM_CHAT = DATA / "llm_swarm_chat.json"

# A valid constitution; the bad cases below append one principle (`b`, starting at line 9).
BASE = """\
name: test
version: 1
variables: {assistant: the assistant}
principles:
  - id: a
    critique: "Critique {{ assistant }}'s answer to: {{ prompt }}"
    revision: Revise the response.
    compare: Which of these responses is better?
"""


def _principle_b(**fields: str) -> str:
    texts = {"critique": "Critique.", "revision": "Revise.", "compare": "Which is better?"}
    texts.update(fields)
    lines = ["  - id: b"] + [f"    {k}: {v}" for k, v in texts.items()]
    return BASE + "\n".join(lines) + "\n"


# name -> (file content, substrings that the one stderr line must contain)
BAD_FILES: dict[str, tuple[str | bytes, list[str]]] = {
    "yaml_syntax": (BASE + "  - id: b\n    critique: [unclosed\n    revision: x\n", [":11:", "YAML"]),
    "unknown_field": (_principle_b(colour="red"), [":13:", "b.colour", "unknown field"]),
    "duplicate_id": (BASE.replace("- id: a", "- id: b") + _principle_b()[len(BASE):], [":9:", "b:", "duplicate"]),
    "wrong_type": (_principle_b(weight="heavy"), [":13:", "b.weight", "number"]),
    "non_positive_weight": (_principle_b(weight="0"), [":13:", "b.weight", "positive"]),
    "empty_text": (_principle_b(revision='""'), [":11:", "b.revision", "empty"]),
    "missing_text": (BASE + "  - id: b\n    critique: x\n    revision: y\n", [":9:", "b.compare", "missing"]),
    "bad_id": (_principle_b().replace("id: b", "id: Bad_Id"), [":9:", "id", "lowercase"]),
    "undefined_variable": (_principle_b(critique='"Hello {{ asistant }}"'), [":10:", "b.critique", "'asistant'"]),
    "unsafe_mro": (_principle_b(compare="\"{{ ''.__class__.__mro__ }}\""), [":12:", "b.compare", "unsafe construct"]),
    "unsafe_globals": (_principle_b(critique='"{{ cycler.__init__.__globals__ }}"'), [":10:", "b.critique", "unsafe"]),
    "unsafe_attr_filter": (_principle_b(revision="\"{{ prompt|attr('__class__') }}\""), [":11:", "b.revision", "attr"]),
    "unsafe_in_dead_branch": (_principle_b(critique='"{% if false %}{{ prompt.__class__ }}{% endif %}x"'),
                              [":10:", "b.critique", "unsafe"]),
    "sandbox_render": (_principle_b(critique='"{{ conversation.append(1) }}"'), [":10:", "b.critique", "unsafe"]),
    "huge_repeat": (_principle_b(critique="\"{{ 'a' * 10**9 }}\""), [":10:", "b.critique", "unsafe", "limit"]),
    "render_error": (_principle_b(critique='"{{ 1 / 0 }}"'), [":10:", "b.critique", "does not render"]),
    "jinja_syntax": (_principle_b(critique="|\n      line one\n      {{ prompt }"), [":12:", "b.critique", "Jinja"]),
    "few_shot_compare": (BASE + "few_shot:\n  compare:\n    - conversation: [{role: user, content: hi}]\n"
                         "      principle: 'Which is {{ nicer }}?'\n      response_a: x\n      response_b: y\n"
                         "      answer: A\n", [":12:", "few_shot.compare[0].principle", "'nicer'"]),
    "few_shot_answer": (BASE + "few_shot:\n  compare:\n    - conversation: [{role: user, content: hi}]\n"
                        "      principle: Which?\n      response_a: x\n      response_b: y\n      answer: C\n",
                        [":15:", "few_shot.compare[0].answer"]),
    "reserved_variable": (BASE.replace("{assistant: the assistant}", "{assistant: x, prompt: y}"),
                          [":3:", "variables", "reserved"]),
    "duplicate_key": (BASE + "    critique: again\n", [":9:", "critique", "duplicate key"]),
    "top_level_list": ("- a\n- b\n", [":1:", "top level"]),
    "binary_nul": (b"name: test\x00\x01\x02", [":1:", "binary"]),
    "not_utf8": (b"name: caf\xe9\n", [":1:", "UTF-8"]),
}


def _assert_one_line_error(res, *needles: str) -> str:
    assert res.returncode != 0, res.stdout
    assert "Traceback" not in res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


# The acceptance cases go through the real CLI (a subprocess each); all cases run in-process below.
CLI_CASES = ["yaml_syntax", "unknown_field", "duplicate_id", "wrong_type", "empty_text", "undefined_variable",
             "unsafe_mro", "unsafe_globals", "unsafe_attr_filter", "sandbox_render", "jinja_syntax",
             "few_shot_compare", "binary_nul", "not_utf8"]


@pytest.mark.parametrize("case", CLI_CASES)
def test_lint_refuses_bad_file_with_one_located_line(case, tmp_path, run_cli):
    content, needles = BAD_FILES[case]
    path = tmp_path / f"{case}.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    res = run_cli("constitution", "lint", path, timeout=60)
    line = _assert_one_line_error(res, f"{case}.yaml", *needles)
    assert res.returncode == 2 and line.startswith("error: ")


def test_lint_missing_file(tmp_path, run_cli):
    res = run_cli("constitution", "lint", tmp_path / "nope.yaml", timeout=60)
    _assert_one_line_error(res, "nope.yaml", "not found")


def test_bad_cases_fail_in_process_too():
    """The same errors as exceptions (what stages see), with the message on one line."""
    for case, (content, needles) in BAD_FILES.items():
        if isinstance(content, bytes):
            continue
        with pytest.raises(ConstitutionError) as err:
            parse_constitution(content, source="x.yaml")
        msg = str(err.value)
        assert "\n" not in msg and msg.startswith("x.yaml:"), (case, msg)
        assert all(n in msg for n in needles), (case, msg)


def test_default_lints_clean(run_cli):
    report = lint(DEFAULT_PATH)
    assert report.principles >= 16 and report.warnings == ()
    assert {"harmlessness", "honesty", "helpfulness"} <= set(report.tags)
    const = load_constitution(DEFAULT_PATH)
    assert const.name == "harmless-helpful" and const.version == 1
    assert const.variables == {"assistant": "the assistant"}
    assert len(const.few_shot.revision) == 2 and len(const.few_shot.compare) == 2
    assert all("{{ assistant }}" in p.critique for p in const.principles)
    assert all(p.compare.rstrip().endswith((".", "?")) and "?" in p.compare for p in const.principles)
    res = run_cli("constitution", "lint", DEFAULT_PATH, timeout=60, check=True)
    assert f"{report.principles} principles" in res.stdout and report.sha256 in res.stdout
    assert res.stderr == ""


def test_sha256_ignores_yaml_layout_and_tracks_content():
    const = parse_constitution(BASE)
    reformatted = (
        "# a comment\nprinciples:\n- compare: 'Which of these responses is better?'\n"
        "  revision: >-\n    Revise the\n    response.\n  id: a\n"
        "  critique: \"Critique {{ assistant }}'s answer to: {{ prompt }}\"   # trailing\n"
        "version: 1\nvariables:\n  assistant: the assistant\nname: test\n"
    )
    assert parse_constitution(reformatted).sha256() == const.sha256()
    assert parse_constitution(dump_yaml(const)).sha256() == const.sha256()
    changed = parse_constitution(BASE.replace("Revise the response.", "Revise the reply."))
    assert changed.sha256() != const.sha256()
    assert re.fullmatch(r"[0-9a-f]{64}", const.sha256())


def _weighted(weights: list[float]) -> Constitution:
    return Constitution(name="w", version=1, principles=[
        Principle(id=f"p{i}", critique="c", revision="r", compare="q?", weight=w) for i, w in enumerate(weights)])


def test_sampling_is_deterministic_per_seed_and_key_and_with_replacement():
    const = _weighted([1, 2, 3, 4, 5])
    draw = [p.id for p in const.sample_principles(3, seed=7, key="item-1")]
    assert draw == [p.id for p in const.sample_principles(3, seed=7, key="item-1")]
    assert len(draw) == 3
    keys = {tuple(p.id for p in const.sample_principles(3, seed=7, key=f"item-{i}")) for i in range(50)}
    assert len(keys) > 10  # each item gets its own draw
    # another seed draws otherwise: independent draws of 3 from weights 1..5 coincide with probability
    # sum_i p_i^2 cubed, about 0.013, so fewer than 10 of 50 keys may agree
    same = sum([p.id for p in const.sample_principles(3, seed=7, key=f"item-{i}")]
               == [p.id for p in const.sample_principles(3, seed=8, key=f"item-{i}")] for i in range(50))
    assert same < 10, same
    many = const.sample_principles(99, seed=1, key="x")
    assert len(many) == 99 and {p.id for p in many} == {f"p{i}" for i in range(5)}  # repeats allowed
    assert const.sample_principles(0, seed=1) == []
    random.seed(123)
    expected = random.random()
    random.seed(123)
    const.sample_principles(2, seed=1, key="y")
    assert random.random() == expected  # no global random state used


def test_sampling_follows_weights():
    """P(first draw = heavy) = 9 / (9 + 1) = 0.9; over 2000 items the std error is 0.0067, so +-0.03 is 4.5 sigma."""
    const = _weighted([9, 1])
    heavy = sum(const.sample_principles(1, seed=0, key=str(i))[0].id == "p0" for i in range(2000))
    assert abs(heavy / 2000 - 0.9) < 0.03
    # with replacement: both draws of a pair are heavy with probability 0.81
    pairs = [const.sample_principles(2, seed=0, key=str(i)) for i in range(2000)]
    both_heavy = sum(all(p.id == "p0" for p in pair) for pair in pairs) / 2000
    assert abs(both_heavy - 0.81) < 0.04


def test_render_uses_variables_prompt_and_conversation():
    const = parse_constitution(BASE, source="base.yaml")
    conv = [{"role": "user", "content": "Why is the sky blue?"}]
    text = const.render(const.principles[0], "critique", prompt="Why is the sky blue?", conversation=conv)
    assert text == "Critique the assistant's answer to: Why is the sky blue?"
    assert const.principle("a") is const.principles[0]
    with pytest.raises(ConstitutionError, match="zzz: no such principle"):
        const.principle("zzz")


def test_render_error_names_the_principle():
    text = BASE + ("  - id: late\n    critique: \"{% if conversation|length > 3 %}{{ conversation[9].content }}"
                   "{% endif %}ok\"\n    revision: r\n    compare: q?\n")
    const = parse_constitution(text, source="late.yaml")  # the sample item has 2 messages: renders
    conv = [{"role": "user", "content": str(i)} for i in range(4)]
    with pytest.raises(ConstitutionError) as err:
        const.render(const.principle("late"), "critique", prompt="3", conversation=conv)
    assert str(err.value).startswith("late.yaml: late.critique:") and "\n" not in str(err.value)


def test_models_forbid_extra_fields_and_check_chats():
    with pytest.raises(ValueError, match="extra"):
        Principle(id="a", critique="c", revision="r", compare="q", colour="red")
    with pytest.raises(ValueError, match="alternate"):
        FewShotChat(messages=[{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])
    with pytest.raises(ValueError, match="duplicate"):
        Constitution(name="x", version=1, principles=[Principle(id="a", critique="c", revision="r", compare="q")] * 2)
    assert Principle.model_fields["weight"].description


def test_import_hf_list_format(tmp_path, run_cli):
    const = import_hf(SWARM_LIST)
    raw = yaml.safe_load(SWARM_LIST.read_text())
    assert [p.id for p in const.principles] == ["hf-001", "hf-002", "hf-003"]
    assert [p.critique for p in const.principles] == [r["critic"] for r in raw]
    assert [p.revision for p in const.principles] == [r["revision"] for r in raw]
    assert all("?" in p.compare and raw[i]["critic"].rstrip("?.") in p.compare
               for i, p in enumerate(const.principles))
    out = tmp_path / "list.yaml"
    run_cli("constitution", "import-hf", SWARM_LIST, "--out", out, timeout=60, check=True)
    assert lint(out).warnings == () and load_constitution(out).sha256() == const.sha256()


def test_import_hf_chat_format_keeps_every_chat(tmp_path, run_cli):
    const = import_hf(SWARM_CHAT)
    raw = yaml.safe_load(SWARM_CHAT.read_text())
    assert len(const.principles) == len(raw["constitutions"]) == 2
    assert [[m.model_dump() for m in c.messages] for c in const.few_shot.revision] == raw["system_chat"]
    out = tmp_path / "chat.yaml"
    res = run_cli("constitution", "import-hf", SWARM_CHAT, "--out", out, timeout=60, check=True)
    assert "2 principles" in res.stdout
    res = run_cli("constitution", "lint", out, timeout=60, check=True)
    assert "2 principles" in res.stdout and res.stderr == ""
    assert load_constitution(out).sha256() == const.sha256()


def test_import_hf_refuses_overwrite_and_writes_atomically(tmp_path, run_cli):
    out = tmp_path / "c.yaml"
    out.write_text("keep me")
    res = run_cli("constitution", "import-hf", SWARM_LIST, "--out", out, timeout=60)
    _assert_one_line_error(res, "c.yaml", "--force")
    assert out.read_text() == "keep me"
    bad = tmp_path / "bad.json"
    bad.write_text('[{"critic": "x", "revision": ""}]')
    res = run_cli("constitution", "import-hf", bad, "--out", out, "--force", timeout=60)
    _assert_one_line_error(res, "bad.json", "constitutions[0]", "revision")
    assert out.read_text() == "keep me"
    run_cli("constitution", "import-hf", SWARM_LIST, "--out", out, "--force", timeout=60, check=True)
    assert load_constitution(out).principles[0].id == "hf-001"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.json", "c.yaml"]  # no temp files left


def test_import_hf_bad_inputs(tmp_path):
    cases = {"syntax.json": ("[{", "syntax.json:1: JSON syntax"), "obj.json": ('{"x": 1}', "top level"),
             "empty.json": ("[]", "no principles"), "chat.json": (
                 '{"constitutions": [{"critic": "c", "revision": "r"}], "system_chat": [[{"role": "user"}]]}',
                 "system_chat[0]")}
    for name, (text, needle) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(ConstitutionError, match=re.escape(needle)):
            import_hf(tmp_path / name)


def test_import_hf_escapes_jinja_in_literal_texts(tmp_path):
    src = tmp_path / "braces.json"
    src.write_text('[{"critic": "Does it use {{ template }} or {% tags %} or {# notes #}?", "revision": "Fix {x}."}]')
    const = import_hf(src)
    p = const.principles[0]
    rendered = const.render(p, "critique", prompt="p", conversation=[])
    assert rendered == "Does it use {{ template }} or {% tags %} or {# notes #}?"
    assert const.render(p, "revision", prompt="p", conversation=[]) == "Fix {x}."
    assert escape_jinja("plain text") == "plain text"
    assert parse_constitution(dump_yaml(const)).sha256() == const.sha256()


def test_diff_lists_added_removed_changed(tmp_path, run_cli):
    old = parse_constitution(BASE + "  - id: gone\n    critique: c\n    revision: r\n    compare: q?\n")
    new = parse_constitution(BASE.replace("Revise the response.", "Revise it.").replace("version: 1", "version: 2")
                             + "  - id: fresh\n    critique: c\n    revision: r\n    compare: q?\n    weight: 2\n")
    d = diff(old, new)
    assert d.added == ["fresh"] and d.removed == ["gone"] and d.changed == {"a": ["revision"]}
    assert d.meta == ["version"] and not d.empty
    assert diff(old, old).empty
    (tmp_path / "old.yaml").write_text(dump_yaml(old))
    (tmp_path / "new.yaml").write_text(dump_yaml(new))
    res = run_cli("constitution", "diff", tmp_path / "old.yaml", tmp_path / "new.yaml", timeout=60, check=True)
    assert "added    fresh" in res.stdout and "removed  gone" in res.stdout
    assert "changed  a: revision" in res.stdout
    res = run_cli("constitution", "diff", tmp_path / "old.yaml", tmp_path / "old.yaml", timeout=60, check=True)
    assert "no differences" in res.stdout


def test_show_prints_table_and_counts(run_cli):
    res = run_cli("constitution", "show", DEFAULT_PATH, timeout=60, check=True, env={"COLUMNS": "200"})
    const = load_constitution(DEFAULT_PATH)
    for p in const.principles:
        assert p.id in res.stdout
    assert f"{len(const.principles)} principles" in res.stdout and const.sha256() in res.stdout


def test_lint_warns_about_soft_problems(tmp_path):
    text = BASE.replace("variables: {assistant: the assistant}", "variables: {assistant: x, unused: y}")
    text += "  - id: b\n    critique: c\n    revision: Revise the response.\n    compare: Pick one.\n"
    path = tmp_path / "soft.yaml"
    path.write_text(text)
    warnings = "\n".join(lint(path).warnings)
    assert "b.compare: not phrased as a question" in warnings
    assert "b.revision: same text as a.revision" in warnings
    assert "variables.unused" in warnings


def test_render_refuses_unsafe_text_even_without_the_loader():
    """A Constitution built in code skips the load-time checks; the sandbox still refuses at render time."""
    const = Constitution(name="x", version=1, principles=[
        Principle(id="evil", critique="{{ ''.__class__.__mro__ }}", revision="r", compare="q?")])
    with pytest.raises(ConstitutionError, match=r"evil\.critique: unsafe construct refused by the sandbox"):
        const.render(const.principles[0], "critique", prompt="p", conversation=[])
    with pytest.raises(ConstitutionError, match="unknown field"):
        const.render(const.principles[0], "answer", prompt="p", conversation=[])
