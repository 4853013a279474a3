"""How a structured answer is asked for: the endpoint's mode and the schema it is sent.

Three modes, chosen per agent (``SCRIBE_STRUCTURED_OUTPUT``, ``SCRIBE_<AGENT>__STRUCTURED_
OUTPUT``):

* ``json_schema`` — ``response_format={"type": "json_schema", ...}``: the endpoint
  constrains decoding to the schema (llama.cpp turns it into a grammar; OpenAI, vLLM and
  Ollama honour it too). Even a 135M-parameter model then answers schema-valid JSON, which
  prompting alone never got from it.
* ``json_object`` — ``response_format={"type": "json_object"}``: any JSON object; the
  schema is only in the prompt (DeepSeek's API offers no more).
* ``prompt`` — no ``response_format``: the schema in the prompt, for endpoints that know
  neither.

``auto`` picks ``json_object`` for DeepSeek's API and ``json_schema`` elsewhere. The
gateway steps down a mode (and says so once in the log) when an endpoint refuses one.

The schema sent for decoding is the pydantic schema of the answer, self-contained (no
``$ref``), closed (``additionalProperties: false``, every property required, no
defaults) and narrowed per call by :class:`Constraints` (e.g. exactly five outline
entries, ``pov`` one of the living characters), so a constrained decoder cannot produce an
answer that the domain checks would reject. Validation is unchanged: the same pydantic
model still validates every answer.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, Literal, get_args

from pydantic import BaseModel

StructuredMode = Literal["json_schema", "json_object", "prompt"]
StructuredSetting = Literal["auto", "json_schema", "json_object", "prompt"]
STRUCTURED_MODES: tuple[StructuredMode, ...] = get_args(StructuredMode)

_FALLBACK: dict[StructuredMode, StructuredMode | None] = {
    "json_schema": "json_object",
    "json_object": "prompt",
    "prompt": None,
}

Constraints = Mapping[str, Mapping[str, Any]]
"""Per-call narrowing of the answer's schema: a path to a property mapped to the JSON
schema keywords merged into it. A path is property names joined by dots, ``[]`` stepping
into a list's items: ``{"outline": {"minItems": 3, "maxItems": 3}, "beats[].characters[]":
{"enum": ["Mara", "Tobin"]}}``."""


def resolve_mode(setting: StructuredSetting, base_url: str | None) -> StructuredMode:
    """The mode ``auto`` stands for at ``base_url``; an explicit mode is kept."""
    if setting != "auto":
        return setting
    if base_url and "deepseek.com" in base_url.lower():
        return "json_object"
    return "json_schema"


def fallback_mode(mode: StructuredMode) -> StructuredMode | None:
    """The next weaker mode to try when an endpoint refuses ``mode`` (``None``: none)."""
    return _FALLBACK[mode]


def decoding_schema(
    output: type[BaseModel], constraints: Constraints | None = None
) -> dict[str, Any]:
    """The closed, self-contained JSON schema of ``output``, narrowed by ``constraints``."""
    raw = output.model_json_schema()
    defs: dict[str, Any] = raw.pop("$defs", {})
    schema: dict[str, Any] = _close(_inline(raw, defs))
    for path, keywords in (constraints or {}).items():
        target = _at(schema, path)
        if target is None:
            raise KeyError(f"schema of {output.__name__} has no property {path!r}")
        target.update(copy.deepcopy(dict(keywords)))
    return schema


def is_strict_compatible(schema: Mapping[str, Any]) -> bool:
    """Whether OpenAI's ``strict`` mode accepts the schema: no free-form maps."""
    if schema.get("type") == "object" and not schema.get("properties"):
        return False
    for value in schema.values():
        children = value if isinstance(value, list) else [value]
        for child in children:
            if isinstance(child, Mapping) and not is_strict_compatible(child):
                return False
    if isinstance(schema.get("properties"), Mapping):
        return all(is_strict_compatible(p) for p in schema["properties"].values())
    return True


def response_format(
    mode: StructuredMode, name: str, schema: dict[str, Any]
) -> dict[str, Any] | None:
    """The ``response_format`` request field of ``mode`` (``None`` for ``prompt``)."""
    if mode == "json_schema":
        return {
            "type": "json_schema",
            "json_schema": {
                "name": name,
                "strict": is_strict_compatible(schema),
                "schema": schema,
            },
        }
    if mode == "json_object":
        return {"type": "json_object"}
    return None


# --- schema surgery ------------------------------------------------------------------

_DROPPED = ("title", "default", "description")
"""Keywords that only cost prompt tokens (and ``default`` is not allowed in strict mode)."""


def _inline(node: Any, defs: Mapping[str, Any]) -> Any:
    if isinstance(node, list):
        return [_inline(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        return _inline(copy.deepcopy(defs[ref.removeprefix("#/$defs/")]), defs)
    inlined: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED and not isinstance(value, dict):
            continue
        if key == "properties":
            inlined[key] = {name: _inline(sub, defs) for name, sub in value.items()}
        else:
            inlined[key] = _inline(value, defs)
    return inlined


def _close(node: Any) -> Any:
    """Every object closed and all of its properties required; optional values
    (``anyOf [X, null]``) stay nullable so a model can still leave them out."""
    if isinstance(node, list):
        return [_close(item) for item in node]
    if not isinstance(node, dict):
        return node
    closed = {key: _close(value) for key, value in node.items()}
    if closed.get("type") == "object" and isinstance(closed.get("properties"), dict):
        closed["required"] = list(closed["properties"])
        closed["additionalProperties"] = False
    return closed


def _at(schema: dict[str, Any], path: str) -> dict[str, Any] | None:
    node: dict[str, Any] | None = schema
    for part in path.split("."):
        if node is None:
            return None
        name, items = part, 0
        while name.endswith("[]"):
            name, items = name[:-2], items + 1
        if name:
            node = _property(node, name)
        for _ in range(items):
            node = _items(node) if node is not None else None
    return node


def _property(node: dict[str, Any], name: str) -> dict[str, Any] | None:
    found = (node.get("properties") or {}).get(name)
    return _non_null(found) if isinstance(found, dict) else None


def _items(node: dict[str, Any]) -> dict[str, Any] | None:
    found = node.get("items")
    return _non_null(found) if isinstance(found, dict) else None


def _non_null(node: dict[str, Any]) -> dict[str, Any]:
    """The non-null branch of an optional value (``anyOf: [X, {"type": "null"}]``)."""
    options = node.get("anyOf")
    if isinstance(options, list):
        real = [o for o in options if isinstance(o, dict) and o.get("type") != "null"]
        if len(real) == 1:
            return real[0]
    return node
