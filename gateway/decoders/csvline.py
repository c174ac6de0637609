"""`csv`: delimited values in a configured column order: `21.5,40,1013` -> temp, hum, pres."""

from __future__ import annotations

import csv

from gateway.config import CsvDecoder
from gateway.decoders.values import decode_text, parse_value
from gateway.errors import DecodeError
from gateway.models import Value


class CsvLineDecoder:
    def __init__(self, spec: CsvDecoder, encoding: str = "utf-8") -> None:
        self._columns = spec.columns
        self._delimiter = spec.delimiter
        self._encoding = encoding

    def __call__(self, frame: bytes) -> dict[str, Value]:
        text = decode_text(frame, self._encoding)
        try:
            [row] = csv.reader([text], delimiter=self._delimiter, strict=True)
        except (csv.Error, ValueError) as exc:  # ValueError: a quoted newline gave two rows
            raise DecodeError(f"not a CSV line: {exc}") from exc
        if len(row) != len(self._columns):
            raise DecodeError(f"{len(row)} column(s), expected {len(self._columns)}")
        fields: dict[str, Value] = {}
        for name, cell in zip(self._columns, row, strict=True):
            if name is not None and (value := parse_value(cell)) is not None:
                fields[name] = value
        if not fields:
            raise DecodeError("no values in the configured columns")
        return fields
