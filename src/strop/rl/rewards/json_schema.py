"""`json_schema`: 1.0 when the completion is JSON that validates against a JSON Schema, else 0.0.

The JSON is the completion's last ```json fenced block if it has one, else the whole stripped text.
The schema is the inline option `schema`, or else the row's `field` (default "schema"; a dict or a
JSON string), so one dataset can ask for a different structure per prompt. A broken inline schema is
a config error; a broken schema in a row is a StropError when that row is scored.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from strop.errors import StropError
from strop.rl.rewards.base import Options, RewardType, per_completion, row_field

_JSON_BLOCK = re.compile(r"```json[ \t]*\n(.*?)```", re.DOTALL | re.IGNORECASE)


class JsonSchemaOptions(Options):
    schema_: dict[str, Any] | None = Field(
        None, alias="schema", description="Inline JSON Schema (else read from the row)."
    )
    field: str = Field("schema", description="Row field holding the schema when no inline schema is given.")

    @field_validator("schema_")
    @classmethod
    def _valid_schema(cls, value: dict | None) -> dict | None:
        if value is not None:
            _validator(value, "schema option")
        return value


def _validator(schema: dict, where: str):
    from jsonschema import SchemaError
    from jsonschema.validators import validator_for

    cls = validator_for(schema)
    try:
        cls.check_schema(schema)
    except SchemaError as err:
        raise ValueError(f"json_schema reward: the {where} is not a valid JSON Schema: {err.message}") from err
    return cls(schema)


def extract_json(text: str) -> str:
    blocks = _JSON_BLOCK.findall(text)
    return blocks[-1] if blocks else text.strip()


def _row_schema(row: dict, field: str) -> dict:
    schema = row_field(row, field, "json_schema")
    try:
        schema = json.loads(schema) if isinstance(schema, str) else schema
        if not isinstance(schema, dict):
            raise ValueError("not an object")
        return schema
    except ValueError as err:
        raise StropError(f"json_schema reward: row field '{field}' is not a JSON Schema object: {err}") from err


def build(options: JsonSchemaOptions, base_dir: Path | None):
    inline = _validator(options.schema_, "schema option") if options.schema_ is not None else None

    def score_one(prompt, completion: str, row: dict) -> float:
        if inline is not None:
            validator = inline
        else:
            try:
                validator = _validator(_row_schema(row, options.field), f"row field '{options.field}'")
            except ValueError as err:
                raise StropError(str(err)) from err
        document = json.loads(extract_json(completion))
        return float(validator.is_valid(document))

    return per_completion(score_one)


REWARD = RewardType(JsonSchemaOptions, build)
