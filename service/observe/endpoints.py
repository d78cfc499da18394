"""The service's HTTP endpoint: /metrics for Prometheus, /healthz and /readyz for orchestrators.

It runs on the service's own event loop (aiohttp). A handler reads counters, or awaits a
bounded step (the lag positions, a cached MySQL probe), so a request never holds the loop up.
"""

from __future__ import annotations

import contextlib
import errno
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from config import Settings
from errors import SetupError
from service.failures import describe_error
from service.observe.health import HealthState
from service.observe.lag import LagSource, partition_lag
from service.observe.metrics import build_registry
from service.observe.stats import ServiceStats

log = logging.getLogger(__name__)

# Closing gives an in-flight scrape this long; it must fit in the shutdown deadline.
STOP_TIMEOUT_S = 1.0


class EndpointUnavailable(SetupError):
    """METRICS_HOST:METRICS_PORT cannot be bound: a setting to fix, not an outage (exit code 2)."""


class Endpoints:
    def __init__(self, stats: ServiceStats, health: HealthState) -> None:
        self.registry = build_registry(stats, health)
        self._stats = stats
        self._health = health
        self._runner: web.AppRunner | None = None
        # Run before each scrape, to read what only an await can (the consumer's positions).
        self.before_scrape: Callable[[], Awaitable[None]] | None = None

    def application(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        return app

    async def start(self, host: str, port: int) -> None:
        # No access log: a scrape every few seconds would drown the service's own lines.
        runner = web.AppRunner(self.application(), handle_signals=False, access_log=None, shutdown_timeout=STOP_TIMEOUT_S)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError as exc:
            await runner.cleanup()
            if exc.errno == errno.EADDRINUSE:
                hint = "another process (another instance?) has that port; give each instance on one machine its own METRICS_PORT"
            else:
                hint = "check METRICS_HOST and METRICS_PORT"
            raise EndpointUnavailable(
                f"cannot serve /metrics on {host}:{port} ({exc.strerror or exc}): {hint}, or METRICS_PORT=0 to turn the endpoint off"
            ) from exc
        self._runner = runner
        log.info("serving /metrics, /healthz and /readyz on http://%s:%d", host, port)

    def watch_lag(self, consumer: LagSource) -> None:
        """Refresh the per-partition lag from `consumer` before each scrape."""
        stats = self._stats

        async def refresh() -> None:
            stats.set_lag(await partition_lag(consumer))

        self.before_scrape = refresh

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _metrics(self, _request: web.Request) -> web.Response:
        # prediction_service_ready must not go stale where nothing asks /readyz; the probe is cached.
        await self._health.refresh_mysql()
        if self.before_scrape is not None:
            try:
                await self.before_scrape()
            except Exception as exc:  # noqa: BLE001 - a scrape without fresh lag beats no scrape
                log.debug("lag not refreshed for this scrape: %s", describe_error(exc))
        return web.Response(body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, _request: web.Request) -> web.Response:
        alive, body = self._health.liveness()
        return web.json_response(body, status=200 if alive else 503)

    async def _readyz(self, _request: web.Request) -> web.Response:
        ready, body = await self._health.readiness()
        return web.json_response(body, status=200 if ready else 503)


@contextlib.asynccontextmanager
async def serve_endpoints(settings: Settings, stats: ServiceStats, health: HealthState) -> AsyncIterator[Endpoints | None]:
    """Serve for the duration of the block; yields None when METRICS_PORT is 0."""
    if settings.metrics_port == 0:
        yield None
        return
    endpoints = Endpoints(stats, health)
    await endpoints.start(settings.metrics_host, settings.metrics_port)
    try:
        yield endpoints
    finally:
        await endpoints.stop()
