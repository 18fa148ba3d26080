"""Property-based fuzzing of every protocol parser with Hypothesis (the targets: thermo_bridge_sim.protocol_fuzz).

For each target, a few hundred derandomized inputs: valid payloads with members replaced,
added or removed (nested ones too), objects built from the protocol's own keys and hostile
values, and raw bytes. Whatever the input, the parser returns a model or raises
``ProtocolError``, and a model re-encodes to bytes that parse to the same model. The
coverage-guided run with 100,000+ inputs is ``bench/fuzz_protocol.py`` (bench/README.md).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from thermo_bridge_sim.protocol_fuzz import DICTIONARY, TARGETS, Target, check

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES_PER_TARGET = 200
DELETE = object()

KEYS = sorted({token.strip('"') for token in DICTIONARY if token.startswith('"')})
leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from([0, -1, 1e308, 5e-324, 2**63, 946684800, 4102444800])
    | st.text(max_size=40)
    | st.sampled_from([key for key in KEYS] + ["heat", "off", "ok", "error", "°C", "°F", "", " ", "\u0000"])
)
values = st.recursive(
    leaves,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), inner),
    max_leaves=16,
)


def _paths(value: object, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, child in value.items():
            out += _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            out += _paths(child, (*prefix, index))
    return out


def _apply(document: Any, path: tuple[Any, ...], new: object) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(document, dict):
        out = dict(document)
        if rest or new is not DELETE:
            out[head] = _apply(document.get(head), rest, new) if rest else new
        else:
            out.pop(head, None)
        return out
    if isinstance(document, list) and isinstance(head, int) and head < len(document):
        copy = list(document)
        if rest or new is not DELETE:
            copy[head] = _apply(document[head], rest, new) if rest else new
        else:
            del copy[head]
        return copy
    return document


@st.composite
def mutated_seed(draw: st.DrawFn, target: Target) -> bytes:
    seed = draw(st.sampled_from(target.seeds))
    try:
        document = json.loads(seed)
    except ValueError:  # availability: plain words
        return draw(st.sampled_from([seed, seed.upper(), seed + b" ", b"", seed[:-1]]))
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(document)
        existing: bool = draw(st.booleans())
        path = draw(st.sampled_from(paths)) if paths and existing else (draw(st.sampled_from(KEYS)),)
        document = _apply(document, path, draw(values | st.just(DELETE)))
    return json.dumps(document, ensure_ascii=False).encode("utf-8", "surrogatepass")


def payloads(target: Target) -> st.SearchStrategy[bytes]:
    return st.one_of(
        mutated_seed(target),
        mutated_seed(target),
        st.dictionaries(st.sampled_from(KEYS), values, max_size=8).map(lambda d: json.dumps(d).encode()),
        st.binary(max_size=300),
    )


@pytest.mark.parametrize("target", TARGETS, ids=[t.name for t in TARGETS])
def test_parsers_raise_only_protocol_error_and_round_trip(target: Target) -> None:
    outcomes = {True: 0, False: 0}

    @settings(
        max_examples=EXAMPLES_PER_TARGET,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(data=payloads(target))
    def run(data: bytes) -> None:
        outcomes[check(target, data)] += 1  # InvariantError or any other exception fails the test

    run()
    assert outcomes[False] > 0  # refusals happened
    if any(check(target, seed) for seed in target.seeds):
        assert outcomes[True] > 0, "no generated input parsed: the target is not exercised"


def test_the_coverage_guided_fuzzer_runs(tmp_path: Path) -> None:
    """``bench/fuzz_protocol.py`` (atheris) works: a short run, every target, no crash."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "fuzz_protocol.py"), "--runs", "3000", "--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "| crashes | 0 |" in proc.stdout, proc.stdout
    executed = int(proc.stdout.split("| inputs |")[1].split("|")[0].replace(",", ""))
    assert executed >= 3000
