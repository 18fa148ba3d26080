"""Schemathesis hooks for test_api_fuzz.py (loaded by the ``st`` command through its config file).

The one rule of the API that OpenAPI cannot state: a history range's start is not after its
end (two parameters, and their defaults: end = now, start = end - 24 h). The document says it
in the parameters' descriptions; generated ranges that break it are dropped here, so the
positive_data_acceptance check judges everything else.
"""

from __future__ import annotations

import time
from typing import Any

import schemathesis

from thermo_bridge_server.errors import ApiError
from thermo_bridge_server.http.params import parse_time
from thermo_bridge_server.http.routes.devices import DEFAULT_HISTORY_SECONDS


@schemathesis.hook
def filter_case(context: schemathesis.HookContext, case: schemathesis.Case[Any]) -> bool:
    """Only history ranges whose start is not after their end (in every phase, coverage too).

    A value that is not a time at all is a negative case about that parameter: kept.
    """
    query: dict[str, Any] | None = case.query
    if not case.operation.path.endswith("/history") or not query:
        return True
    try:
        end = parse_time(str(query["end"]), "end") if "end" in query else time.time()
        start = parse_time(str(query["start"]), "start") if "start" in query else end - DEFAULT_HISTORY_SECONDS
    except ApiError:
        return True
    return start <= end
