"""The filters' registry: each filter is registered once, where its config model is written,
with its name (`key`), its config model (a `Spec`) and what it makes (`Spec.build`, a filter of
`gateway.streams.filters`). The `filters:` item union (`union.FilterSpec`), the error that lists
the known names and the chain's construction are built from here, so a new filter is its model
here (`specs.py`, or a plug-in's module) and its class in `gateway/streams/filters/`:

    @register_filter
    class OffsetSpec(Spec):
        # its docstring: the filter's line in the configuration reference
        key: ClassVar[str] = "offset"
        root: Number = Field(description="What to add (negative to subtract).")

        def build(self) -> Filter:
            return Offset(self.root)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, TypeVar

from pydantic import (
    ConfigDict,
    GetJsonSchemaHandler,
    RootModel,
    model_serializer,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema
from pydantic_core.core_schema import SerializerFunctionWrapHandler

from gateway.config.filters.scalars import filter_error
from gateway.registry import Registry
from gateway.streams.filters.base import Filter


class Spec(RootModel[Any]):
    """One filter: a mapping of its name (`key`) to its options (`root`), and what it makes
    (`build`: the running filter, with fresh state)."""

    model_config = ConfigDict(frozen=True)
    key: ClassVar[str]

    def build(self) -> Filter:
        raise NotImplementedError  # every registered filter has its own

    @model_validator(mode="before")
    @classmethod
    def _unwrap(cls, data: Any) -> Any:
        if isinstance(data, cls):
            return data
        if isinstance(data, Mapping) and list(data) == [cls.key]:
            return data[cls.key]
        raise filter_error("filter", f"expected a one-key mapping {{{cls.key}: ...}}, got {data!r}")

    @model_serializer(mode="wrap")
    def _wrap(self, handler: SerializerFunctionWrapHandler) -> Any:
        root = handler(self)
        # Pydantic runs this serializer twice on the outermost `or` of a recursive union (once
        # for the definition reference, once for the model): wrap only once.
        if isinstance(root, dict) and list(root) == [self.key] and self.key == "or":
            return root
        return {self.key: root}

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        inner = dict(handler(core_schema))
        inner.pop("title", None)
        description = " ".join((cls.__doc__ or "").split())
        if inner.get("description") == description:
            del inner["description"]
        return {
            "type": "object",
            "title": cls.key,
            "description": description,
            "properties": {cls.key: inner},
            "required": [cls.key],
            "additionalProperties": False,
        }


#: Every filter by its name, in the order of the documentation (`or` last of the built-in ones).
FILTERS: Registry[type[Spec]] = Registry("filter")

S = TypeVar("S", bound=type[Spec])


def register_filter(spec: S) -> S:
    """Register a filter's config model under its `key` (a class decorator)."""
    FILTERS.add(spec.key, spec)
    return spec
