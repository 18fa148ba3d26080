"""The integration's metadata files, checked the way hassfest and HACS read them."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import yaml

from custom_components.thermo_bridge import const
from custom_components.thermo_bridge.bridge import _COMMAND_ERROR_KEYS

ROOT = Path(__file__).parents[2]
INTEGRATION = ROOT / "custom_components" / "thermo_bridge"

RULES = {
    "bronze": [
        "action-setup",
        "appropriate-polling",
        "brands",
        "common-modules",
        "config-flow-test-coverage",
        "config-flow",
        "dependency-transparency",
        "docs-actions",
        "docs-high-level-description",
        "docs-installation-instructions",
        "docs-removal-instructions",
        "entity-event-setup",
        "entity-unique-id",
        "has-entity-name",
        "runtime-data",
        "test-before-configure",
        "test-before-setup",
        "unique-config-entry",
    ],
    "silver": [
        "action-exceptions",
        "config-entry-unloading",
        "docs-configuration-parameters",
        "docs-installation-parameters",
        "entity-unavailable",
        "integration-owner",
        "log-when-unavailable",
        "parallel-updates",
        "reauthentication-flow",
        "test-coverage",
    ],
    "gold": [
        "devices",
        "diagnostics",
        "discovery-update-info",
        "discovery",
        "docs-data-update",
        "docs-examples",
        "docs-known-limitations",
        "docs-supported-devices",
        "docs-supported-functions",
        "docs-troubleshooting",
        "docs-use-cases",
        "dynamic-devices",
        "entity-category",
        "entity-device-class",
        "entity-disabled-by-default",
        "entity-translations",
        "exception-translations",
        "icon-translations",
        "reconfiguration-flow",
        "repair-issues",
        "stale-devices",
    ],
    "platinum": ["async-dependency", "inject-websession", "strict-typing"],
}


def test_manifest() -> None:
    manifest = json.loads((INTEGRATION / "manifest.json").read_text())
    keys = list(manifest)
    assert keys[:2] == ["domain", "name"]
    assert keys[2:] == sorted(keys[2:]), "hassfest wants domain, name, then alphabetical order"
    assert manifest["domain"] == const.DOMAIN
    assert manifest["config_flow"] is True
    assert manifest["dependencies"] == ["mqtt"]
    assert manifest["mqtt"] == ["thermo_bridge/+/config"]
    assert manifest["zeroconf"] == [const.ZEROCONF_TYPE]
    assert manifest["integration_type"] == "hub"
    assert manifest["iot_class"] == "local_push"
    assert manifest["requirements"] == []
    assert re.fullmatch(r"\d+\.\d+\.\d+", manifest["version"])
    assert manifest["issue_tracker"].startswith("https://github.com/thermo-bridge/thermo_bridge")


def test_hacs_json() -> None:
    hacs = json.loads((ROOT / "hacs.json").read_text())
    assert hacs["name"]
    # The oldest release the test suite runs against (.venv-oldest).
    assert hacs["homeassistant"] == "2025.4.0"


def test_translations_match_strings() -> None:
    strings = json.loads((INTEGRATION / "strings.json").read_text())
    assert json.loads((INTEGRATION / "translations" / "en.json").read_text()) == strings
    exceptions = set(strings["exceptions"])
    assert (
        set(_COMMAND_ERROR_KEYS.values())
        | {
            "invalid_command",
            "command_rejected",
            "device_unavailable",
            "publish_failed",
            "mqtt_not_available",
        }
        == exceptions
    )
    assert set(strings["issues"]) == {"unsupported_schema"}
    source = "\n".join(path.read_text() for path in INTEGRATION.glob("*.py"))
    for key in re.findall(r'translation_key="([a-z_]+)"', source):
        sections = [strings["exceptions"], strings["issues"], *strings["entity"].values()]
        assert any(key in section for section in sections), key
    for reason in re.findall(r'async_abort\(reason="([a-z_]+)"\)', source):
        assert reason in strings["config"]["abort"], reason


def test_icons_reference_translation_keys() -> None:
    icons = json.loads((INTEGRATION / "icons.json").read_text())
    strings = json.loads((INTEGRATION / "strings.json").read_text())
    for platform, entries in icons["entity"].items():
        for key in entries:
            assert key in strings["entity"][platform], (platform, key)


def test_quality_scale_covers_every_rule() -> None:
    rules = yaml.safe_load((INTEGRATION / "quality_scale.yaml").read_text())["rules"]
    for tier, names in RULES.items():
        for name in names:
            assert name in rules, f"{tier} rule {name} missing"
            status = rules[name]
            if isinstance(status, dict):
                assert status["status"] in ("done", "exempt"), name
                assert status.get("comment"), name
            else:
                assert status == "done", name


def test_brand_icon_is_a_256px_png() -> None:
    data = (INTEGRATION / "brand" / "icon.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (256, 256)
