"""Builds the server from a ServerConfig: store, MQTT transport, ingest, auth, API, background work.

Start-up order (``_start``): store (migrations) → MQTT transport → ingest (subscribes,
starts the command timeout sweep) → background tasks (JWKS prefetch, retention) →
zeroconf; shutdown runs it backwards so nothing is lost: stop advertising and background
work, stop the ingest taking new messages, close the store (its writer commits everything
queued, which lets the ingest acknowledge those QoS 1 messages), then disconnect from the
broker. The broker keeps our persistent session, so whatever arrives while we are down is
delivered when we return.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import importlib.metadata
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from .access import AccessPolicy, Permissions
from .auth import Authenticator
from .auth.bearer import auth_middleware
from .auth.devauth import DevIssuer
from .auth.ingress import IngressIssuer
from .auth.internal import load_or_create_internal_token
from .config import AuthSettings, ServerConfig
from .discovery import Advertiser
from .http import API_PREFIX, HttpContext, HttpSettings, InternalStatus, middlewares, setup_http
from .http.middlewares import INGRESS_PROXY, auth_origin, ingress_origin_allowed
from .http.openapi import build_document
from .ingest import Ingest
from .metrics import HttpCounters, Metrics, Throughput
from .mqtt import MqttTransport
from .ratelimit import ClientAddress, RateLimiter
from .realtime import SELF_AUTHENTICATING, Realtime, RealtimeSettings, setup_realtime
from .store import create_store
from .store.base import Store
from .store.retention import run_retention
from .supervisor import SupervisorError, announce

_LOGGER = logging.getLogger(__name__)

RETENTION_INTERVAL = 3600.0
SHUTDOWN_TIMEOUT = 10.0
MAX_HEADER_FIELD_BYTES = 16_384
THROUGHPUT_SAMPLE_INTERVAL = 5.0


@functools.cache
def server_version() -> str:
    """The installed package version (a source checkout without metadata says 0.0.0); read once."""
    try:
        return importlib.metadata.version("thermo-bridge")
    except importlib.metadata.PackageNotFoundError:
        return "0.0.0"


COMPONENTS: web.AppKey[Components] = web.AppKey("components")


@dataclass
class Components:
    """Everything the app owns, exposed for tests and ``__main__``."""

    config: ServerConfig
    store: Store
    transport: MqttTransport
    ingest: Ingest
    metrics: Metrics
    authenticator: Authenticator
    session: aiohttp.ClientSession
    realtime: Realtime
    internal_token: str
    throughput: Throughput
    dev_issuer: DevIssuer | None = None
    advertiser: Advertiser | None = None
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    port: int | None = None  # the port actually bound (for zeroconf); set by __main__

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        """A background task that is logged if it dies and cancelled at shutdown."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        task.add_done_callback(_log_task_end)
        self.tasks.append(task)


def _log_task_end(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and (err := task.exception()) is not None:
        _LOGGER.error("Background task %s died", task.get_name(), exc_info=err)


def dev_issuer_url(config: ServerConfig) -> str:
    """The dev issuer is the server itself; tokens name it as http://localhost:<port>/."""
    return f"http://localhost:{config.http_port}/"


async def create_app(config: ServerConfig, *, store: Store | None = None) -> web.Application:
    """The aiohttp application; components start with the app (``cleanup_ctx``) and stop with it.

    Raises ValueError (a store URL or auth setting that cannot work) or DevAuthError (an
    unusable dev key file) with a message for the user; nothing is left open then.
    """
    store = store or create_store(
        config.store_url,
        retention_days=config.retention_days,
        dead_letter_limit=config.dead_letter_limit,
        default_home=config.default_home,
    )
    # Before the session: an unusable token file raises with nothing open yet.
    internal_token, created = await asyncio.to_thread(load_or_create_internal_token, config.internal_token_path)
    if created:
        _LOGGER.info(
            "Created the internal token in %s: Home Assistant's Thermo Bridge integration reads the server's "
            "status with it (the add-on hands it over by itself; to link a server found on the network, "
            "paste it from that file)",
            config.internal_token_path,
        )
    # The panel's signing key (RSA generation: a thread), only where ingress is trusted.
    ingress = await asyncio.to_thread(IngressIssuer, config.ingress_permissions) if config.ingress else None
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15))
    try:
        authenticator, dev_issuer = await _authenticator(config, session, ingress)
    except BaseException:
        await session.close()
        raise
    auth_settings = authenticator.settings
    transport = MqttTransport(config.mqtt)
    ingest = Ingest(
        store,
        transport,
        base_topic=config.mqtt.base_topic,
        command_timeout=config.command_timeout,
        shared_group=config.mqtt.shared_group,
    )
    permissions = Permissions(
        read=auth_settings.read_permission,
        write=auth_settings.write_permission,
        admin=auth_settings.admin_permission,
    )
    policy = AccessPolicy(store, permissions)
    version = server_version()
    # One bucket per user for REST requests and WebSocket commands alike.
    limiter = RateLimiter(config.rate_limit_per_minute)
    # Under ingress every panel user arrives through the Supervisor's proxy, which names them
    # in X-Forwarded-For: counted by that, one household's reconnects do not share one budget.
    proxies = (*config.trusted_proxies, INGRESS_PROXY) if ingress is not None else config.trusted_proxies
    client_address = ClientAddress(proxies)
    realtime = Realtime(
        store,
        authenticator,
        policy,
        ingest,
        RealtimeSettings(
            version=version,
            permissions=permissions,
            allowed_origins=config.cors_origins,
            allow_no_origin=config.ws_allow_no_origin,
            max_connections_per_user=config.ws_max_connections_per_user,
            max_message_bytes=config.ws_max_message_bytes,
            handshakes_per_minute=config.ws_handshakes_per_minute,
            proxied_origin=ingress_origin_allowed if ingress is not None else None,
            client_address=client_address,
        ),
        limiter,
    )
    metrics = Metrics(
        http=HttpCounters(),
        ingest=ingest,
        transport=transport,
        store_stats=store.stats,
        transport_stats=transport.stats_dict,
        realtime_stats=realtime.figures,
    )
    components = Components(
        config=config,
        store=store,
        transport=transport,
        ingest=ingest,
        metrics=metrics,
        authenticator=authenticator,
        session=session,
        realtime=realtime,
        internal_token=internal_token,
        throughput=Throughput(lambda: ingest.messages_in),
        dev_issuer=dev_issuer,
    )
    app = web.Application(
        middlewares=middlewares(
            auth_middleware(authenticator, protected_prefix=API_PREFIX), self_authenticating=SELF_AUTHENTICATING
        ),
        client_max_size=config.max_body_bytes,
        # aiohttp's 8190-byte header limit would answer a token near max_token_bytes with its own
        # plain 400 before the auth layer sees it: the auth layer enforces the token limit (401).
        handler_args={"max_field_size": MAX_HEADER_FIELD_BYTES},
    )
    app[COMPONENTS] = components
    document = build_document(version, homes_claim=auth_settings.homes_claim)
    page, page_origin = page_auth(config, auth_settings)
    setup_http(
        app,
        HttpContext(
            store=store,
            access=policy,
            sender=ingest,
            broker=transport,
            settings=HttpSettings(
                version=version,
                permissions=permissions,
                max_body_bytes=config.max_body_bytes,
                cors_origins=config.cors_origins,
                rate_limit_per_minute=config.rate_limit_per_minute,
                page_auth=page,
                page_auth_origin=page_origin,
                ingress=ingress is not None,
            ),
            metrics=metrics,
            openapi=lambda: document,
            rate_limiter=limiter,
            address_limiter=RateLimiter(config.rate_limit_unauthenticated_per_minute),
            client_address=client_address,
            internal=InternalStatus(internal_token, functools.partial(status_figures, components)),
            ingress=ingress,
        ),
    )
    transport.connection_listeners.append(realtime.broker_changed)
    setup_realtime(app, realtime)
    app.on_shutdown.append(_drain_streams)
    if dev_issuer is not None:
        app.router.add_routes(dev_issuer.routes())
    app.cleanup_ctx.append(_lifecycle)
    return app


async def status_figures(c: Components) -> dict[str, Any]:
    """The parts of ``/internal/v1/status`` only the assembled server knows."""
    try:
        size: int | None = await c.store.size_bytes()
    except Exception:  # a store that cannot tell right now: the figure is unknown, the answer still comes
        size = None
    return {
        "base_topic": c.config.mqtt.base_topic,
        "web_clients": c.realtime.figures()["connections"],
        "messages_per_minute": round(c.throughput.per_minute(), 1),
        "rejected_total": sum(c.ingest.rejected_by_reason.values()),
        "database_bytes": size,
        "devices": len(c.ingest.router.devices),
    }


async def announce_to_supervisor(c: Components) -> None:
    """Tell Home Assistant, through the Supervisor, where this add-on is and how to read its status."""
    try:
        uuid = await announce(
            c.session, c.config, port=c.port or c.config.http_port, api_path=API_PREFIX, token=c.internal_token
        )
    except SupervisorError as err:
        _LOGGER.error("Home Assistant will not offer to link this add-on: %s", err)
        return
    _LOGGER.info("Announced to Home Assistant through the Supervisor (discovery %s)", uuid)


async def _sample_throughput(c: Components) -> None:
    while True:
        c.throughput.sample()
        await asyncio.sleep(THROUGHPUT_SAMPLE_INTERVAL)


async def _authenticator(
    config: ServerConfig, session: aiohttp.ClientSession, ingress: IngressIssuer | None
) -> tuple[Authenticator, DevIssuer | None]:
    local = ingress.local_issuer() if ingress is not None else None
    if config.dev_auth:
        dev_issuer = await asyncio.to_thread(
            DevIssuer, config.dev_key_path, issuer=dev_issuer_url(config), homes_claim=config.homes_claim, warn=True
        )
        return Authenticator(dev_issuer.settings(), session, static_jwks=dev_issuer.jwks(), local=local), dev_issuer
    if config.auth is None:  # load_config refuses this; keep the guard for programmatic use
        raise ValueError("auth settings are required unless dev_auth is enabled")
    return Authenticator(config.auth, session, local=local), None


def page_auth(config: ServerConfig, auth: AuthSettings) -> tuple[dict[str, Any], str | None]:
    """How the dashboard signs in outside ingress, and the origin its CSP lets it connect to.

    Dev auth only when the server runs in dev mode: an Auth0 server never offers it.
    """
    if config.dev_auth:
        return {"mode": "dev"}, None
    return {
        "mode": "auth0",
        "domain": urlsplit(auth.issuer).netloc,
        "client_id": config.auth0_client_id,
        "audience": auth.audience,
    }, auth_origin(auth.issuer)


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    """Start everything in order; on cleanup stop what was started, in the safe order."""
    c = app[COMPONENTS]
    started: set[str] = set()
    try:
        await _start(c, started)
    except BaseException:
        await _stop(c, started)
        raise
    # Everything allocated so far lives as long as the process: keep it out of the GC's
    # generations so collections stay short (p99 latency; see docs/benchmarks.md).
    gc.collect()
    gc.freeze()
    _LOGGER.info("thermo_bridge server %s started", server_version())
    try:
        yield
    finally:
        _LOGGER.info("Shutting down: stopping ingest, flushing the store, disconnecting MQTT")
        gc.unfreeze()
        await _stop(c, started)


async def _start(c: Components, started: set[str]) -> None:
    config = c.config
    await c.store.open()
    started.add("store")
    await c.realtime.start()  # at the log's end before the ingest writes: every new event is routed
    started.add("realtime")
    started.add("transport")
    try:
        # Wait a little for the broker; if it is not there yet the transport keeps trying in
        # the background (capped backoff) and /health says 503 until it connects.
        await c.transport.connect(wait_seconds=config.mqtt.connect_timeout)
    except TimeoutError:
        _LOGGER.warning(
            "MQTT broker %s:%d not reachable yet (%s); serving anyway and retrying in the background",
            config.mqtt.host,
            config.mqtt.port,
            c.transport.last_error,
        )
    await c.ingest.start()
    started.add("ingest")
    if c.dev_issuer is None:
        c.spawn(c.authenticator.prefetch(), "jwks-prefetch")
    c.spawn(run_retention(c.store, config.retention_days, RETENTION_INTERVAL), "retention")
    c.spawn(_sample_throughput(c), "throughput")
    if config.zeroconf:
        # Probing and announcing take a second or two: do not hold up start-up for it.
        c.spawn(_advertise(c), "zeroconf")


async def _advertise(c: Components) -> None:
    config = c.config
    # In a thread: bound to all interfaces, Advertiser resolves this host's addresses (blocking DNS).
    c.advertiser = await asyncio.to_thread(
        Advertiser,
        port=c.port or config.http_port,
        version=server_version(),
        api_path=API_PREFIX,
        base_topic=config.mqtt.base_topic,
        host=config.http_host,
        # Bound to loopback only: announce there, not to a LAN that cannot reach us.
        interfaces=[config.http_host] if config.http_host.startswith("127.") else None,
        # In a container (the add-on without host networking) the machine's own address is the
        # container's: advertise_host names the one the LAN reaches.
        addresses=[config.advertise_host] if config.advertise_host else None,
    )
    try:
        await c.advertiser.start()
    except OSError as err:  # no multicast-capable interface: the API still works
        _LOGGER.warning("Zeroconf advertisement failed: %s", err)


async def _stop(c: Components, started: set[str]) -> None:
    """Stop advertising and background work, stop ingesting, flush the store, then disconnect."""
    await _cancel_tasks(c)
    if c.advertiser is not None:
        await _step("stop zeroconf", c.advertiser.stop)
        c.advertiser = None
    if "ingest" in started:
        await _step("stop the ingest", c.ingest.stop)
    if "realtime" in started:
        await _step("stop following the event log", c.realtime.stop)
    if "store" in started:
        await _step("close the store", c.store.close)
    if "transport" in started:
        await _step("send the last acknowledgements", c.transport.flush_acks)
        await _step("disconnect from the broker", c.transport.disconnect)
    started.clear()
    await _step("cancel a JWKS fetch in flight", c.authenticator.close)
    await _step("close the HTTP client session", c.session.close)


async def _drain_streams(app: web.Application) -> None:
    """Before the HTTP server waits for its handlers: deliver every committed event, then close the streams.

    The ingest stops taking messages and its writes commit first, so the offset in each
    stream's going-away close reason is all this server will ever send it; clients resume
    from there on the restarted server (or another replica).
    """
    c = app[COMPONENTS]
    await _step("stop the ingest", c.ingest.stop)
    await _step("close the real-time streams", c.realtime.drain)


async def _step(what: str, action: Callable[[], Coroutine[Any, Any, Any]]) -> None:
    """One shutdown step; a failure is logged and the next steps still run."""
    try:
        await action()
    except Exception:
        _LOGGER.exception("Shutdown: failed to %s", what)


async def _cancel_tasks(c: Components) -> None:
    tasks, c.tasks = c.tasks, []
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
