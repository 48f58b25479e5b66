"""plumbing/yamlfile.py: YAML a user wrote is read with a bound on what its aliases expand to."""

from __future__ import annotations

import time

import pytest
import yaml

from plumbing import yamlfile


def _bomb(levels: int, width: int = 9) -> str:
    lines = [f"l0: &l0 [{', '.join(['lol'] * width)}]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def test_expanded_size_counts_every_alias_as_written_out():
    # l0: 1 list + 3 scalars "ab" = 4 values, 6 characters; l1 = 1 + 2 x 4 = 9 values, 12 characters;
    # the mapping holds 2 key scalars ("l0", "l1": 4 characters) and both: 1 + 2 + 4 + 9 = 16 values, 22 chars
    root = yaml.compose("l0: &a [ab, ab, ab]\nl1: [*a, *a]\n", Loader=yaml.SafeLoader)
    assert yamlfile.expanded_size(root) == (16, 22)


def test_alias_bomb_is_refused_in_well_under_a_second():
    text = _bomb(9)  # 9**9 = 387,420,489 strings
    # level i holds s_i = 1 + 9 s_(i-1) values (s_0 = 10): 10, 91, 820, ..., s_8 = 435,848,050; the mapping
    # adds itself and its 9 keys: 1 + 9 + sum(s_0 .. s_8) = 490,329,064
    start = time.perf_counter()
    with pytest.raises(yamlfile.YAMLLimitError, match="expand to 490,329,064 values"):
        yamlfile.load(text)
    assert time.perf_counter() - start < 1.0


def test_a_document_within_the_bounds_loads_as_safe_load_does():
    text = _bomb(5, width=9)  # 9**5 = 59,049 strings: under MAX_NODES
    assert yamlfile.load(text) == yaml.safe_load(text)
    assert yamlfile.load("") is None


def test_an_alias_inside_its_own_value_is_refused():
    with pytest.raises(yamlfile.YAMLLimitError, match="expands without end"):
        yamlfile.load("a: &a [1, *a]\n")


def test_nesting_past_the_recursion_limit_is_refused():
    with pytest.raises(yamlfile.YAMLLimitError, match="nested too deeply"):
        yamlfile.load("[" * 5000 + "]" * 5000)


def test_deep_flow_nesting_is_refused_as_it_is_read():
    """PyYAML's scanner walks one possible key per open bracket for every token: 100,000 deep took 7.5 s to reach
    the recursion limit. The bound stops the scanner at the first bracket past it (no time limit asserted: the
    scanner is watched instead, so the test cannot depend on the machine's speed)."""
    deep = "a: " + "[" * 100_000 + "]" * 100_000 + "\n"
    loader = yamlfile.Loader(deep)
    with pytest.raises(yamlfile.YAMLLimitError, match=r"^nested too deeply .* more than 100 deep, line 1\)"):
        loader.get_single_node()
    assert loader.flow_level == yamlfile.MAX_FLOW_DEPTH  # it stopped at the bound, not at the recursion limit
    with pytest.raises(yamlfile.YAMLLimitError, match="nested too deeply"):
        yamlfile.load("x: " + "{a: " * 101 + "1" + "}" * 101)
    nested = "[" * 100 + "']]][[[ in a string'" + "]" * 100  # 100 deep is read; quoted brackets do not count
    value = yamlfile.load(nested)
    for _ in range(100):
        (value,) = value
    assert value == "]]][[[ in a string"


def test_long_strings_repeated_by_aliases_count_their_characters():
    text = f"a: &a {'x' * 100_000}\nb: [{', '.join(['*a'] * 200)}]\n"  # 20 million characters written out
    with pytest.raises(yamlfile.YAMLLimitError, match="20,100,002 characters"):
        yamlfile.load(text)
