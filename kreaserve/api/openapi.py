"""The OpenAPI document, completed: request bodies, bearer auth, the error envelope.

The routes read their JSON bodies themselves (kreaserve.schemas validates them, so that
unknown fields are ignored and a wrong type is a 400 naming `param`, as the contract
says), so FastAPI cannot see a body model, and it documents a 422 validation error the
API never sends. This module writes what the code does into the document FastAPI
generates: the body schemas (from the contract's constants, the same ones the validators
use), a bearer scheme per API surface, the error envelope on every error answer, and the
task object.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from kreaserve import contract

REF = "#/components/schemas/"


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


#: Text the validators accept: not blank, no NUL.
_TEXT = r"^[^\x00]*[^\x00\s][^\x00]*$"

#: Any JSON value without a NUL character in its text (the body parser refuses NUL
#: anywhere): what an ignored field may hold.
JSON_VALUE = {
    "anyOf": [
        {"type": ["null", "boolean", "number"]},
        {"type": "string", "pattern": "^[^\x00]*$"},
        {"type": "array", "items": {"$ref": REF + "JSONValue"}},
        {
            "type": "object",
            "propertyNames": {"pattern": "^[^\x00]*$"},
            "additionalProperties": {"$ref": REF + "JSONValue"},
        },
    ]
}
_IGNORED = {
    "propertyNames": {"pattern": "^[^\x00]*$"},
    "additionalProperties": {"$ref": REF + "JSONValue"},
}

CREATE_TASK = {
    "type": "object",
    "required": ["model", "prompt"],
    "description": "Fields not listed are ignored.",
    **_IGNORED,
    "properties": {
        "model": {"type": "string", "enum": list(contract.MODELS)},
        "prompt": {
            "type": "string",
            "minLength": 1,
            "pattern": _TEXT,
            "description": f"At most {contract.MAX_PROMPT_TOKENS} tokens (Qwen "
            "tokenizer); checked by content moderation.",
        },
        "size": _nullable(
            {
                "type": "string",
                "enum": list(contract.SIZES),
                "default": "1:1",
                "description": "Aspect ratio.",
            }
        ),
        "quality": _nullable({"type": "string", "enum": list(contract.QUALITIES), "default": "1K"}),
        "seed": _nullable(
            {
                "type": "integer",
                "minimum": 0,
                "maximum": contract.SEED_MAX,
                "description": "0 or absent: the server picks one.",
            }
        ),
        "nsfw_check": _nullable(
            {
                "type": "boolean",
                "default": False,
                "description": "Stricter prompt check, and the image is "
                "classified before it is stored.",
            }
        ),
        "callback_url": _nullable(
            {
                "type": "string",
                "format": "uri",
                "maxLength": contract.CALLBACK_URL_MAX,
                "pattern": "^https://",
                "description": "https URL of a public host; the task "
                "object is POSTed to it when the task ends, signed (Standard Webhooks).",
            }
        ),
    },
    "example": {
        "model": "krea-2-turbo",
        "prompt": "a red fox in snow",
        "size": "16:9",
        "quality": "1K",
        "seed": 7,
    },
}
_LIMIT = {"type": "number", "exclusiveMinimum": 0, "maximum": 1_000_000_000}
ACCOUNT_LIMITS: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "description": "null clears a limit (the server default applies).",
    "properties": {
        "user_group": _nullable(
            {"type": "string", "minLength": 1, "maxLength": 64, "pattern": _TEXT}
        ),
        "requests_per_minute": _nullable({**_LIMIT, "type": "integer"}),
        "max_tasks_in_flight": _nullable({**_LIMIT, "type": "integer"}),
        "daily_spend_cap": _nullable(_LIMIT),
    },
    "example": {"requests_per_minute": 120, "daily_spend_cap": 50},
}
ACCOUNT_CREATE = {
    **ACCOUNT_LIMITS,
    "required": ["name"],
    "description": "A new account.",
    "properties": {
        **ACCOUNT_LIMITS["properties"],
        "name": {"type": "string", "minLength": 1, "maxLength": 200, "pattern": _TEXT},
        "credits": {"type": "number", "minimum": 0, "maximum": 1e9, "default": 0},
    },
    "example": {"name": "Acme", "credits": 100, "user_group": "pro"},
}
CREDITS_CHANGE = {
    "type": "object",
    "additionalProperties": False,
    "required": ["amount"],
    "anyOf": [
        {"required": ["kind"], "properties": {"kind": {"const": "adjust"}}},
        {"properties": {"amount": {"exclusiveMinimum": 0}}},
    ],
    "properties": {
        "amount": {
            "type": "number",
            "minimum": -1e9,
            "maximum": 1e9,
            "not": {"const": 0},
            "description": "Positive for a grant; either sign for an adjustment.",
        },
        "kind": {"type": "string", "enum": ["grant", "adjust"], "default": "grant"},
        "note": _nullable({"type": "string"}),
    },
    "example": {"amount": 25, "note": "monthly top-up"},
}
KEY_CREATE = {
    "type": "object",
    "required": ["name"],
    **_IGNORED,
    "properties": {"name": {"type": "string", "minLength": 1, "maxLength": 100, "pattern": _TEXT}},
    "example": {"name": "ci"},
}
ADMIN_KEY_CREATE = {**KEY_CREATE, "additionalProperties": False}
ADMIN_KEY_CREATE.pop("propertyNames")
ERROR = {
    "type": "object",
    "required": ["error"],
    "description": "Every error answer of the API.",
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message", "type"],
            "properties": {
                "code": {"type": "string", "description": "Machine-readable, e.g. invalid_size."},
                "message": {"type": "string"},
                "type": {
                    "type": "string",
                    "enum": sorted(
                        {
                            *contract.ERROR_TYPES.values(),
                            "invalid_request_error",
                            "internal_server_error",
                        }
                    ),
                },
                "param": {"type": "string", "description": "The field at fault, if one is."},
            },
        }
    },
    "example": {
        "error": {
            "code": "invalid_size",
            "message": "size must be one of 1:1, ...",
            "type": "invalid_request_error",
            "param": "size",
        }
    },
}
TASK = {
    "type": "object",
    "required": [
        "created",
        "id",
        "model",
        "object",
        "progress",
        "status",
        "task_info",
        "type",
        "usage",
    ],
    "properties": {
        "id": {"type": "string", "pattern": contract.TASK_ID_RE.pattern},
        "created": {"type": "integer", "description": "Unix seconds."},
        "model": {"type": "string"},
        "object": {"type": "string", "enum": [contract.TASK_OBJECT]},
        "type": {"type": "string", "enum": [contract.TASK_TYPE]},
        "status": {
            "type": "string",
            "enum": [
                contract.PENDING,
                contract.PROCESSING,
                contract.COMPLETED,
                contract.FAILED,
                contract.CANCELLED,
            ],
        },
        "progress": {"type": "integer", "minimum": 0, "maximum": 100},
        "task_info": {
            "type": "object",
            "required": ["can_cancel"],
            "properties": {
                "can_cancel": {"type": "boolean"},
                "estimated_time": {"type": "integer", "description": "Seconds, while unfinished."},
            },
        },
        "usage": {
            "type": "object",
            "required": ["billing_rule", "credits_reserved", "user_group"],
            "properties": {
                "billing_rule": {"type": "string"},
                "credits_reserved": {"type": "number"},
                "user_group": {"type": "string"},
            },
        },
        "seed": {"type": "integer", "description": "The seed used (beyond the contract)."},
        "results": {
            "type": "array",
            "items": {"type": "string", "format": "uri"},
            "description": "Signed image URLs, once completed.",
        },
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "enum": sorted(contract.TASK_ERROR_CODES)},
                "message": {"type": "string"},
            },
        },
    },
}

#: (method, path) -> request body schema name.
BODIES = {
    ("post", "/v1/images/generations"): "CreateTaskRequest",
    ("post", "/v1/keys"): "KeyCreate",
    ("post", "/admin/v1/accounts"): "AccountCreate",
    ("patch", "/admin/v1/accounts/{account_id}"): "AccountLimits",
    ("post", "/admin/v1/accounts/{account_id}/credits"): "CreditsChange",
    ("post", "/admin/v1/accounts/{account_id}/keys"): "AdminKeyCreate",
}
#: Operations whose success answer is the task object.
TASK_ANSWERS = {
    ("post", "/v1/images/generations"),
    ("get", "/v1/tasks/{task_id}"),
    ("post", "/v1/tasks/{task_id}/cancel"),
}
#: The error answers worth naming; any other status is covered by `default`.
ERRORS = {
    "400": "Invalid request (the field is in `error.param`).",
    "401": "Missing or invalid credentials.",
    "402": "Not enough credits, or the daily spend cap.",
    "404": "No such object for this account.",
    "413": "Request body too large.",
    "429": "Rate limit (see `Retry-After`).",
    "503": "The database or the moderation is unavailable (see `Retry-After`).",
}


#: Path and query parameters as the routes check them.
PARAMETERS = {
    "task_id": {
        "type": "string",
        "pattern": "^" + contract.TASK_ID_PREFIX + "[ -~]*$",
        "maxLength": 64,
        "example": "task-unified-1764000000-a1b2c3d4",
    },
    "key_id": {"type": "string", "pattern": "^[0-9]{1,18}$"},
    "account_id": {"type": "string", "pattern": "^[0-9]{1,18}$"},
    "start": {
        "type": "string",
        "format": "date",
        "description": "UTC day, inclusive; "
        "default 30 days before `end`. At most 366 days from `start` to `end`.",
    },
    "end": {
        "type": "string",
        "format": "date",
        "description": "UTC day, inclusive; default today.",
    },
}


def complete(schema: dict[str, Any]) -> dict[str, Any]:
    """Write bodies, security and error answers into FastAPI's generated document."""
    components = schema.setdefault("components", {})
    components.setdefault("schemas", {}).update(
        {
            "CreateTaskRequest": CREATE_TASK,
            "AccountLimits": ACCOUNT_LIMITS,
            "AccountCreate": ACCOUNT_CREATE,
            "CreditsChange": CREDITS_CHANGE,
            "KeyCreate": KEY_CREATE,
            "AdminKeyCreate": ADMIN_KEY_CREATE,
            "Error": ERROR,
            "Task": TASK,
            "JSONValue": JSON_VALUE,
        }
    )
    for unused in ("HTTPValidationError", "ValidationError"):
        components["schemas"].pop(unused, None)
    components["securitySchemes"] = {
        "apiKey": {
            "type": "http",
            "scheme": "bearer",
            "description": "An API key (`ks_...`): `Authorization: Bearer <key>`.",
        },
        "adminToken": {
            "type": "http",
            "scheme": "bearer",
            "description": "The operator's KREASERVE_ADMIN_TOKEN.",
        },
    }
    error = {"application/json": {"schema": {"$ref": REF + "Error"}}}
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            for parameter in operation.get("parameters", []):
                if parameter["name"] in PARAMETERS:
                    parameter["schema"] = PARAMETERS[parameter["name"]]
            if path.startswith("/v1/"):
                operation["security"] = [{"apiKey": []}]
            elif path.startswith("/admin/"):
                operation["security"] = [{"adminToken": []}]
            name = BODIES.get((method, path))
            if name:
                body_schema = components["schemas"][name]
                operation["requestBody"] = {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {"$ref": REF + name},
                            "example": body_schema["example"],
                        }
                    },
                }
            if (method, path) in TASK_ANSWERS:
                responses["200"] = {
                    "description": "The task object.",
                    "content": {"application/json": {"schema": {"$ref": REF + "Task"}}},
                }
            for status, text in ERRORS.items():
                responses.setdefault(status, {"description": text, "content": error})
            responses["default"] = {"description": "Any other error.", "content": error}
    return schema


def install(app: FastAPI) -> None:
    """Serve the completed document at /openapi.json."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = complete(
                get_openapi(
                    title=app.title,
                    version=app.version,
                    routes=app.routes,
                    description="Self-hosted Krea 2 Turbo behind the krea-2-turbo asynchronous "
                    "task API. Errors always have the shape of the `Error` schema.",
                )
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
