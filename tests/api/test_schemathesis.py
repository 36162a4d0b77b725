"""Schemathesis against the app's own /openapi.json: a new route is fuzzed the day it lands."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.api.conftest import LiveServer, ServerFactory

# Pulls reach the network; everything else is fuzzed.
EXCLUDED = ("/api/pull", "/v1/models/pull")


@pytest.fixture(scope="module")
def live(module_server_factory: ServerFactory) -> Iterator[LiveServer]:
    yield module_server_factory()


def test_every_operation_of_the_schema_survives_generated_requests(live: LiveServer) -> None:
    schema = schemathesis.openapi.from_url(f"{live.url}/openapi.json")
    operations: list[Any] = []
    for result in schema.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]  # an Err: the schema is invalid
        if operation.path not in EXCLUDED:
            operations.append(operation)
    assert len(operations) > 20  # every API's routes are in the schema
    failures: list[str] = []
    for operation in operations:
        strategy = operation.as_strategy()

        @settings(
            max_examples=8,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=strategy)
        def run(case: Any) -> None:
            response = case.call(base_url=live.url, timeout=30)
            # 501 is the documented answer of the routes Ollama has and Hoshikage does not.
            if response.status_code >= 500 and response.status_code != 501:
                failures.append(
                    f"{case.method} {case.path}: {response.status_code} {response.text[:200]}"
                )

        run()
    assert not failures, "\n".join(failures)
    assert httpx.get(live.url + "/health", timeout=10).status_code == 200
