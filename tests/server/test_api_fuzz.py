"""Schemathesis against the live server: the OpenAPI document's promises, checked by generated requests.

The ``st`` command (a separate process: it sends blocking requests while this process serves
them) reads the document the server serves, generates requests from it and checks every
answer: ``not_a_server_error`` (no 5xx, whatever is sent), ``response_schema_conformance``
(every answer matches its documented schema) and ``positive_data_acceptance`` (a request the
document calls valid is never refused with 400: only 2xx, or 404 for ids that do not exist,
409/422 for a command the device's capabilities refuse). Positive and negative data, the
coverage phase's boundary values and the fuzzing phase, a fixed number of examples per
operation, deterministic, under a time budget. Requests carry a real RS256 admin token
(``/internal/v1/status`` the server's internal token).

Excluded: the panel's token (only Home Assistant's ingress proxy gets one: tests/browser) and
the two streaming operations. ``GET /api/v1/ws`` is an upgrade to a WebSocket
(its messages are docs/asyncapi.yaml's, fuzzed in test_ws_fuzz.py) and ``GET /api/v1/events``
an endless text/event-stream that a request-response fuzzer would wait on until its timeout;
both authenticate in-band and are covered by test_hostile_tokens.py, test_realtime.py and
test_sse.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from tests.server.api_stack import ADMIN, ServerStack

pytestmark = pytest.mark.asyncio(loop_scope="module")

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES_PER_OPERATION = 10
TIME_BUDGET = 30  # seconds; the run takes about 20 on a 2-core machine
STREAMS = ("/api/v1/ws", "/api/v1/events")
INGRESS_ONLY = ("/api/v1/ingress/token",)
"""403 to anyone but the Supervisor's ingress proxy (172.30.32.2): tests/browser/test_ingress.py."""


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ServerStack]:
    server = ServerStack(
        tmp_path_factory.mktemp("fuzz"),
        prefix="z",
        env={"rate_limit_per_minute": "1000000", "rate_limit_unauthenticated_per_minute": "1000000"},
    )
    await server.start()
    yield server
    await server.stop()


def _config(devices: list[str], token: str, internal_token: str) -> str:
    """Schemathesis' configuration: our hooks, real device ids half of the time, the accepted
    statuses, the admin's token on every request and the internal token on the one operation
    that takes it."""
    return "\n".join(
        [
            'hooks = "tests.server.schemathesis_hooks"',
            "",
            "[headers]",
            f'Authorization = "Bearer {token}"',
            "",
            "[dictionaries.devices]",
            f"values = {json.dumps(devices)}",
            "",
            "[parameters]",
            '"path.device_id" = { dictionary = "devices", probability = 0.5 }',
            "",
            "[checks.positive_data_acceptance]",
            'expected-statuses = ["2xx", "404", "409", "422"]',
            "",
            "[[operations]]",
            'include-path = "/internal/v1/status"',
            f'headers = {{ Authorization = "Bearer {internal_token}" }}',
            "",
        ]
    )


async def test_schemathesis_finds_nothing(stack: ServerStack, tmp_path: Path) -> None:
    token = stack.jwks.make_token("auth0|fuzzer", ADMIN)
    internal_token = stack.components.internal_token
    config = tmp_path / "schemathesis.toml"
    config.write_text(_config(sorted(stack.sim.devices), token, internal_token))
    report = tmp_path / "report.json"
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "--config-file",
        str(config),
        "run",
        f"{stack.api.base_url}/api/v1/openapi.json",
        "--checks",
        "not_a_server_error,response_schema_conformance,positive_data_acceptance",
        "--mode",
        "all",
        "--phases",
        "examples,coverage,fuzzing",
        "--max-examples",
        str(EXAMPLES_PER_OPERATION),
        "--generation-deterministic",
        "--max-time",
        str(TIME_BUDGET),
        *(arg for path in (*STREAMS, *INGRESS_ONLY) for arg in ("--exclude-path", path)),
        "--workers",
        "1",
        "--request-timeout",
        "10",
        "--no-color",
        "--report",
        "json",
        "--report-json-path",
        str(report),
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SCHEMATHESIS_TELEMETRY": "false"}
    proc = await asyncio.create_subprocess_exec(
        *command, cwd=tmp_path, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output, _ = await asyncio.wait_for(proc.communicate(), TIME_BUDGET + 60)
    text = output.decode(errors="replace")
    assert token not in text  # the tokens are masked in every reproduction it prints
    assert internal_token not in text
    result = json.loads(report.read_text())
    assert proc.returncode == 0, text[-6000:]
    assert result["failures"] == [], text[-6000:]
    assert result["errors"] == [], text[-6000:]
    documented = json.loads((await stack.api.call("GET", "/api/v1/openapi.json")).body)
    # Schemathesis leaves out the document it was loaded from (GET /api/v1/openapi.json).
    skipped = (*STREAMS, *INGRESS_ONLY, "/api/v1/openapi.json")
    operations = sum(1 for path, item in documented["paths"].items() if path not in skipped for _ in item)
    assert result["operations"]["tested"] == result["operations"]["selected"] == operations
    assert result["test_cases"]["generated"] >= operations * 5  # something was really sent
