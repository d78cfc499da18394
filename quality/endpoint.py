"""The quality monitor's HTTP endpoint on METRICS_HOST:QUALITY_METRICS_PORT: /metrics and /healthz."""

from __future__ import annotations

import contextlib
import errno
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from errors import SetupError

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 1.0


class QualityEndpointUnavailable(SetupError):
    """METRICS_HOST:QUALITY_METRICS_PORT cannot be bound: a setting to fix (exit code 2)."""


@contextlib.asynccontextmanager
async def serve_quality_endpoint(
    host: str, port: int, registry: CollectorRegistry, liveness: Callable[[], tuple[bool, dict[str, Any]]]
) -> AsyncIterator[None]:
    """Serve /metrics and /healthz for the duration of the block; nothing when `port` is 0."""
    if port == 0:
        yield
        return

    async def metrics(_request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_request: web.Request) -> web.Response:
        alive, body = liveness()
        return web.json_response(body, status=200 if alive else 503)

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=STOP_TIMEOUT_S)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        await runner.cleanup()
        if exc.errno == errno.EADDRINUSE:
            hint = "another process (another monitor, or a service's METRICS_PORT) has that port; choose a free QUALITY_METRICS_PORT"
        else:
            hint = "check METRICS_HOST and QUALITY_METRICS_PORT"
        raise QualityEndpointUnavailable(
            f"cannot serve the quality monitor's /metrics on {host}:{port} ({exc.strerror or exc}): {hint},"
            " or QUALITY_METRICS_PORT=0 to turn the endpoint off"
        ) from exc
    log.info("serving /metrics and /healthz on http://%s:%d", host, port)
    try:
        yield
    finally:
        await runner.cleanup()
