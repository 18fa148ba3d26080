"""Configuration: sources and precedence, one clear error per invalid option, secrets never shown.

Also the Supervisor's MQTT service discovery, against a local aiohttp server that answers
like the Supervisor (``GET /services/mqtt`` with a bearer token).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from thermo_bridge_server.config import (
    OPTIONS,
    OPTIONS_BY_NAME,
    ConfigError,
    load_config,
    load_config_or_exit,
    redact_url,
)
from thermo_bridge_server.supervisor import SupervisorError, resolve_supervisor_mqtt

AUTH = ["--auth0-domain", "tenant.eu.auth0.com", "--auth0-audience", "https://api.example.com"]


def test_defaults_standalone() -> None:
    config = load_config(AUTH, env={})
    assert config.mqtt.host == "127.0.0.1"
    assert config.mqtt.port == 1883
    assert config.mqtt.base_topic == "thermo_bridge"
    assert config.store_url == "sqlite:thermo_bridge.db"
    assert config.auth is not None
    assert config.auth.issuer == "https://tenant.eu.auth0.com/"
    assert config.auth.audience == "https://api.example.com"
    assert config.dev_auth is False
    assert config.supervised is False
    assert config.supervisor_url is None
    assert config.mqtt_explicit == frozenset()


def test_precedence_cli_over_env_over_file_over_default(tmp_path: Path) -> None:
    options = tmp_path / "options.json"
    options.write_text(json.dumps({"mqtt_port": 1884, "mqtt_host": "file-host", "retention_days": 7, "dev_auth": True}))
    env = {
        "THERMO_BRIDGE_OPTIONS_FILE": str(options),
        "THERMO_BRIDGE_MQTT_PORT": "1885",
        "THERMO_BRIDGE_COMMAND_TIMEOUT": "3.5",
    }
    config = load_config(["--mqtt-port", "1886"], env=env)
    assert config.mqtt.port == 1886  # CLI
    assert config.command_timeout == 3.5  # env
    assert config.mqtt.host == "file-host"  # options file
    assert config.retention_days == 7.0  # options file
    assert config.dead_letter_limit == OPTIONS_BY_NAME["dead_letter_limit"].default  # default
    assert config.options_file == str(options)
    assert config.mqtt_explicit == {"mqtt_port", "mqtt_host"}


def test_boolean_flags_and_lists() -> None:
    config = load_config(
        ["--dev-auth", "--no-zeroconf", "--cors-origins", "https://app.example.com, http://localhost:3000/"],
        env={"THERMO_BRIDGE_MQTT_TLS": "yes"},
    )
    assert config.dev_auth is True
    assert config.auth is None
    assert config.zeroconf is False
    assert config.mqtt.tls is True
    assert config.mqtt.use_tls is True
    assert config.cors_origins == ("https://app.example.com", "http://localhost:3000")


def test_empty_env_values_are_unset() -> None:
    config = load_config(["--dev-auth"], env={"THERMO_BRIDGE_MQTT_USERNAME": "", "THERMO_BRIDGE_MQTT_PORT": ""})
    assert config.mqtt.username is None
    assert config.mqtt.port == 1883


def test_auth0_domain_accepts_a_url_form() -> None:
    config = load_config(["--auth0-domain", "https://Tenant.us.auth0.com/", "--auth0-audience", "api"], env={})
    assert config.auth is not None
    assert config.auth.issuer == "https://tenant.us.auth0.com/"


def test_homes_claim_is_an_option_for_auth0_and_dev_auth() -> None:
    default = load_config(AUTH, env={})
    assert default.auth is not None
    assert default.auth.homes_claim == default.homes_claim == "https://thermo-bridge.dev/homes"
    custom = load_config(AUTH, env={"THERMO_BRIDGE_AUTH0_HOMES_CLAIM": "https://example.com/homes"})
    assert custom.auth is not None
    assert custom.auth.homes_claim == custom.homes_claim == "https://example.com/homes"
    dev = load_config(["--dev-auth", "--auth0-homes-claim", "homes"], env={})
    assert dev.auth is None
    assert dev.homes_claim == "homes"
    for reserved in ("permissions", "scope", "aud", "x" * 257, "ho\x00mes"):
        with pytest.raises(ConfigError, match="auth0_homes_claim"):
            load_config([*AUTH, "--auth0-homes-claim", reserved], env={})


# One invalid value per option that can be invalid (every option except free strings).
INVALID: dict[str, str] = {
    "mqtt_host": " ",
    "mqtt_port": "70000",
    "mqtt_username": "  ",
    "mqtt_client_id": "has space",
    "mqtt_tls": "maybe",
    "mqtt_ca_file": "/nonexistent/ca.pem",
    "mqtt_cert_file": "/nonexistent/cert.pem",
    "mqtt_key_file": "/nonexistent/key.pem",
    "mqtt_tls_insecure": "2",
    "mqtt_keepalive": "1",
    "mqtt_session_expiry": "-1",
    "base_topic": "a/+/b",
    "shared_group": "bad/group",
    "store_url": "mysql://x",
    "retention_days": "0",
    "dead_letter_limit": "many",
    "command_timeout": "nan",
    "http_host": "  ",
    "http_port": "0",
    "max_body_bytes": "12",
    "cors_origins": "ftp://x.example.com",
    "trusted_proxies": "10.0.0.0/33",
    "rate_limit_per_minute": "0",
    "rate_limit_unauthenticated_per_minute": "-1",
    "auth0_domain": "not a domain",
    "auth0_audience": " ",
    "auth0_jwks_url": "file:///etc/passwd",
    "auth0_client_id": "client id with spaces",
    "ingress_permissions": "read:devices drop;table",
    "ingress": "maybe",
    "auth0_homes_claim": "sub",
    "auth_leeway": "-5",
    "dev_auth": "sure",
    "dev_key_path": " ",
    "default_home": "home one",
    "zeroconf": "perhaps",
    "log_level": "verbose",
    "ws_allow_no_origin": "sometimes",
    "ws_max_connections_per_user": "0",
    "ws_handshakes_per_minute": "0",
    "ws_max_message_bytes": "100",
    "advertise_host": "thermo.local",
    "internal_token_path": " ",
}


def test_ingress_permissions_and_the_dashboards_client_id() -> None:
    config = load_config(["--dev-auth"], env={})
    assert config.ingress_permissions == ("read:devices", "write:devices")
    assert config.auth0_client_id is None
    config = load_config(
        [*AUTH, "--ingress-permissions", "read:devices, admin read:devices", "--auth0-client-id", "AbC123xyz"], env={}
    )
    assert config.ingress_permissions == ("read:devices", "admin")
    assert config.auth0_client_id == "AbC123xyz"


def test_every_option_has_an_invalid_case() -> None:
    missing = {o.name for o in OPTIONS} - set(INVALID) - {"mqtt_password"}
    assert not missing, f"add invalid examples for {missing}"


@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_option_from_env_is_named(name: str) -> None:
    option = OPTIONS_BY_NAME[name]
    value = INVALID[name]
    with pytest.raises(ConfigError) as err:
        load_config(["--dev-auth"] if name != "dev_auth" else AUTH, env={option.env: value})
    lines = str(err.value).splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"{name}: ")
    assert option.env in lines[0]  # says where the value came from


@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_option_from_options_file_is_named(name: str, tmp_path: Path) -> None:
    options = tmp_path / "options.json"
    options.write_text(json.dumps({name: INVALID[name]}))
    base = ["--dev-auth"] if name != "dev_auth" else AUTH
    with pytest.raises(ConfigError) as err:
        load_config([*base, "--options-file", str(options)], env={})
    assert str(err.value).startswith(f"{name}: ")
    assert str(options) in str(err.value)


def test_several_invalid_options_are_all_reported() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(["--mqtt-port", "x", "--http-port", "99999", "--log-level", "loud"], env={})
    names = sorted(line.split(":")[0] for line in str(err.value).splitlines())
    # Auth0 is also missing (dev_auth is off): named too, both on one line.
    assert names == ["auth0_domain and auth0_audience", "http_port", "log_level", "mqtt_port"]


def test_auth0_required_unless_dev_auth() -> None:
    with pytest.raises(ConfigError, match=r"auth0_audience: required") as err:
        load_config(["--auth0-domain", "t.auth0.com"], env={})
    assert "auth0_domain" not in str(err.value)
    assert load_config(["--dev-auth"], env={}).auth is None


def test_client_certificate_needs_its_key(tmp_path: Path) -> None:
    cert = tmp_path / "cert.pem"
    cert.write_text("x")
    with pytest.raises(ConfigError, match=r"^mqtt_key_file: required when mqtt_cert_file is set$"):
        load_config(["--dev-auth", "--mqtt-cert-file", str(cert)], env={})


def test_unknown_key_in_options_file(tmp_path: Path) -> None:
    options = tmp_path / "options.json"
    options.write_text(json.dumps({"mqtt_hots": "x"}))
    with pytest.raises(ConfigError, match=r"^mqtt_hots: unknown option"):
        load_config(["--dev-auth", "--options-file", str(options)], env={})


def test_unreadable_or_missing_options_file(tmp_path: Path) -> None:
    broken = tmp_path / "options.json"
    broken.write_text("{not json")
    with pytest.raises(ConfigError, match=r"^options_file: .* not readable JSON"):
        load_config(["--dev-auth", "--options-file", str(broken)], env={})
    with pytest.raises(ConfigError, match=r"^options_file: .* does not exist"):
        load_config(["--dev-auth", "--options-file", str(tmp_path / "missing.json")], env={})
    broken.write_text("[1, 2]")
    with pytest.raises(ConfigError, match=r"^options_file: .* JSON object"):
        load_config(["--dev-auth", "--options-file", str(broken)], env={})


def test_unknown_cli_flag_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"command line: unrecognized arguments: --mqtt-hots"):
        load_config(["--mqtt-hots", "x"], env={})


def test_secrets_never_shown(tmp_path: Path) -> None:
    password = "pa55-w0rd-secret"
    token = "supervisor-token-secret"
    env = {
        "THERMO_BRIDGE_MQTT_PASSWORD": password,
        "THERMO_BRIDGE_STORE_URL": f"postgresql://thermo:{password}@db.example.com/thermo?password={password}",
        "SUPERVISOR_TOKEN": token,
        "THERMO_BRIDGE_OPTIONS_FILE": str(tmp_path / "options.json"),
    }
    (tmp_path / "options.json").write_text(json.dumps({"dev_auth": True}))
    config = load_config(["--dev-auth"], env=env)
    assert config.mqtt.password == password  # usable...
    assert config.supervisor_token == token
    for text in (repr(config), str(config), repr(config.mqtt), json.dumps(config.describe())):
        assert password not in text  # ...but never shown
        assert token not in text
    assert "postgresql://thermo:***@db.example.com/thermo" in repr(config)


def test_secret_value_not_echoed_in_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(["--dev-auth", "--mqtt-port", "port99"], env={})
    assert "got 'port99'" in str(err.value)  # not a secret: the value helps
    options = tmp_path / "options.json"
    options.write_text(json.dumps({"mqtt_password": ["hunter2"]}))  # wrong type for a secret
    with pytest.raises(ConfigError) as err:
        load_config(["--dev-auth", "--options-file", str(options)], env={})
    assert str(err.value).startswith("mqtt_password: ")
    assert "hunter2" not in str(err.value)


def test_redact_url() -> None:
    assert redact_url("postgresql://u:p@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert redact_url("postgresql://u@h/db") == "postgresql://u@h/db"
    assert redact_url("sqlite:///data/x.db") == "sqlite:///data/x.db"
    assert "s3" not in redact_url("postgresql://h/db?user=a&password=s3")


def test_supervised_reads_options_and_uses_addon_defaults(tmp_path: Path) -> None:
    options = tmp_path / "options.json"
    options.write_text(json.dumps({"auth0_domain": "t.auth0.com", "auth0_audience": "api", "mqtt_username": None}))
    env = {"SUPERVISOR_TOKEN": "tok", "THERMO_BRIDGE_OPTIONS_FILE": str(options)}
    config = load_config([], env=env)
    assert config.supervised
    assert config.supervisor_url == "http://supervisor"
    assert config.store_url == "sqlite:////data/thermo_bridge.db"
    assert config.http_host == "0.0.0.0"  # noqa: S104 - the add-on container's default
    assert config.dev_key_path == "/data/dev_key.pem"
    assert config.mqtt.username is None  # null in options.json means unset


def test_load_config_or_exit_prints_and_exits_non_zero(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        load_config_or_exit(["--dev-auth", "--mqtt-port", "abc"], env={"THERMO_BRIDGE_MQTT_PASSWORD": "hunter2"})
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "mqtt_port: expected an integer" in err
    assert "hunter2" not in err


def test_a_fresh_add_on_without_auth0_says_so_once_and_stops_cleanly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """config.yaml's defaults (empty Auth0 settings): one line, exit 0 so the watchdog does not restart it."""
    options = tmp_path / "options.json"
    options.write_text(json.dumps({"auth0_domain": "", "auth0_audience": "", "dev_auth": False}))
    env = {"SUPERVISOR_TOKEN": "tok", "THERMO_BRIDGE_OPTIONS_FILE": str(options)}
    with pytest.raises(SystemExit) as exc:
        load_config_or_exit([], env=env)
    assert exc.value.code == 0
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "thermo-bridge-server: invalid configuration:"
    assert len(lines) == 2
    assert lines[1].strip().startswith("auth0_domain and auth0_audience: required")
    options.write_text(json.dumps({"auth0_domain": "", "auth0_audience": "", "dev_auth": True}))
    assert load_config_or_exit([], env=env).dev_auth


def test_advertise_host_is_an_address_others_can_reach() -> None:
    assert load_config(["--dev-auth", "--advertise-host", "192.168.1.20"], env={}).advertise_host == "192.168.1.20"
    assert load_config(["--dev-auth"], env={}).advertise_host is None
    with pytest.raises(ConfigError, match="advertise_host: must be an address others can reach"):
        load_config(["--dev-auth", "--advertise-host", "0.0.0.0"], env={})  # noqa: S104 - refused


def test_internal_token_path_defaults(tmp_path: Path) -> None:
    """Beside the SQLite database (the server's data), in the working directory for PostgreSQL."""
    assert load_config(["--dev-auth"], env={}).internal_token_path == "thermo_bridge_internal_token"
    beside = load_config(["--dev-auth", "--store-url", "sqlite:////var/lib/tb/db.sqlite?synchronous=full"], env={})
    assert beside.internal_token_path == "/var/lib/tb/thermo_bridge_internal_token"
    relative = load_config(["--dev-auth", "--store-url", "sqlite:data/tb.db"], env={})
    assert relative.internal_token_path == "data/thermo_bridge_internal_token"
    for no_file in ("sqlite:?synchronous=full", "sqlite:%2F", "sqlite:///data/"):
        with pytest.raises(ConfigError, match="a sqlite URL needs a file path"):
            load_config(["--dev-auth", "--store-url", no_file], env={})
    postgres = load_config(["--dev-auth", "--store-url", "postgresql://u@db/tb"], env={})
    assert postgres.internal_token_path == "thermo_bridge_internal_token"
    chosen = load_config(["--dev-auth", "--internal-token-path", str(tmp_path / "t")], env={})
    assert chosen.internal_token_path == str(tmp_path / "t")
    options = tmp_path / "options.json"
    options.write_text(json.dumps({"dev_auth": True}))
    supervised = load_config([], env={"SUPERVISOR_TOKEN": "tok", "THERMO_BRIDGE_OPTIONS_FILE": str(options)})
    assert supervised.internal_token_path == "/data/internal_token"


# --------------------------------------------------------------------------- the Supervisor


class FakeSupervisor:
    """Answers GET /services/mqtt like the Supervisor: an error until the broker add-on provides it."""

    def __init__(self, *, unavailable: int = 0, status_when_refused: int = 400) -> None:
        self.unavailable = unavailable
        self.status_when_refused = status_when_refused
        self.requests: list[str | None] = []
        self.app = web.Application()
        self.app.router.add_get("/services/mqtt", self.handle)

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append(request.headers.get("Authorization"))
        if request.headers.get("Authorization") != "Bearer tok":
            return web.json_response({"result": "error", "message": "Unauthorized"}, status=401)
        if len(self.requests) <= self.unavailable:
            return web.json_response(
                {"result": "error", "message": "No mqtt service available"}, status=self.status_when_refused
            )
        return web.json_response(
            {
                "result": "ok",
                "data": {
                    "addon": "core_mosquitto",
                    "host": "core-mosquitto",
                    "port": 1883,
                    "ssl": False,
                    "protocol": "3.1.1",
                    "username": "addons",
                    "password": "generated-secret",
                },
            }
        )


async def _supervised(server_url: str, *argv: str, token: str = "tok") -> Any:  # noqa: S107
    options = Path(tempfile.mkdtemp()) / "options.json"
    options.write_text("{}")
    env = {
        "SUPERVISOR_TOKEN": token,
        "THERMO_BRIDGE_SUPERVISOR_URL": server_url,
        "THERMO_BRIDGE_OPTIONS_FILE": str(options),
    }
    return load_config(["--dev-auth", *argv], env=env)


async def test_supervisor_service_with_retry(aiohttp_server: Any) -> None:
    fake = FakeSupervisor(unavailable=3)
    server = await aiohttp_server(fake.app)
    config = await _supervised(str(server.make_url("/")))
    async with aiohttp.ClientSession() as session:
        resolved = await resolve_supervisor_mqtt(config, session, initial_delay=0.01, max_delay=0.02)
    assert len(fake.requests) == 4
    assert set(fake.requests) == {"Bearer tok"}
    assert resolved.mqtt.host == "core-mosquitto"
    assert resolved.mqtt.port == 1883
    assert resolved.mqtt.username == "addons"
    assert resolved.mqtt.password == "generated-secret"
    assert resolved.mqtt.tls is False
    assert "generated-secret" not in repr(resolved)


async def test_supervisor_service_when_the_supervisor_errors(aiohttp_server: Any) -> None:
    fake = FakeSupervisor(unavailable=2, status_when_refused=503)
    server = await aiohttp_server(fake.app)
    config = await _supervised(str(server.make_url("/")))
    async with aiohttp.ClientSession() as session:
        resolved = await resolve_supervisor_mqtt(config, session, initial_delay=0.01, max_delay=0.02)
    assert resolved.mqtt.host == "core-mosquitto"
    assert len(fake.requests) == 3


async def test_explicit_options_override_the_service(aiohttp_server: Any) -> None:
    fake = FakeSupervisor()
    server = await aiohttp_server(fake.app)
    config = await _supervised(str(server.make_url("/")), "--mqtt-port", "8883", "--mqtt-username", "me")
    async with aiohttp.ClientSession() as session:
        resolved = await resolve_supervisor_mqtt(config, session)
    assert resolved.mqtt.host == "core-mosquitto"  # from the service
    assert resolved.mqtt.port == 8883  # explicit
    assert resolved.mqtt.username == "me"  # explicit
    assert resolved.mqtt.password == "generated-secret"  # from the service


async def test_explicit_host_skips_the_service(aiohttp_server: Any) -> None:
    fake = FakeSupervisor()
    server = await aiohttp_server(fake.app)
    config = await _supervised(str(server.make_url("/")), "--mqtt-host", "broker.lan")
    async with aiohttp.ClientSession() as session:
        resolved = await resolve_supervisor_mqtt(config, session)
    assert resolved.mqtt.host == "broker.lan"
    assert fake.requests == []


async def test_bad_supervisor_token_is_fatal(aiohttp_server: Any) -> None:
    fake = FakeSupervisor()
    server = await aiohttp_server(fake.app)
    config = await _supervised(str(server.make_url("/")), token="wrong")
    async with aiohttp.ClientSession() as session:
        with pytest.raises(SupervisorError, match="refused the add-on's token"):
            await resolve_supervisor_mqtt(config, session, initial_delay=0.01)
    assert len(fake.requests) == 1


async def test_standalone_does_not_ask_the_supervisor() -> None:
    config = load_config(["--dev-auth", "--mqtt-host", "h"], env={})
    async with aiohttp.ClientSession() as session:
        assert await resolve_supervisor_mqtt(config, session) is config
