"""Coverage-guided fuzzing of the protocol's parsers with atheris (libFuzzer for Python).

    .venv/bin/python bench/fuzz_protocol.py                  # 100,000 inputs over every parser
    .venv/bin/python bench/fuzz_protocol.py --runs 1000000   # a longer run
    .venv/bin/python bench/fuzz_protocol.py --engine hypothesis --runs 100000   # without atheris

Every input goes through one target of ``thermo_bridge_sim.protocol_fuzz`` (its first byte
picks the target: the config, availability, ack and command-report parsers, and the state,
set and event parsers for four device configs); the invariants are that module's: only
``ProtocolError`` is ever raised, and whatever parses re-encodes to something that parses
to the same model. The protocol package is instrumented for coverage, so libFuzzer keeps
the inputs that reach new branches and mutates those (seeded with valid payloads and a
dictionary of the wire format's tokens).

The fuzzer runs in a child process (libFuzzer exits the process when it is done); this
process reads its final statistics and prints a markdown block for docs/security.md. A
crash (any other exception, or a broken round trip) stops the run; the input is saved in
``--workdir`` as ``crash-<sha1>`` and the exit status is 1. Reproduce it with
``--reproduce <file>``.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench._machine import cpu_model, git_head, ram  # noqa: E402

DEFAULT_RUNS = 100_000
MAX_LEN = 4096


def _corpus(directory: Path) -> None:
    from thermo_bridge_sim.protocol_fuzz import TARGETS  # noqa: PLC0415

    directory.mkdir(parents=True, exist_ok=True)
    for index, target in enumerate(TARGETS):
        for number, seed in enumerate(target.seeds):
            (directory / f"seed-{index:02d}-{number}").write_bytes(bytes([index]) + seed)


def _dictionary(path: Path) -> None:
    from thermo_bridge_sim.protocol_fuzz import DICTIONARY  # noqa: PLC0415

    lines = []
    for token in DICTIONARY:
        data = token.encode()
        body = "".join(chr(b) if 0x20 <= b < 0x7F and chr(b) not in '"\\' else f"\\x{b:02x}" for b in data)
        lines.append(f'"{body}"')
    path.write_text("\n".join(lines) + "\n")


def _child(argv: list[str]) -> None:
    """Run libFuzzer in this process (it exits the process when done)."""
    import atheris  # type: ignore[import-untyped]  # noqa: PLC0415 - only the child needs it

    with atheris.instrument_imports(include=["thermo_bridge_protocol"]):
        import thermo_bridge_protocol  # noqa: F401, PLC0415 - instrumented for coverage
    from thermo_bridge_sim.protocol_fuzz import TARGETS, check  # noqa: PLC0415

    def one_input(data: bytes) -> None:
        if data:
            check(TARGETS[data[0] % len(TARGETS)], data[1:])

    atheris.Setup(argv, one_input)
    atheris.Fuzz()


def _reproduce(path: Path) -> int:
    from thermo_bridge_sim.protocol_fuzz import TARGETS, check  # noqa: PLC0415

    data = path.read_bytes()
    target = TARGETS[data[0] % len(TARGETS)]
    print(f"target {target.name}, payload {data[1:]!r}")
    print("parsed" if check(target, data[1:]) else "refused with ProtocolError (as it should)")
    return 0


def _hypothesis_target(target: object, examples: int) -> tuple[int, int]:
    """Up to ``examples`` inputs through one target; (inputs run, inputs that parsed)."""
    from hypothesis import HealthCheck, given, settings  # noqa: PLC0415
    from hypothesis import strategies as st  # noqa: PLC0415

    from thermo_bridge_sim.protocol_fuzz import Target, check  # noqa: PLC0415

    assert isinstance(target, Target)
    ran = parsed = 0
    seeds = st.sampled_from(target.seeds)
    edited = st.tuples(seeds, st.integers(0, 64), st.binary(max_size=8)).map(
        lambda t: t[0][: t[1]] + t[2] + t[0][t[1] :]
    )

    @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(data=st.binary(max_size=MAX_LEN) | edited)
    def run(data: bytes) -> None:
        nonlocal ran, parsed
        ran += 1
        parsed += check(target, data)

    run()
    return ran, parsed


def _hypothesis(runs: int) -> dict[str, str]:
    """The property-based fallback: the same targets and invariants, ``runs`` inputs in all."""
    from thermo_bridge_sim.protocol_fuzz import TARGETS  # noqa: PLC0415

    per_target = max(1, runs // len(TARGETS))
    results = [_hypothesis_target(target, per_target) for target in TARGETS]
    ran, parsed = sum(r for r, _ in results), sum(p for _, p in results)
    return {"inputs": f"{ran:,}", "parsed": f"{parsed:,}", "crashes": "0"}


def _stats(stderr: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, key in (("number_of_executed_units", "inputs"), ("peak_rss_mb", "peak RSS (MB)")):
        match = re.search(rf"stat::{name}:\s*(\d+)", stderr)
        if match:
            out[key] = f"{int(match.group(1)):,}"
    done = re.findall(r"#\d+\s+(?:DONE|pulse|NEW|REDUCE)\s+cov: (\d+) ft: (\d+) corp: (\d+)/(\S+)", stderr)
    if done:
        cov, ft, corp, size = done[-1]
        out.update({"coverage (edges)": cov, "features": ft, "corpus (inputs/size)": f"{corp}/{size}"})
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=DEFAULT_RUNS, help="inputs to execute (default %(default)s)")
    parser.add_argument("--seed", type=int, default=1, help="libFuzzer's random seed (default %(default)s)")
    parser.add_argument("--workdir", type=Path, help="corpus, dictionary and crash files (default: a temp dir)")
    parser.add_argument("--engine", choices=("atheris", "hypothesis"), default="atheris")
    parser.add_argument("--reproduce", type=Path, help="run one saved input (a crash file) and print the outcome")
    parser.add_argument("--child", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        _child([sys.argv[0], *args.child])
        return 0
    if args.reproduce:
        return _reproduce(args.reproduce)
    head, dirty = git_head("custom_components/thermo_bridge/protocol")
    command = "bench/fuzz_protocol.py " + " ".join(sys.argv[1:])
    started = time.monotonic()
    if args.engine == "hypothesis":
        stats, status, crash = _hypothesis(args.runs), 0, None
    else:
        workdir = args.workdir or Path(tempfile.mkdtemp(prefix="tb-fuzz-"))
        corpus, dictionary = workdir / "corpus", workdir / "protocol.dict"
        _corpus(corpus)
        _dictionary(dictionary)
        child = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--child",
            str(corpus),
            f"-runs={args.runs}",
            f"-seed={args.seed}",
            f"-max_len={MAX_LEN}",
            f"-dict={dictionary}",
            f"-artifact_prefix={workdir}/",
            "-print_final_stats=1",
            "-timeout=10",
            "-rss_limit_mb=2048",
        ]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")])}
        proc = subprocess.run(child, capture_output=True, text=True, env=env, check=False)
        status = proc.returncode
        stats = _stats(proc.stderr)
        crashes = sorted(workdir.glob("crash-*")) + sorted(workdir.glob("timeout-*")) + sorted(workdir.glob("oom-*"))
        crash = crashes[0] if crashes else None
        stats["crashes"] = str(len(crashes))
        if status != 0:
            sys.stderr.write(proc.stderr[-5000:])
    elapsed = time.monotonic() - started
    stats["time (s)"] = f"{elapsed:.0f}"
    if "inputs" in stats:
        stats["inputs/s"] = f"{int(stats['inputs'].replace(',', '')) / max(elapsed, 1e-9):,.0f}"
    print(f"### Protocol parser fuzzing ({args.engine})\n")
    print(f"Machine: {cpu_model()}, {os.cpu_count()} cores, {ram()}; Python {sys.version.split()[0]}")
    print(
        f"Command: `.venv/bin/python {command.strip()}` at {head}{' (uncommitted protocol changes)' if dirty else ''}\n"
    )
    print("| figure | value |\n| --- | --- |")
    for key, value in stats.items():
        print(f"| {key} | {value} |")
    if crash is not None:
        print(f"\nCrash input: {crash} (reproduce: `.venv/bin/python bench/fuzz_protocol.py --reproduce {crash}`)")
    return 0 if status == 0 and crash is None else 1


if __name__ == "__main__":
    sys.exit(main())
