"""``thermo-bridge-server``: load the configuration, run the server until SIGTERM/SIGINT.

Shutdown is graceful: the listening socket closes first (no new requests), requests in
flight get ``SHUTDOWN_TIMEOUT`` seconds to finish, then the app's cleanup stops the ingest,
flushes the store and disconnects from the broker (see app.py).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import sys
from collections.abc import Coroutine, Sequence
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from .app import COMPONENTS, SHUTDOWN_TIMEOUT, announce_to_supervisor, create_app, server_version
from .auth.devauth import DevAuthError
from .auth.internal import InternalTokenError
from .config import ServerConfig, load_config_or_exit
from .http.starting import starting_app
from .supervisor import SupervisorError, resolve_supervisor_mqtt

_LOGGER = logging.getLogger("thermo_bridge_server")


class _HttpParserErrorFilter(logging.Filter):
    """A request aiohttp cannot parse becomes one debug line, not an error with a traceback.

    aiohttp's traceback quotes the offending bytes (a bearer token, for an oversized
    Authorization header), and anyone can send such requests: they are not the server's
    errors and must neither flood the log nor put credentials in it.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            record.msg = "Refused a malformed HTTP request from %s: %s (%d)"
            record.args = (
                record.args[0] if isinstance(record.args, tuple) and record.args else "?",
                type(exc).__name__,
                exc.code,
            )
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if level != "debug":  # paho and aiohttp's access log are noisy at info
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.server").addFilter(_HttpParserErrorFilter())


def _bind(host: str, port: int) -> socket.socket:
    """Bind before start-up so a port clash fails fast and zeroconf announces the real port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(1024)
    sock.setblocking(False)
    return sock


async def serve(config: ServerConfig) -> int:
    """Run until a stop signal; return the exit status."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        sock = _bind(config.http_host, config.http_port)
    except OSError as err:
        _LOGGER.error("Cannot listen on %s:%d: %s", config.http_host, config.http_port, err.strerror)
        return 1
    waiting_for = "waiting for the Supervisor's MQTT service" if config.supervised else "opening the store"
    # Alive (not ready) until the real app serves: a stand-in on a duplicate of the socket, so
    # retiring it leaves the listening socket to the real app.
    starting = _StandIn(starting_app(server_version(), waiting_for), sock.dup())
    await starting.start()
    try:
        return await _serve(config, sock, stop, starting)
    finally:
        await starting.retire()
        sock.close()


class _StandIn:
    """An aiohttp app serving on a listening socket until another app takes over the same socket."""

    def __init__(self, app: web.Application, sock: socket.socket) -> None:
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        self._sock = sock
        self._retired = False

    async def start(self) -> None:
        await self._runner.setup()
        await web.SockSite(self._runner, self._sock).start()

    async def retire(self) -> None:
        """Stop accepting first and let connections already accepted attach, then shut down.

        Closing an asyncio server while it is between accepting a connection and attaching its
        transport leaks that connection unanswered (the attach asserts the server is open).
        """
        if self._retired:
            return
        self._retired = True
        asyncio.get_running_loop().remove_reader(self._sock.fileno())
        for _ in range(3):
            await asyncio.sleep(0)
        await self._runner.cleanup()


async def _serve(config: ServerConfig, sock: socket.socket, stop: asyncio.Event, starting: _StandIn) -> int:
    if config.supervised:
        async with aiohttp.ClientSession() as session:
            try:
                config = await _until_stopped(resolve_supervisor_mqtt(config, session), stop)
            except SupervisorError as err:
                _LOGGER.error("%s", err)
                return 1
            except asyncio.CancelledError:
                return 0
    try:
        app = await create_app(config)
    except (ValueError, DevAuthError, InternalTokenError) as err:  # e.g. a store URL or key file that cannot work
        _LOGGER.error("Cannot start: %s", err)
        # Under the Supervisor a restart would fail the same way: stop, do not loop.
        return 0 if config.supervised else 1
    components = app[COMPONENTS]
    components.port = int(sock.getsockname()[1])
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT, handle_signals=False)
    components.metrics.open_connections = lambda: len(runner.server.connections) if runner.server else 0
    try:
        await _until_stopped(runner.setup(), stop)  # runs start-up: store, MQTT, ingest
    except asyncio.CancelledError:
        await runner.cleanup()
        return 0
    except Exception:
        _LOGGER.exception("Start-up failed")
        await runner.cleanup()
        return 1
    site = web.SockSite(runner, sock, shutdown_timeout=SHUTDOWN_TIMEOUT)
    await site.start()
    await starting.retire()
    _LOGGER.info(
        "thermo_bridge server %s listening on http://%s:%d (API under /api/v1)",
        server_version(),
        config.http_host,
        components.port,
    )
    if config.supervised:
        components.spawn(announce_to_supervisor(components), "supervisor-discovery")
    await stop.wait()
    _LOGGER.info("Stop signal received: shutting down")
    await runner.cleanup()
    _LOGGER.info("Stopped")
    return 0


async def _until_stopped[T](coro: Coroutine[Any, Any, T], stop: asyncio.Event) -> T:
    """Await ``coro`` unless a stop signal comes first (then it is cancelled: CancelledError)."""
    task = asyncio.ensure_future(coro)
    stopper = asyncio.ensure_future(stop.wait())
    done, _ = await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        stopper.cancel()
        return task.result()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    raise asyncio.CancelledError


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``thermo-bridge-server``."""
    config = load_config_or_exit(argv)
    _configure_logging(config.log_level)
    _LOGGER.info("Configuration: %s", config.describe())
    if config.dev_auth:
        _LOGGER.warning("dev_auth is enabled: tokens are self-issued; never expose this server")
    return asyncio.run(serve(config))


if __name__ == "__main__":
    sys.exit(main())
