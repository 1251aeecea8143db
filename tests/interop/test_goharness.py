"""The Go harness works against itself: MConnection echo, Switch echo, the benchmark client.

These prove the infrastructure (build, JSON events, stdin commands, bounded lifetimes);
Python-side interop tests use the same harness later.
"""

from __future__ import annotations

import hashlib

import pytest

from cometp2p.crypto.keys import NodeKey
from interop.conftest import StartHarness
from interop.goharness import GoHarness, payload

pytestmark = pytest.mark.interop

SEED = bytes(range(32))
FAST = ("--flush-throttle-ms", "5")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def listening(harness: GoHarness) -> tuple[str, str]:
    event = await harness.wait_for("listening")
    return str(event["listen"]), str(event["node_id"])


async def test_mconn_echo_dial_and_listen_exchange_messages(goharness: StartHarness) -> None:
    listener = await goharness(
        "mconn-echo", "--listen", "127.0.0.1:0", "--key-seed", SEED.hex(), *FAST
    )
    address, listener_id = await listening(listener)
    assert address.startswith("127.0.0.1:")
    # Go's ID for a seed is ours (wire.md §6.1).
    assert listener_id == NodeKey.from_seed(SEED).node_id

    dialer = await goharness(
        "mconn-echo", "--dial", address, "--expect-id", listener_id, "--no-echo",
        "--send", "3:3000", "--send", "1:10", *FAST,
    )  # fmt: skip
    dialer_id = (await dialer.wait_for("dialed"))["node_id"]
    assert (await dialer.wait_for("handshake"))["remote_node_id"] == listener_id
    inbound = await listener.wait_for("handshake")
    assert inbound["remote_node_id"] == dialer_id
    assert inbound["conn"] == 1

    # The listener reassembles the 3000-byte message (three 1024-byte packets) and echoes it.
    big = await listener.wait_for("receive", channel=3)
    assert big["size"] == 3000
    assert big["sha256"] == sha256_hex(payload(3000))
    small = await listener.wait_for("receive", channel=1)
    assert small["hex"] == payload(10).hex()
    echoes = {e["channel"]: e for e in [await dialer.wait_for("receive") for _ in range(2)]}
    assert echoes[3]["sha256"] == sha256_hex(payload(3000))
    assert echoes[1]["hex"] == payload(10).hex()

    # Closing the dialer (stdin EOF) ends its connection; the listener sees the disconnect.
    await dialer.aclose()
    assert (await dialer.wait_for("exit"))["reason"] == "stdin closed"
    disconnect = await listener.wait_for("disconnect", conn=1)
    assert disconnect["reason"] == "EOF"


async def test_mconn_echo_expect_id_mismatch_fails_the_dial(goharness: StartHarness) -> None:
    listener = await goharness("mconn-echo", "--listen", "127.0.0.1:0")
    address, _ = await listening(listener)
    wrong = "00" * 20
    dialer = await goharness("mconn-echo", "--dial", address, "--expect-id", wrong)
    fatal = await dialer.wait_for("fatal")
    assert "remote node ID mismatch" in str(fatal["error"])
    assert await dialer.aclose() == 1


async def test_mconn_echo_stdin_send_command(goharness: StartHarness) -> None:
    listener = await goharness("mconn-echo", "--listen", "127.0.0.1:0", "--no-echo", *FAST)
    address, _ = await listening(listener)
    dialer = await goharness("mconn-echo", "--dial", address, *FAST)
    await dialer.wait_for("handshake")
    await listener.wait_for("handshake")
    await listener.send({"cmd": "send", "channel": 2, "hex": b"hello".hex()})
    assert (await listener.wait_for("sent"))["ok"] is True
    received = await dialer.wait_for("receive", channel=2)
    assert bytes.fromhex(str(received["hex"])) == b"hello"
    # The dialer echoes it back (its default), the listener reports it.
    echoed = await listener.wait_for("receive", channel=2)
    assert bytes.fromhex(str(echoed["hex"])) == b"hello"


async def test_switch_echo_pair_handshakes_nodeinfo_and_answers_ping(
    goharness: StartHarness,
) -> None:
    server = await goharness(
        "switch-echo", "--chain-id", "harness-chain", "--moniker", "server",
        "--echo-mode", "ping", *FAST,
    )  # fmt: skip
    address, server_id = await listening(server)
    client = await goharness(
        "switch-echo", "--chain-id", "harness-chain", "--moniker", "client",
        "--echo-mode", "none", "--dial", f"{server_id}@{address}", *FAST,
    )  # fmt: skip
    _, client_id = await listening(client)

    added = await client.wait_for("peer_added")
    assert added["peer"] == server_id
    assert added["outbound"] is True
    assert added["moniker"] == "server"
    assert added["network"] == "harness-chain"
    assert added["channels"] == "42"
    assert added["block_version"] == 11
    inbound = await server.wait_for("peer_added")
    assert inbound["peer"] == client_id
    assert inbound["outbound"] is False

    await client.send({"cmd": "send", "channel": 0x42, "hex": b"ping:abc".hex()})
    reply = await client.wait_for("receive", channel=0x42)
    assert bytes.fromhex(str(reply["hex"])) == b"pong:abc"
    # A message that is not a ping is only reported, never answered.
    await client.send({"cmd": "send", "channel": 0x42, "size": 5000})
    got = await server.wait_for("receive", size=5000)
    assert got["sha256"] == sha256_hex(payload(5000))

    await client.aclose()
    removed = await server.wait_for("peer_removed", peer=client_id)
    assert removed["reason"]


async def test_switch_echo_rejects_other_network(goharness: StartHarness) -> None:
    server = await goharness("switch-echo", "--chain-id", "chain-a")
    address, server_id = await listening(server)
    client = await goharness(
        "switch-echo", "--chain-id", "chain-b", "--dial", f"{server_id}@{address}"
    )
    failed = await client.wait_for("dial_failed")
    assert "chain-a" in str(failed["error"])
    assert not client.seen("peer_added")


async def test_bench_mconn_reports_figures(goharness: StartHarness) -> None:
    unlimited = ("--send-rate", "0", "--recv-rate", "0", "--flush-throttle-ms", "1")
    server = await goharness("mconn-echo", "--listen", "127.0.0.1:0", "--quiet", *unlimited)
    address, server_id = await listening(server)
    bench = await goharness(
        "bench-mconn", "--dial", address, "--expect-id", server_id,
        "--count", "200", "--size", "4096", "--rtt-count", "5", *unlimited,
    )  # fmt: skip
    result = await bench.wait_for("bench", timeout_s=30.0)
    assert result["count"] == 200
    assert result["size"] == 4096
    assert result["mb_per_s"] > 0
    assert result["rtt_p99_ms"] >= result["rtt_p50_ms"] > 0
    assert (await bench.wait_for("exit"))["reason"] == "done"


@pytest.mark.parametrize(
    ("subcommand", "flag", "address"),
    [
        ("mconn-echo", "--dial", "192.0.2.1:26656"),
        ("mconn-echo", "--listen", "0.0.0.0:0"),
        ("switch-echo", "--dial", f"{'ab' * 20}@192.0.2.1:26656"),
        ("bench-mconn", "--dial", "192.0.2.1:26656"),
    ],
)
async def test_harness_refuses_non_loopback_addresses(
    goharness: StartHarness, subcommand: str, flag: str, address: str
) -> None:
    harness = await goharness(subcommand, flag, address)
    fatal = await harness.wait_for("fatal")
    assert "only loopback IPs are allowed" in str(fatal["error"])
    assert await harness.aclose() == 1
