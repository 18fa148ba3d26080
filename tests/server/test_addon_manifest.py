"""The add-on manifest's options (config.yaml) against the server's own (the Supervisor's rules: tests/packaging)."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]

from thermo_bridge_server.config import OPTIONS_BY_NAME, load_config

ROOT = Path(__file__).resolve().parents[2]


def _manifest() -> dict[str, object]:
    data = yaml.safe_load((ROOT / "config.yaml").read_text())
    assert isinstance(data, dict)
    return data


def test_every_manifest_option_is_a_server_option() -> None:
    manifest = _manifest()
    schema = manifest["schema"]
    options = manifest["options"]
    assert isinstance(schema, dict)
    assert isinstance(options, dict)
    unknown = sorted(set(schema) - set(OPTIONS_BY_NAME))
    assert not unknown, f"config.yaml schema names options the server does not have: {unknown}"
    assert set(options) <= set(schema), "every default in options needs a schema entry"
    secrets = {name for name, option in OPTIONS_BY_NAME.items() if option.secret}
    for name in secrets & set(schema):
        assert schema[name].startswith("password"), f"{name} must use the Supervisor's password type"


def test_manifest_defaults_are_a_valid_server_configuration(tmp_path: Path) -> None:
    """The options a fresh add-on install writes to options.json start the server's config."""
    options = dict(_manifest()["options"])  # type: ignore[call-overload]
    options["auth0_domain"] = "tenant.eu.auth0.com"
    options["auth0_audience"] = "https://api.example.com"
    options_file = tmp_path / "options.json"
    options_file.write_text(json.dumps(options))
    config = load_config(["--options-file", str(options_file)], env={})
    assert config.mqtt.base_topic == options["base_topic"]
    assert config.retention_days == options["retention_days"]
    assert config.auth is not None
    assert config.auth.issuer == "https://tenant.eu.auth0.com/"


def _setuptools() -> dict[str, Any]:
    table: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    return table


def test_dockerfile_copies_every_folder_pyproject_maps() -> None:
    """The image builds the same distribution: each mapped folder is copied to the same path."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    folders = {"addon/thermo_bridge_server"} | {folder for name, folder in _setuptools()["package-dir"].items() if name}
    assert folders == {"addon/thermo_bridge_server", "custom_components/thermo_bridge/protocol"}
    for folder in folders:
        assert f"COPY {folder} ./{folder}" in dockerfile
    assert not (ROOT / "addon" / "thermo_bridge_protocol").exists()  # one copy of the protocol, no link


def test_pyproject_lists_every_package_of_the_tree() -> None:
    """An explicit package list (the protocol's folder has another name) must not miss a subpackage."""
    listed = set(_setuptools()["packages"])
    found = {"thermo_bridge_protocol"} | {
        ".".join(init.parent.relative_to(ROOT / "addon").parts)
        for init in (ROOT / "addon" / "thermo_bridge_server").rglob("__init__.py")
    }
    assert listed == found


def test_the_add_on_image_gets_no_developer_tools() -> None:
    """The simulator and the device-config factories (devtools/) are for development only."""
    lines = (line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines())
    ignore = [line for line in lines if line and not line.startswith("#")]
    assert ignore[0] == "*"  # the build context is only what is admitted by name
    admitted = [line.removeprefix("!") for line in ignore if line.startswith("!")]
    assert admitted
    assert not any(path.startswith("devtools") for path in admitted)
    assert "devtools" not in (ROOT / "Dockerfile").read_text()
    assert not list((ROOT / "addon").rglob("simulator.py"))
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert "thermo-bridge-sim" not in scripts
    devtools = tomllib.loads((ROOT / "devtools" / "pyproject.toml").read_text())["project"]
    assert devtools["scripts"]["thermo-bridge-sim"] == "thermo_bridge_sim.simulator:main"
