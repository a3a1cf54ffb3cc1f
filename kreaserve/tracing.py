"""W3C trace context: a task keeps its create request's `traceparent` and its callback
continues that trace; OpenTelemetry spans are exported only when the operator asks.

Without OpenTelemetry the header is checked against the W3C format and passed on with a
new parent id (the callback is a new span of the same trace), which needs no library.
With `KREASERVE_TRACING=otlp` (or `console`) and the `kreaserve[otel]` extra installed,
this sets the global tracer provider: FastAPI's own telemetry then makes each HTTP request
a span (a child of its `traceparent`), and each callback attempt is a span here; the SDK
exports them (configured by the standard `OTEL_*` variables: `OTEL_EXPORTER_OTLP_ENDPOINT`,
...).
"""

from __future__ import annotations

import re
import secrets
import sys
from contextlib import AbstractContextManager, nullcontext
from typing import Any

_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")

#: The OpenTelemetry tracer once `setup` turned tracing on; None: tracing is off.
_tracer: Any = None


class TracingUnavailable(RuntimeError):
    """Tracing was asked for but the optional extra is not installed."""


def setup(mode: str, service_name: str = "kreaserve") -> None:
    """Turn on span export (`otlp` or `console`); `off` leaves tracing off."""
    global _tracer
    if mode == "off":
        _tracer = None
        return
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            ConsoleSpanExporter,
            SimpleSpanProcessor,
        )
    except ImportError as exc:
        raise TracingUnavailable(
            f"KREASERVE_TRACING={mode} needs OpenTelemetry: pip install 'kreaserve[otel]'"
        ) from exc
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    if mode == "console":
        # One JSON object per line on stderr, beside the logs.
        provider.add_span_processor(
            SimpleSpanProcessor(
                ConsoleSpanExporter(
                    out=sys.stderr, formatter=lambda span: span.to_json(indent=None) + "\n"
                )
            )
        )
    else:
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError as exc:
            raise TracingUnavailable(
                "KREASERVE_TRACING=otlp needs the OTLP exporter: pip install 'kreaserve[otel]'"
            ) from exc
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _tracer = trace.get_tracer("kreaserve")


def enabled() -> bool:
    return _tracer is not None


def valid(header: str | None) -> str | None:
    """The header if it is a W3C traceparent (version not ff, ids not all zero), else None."""
    if not header:
        return None
    header = header.strip().lower()
    found = _TRACEPARENT.match(header)
    if (
        not found
        or found.group(1) == "ff"
        or set(found.group(2)) == {"0"}
        or set(found.group(3)) == {"0"}
    ):
        return None
    if found.group(1) == "00" and len(header) != 55:
        return None
    return header[:55]


def incoming(header: str | None) -> str | None:
    """What a new task keeps: the current span's context when tracing is on, else the
    create request's own valid header."""
    if _tracer is not None:
        current = _current_traceparent()
        if current:
            return current
    return valid(header)


def child_of(traceparent: str) -> str:
    """A traceparent for a new span in the same trace (the callback request)."""
    _version, trace_id, _parent, flags = traceparent.split("-")[:4]
    return f"00-{trace_id}-{secrets.token_hex(8)}-{flags}"


def span(
    name: str,
    traceparent: str | None,
    kind: str = "server",
    attributes: dict[str, Any] | None = None,
) -> AbstractContextManager[Any]:
    """A span, child of `traceparent`, when tracing is on; otherwise nothing."""
    if _tracer is None:
        return nullcontext()
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    parent = TraceContextTextMapPropagator().extract(
        {"traceparent": traceparent} if traceparent else {}
    )
    return _tracer.start_as_current_span(
        name,
        context=parent,
        kind=getattr(trace.SpanKind, kind.upper()),
        attributes=attributes or {},
    )


def _current_traceparent() -> str | None:
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)
    return carrier.get("traceparent")


def outgoing(traceparent: str) -> str:
    """The header a callback sends: the current span's (tracing on) or a new child."""
    if _tracer is not None:
        current = _current_traceparent()
        if current:
            return current
    return child_of(traceparent)
