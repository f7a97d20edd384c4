"""Reading YAML nodes into typed values, with every mistake located and explained.

The loader composes the file into PyYAML nodes (not Python objects) so that every value keeps the line
it came from. `Reader` walks those nodes: it checks mappings against a table of known keys, converts
scalars (after `${VAR}` substitution), and collects problems instead of stopping at the first.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

import yaml

from aifabric.config.durations import parse_duration, parse_size
from aifabric.config.env import EnvResolver
from aifabric.config.schema import Secret
from aifabric.errors import ConfigProblem, ProblemKind

__all__ = ["INVALID", "Field", "Reader", "Scalar", "child", "is_null", "suggest"]


class _Invalid:
    """A value that was present but wrong; its problem is already recorded."""

    def __repr__(self) -> str:
        return "INVALID"


INVALID: Final = _Invalid()

Converter = Callable[["Reader", yaml.Node, str], Any]

_TAG_NULL = "tag:yaml.org,2002:null"
_TAG_STR = "tag:yaml.org,2002:str"
_TAG_INT = "tag:yaml.org,2002:int"
_TAG_FLOAT = "tag:yaml.org,2002:float"
_TAG_BOOL = "tag:yaml.org,2002:bool"

# A constructor only for scalars: the same typing YAML gives plain values (8000 -> int, true -> bool).
_CONSTRUCTOR = yaml.SafeLoader("")


@dataclass(frozen=True)
class Field:
    convert: Converter
    required: bool = False
    example: str = ""  # what to write when the key is missing: `add <key>: <example>`


@dataclass(frozen=True)
class Scalar:
    value: object  # typed as YAML would type it (re-typed after a ${VAR} substitution)
    text: str  # the text after substitution
    line: int
    written: str = ""  # the text as written, when a substitution changed it

    @property
    def shown(self) -> str:
        """What a message may quote: the text as written, so a substituted secret never leaks."""
        return self.written or self.text


def suggest(word: str, choices: list[str]) -> str:
    """`did you mean 'x'?` when a close match exists, else the list of valid choices."""
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    if close:
        return f"did you mean '{close[0]}'?"
    if not choices:
        return "none are defined"
    return "valid: " + ", ".join(f"'{c}'" for c in choices)


def join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def where(path: str) -> str:
    return path or "the top level"


def child(node: yaml.Node | None, key: str) -> yaml.Node | None:
    """The value node under `key` of a mapping node (None: no such key, or `node` is not a mapping), for
    the few places that read the file's nodes before or beside the loader (gateway.env_file, state)."""
    if not isinstance(node, yaml.MappingNode):
        return None
    for key_node, value_node in node.value:
        if isinstance(key_node, yaml.ScalarNode) and key_node.value == key:
            return value_node  # type: ignore[no-any-return]
    return None


def line_of(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


_KIND_NAMES = {yaml.MappingNode: "a mapping", yaml.SequenceNode: "a list", yaml.ScalarNode: "a value"}


def describe(node: yaml.Node) -> str:
    if isinstance(node, yaml.ScalarNode):
        return f"{node.value!r}" if node.tag != _TAG_NULL else "nothing"
    return _KIND_NAMES.get(type(node), "something else")


class Reader:
    def __init__(self, file: str, env: EnvResolver) -> None:
        self.file = file
        self.env = env
        self.problems: list[ConfigProblem] = []
        self.lines: dict[str, int] = {}  # key path -> line, for checks made after the walk
        # section path -> names written in it (even if their entry is wrong) -> line
        self.declared: dict[str, dict[str, int]] = {}

    def problem(
        self, line: int | None, message: str, fix: str = "", kind: ProblemKind = ProblemKind.FILE
    ) -> None:
        self.problems.append(ConfigProblem(self.file, line, message, fix, kind))

    # -- structure ---------------------------------------------------------------------------------

    def pairs(self, node: yaml.Node, path: str, what: str) -> Iterator[tuple[str, yaml.Node, int]]:
        """(key, value node, key line) of a mapping node; reports non-mappings and duplicate keys.
        An empty value (`key:` with nothing after it) reads as an empty mapping."""
        if not isinstance(node, yaml.MappingNode):
            if not is_null(node):
                self.problem(
                    line_of(node),
                    f"{where(path)} must be {what}, found {describe(node)}",
                    f"write {where(path)} as {what}",
                )
            return
        own = _flatten(node, self, path)
        seen: dict[str, tuple[int, bool]] = {}
        for key_node, value_node in node.value:
            line = line_of(key_node)
            if not isinstance(key_node, yaml.ScalarNode) or is_null(key_node):
                self.problem(
                    line, f"a key of {where(path)} is {describe(key_node)}", "keys must be plain names"
                )
                continue
            key = str(key_node.value)
            is_own = id(key_node) in own
            if key in seen and is_own and seen[key][1]:
                self.problem(
                    line,
                    f"{join(path, key)} is given twice (first on line {seen[key][0]})",
                    "remove one of them: YAML would silently keep only the last",
                )
            seen[key] = (line, is_own)
            yield key, value_node, line

    def mapping(self, node: yaml.Node, path: str, fields: Mapping[str, Field]) -> dict[str, Any] | None:
        """Converted values of the known keys present in `node`, or None if a required key is missing
        or a value was invalid (problems recorded). Unknown keys are reported with a suggestion."""
        self.lines.setdefault(path, line_of(node))
        values: dict[str, Any] = {}
        present: set[str] = set()
        meant: set[str] = set()  # known keys that a misspelt key was probably meant to be
        complete = True
        for key, value_node, line in self.pairs(node, path, "a mapping"):
            present.add(key)
            spec = fields.get(key)
            if spec is None:
                place = f"in {path}" if path else "at the top level"
                self.problem(line, f"unknown key '{key}' {place}", suggest(key, list(fields)))
                meant.update(difflib.get_close_matches(key, list(fields), n=1, cutoff=0.6))
                continue
            self.lines[join(path, key)] = line
            value = spec.convert(self, value_node, join(path, key))
            if value is INVALID:
                complete = complete and not spec.required
            elif value is not None:
                values[key] = value
            elif spec.required:
                complete = False
                self.problem(line, f"{join(path, key)} has no value", f"give {join(path, key)} a value")
        if not isinstance(node, yaml.MappingNode) and not is_null(node):
            return None
        for key, spec in fields.items():
            if spec.required and key not in present:
                complete = False
                if key in meant:
                    continue  # the misspelling is the one problem to report
                self.problem(
                    line_of(node),
                    f"{where(path)} has no '{key}'",
                    f"add {key}: {spec.example or '...'} to {where(path)}",
                )
        return values if complete else None

    def sequence(self, node: yaml.Node, path: str, item: Converter) -> tuple[Any, ...] | _Invalid:
        if is_null(node):
            return ()
        if not isinstance(node, yaml.SequenceNode):
            self.problem(
                line_of(node), f"{path} must be a list, found {describe(node)}", f"write {path}: [...]"
            )
            return INVALID
        out = []
        ok = True
        for index, child in enumerate(node.value):
            value = item(self, child, f"{path}[{index}]")
            if value is INVALID or value is None:
                ok = False
            else:
                out.append(value)
        return tuple(out) if ok else INVALID

    # -- scalars -----------------------------------------------------------------------------------

    def scalar(self, node: yaml.Node, path: str, what: str) -> Scalar | _Invalid | None:
        """The scalar at `node` after `${VAR}` substitution; None for an explicit null."""
        line = line_of(node)
        self.lines[path] = line
        if not isinstance(node, yaml.ScalarNode):
            self.problem(line, f"{path} must be {what}, found {describe(node)}", f"write {path} as {what}")
            return INVALID
        if is_null(node):
            return None
        text = str(node.value)
        substituted = self.env.substitute(text, path, line)
        if substituted is None:
            return INVALID  # the resolver reports misses after the walk, grouped by cause
        if substituted == text:
            return Scalar(_typed(node), text, line)
        if node.style is None:
            # A plain `${PORT}` is typed as if its value were written in place (so it can be an int);
            # a quoted one stays text.
            tag = _CONSTRUCTOR.resolve(yaml.ScalarNode, substituted, (True, False))  # type: ignore[no-untyped-call]
            retyped = yaml.ScalarNode(tag, substituted, node.start_mark, node.end_mark)
            return Scalar(_typed(retyped), substituted, line, text)
        return Scalar(substituted, substituted, line, text)

    def wrong(self, scalar: Scalar, path: str, what: str, fix: str = "") -> _Invalid:
        self.problem(scalar.line, f"{path} must be {what}, found {scalar.shown!r}", fix or f"write {what}")
        return INVALID


def is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == _TAG_NULL


def _flatten(node: yaml.MappingNode, reader: Reader, path: str) -> set[int]:
    """Apply YAML merge keys (`<<: *defaults`) once, and return the ids of the node's own key nodes, so
    a key that overrides a merged one is not mistaken for a duplicate."""
    own: set[int] | None = getattr(node, "_aifabric_own", None)
    if own is None:
        own = {id(k) for k, _ in node.value if k.tag != "tag:yaml.org,2002:merge"}
        node._aifabric_own = own  # type: ignore[attr-defined]
        try:
            _CONSTRUCTOR.flatten_mapping(node)
        except yaml.YAMLError as exc:
            reader.problem(
                line_of(node), f"in {path}: {exc}", "a merge key `<<:` takes an alias to a mapping"
            )
    return own


def _typed(node: yaml.ScalarNode) -> object:
    """A plain scalar typed as YAML types it (8000 -> int, true -> bool); unknown tags stay text."""
    construct = _CONSTRUCTOR.yaml_constructors.get(node.tag)
    if construct is None:
        return str(node.value)
    try:
        return construct(_CONSTRUCTOR, node)
    except (yaml.YAMLError, ValueError):
        return str(node.value)


# -- converters: (reader, node, path) -> value, None (absent) or INVALID ----------------------------


def text(r: Reader, node: yaml.Node, path: str) -> str | _Invalid | None:
    s = r.scalar(node, path, "text")
    if s is None or isinstance(s, _Invalid):
        return s
    return s.text


def secret(r: Reader, node: yaml.Node, path: str) -> Secret | _Invalid | None:
    s = r.scalar(node, path, "text")
    if s is None or isinstance(s, _Invalid):
        return s
    return Secret(s.text)


def boolean(r: Reader, node: yaml.Node, path: str) -> bool | _Invalid | None:
    s = r.scalar(node, path, "true or false")
    if s is None or isinstance(s, _Invalid):
        return s
    if not isinstance(s.value, bool):
        return r.wrong(s, path, "true or false")
    return s.value


def integer(low: int | None = None, high: int | None = None) -> Converter:
    bounds = _bounds(low, high)

    def convert(r: Reader, node: yaml.Node, path: str) -> int | _Invalid | None:
        s = r.scalar(node, path, "a whole number")
        if s is None or isinstance(s, _Invalid):
            return s
        if isinstance(s.value, bool) or not isinstance(s.value, int):
            return r.wrong(s, path, "a whole number" + bounds)
        if (low is not None and s.value < low) or (high is not None and s.value > high):
            return r.wrong(s, path, "a whole number" + bounds)
        return s.value

    return convert


def number(low: float | None = None, high: float | None = None, *, above: bool = False) -> Converter:
    bounds = f" greater than {low:g}" if above and low is not None else _bounds(low, high)

    def convert(r: Reader, node: yaml.Node, path: str) -> float | _Invalid | None:
        s = r.scalar(node, path, "a number")
        if s is None or isinstance(s, _Invalid):
            return s
        if isinstance(s.value, bool) or not isinstance(s.value, int | float):
            return r.wrong(s, path, "a number" + bounds)
        value = float(s.value)
        too_low = low is not None and (value <= low if above else value < low)
        if too_low or (high is not None and value > high):
            return r.wrong(s, path, "a number" + bounds)
        return value

    return convert


def _bounds(low: float | None, high: float | None) -> str:
    if low is not None and high is not None:
        return f" from {low:g} to {high:g}"
    if low is not None:
        return f" of at least {low:g}"
    return ""


def duration(*, positive: bool = False) -> Converter:
    def convert(r: Reader, node: yaml.Node, path: str) -> float | _Invalid | None:
        s = r.scalar(node, path, "a duration")
        if s is None or isinstance(s, _Invalid):
            return s
        try:
            seconds = parse_duration(s.value)
        except ValueError:
            return r.wrong(s, path, "a duration", "write a duration like 250ms, 30s, 5m, 1h or 1h30m")
        if positive and seconds <= 0:
            return r.wrong(s, path, "a duration above zero", "write a duration like 250ms, 30s, 5m or 1h")
        return seconds

    return convert


def size(r: Reader, node: yaml.Node, path: str) -> int | _Invalid | None:
    s = r.scalar(node, path, "a size")
    if s is None or isinstance(s, _Invalid):
        return s
    try:
        return parse_size(s.value)
    except ValueError:
        return r.wrong(s, path, "a size", "write a size like 32MiB, 1MB, 512KiB or a number of bytes")


def choice(options: tuple[str, ...]) -> Converter:
    def convert(r: Reader, node: yaml.Node, path: str) -> str | _Invalid | None:
        s = r.scalar(node, path, "one of " + ", ".join(options))
        if s is None or isinstance(s, _Invalid):
            return s
        if s.text not in options:
            r.problem(
                s.line,
                f"{path} is '{s.shown}', which is not one of: {', '.join(options)}",
                suggest(s.text, list(options)),
            )
            return INVALID
        return s.text

    return convert


def url(r: Reader, node: yaml.Node, path: str) -> str | _Invalid | None:
    s = r.scalar(node, path, "a URL")
    if s is None or isinstance(s, _Invalid):
        return s
    try:
        parts = urlsplit(s.text)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname) and (parts.port or 0) >= 0
    except ValueError:  # a bad IPv6 literal or port
        valid = False
    if not valid:
        return r.wrong(s, path, "an http:// or https:// URL", "write the base URL, e.g. http://host:8000/v1")
    return s.text.rstrip("/")


def list_of(item: Converter) -> Converter:
    def convert(r: Reader, node: yaml.Node, path: str) -> tuple[Any, ...] | _Invalid:
        return r.sequence(node, path, item)

    return convert
