"""Strict JSON: valid JSON round-trips, and what RFC 8259 refuses is refused, saying where."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runpod_flash import strict_json
from runpod_flash.strict_json import MAX_DEPTH, InvalidJSON

FAST = settings(max_examples=60, deadline=None)

# Sampled alphabets: no Unicode tables to build, so the file stays well under a second.
# Valid text: escapes, control and astral characters (surrogate pairs when escaped).
VALID_TEXT = st.text(st.sampled_from(list('a"\\/\n\x00\u2028é\ud7ff\ue000\uffff😀\U0010ffff')),
                     max_size=12)
# Text that is mostly JSON's own characters, lone surrogates and the stdlib's extras included.
JSONISH = st.text(st.sampled_from(list('[]{}",:-+.0123456789eE \\unNaIfity\ud800\udc00é')),
                  max_size=40)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | VALID_TEXT
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(VALID_TEXT, children, max_size=4),
    max_leaves=20,
)


@FAST
@given(JSON_VALUES, st.booleans())
def test_valid_json_round_trips(value: Any, ascii_only: bool) -> None:
    assert strict_json.loads(strict_json.dumps(value)) == value
    # escaped (astral characters as surrogate pairs) or not, bytes or text
    text = json.dumps(value, ensure_ascii=ascii_only)
    assert strict_json.loads(text) == value
    assert strict_json.loads(text.encode()) == value


@FAST
@given(JSONISH)
def test_any_text_parses_as_the_stdlib_does_or_is_refused(text: str) -> None:
    try:
        value = strict_json.loads(text)
    except InvalidJSON:
        return
    assert value == json.loads(text)


def nest(value: Any, keys: list[str]) -> Any:
    for key in reversed(keys):
        value = {key: value}
    return value


PATH_KEYS = st.lists(st.text(st.sampled_from("abcxyz_"), min_size=1, max_size=5),
                     min_size=1, max_size=4)


@FAST
@given(PATH_KEYS, st.sampled_from(["NaN", "Infinity", "-Infinity"]))
def test_non_finite_literals_are_refused_naming_where(keys: list[str], literal: str) -> None:
    text = json.dumps(nest("MARK", keys)).replace('"MARK"', literal)
    with pytest.raises(InvalidJSON, match=f"{literal} is not valid JSON") as refused:
        strict_json.loads(text)
    assert f"(at {'.'.join(keys)})" in str(refused.value)


@FAST
@given(PATH_KEYS, st.integers(0xD800, 0xDFFF))
def test_lone_surrogates_are_refused_naming_where(keys: list[str], code: int) -> None:
    text = json.dumps(nest(chr(code), keys))  # escaped: "\ud800"
    with pytest.raises(InvalidJSON, match=f"lone surrogate \\\\u{code:04x}") as refused:
        strict_json.loads(text)
    assert f"(at {'.'.join(keys)})" in str(refused.value)
    with pytest.raises(InvalidJSON, match="lone surrogate"):
        strict_json.loads(json.dumps(nest(chr(code), keys), ensure_ascii=False))  # a str
    with pytest.raises(InvalidJSON, match="not UTF-8"):  # its raw bytes
        strict_json.loads(b'{"a": "' + chr(code).encode("utf-8", "surrogatepass") + b'"}')


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 1000, 100_000])
def test_deep_nesting_is_refused_not_a_recursion_error(depth: int) -> None:
    with pytest.raises(InvalidJSON, match=f"nesting deeper than {MAX_DEPTH} levels"):
        strict_json.loads("[" * depth + "]" * depth)
    with pytest.raises(InvalidJSON, match="nesting deeper"):
        strict_json.loads('{"a":' * depth + "1" + "}" * depth)


def test_nesting_up_to_the_limit_and_brackets_in_strings_are_fine() -> None:
    assert strict_json.loads("[" * MAX_DEPTH + "]" * MAX_DEPTH) is not None
    assert strict_json.loads(json.dumps("[" * 1000)) == "[" * 1000
    with pytest.raises(InvalidJSON, match="nesting deeper than 3"):
        strict_json.loads('{"a": [[{}]]}', max_depth=3)


@pytest.mark.parametrize("number", ["1e400", "-2E+308", "9" * 309 + ".5", "1" * 400 + "e0"])
def test_numbers_that_overflow_to_infinity_are_refused(number: str) -> None:
    with pytest.raises(InvalidJSON, match=r"Infinity \(or a number too large .*\(at x\[1\]\)"):
        strict_json.loads('{"x": [0, ' + number + "]}")


def test_numbers_that_stay_finite_are_fine() -> None:
    assert strict_json.loads("[1e-400, 1E+308, 1.5e300]") == [0.0, 1e308, 1.5e300]
    assert strict_json.loads('"1e400"') == "1e400"


def test_other_refusals_say_what_is_wrong() -> None:
    with pytest.raises(InvalidJSON, match="Expecting value"):
        strict_json.loads(b"")
    with pytest.raises(InvalidJSON, match="integer with thousands of digits"):
        strict_json.loads("1" * 5000)
    with pytest.raises(InvalidJSON, match=r'a key at \["a b"\]'):
        strict_json.loads('{"a b": {"\\udc00": 1}}')


def test_dumps_is_strict_and_names_where() -> None:
    with pytest.raises(InvalidJSON, match=r"NaN is not valid JSON.*\(at result\[1\]\)"):
        strict_json.dumps({"result": [1, float("nan")]})
    with pytest.raises(InvalidJSON, match=r"lone surrogate \\ud800.*\(at the top level\)"):
        strict_json.dumps("\ud800")
    with pytest.raises(InvalidJSON, match="-Infinity"):
        strict_json.dumps({float("-inf"): 1})
    cycle: list[Any] = []
    cycle.append(cycle)
    with pytest.raises(InvalidJSON, match="Circular reference"):
        strict_json.dumps(cycle)
    with pytest.raises(TypeError, match="not JSON serializable"):
        strict_json.dumps(object())
    assert strict_json.dumps({"é": [1.5, None]}) == '{"é":[1.5,null]}'.encode()
