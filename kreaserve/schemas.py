"""Request validation and response bodies, exactly the shapes of the contract (docs/api.md).

Validation is a strict pydantic model (no coercion: "7" is not a seed, 1 is not a
boolean); each pydantic error becomes one contract error naming the field in `param`.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from kreaserve import contract, images
from kreaserve.outbound import ssrf
from kreaserve.tokens import count_if_over

#: The longest token of the Qwen vocabulary, in bytes (so also in characters).
_MAX_TOKEN_CHARS = 128

_TYPE_NAMES = {
    "string_type": "a string",
    "int_type": "an integer",
    "int_from_float": "an integer",
    "bool_type": "a boolean",
}


class RequestError(Exception):
    """One invalid field: the contract's 400 with `param`."""

    def __init__(self, code: str, message: str, param: str | None) -> None:
        super().__init__(message)
        self.code, self.message, self.param = code, message, param


def _clean_text(value: str, field: str) -> str:
    """Reject text a database cannot store (NUL, lone surrogates) instead of failing later."""
    if "\x00" in value:
        raise PydanticCustomError(f"invalid_{field}", f"{field} must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise PydanticCustomError(
            f"invalid_{field}", f"{field} must be valid Unicode text (no lone surrogates)"
        ) from None
    return value


class CreateTaskRequest(BaseModel):
    """The body of POST /v1/images/generations."""

    model_config = ConfigDict(strict=True, extra="ignore")

    model: str
    prompt: str
    size: str | None = None
    quality: str | None = None
    seed: int | None = None
    nsfw_check: bool | None = None
    callback_url: str | None = None
    #: kreaserve's own (the hosted API ignores unknown fields, so clients stay compatible).
    output_format: str | None = None
    output_quality: int | None = None

    @field_validator("model")
    @classmethod
    def _model(cls, value: str) -> str:
        if value not in contract.MODELS:
            raise PydanticCustomError(
                "invalid_model", f"model must be one of {', '.join(contract.MODELS)}"
            )
        return value

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, value: str) -> str:
        _clean_text(value, "prompt")
        if not value.strip():
            raise PydanticCustomError("invalid_prompt", "prompt must not be blank")
        # No Qwen token spans more than 128 bytes, so a longer text is surely too long:
        # refuse it without running BPE over an attacker-sized string. One of at most 640
        # bytes is within the limit without a count (and without building the encoding).
        too_long = len(value) > _MAX_TOKEN_CHARS * contract.MAX_PROMPT_TOKENS
        tokens = None if too_long else count_if_over(value, contract.MAX_PROMPT_TOKENS)
        if too_long or tokens is not None:
            shown = f"{tokens} tokens" if tokens is not None else f"{len(value)} characters"
            raise PydanticCustomError(
                "prompt_too_long",
                f"prompt is {shown}; at most {contract.MAX_PROMPT_TOKENS} tokens are allowed",
            )
        return value

    @field_validator("size")
    @classmethod
    def _size(cls, value: str | None) -> str | None:
        if value is not None and value not in contract.SIZES:
            raise PydanticCustomError(
                "invalid_size", f"size must be one of {', '.join(contract.SIZES)}"
            )
        return value

    @field_validator("quality")
    @classmethod
    def _quality(cls, value: str | None) -> str | None:
        if value is not None and value not in contract.QUALITIES:
            raise PydanticCustomError(
                "invalid_quality", f"quality must be one of {', '.join(contract.QUALITIES)}"
            )
        return value

    @field_validator("seed")
    @classmethod
    def _seed(cls, value: int | None) -> int | None:
        if value is not None and not 0 <= value <= contract.SEED_MAX:
            raise PydanticCustomError(
                "invalid_seed", f"seed must be an integer from 0 to {contract.SEED_MAX}"
            )
        return value

    @field_validator("output_format")
    @classmethod
    def _output_format(cls, value: str | None) -> str | None:
        if value is not None and value not in images.FORMATS:
            raise PydanticCustomError(
                "invalid_output_format", f"output_format must be one of {', '.join(images.FORMATS)}"
            )
        return value

    @field_validator("output_quality")
    @classmethod
    def _output_quality(cls, value: int | None) -> int | None:
        if value is not None and not images.QUALITY_MIN <= value <= images.QUALITY_MAX:
            raise PydanticCustomError(
                "invalid_output_quality",
                f"output_quality must be an integer from {images.QUALITY_MIN} to "
                f"{images.QUALITY_MAX}",
            )
        return value

    @field_validator("callback_url")
    @classmethod
    def _callback_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        """https, at most 2048 characters, no credentials, no internal address in any
        spelling (delivery checks again what the host resolves to)."""
        if value is None:
            return None
        _clean_text(value, "callback_url")
        allow = (info.context or {}).get("allow_hosts", frozenset())
        try:
            return ssrf.check_url(value, allow)
        except ssrf.UnsafeURLError as exc:
            raise PydanticCustomError(
                "invalid_callback_url", "{reason}", {"reason": str(exc)}
            ) from None


def parse_create_request(
    payload: Any, allow_hosts: frozenset[str] = frozenset()
) -> CreateTaskRequest:
    """Validate a create body; `allow_hosts`: callback hosts exempt from the
    internal-address rule (tests only)."""
    return parse_body(CreateTaskRequest, payload, {"allow_hosts": allow_hosts})


M = TypeVar("M", bound=BaseModel)


def parse_body(model: type[M], payload: Any, context: dict[str, Any] | None = None) -> M:
    """Validate a decoded JSON body; raises RequestError for the first bad field."""
    if not isinstance(payload, dict):
        raise RequestError("invalid_json", "The request body must be a JSON object.", None)
    try:
        return model.model_validate(payload, context=context)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = str(first["loc"][0]) if first["loc"] else None
        kind = first["type"]
        if kind == "missing":
            raise RequestError(
                "missing_required_parameter", f"{param} is required", param
            ) from None
        if kind in _TYPE_NAMES:
            raise RequestError(
                f"invalid_{param}", f"{param} must be {_TYPE_NAMES[kind]}", param
            ) from None
        if kind.startswith("invalid_") or kind == "prompt_too_long":
            raise RequestError(kind, first["msg"], param) from None
        raise RequestError(f"invalid_{param}", f"{param}: {first['msg']}", param) from None


# --- operator bodies (admin API) ----------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


#: The largest limit an operator may set: it fits the table's 32-bit columns and, as a
#: credit amount, its integer units.
LIMIT_MAX = 1_000_000_000


def _positive_or_none(value: int | float | None, field: str) -> int | float | None:
    if value is not None and not 0 < value <= LIMIT_MAX:  # also refuses NaN
        raise PydanticCustomError(
            f"invalid_{field}", f"{field} must be positive, at most {LIMIT_MAX}, or null"
        )
    return value


class AccountLimits(_Strict):
    """Group and limits of an account; null clears a limit (the server default applies)."""

    user_group: str | None = None
    requests_per_minute: int | None = None
    max_tasks_in_flight: int | None = None
    daily_spend_cap: float | int | None = None

    @field_validator("user_group")
    @classmethod
    def _group(cls, value: str | None) -> str | None:
        if value is not None and (not 0 < len(value.strip()) <= 64 or "\x00" in value):
            raise PydanticCustomError("invalid_user_group", "user_group must be 1 to 64 characters")
        return value.strip() if value else value

    @field_validator("requests_per_minute", "max_tasks_in_flight", "daily_spend_cap")
    @classmethod
    def _positive(cls, value: int | float | None, info: ValidationInfo) -> int | float | None:
        return _positive_or_none(value, str(info.field_name))


class AccountCreate(AccountLimits):
    name: str
    credits: float | int = 0

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not value.strip() or len(value) > 200 or "\x00" in value:
            raise PydanticCustomError("invalid_name", "name must be 1 to 200 characters")
        return value.strip()

    @field_validator("credits")
    @classmethod
    def _credits(cls, value: float) -> float:
        if not 0 <= value <= 1e9:
            raise PydanticCustomError("invalid_credits", "credits must be from 0 to 1e9")
        return value


class CreditsChange(_Strict):
    amount: float | int
    kind: str = "grant"
    note: str | None = None

    @field_validator("amount")
    @classmethod
    def _amount(cls, value: float) -> float:
        if value == 0 or abs(value) > 1e9 or value != value:
            raise PydanticCustomError("invalid_amount", "amount must be non-zero, at most 1e9")
        return value

    @field_validator("kind")
    @classmethod
    def _kind(cls, value: str) -> str:
        if value not in ("grant", "adjust"):
            raise PydanticCustomError("invalid_kind", "kind must be grant or adjust")
        return value


class KeyCreate(_Strict):
    name: str

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not value.strip() or len(value) > 100 or "\x00" in value:
            raise PydanticCustomError("invalid_name", "name must be 1 to 100 characters")
        return value.strip()


# --- response bodies ---------------------------------------------------------------------


def usage(price_credits: float, user_group: str) -> dict[str, Any]:
    return {
        "billing_rule": contract.BILLING_RULE,
        "credits_reserved": price_credits,
        "user_group": user_group,
    }


def task_body(
    *,
    task_id: str,
    created: int,
    model: str,
    status: str,
    progress: int,
    can_cancel: bool,
    estimated_time: int | None,
    price_credits: float,
    user_group: str,
    seed: int,
    results: list[str] | None = None,
    error: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The task object of the contract (create and query share it; extras are additive)."""
    task_info: dict[str, Any] = {"can_cancel": can_cancel}
    if estimated_time is not None:
        task_info["estimated_time"] = estimated_time
    body: dict[str, Any] = {
        "created": created,
        "id": task_id,
        "model": model,
        "object": contract.TASK_OBJECT,
        "progress": progress,
        "status": status,
        "task_info": task_info,
        "type": contract.TASK_TYPE,
        "usage": usage(price_credits, user_group),
        "seed": seed,
    }
    if results is not None:
        body["results"] = results
    if error is not None:
        body["error"] = error
    return body
