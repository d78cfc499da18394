import socket

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from config import Settings
from service.observe.endpoints import Endpoints, EndpointUnavailable, serve_endpoints
from service.observe.health import HealthState
from service.observe.stats import ServiceStats


@pytest.fixture
async def client_for():
    clients = []

    async def make(endpoints: Endpoints) -> TestClient:
        client = TestClient(TestServer(endpoints.application(), host="127.0.0.1"))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


async def test_metrics_serves_the_stats_and_refreshes_lag_before_each_scrape(client_for):
    """GET /metrics answers in the Prometheus text format, with the lag the before-scrape hook just set."""
    stats = ServiceStats()
    stats.record_batch(5, 5, 0, 0.01)
    endpoints = Endpoints(stats, HealthState(stats, stall_after_s=300))
    scrapes = []

    async def refresh():
        scrapes.append(1)
        stats.set_lag({("in", 0): len(scrapes)})

    endpoints.before_scrape = refresh
    client = await client_for(endpoints)
    for expected_lag in (1, 2):
        response = await client.get("/metrics")
        assert response.status == 200 and response.headers["Content-Type"].startswith("text/plain")
        families = {f.name: f for f in text_string_to_metric_families(await response.text())}
        assert {s.labels["outcome"]: s.value for s in families["prediction_service_events"].samples} == {"predicted": 5, "dead_lettered": 0}
        assert families["prediction_service_partition_lag_records"].samples[0].value == expected_lag


async def test_healthz_and_readyz_answer_503_until_the_state_says_otherwise(client_for):
    """/healthz is 503 once the loop is stalled past the bound; /readyz is 503 until every check passes, then 200."""
    stats = ServiceStats()
    health = HealthState(stats, stall_after_s=300, model_version="v1", mysql_reachable=True)
    client = await client_for(Endpoints(stats, health))
    assert (await client.get("/healthz")).status == 200
    health.mark_loop_started()
    assert health.loop_started_mono_s is not None
    health.loop_started_mono_s = stats.last_active_mono_s = health.loop_started_mono_s - 301
    response = await client.get("/healthz")
    assert response.status == 503 and (await response.json())["status"] == "stalled"

    response = await client.get("/readyz")
    assert response.status == 503 and (await response.json())["group_joined"] is False
    health.group_joined = True
    assert (await client.get("/readyz")).status == 200


async def test_a_taken_port_is_a_setting_to_fix_that_names_metrics_port():
    """Starting on a port another socket holds raises EndpointUnavailable naming METRICS_PORT."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        stats = ServiceStats()
        settings = Settings(metrics_port=port, metrics_host="127.0.0.1")
        with pytest.raises(EndpointUnavailable, match="METRICS_PORT"):
            async with serve_endpoints(settings, stats, HealthState(stats, stall_after_s=300)):
                pass


async def test_port_zero_turns_the_endpoint_off():
    """METRICS_PORT=0 serves nothing and yields no endpoint to wire."""
    stats = ServiceStats()
    async with serve_endpoints(Settings(metrics_port=0), stats, HealthState(stats, stall_after_s=300)) as endpoints:
        assert endpoints is None
