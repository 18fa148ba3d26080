"""The integration's metadata files, checked the way hassfest and HACS read them."""

from __future__ import annotations

import ast
import json
import re
import struct
from pathlib import Path
from typing import Any

import pytest
import voluptuous as vol
import yaml
from awesomeversion import AwesomeVersion, AwesomeVersionException, AwesomeVersionStrategy
from homeassistant.components.mqtt import valid_subscribe_topic
from homeassistant.const import Platform

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


# hassfest's manifest schema for custom integrations (script/hassfest/manifest.py).
IOT_CLASSES = ["assumed_state", "calculated", "cloud_polling", "cloud_push", "local_polling", "local_push"]
INTEGRATION_TYPES = ["device", "entity", "hardware", "helper", "hub", "service", "system", "virtual"]
# Integrations any integration may use without declaring them (entity platforms and a few more).
HASSFEST_ALLOWED_COMPONENTS = {*(platform.value for platform in Platform), "diagnostics", "homeassistant", "repairs"}
ZEROCONF_TYPE_RE = r"_[a-z0-9-]{1,15}\._(tcp|udp)\.local\."


def _version(value: str) -> str:
    try:
        AwesomeVersion(
            value,
            ensure_strategy=[
                AwesomeVersionStrategy.CALVER,
                AwesomeVersionStrategy.SEMVER,
                AwesomeVersionStrategy.SIMPLEVER,
                AwesomeVersionStrategy.BUILDVER,
                AwesomeVersionStrategy.PEP440,
            ],
        )
    except AwesomeVersionException as err:
        raise vol.Invalid(str(err)) from err
    return value


def _https(value: str) -> str:
    if not value.startswith("https://"):
        raise vol.Invalid("must be an https URL")
    return str(vol.Url()(value))


HASSFEST_CUSTOM_MANIFEST = vol.Schema(
    {
        vol.Required("domain"): str,
        vol.Required("name"): str,
        vol.Optional("integration_type"): vol.In(INTEGRATION_TYPES),
        vol.Optional("config_flow"): bool,
        vol.Optional("mqtt"): [str],
        vol.Optional("zeroconf"): [vol.Any(vol.Match(ZEROCONF_TYPE_RE), {vol.Required("type"): str}, extra=True)],
        vol.Required("documentation"): _https,
        vol.Optional("issue_tracker"): _https,
        vol.Optional("requirements"): [str],
        vol.Optional("dependencies"): [str],
        vol.Optional("after_dependencies"): [str],
        vol.Required("codeowners"): [vol.Match(r"^@[A-Za-z0-9-]+(/[A-Za-z0-9-]+)?$")],
        vol.Optional("loggers"): [str],
        vol.Optional("iot_class"): vol.In(IOT_CLASSES),
        vol.Optional("single_config_entry"): bool,
        vol.Required("version"): vol.All(str, _version),  # required for custom integrations
    },
    extra=vol.PREVENT_EXTRA,
)
# HACS's schemas (custom_components/hacs/utils/validate.py).
HACS_JSON = vol.Schema(
    {
        vol.Optional("content_in_root"): bool,
        vol.Optional("country"): vol.Any(str, [str]),
        vol.Optional("filename"): str,
        vol.Optional("hacs"): vol.All(str, vol.Coerce(AwesomeVersion)),
        vol.Optional("hide_default_branch"): bool,
        vol.Optional("homeassistant"): vol.All(str, vol.Coerce(AwesomeVersion)),
        vol.Optional("persistent_directory"): str,
        vol.Optional("render_readme"): bool,
        vol.Optional("zip_release"): bool,
        vol.Required("name"): str,
    },
    extra=vol.PREVENT_EXTRA,
)
HACS_INTEGRATION_MANIFEST = vol.Schema(
    {
        vol.Required("codeowners"): list,
        vol.Required("documentation"): vol.Url(),
        vol.Required("domain"): str,
        vol.Required("issue_tracker"): vol.Url(),
        vol.Required("name"): str,
        vol.Required("version"): vol.Coerce(AwesomeVersion),
    },
    extra=vol.ALLOW_EXTRA,
)


def _manifest() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((INTEGRATION / "manifest.json").read_text())
    return data


def test_manifest_passes_hassfest() -> None:
    manifest = HASSFEST_CUSTOM_MANIFEST(_manifest())
    keys = list(manifest)
    assert keys[:2] == ["domain", "name"]
    assert keys[2:] == sorted(keys[2:]), "hassfest wants domain, name, then alphabetical order"
    assert manifest["domain"] == const.DOMAIN == INTEGRATION.name
    assert manifest["config_flow"] is True
    assert manifest["integration_type"] == "hub"
    assert manifest["iot_class"] == "local_push"
    assert manifest["requirements"] == [], "the protocol is bundled; nothing to install"
    for topic in manifest["mqtt"]:
        assert valid_subscribe_topic(topic) == topic
    assert manifest["mqtt"] == ["thermo_bridge/+/config"]
    assert manifest["zeroconf"] == [const.ZEROCONF_TYPE]
    assert manifest["issue_tracker"].startswith(manifest["documentation"])
    with pytest.raises(vol.Invalid):
        HASSFEST_CUSTOM_MANIFEST({**manifest, "version": "one"})
    with pytest.raises(vol.Invalid):
        HASSFEST_CUSTOM_MANIFEST({k: v for k, v in manifest.items() if k != "version"})


def test_manifest_dependencies_cover_the_imports() -> None:
    """hassfest's dependency check: an imported integration must be a (after_)dependency."""
    manifest = _manifest()
    declared = set(manifest.get("dependencies", [])) | set(manifest.get("after_dependencies", []))
    imported: set[str] = set()
    for path in INTEGRATION.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                if node.module == "homeassistant.components":
                    imported.update(alias.name for alias in node.names)
                elif node.module.startswith("homeassistant.components."):
                    imported.add(node.module.split(".")[2])
    assert "mqtt" in imported, "the scan must see HA's mqtt import"
    assert imported - HASSFEST_ALLOWED_COMPONENTS <= declared, imported - declared


def test_manifest_loggers_cover_every_logger() -> None:
    """Debug logging from the integration's page covers what every module logs."""
    loggers = _manifest()["loggers"]
    for path in INTEGRATION.rglob("*.py"):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        if "getLogger" in path.read_text():
            assert any(module == name or module.startswith(name + ".") for name in loggers), module


def test_hacs_json() -> None:
    hacs = HACS_JSON(json.loads((ROOT / "hacs.json").read_text()))
    assert hacs["name"] == _manifest()["name"]
    # The oldest release the test suite runs against (.venv-oldest); brand/ images need 2026.3+
    # and older releases show Home Assistant's placeholder icon instead (README says so).
    assert hacs["homeassistant"] == "2025.4.0"
    HACS_INTEGRATION_MANIFEST(_manifest())
    with pytest.raises(vol.Invalid):
        HACS_JSON({**hacs, "render_readme": True, "domains": ["climate"]})
    assert (ROOT / "LICENSE").is_file(), "HACS refuses a repository without a licence"
    assert [p.name for p in (ROOT / "custom_components").iterdir() if p.is_dir() and p.name != "__pycache__"] == [
        "thermo_bridge"
    ], "HACS manages the first integration of a repository only"


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
            "server_token_refused",
            "server_unreachable",
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
    for error in re.findall(r'(?:return|errors\[[A-Z_]+\] =) "([a-z_]+)"', source):
        assert error in strings["config"]["error"], error
    for step in re.findall(r'step_id="([a-z_]+)"', source):
        assert step in strings["config"]["step"] or step in strings["options"]["step"], step


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


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_brand_images_follow_the_brands_rules() -> None:
    """Home Assistant 2026.3+ serves custom integrations' brand/ images (the brands repo's sizes)."""
    brand = INTEGRATION / "brand"
    assert _png_size(brand / "icon.png") == (256, 256)
    assert _png_size(brand / "icon@2x.png") == (512, 512)
    width, height = _png_size(brand / "logo.png")
    assert 128 <= min(width, height) <= 256
    assert width >= height
