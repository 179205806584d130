"""YAML to plain data, keeping where every key and value sits in the file.

PyYAML's composer already records a mark (line, column) on each node; this walks
the composed tree once, building the data and a map from each value's path
(`("nodes", "greet", "functions", 0, "name")`) to its position.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import yaml

Path = tuple[str | int, ...]


@dataclass(frozen=True)
class Position:
    """Where something is in the YAML text."""

    line: int  # 1-based
    column: int  # 1-based


class FlowYamlLoader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 scalars: `yes`/`no`/`on`/`off` stay words and `012`
    stays a string, so choices and DTMF keys read as written."""


FlowYamlLoader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag not in ("tag:yaml.org,2002:int",
                                                           "tag:yaml.org,2002:bool")]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
FlowYamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:int", re.compile(r"^[-+]?(?:0|[1-9][0-9_]*)$"), list("-+0123456789")
)
FlowYamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


class DuplicateKey(ValueError):
    """A mapping repeats a key; `key` is the key, `position` where it is repeated."""

    def __init__(self, key: str, position: Position):
        super().__init__(f"duplicate key '{key}'")
        self.key = key
        self.position = position


def _pos(node: yaml.Node) -> Position:
    return Position(node.start_mark.line + 1, node.start_mark.column + 1)


def load_with_positions(text: str) -> tuple[object, dict[Path, Position], dict[Path, Position]]:
    """Data, value positions and key positions; raises yaml.YAMLError or DuplicateKey."""
    loader = FlowYamlLoader(text)
    try:
        root = loader.get_single_node()
    finally:
        loader.dispose()
    values: dict[Path, Position] = {}
    keys: dict[Path, Position] = {}
    if root is None:
        return None, values, keys

    def build(node: yaml.Node, path: Path) -> object:
        values[path] = _pos(node)
        if isinstance(node, yaml.MappingNode):
            out: dict = {}
            for key_node, value_node in node.value:
                key = loader.construct_object(key_node, deep=True)
                if not isinstance(key, (str, int, float, bool)):
                    raise yaml.constructor.ConstructorError(
                        None, None, "a key must be a plain word", key_node.start_mark
                    )
                key = str(key) if not isinstance(key, str) else key
                if key in out:
                    raise DuplicateKey(key, _pos(key_node))
                keys[(*path, key)] = _pos(key_node)
                out[key] = build(value_node, (*path, key))
            return out
        if isinstance(node, yaml.SequenceNode):
            return [build(item, (*path, i)) for i, item in enumerate(node.value)]
        return loader.construct_object(node, deep=True)

    return build(root, ()), values, keys
