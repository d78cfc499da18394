"""The model lifecycle with the whole service as a real process: promotion under load, refused versions,
rollback, features at each event's own time, an MLflow alias as the source, and a shadow model.

Every test serves from a registry (or MLflow model) of its own, so promotions never reach the session's
registry that other tests serve from.
"""

from __future__ import annotations

import asyncio
import shutil
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from events.schema import InputEvent, decode_prediction
from features.event_time import SECONDS_PER_DAY
from features.inputs import feature_frame
from model.artifact import ARTIFACT_FILE, load_model, metadata_path
from model.evaluation import Trained
from model.mlflow_registry import DEFAULT_CACHE_DIR, register_version, set_alias
from tests.conftest import STORE_USERS
from tests.factories import random_events, train
from tests.integration.kafka_helpers import read_topic, send_records
from tests.integration.lifecycle_helpers import (
    SteadyLoad,
    as_records,
    damage,
    delete_topic,
    info_versions,
    metric_value,
    read_committed_until,
    read_everything,
    registry_serving,
    run_registry_command,
    runs,
    source_error_lines,
    stage,
    switches_once,
    versions_in_order,
)
from tests.mlflow_server import running_mlflow_server

pytestmark = pytest.mark.integration

POLL_S = 1
# How long after a promotion the swap may take beyond one poll: fetch, checks and warm-up of a small model, plus a
# loaded machine's slack. Generous on purpose: it bounds a wait, it does not measure anything.
SWAP_BOUND_S = 30
READ_TIMEOUT_S = 90
MODEL_INFO = "prediction_service_model_info"
SHADOW_MODEL_INFO = "prediction_service_shadow_model_info"
SWAPS = "prediction_service_model_swaps_total"
REFUSED = "prediction_service_model_refused_total"
SOURCE_ERRORS = "prediction_service_model_source_errors_total"
SHADOW_EVENTS = "prediction_service_shadow_events_total"


@pytest.fixture(scope="module")
def challenger(store_database) -> Trained:
    """A second model on the test store, trained with another seed: another version to promote or shadow."""
    _name, known = store_database
    trained = train(known, STORE_USERS, samples=20_000, seed=5)
    assert trained.passed, f"the challenger must pass its gates to be served: {trained.metrics}"
    return trained


@pytest.fixture(scope="module")
def challenger_path(challenger, tmp_path_factory) -> Path:
    """The challenger saved as `model.train` saves a model: model.joblib and model.json, nothing else beside them."""
    return stage(challenger, tmp_path_factory.mktemp("challenger"))


def send(settings, events: list[InputEvent]) -> None:
    asyncio.run(send_records(settings, as_records(events)))


def predicted_versions(settings, events: list[InputEvent]) -> dict[str, str]:
    """The model version of each event's prediction, once every event has one (read_committed)."""
    ids = [event.event_id for event in events]
    predictions = asyncio.run(read_committed_until(settings, settings.output_topic, ids, READ_TIMEOUT_S))
    missing = set(ids) - predictions.keys()
    assert not missing, f"{len(missing)} of {len(ids)} events have no prediction after {READ_TIMEOUT_S} s"
    return {event_id: predictions[event_id].model_version for event_id in ids}


def fresh_events(count: int, seed: int) -> list[InputEvent]:
    return random_events(count, user_ids=list(range(STORE_USERS)), seed=seed)


def test_a_promotion_under_steady_load_swaps_versions_in_one_process_with_no_loss_duplicate_or_mixing(
    pipeline_settings, start_service, model_path, challenger_path, tmp_path
):
    """exactly_once: v2 is promoted while events stream in. The same process swaps to v2 within a poll (plus slack);
    every event gets exactly one committed prediction; both versions appear; and in every input and output partition
    the v1 predictions all come before the v2 ones."""
    registry, v1 = registry_serving(tmp_path / "registry", model_path)
    v2 = registry.register(challenger_path)
    assert v2 != v1
    service = start_service(MODEL_URI=str(registry.root), MODEL_POLL_S=str(POLL_S))
    service.wait_for_message("partitions assigned", timeout_s=60)
    assert service.process is not None
    pid = service.process.pid
    load = SteadyLoad(pipeline_settings, list(range(STORE_USERS)), batch_size=25, pause_s=0.1, min_batches=40, seed=11)
    swap_seen_after: list[int] = []  # batches sent when the swap line appeared

    def enough(batches: int) -> bool:
        # Load goes on for a while after the swap, so the new version scores under load too.
        return bool(swap_seen_after) and batches >= swap_seen_after[0] + 10

    async def promote_under_load() -> None:
        producing = asyncio.create_task(load.run(enough))
        try:
            await read_topic(pipeline_settings, pipeline_settings.output_topic, lambda records: len(records) >= 100, 60)
            assert not producing.done(), "the load must still be on when v2 is promoted"
            await asyncio.to_thread(registry.promote, v2)
            await asyncio.to_thread(service.wait_for_message, f"serving model is now {v2} (was {v1})", POLL_S + SWAP_BOUND_S)
            swap_seen_after.append(load.batches)
        except BaseException:
            producing.cancel()
            raise
        await asyncio.wait_for(producing, timeout=120)

    asyncio.run(promote_under_load())
    assert load.batches < load.max_batches, "the load stopped at its cap instead of after the swap"
    assert info_versions(service, MODEL_INFO) == {v2}
    assert metric_value(service, SWAPS, role="serving") == 1

    versions = predicted_versions(pipeline_settings, load.sent)
    assert set(versions.values()) == {v1, v2}, "predictions of both versions"
    assert service.alive and service.process.pid == pid, "the same process served throughout"
    assert sum(m.startswith(f"serving model {v1} (") for m in service.messages()) == 1, "the service started once"
    assert service.stop() == 0

    records = asyncio.run(read_everything(pipeline_settings, pipeline_settings.output_topic))
    outputs = [decode_prediction(record.value) for record in records]
    counts = Counter(prediction.event_id for prediction in outputs)
    duplicated = [event_id for event_id, count in counts.items() if count > 1]
    assert not duplicated, f"{len(duplicated)} events have more than one committed prediction, e.g. {duplicated[:5]}"
    assert counts.keys() == {event.event_id for event in load.sent}, "no event lost, none invented"

    by_output_partition = versions_in_order(
        (record.partition, record.offset, prediction.model_version) for record, prediction in zip(records, outputs, strict=True)
    )
    for partition, sequence in by_output_partition.items():
        assert switches_once(sequence, v1, v2), f"output partition {partition} has v1 after v2: {runs(sequence)}"
    by_input_partition = versions_in_order((*load.positions[event_id], version) for event_id, version in versions.items())
    for partition, sequence in by_input_partition.items():
        assert switches_once(sequence, v1, v2), f"input partition {partition} has v1 after v2: {runs(sequence)}"


@pytest.mark.parametrize("reason", ["checksum", "gate"])
def test_a_promoted_version_that_fails_a_check_is_refused_once_and_the_old_one_keeps_serving(
    reason, pipeline_settings, start_service, model_path, challenger, challenger_path, tmp_path
):
    """checksum: the registered model.joblib is damaged after registration. gate: model.json records an ECE of 0.08
    (the gate is 0.02). Either is refused with one ERROR naming the reason, counted once, and v1 keeps serving."""
    registry, v1 = registry_serving(tmp_path / "registry", model_path)
    if reason == "checksum":
        bad = registry.register(challenger_path)
        damage(registry.artifact_path(bad))
    else:
        bad = registry.register(stage(challenger, tmp_path / "miscalibrated", ece=0.08))
    service = start_service(MODEL_URI=str(registry.root), MODEL_POLL_S=str(POLL_S))
    service.wait_for_message("partitions assigned", timeout_s=60)
    before = fresh_events(50, seed=21)
    send(pipeline_settings, before)
    assert set(predicted_versions(pipeline_settings, before).values()) == {v1}

    registry.promote(bad)
    refusal = f"refused the new serving model ({reason})"
    service.wait_for_message(refusal, timeout_s=POLL_S + SWAP_BOUND_S)
    after = fresh_events(100, seed=22)
    send(pipeline_settings, after)
    assert set(predicted_versions(pipeline_settings, after).values()) == {v1}, "the old version keeps serving"
    time.sleep(3 * POLL_S)  # several polls that must not try the refused version again

    refusals = [entry for entry in service.log_entries() if refusal in entry.get("message", "")]
    assert len(refusals) == 1, [entry["message"] for entry in refusals]
    assert refusals[0]["level"] == "error"
    assert f"version {v1} keeps serving" in refusals[0]["message"]
    if reason == "gate":
        assert "max_ece 0.0800 > 0.02" in refusals[0]["message"]
    assert metric_value(service, REFUSED, role="serving", reason=reason) == 1
    assert metric_value(service, REFUSED) == 1, "no other refusal counted"
    assert metric_value(service, SWAPS, role="serving") == 0
    assert info_versions(service, MODEL_INFO) == {v1}
    assert registry.serving() == bad, "the registry still points at the refused version: only the service refused it"
    assert service.stop() == 0


def test_a_rollback_from_the_command_line_brings_the_previous_version_back(
    pipeline_settings, start_service, model_path, challenger_path, tmp_path
):
    """Promote v2 and see it serve; `python -m model.registry --registry DIR rollback` makes v1 serve again."""
    registry, v1 = registry_serving(tmp_path / "registry", model_path)
    v2 = registry.register(challenger_path)
    service = start_service(MODEL_URI=str(registry.root), MODEL_POLL_S=str(POLL_S))
    service.wait_for_message("partitions assigned", timeout_s=60)

    registry.promote(v2)
    service.wait_for_message(f"serving model is now {v2} (was {v1})", timeout_s=POLL_S + SWAP_BOUND_S)
    on_v2 = fresh_events(50, seed=31)
    send(pipeline_settings, on_v2)
    assert set(predicted_versions(pipeline_settings, on_v2).values()) == {v2}

    result = run_registry_command(registry.root, "rollback")
    assert result.returncode == 0, f"rollback exited with {result.returncode}: {result.stderr}"
    assert f"rolled back to {v1} (was {v2})" in result.stdout
    assert (registry.serving(), registry.history()) == (v1, [])
    service.wait_for_message(f"serving model is now {v1} (was {v2})", timeout_s=POLL_S + SWAP_BOUND_S)
    on_v1 = fresh_events(50, seed=32)
    send(pipeline_settings, on_v1)
    assert set(predicted_versions(pipeline_settings, on_v1).values()) == {v1}
    assert info_versions(service, MODEL_INFO) == {v1}
    assert metric_value(service, SWAPS, role="serving") == 2
    assert service.stop() == 0


def test_one_event_at_two_times_sixty_days_apart_gets_the_probability_of_its_age_at_each(
    pipeline_settings, start_service, store_database, model_path
):
    """Two events alike but for their ids and timestamps (a day and 61 days after the store was built): each gets what
    the Pipeline's predict_proba gives on the features with the age at its own time (1e-9), and the two differ."""
    _db, known = store_database
    # The most recent buyer: their recency changes most between the two times.
    user_id = max((user for user in known if not known[user].is_new_user), key=lambda user: known[user].last_purchase_at)
    user = known[user_id]
    pages = ("home", "product", "cart")
    # The store was built at the start of the session, so both times come after every purchase it knows of.
    built_at_s = int(time.time())
    times_s = {"day-1": built_at_s + 1 * int(SECONDS_PER_DAY), "day-61": built_at_s + 61 * int(SECONDS_PER_DAY)}
    run = uuid.uuid4().hex[:8]
    events = [
        InputEvent(event_id=f"same-event-{run}-{label}", user_id=user_id, timestamp=datetime.fromtimestamp(at_s, UTC),
                   last_three_pages_visited=pages)
        for label, at_s in times_s.items()
    ]
    start_service()
    send(pipeline_settings, events)
    ids = [event.event_id for event in events]
    predictions = asyncio.run(read_committed_until(pipeline_settings, pipeline_settings.output_topic, ids, READ_TIMEOUT_S))
    assert predictions.keys() == set(ids)

    model = load_model(model_path)
    served = {}
    for event, (label, at_s) in zip(events, times_s.items(), strict=True):
        frame = feature_frame(model.contract, [pages], [user], [float(at_s)])
        assert frame["days_since_last_purchase"].iloc[0] == pytest.approx((at_s - user.last_purchase_at) / SECONDS_PER_DAY, abs=1e-9)
        expected = float(model.pipeline.predict_proba(frame)[:, 1][0])
        prediction = predictions[event.event_id]
        assert prediction.model_version == model.version
        assert abs(prediction.purchase_probability - expected) <= 1e-9, (label, prediction.purchase_probability, expected)
        served[label] = prediction.purchase_probability
    assert abs(served["day-1"] - served["day-61"]) > 1e-6, f"the age must matter: {served}"


@pytest.mark.timeout(480)
def test_an_mlflow_alias_is_followed_and_an_unreachable_server_leaves_the_serving_version_in_place(
    pipeline_settings, start_service, model_path, challenger_path, tmp_path
):
    """MODEL_URI=models:/NAME@champion: v1 serves; moving the alias swaps to v2; with the server gone the service warns
    with growing retry delays, counts the failed reads, and v2 keeps scoring new events."""
    name = f"it-lifecycle-{uuid.uuid4().hex[:8]}"
    v1_dir = tmp_path / "v1"
    v1_dir.mkdir()
    shutil.copy(model_path, v1_dir / ARTIFACT_FILE)
    shutil.copy(metadata_path(model_path), metadata_path(v1_dir / ARTIFACT_FILE))
    v1, v2 = load_model(model_path).version, load_model(challenger_path).version
    cache = DEFAULT_CACHE_DIR / name  # where the service downloads the versions; removed afterwards
    try:
        with running_mlflow_server(tmp_path) as tracking_uri:
            numbers = [register_version(tracking_uri, name, directory, {"version": version}, {"ece": 0.01})
                       for directory, version in ((v1_dir, v1), (challenger_path.parent, v2))]
            assert numbers == ["1", "2"]
            set_alias(tracking_uri, name, "champion", "1")
            service = start_service(MODEL_URI=f"models:/{name}@champion", MLFLOW_TRACKING_URI=tracking_uri,
                                    MODEL_POLL_S=str(POLL_S), RETRY_BACKOFF_MAX_MS="4000")
            service.wait_for_message("partitions assigned", timeout_s=90)
            assert any(message.startswith(f"serving model {v1} (") for message in service.messages())
            first = fresh_events(50, seed=41)
            send(pipeline_settings, first)
            assert set(predicted_versions(pipeline_settings, first).values()) == {v1}

            set_alias(tracking_uri, name, "champion", "2")
            service.wait_for_message(f"serving model is now {v2} (was {v1})", timeout_s=POLL_S + SWAP_BOUND_S)
            second = fresh_events(50, seed=42)
            send(pipeline_settings, second)
            assert set(predicted_versions(pipeline_settings, second).values()) == {v2}
        # The server is stopped now.
        service.wait_for_message("cannot read the serving model source", timeout_s=120, count=3)
        failures = source_error_lines(service)
        attempts, delays = [attempt for attempt, _ in failures], [delay for _, delay in failures]
        assert attempts == list(range(1, len(attempts) + 1)), f"consecutive failures are counted up: {attempts}"
        assert delays[1] > delays[0] and delays == sorted(delays), f"the retry delays grow: {delays}"
        assert metric_value(service, SOURCE_ERRORS, role="serving") >= 3

        third = fresh_events(50, seed=43)
        send(pipeline_settings, third)
        assert set(predicted_versions(pipeline_settings, third).values()) == {v2}, "v2 keeps serving while MLflow is away"
        assert info_versions(service, MODEL_INFO) == {v2}
        assert service.alive
        assert service.stop() == 0
    finally:
        shutil.rmtree(cache, ignore_errors=True)


def test_a_shadow_model_scores_every_event_and_publishes_only_to_its_own_topic(
    pipeline_env, pipeline_settings, start_service, model_path, challenger_path
):
    """SHADOW_MODEL_URI is another version's file: the output topic gets one prediction per event, all from the
    serving version; the shadow topic gets the shadow's predictions of the same events; the metrics compare them."""
    serving, shadow = load_model(model_path).version, load_model(challenger_path).version
    assert serving != shadow
    shadow_topic = pipeline_env["INPUT_TOPIC"].removesuffix("-input") + "-shadow"
    try:
        service = start_service(SHADOW_MODEL_URI=str(challenger_path), SHADOW_OUTPUT_TOPIC=shadow_topic)
        service.wait_for_message("partitions assigned", timeout_s=60)
        assert any(message.startswith(f"shadow model {shadow} (") for message in service.messages())
        events = fresh_events(200, seed=51)
        send(pipeline_settings, events)
        ids = {event.event_id for event in events}

        assert set(predicted_versions(pipeline_settings, events).values()) == {serving}
        shadowed = asyncio.run(read_topic(pipeline_settings, shadow_topic, lambda records: ids <= _event_ids(records), READ_TIMEOUT_S))
        assert ids <= _event_ids(shadowed), f"{len(ids - _event_ids(shadowed))} events have no shadow prediction"
        assert {decode_prediction(record.value).model_version for record in shadowed} == {shadow}
        assert metric_value(service, SHADOW_EVENTS) >= len(events)
        assert info_versions(service, SHADOW_MODEL_INFO) == {shadow}
        assert info_versions(service, MODEL_INFO) == {serving}
        assert service.stop() == 0
        records = asyncio.run(read_everything(pipeline_settings, pipeline_settings.output_topic))
        outputs = [decode_prediction(record.value) for record in records]
        assert len(outputs) == len(events) and {prediction.event_id for prediction in outputs} == ids
        assert {prediction.model_version for prediction in outputs} == {serving}, "no shadow prediction on the output topic"
    finally:
        asyncio.run(delete_topic(pipeline_settings, shadow_topic))


def _event_ids(records) -> set[str]:
    return {decode_prediction(record.value).event_id for record in records}
