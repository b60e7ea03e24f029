"""Strict JSON (RFC 8259) in and out: what Python's `json` lets through, refused up front.

The stdlib parser takes `NaN`/`Infinity`, lone surrogates (`"\\ud800"`, or their raw bytes),
numbers that overflow to infinity (`1e400`), and fails with `RecursionError` on deep nesting.
Each value it lets in fails later, far from its cause (a queued job that can never be sent to
a worker), so every body we take from a client goes through `loads` and every answer we build
from user data through `dumps`; both raise `InvalidJSON` naming the problem and where it is.

The common case stays at C speed: the parse is the stdlib's, and the value is walked only
when a cheap scan of the text says it may hold one of the problems above.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from typing import Any

MAX_DEPTH = 256

# Only text matching one of these can hold a lone surrogate (escaped) or a float that
# overflows (an exponent of 3 digits, or 309 digits before the point or exponent). Each
# starts with a literal character, which the regex engine finds at memchr speed.
_SUSPECTS = (
    re.compile(r"\\u[dD][89a-fA-F]"),
    re.compile(r"e(?<=[0-9]e)(?:[+-]?[0-9]{3}|(?<=[0-9]{309}e))"),
    re.compile(r"E(?<=[0-9]E)(?:[+-]?[0-9]{3}|(?<=[0-9]{309}E))"),
    re.compile(r"\.(?<=[0-9]{309}\.)"),
)
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class InvalidJSON(ValueError):
    """Data that is not strict JSON; the message names the problem, where it is and the fix."""


class _Constant:
    """Stands in for a NaN/Infinity literal while looking for where it is."""

    def __init__(self, name: str) -> None:
        self.name = name


class _ConstantFound(Exception):
    """Ends the fast parse at the first NaN/Infinity literal."""

    def __init__(self, name: str) -> None:
        self.name = name


def _refuse_constant(name: str) -> Any:
    raise _ConstantFound(name)


_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)
_LOCATING_DECODER = json.JSONDecoder(parse_constant=_Constant)
_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def _problem(value: Any) -> str | None:
    """Why one scalar (a value or a key) is not strict JSON, or None when it is."""
    if isinstance(value, _Constant):
        return f"{value.name} is not valid JSON; use null or a string instead"
    if isinstance(value, float) and not math.isfinite(value):
        if math.isnan(value):
            return "NaN is not valid JSON; use null or a string instead"
        name = "Infinity" if value > 0 else "-Infinity"
        return (f"{name} (or a number too large for a 64-bit float) is not valid JSON; "
                "use null or a string instead")
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            return (f"lone surrogate \\u{ord(value[exc.start]):04x} in a string is not valid "
                    "Unicode; pair it or send the bytes base64-encoded")
    return None


def _render(path: list[str | int]) -> str:
    """`input.items[2]["a key"]`: where a value is, as a reader would write it."""
    if not path:
        return "the top level"
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        elif _IDENTIFIER.match(part):
            text += f".{part}" if text else part
        else:
            text += f"[{json.dumps(part)}]"  # ensure_ascii: a lone surrogate prints escaped
    return text


def _locate(value: Any) -> str | None:
    """The first problem in `value` (document order) with where it is, or None.

    Iterative, so any depth is fine; containers seen before (cycles) are skipped.
    """
    stack: list[tuple[Any, list[str | int]]] = [(value, [])]
    seen: set[int] = set()
    while stack:
        node, path = stack.pop()
        if isinstance(node, (dict, list)):
            if id(node) in seen:
                continue
            seen.add(id(node))
            items: Iterator[tuple[Any, Any]] = (
                iter(node.items()) if isinstance(node, dict) else enumerate(node))
            children = []
            for key, child in items:
                if isinstance(node, dict):
                    problem = _problem(key)
                    if problem:
                        return f"{problem} (a key at {_render(path)})"
                children.append((child, [*path, key]))
            stack.extend(reversed(children))
            continue
        problem = _problem(node)
        if problem:
            return f"{problem} (at {_render(path)})"
    return None


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether containers nest more than `limit` levels (iterative: any depth is fine)."""
    stack = [(value, 1)] if isinstance(value, (dict, list)) else []
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        for child in node.values() if isinstance(node, dict) else node:
            if isinstance(child, (dict, list)):
                stack.append((child, depth + 1))
    return False


def _too_deep(limit: int) -> InvalidJSON:
    return InvalidJSON(f"nesting deeper than {limit} levels; flatten the data")


def _text(data: bytes | str) -> tuple[str, bool]:
    """The text to parse, and whether it holds surrogate characters (only a `str` can)."""
    if isinstance(data, str):
        if not data.isascii():
            try:
                data.encode("utf-8")
            except UnicodeEncodeError:
                return data, True
        return data, False
    try:
        return data.decode("utf-8"), False
    except UnicodeDecodeError as exc:
        raise InvalidJSON(f"not UTF-8 (byte 0x{exc.object[exc.start]:02x} at position "
                          f"{exc.start}); JSON must be encoded as UTF-8") from None


def loads(data: bytes | str, *, max_depth: int = MAX_DEPTH) -> Any:
    """Parse UTF-8 JSON text, refusing anything RFC 8259 does not allow or that nests deeper
    than `max_depth` levels. Raises InvalidJSON."""
    text, surrogates = _text(data)
    try:
        value = _DECODER.decode(text)
    except _ConstantFound as exc:
        try:
            where = _locate(_LOCATING_DECODER.decode(text))
        except (ValueError, RecursionError):  # something else is wrong further on
            where = None
        raise InvalidJSON(where or f"{exc.name} is not valid JSON; use null or a string "
                                   "instead") from None
    except RecursionError:
        raise _too_deep(max_depth) from None
    except json.JSONDecodeError as exc:
        raise InvalidJSON(str(exc)) from None
    except ValueError:  # int() refuses very long digit strings (a CPU-time guard)
        raise InvalidJSON("an integer with thousands of digits is not accepted; send it as "
                          "a string") from None
    if text.count("[") + text.count("{") > max_depth and _deeper_than(value, max_depth):
        raise _too_deep(max_depth)
    if surrogates or any(suspect.search(text) for suspect in _SUSPECTS):
        dumps(value)  # at C speed; only a value that fails is walked to say where
    return value


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON of `value`. Raises InvalidJSON for what has no JSON form (NaN,
    infinities, lone surrogates, nesting too deep for the encoder) and TypeError, as
    `json.dumps` does, for objects JSON has no type for."""
    try:
        return _ENCODER.encode(value).encode("utf-8")
    except RecursionError:
        raise InvalidJSON("nesting too deep to encode; flatten the data") from None
    except ValueError as exc:  # out-of-range floats, surrogates (UnicodeEncodeError), cycles
        raise InvalidJSON(_locate(value) or str(exc)) from None
