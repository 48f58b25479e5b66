"""The sandbox's bounds (``prompts/limits.py``, ``prompts/sandbox.py``): every known way for a template to
exhaust memory or time is refused fast, with a clear one-line message and without allocating much,
through every door a template comes in by (an inline text, a template file, a constitution file and the
CLI); legitimate templates render exactly as before."""

from __future__ import annotations

import gzip
import json
import re
import time
import tracemalloc

import pytest
from jinja2 import FileSystemLoader, StrictUndefined
from jinja2.sandbox import ImmutableSandboxedEnvironment

import prompts
from constitution import ConstitutionError, load_constitution, parse_constitution
from constitution.schema import Constitution, Principle
from plumbing.inputs import hh_messages
from prompts import PromptError, SecurityError, render, render_text
from prompts.limits import SandboxLimitError

SECONDS = 2.5  # wall clock for one refusal, compile included, with tracemalloc slowing allocations
MEGABYTES = 50  # Python's traced allocations at their peak during one refusal

# name -> (a template without statements, what the refusal says). Each is also a principle text.
EXPRESSIONS: dict[str, tuple[str, str]] = {
    "center": ("{{ 'x'|center(10**7) }}", r"\|center: width 10,000,000 is over the limit"),
    "format_filter_width": ("{{ '%10000000d'|format(1) }}", r"\|format: width 10000000"),
    "str_format_width": ("{{ '{:10000000}'.format(1) }}", r"str.format\(\): width 10000000"),
    "str_format_nested_width": ("{{ '{:{}}'.format(1, 10**7) }}", r"str.format\(\): width"),
    "percent_width": ("{{ '%10000000d' % 1 }}", r"'%': width"),
    "percent_star_width": ("{{ '%*d' % (10**7, 1) }}", r"'\*' widths are not allowed"),
    "indent_width": ("{{ 'x'|indent(10**7) }}", r"\|indent: width"),
    "indent_string_width": ("{{ ('x\\n' * 1000)|indent('x' * 100000) }}", r"\|indent would be over the limit"),
    "lipsum_paragraphs": ("{{ lipsum(n=10**6) }}", r"lipsum\(\): n"),
    "lipsum_words": ("{{ lipsum(n=100, max=10**6) }}", r"lipsum\(\): max"),
    "batch_fill": ("{{ [1]|batch(10**6, 0)|list }}", r"\|batch: size"),
    "slice_count": ("{{ [1]|slice(10**9)|list }}", r"\|slice: count"),
    "range_list": ("{{ range(10**9)|list }}", r"range\(\) of more than 10,000 items"),
    "range_join": ("{{ range(10**9)|join }}", r"range\(\) of more than"),
    "join_long_separator": ("{{ range(10000)|join('x' * 100) }}", r"\|join would be over the limit"),
    "join_method": ("{{ ('x' * 100).join(range(10000)|map('string')) }}", r"str.join\(\) would be over"),
    "wordwrap_long_input": ("{{ ('x ' * 200000)|wordwrap(1) }}", r"\|wordwrap: input of 400,000 characters"),
    "wordwrap_wrapstring": ("{{ ('x ' * 40000)|wordwrap(1, wrapstring='y' * 1000) }}", r"\|wordwrap would be over"),
    "replace_filter": ("{{ ('x' * 1000)|replace('x', 'x' * 1000) }}", r"\|replace would be over"),
    "replace_method": ("{{ ('x' * 1000).replace('x', 'x' * 1000) }}", r"str.replace\(\) would be over"),
    "concat_growth": ("{{ ('x' * 300000) ~ ('x' * 300000) }}", r"'~' would be over"),
    "concat_of_filters": ("{{ 'x'|center(499999) ~ 'y'|center(499999) }}", r"'~' would be over"),
    "repeat_string": ("{{ 'a' * 10**9 }}", r"'\*' would be over"),
    "repeat_shared_string": ("{{ ['x' * 400000] * 1000 }}", r"'\*' would be over"),
    "ljust": ("{{ 'x'.ljust(10**7) }}", r"str.ljust\(\): argument 10,000,000"),
    "zfill": ("{{ '1'.zfill(10**7) }}", r"str.zfill\(\): argument"),
    "expandtabs": ("{{ ('\\t' * 1000).expandtabs(10000) }}", r"str.expandtabs\(\) would be over"),
    "translate": ("{{ ('x' * 1000).translate({120: 'y' * 1000}) }}", r"str.translate\(\) would be over"),
    "to_bytes": ("{{ (10).to_bytes(10**8, 'big') }}", r"int.to_bytes\(\): argument"),
    "percent_mapping_repeat": ("{{ ('%(a)s' * 1000) % {'a': 'x' * 1000} }}", r"'%' would be over"),
    "format_field_repeat": ("{{ ('{0}' * 1000).format('x' * 1000) }}", r"str.format\(\) would be over"),
    "list_of_chars": ("{{ ('x' * 400000)|list }}", r"the result of \|list would be over"),
    "split_words": ("{{ ('x ' * 200000).split() }}", r"the result of split\(\) would be over"),
    "big_int_product": ("{{ ('9' * 4000)|int * ('9' * 4000)|int * ('9' * 4000)|int }}", r"bits"),
    "big_power": ("{{ 2 ** 100000 }}", r"'\*\*' result over the limit"),
    "round_precision": ("{{ 1.5|round(10**9, 'floor') }}", r"\|round: precision"),
    "urlencode": ("{{ ('x' * 400000)|urlencode }}", r"\|urlencode would be over"),
    "escape": ("{{ ('<' * 400000)|e }}", r"\|escape would be over"),
    "tojson_indent": ("{{ range(100)|list|tojson(indent=10**6) }}", r"\|tojson: indent"),
    "tojson_indent_string": ("{{ range(100)|list|tojson(indent='x' * 100) }}", r"\|tojson: an indent string"),
    "tojson_long": ("{{ ['\\u00e9' * 100000]|tojson }}", r"\|tojson would be over"),
    "concat_shared_lists": ("{{ (['x' * 1000] * 400) ~ (['x' * 1000] * 400) }}", r"'~' would be over"),
    "dict_literal_shared": ("{{ {'a': 'x' * 400000, 'b': 'x' * 400000} }}", r"literal would be over"),
    "output_total": ("{{ 'x'|center(400000) }}" * 4, r"output over the limit of 1,000,000"),
    "encode": ("{{ ('x' * 400000).encode('unicode_escape') }}", r"str.encode\(\) would be over"),
    "nested_filters": ("{{ prompt" + "|e" * 200 + " }}", r"nested more than 32 levels"),
}

# name -> (a template that needs statements, what the refusal says). A principle text may not use
# them at all; in a template file each is stopped by a bound.
STATEMENTS: dict[str, tuple[str, str]] = {
    "doubling_namespace": ("{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}"
                           "{% endfor %}{{ ns.s }}", r"'~' would be over"),
    "nested_range_100000": ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
                            r"range\(\) of more than 10,000 items"),
    "nested_range_10000": ("{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}",
                           r"steps|longer than the limit of 1 s"),
    "loop_output": ("{% for i in range(10000) %}{{ 'x' * 1000 }}{% endfor %}", r"output over the limit"),
    "macro_recursion": ("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", r"nested too deeply"),
    "macro_doubling": ("{% macro f(n) %}{% if n < 40 %}{{ f(n + 1) }}{{ f(n + 1) }}{% endif %}{% endmacro %}"
                       "{{ f(0) }}", r"steps|longer than the limit"),
    "set_block_doubling": ("{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set t %}{{ ns.s }}{{ ns.s }}"
                           "{% endset %}{% set ns.s = t %}{% endfor %}", r"output over the limit"),
    "filter_block": ("{% filter upper %}{% for i in range(10000) %}{{ 'x' * 1000 }}{% endfor %}{% endfilter %}",
                     r"output over the limit"),
    "list_growth": ("{% set ns = namespace(l=[]) %}{% for i in range(10000) %}{% set ns.l = ns.l + ['x' * 1000] %}"
                    "{% endfor %}", r"the result of '\+' would be over"),
    "shared_list_doubling": ("{% set ns = namespace(l=['x']) %}{% for i in range(60) %}{% set ns.l = [ns.l, ns.l] %}"
                             "{% endfor %}{{ ns.l|length }}", r"literal would be over"),
    "cycler_doubling": ("{% set ns = namespace(c=cycler('x' * 1000)) %}{% for i in range(40) %}"
                        "{% set ns.c = cycler(ns.c.items, ns.c.items) %}{% endfor %}", r"Cycler\(\) would be over"),
    "recursive_loop": ("{% for x in [1] recursive %}{{ loop([x, x]) }}{% endfor %}", r"nested too deeply|steps"),
    "loop_over_long_strings": ("{% for c in 'x' * 400000 %}{% for d in 'x' * 400000 %}{% endfor %}{% endfor %}",
                               r"steps|longer than the limit"),
    "allocations_in_loop": ("{% for i in range(10000) %}{% set x = ('x' * 400000)|upper %}{% endfor %}",
                            r"values built in one render are over the limit of 4,000,000"),
    "comparisons_in_loop": ("{% set s = 'x' * 400000 %}{% set t = 'x' * 400000 %}{% for i in range(10000) %}"
                            "{% for j in range(100) %}{% if s == t %}{% endif %}{% endfor %}{% endfor %}",
                            r"steps|longer than the limit"),
    "loop_cycle_arguments": ("{% for i in range(10000) %}{{ loop.cycle(*range(10000)) }}{% endfor %}",
                             r"steps|longer than the limit"),
}

CONTEXT = {"prompt": "hello", "conversation": [{"role": "user", "content": "hello"}]}


def _constitution(text: str) -> str:
    """A constitution whose principle ``evil`` has ``text`` as its critique, starting on line 6."""
    return ("name: t\nversion: 1\nprinciples:\n  - id: evil\n    critique: |-\n"
            + "".join(f"      {line}\n" for line in text.splitlines())
            + "    revision: Revise the response.\n    compare: Which is better?\n")


def _refused(call) -> tuple[str, float, float]:
    """Run ``call``, which must raise; returns (message, seconds, peak megabytes of traced allocations)."""
    tracemalloc.start()
    start = time.monotonic()
    try:
        with pytest.raises((PromptError, ConstitutionError)) as err:
            call()
    finally:
        seconds = time.monotonic() - start
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    return str(err.value), seconds, peak


@pytest.mark.parametrize("name", [*EXPRESSIONS, *STATEMENTS])
def test_hostile_template_is_refused_fast_and_small(name, tmp_path):
    statement = name in STATEMENTS
    source, expected = STATEMENTS[name] if statement else EXPRESSIONS[name]
    (tmp_path / "hostile.jinja").write_text(source)
    (tmp_path / "c.yaml").write_text(_constitution(source))
    doors = {
        "render_text": lambda: render_text(source, **CONTEXT),
        "template file": lambda: render("hostile.jinja", tmp_path, **CONTEXT),
        "constitution": lambda: load_constitution(tmp_path / "c.yaml"),
    }
    for door, call in doors.items():
        message, seconds, peak = _refused(call)
        assert "\n" not in message, (door, message)
        assert seconds < SECONDS, (door, f"{seconds:.2f} s", message)
        assert peak < MEGABYTES, (door, f"{peak:.1f} MB", message)
        if door == "constitution":
            assert message.startswith(f"{tmp_path / 'c.yaml'}:6: evil.critique: "), message
            if statement:  # loops, assignments and macros never reach the renderer
                assert re.search(r"'\{% (set|for|macro|filter) %\}' is not allowed in a principle text", message), message
                continue
        assert re.search(expected, message), (door, expected, message)


def test_statements_are_refused_in_principle_texts_with_their_line(tmp_path):
    text = "Critique the response.\nConsider {{ prompt }}.\n{% for m in conversation %}{{ m.content }}{% endfor %}"
    with pytest.raises(ConstitutionError) as err:
        parse_constitution(_constitution(text), source="c.yaml")
    assert str(err.value).startswith("c.yaml:8: evil.critique: '{% for %}' is not allowed in a principle text; ")
    for tag, text in {"set": "{% set x = 1 %}", "macro": "{% macro m() %}{% endmacro %}",
                      "call": "{% call prompt() %}{% endcall %}", "filter": "{% filter upper %}x{% endfilter %}",
                      "with": "{% with a = 1 %}{% endwith %}", "include": "{% include 'critique.jinja' %}",
                      "import": "{% import 'critique.jinja' as c %}", "from": "{% from 'x' import y %}",
                      "extends": "{% extends 'critique.jinja' %}", "block": "{% block b %}{% endblock %}",
                      "autoescape": "{% autoescape true %}{% endautoescape %}"}.items():
        with pytest.raises(ConstitutionError, match=rf"evil.critique: '\{{% {tag} %\}}' is not allowed"):
            parse_constitution(_constitution(text), source="c.yaml")


def test_if_stays_allowed_in_principle_texts():
    text = "{% if conversation|length > 1 %}In this conversation,{% else %}Here,{% endif %} critique {{ prompt }}."
    const = parse_constitution(_constitution(text))
    assert const.render("evil", "critique", **CONTEXT) == "Here, critique hello."


def test_a_constitution_built_in_code_is_refused_at_render_time():
    const = Constitution(name="x", version=1, principles=[
        Principle(id="evil", critique="{% for i in range(10) %}x{% endfor %}", revision="r", compare="q?")])
    with pytest.raises(ConstitutionError, match=r"evil.critique: '\{% for %\}' is not allowed in a principle text"):
        const.render("evil", "critique", **CONTEXT)


def test_long_and_large_constitutions_are_refused_before_compiling(tmp_path):
    with pytest.raises(ConstitutionError, match=r":6: evil.critique: text of 4,001 characters is over the limit"):
        parse_constitution(_constitution("x" * 4001))
    # many texts that are each short but cost much to compile together
    texts = "".join(f"  - id: p{i}\n    critique: \"{'{{ prompt }}' * 300}\"\n    revision: r\n    compare: q?\n"
                    for i in range(20))
    start = time.monotonic()
    with pytest.raises(ConstitutionError, match=r"more than 3,000 Jinja nodes in all"):
        parse_constitution("name: t\nversion: 1\nprinciples:\n" + texts)
    assert time.monotonic() - start < 5


def test_the_texts_of_one_constitution_share_one_render_budget():
    """100 texts that each render for ~0.06 s would take ~6 s one by one, each within its own limits."""
    text = "{{ (range(10000)|map('string')|map('upper')|map('lower')|join)|length }}"
    texts = "".join(f"  - id: p{i}\n    critique: \"{text}\"\n    revision: r\n    compare: q?\n" for i in range(100))
    message, seconds, peak = _refused(lambda: parse_constitution("name: t\nversion: 1\nprinciples:\n" + texts))
    assert "longer than the limit of 1 s" in message and seconds < SECONDS and peak < MEGABYTES, (message, seconds)


def test_includes_that_fan_out_are_stopped(tmp_path):
    """20 files that each include the next twice would render 2**20 empty templates."""
    for i in range(20):
        (tmp_path / f"t{i}.jinja").write_text(f"{{% include 't{i + 1}.jinja' %}}{{% include 't{i + 1}.jinja' %}}")
    (tmp_path / "t20.jinja").write_text("")
    message, seconds, peak = _refused(lambda: render("t0.jinja", tmp_path))
    assert re.search(r"steps|longer than the limit of 1 s", message) and seconds < SECONDS and peak < MEGABYTES


@pytest.mark.parametrize("name", ["center", "nested_filters", "doubling_namespace"])
def test_lint_prints_one_located_line_for_a_hostile_file(name, tmp_path, run_cli):
    source = {**EXPRESSIONS, **STATEMENTS}[name][0]
    path = tmp_path / f"{name}.yaml"
    path.write_text(_constitution(source))
    res = run_cli("constitution", "lint", path, timeout=120)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    assert lines[0].startswith(f"error: {path}:6: evil.critique: "), lines[0]


# -- legitimate use ---------------------------------------------------------------------------------

def _jinja_sandbox() -> ImmutableSandboxedEnvironment:
    """jinja2's own sandbox with the options of ``prompts._make_env``: the reference output."""
    return ImmutableSandboxedEnvironment(loader=FileSystemLoader([str(prompts.BUILTIN_DIR)]), undefined=StrictUndefined,
                                         autoescape=False, keep_trailing_newline=False, trim_blocks=True,
                                         lstrip_blocks=True)


def _long_conversation(turns: int, words: int = 60) -> list[dict]:
    return [{"role": "user" if i % 2 == 0 else "assistant",
             "content": f"Turn {i}: " + " ".join(f"word{j}" for j in range(words))} for i in range(turns)]


def _real_conversation(shared_data, turns: int) -> list[dict]:
    """HH-RLHF test transcripts (each user first, assistant last) joined until ``turns`` messages."""
    messages: list[dict] = []
    with gzip.open(shared_data / "hh-rlhf-harmless-base-test.jsonl.gz", "rt", encoding="utf-8") as f:
        for line in f:
            messages += hh_messages(json.loads(line)["chosen"])
            if len(messages) >= turns:
                return messages[:turns]
    raise AssertionError("not enough HH-RLHF turns")


def test_builtin_templates_render_a_long_real_conversation_as_jinja_does(shared_data):
    conversation = _real_conversation(shared_data, 50)
    assert [m["role"] for m in conversation] == ["user", "assistant"] * 25
    judge = {"conversation": conversation, "principle": "Which is better?", "response_a": "A.", "response_b": "B."}
    few_shot = [{**judge, "conversation": conversation[:6], "answer": "A"}]
    cases = {prompts.PAIRWISE: {**judge, "few_shot": few_shot}, prompts.PAIRWISE_COT: {**judge, "rationale": "r"},
             "judge/pairwise_generate.jinja": judge, prompts.CRITIQUE: {"critique_request": "c"},
             prompts.REVISION: {"revision_request": "r"}}
    reference = _jinja_sandbox()
    for name, context in cases.items():
        start = time.monotonic()
        text = render(name, None, **context)
        assert time.monotonic() - start < 0.5
        assert text == reference.get_template(name).render(**context), name
    text = render(prompts.PAIRWISE, None, **judge, few_shot=few_shot)
    assert all(m["content"] in text for m in conversation)


def test_limits_leave_room_for_large_real_inputs():
    """A 400,000-character conversation (far beyond a prompt any model here reads) still renders."""
    conversation = _long_conversation(400, words=140)
    assert sum(len(m["content"]) for m in conversation) > 400_000
    text = render(prompts.PAIRWISE, None, conversation=conversation, principle="Q?", response_a="a",
                  response_b="b", few_shot=[])
    assert text.endswith("The answer is: (") and "Turn 399:" in text


def test_inline_templates_keep_loops_filters_and_formats():
    """What a dataset card or a custom prompt uses: loops, tests, filters, formats, macros, namespaces."""
    rows = [{"name": f"r{i}", "value": i / 7} for i in range(2000)]
    source = ("{% macro cell(v) %}{{ '%.3f'|format(v) }}{% endmacro %}{% set ns = namespace(total=0) %}"
              "{% for r in rows if r.value is number %}| {{ r.name|upper }} | {{ cell(r.value) }} |\n"
              "{% set ns.total = ns.total + r.value %}{% endfor %}{{ '{:.1f}'.format(ns.total) }} "
              "{{ rows|map(attribute='name')|select('equalto', 'r3')|join(',') }} {{ range(3)|list }} "
              "{{ 'ab' * 3 }} {{ 2 ** 10 }} {{ rows[:2]|length }} {{ {'a': [1, 2]}|tojson }} {{ 'x'|center(5) }}|")
    text = render_text(source, rows=rows)
    assert text.count("\n") == 2000 and "| R1999 | 285.571 |" in text
    assert text.endswith(f"{sum(r['value'] for r in rows):.1f} r3 [0, 1, 2] ababab 1024 2 {{\"a\": [1, 2]}}   x  |")


def test_generate_and_modules_are_bounded_too():
    env = prompts.environment(None)
    with pytest.raises(SandboxLimitError, match="output over the limit"):
        "".join(env.from_string(STATEMENTS["loop_output"][0]).generate())
    with pytest.raises(SandboxLimitError, match="output over the limit"):
        env.from_string(STATEMENTS["loop_output"][0]).module  # noqa: B018 - rendering is the point
    # two streams read in turns each keep their own budget
    a = env.from_string("{% for i in range(3) %}{{ i }}{% endfor %}").generate()
    b = env.from_string("{% for i in range(3) %}{{ i * 2 }}{% endfor %}").generate()
    assert [next(a), next(b), next(a), next(b), next(a), next(b)] == ["0", "0", "1", "2", "2", "4"]


def test_errors_are_security_errors_and_prompt_errors():
    """Callers may catch either: jinja2's SecurityError (as before) or the project's PromptError."""
    with pytest.raises(SecurityError) as err:
        render_text("{{ 'x'|center(10**7) }}")
    assert isinstance(err.value, PromptError) and "template text: unsafe construct refused" in str(err.value)


def test_statement_tags_lists_every_statement_with_its_line():
    assert prompts.statement_tags("{{ a }}\n{% if a %}{% for x in b %}{% set y = x %}{% endfor %}{% endif %}") == [
        (2, "if"), (2, "for"), (2, "set")]
    assert prompts.statement_tags("plain {{ text|upper }} only") == []

