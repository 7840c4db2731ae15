"""Write one JSON Schema file per topic, generated from the records (``python -m schemas.generate``).

The files under ``schemas/jsonschema/`` are checked in for the JavaScript pixel and other languages;
a test fails when they drift from the records.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import orjson

from schemas.topics import TOPICS

__all__ = ["json_schemas", "write_json_schemas", "SCHEMA_DIR"]

SCHEMA_DIR = Path(__file__).parent / "jsonschema"


def json_schemas() -> dict[str, dict[str, Any]]:
    """Topic name → JSON Schema (draft 2020-12) of the record the topic carries."""
    out: dict[str, dict[str, Any]] = {}
    for name, spec in TOPICS.items():
        schema = spec.record.model_json_schema(mode="validation")
        schema = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"https://shoprank.dev/schemas/{name}.json",
            "x-topic": spec.full_name(),
            "x-key": spec.key_doc,
            **schema,
        }
        out[name] = schema
    return out


def render(schema: dict[str, Any]) -> bytes:
    return orjson.dumps(schema, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


def write_json_schemas(directory: Path = SCHEMA_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in json_schemas().items():
        path = directory / f"{name}.json"
        path.write_bytes(render(schema))
        written.append(path)
    return written


if __name__ == "__main__":
    for p in write_json_schemas(Path(sys.argv[1]) if len(sys.argv) > 1 else SCHEMA_DIR):
        print(p)
