"""The internal API's OpenAPI document, built from the pydantic models it validates with.

`docs/openapi.yaml` is this document written out (`make openapi`); a test
fails when the two differ, so the published spec never drifts from the code.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from flatnet.gateway.models import ChangeAccepted, ContainerAdded, ContainerEntry, ErrorBody, Health, OriginSnapshot, StreamReset

_MODELS: tuple[type[BaseModel], ...] = (ContainerAdded, ContainerEntry, ChangeAccepted, Health, ErrorBody, StreamReset, OriginSnapshot)


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _json(model_or_schema: type[BaseModel] | dict, description: str) -> dict[str, Any]:
    schema = _ref(model_or_schema) if isinstance(model_or_schema, type) else model_or_schema
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _schemas() -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    for model in _MODELS:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}", mode="validation")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    return schemas


def build_document() -> dict[str, Any]:
    """Return the OpenAPI 3.1 document of the gateway's internal API."""
    container_id = {
        "name": "container_id", "in": "path", "required": True,
        "schema": {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$"},
    }
    invalid = _json(ErrorBody, "invalid input: the body names the field, the value and the rule")
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "flatnet gateway internal API",
            "version": "1",
            "description": (
                "The container information sharing API between flatnet gateways, served on each host's "
                "Nebula address. See docs/api.md."
            ),
        },
        "paths": {
            "/api/containers": {
                "get": {
                    "operationId": "listContainers",
                    "summary": "Every container in this gateway's view, each with its remaining ttl",
                    "responses": {"200": _json({"type": "array", "items": _ref(ContainerEntry)}, "the view")},
                },
                "post": {
                    "operationId": "addContainer",
                    "summary": "Record that a container of this host got its address",
                    "requestBody": {"required": True, "content": {"application/json": {"schema": _ref(ContainerAdded)}}},
                    "responses": {
                        "201": _json(ChangeAccepted, "appended to this host's log"),
                        "200": _json(ChangeAccepted, "already recorded under this eventId"),
                        "400": invalid,
                        "403": _json(ErrorBody, "the container belongs to another host"),
                    },
                },
            },
            "/api/containers/{container_id}": {
                "delete": {
                    "operationId": "removeContainer",
                    "summary": "Record that a container of this host was removed",
                    "parameters": [
                        container_id,
                        {"name": "eventId", "in": "query", "required": False, "schema": {"type": "string", "format": "uuid"}},
                        {"name": "reason", "in": "query", "required": False, "schema": {"type": "string", "maxLength": 64}},
                        {"name": "ts", "in": "query", "required": False, "schema": {"type": "string"}},
                    ],
                    "responses": {
                        "200": _json(ChangeAccepted, "appended, or already recorded under this eventId"),
                        "400": invalid,
                        "403": _json(ErrorBody, "the container belongs to another host"),
                    },
                },
            },
            "/api/health": {
                "get": {
                    "operationId": "health",
                    "summary": "This gateway's identity, version vector, peers and name conflicts",
                    "responses": {"200": _json(Health, "the gateway serves")},
                },
            },
            "/api/snapshot": {
                "get": {
                    "operationId": "originSnapshot",
                    "summary": "This gateway's view of one origin, for a peer that cannot catch up from events",
                    "parameters": [
                        {"name": "origin", "in": "query", "required": True, "schema": {"type": "integer", "minimum": 1, "maximum": 254}},
                        {"name": "summary", "in": "query", "required": False, "schema": {"type": "string", "enum": ["0", "1"]}},
                    ],
                    "responses": {"200": _json(OriginSnapshot, "the origin's head, digest and, unless summary=1, its containers"), "400": invalid},
                },
            },
            "/api/events": {
                "get": {
                    "operationId": "streamEvents",
                    "summary": "An origin's events after a seq, then new ones as they come, as NDJSON",
                    "parameters": [
                        {"name": "origin", "in": "query", "required": True, "schema": {"type": "integer", "minimum": 1, "maximum": 254}},
                        {"name": "after", "in": "query", "required": True, "schema": {"type": "integer", "minimum": 0}},
                    ],
                    "responses": {
                        "200": {
                            "description": "a stream that stays open: one event record or heartbeat frame per line",
                            "content": {"application/x-ndjson": {"schema": {"type": "string"}}},
                        },
                        "400": invalid,
                        "409": _json(StreamReset, "after is beyond this gateway's head of the origin"),
                        "410": _json(ErrorBody, "the events after 'after' were compacted away: fetch /api/snapshot"),
                        "503": _json(ErrorBody, "the origin's log is stopped on this gateway"),
                    },
                },
            },
        },
        "components": {"schemas": _schemas()},
    }


def render_yaml() -> str:
    import yaml

    header = "# Generated by `make openapi` from flatnet/gateway/openapi.py; do not edit by hand.\n"
    return header + yaml.safe_dump(build_document(), sort_keys=False, allow_unicode=True, width=100)


if __name__ == "__main__":
    import sys

    sys.stdout.write(render_yaml())
