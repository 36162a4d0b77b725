"""Prometheus metrics of one app: its own CollectorRegistry, so two apps never share counters.

Requests are counted by a middleware (route template, not raw path, so the label set stays
small). Routes report finished generations with `observe_finish`; gauges (queue depth, loaded
models, in-flight requests) and the load/unload counts are read from the manager and the
service when Prometheus scrapes.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hoshikage.api.service import InferenceService
from hoshikage.engine import FinishEvent
from hoshikage.models.manager import ModelManager

__all__ = ["CONTENT_TYPE_LATEST", "Metrics", "MetricsMiddleware"]

# Seconds: from a cached prefix on a GPU (milliseconds) to a long prompt on a small CPU.
_TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# Seconds per generated token: 1000 tokens/s down to 1 token/s.
_TOKEN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.15, 0.3, 0.6, 1.0)
_REQUEST_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
UNKNOWN_MODEL_LABEL = "unknown"


class Metrics:
    """The app's metrics; `render()` is what GET /metrics returns."""

    def __init__(self, manager: ModelManager, service: InferenceService) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.requests = Counter(
            "hoshikage_http_requests",
            "HTTP requests by method, route template and status.",
            ["method", "route", "status"],
            registry=registry,
        )
        self.request_seconds = Histogram(
            "hoshikage_http_request_duration_seconds",
            "Time from request to the end of the response (whole stream included).",
            ["route"],
            buckets=_REQUEST_BUCKETS,
            registry=registry,
        )
        self.prompt_tokens = Counter(
            "hoshikage_prompt_tokens",
            "Prompt tokens of finished requests (embedding inputs included).",
            ["model"],
            registry=registry,
        )
        self.completion_tokens = Counter(
            "hoshikage_completion_tokens", "Generated tokens.", ["model"], registry=registry
        )
        self.cached_prompt_tokens = Counter(
            "hoshikage_cached_prompt_tokens",
            "Prompt tokens reused from the KV cache instead of evaluated.",
            ["model"],
            registry=registry,
        )
        self.generations = Counter(
            "hoshikage_generations",
            "Finished generations by finish reason (stop, length, cancelled).",
            ["model", "finish_reason"],
            registry=registry,
        )
        self.time_to_first_token = Histogram(
            "hoshikage_time_to_first_token_seconds",
            "From submission (queue wait included) to the first generated token.",
            ["model"],
            buckets=_TTFT_BUCKETS,
            registry=registry,
        )
        self.time_per_output_token = Histogram(
            "hoshikage_time_per_output_token_seconds",
            "Mean time per generated token after the first, one observation per request.",
            ["model"],
            buckets=_TOKEN_BUCKETS,
            registry=registry,
        )
        self.queue_wait = Histogram(
            "hoshikage_queue_wait_seconds",
            "Time a request waited for the engine before its prompt was evaluated.",
            ["model"],
            buckets=_TTFT_BUCKETS,
            registry=registry,
        )
        registry.register(_LiveCollector(manager, service))
        ProcessCollector(namespace="hoshikage", registry=registry)

    def observe_finish(self, finish: FinishEvent, model: str | None = None) -> None:
        """Record a finished generation (any front end calls this once per generation)."""
        label = model or UNKNOWN_MODEL_LABEL
        usage, timings = finish.usage, finish.timings
        self.prompt_tokens.labels(label).inc(usage.prompt_tokens)
        self.completion_tokens.labels(label).inc(usage.completion_tokens)
        self.cached_prompt_tokens.labels(label).inc(usage.cached_prompt_tokens)
        self.generations.labels(label, finish.finish_reason).inc()
        self.queue_wait.labels(label).observe(timings.queued_s)
        if usage.completion_tokens > 0:
            self.time_to_first_token.labels(label).observe(timings.time_to_first_token_s)
        if timings.decode_tokens > 0 and timings.decode_s > 0:
            self.time_per_output_token.labels(label).observe(
                timings.decode_s / timings.decode_tokens
            )

    def observe_embedding(self, model: str, prompt_tokens: int) -> None:
        self.prompt_tokens.labels(model or UNKNOWN_MODEL_LABEL).inc(prompt_tokens)

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.request_seconds.labels(route).observe(seconds)

    def render(self) -> bytes:
        return bytes(generate_latest(self.registry))


class _LiveCollector:
    """Values read at scrape time from the manager and the service."""

    def __init__(self, manager: ModelManager, service: InferenceService) -> None:
        self._manager = manager
        self._service = service

    def describe(self) -> Iterable[Metric]:
        return list(self._families(with_samples=False))

    def collect(self) -> Iterable[Metric]:
        return list(self._families(with_samples=True))

    def _families(self, *, with_samples: bool) -> Iterator[Metric]:
        loaded = self._manager.status() if with_samples else []
        queue = GaugeMetricFamily(
            "hoshikage_queue_depth",
            "Requests waiting for a model beyond the one it is serving.",
            labels=["model"],
        )
        memory = GaugeMetricFamily(
            "hoshikage_model_memory_estimated_bytes",
            "Estimated memory of each loaded model (weights + KV cache).",
            labels=["model"],
        )
        for model in loaded:
            queue.add_metric([model.name], model.queued)
            memory.add_metric([model.name], model.estimated_bytes)
        yield queue
        yield memory
        yield _gauge(
            "hoshikage_loaded_models", "Models loaded now.", len(loaded), with_samples=with_samples
        )
        yield _gauge(
            "hoshikage_requests_in_flight",
            "Generation and embedding requests being served or waiting.",
            self._service.in_flight,
            with_samples=with_samples,
        )
        loads = CounterMetricFamily("hoshikage_model_loads", "Models loaded since start.")
        unloads = CounterMetricFamily("hoshikage_model_unloads", "Models unloaded since start.")
        if with_samples:
            loads.add_metric([], self._manager.loads)
            unloads.add_metric([], self._manager.unloads)
        yield loads
        yield unloads


def _gauge(name: str, documentation: str, value: float, *, with_samples: bool) -> Metric:
    family = GaugeMetricFamily(name, documentation)
    if with_samples:
        family.add_metric([], value)
    return family


class MetricsMiddleware:
    """Counts every HTTP request by route template and final status (401s and 404s too)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what an exception that escapes every handler becomes

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            self.metrics.observe_request(
                scope["method"], _route_of(scope), status, time.perf_counter() - started
            )


def _route_of(scope: Scope) -> str:
    """The matched route's template ("/v1/sessions/{ref}"), never the raw path."""
    route: Any = scope.get("route")
    if route is None:
        # Not routed (refused by a guard before routing): find the route it was meant for.
        app: Any = scope.get("app")
        for candidate in getattr(getattr(app, "router", None), "routes", ()):
            match, _ = candidate.matches(scope)
            if match == Match.FULL:
                route = candidate
                break
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"
