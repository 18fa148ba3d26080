"""The server's one validated configuration.

Sources, highest precedence first: CLI flags, environment variables ``THERMO_BRIDGE_<OPTION>``,
the add-on's ``/data/options.json`` (read when running under the Supervisor or when the file
exists), then defaults. Every value, whatever its source, goes through the same voluptuous
schema, and every invalid option yields one line naming the option and where the value came
from. Secrets (passwords, the Supervisor token, credentials inside a database URL) never appear
in reprs, error messages or the start-up log line.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import math
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import voluptuous as vol

from thermo_bridge_protocol import DEFAULT_BASE_TOPIC, ProtocolError, validate_base_topic

ENV_PREFIX = "THERMO_BRIDGE_"
DEFAULT_OPTIONS_FILE = "/data/options.json"
DEFAULT_SUPERVISOR_URL = "http://supervisor"
REDACTED = "***"
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")

_CLIENT_ID_RE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_GROUP_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_HOME_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,62}[A-Za-z0-9])?"
_DOMAIN_RE = re.compile(rf"{_LABEL}(\.{_LABEL})*(:\d{{1,5}})?")
_PERMISSION_RE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_ORIGIN_RE = re.compile(r"https?://[A-Za-z0-9.-]+(:\d{1,5})?|https?://\[[0-9A-Fa-f:]+\](:\d{1,5})?")
MQTT_OPTIONS = frozenset(
    {"mqtt_host", "mqtt_port", "mqtt_username", "mqtt_password", "mqtt_tls", "mqtt_ca_file", "mqtt_cert_file"}
)


class ConfigError(Exception):
    """An invalid configuration; the message names every offending option (never a secret's value)."""


# --------------------------------------------------------------------------- settings objects


def redact_url(url: str) -> str:
    """``url`` with any password (userinfo or ``password=`` query parameter) replaced by ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return REDACTED
    netloc = parts.netloc
    if "@" not in netloc and "pass" not in parts.query.lower():
        return url  # nothing secret (and urlunsplit would turn sqlite:///x into sqlite:/x)
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, sep, _password = userinfo.partition(":")
        netloc = f"{user}{':' + REDACTED if sep else ''}@{hostport}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, REDACTED if "pass" in k.lower() else v) for k, v in pairs], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _safe_repr(obj: object, secret: frozenset[str], urls: frozenset[str] = frozenset()) -> str:
    items = []
    for f in fields(obj):  # type: ignore[arg-type]
        value = getattr(obj, f.name)
        if f.name in secret and value is not None:
            shown = repr(REDACTED)
        elif f.name in urls and isinstance(value, str):
            shown = repr(redact_url(value))
        else:
            shown = repr(value)
        items.append(f"{f.name}={shown}")
    return f"{type(obj).__name__}({', '.join(items)})"


DEFAULT_HOMES_CLAIM = "https://thermo-bridge.dev/homes"
"""The access-token claim that lists a user's homes unless ``auth0_homes_claim`` names another."""

RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
"""Signature algorithms that can be checked against a JWKS of RSA keys."""


@dataclass(frozen=True)
class AuthSettings:
    """Where tokens come from and what they must say (defaults match an Auth0 tenant)."""

    issuer: str  # exactly "https://<domain>/"
    audience: str
    jwks_url: str | None = None  # default: issuer + ".well-known/jwks.json"
    algorithms: tuple[str, ...] = ("RS256",)
    leeway: float = 30
    jwks_cache_seconds: float = 600
    unknown_kid_cooldown: float = 60
    permissions_claim: str = "permissions"
    scope_claim: str = "scope"
    homes_claim: str = DEFAULT_HOMES_CLAIM
    read_permission: str = "read:devices"
    write_permission: str = "write:devices"
    admin_permission: str = "admin"
    max_token_bytes: int = 8192
    # After a failed fetch, requests that need a fetch wait this long before the next try.
    jwks_retry_seconds: float = 5

    def __post_init__(self) -> None:
        if not self.algorithms:
            raise ValueError("algorithms must not be empty")
        if bad := [alg for alg in self.algorithms if alg not in RSA_ALGORITHMS]:
            # Only asymmetric RSA algorithms can be verified against a JWKS of RSA keys;
            # allowing HS* would let the public key be used as an HMAC secret.
            raise ValueError(f"unsupported algorithms {bad}: only RSA signature algorithms are allowed")
        if not self.issuer:
            raise ValueError("issuer must not be empty")
        if not self.audience:
            raise ValueError("audience must not be empty")

    @property
    def effective_jwks_url(self) -> str:
        """The JWKS location (Auth0 serves it under the issuer)."""
        if self.jwks_url:
            return self.jwks_url
        return self.issuer.rstrip("/") + "/.well-known/jwks.json"


@dataclass(frozen=True)
class MqttSettings:
    """How the server reaches the broker and what it subscribes to."""

    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = None
    client_id: str = "thermo_bridge_server"
    tls: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    tls_insecure: bool = False
    keepalive: int = 30
    session_expiry: int = 86_400  # seconds the broker keeps our session (and queues QoS 1) while we are away
    receive_maximum: int = 65_535  # unacked QoS 1 messages the broker may have in flight to us
    base_topic: str = DEFAULT_BASE_TOPIC
    shared_group: str | None = None
    reconnect_min: float = 0.5
    reconnect_max: float = 30.0
    connect_timeout: float = 10.0
    publish_timeout: float = 10.0

    @property
    def use_tls(self) -> bool:
        """TLS is on when asked for or when any TLS file is given."""
        return self.tls or bool(self.ca_file or self.cert_file)

    def __repr__(self) -> str:
        return _safe_repr(self, frozenset({"password"}))


@dataclass(frozen=True)
class ServerConfig:
    """Everything the server needs; built by :func:`load_config`."""

    mqtt: MqttSettings
    store_url: str
    retention_days: float
    dead_letter_limit: int
    command_timeout: float
    http_host: str
    http_port: int
    max_body_bytes: int
    cors_origins: tuple[str, ...]
    trusted_proxies: tuple[str, ...]
    rate_limit_per_minute: int
    auth: AuthSettings | None  # None only with dev_auth
    dev_auth: bool
    dev_key_path: str
    default_home: str
    zeroconf: bool
    log_level: str
    homes_claim: str = DEFAULT_HOMES_CLAIM
    rate_limit_unauthenticated_per_minute: int = 60
    internal_token_path: str = "thermo_bridge_internal_token"  # noqa: S105 - a file name, not the token
    advertise_host: str | None = None
    ws_allow_no_origin: bool = False
    auth0_client_id: str | None = None
    ingress: bool = False
    ingress_permissions: tuple[str, ...] = ("read:devices", "write:devices")
    ws_max_connections_per_user: int = 20
    ws_handshakes_per_minute: int = 120
    ws_max_message_bytes: int = 64 * 1024
    # Under the Supervisor: where its API is and the token for it (None when standalone).
    supervisor_url: str | None = None
    supervisor_token: str | None = None
    # MQTT options the user set explicitly: they win over the Supervisor's MQTT service.
    mqtt_explicit: frozenset[str] = field(default_factory=frozenset)
    options_file: str | None = None

    @property
    def supervised(self) -> bool:
        """Running as a Home Assistant add-on."""
        return self.supervisor_token is not None

    def __repr__(self) -> str:
        return _safe_repr(self, frozenset({"supervisor_token"}), frozenset({"store_url"}))

    def describe(self) -> dict[str, Any]:
        """A log-safe summary for the start-up log line (secrets redacted)."""
        mqtt = self.mqtt
        return {
            "mqtt": f"{'mqtts' if mqtt.use_tls else 'mqtt'}://{mqtt.host}:{mqtt.port}",
            "mqtt_username": mqtt.username,
            "mqtt_password": REDACTED if mqtt.password else None,
            "mqtt_client_id": mqtt.client_id,
            "base_topic": mqtt.base_topic,
            "shared_group": mqtt.shared_group,
            "store_url": redact_url(self.store_url),
            "retention_days": self.retention_days,
            "http": f"{self.http_host}:{self.http_port}",
            "auth": "dev (self-issued tokens)" if self.dev_auth else (self.auth.issuer if self.auth else None),
            "audience": self.auth.audience if self.auth else None,
            "cors_origins": list(self.cors_origins),
            "trusted_proxies": list(self.trusted_proxies),
            "zeroconf": self.zeroconf,
            "advertise_host": self.advertise_host,
            "supervised": self.supervised,
        }


# --------------------------------------------------------------------------- validators


def _boolean(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
    raise vol.Invalid("expected a boolean (true/false, yes/no, on/off, 1/0)")


def _integer(lo: int, hi: int) -> Callable[[object], int]:
    def check(value: object) -> int:
        if isinstance(value, bool):
            raise vol.Invalid("expected an integer")
        if isinstance(value, str):
            try:
                value = int(value.strip())
            except ValueError:
                raise vol.Invalid("expected an integer") from None
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int):
            raise vol.Invalid("expected an integer")
        if not lo <= value <= hi:
            raise vol.Invalid(f"must be between {lo} and {hi}")
        return value

    return check


def _number(lo: float, hi: float, *, exclusive_lo: bool = False) -> Callable[[object], float]:
    def check(value: object) -> float:
        if isinstance(value, bool):
            raise vol.Invalid("expected a number")
        if isinstance(value, str):
            try:
                value = float(value.strip())
            except ValueError:
                raise vol.Invalid("expected a number") from None
        if not isinstance(value, (int, float)) or math.isnan(value):
            raise vol.Invalid("expected a number")
        if (value <= lo if exclusive_lo else value < lo) or value > hi:
            raise vol.Invalid(f"must be {'greater than' if exclusive_lo else 'at least'} {lo:g} and at most {hi:g}")
        return float(value)

    return check


def _text(pattern: re.Pattern[str] | None = None, what: str = "") -> Callable[[object], str]:
    def check(value: object) -> str:
        if not isinstance(value, str):
            raise vol.Invalid("expected a string")
        value = value.strip()
        if not value:
            raise vol.Invalid("must not be empty")
        if pattern is not None and not pattern.fullmatch(value):
            raise vol.Invalid(f"must be {what}")
        return value

    return check


def _secret(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise vol.Invalid("expected a non-empty string")
    return value


def _file(value: object) -> str:
    path = _text()(value)
    if not Path(path).is_file():
        raise vol.Invalid(f"file {path!r} does not exist or is not a regular file")
    return path


def _base_topic(value: object) -> str:
    try:
        return validate_base_topic(_text()(value))
    except ProtocolError as err:
        raise vol.Invalid(err.message) from None


def _store_url(value: object) -> str:
    url = _text()(value)
    if url.startswith("sqlite:"):
        path = sqlite_path(url)
        if not path or path.endswith("/"):
            raise vol.Invalid("a sqlite URL needs a file path, e.g. sqlite:///data/thermo_bridge.db")
        return url
    if url.startswith(("postgresql://", "postgres://")):
        return url
    raise vol.Invalid("must start with sqlite: (e.g. sqlite:///data/thermo_bridge.db) or postgresql://")


def _domain(value: object) -> str:
    text = _text()(value).removeprefix("https://").rstrip("/")
    if not _DOMAIN_RE.fullmatch(text):
        raise vol.Invalid("must be the Auth0 tenant's domain, e.g. my-tenant.eu.auth0.com")
    return text.lower()


def _ipv4(value: object) -> str:
    text = _text()(value)
    try:
        address = ipaddress.IPv4Address(text)
    except ValueError:
        raise vol.Invalid("must be an IPv4 address, e.g. 192.168.1.20") from None
    if address.is_unspecified or address.is_multicast:
        raise vol.Invalid("must be an address others can reach, not 0.0.0.0 or a multicast address")
    return str(address)


def _url(value: object) -> str:
    url = _text()(value)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise vol.Invalid("must be an http(s) URL")
    return url


def _origins(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [item for item in (part.strip() for part in value.split(",")) if item]
    if not isinstance(value, (list, tuple)):
        raise vol.Invalid("expected a list of origins (or a comma-separated string)")
    out: list[str] = []
    for item in value:
        if not isinstance(item, str) or not _ORIGIN_RE.fullmatch(item.strip().rstrip("/")):
            raise vol.Invalid(f"{str(item)[:80]!r} is not an origin like https://app.example.com")
        out.append(item.strip().rstrip("/"))
    return tuple(out)


def _networks(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [item for item in (part.strip() for part in value.split(",")) if item]
    if not isinstance(value, (list, tuple)):
        raise vol.Invalid("expected a list of addresses or networks (or a comma-separated string)")
    out: list[str] = []
    for item in value:
        try:
            out.append(str(ipaddress.ip_network(str(item).strip(), strict=False)))
        except ValueError:
            raise vol.Invalid(f"{str(item)[:80]!r} is not an IP address or network like 10.0.0.0/8") from None
    return tuple(out)


def _permissions(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        value = value.replace(",", " ").split()
    if not isinstance(value, (list, tuple)):
        raise vol.Invalid("expected a list of permission names (or a comma-separated string)")
    out: list[str] = []
    for item in value:
        if not isinstance(item, str) or not _PERMISSION_RE.fullmatch(item.strip()):
            raise vol.Invalid(f"{str(item)[:80]!r} is not a permission name like read:devices")
        if item.strip() not in out:
            out.append(item.strip())
    return tuple(out)


# Claims the server reads for other purposes, or that RFC 7519 registers: never a homes claim.
_RESERVED_CLAIMS = frozenset({"iss", "sub", "aud", "exp", "nbf", "iat", "jti", "azp", "scope", "permissions"})


def _claim_name(value: object) -> str:
    name = _text()(value)
    if len(name) > 256 or not name.isprintable():
        raise vol.Invalid("must be at most 256 printable characters")
    if name in _RESERVED_CLAIMS:
        raise vol.Invalid(
            f"{name!r} is a claim with another meaning; use a namespaced name like https://example.com/homes"
        )
    return name


def _log_level(value: object) -> str:
    if not isinstance(value, str) or value.strip().lower() not in LOG_LEVELS:
        raise vol.Invalid(f"must be one of {', '.join(LOG_LEVELS)}")
    return value.strip().lower()


# --------------------------------------------------------------------------- the options


@dataclass(frozen=True)
class Option:
    """One configuration option: its validator, default and help, shared by every source."""

    name: str
    validator: Callable[[object], Any]
    help: str
    default: Any = None
    supervised_default: Any = None  # when running under the Supervisor (None: same as default)
    secret: bool = False
    flag: bool = False  # a boolean CLI flag (--x / --no-x)

    @property
    def env(self) -> str:
        """The environment variable."""
        return ENV_PREFIX + self.name.upper()

    @property
    def cli(self) -> str:
        """The CLI flag."""
        return "--" + self.name.replace("_", "-")


OPTIONS: tuple[Option, ...] = (
    Option("mqtt_host", _text(), "MQTT broker host", "127.0.0.1"),
    Option("mqtt_port", _integer(1, 65535), "MQTT broker port", 1883),
    Option("mqtt_username", _text(), "MQTT username"),
    Option("mqtt_password", _secret, "MQTT password", secret=True),
    Option(
        "mqtt_client_id",
        _text(_CLIENT_ID_RE, "1-64 of A-Z a-z 0-9 _ . : -"),
        "fixed MQTT client id (the persistent session's key)",
        "thermo_bridge_server",
    ),
    Option("mqtt_tls", _boolean, "connect to the broker with TLS", default=False, flag=True),
    Option("mqtt_ca_file", _file, "CA certificate file (PEM) that signed the broker's certificate"),
    Option("mqtt_cert_file", _file, "client certificate file (PEM) for mutual TLS"),
    Option("mqtt_key_file", _file, "client private key file (PEM) for mutual TLS"),
    Option("mqtt_tls_insecure", _boolean, "do not check the broker certificate's host name", default=False, flag=True),
    Option("mqtt_keepalive", _integer(5, 3600), "MQTT keepalive seconds", 30),
    Option("mqtt_session_expiry", _integer(0, 2**32 - 1), "seconds the broker keeps our session for us", 86_400),
    Option("base_topic", _base_topic, "MQTT base topic of the devices", DEFAULT_BASE_TOPIC),
    Option("shared_group", _text(_GROUP_RE, "1-64 of A-Z a-z 0-9 _ -"), "MQTT v5 shared subscription group"),
    Option("store_url", _store_url, "sqlite:///path.db or postgresql://...", "sqlite:thermo_bridge.db", "sqlite:////data/thermo_bridge.db"),
    Option("retention_days", _number(0, 36_500, exclusive_lo=True), "days of history kept", 30.0),
    Option("dead_letter_limit", _integer(0, 10_000_000), "rejected messages kept for inspection", 1000),
    Option("command_timeout", _number(0.1, 3600), "seconds before an unacknowledged command times out", 10.0),
    Option("http_host", _text(), "HTTP listen address", "127.0.0.1", "0.0.0.0"),  # noqa: S104 - the add-on's container
    Option("http_port", _integer(1, 65535), "HTTP listen port", 8099),
    Option("max_body_bytes", _integer(256, 16 * 1024 * 1024), "largest accepted request body", 64 * 1024),
    Option("cors_origins", _origins, "web-app origins allowed by CORS (comma-separated)", ()),
    Option("rate_limit_per_minute", _integer(1, 1_000_000), "requests per minute per user", 120),
    Option(
        "trusted_proxies",
        _networks,
        "reverse proxies whose X-Forwarded-For names the client for the per-address limits (comma-separated)",
        (),
    ),
    Option(
        "rate_limit_unauthenticated_per_minute",
        _integer(1, 1_000_000),
        "requests refused with 401 per minute per client address before 429",
        60,
    ),
    Option("auth0_domain", _domain, "Auth0 tenant domain (issuer https://<domain>/)"),
    Option("auth0_audience", _text(), "Auth0 API audience (identifier)"),
    Option(
        "auth0_client_id",
        _text(_CLIENT_ID_RE, "an Auth0 client id (1-64 of A-Z a-z 0-9 _ . : -)"),
        "client id of the Auth0 Single Page Application the dashboard signs in with (public, not a secret)",
    ),
    Option("auth0_jwks_url", _url, "JWKS URL (default https://<domain>/.well-known/jwks.json)"),
    Option("auth0_homes_claim", _claim_name, "access-token claim listing the user's homes", DEFAULT_HOMES_CLAIM),
    Option("auth_leeway", _number(0, 300), "clock skew tolerated on exp/nbf/iat, seconds", 30.0),
    Option("dev_auth", _boolean, "DEV ONLY: the server issues its own tokens", default=False, flag=True),
    Option("dev_key_path", _text(), "DEV ONLY: signing key file", "thermo_bridge_dev_key.pem", "/data/dev_key.pem"),
    Option("default_home", _text(_HOME_RE, "1-64 of A-Z a-z 0-9 _ -"), "home of newly discovered devices", "default"),
    Option("zeroconf", _boolean, "advertise the server with zeroconf", default=True, flag=True),
    Option("advertise_host", _ipv4, "IPv4 address the zeroconf advertisement gives (default: this machine's)"),
    Option(
        "internal_token_path",
        _text(),
        "file of the token Home Assistant's integration reads the server's status with (created 0600; "
        "default: next to the SQLite database)",
        None,
        "/data/internal_token",
    ),
    Option(
        "ingress",
        _boolean,
        "trust Home Assistant's ingress proxy (172.30.32.2): panel tokens for its X-Remote-User-Id "
        "(on by default under the Supervisor only)",
        default=False,
        supervised_default=True,
        flag=True,
    ),
    Option(
        "ingress_permissions",
        _permissions,
        "permissions of Home Assistant users in the add-on's panel (ingress), on every home",
        ("read:devices", "write:devices"),
    ),
    Option("ws_allow_no_origin", _boolean, "accept WebSockets without Origin (not browsers)", default=False, flag=True),
    Option("ws_max_connections_per_user", _integer(1, 10_000), "WebSocket and SSE streams one user may hold", 20),
    Option("ws_handshakes_per_minute", _integer(1, 1_000_000), "WebSocket handshakes per minute per address", 120),
    Option("ws_max_message_bytes", _integer(1024, 16 * 1024 * 1024), "largest WebSocket message accepted", 64 * 1024),
    Option("log_level", _log_level, "debug, info, warning, error or critical", "info"),
)  # fmt: skip
OPTIONS_BY_NAME = {option.name: option for option in OPTIONS}


# --------------------------------------------------------------------------- loading


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"command line: {message}")


def build_parser(prog: str = "thermo-bridge-server") -> argparse.ArgumentParser:
    """The CLI: one flag per option (defaults left out so the other sources can apply)."""
    parser = _Parser(
        prog=prog,
        description="thermo_bridge add-on server. Every flag can also be set as an environment variable "
        f"{ENV_PREFIX}<OPTION> or in the add-on's options.json.",
        argument_default=argparse.SUPPRESS,
    )
    parser.add_argument("--options-file", help=f"add-on options file (default {DEFAULT_OPTIONS_FILE})")
    for option in OPTIONS:
        help_text = f"{option.help} (env {option.env})"
        if option.flag:
            parser.add_argument(option.cli, dest=option.name, action=argparse.BooleanOptionalAction, help=help_text)
        else:
            parser.add_argument(option.cli, dest=option.name, metavar=option.name.upper(), help=help_text)
    return parser


def _read_options_file(path: str, *, required: bool) -> dict[str, Any]:
    file = Path(path)
    if not file.is_file():
        if required:
            raise ConfigError(f"options_file: {path!r} does not exist")
        return {}
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"options_file: {path!r} is not readable JSON: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"options_file: {path!r} must hold a JSON object")
    return data


def load_config(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> ServerConfig:
    """Merge CLI > env > options file > defaults, validate, and build the ServerConfig.

    Raises ConfigError whose message has one line per invalid option, each naming the option.
    """
    env = os.environ if env is None else env
    cli = vars(build_parser().parse_args(list(sys.argv[1:] if argv is None else argv)))
    supervisor_token = env.get("SUPERVISOR_TOKEN") or None
    supervised = supervisor_token is not None

    explicit_file = cli.pop("options_file", None) or env.get(ENV_PREFIX + "OPTIONS_FILE") or None
    options_path = explicit_file or DEFAULT_OPTIONS_FILE
    file_values: dict[str, Any] = {}
    if explicit_file or supervised or Path(options_path).is_file():
        file_values = _read_options_file(options_path, required=bool(explicit_file))

    raw: dict[str, Any] = {}
    sources: dict[str, str] = {}
    errors: list[str] = [
        f"{key}: unknown option in {options_path}" for key in file_values if key not in OPTIONS_BY_NAME
    ]
    for option in OPTIONS:
        if option.name in cli:
            raw[option.name], sources[option.name] = cli[option.name], f"command line {option.cli}"
        elif env.get(option.env, "") != "":
            raw[option.name], sources[option.name] = env[option.env], f"environment {option.env}"
        elif file_values.get(option.name) not in (None, ""):
            raw[option.name], sources[option.name] = file_values[option.name], options_path

    values: dict[str, Any] = {}
    for option in OPTIONS:
        if option.name not in raw:
            default = option.supervised_default if supervised and option.supervised_default is not None else None
            values[option.name] = option.default if default is None else default
            continue
        try:
            values[option.name] = vol.Schema(option.validator)(raw[option.name])
        except vol.Invalid as err:
            shown = "" if option.secret else f", got {str(raw[option.name])[:80]!r}"
            errors.append(f"{option.name}: {err.msg} (from {sources[option.name]}{shown})")
    errors.extend(_cross_checks(values, sources))
    if errors:
        raise ConfigError("\n".join(errors))

    mqtt = MqttSettings(
        host=values["mqtt_host"],
        port=values["mqtt_port"],
        username=values["mqtt_username"],
        password=values["mqtt_password"],
        client_id=values["mqtt_client_id"],
        tls=values["mqtt_tls"],
        ca_file=values["mqtt_ca_file"],
        cert_file=values["mqtt_cert_file"],
        key_file=values["mqtt_key_file"],
        tls_insecure=values["mqtt_tls_insecure"],
        keepalive=values["mqtt_keepalive"],
        session_expiry=values["mqtt_session_expiry"],
        base_topic=values["base_topic"],
        shared_group=values["shared_group"],
    )
    auth = None
    if values["auth0_domain"] and values["auth0_audience"]:
        auth = AuthSettings(
            issuer=f"https://{values['auth0_domain']}/",
            audience=values["auth0_audience"],
            jwks_url=values["auth0_jwks_url"],
            leeway=values["auth_leeway"],
            homes_claim=values["auth0_homes_claim"],
        )
    return ServerConfig(
        mqtt=mqtt,
        store_url=values["store_url"],
        retention_days=values["retention_days"],
        dead_letter_limit=values["dead_letter_limit"],
        command_timeout=values["command_timeout"],
        http_host=values["http_host"],
        http_port=values["http_port"],
        max_body_bytes=values["max_body_bytes"],
        cors_origins=tuple(values["cors_origins"]),
        trusted_proxies=tuple(values["trusted_proxies"]),
        rate_limit_per_minute=values["rate_limit_per_minute"],
        auth=auth,
        dev_auth=values["dev_auth"],
        dev_key_path=values["dev_key_path"],
        default_home=values["default_home"],
        zeroconf=values["zeroconf"],
        log_level=values["log_level"],
        homes_claim=values["auth0_homes_claim"],
        rate_limit_unauthenticated_per_minute=values["rate_limit_unauthenticated_per_minute"],
        ws_handshakes_per_minute=values["ws_handshakes_per_minute"],
        internal_token_path=values["internal_token_path"] or _next_to_database(values["store_url"]),
        advertise_host=values["advertise_host"],
        ws_allow_no_origin=values["ws_allow_no_origin"],
        auth0_client_id=values["auth0_client_id"],
        ingress=values["ingress"],
        ingress_permissions=tuple(values["ingress_permissions"]),
        ws_max_connections_per_user=values["ws_max_connections_per_user"],
        ws_max_message_bytes=values["ws_max_message_bytes"],
        supervisor_url=(env.get(ENV_PREFIX + "SUPERVISOR_URL") or DEFAULT_SUPERVISOR_URL) if supervised else None,
        supervisor_token=supervisor_token,
        mqtt_explicit=frozenset(name for name in MQTT_OPTIONS if name in raw),
        options_file=options_path if file_values else None,
    )


def sqlite_path(store_url: str) -> str | None:
    """The database file of a ``sqlite:`` store URL (None for another scheme).

    ``sqlite:///abs/path.db`` and ``sqlite:////abs/path.db`` both mean ``/abs/path.db``;
    ``sqlite:relative.db`` is relative to the working directory; the query holds options.
    """
    scheme, _, rest = store_url.partition(":")
    if scheme.lower() != "sqlite":
        return None
    path = rest.partition("?")[0]
    if path.startswith("//"):
        path = "/" + path.lstrip("/")
    return unquote(path)


def _next_to_database(store_url: str) -> str:
    """The internal token's default file: beside the SQLite database, else in the working directory."""
    name = "thermo_bridge_internal_token"
    path = sqlite_path(store_url)
    return name if path is None else str(Path(path).with_name(name))


def _cross_checks(values: Mapping[str, Any], sources: Mapping[str, str]) -> list[str]:
    """Rules across options; options that failed validation themselves are absent from ``values``."""
    errors = []
    if values.get("dev_auth") is False:
        missing = [name for name in ("auth0_domain", "auth0_audience") if not values.get(name) and name not in sources]
        if missing:
            # One line for the pair: under the Supervisor this is what a fresh install logs.
            errors.append(
                f"{' and '.join(missing)}: required (your Auth0 tenant's domain and the audience of its API for "
                "Thermo Bridge) unless dev_auth is enabled"
            )
    if values.get("mqtt_cert_file") and not values.get("mqtt_key_file") and "mqtt_key_file" not in sources:
        errors.append("mqtt_key_file: required when mqtt_cert_file is set")
    if values.get("mqtt_key_file") and not values.get("mqtt_cert_file") and "mqtt_cert_file" not in sources:
        errors.append("mqtt_cert_file: required when mqtt_key_file is set")
    return errors


def load_config_or_exit(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> ServerConfig:
    """``load_config`` for ``main()``: print the problems to stderr and exit.

    Status 2 when standalone. Under the Supervisor, 0: restarting cannot fix a configuration,
    and a non-zero exit makes the Supervisor's watchdog restart the add-on again and again; a
    clean exit leaves it stopped with these lines in its log.
    """
    env = os.environ if env is None else env
    try:
        return load_config(argv, env)
    except ConfigError as err:
        print(f"thermo-bridge-server: invalid configuration:\n  {str(err).replace('\n', '\n  ')}", file=sys.stderr)
        raise SystemExit(0 if env.get("SUPERVISOR_TOKEN") else 2) from None


def with_mqtt(config: ServerConfig, **changes: Any) -> ServerConfig:  # noqa: ANN401 - dataclasses.replace
    """A copy of ``config`` with some MQTT settings replaced."""
    return replace(config, mqtt=replace(config.mqtt, **changes))
