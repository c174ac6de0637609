"""The configuration reference, generated from the config's JSON Schema (what `gateway schema`
prints), so that it cannot drift from the models.

One `Table` per model (a section, a device type, a filter, a nested part), in the order a reader
meets them from the top of the file; one `Key` per field, with its type, default and description.
The docs site renders it at build time (`docs/hooks/config_reference.py`), and the tests check
`config/example.yaml` and the guide's tables against it (`tests/test_config_reference.py`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from gateway.config.loading import json_schema

Schema = Mapping[str, Any]

_REF = "#/$defs/"
_BOUNDS = (
    ("minimum", "≥ {}"),
    ("exclusiveMinimum", "> {}"),
    ("maximum", "≤ {}"),
    ("exclusiveMaximum", "< {}"),
)


@dataclass(frozen=True, slots=True)
class Key:
    name: str
    type: str  # markdown, with links to the tables of the models it may hold
    default: str  # markdown: "required", or the default value
    description: str
    models: tuple[str, ...]  # the models (tables) this key's value may be, in schema order


@dataclass(frozen=True, slots=True)
class Table:
    model: str  # the model's name in the schema's $defs ("" for the file itself)
    title: str
    description: str
    paths: tuple[str, ...]  # where in a config file it appears: "mqtt.backoff", "devices[]", ...
    keys: tuple[Key, ...]

    @property
    def anchor(self) -> str:
        return anchor(self.model)

    def key(self, name: str) -> Key:
        return next(k for k in self.keys if k.name == name)


def anchor(model: str) -> str:
    return "ref-" + (model.lower() or "file")


def _ref_name(node: Schema) -> str | None:
    ref = node.get("$ref")
    return ref.removeprefix(_REF) if isinstance(ref, str) else None


def _number(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _variants(node: Schema) -> list[Schema]:
    return list(node.get("anyOf", node.get("oneOf", [])))


class Reference:
    """The reference of one schema (by default: the gateway's)."""

    def __init__(self, schema: Schema | None = None) -> None:
        self.schema = json_schema() if schema is None else schema
        self.defs: Mapping[str, Schema] = self.schema.get("$defs", {})
        self.tables: dict[str, Table] = {}
        self._build()

    # -- building ---------------------------------------------------------------------------

    def _def(self, model: str) -> Schema:
        return self.schema if model == "" else self.defs[model]

    def _build(self) -> None:
        """Breadth first from the file itself: each model once, with every path it appears at."""
        paths: dict[str, list[str]] = {"": [""]}
        queue = [""]
        while queue:
            model = queue.pop(0)
            for name, node in self._def(model).get("properties", {}).items():
                base = paths[model][0]
                for child, path in self._children(node, f"{base}.{name}" if base else name):
                    known = paths.setdefault(child, [])
                    if path not in known:
                        known.append(path)
                    if child not in queue and child not in self.tables and len(known) == 1:
                        queue.append(child)
            self.tables[model] = self._table(model, paths[model])
        for model, where in paths.items():  # paths found after a table was made
            self.tables[model] = self._table(model, where)

    def _is_model(self, name: str) -> bool:
        return name == "" or "properties" in self.defs[name]

    def _children(self, node: Schema, path: str) -> Iterator[tuple[str, str]]:
        """The models a value at `path` may be, each with the path where it stands."""
        if (name := _ref_name(node)) is not None and self._is_model(name):
            yield name, path
        for variant in _variants(node):
            yield from self._children(variant, path)
        if "items" in node:
            yield from self._children(node["items"], f"{path}[]")
        extra = node.get("additionalProperties")
        if isinstance(extra, Mapping):
            yield from self._children(extra, f"{path}.<name>")
        for value in node.get("patternProperties", {}).values():
            yield from self._children(value, f"{path}.<name>")

    def _table(self, model: str, paths: list[str]) -> Table:
        schema = self._def(model)
        required = set(schema.get("required", ()))
        properties = schema.get("properties", {})
        description = _text(schema.get("description", ""))
        keys = tuple(
            self._key(name, node, name in required, description if len(properties) == 1 else "")
            for name, node in properties.items()
        )
        return Table(model, self._title(model, paths), description, tuple(paths), keys)

    def _title(self, model: str, paths: list[str]) -> str:
        if model == "":
            return "The file"
        kind = self._const_type(model)
        if len(paths) == 1:
            return f"`{paths[0]}`" + (f", `type: {kind}`" if kind else "")
        title = self._def(model).get("title", model)
        if kind:
            return f"`type: {kind}`"
        return f"`{title}` ({model})" if title != model else model

    def _const_type(self, model: str) -> str | None:
        const = self._def(model).get("properties", {}).get("type", {}).get("const")
        return const if isinstance(const, str) else None

    def _key(self, name: str, node: Schema, required: bool, fallback: str) -> Key:
        """`fallback`: the model's description, for the single key of a filter's model."""
        description = node.get("description") or fallback
        models = tuple(dict.fromkeys(m for m, _ in self._children(node, "")))
        if not description and len(models) == 1:
            description = self._def(models[0]).get("description", "")
        if not description and "const" in node:
            description = "Selects this kind."
        return Key(name, self._type(node), self._default(node, required, models),
                   _text(description), models)  # fmt: skip

    # -- rendering types and defaults --------------------------------------------------------

    def _type(self, node: Schema) -> str:
        if (name := _ref_name(node)) is not None:
            if not self._is_model(name):
                return self._type(self.defs[name])
            return f"[{self._link_text(name)}](#{anchor(name)})"
        if variants := _variants(node):
            parts = [self._type(v) for v in variants if v.get("type") != "null"]
            nullable = len(parts) < len(variants)
            return " or ".join(dict.fromkeys(parts)) + (" or `null`" if nullable else "")
        if "const" in node:
            return f"`{node['const']}`"
        if "enum" in node:
            return "one of " + ", ".join(f"`{v}`" for v in node["enum"])
        return self._plain_type(node)

    def _link_text(self, model: str) -> str:
        title = self.defs[model].get("title", model)
        kind = self._const_type(model)
        return f"{title}" if not kind else f"{kind} ({model})"

    def _plain_type(self, node: Schema) -> str:
        kind = node.get("type")
        if kind == "array":
            items = self._type(node["items"]) if "items" in node else "values"
            at_least = f" (at least {node['minItems']})" if "minItems" in node else ""
            return f"list of {items}{at_least}"
        if kind == "object":
            value = node.get("additionalProperties")
            pattern = next(iter(node.get("patternProperties", {}).items()), None)
            if pattern is not None:
                return f"mapping of names (`{pattern[0]}`) to {self._type(pattern[1])}"
            if isinstance(value, Mapping):
                return f"mapping of names to {self._type(value) if value else 'any value'}"
            return "mapping"
        if kind is None:
            return "any value"
        words = {"number": "number", "integer": "integer", "boolean": "boolean"}
        text = words.get(kind, "string")
        if node.get("format") == "path":
            text = "file path"
        elif node.get("format") == "password":
            text = "secret string"
        bounds = [fmt.format(_number(node[k])) for k, fmt in _BOUNDS if k in node]
        if "maxLength" in node:
            bounds.append(f"{node.get('minLength', 0)}–{node['maxLength']} characters")
        elif "minLength" in node:
            bounds.append(f"at least {node['minLength']} character(s)")
        if "pattern" in node:
            bounds.append(f"matching `{node['pattern']}`")
        return text + (f" ({', '.join(bounds)})" if bounds else "")

    def _default(self, node: Schema, required: bool, models: tuple[str, ...]) -> str:
        if required:
            return "required"
        if "default" not in node:  # a default_factory: an empty list or mapping
            return "`[]`" if node.get("type") == "array" else "`{}`"
        value = node["default"]
        if value is None:
            return "none"
        if isinstance(value, dict) and value and models:
            return "its defaults"
        return f"`{default_text(value)}`"

    # -- use ---------------------------------------------------------------------------------

    def keys_used(self, data: object) -> Iterator[tuple[str, Table, Key]]:
        """Every key of a config file's data, with the table that documents it (KeyError for a
        key the reference does not know)."""
        yield from self._walk(data, {"$ref": _REF}, "")

    def _walk(self, data: object, node: Schema, path: str) -> Iterator[tuple[str, Table, Key]]:
        if isinstance(data, list):
            for i, item in enumerate(data):
                yield from self._walk(item, self._items(node), f"{path}[{i}]")
            return
        if not isinstance(data, dict):
            return
        models = list(self._models(node))
        if not models:  # a mapping of names (sensors, commands, adapters), or any value
            extra = self._extra(node)
            for name, value in data.items():
                if extra is not None:
                    yield from self._walk(value, extra, f"{path}.{name}")
            return
        table = self._pick(data, models, path)
        for name, value in data.items():
            here = f"{path}.{name}" if path else str(name)
            if not any(k.name == name for k in table.keys):
                raise KeyError(f"{here}: not in the reference")
            yield here, table, table.key(name)
            yield from self._walk(value, self._def(table.model)["properties"][name], here)

    def _models(self, node: Schema) -> Iterator[str]:
        """The models a value may be itself (not those inside its items or mapping values)."""
        if (name := _ref_name(node)) is not None and self._is_model(name):
            yield name
        for variant in _variants(node):
            yield from self._models(variant)

    def _candidates(self, node: Schema) -> Iterator[Schema]:
        if (name := _ref_name(node)) is not None:
            yield from self._candidates(self._def(name))
            return
        yield node
        for variant in _variants(node):
            yield from self._candidates(variant)

    def _items(self, node: Schema) -> Schema:
        for candidate in self._candidates(node):
            if "items" in candidate:
                return dict(candidate["items"])
        return {}

    def _extra(self, node: Schema) -> Schema | None:
        for candidate in self._candidates(node):
            extra = candidate.get("additionalProperties")
            if isinstance(extra, Mapping):
                return extra
            for value in candidate.get("patternProperties", {}).values():
                return dict(value)
        return None

    def _pick(self, data: dict[Any, Any], models: list[str], path: str) -> Table:
        """The model a mapping is: of those its `type` names (or all), the first that has all its
        keys (a filter item's single key picks its filter)."""
        candidates = [m for m in models if self._const_type(m) == data.get("type")] or models
        for model in candidates:
            if set(data) <= {k.name for k in self.tables[model].keys}:
                return self.tables[model]
        return self.tables[candidates[0]]  # whose keys the caller then finds missing

    # -- the page ----------------------------------------------------------------------------

    def markdown(self) -> str:
        lines = [
            "# Configuration reference",
            "",
            "Generated from the configuration models when the site is built (the same source as"
            " `gateway schema`, which prints it as JSON Schema): every section, key, type,"
            " default and description. Times are in seconds unless a key says otherwise;"
            " unknown keys are errors. [Configuration](configuration.md) explains the file;"
            " `config/example.yaml` sets every key to its default.",
        ]
        for table in self.tables.values():
            lines += ["", f"## {table.title} {{#{table.anchor}}}", ""]
            if table.description:
                lines += [table.description, ""]
            if len(table.paths) > 1:
                where = ", ".join(f"`{p}`" for p in table.paths)
                lines += [f"At: {where}.", ""]
            lines += ["| key | type | default | description |", "|---|---|---|---|"]
            lines += [
                f"| `{k.name}` | {_cell(k.type)} | {_cell(k.default)} | {_cell(k.description)} |"
                for k in table.keys
            ]
        return "\n".join(lines) + "\n"


def default_text(value: object) -> str:
    """A default as it would be written in YAML: plain where YAML reads it back unchanged."""
    if isinstance(value, str):
        return value if _plain_in_yaml(value) else json.dumps(value)
    if isinstance(value, float | int) and not isinstance(value, bool):
        return _number(value)
    return json.dumps(value, ensure_ascii=False)


def _plain_in_yaml(text: str) -> bool:
    if not text or text != text.strip() or text[0] in "'\"":
        return False
    try:
        return bool(yaml.safe_load(text) == text)
    except yaml.YAMLError:
        return False


def _text(description: str) -> str:
    return re.sub(r"\s*\n\s*", " ", description).strip()


def _cell(text: str) -> str:
    """Outside code spans, a pipe would end the table cell and `<prefix>` would be read as HTML
    (inside them, Python-Markdown's tables take both as they are)."""
    parts = text.split("`")
    for i in range(0, len(parts), 2):
        parts[i] = parts[i].replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")
    return "`".join(parts)
