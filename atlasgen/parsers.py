"""Value parsers and the `setting(...)` declaration of an atlas.toml key.

A setting is declared once, as a dataclass field whose metadata holds its parser (with its
bounds) and a one-line doc:

    steps: int = setting(256, integer(1, 100_000), "total optimization steps over all octaves")

`apply_table` parses a TOML table into such a dataclass from its fields, and the reference
(docs/settings.md) is written from the same fields, so settings, validation and
documentation cannot drift. A parser takes (value, key path, problems) and returns the parsed
value, or None after recording a problem; every problem of a file is collected in one pass.

This module imports nothing of atlasgen, so objective modules can declare their options with
it without import cycles."""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class Problems:
    """Collects (key path, message) pairs."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def add(self, path: str, message: str) -> None:
        self.items.append((path, message))


@dataclass(frozen=True)
class Parser:
    """A value parser and how the reference describes what it accepts."""

    parse: Callable[..., Any]  # (value, path, problems) -> value or None; with root when `rooted`
    kind: str  # "integer", "list of 2 numbers", ...
    bounds: str | Callable[[], str] = ""  # a callable for bounds known only when asked (registries)
    table: type | None = None  # the dataclass a table value becomes, documented as a table of its own
    rooted: bool = False  # parse also takes the project folder, to resolve relative paths

    def __call__(self, value: Any, path: str, problems: Problems, root: Path | None = None) -> Any:
        if self.rooted:
            return self.parse(value, path, problems, root)
        return self.parse(value, path, problems)

    @property
    def allowed(self) -> str:
        return self.bounds() if callable(self.bounds) else self.bounds


# ---------------------------------------------------------------- declarations


def setting(default: Any, parser: Parser, doc: str) -> Any:
    """A key with a default; `default` must be immutable (the dataclasses are frozen and hashed)."""
    return dataclasses.field(default=default, metadata={"parser": parser, "doc": doc})


def required(parser: Parser, doc: str) -> Any:
    """A key without a default (`table_of` reports it missing)."""
    return dataclasses.field(metadata={"parser": parser, "doc": doc})


def section(cls: type, doc: str) -> Any:
    """A sub-table parsed into `cls` over the current value, key by key (`[site.images]`)."""
    return dataclasses.field(default_factory=cls, metadata={"section": cls, "doc": doc})


def subtables(kinds: Callable[[], dict[str, type]], doc: str) -> Any:
    """A field holding named sub-tables as sorted (name, instance) pairs; `kinds` gives each
    name's dataclass when parsing (`[visualize.<objective>]` from the objective registry)."""
    return dataclasses.field(default=(), metadata={"subtables": kinds, "doc": doc})


def keys(cls: type) -> dict[str, dataclasses.Field]:
    """The declared keys of a settings dataclass, in field order (undeclared fields are internal)."""
    return {f.name: f for f in dataclasses.fields(cls) if {"parser", "section"} & f.metadata.keys()}


def named_tables(cls: type) -> dict[str, tuple[str, type]]:
    """Sub-table name -> (the field holding it, its dataclass)."""
    found: dict[str, tuple[str, type]] = {}
    for f in dataclasses.fields(cls):
        if "subtables" in f.metadata:
            found.update({name: (f.name, kind) for name, kind in f.metadata["subtables"]().items()})
    clash = sorted(found.keys() & keys(cls).keys())
    if clash:  # a declaration mistake, not the user's: such a sub-table could never be written
        raise TypeError(f"{cls.__name__}: sub-tables {clash} have the names of keys")
    return found


# ---------------------------------------------------------------- messages


def type_name(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list", dict: "a table"}.get(
        type(value), type(value).__name__
    )


def hint(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def unknown_key(key: str, known: Sequence[str]) -> str:
    return f"unknown key{hint(key, known)} (known keys: {', '.join(known)})"


def _of_type(kind: type, expected: str) -> Callable[[Any, str, Problems], Any]:
    def parse(value: Any, path: str, problems: Problems) -> Any:
        if isinstance(value, kind):
            return value
        problems.add(path, f"expected {expected}, got {type_name(value)} {value!r}")
        return None

    return parse


as_table = _of_type(dict, "a table")
_string = _of_type(str, "a string")
_boolean = _of_type(bool, "true or false")
_list = _of_type(list, "a list")


# ---------------------------------------------------------------- tables


def _parse_keys(table: dict, path: str, cls: type, base: Any, problems: Problems) -> dict[str, Any]:
    """The fields of `cls` that `table` sets, parsed; unknown keys and bad values are recorded.

    Good values are kept even when others fail, so one pass finds every problem. Sections and
    named sub-tables apply over `base` (or the defaults when there is none)."""
    declared, named = keys(cls), named_tables(cls)
    changes: dict[str, Any] = {}
    for key, value in table.items():
        key_path = f"{path}.{key}" if path else key
        f = declared.get(key)
        if f is not None and "section" in f.metadata:
            current = getattr(base, key) if base is not None else f.metadata["section"]()
            changes[key] = apply_table(value, key_path, current, problems)
        elif f is not None:
            parsed = f.metadata["parser"](value, key_path, problems)
            if parsed is not None:
                changes[key] = parsed
        elif key in named:
            holder, kind = named[key]
            pairs = dict(changes.get(holder, getattr(base, holder, ())))
            pairs[key] = apply_table(value, key_path, pairs.get(key, kind()), problems)
            changes[holder] = tuple(sorted(pairs.items(), key=lambda pair: pair[0]))
        else:
            problems.add(key_path, unknown_key(key, sorted([*declared, *named])))
    return changes


def apply_table(raw: Any, path: str, base: Any, problems: Problems) -> Any:
    """`base` (a settings dataclass instance) with the keys of the table `raw` replaced."""
    table = as_table(raw, path, problems)
    if table is None:
        return base
    changes = _parse_keys(table, path, type(base), base, problems)
    return dataclasses.replace(base, **changes) if changes else base


def table_of(cls: type, noun: str) -> Parser:
    """A table parsed whole into `cls`: every key declared `required` must be there, the others
    take their defaults (`noun`: "an octave")."""

    def parse(value: Any, path: str, problems: Problems) -> Any:
        table = as_table(value, path, problems)
        if table is None:
            return None
        needed = [key for key, f in keys(cls).items() if f.default is dataclasses.MISSING]
        missing = [key for key in needed if key not in table]
        if missing:
            problems.add(path, f"{noun} needs {', '.join(needed)}; missing {', '.join(missing)}")
            return None
        before = len(problems.items)
        values = _parse_keys(table, path, cls, None, problems)
        return None if len(problems.items) > before else cls(**values)

    return Parser(parse, "table", table=cls)


# ---------------------------------------------------------------- scalars


def _nonempty_string(value: Any, path: str, problems: Problems) -> str | None:
    text = _string(value, path, problems)
    if text is not None and not text.strip():
        problems.add(path, "must not be empty")
        return None
    return text


string = Parser(_string, "string")
nonempty_string = Parser(_nonempty_string, "string", "not empty")
boolean = Parser(_boolean, "boolean")


def _range_text(low: float | None, high: float | None) -> str:
    if low is not None and high is not None:
        return f"{low} to {high}"
    if low is not None:
        return f"at least {low}"
    return f"at most {high}" if high is not None else ""


def _bounded(integer: bool, low: float | None, high: float | None) -> Parser:
    expected = "an integer" if integer else "a number"
    allowed = (int,) if integer else (int, float)

    def parse(value: Any, path: str, problems: Problems) -> Any:
        if isinstance(value, bool) or not isinstance(value, allowed):
            problems.add(path, f"expected {expected}, got {type_name(value)} {value!r}")
            return None
        if low is not None and value < low:
            problems.add(path, f"must be at least {low}, got {value}")
            return None
        if high is not None and value > high:
            problems.add(path, f"must be at most {high}, got {value}")
            return None
        return value if integer else float(value)

    return Parser(parse, expected.split()[-1], _range_text(low, high))


def integer(low: int | None = None, high: int | None = None) -> Parser:
    return _bounded(True, low, high)


def number(low: float | None = None, high: float | None = None) -> Parser:
    return _bounded(False, low, high)


def fraction_of_side(low: float, high: float) -> Parser:
    """A length as a fraction of the image side; a value of 1 or more was meant as pixels (the
    unit of these keys before atlasgen 0.2), so the message says how to convert it."""
    bounded = number(low, high)

    def parse(value: Any, path: str, problems: Problems) -> float | None:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 1:
            problems.add(path, f"{value} looks like pixels, but {path.rsplit('.', 1)[-1]} is a fraction of the image "
                               f"side now, from {low} to {high}: divide by `size` (12 px of a 128 px image is 0.094)")
            return None
        return bounded(value, path, problems)

    return Parser(parse, "number", f"{low} to {high} of the image side")


def choice(*choices: str) -> Parser:
    return choice_from(lambda: choices)


def choice_from(choices: Callable[[], Sequence[str]]) -> Parser:
    """One of `choices()`, read at each parse (for choices a registry holds)."""

    def parse(value: Any, path: str, problems: Problems) -> str | None:
        text = _string(value, path, problems)
        if text is None:
            return None
        known = choices()
        if text not in known:
            problems.add(path, f"must be one of {', '.join(repr(c) for c in known)}, got {text!r}{hint(text, known)}")
            return None
        return text

    return Parser(parse, "string", lambda: "one of " + ", ".join(repr(c) for c in choices()))


def _plural(kind: str) -> str:
    return {"boolean": "booleans"}.get(kind, kind if kind.endswith("s") else f"{kind}s")


def list_of(item: Parser, length: int | None = None, nonempty: bool = False, unique: bool = False) -> Parser:
    """A list of `item`s; `unique` drops repeated values, keeping the first."""

    def parse(value: Any, path: str, problems: Problems) -> tuple | None:
        if _list(value, path, problems) is None:
            return None
        if length is not None and len(value) != length:
            problems.add(path, f"expected a list of {length} values, got {len(value)}")
            return None
        if nonempty and not value:
            problems.add(path, "must not be empty")
            return None
        before = len(problems.items)
        parsed = tuple(item(v, f"{path}[{i}]", problems) for i, v in enumerate(value))
        if len(problems.items) > before:
            return None
        return tuple(dict.fromkeys(parsed)) if unique else parsed

    def bounds() -> str:
        parts = ["not empty"] if nonempty else []
        if item.allowed:
            parts.append(f"each {item.allowed}")
        return "; ".join(parts)

    count = f"{length} " if length is not None else ""
    return Parser(parse, f"list of {count}{_plural(item.kind)}", bounds, table=item.table)


def pair(item: Parser) -> Parser:
    return list_of(item, length=2)


# ---------------------------------------------------------------- special strings


def _pattern(regex: str, message: str, bounds: str) -> Parser:
    """A string matching `regex` in full; `message` is formatted with the text."""

    def parse(value: Any, path: str, problems: Problems) -> str | None:
        text = _string(value, path, problems)
        if text is None:
            return None
        if not re.fullmatch(regex, text):
            problems.add(path, message.format(text=text))
            return None
        return text

    return Parser(parse, "string", bounds)


device = _pattern(r"auto|cpu|mps|cuda(:\d+)?", "must be 'auto', 'cpu', 'mps', 'cuda' or 'cuda:N', got {text!r}",
                  "'auto', 'cpu', 'mps', 'cuda' or 'cuda:N'")
url_id = _pattern(r"[A-Za-z0-9][A-Za-z0-9._-]*",
                  "{text!r} cannot be used in URLs: use letters, digits, '.', '_' and '-' (for example 'googlenet')",
                  "letters, digits, '.', '_' and '-', starting with a letter or digit")


def _url(value: Any, path: str, problems: Problems) -> str | None:
    text = _string(value, path, problems)
    if text is None:
        return None
    if not re.match(r"https?://[^\s/]+", text):
        problems.add(path, f"must be an absolute http(s) URL such as 'https://user.github.io/atlas/', got {text!r}")
        return None
    return text.rstrip("/") + "/"


url = Parser(_url, "string", "an absolute http(s) URL")


def _channel_range(value: Any, path: str, problems: Problems) -> tuple[int, int] | None:
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(\d*)\s*:\s*(\d+)\s*", value)
        if match:
            start, stop = int(match.group(1) or 0), int(match.group(2))
            if start < stop:
                return start, stop
            problems.add(path, f"empty channel range {value!r}: the start must be below the stop")
            return None
    elif isinstance(value, list) and len(value) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        if 0 <= value[0] < value[1]:
            return value[0], value[1]
        problems.add(path, f"empty channel range {value!r}: the start must be below the stop")
        return None
    problems.add(path, f"expected a range such as \"0:16\" (channels 0 to 15), got {value!r}")
    return None


channel_range = Parser(_channel_range, "string or list of 2 integers", '"start:stop" or [start, stop], start below stop')
