"""The add-on as the Supervisor, the add-on linter and Docker read it, without any of them here.

The Supervisor's rules are those of ``supervisor/apps/validate.py`` (the manifest),
``supervisor/apps/options.py`` (options against their schema, as checked before every start),
``supervisor/store/validate.py`` (``repository.yaml``) and ``supervisor/store/data.py`` (which
files it reads as add-ons). The linter's are its JSON Schema (vendored, see README.md here) plus
its "key set to the default value" and "watchdog is obsolete" checks.
"""

from __future__ import annotations

import fnmatch
import json
import re
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
import voluptuous as vol
import yaml  # type: ignore[import-untyped]
from packaging.requirements import Requirement
from packaging.version import Version

from thermo_bridge_server.app import SHUTDOWN_TIMEOUT
from thermo_bridge_server.config import OPTIONS_BY_NAME

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).parent
INTEGRATION = ROOT / "custom_components" / "thermo_bridge"

# --------------------------------------------------------------------------- the Supervisor's rules

ARCHES = frozenset({"aarch64", "amd64"})
"""Architectures the Supervisor still supports; armhf, armv7 and i386 are deprecated."""
RE_SLUG = re.compile(r"^[-_.A-Za-z0-9]+$")
RE_SERVICE = re.compile(r"^(?P<service>mqtt|mysql):(?P<rights>provide|want|need)$")
RE_PORT_KEY = re.compile(r"^\d+(?:/(?:tcp|udp|sctp))?$")
MAPPING_TYPES = frozenset(
    {"data", "config", "ssl", "addons", "backup", "share", "media"}
    | {"homeassistant_config", "all_addon_configs", "addon_config"}
)
RE_SCHEMA_ELEMENT = re.compile(
    r"^(?:"
    r"|bool"
    r"|email"
    r"|url"
    r"|port"
    r"|device(?:\((?P<filter>subsystem=[a-z]+)\))?"
    r"|str(?:\((?P<s_min>\d+)?,(?P<s_max>\d+)?\))?"
    r"|password(?:\((?P<p_min>\d+)?,(?P<p_max>\d+)?\))?"
    r"|int(?:\((?P<i_min>-?\d+)?,(?P<i_max>-?\d+)?\))?"
    r"|float(?:\((?P<f_min>-?\d*\.?\d+)?,(?P<f_max>-?\d*\.?\d+)?\))?"
    r"|match\((?P<match>.*)\)"
    r"|list\((?P<list>.+)\)"
    r")\??$"
)
CONFIG_SUFFIXES = (".json", ".yaml", ".yml")


def _port(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise vol.Invalid(f"{value!r} is not a port")
    return value


def _mapping(value: object) -> object:
    if isinstance(value, str):
        match = re.fullmatch(r"(\w+)(?::(rw|ro))?", value)
        if match is None or match.group(1) not in MAPPING_TYPES:
            raise vol.Invalid(f"map entry {value!r} is not a folder the Supervisor maps")
        return value
    return vol.Schema(
        {vol.Required("type"): vol.In(MAPPING_TYPES), vol.Optional("read_only"): bool, vol.Optional("path"): str}
    )(value)


SUPERVISOR_MANIFEST = vol.Schema(
    {
        vol.Required("name"): str,
        vol.Required("version"): vol.All(str, vol.Coerce(Version)),
        vol.Required("slug"): vol.Match(RE_SLUG),
        vol.Required("description"): str,
        vol.Required("arch"): [vol.In(ARCHES)],
        vol.Optional("url"): vol.Url(),
        vol.Optional("init"): bool,
        vol.Optional("services"): [vol.Match(RE_SERVICE)],
        vol.Optional("discovery"): [str],
        vol.Optional("map"): [_mapping],
        vol.Optional("ports"): {vol.Match(RE_PORT_KEY): vol.Any(None, _port)},
        vol.Optional("ports_description"): {vol.Match(RE_PORT_KEY): str},
        vol.Optional("timeout"): vol.All(int, vol.Range(min=10, max=300)),
        vol.Optional("ingress"): bool,
        vol.Optional("ingress_port"): vol.Any(_port, 0),
        vol.Optional("ingress_entry"): str,
        vol.Optional("ingress_stream"): bool,
        vol.Optional("panel_icon"): str,
        vol.Optional("panel_title"): str,
        vol.Optional("panel_admin"): bool,
        vol.Optional("options"): dict,
        vol.Optional("schema"): {str: object},
    },
    extra=vol.PREVENT_EXTRA,  # the Supervisor drops unknown keys silently: here a typo fails
)
REPOSITORY = vol.Schema(
    {vol.Required("name"): str, vol.Optional("url"): vol.Url(), vol.Optional("maintainer"): str},
    extra=vol.PREVENT_EXTRA,
)
TRANSLATIONS = vol.Schema(
    {
        vol.Optional("configuration"): {str: {vol.Required("name"): str, vol.Optional("description"): str}},
        vol.Optional("network"): {str: str},
    },
    extra=vol.PREVENT_EXTRA,
)


def check_option(schema_type: str, value: object) -> None:
    """Validate one option value as the Supervisor does before starting the add-on."""
    match = RE_SCHEMA_ELEMENT.match(schema_type)
    assert match is not None, f"{schema_type!r} is not a Supervisor schema type"
    if value is None:
        raise vol.Invalid("missing required option (null)")
    number = "i" if schema_type.startswith("int") else "f"
    low, high = (match.group(f"{number}_{end}") for end in ("min", "max"))
    bounds = vol.Range(min=float(low) if low else None, max=float(high) if high else None)
    if schema_type.startswith(("str", "password")):
        kind = "s" if schema_type.startswith("str") else "p"
        low, high = match.group(f"{kind}_min"), match.group(f"{kind}_max")
        vol.Schema(vol.All(str, vol.Length(min=int(low or 0), max=int(high) if high else None)))(value)
    elif schema_type.startswith("int"):
        vol.Schema(vol.All(vol.Coerce(int), bounds))(value)
    elif schema_type.startswith("float"):
        vol.Schema(vol.All(vol.Coerce(float), bounds))(value)
    elif schema_type.startswith("bool"):
        vol.Boolean()(value)
    elif schema_type.startswith("url"):
        vol.Url()(value)
    elif schema_type.startswith("port"):
        _port(value)
    elif schema_type.startswith("list"):
        vol.In(match.group("list").split("|"))(str(value))
    else:  # pragma: no cover - types this add-on does not use
        raise AssertionError(f"check_option does not know {schema_type!r}")


def check_options(schema: dict[str, Any], options: dict[str, Any]) -> None:
    """The Supervisor's AppOptions: every option known, every value valid, nothing required missing."""
    for key, value in options.items():
        assert key in schema, f"option {key} has no schema entry (the Supervisor drops it)"
        typ = schema[key]
        if isinstance(typ, list):
            assert isinstance(value, list), key
            for item in value:
                check_option(typ[0], item)
        else:
            check_option(typ, value)
    for key, typ in schema.items():
        element = typ[0] if isinstance(typ, list) else typ
        assert RE_SCHEMA_ELEMENT.match(element), f"{key}: {element!r} is not a Supervisor schema type"
        if key not in options and not element.endswith("?"):
            raise vol.Invalid(f"Missing option '{key}': the Supervisor refuses to start the add-on")


# --------------------------------------------------------------------------- the files


def load_yaml(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict), path
    return data


@pytest.fixture(scope="module")
def manifest() -> dict[str, Any]:
    return load_yaml(ROOT / "config.yaml")


def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text(encoding="utf-8")


def dockerfile_env() -> dict[str, str]:
    """The ENV settings of the Dockerfile (``ENV A=1 \\`` continuation lines joined)."""
    text = dockerfile().replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            for pair in line.split()[1:]:
                name, _, value = pair.partition("=")
                env[name] = value
    return env


def tracked_files() -> list[str]:
    result = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return [path for path in result.stdout.splitlines() if (ROOT / path).exists()]


# --------------------------------------------------------------------------- the tests


def test_repository_yaml_is_what_the_store_needs() -> None:
    """Without it the Supervisor skips the whole repository."""
    data = REPOSITORY(load_yaml(ROOT / "repository.yaml"))
    assert data["url"] == "https://github.com/thermo-bridge/thermo_bridge"
    assert data["maintainer"]


def test_manifest_passes_the_supervisors_schema(manifest: dict[str, Any]) -> None:
    data = SUPERVISOR_MANIFEST(manifest)
    assert set(data["arch"]) == ARCHES
    assert data["services"] == ["mqtt:need"]
    assert data["init"] is False, "the base image's s6-overlay /init must be PID 1"
    assert set(data["ports"]) == set(data["ports_description"]) == {"8099/tcp"}


def test_manifest_version_is_the_release(manifest: dict[str, Any]) -> None:
    version = pyproject()["project"]["version"]
    assert manifest["version"] == version
    assert json.loads((INTEGRATION / "manifest.json").read_text())["version"] == version
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert re.search(r"^## (\S+)", changelog, re.MULTILINE)[1] == version  # type: ignore[index]


def test_discovery_names_the_integration(manifest: dict[str, Any]) -> None:
    """The Supervisor accepts POST /discovery only for services the add-on lists; HA then starts
    a config flow for the integration of that name."""
    domain = json.loads((INTEGRATION / "manifest.json").read_text())["domain"]
    assert manifest["discovery"] == [domain]


def test_ingress_reaches_the_servers_port(manifest: dict[str, Any]) -> None:
    """The panel: ingress on the port the server listens on, with the dashboard's icon."""
    assert manifest["ingress"] is True
    assert manifest.get("ingress_port", 8099) == OPTIONS_BY_NAME["http_port"].default
    assert f"{manifest.get('ingress_port', 8099)}/tcp" in manifest["ports"]
    assert manifest["panel_icon"] == "mdi:thermostat"
    assert manifest["panel_title"]
    assert manifest.get("panel_admin", True), "only Home Assistant administrators may open the panel"


def test_certificate_folder_is_mapped_read_only(manifest: dict[str, Any]) -> None:
    assert manifest["map"] == [{"type": "ssl"}]  # read_only defaults to true


def test_default_options_pass_the_supervisors_check(manifest: dict[str, Any]) -> None:
    check_options(manifest["schema"], manifest["options"])


def test_option_checker_refuses_what_the_supervisor_refuses(manifest: dict[str, Any]) -> None:
    schema = manifest["schema"]
    good = manifest["options"]
    for bad in (
        {**good, "retention_days": 0 - 1},
        {**good, "log_level": "loud"},
        {**good, "cors_origins": ["not a url"]},
        {**good, "auth0_domain": None},
        {**good, "mqtt_port": 70000},
        {**good, "unknown": 1},
    ):
        with pytest.raises((vol.Invalid, AssertionError)):
            check_options(schema, bad)
    missing = {k: v for k, v in good.items() if k != "base_topic"}
    with pytest.raises(vol.Invalid, match="Missing option 'base_topic'"):
        check_options(schema, missing)


def test_auth0_settings_show_as_required_yet_let_the_add_on_start(manifest: dict[str, Any]) -> None:
    """Required (no '?') so the UI marks them; empty by default so the Supervisor starts the
    add-on and the server, not the Supervisor, says what is missing (dev auth needs neither)."""
    for name in ("auth0_domain", "auth0_audience"):
        assert manifest["schema"][name] == "str"
        assert manifest["options"][name] == ""


def test_no_key_uses_its_default_value(manifest: dict[str, Any]) -> None:
    """The add-on linter's check: a key set to its default value should be removed."""
    schema = json.loads((HERE / "addon-linter.schema.json").read_text(encoding="utf-8"))
    defaults = {key: prop["default"] for key, prop in schema["properties"].items() if "default" in prop}
    assert {"startup", "boot", "init", "timeout"} <= set(defaults)
    offending = sorted(key for key, default in defaults.items() if key in manifest and manifest[key] == default)
    assert not offending, f"remove these keys, they repeat the Supervisor's default: {offending}"


def test_manifest_passes_the_add_on_linters_schema(manifest: dict[str, Any]) -> None:
    schema = json.loads((HERE / "addon-linter.schema.json").read_text(encoding="utf-8"))
    errors = sorted(str(error.message) for error in jsonschema.Draft7Validator(schema).iter_errors(manifest))
    assert not errors
    assert "watchdog" not in manifest, "obsolete: the Dockerfile's HEALTHCHECK is the watchdog"
    bad = {**manifest, "startup": "sometimes", "ports": {"8099/tcp": "x"}}
    assert len(list(jsonschema.Draft7Validator(schema).iter_errors(bad))) == 2


def test_translations_name_and_describe_every_option(manifest: dict[str, Any]) -> None:
    translations = TRANSLATIONS(load_yaml(ROOT / "translations" / "en.yaml"))
    configuration = translations["configuration"]
    assert set(configuration) == set(manifest["schema"])
    for key, text in configuration.items():
        assert text["name"].strip(), key
        assert text.get("description", "").strip(), key
    assert set(translations["network"]) == set(manifest["ports"])


def test_store_files_exist() -> None:
    """What the add-on store shows: icon, logo, documentation and changelog tabs."""
    for name, size in (("icon.png", (128, 128)), ("logo.png", (250, 100))):
        data = (ROOT / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n", name
        assert (int.from_bytes(data[16:20]), int.from_bytes(data[20:24])) == size, name
    docs = (ROOT / "DOCS.md").read_text(encoding="utf-8")
    for topic in ("Auth0", "read:devices", "write:devices", "admin", "RBAC", "https://thermo-bridge.dev/homes"):
        assert topic in docs, topic
    assert "Apache License" in (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert pyproject()["project"]["license"] == {"text": "Apache-2.0"}


def supervisor_reads_as_addon(path: str) -> bool:
    """``supervisor/store/data.py``: ``**/config.*`` with a YAML/JSON suffix, outside hidden folders and rootfs."""
    parts = Path(path).parts
    return (
        fnmatch.fnmatch(parts[-1], "config.*")
        and Path(path).suffix in CONFIG_SUFFIXES
        and not any(part.startswith(".") or part == "rootfs" for part in parts)
    )


def test_no_other_file_reads_as_an_add_on() -> None:
    assert supervisor_reads_as_addon("docs/schemas/config.schema.json")
    assert not supervisor_reads_as_addon("tests/fixtures/protocol/config_cases.json")
    assert not supervisor_reads_as_addon(".venv/lib/config.json")
    assert [path for path in tracked_files() if supervisor_reads_as_addon(path)] == ["config.yaml"]


def test_build_yaml_is_gone() -> None:
    """Deprecated: the Supervisor logs a warning; the Dockerfile's ARG default is the base image."""
    assert not [p for p in ("build.yaml", "build.yml", "build.json") if (ROOT / p).exists()]


def test_dockerfile_builds_from_the_multi_arch_base_image() -> None:
    match = re.search(r"^ARG BUILD_FROM=(\S+)$", dockerfile(), re.MULTILINE)
    assert match is not None
    image = match[1]
    assert re.fullmatch(r"ghcr\.io/home-assistant/base-python:3\.13-alpine3\.\d+", image), image
    assert "FROM ${BUILD_FROM}" in dockerfile()
    assert "io.hass.version" not in dockerfile(), "the Supervisor labels the version from config.yaml"


def test_healthcheck_is_liveness_only() -> None:
    healthcheck = re.search(r"^HEALTHCHECK .*?(?=^\S)", dockerfile(), re.MULTILINE | re.DOTALL)
    assert healthcheck is not None
    urls = re.findall(r"http://127\.0\.0\.1:8099(/\S*?)\"", healthcheck[0])
    assert urls == ["/health/live"]


def test_stop_grace_covers_the_drain(manifest: dict[str, Any]) -> None:
    """s6 SIGKILLs the CMD S6_KILL_GRACETIME ms after its SIGTERM; Docker kills the container
    ``timeout`` s after the stop began. The drain (requests, then the store) must fit in both."""
    grace = int(dockerfile_env()["S6_KILL_GRACETIME"]) / 1000
    assert grace >= 2 * SHUTDOWN_TIMEOUT
    assert int(dockerfile_env()["S6_SERVICES_GRACETIME"]) / 1000 >= grace
    assert manifest["timeout"] > grace + 5


def lock_pins() -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) from addon-requirements.lock."""
    text = (ROOT / "addon-requirements.lock").read_text(encoding="utf-8").replace("\\\n", " ")
    pins = {}
    for line in text.splitlines():
        if line and not line.lstrip().startswith("#"):
            spec, *hashes = line.split()
            name, version = spec.split("==")
            pins[name.lower().replace("_", "-")] = (version, [h.removeprefix("--hash=sha256:") for h in hashes])
    return pins


def test_lock_pins_every_dependency_with_hashes() -> None:
    pins = lock_pins()
    project = pyproject()
    wanted = [Requirement(r) for r in project["project"]["dependencies"]]
    wanted += [Requirement(r) for r in project["build-system"]["requires"]]
    for requirement in wanted:
        name = requirement.name.lower().replace("_", "-")
        assert name in pins, f"{name} is not in addon-requirements.lock: run scripts/lock-addon"
        version, hashes = pins[name]
        assert requirement.specifier.contains(version), f"{name}=={version} does not satisfy {requirement}"
    for name, (_version, hashes) in pins.items():
        assert hashes, name
        assert all(re.fullmatch(r"[0-9a-f]{64}", h) for h in hashes), name
    assert "--require-hashes -r addon-requirements.lock" in dockerfile()
    assert "--only-binary :all:" in dockerfile(), "nothing may be compiled on the user's device"


def dockerignore_allows(path: str) -> bool:
    """Docker's .dockerignore semantics for this file's shape: exclude all, then ``!`` re-includes."""
    allowed = False
    for raw in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pattern, include = (line[1:], True) if line.startswith("!") else (line, False)
        if fnmatch.fnmatch(path, pattern) or path.startswith(pattern.rstrip("/") + "/"):
            allowed = include
    return allowed


def copy_sources() -> Iterator[str]:
    for line in dockerfile().splitlines():
        if line.startswith("COPY ") and "--from" not in line:
            yield from line.split()[1:-1]


def test_everything_the_dockerfile_copies_is_in_the_build_context() -> None:
    sources = list(copy_sources())
    assert "addon-requirements.lock" in sources
    assert "custom_components/thermo_bridge/protocol" in sources
    for source in sources:
        assert (ROOT / source).exists(), source
        assert dockerignore_allows(source), f".dockerignore leaves {source} out of the build context"
    assert not dockerignore_allows("tests/broker.py")
    assert not dockerignore_allows(".venv/bin/python")


def test_cmd_is_the_server_entry_point() -> None:
    assert 'CMD ["thermo-bridge-server"]' in dockerfile()
    assert "thermo-bridge-server" in pyproject()["project"]["scripts"]
