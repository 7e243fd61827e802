"""Domain errors carry their HTTP status and become RFC 9457 problem details."""

from __future__ import annotations

import logging
import re
from typing import Any

import msgspec
from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, NotAuthorizedException, PermissionDeniedException, ValidationException

log = logging.getLogger("aftersales")

PROBLEM_JSON = "application/problem+json"


class FieldError(msgspec.Struct, frozen=True):
    field: str
    reason: str


class DomainError(Exception):
    status_code = 400
    title = "Bad request"
    type_slug = "bad-request"

    def __init__(self, detail: str, *, errors: list[FieldError] | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors or []
        self.extra = extra


class InvalidInput(DomainError):
    status_code = 422
    title = "Invalid input"
    type_slug = "invalid-input"

    @classmethod
    def on(cls, field: str, reason: str) -> "InvalidInput":
        return cls(f"{field}: {reason}", errors=[FieldError(field, reason)])


class NotFound(DomainError):
    status_code = 404
    title = "Not found"
    type_slug = "not-found"


class Conflict(DomainError):
    status_code = 409
    title = "Conflict"
    type_slug = "conflict"


class ActionNotAllowed(Conflict):
    title = "Action not allowed in this status"
    type_slug = "action-not-allowed"


class StaleVersion(Conflict):
    title = "The ticket was changed by someone else"
    type_slug = "stale-version"


class IdempotencyMismatch(DomainError):
    status_code = 422
    title = "Idempotency-Key reused with a different request"
    type_slug = "idempotency-key-reused"


class Forbidden(DomainError):
    status_code = 403
    title = "Forbidden"
    type_slug = "forbidden"


def problem(status: int, title: str, detail: str, slug: str, errors: list[FieldError] | None = None, **extra: Any) -> Response[Any]:
    body: dict[str, Any] = {
        "type": f"https://aftersales.dev/problems/{slug}",
        "title": title,
        "status": status,
        "detail": detail,
    }
    if errors:
        body["errors"] = [{"field": e.field, "reason": e.reason} for e in errors]
    body.update(extra)
    return Response(content=body, status_code=status, media_type=PROBLEM_JSON)


def domain_error_handler(request: Request[Any, Any, Any], exc: DomainError) -> Response[Any]:
    return problem(exc.status_code, exc.title, exc.detail, exc.type_slug, exc.errors, **exc.extra)


# msgspec says e.g. "Expected `int`, got `str` - at `$.items[0].quantity`".
_AT_PATH = re.compile(r"^(?P<reason>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)


_MISSING = re.compile(r"missing required field `(?P<name>[^`]+)`")
# Query parameters whose Python name differs from the name in the URL.
QUERY_ALIASES = {"requested_from": "from", "requested_to": "to", "start": "from", "end": "to"}


def _field_errors_from_validation(exc: ValidationException) -> list[FieldError]:
    errors: list[FieldError] = []
    extra = exc.extra if isinstance(exc.extra, list) else []
    for item in extra:
        if isinstance(item, dict):
            errors.append(_field_error(item))
    return errors or [FieldError(field="body", reason=exc.detail)]


def _field_error(item: dict[str, Any]) -> FieldError:
    """Name the field as the client wrote it: 'items[0].quantity', 'kind', or the query name 'from'."""
    message = str(item.get("message", ""))
    match = _AT_PATH.match(message)
    path = (match.group("path") or "").lstrip(".") if match else ""
    reason = match.group("reason") if match else message
    key = str(item.get("key") or "")
    source = getattr(item.get("source"), "value", item.get("source")) or ""
    missing = _MISSING.search(reason)
    if missing:
        path = f"{path}.{missing.group('name')}" if path else missing.group("name")
    if source == "query" or (key and key != "data" and not path):
        return FieldError(field=QUERY_ALIASES.get(key, key) or "query", reason=reason)
    field = path or (key if key not in ("", "data") else "body")
    if field.startswith("body."):
        field = field[len("body."):]
    return FieldError(field=field, reason=reason)


def validation_error_handler(request: Request[Any, Any, Any], exc: ValidationException) -> Response[Any]:
    errors = _field_errors_from_validation(exc)
    detail = "; ".join(f"{e.field}: {e.reason}" for e in errors)
    return problem(400, "Malformed request", detail, "malformed-request", errors)


def http_error_handler(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    slug = {401: "unauthorized", 403: "forbidden", 404: "not-found", 405: "method-not-allowed", 413: "body-too-large"}
    return problem(exc.status_code, exc.__class__.__name__, exc.detail, slug.get(exc.status_code, "http-error"))


def internal_error_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return problem(500, "Internal error", "an unexpected error occurred; it has been logged", "internal-error")


EXCEPTION_HANDLERS: dict[Any, Any] = {
    DomainError: domain_error_handler,
    ValidationException: validation_error_handler,
    NotAuthorizedException: http_error_handler,
    PermissionDeniedException: http_error_handler,
    HTTPException: http_error_handler,
    500: internal_error_handler,
}

__all__ = [
    "ActionNotAllowed",
    "Conflict",
    "DomainError",
    "FieldError",
    "Forbidden",
    "IdempotencyMismatch",
    "InvalidInput",
    "NotFound",
    "StaleVersion",
    "EXCEPTION_HANDLERS",
    "MediaType",
]
