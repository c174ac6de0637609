"""Load YAML while remembering where every value came from, and interpolate `${VAR}`.

pydantic reports errors by field path (`('devices', 1, 'baudrate')`); users need a file, line and
column. We compose the YAML node tree ourselves, build plain Python data from it and keep a map
from each path to the node's position, so a validation error can be pointed at the right line.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gateway.errors import ConfigError

Path_ = tuple[str | int, ...]

_MERGE_TAG = "tag:yaml.org,2002:merge"
_VAR = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}")


@dataclass(frozen=True, slots=True)
class Mark:
    line: int  # 1-based
    column: int  # 1-based


@dataclass(slots=True)
class Located:
    """YAML data plus the position of each value (keyed by path) and of each mapping key."""

    file: Path
    data: Any
    values: dict[Path_, Mark] = field(default_factory=dict)
    keys: dict[Path_, Mark] = field(default_factory=dict)

    def mark_for(self, loc: Path_) -> Mark:
        """The most specific known position for `loc`: the key itself, else its value, else the
        nearest ancestor (a missing field is reported at the mapping that lacks it)."""
        for end in range(len(loc), -1, -1):
            prefix = loc[:end]
            if prefix in self.keys:
                return self.keys[prefix]
            if prefix in self.values:
                return self.values[prefix]
        return Mark(1, 1)

    def where(self, loc: Path_) -> str:
        mark = self.mark_for(loc)
        return f"{self.file}:{mark.line}:{mark.column}"


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Replace `${VAR}` and `${VAR:-default}`. An unset variable without a default is an error
    (silently substituting an empty string would, for example, point the gateway at no broker)."""

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group("name"), match.group("default")
        if name in env:
            return env[name]
        if default is not None:
            return default
        raise KeyError(name)

    return _VAR.sub(substitute, text)


def _mark(node: yaml.Node) -> Mark:
    return Mark(node.start_mark.line + 1, node.start_mark.column + 1)


class _Builder:
    def __init__(self, file: Path, env: Mapping[str, str]) -> None:
        self.located = Located(file=file, data=None)
        self.env = env
        self.problems: list[str] = []
        self._scalars = yaml.SafeLoader("")
        self._merged: dict[int, int] = {}  # id(mapping node) -> leading pairs from merge keys

    def problem(self, node: yaml.Node, text: str) -> None:
        mark = _mark(node)
        self.problems.append(f"{self.located.file}:{mark.line}:{mark.column}: {text}")

    def build(self, node: yaml.Node, path: Path_) -> Any:
        self.located.values[path] = _mark(node)
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        return self._scalar(node, path)

    def _mapping(self, node: yaml.MappingNode, path: Path_) -> dict[Any, Any]:
        if id(node) not in self._merged:  # an aliased mapping is built again, already flat
            own = sum(1 for key_node, _ in node.value if key_node.tag != _MERGE_TAG)
            self._scalars.flatten_mapping(node)  # resolves YAML merge keys (<<: *anchor)
            # flatten_mapping puts the merged pairs first; the mapping's own keys override them.
            self._merged[id(node)] = len(node.value) - own
        merged = self._merged[id(node)]
        result: dict[Any, Any] = {}
        explicit: set[Any] = set()
        for index, (key_node, value_node) in enumerate(node.value):
            key = self._scalars.construct_object(key_node)
            if not isinstance(key, str | int):
                self.problem(key_node, f"{_dotted(path)}: keys must be plain strings")
                continue
            if key in explicit:
                # YAML would silently keep the last one; a duplicated device setting is a bug.
                self.problem(key_node, f"{_dotted((*path, key))}: duplicate key")
                continue
            if index >= merged:
                explicit.add(key)
            self.located.keys[(*path, key)] = _mark(key_node)
            result[key] = self.build(value_node, (*path, key))
        return result

    def _scalar(self, node: yaml.Node, path: Path_) -> Any:
        value = self._scalars.construct_object(node)
        if isinstance(value, str) and "${" in value:
            try:
                return interpolate(value, self.env)
            except KeyError as exc:
                self.problem(
                    node,
                    f"{_dotted(path)}: environment variable {exc.args[0]} is not set "
                    "(use ${VAR:-default} to give a default)",
                )
        return value


def _dotted(path: Path_) -> str:
    """`('devices', 1, 'baudrate')` -> `devices[1].baudrate`."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out or "(top level)"


dotted = _dotted


def load_yaml(file: Path, env: Mapping[str, str] | None = None) -> Located:
    """Read and compose `file`; raises ConfigError with positions for syntax errors."""
    env = os.environ if env is None else env
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{file}: cannot read config: {exc.strerror or exc}"]) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{file}: config is not UTF-8 text: {exc}"]) from exc
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{file}:{mark.line + 1}:{mark.column + 1}" if mark else str(file)
        raise ConfigError([f"{where}: YAML syntax error: {exc.problem}"]) from exc
    except yaml.YAMLError as exc:
        raise ConfigError([f"{file}: YAML error: {exc}"]) from exc
    builder = _Builder(file, env)
    builder.located.data = {} if node is None else builder.build(node, ())
    if builder.problems:
        raise ConfigError(builder.problems)
    return builder.located
