import pytest

from service.observe.health import MYSQL_PROBE_MAX_AGE_S, HealthState
from service.observe.stats import ServiceStats


class RecordingListener:
    def __init__(self):
        self.calls = []

    async def on_partitions_revoked(self, revoked):
        self.calls.append(("revoked", revoked))

    async def on_partitions_assigned(self, assigned):
        self.calls.append(("assigned", assigned))


def test_alive_while_starting_then_judged_by_the_last_activity():
    """Before the loop starts the answer is 'starting'; after, alive until no activity for longer than the bound."""
    stats = ServiceStats()
    health = HealthState(stats, stall_after_s=300)
    assert health.liveness() == (True, {"status": "starting"})
    health.loop_started_mono_s = stats.last_active_mono_s = 1000.0
    alive, body = health.liveness(now=1200.0)
    assert alive and body["status"] == "ok" and body["seconds_since_activity"] == 200.0
    alive, body = health.liveness(now=1301.0)
    assert not alive and body["status"] == "stalled"
    stats.last_active_mono_s = 1300.0  # a poll, batch or retry
    assert health.liveness(now=1301.0)[0]


async def test_ready_only_when_the_model_is_loaded_the_group_joined_and_mysql_answers():
    """Each of the three checks alone keeps the instance not ready; all three make it ready."""
    answers = []

    async def probe():
        answers.append("asked")

    health = HealthState(ServiceStats(), stall_after_s=300, mysql_probe=probe)
    ready, body = await health.readiness(now=0.0)
    assert not ready and body == {"status": "not ready", "model_loaded": False, "group_joined": False, "mysql_reachable": True}
    health.model_version = "v1"
    assert not (await health.readiness(now=1.0))[0]
    health.group_joined = True
    all_passed = {"status": "ready", "model_loaded": True, "group_joined": True, "mysql_reachable": True}
    assert (await health.readiness(now=2.0)) == (True, all_passed)
    assert answers == ["asked"], "the probe's answer is reused for MYSQL_PROBE_MAX_AGE_S"


async def test_a_failing_probe_makes_the_instance_not_ready_until_mysql_answers_again():
    """A probe that raises marks MySQL unreachable; the next probe after the cache age that succeeds marks it reachable."""
    failing = [True]

    async def probe():
        if failing[0]:
            raise TimeoutError("no answer from MySQL within 2 s")

    health = HealthState(ServiceStats(), stall_after_s=300, model_version="v1", group_joined=True, mysql_probe=probe)
    ready, body = await health.readiness(now=0.0)
    assert not ready and body["mysql_reachable"] is False
    failing[0] = False
    assert not (await health.readiness(now=MYSQL_PROBE_MAX_AGE_S / 2))[0], "still the cached answer"
    assert (await health.readiness(now=MYSQL_PROBE_MAX_AGE_S + 0.1))[0]


@pytest.mark.parametrize("revoked", [set(), {"tp"}])
async def test_the_group_counts_as_joined_only_between_assignment_and_the_next_revocation(revoked):
    """The wrapped listener still gets every callback; readiness drops at a revocation and returns at the assignment."""
    inner = RecordingListener()
    health = HealthState(ServiceStats(), stall_after_s=300, group_joined=True)
    listener = health.track_group(inner)
    await listener.on_partitions_revoked(revoked)
    assert health.group_joined is False
    await listener.on_partitions_assigned(set())
    assert health.group_joined is True, "an instance with no partitions is a ready spare"
    assert inner.calls == [("revoked", revoked), ("assigned", set())]
