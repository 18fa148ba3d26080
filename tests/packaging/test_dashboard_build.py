"""The dashboard's built files are committed (no Node in the add-on image): they must match the sources."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_committed_dashboard_build_is_current() -> None:
    node = shutil.which("node")
    assert node, "node is missing: run scripts/setup"
    result = subprocess.run(
        [node, "clients/dashboard/scripts/build.mjs", "--check"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr + result.stdout


def test_the_page_names_only_relative_urls() -> None:
    """Under Home Assistant's ingress the page lives below /api/hassio_ingress/<token>/."""
    page = (ROOT / "addon" / "thermo_bridge_server" / "http" / "dashboard" / "index.html").read_text()
    for attribute in ('src="', 'href="'):
        for value in page.split(attribute)[1:]:
            assert not value.startswith("/"), value[:60]
