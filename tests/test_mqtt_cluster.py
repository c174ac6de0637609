"""A gateway on a clustered broker (issue 16): a 3-node RabbitMQ cluster on loopback, the
gateway connected to node A with readings flowing, node A SIGKILLed. The gateway must be on
node B within its backoff, lose nothing (every seq of every reading arrives at a subscriber on
node C), and be fully visible on B: RabbitMQ keeps retained messages per node, so status and
availability are there only because the session republishes them after every (re)connect.

The cluster boots once for the module: three fresh nodes in parallel and two joins take
25-40 s on this 2-core machine (`RabbitCluster.up_seconds` is printed).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import Daemon, Subscriber, gateway_config, wait_until
from httpprobe import endpoint, sample, scrape, status
from rabbitmq import RabbitCluster, server_program

pytestmark = [pytest.mark.rabbitmq, pytest.mark.timeout(240)]

FRAMES = 1500  # at 200 frames/s: flowing before, during and after the kill


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitCluster]:
    if server_program() is None:
        pytest.skip("needs rabbitmq-server (apt-get install -y rabbitmq-server)")
    c = RabbitCluster(tmp_path_factory.mktemp("cluster"))
    try:
        c.start()
        print(f"3-node RabbitMQ cluster up in {c.up_seconds:.1f} s")
        yield c
    finally:
        c.close()


def seqs(sub: Subscriber) -> list[int]:
    return [
        int(m.data["seq"])
        for m in sub.messages
        if m.topic.startswith("gateway/synth/") and m.data is not None and "seq" in m.data
    ]


def test_node_a_killed_gateway_on_b_loses_nothing_and_is_visible_there(
    cluster: RabbitCluster, tmp_path: Path
) -> None:
    a, b, c = cluster.nodes
    servers = [f"{a.host}:{a.port}", f"{b.host}:{b.port}"]
    device = {
        "id": "synth",
        "type": "synthetic",
        "interval": 0.005,
        "count": FRAMES,
        "values": {"n": "counter"},
    }
    config = gateway_config(a, [device])
    del config["mqtt"]["host"], config["mqtt"]["port"]
    config["mqtt"]["servers"] = servers
    on_c = Subscriber(c, "gateway/#", name="on-c").connect()
    daemon = Daemon(tmp_path)
    try:
        daemon.start(config)
        daemon.wait_log(f"mqtt: connected to {servers[0]}", timeout=20)
        wait_until(lambda: len(seqs(on_c)) >= 200 or None, 20, "readings flowing via A to C")
        killed = time.time()
        a.kill()
        daemon.wait_log(f"mqtt: connected to {servers[1]}", timeout=20)
        moved = daemon.log_time(f"mqtt: connected to {servers[1]}") - killed
        wait_until(lambda: set(seqs(on_c)) >= set(range(1, FRAMES + 1)) or None, 60, "every seq")
        got = seqs(on_c)
        missing = set(range(1, FRAMES + 1)) - set(got)
        assert missing == set(), sorted(missing)[:20]
        duplicates = len(got) - len(set(got))
        print(f"failover to B {moved:.2f} s after the kill; duplicates {duplicates}")
        # Within its backoff: the loss is seen at once (the socket closes), then at most the
        # initial backoff (the connection to A was healthy) and a connect to B.
        assert moved < 0.5 + 3.0, moved
        base = endpoint(daemon)
        doc = status(base)["mqtt"]
        assert (doc["connected"], doc["server"]) == (True, servers[1])
        assert sample(scrape(base), "gateway_mqtt_connected", server=servers[1]) == 1

        # A newcomer on B gets the gateway's state retained there (exact topics: RabbitMQ
        # sends retained messages to exact-topic subscriptions only).
        for topic in ("gateway/gw1/status", "gateway/synth/availability"):
            fresh = Subscriber(b, topic, name="fresh").connect()
            try:
                message = fresh.wait_for(lambda m: m.retain)
                assert (message.topic, message.text) == (topic, "online")
            finally:
                fresh.close()
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(15) == 0
    finally:
        daemon.close()
        on_c.close()
