"""Load YAML while remembering where every value came from, and interpolate `${VAR}`.

pydantic reports errors by field path (`('devices', 1, 'baudrate')`); users need a file, line and
column. We compose the YAML node tree ourselves, build plain Python data from it and keep a map
from each path to the node's position, so a validation error can be pointed at the right line.

The file comes from outside, so every way of reading it is bounded (issue 21): its size, its
nesting and the number of values once aliases are followed ("billion laughs"), and only plain
YAML is read (no `!tags`). Whatever is wrong with it comes out as a located `ConfigError`, never
a yaml, Unicode or recursion error.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gateway.errors import ConfigError
from gateway.limits import CONFIG_MAX_BYTES, CONFIG_MAX_DEPTH, CONFIG_MAX_NODES

Path_ = tuple[str | int, ...]

_YAML = "tag:yaml.org,2002:"
_MERGE_TAG = f"{_YAML}merge"
_VALUE_TAG = f"{_YAML}value"  # what a plain `=` resolves to; SafeLoader cannot construct it
# Plain YAML: what SafeLoader resolves untagged text to, and the same tags written out.
_PLAIN_TAGS = frozenset(
    f"{_YAML}{name}"
    for name in ("null", "bool", "int", "float", "str", "timestamp", "map", "seq", "merge")
)
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


class Refused(Exception):  # noqa: N818 - a reason, turned into a ConfigError by the caller
    """A file not read: `reason` says why (`not a regular file (a FIFO)`)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class SmallFile:
    data: bytes
    mode: int  # st_mode when read (its permission bits)


_KINDS = {
    stat.S_IFDIR: "a directory",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}


def read_small_file(file: Path, limit: int) -> SmallFile:
    """The bytes of a regular file of at most `limit` bytes. Raises OSError (cannot open) or
    Refused: a FIFO, device or directory is not read at all (opened without blocking, so a
    FIFO nobody writes cannot hang a start or a reload), nor a file larger than `limit`."""
    fd = os.open(file, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = _KINDS.get(stat.S_IFMT(info.st_mode), "not a file")
            raise Refused(f"not a regular file ({kind})")
        chunks: list[bytes] = []
        size = 0
        while size <= limit and (chunk := os.read(fd, limit + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    if size > limit:
        raise Refused(f"larger than {limit} bytes")
    return SmallFile(b"".join(chunks), info.st_mode)


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


class _TooBig(Exception):  # noqa: N818 - a refusal with a position, not a failure
    """The file nests too deep or expands to too much: refused at once, at `mark`."""

    def __init__(self, mark: yaml.Mark | None, text: str) -> None:
        super().__init__(text)
        self.mark = mark
        self.text = text


_TOO_DEEP = f"nesting deeper than {CONFIG_MAX_DEPTH} levels (aliases followed)"
_TOO_MANY = (
    f"more than {CONFIG_MAX_NODES} values, too many for a config (a YAML alias counts the "
    "values it repeats each time it is used)"
)


class _Loader(yaml.SafeLoader):
    """SafeLoader whose two recursive steps are bounded: composing nested nodes (the text's
    nesting) and flattening merge keys (`<<: [*a, *a]` doubles a mapping per level)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self._depth = 0
        self._nodes = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        self._nodes += 1
        self._depth += 1
        try:
            if self._depth > CONFIG_MAX_DEPTH:
                raise _TooBig(self._here(), _TOO_DEEP)
            if self._nodes > CONFIG_MAX_NODES:
                raise _TooBig(self._here(), _TOO_MANY)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def _here(self) -> yaml.Mark | None:
        event: yaml.Event | None = self.peek_event()  # type: ignore[no-untyped-call]
        mark = None if event is None else event.start_mark
        return mark if isinstance(mark, yaml.Mark) else None

    def flatten_mapping(self, node: yaml.MappingNode) -> None:
        self._depth += 1
        try:
            if self._depth > CONFIG_MAX_DEPTH:
                raise _TooBig(node.start_mark, _TOO_DEEP)
            super().flatten_mapping(node)
            if len(node.value) > CONFIG_MAX_NODES:
                raise _TooBig(node.start_mark, _TOO_MANY)
        finally:
            self._depth -= 1


class _Builder:
    def __init__(self, file: Path, env: Mapping[str, str]) -> None:
        self.located = Located(file=file, data=None)
        self.env = env
        self.problems: list[str] = []
        self._scalars = _Loader("")
        self._merged: dict[int, int] = {}  # id(mapping node) -> leading pairs from merge keys
        self._built = 0  # values built: an aliased node counts each time it is built

    def problem(self, node: yaml.Node, text: str) -> None:
        mark = _mark(node)
        self.problems.append(f"{self.located.file}:{mark.line}:{mark.column}: {text}")

    def build(self, node: yaml.Node, path: Path_) -> Any:
        # An alias is the node it points at, built again: the text's size does not bound this.
        self._built += 1
        if self._built > CONFIG_MAX_NODES:
            raise _TooBig(node.start_mark, _TOO_MANY)
        if len(path) >= CONFIG_MAX_DEPTH:  # a chain of aliases (or one to itself) nests deeper
            raise _TooBig(node.start_mark, _TOO_DEEP)
        self.located.values[path] = _mark(node)
        if node.tag not in _PLAIN_TAGS and node.tag != _VALUE_TAG:
            self.problem(node, f"{_dotted(path)}: {_unsupported(node.tag)}")
            return None
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
            key = self._key(key_node, path)
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

    def _key(self, node: yaml.Node, path: Path_) -> Any:
        """A mapping key: a scalar (a list or mapping as a key would be built, aliases and all,
        only to be refused)."""
        if not isinstance(node, yaml.ScalarNode) or node.tag not in _PLAIN_TAGS:
            return None
        try:
            return self._scalars.construct_object(node)
        except (yaml.YAMLError, ValueError, TypeError, KeyError, OverflowError):
            return None

    def _scalar(self, node: yaml.Node, path: Path_) -> Any:
        if node.tag == _VALUE_TAG:
            return node.value  # a plain `=`: the text
        try:
            value = self._scalars.construct_object(node)
        except (yaml.YAMLError, ValueError, TypeError, KeyError, OverflowError) as exc:
            # `2024-13-45` (looks like a date, is none), 5,000 digits, `!!int abc`, ...
            self.problem(node, f"{_dotted(path)}: cannot read {_excerpt(node)}: {_why(exc)}")
            return None
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


def _unsupported(tag: str) -> str:
    shown = f"!!{tag.removeprefix(_YAML)}" if tag.startswith(_YAML) else tag
    if len(shown) > 40:
        shown = shown[:40] + "..."
    return (
        f"unsupported YAML tag {shown} (the config is plain YAML; for secrets use ${{VAR}} "
        "or a *_file key)"
    )


def _excerpt(node: yaml.Node) -> str:
    text = str(node.value)
    return repr(text if len(text) <= 40 else text[:40] + "...")


def _why(exc: Exception) -> str:
    if isinstance(exc, ValueError) and "digits" in str(exc):
        return "integer with too many digits"
    if isinstance(exc, yaml.MarkedYAMLError):
        return str(exc.problem)
    return str(exc) or type(exc).__name__


def _position(text: str, index: int) -> str:
    """1-based `LINE:COLUMN` of character `index` of `text`."""
    line = text.count("\n", 0, index) + 1
    column = index - text.rfind("\n", 0, index)  # (rfind is -1 on the first line)
    return f"{line}:{column}"


def _read_text(file: Path) -> str:
    """The file as text, or a ConfigError at FILE:LINE:COL."""
    try:
        data = read_small_file(file, CONFIG_MAX_BYTES).data
    except OSError as exc:
        raise ConfigError([f"{file}:1:1: cannot read config: {exc.strerror or exc}"]) from exc
    except Refused as exc:
        raise ConfigError([f"{file}:1:1: cannot read config: {exc.reason}"]) from exc
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = data[: exc.start].decode("utf-8")  # what precedes the first bad byte is valid
        where = _position(before, len(before))
        raise ConfigError(
            [f"{file}:{where}: config is not UTF-8 text (byte 0x{data[exc.start]:02x})"]
        ) from exc


def _compose(file: Path, text: str) -> yaml.Node | None:
    try:
        loader = _Loader(text)  # (a str is checked for unprintable characters here)
        try:
            return loader.get_single_node()
        finally:
            loader.dispose()
    except _TooBig as exc:
        raise ConfigError([f"{file}:{_at(exc.mark)}: {exc.text}"]) from exc
    except yaml.reader.ReaderError as exc:  # a NUL byte, a control character
        raise ConfigError(
            [
                f"{file}:{_position(text, exc.position)}: YAML syntax error: "
                f"character {chr(exc.character)!r} is not allowed in YAML text"
            ]
        ) from exc
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise ConfigError([f"{file}:{_at(mark)}: YAML syntax error: {exc.problem}"]) from exc
    except yaml.YAMLError as exc:
        raise ConfigError([f"{file}:1:1: YAML error: {exc}"]) from exc


def _at(mark: yaml.Mark | None) -> str:
    return f"{mark.line + 1}:{mark.column + 1}" if mark is not None else "1:1"


def load_yaml(file: Path, env: Mapping[str, str] | None = None) -> Located:
    """Read and compose `file`; raises ConfigError with positions for every problem."""
    env = os.environ if env is None else env
    text = _read_text(file)
    node = _compose(file, text)
    builder = _Builder(file, env)
    try:
        builder.located.data = {} if node is None else builder.build(node, ())
    except _TooBig as exc:
        raise ConfigError([f"{file}:{_at(exc.mark)}: {exc.text}"]) from exc
    if builder.problems:
        raise ConfigError(builder.problems)
    return builder.located
