"""What a benchmark ran on: the parts every benchmark reports. Imports nothing of ours.

(ha_discovery.py must not import the server's modules: its processes load the integration,
and a process holds one identity of the protocol.)
"""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _proc_field(path: str, prefix: str) -> str | None:
    """The text after ``prefix``'s colon on the first line of ``path`` that starts with it."""
    with contextlib.suppress(OSError):
        for line in Path(path).read_text().splitlines():
            if line.startswith(prefix):
                return line.split(":", 1)[1].strip()
    return None


def cpu_model() -> str:
    return _proc_field("/proc/cpuinfo", "model name") or "unknown"


def ram() -> str:
    total = _proc_field("/proc/meminfo", "MemTotal:")
    return f"{int(total.split()[0]) / 2**20:.1f} GiB" if total else "unknown"


def mosquitto_version() -> str:
    """The first line of ``mosquitto -h`` (its version), or ``unknown``."""
    with contextlib.suppress(Exception):
        from tests.broker import find_mosquitto  # noqa: PLC0415

        out = subprocess.run([find_mosquitto(), "-h"], capture_output=True, text=True, timeout=5, check=False)
        return (out.stdout or out.stderr).splitlines()[0].strip()
    return "unknown"


def git_head(folder: str) -> tuple[str, bool]:
    """The short commit of HEAD (or ``unknown``), and whether ``folder`` has uncommitted changes."""
    head = dirty = ""
    with contextlib.suppress(Exception):
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", folder], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
    return head or "unknown", bool(dirty)
