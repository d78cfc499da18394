"""Opening MODEL_URI and SHADOW_MODEL_URI at start-up, and the watchers that follow them."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from config import Settings
from model.sources import ModelSource, open_model_source
from service.failures import describe_error
from service.models.loading import fetch_and_load
from service.models.slots import SERVING, SHADOW, ModelSlot, ServingModels
from service.models.watch import ModelWatcher
from service.observe.model_stats import ModelStats
from service.retry import Backoff

log = logging.getLogger(__name__)

T = TypeVar("T")
# Runs a start-up action, retrying while its dependency is unavailable (service/app.py).
Step = Callable[[Callable[[], Awaitable[T]], str, str], Awaitable[T]]


def model_source(settings: Settings, uri: str) -> ModelSource:
    return open_model_source(uri, mlflow_tracking_uri=settings.mlflow_tracking_uri)


async def open_models(settings: Settings, stats: ModelStats, step: Step[Any]) -> tuple[ServingModels, list[ModelWatcher]]:
    """Load the serving model (a registry away is retried; a model that fails a check stops the
    service), and the shadow when there is one (a failing shadow is logged, and watched for)."""
    source = model_source(settings, settings.model_uri)
    model, candidate = await step(lambda: fetch_and_load(source), "the model registry", f"loading the model from {source.uri}")
    log.info("serving model %s (%s, %s)", model.version, model.estimator, candidate.label)
    serving = ModelSlot(SERVING, model, candidate.fingerprint)
    backoff = Backoff.from_settings(settings)
    watchers = [ModelWatcher(serving, source, settings.model_poll_s, stats, backoff)]
    shadow = None
    if settings.shadow_model_uri:
        shadow_source = model_source(settings, settings.shadow_model_uri)
        shadow = ModelSlot(SHADOW, None, None)
        try:
            shadow_model, shadow_candidate = await fetch_and_load(shadow_source)
        except Exception as exc:  # noqa: BLE001 - the shadow is an experiment: serving starts without it
            log.error("no shadow model for now (%s); SHADOW_MODEL_URI %s is watched for a version that loads",
                      describe_error(exc), shadow_source.uri)
        else:
            shadow.model, shadow.fingerprint = shadow_model, shadow_candidate.fingerprint
            log.info("shadow model %s (%s, %s): scored on every batch, never published to %s",
                     shadow_model.version, shadow_model.estimator, shadow_candidate.label, settings.output_topic)
        watchers.append(ModelWatcher(shadow, shadow_source, settings.model_poll_s, stats, backoff))
    return ServingModels(serving, shadow, stats), watchers


def start_watching(watchers: list[ModelWatcher]) -> list[asyncio.Task[None]]:
    """Poll in the background; SIGHUP makes every watcher look at once."""
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGHUP, _wake, watchers)
    return [asyncio.create_task(watcher.run(), name=f"watch-{watcher.role}") for watcher in watchers]


def stop_watching(tasks: list[asyncio.Task[None]]) -> None:
    asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
    for task in tasks:
        task.cancel()


def _wake(watchers: list[ModelWatcher]) -> None:
    log.info("SIGHUP: checking the model sources now")
    for watcher in watchers:
        watcher.wake.set()
