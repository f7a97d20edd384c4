"""A LiteLLM `config.yaml` read into plain values that remember their line.

The importer reports every part it cannot carry by the line it is on, so the file is composed into
PyYAML nodes (which keep their marks) and turned into `Item`s: a mapping is `dict[str, Item]`, a list
`list[Item]`, a scalar its YAML-typed Python value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from aifabric.core.exit_codes import UNREADABLE
from aifabric.errors import CommandError

__all__ = ["Item", "parse_source", "read_source"]


# The typing YAML gives plain scalars (8000 -> int, true -> bool), as LiteLLM's own yaml.safe_load does.
_CONSTRUCTOR = yaml.SafeLoader("")


@dataclass(frozen=True)
class Item:
    """One value of the file and the line (1-based) it starts on."""

    value: Any  # dict[str, Item] | list[Item] | str | int | float | bool | None
    line: int
    # On the root only: keys written twice in one mapping, (path, first line, line kept): YAML keeps the last.
    duplicates: tuple[tuple[str, int, int], ...] = ()

    def get(self, key: str) -> Item | None:
        return self.value.get(key) if isinstance(self.value, dict) else None

    def mapping(self) -> dict[str, Item]:
        return self.value if isinstance(self.value, dict) else {}

    def items(self) -> list[Item]:
        return self.value if isinstance(self.value, list) else []

    def plain(self) -> Any:
        """The value without line numbers, as `yaml.safe_load` would give it."""
        if isinstance(self.value, dict):
            return {k: v.plain() for k, v in self.value.items()}
        if isinstance(self.value, list):
            return [v.plain() for v in self.value]
        return self.value


def read_source(path: str) -> Item:
    """The LiteLLM config at `path`, or `CommandError` (exit 2) saying why it cannot be read, and where."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError:
        raise CommandError(f"{path}: no such file", UNREADABLE) from None
    except IsADirectoryError:
        raise CommandError(f"{path}: a directory, not a LiteLLM config.yaml", UNREADABLE) from None
    except OSError as exc:
        raise CommandError(f"{path}: cannot read it: {exc.strerror}", UNREADABLE) from None
    except UnicodeDecodeError as exc:
        raise CommandError(f"{path}: not UTF-8 text ({exc.reason})", UNREADABLE) from None
    return parse_source(text, path)


def parse_source(text: str, source: str = "<string>") -> Item:
    """`text` as an `Item` tree; `CommandError` (exit 2) with file:line when it is not a YAML mapping."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        context = ""
        if exc.context and exc.context_mark is not None:
            context = f" ({exc.context} on line {exc.context_mark.line + 1})"
        raise CommandError(
            f"{where}: not valid YAML: {exc.problem or exc.context or 'unreadable'}{context}", UNREADABLE
        ) from None
    except yaml.YAMLError as exc:
        raise CommandError(f"{source}: not valid YAML: {exc}", UNREADABLE) from None
    if root is None:
        raise CommandError(f"{source}: the file is empty: there is nothing to import", UNREADABLE)
    if not isinstance(root, yaml.MappingNode):
        raise CommandError(
            f"{source}:{root.start_mark.line + 1}: a LiteLLM config is a mapping (model_list:, "
            "litellm_settings:, ...), this is not",
            UNREADABLE,
        )
    duplicates: list[tuple[str, int, int]] = []
    try:
        item = _item(root, "", duplicates)
    except yaml.YAMLError as exc:  # a scalar YAML cannot type (a bad !!tag), found while converting
        raise CommandError(f"{source}: not valid YAML: {exc}", UNREADABLE) from None
    return Item(item.value, item.line, tuple(duplicates))


def _item(node: yaml.Node, path: str, duplicates: list[tuple[str, int, int]]) -> Item:
    line = int(node.start_mark.line) + 1
    if isinstance(node, yaml.MappingNode):
        own: dict[
            int, str
        ] = {}  # this mapping's own keys, before merge keys add theirs (which own keys override)
        seen: dict[str, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = str(_CONSTRUCTOR.construct_object(key_node, deep=True))
            own[id(key_node)] = key
            key_line = int(key_node.start_mark.line) + 1
            if key in seen:
                duplicates.append((f"{path}.{key}" if path else key, seen[key], key_line))
            seen[key] = key_line
        _CONSTRUCTOR.flatten_mapping(node)  # `<<: *anchor` merge keys, as LiteLLM's safe_load has them
        out: dict[str, Item] = {}
        for key_node, value_node in node.value:
            key = own.get(id(key_node)) or str(_CONSTRUCTOR.construct_object(key_node, deep=True))
            where = f"{path}.{key}" if path else key
            # A value is reported at its key's line (`cache_params:`), not where its own content starts.
            out[key] = Item(_item(value_node, where, duplicates).value, int(key_node.start_mark.line) + 1)
        return Item(out, line)
    if isinstance(node, yaml.SequenceNode):
        return Item([_item(child, f"{path}[{i}]", duplicates) for i, child in enumerate(node.value)], line)
    return Item(_CONSTRUCTOR.construct_object(node, deep=True), line)
