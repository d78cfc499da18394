"""A new model version takes over between batches: no batch, and in exactly_once no transaction,
holds outputs of two versions, and every event is still predicted exactly once."""

from __future__ import annotations

import asyncio
import dataclasses

from events.schema import decode_prediction
from service.delivery.at_least_once import AtLeastOnce
from service.delivery.exactly_once import ExactlyOnce
from service.models.slots import Pending, ServingModels
from service.observe.stats import ServiceStats
from service.pipeline.loop import PredictionLoop
from tests.factories import event_bytes, small_feature_table
from tests.fakes.kafka import InMemorySink, InMemorySource, InMemoryTransactionalSink, InMemoryTransactionLog, make_record
from tests.fakes.mysql import InMemoryFeatureStore
from tests.service.loops import ALO_SETTINGS, EOS_SETTINGS, IDLE_POLLS, INPUT

BATCHES = 12
PER_BATCH = 10
SWAP_AFTER_LOOKUPS = 5


def batches() -> list[list]:
    """Both partitions in every batch, offsets counting up per partition."""
    out = []
    for b in range(BATCHES):
        out.append([
            make_record(event_bytes(user_id=n % 150, event_id=f"e{b}-{n}"), partition=n % 2, offset=b * PER_BATCH // 2 + n // 2)
            for n in range(PER_BATCH)
        ])
    return out


class SwapAfterLookups(InMemoryFeatureStore):
    """Offers the new version while the loop is mid-stream, as a watcher would from its thread."""

    def __init__(self, models: ServingModels, new: Pending) -> None:
        super().__init__(small_feature_table(200))
        self.models, self.new, self.calls = models, new, 0

    async def get_features(self, user_ids):
        self.calls += 1
        if self.calls == SWAP_AFTER_LOOKUPS:
            self.models.serving_slot.pending = self.new
        return await super().get_features(user_ids)


def versions_by_partition(messages, topic) -> dict[int, list[str]]:
    seen: dict[int, list[str]] = {}
    for sent_topic, value, _key, _headers in messages:
        if sent_topic == topic:
            prediction = decode_prediction(value)
            seen.setdefault(int(prediction.event_id.split("-")[1]) % 2, []).append(prediction.model_version)
    return seen


async def test_exactly_once_commits_the_old_versions_transactions_before_the_new_version_scores(model, monkeypatch):
    new_model = dataclasses.replace(model, version="next-version")
    models = ServingModels.of(model)
    committed_versions: list[set[str]] = []
    commit = InMemoryTransactionalSink.commit_transaction

    async def recording_commit(self):
        opened = self.sent[self._mark:]
        committed_versions.append({decode_prediction(v).model_version for t, v, _, _ in opened if t == EOS_SETTINGS.output_topic})
        await commit(self)

    monkeypatch.setattr(InMemoryTransactionalSink, "commit_transaction", recording_commit)
    stop = asyncio.Event()
    source = InMemorySource(batches(), stop, idle_polls=IDLE_POLLS)
    log = InMemoryTransactionLog(source)
    stats = ServiceStats()
    guarantee = ExactlyOnce(EOS_SETTINGS, source, log.producer, stats, stop)
    store = SwapAfterLookups(models, Pending(new_model, "fingerprint-2", "test"))
    loop = PredictionLoop(EOS_SETTINGS, guarantee, store, models, stop, stats)
    await guarantee.on_assigned(INPUT)
    await asyncio.wait_for(loop.run(), 20)
    await loop.close()

    ids = [decode_prediction(v).event_id for _, v, _, _ in log.to(EOS_SETTINGS.output_topic) if v is not None]
    assert sorted(ids) == sorted(f"e{b}-{n}" for b in range(BATCHES) for n in range(PER_BATCH)), "each event exactly once"
    assert all(len(versions) <= 1 for versions in committed_versions), committed_versions
    assert models.serving.version == "next-version"
    for versions in versions_by_partition(log.visible, EOS_SETTINGS.output_topic).values():
        first_new = versions.index("next-version")
        assert set(versions[:first_new]) == {model.version} and set(versions[first_new:]) == {"next-version"}


async def test_at_least_once_never_mixes_versions_within_a_partition_order(model):
    new_model = dataclasses.replace(model, version="next-version")
    models = ServingModels.of(model)
    stop = asyncio.Event()
    source = InMemorySource(batches(), stop)
    sink = InMemorySink()
    stats = ServiceStats()
    store = SwapAfterLookups(models, Pending(new_model, "fingerprint-2", "test"))
    loop = PredictionLoop(ALO_SETTINGS, AtLeastOnce(ALO_SETTINGS, source, sink, stats, stop), store, models, stop, stats)
    await asyncio.wait_for(loop.run(), 20)

    by_partition = versions_by_partition(sink.sent, ALO_SETTINGS.output_topic)
    assert sum(len(v) for v in by_partition.values()) == BATCHES * PER_BATCH
    for versions in by_partition.values():
        first_new = versions.index("next-version")
        assert set(versions[:first_new]) == {model.version} and set(versions[first_new:]) == {"next-version"}
