"""Transport.close() with sockets accepted a moment before: none may outlive it.

asyncio accepts a socket, then starts its handler task some loop iterations later. A
close in between must still close that socket (the suite turns an unclosed socket's
ResourceWarning into a failure), and its client must see the connection end. The window
is narrow (close() itself yields, which lets most handlers start and hang up on their
own), so this is a stress check of the outcome; the register of unclaimed sockets in
``aio/transport.py`` is what closes the ones a test run rarely catches.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc

from cometp2p.aio.transport import Transport, UpgradedConnection
from cometp2p.crypto.keys import NodeKey
from cometp2p.wire.nodeinfo import NodeInfo

CLIENTS = 40


def transport() -> Transport:
    key = NodeKey.generate()
    info = NodeInfo(
        node_id=key.node_id,
        listen_addr="tcp://127.0.0.1:0",
        network="test-chain",
        channels=b"\x42",
        moniker="closing",
    )
    return Transport(key, info, handshake_timeout_s=5, max_incoming_handshakes=0)


async def test_close_right_after_accepts_closes_every_accepted_socket() -> None:
    for _ in range(5):
        server = transport()

        async def never(_: UpgradedConnection) -> None:
            raise AssertionError("no client completes a handshake")

        host, port = await server.listen("127.0.0.1", 0, never)
        clients = await asyncio.gather(
            *(asyncio.open_connection(host, port) for _ in range(CLIENTS))
        )
        await asyncio.sleep(0)  # some accepts processed, most handlers not started yet
        await server.close()
        # At once, before any handler task could run: every accepted socket is closing.
        accepted = [
            t
            for t in gc.get_objects()
            if isinstance(t, asyncio.WriteTransport)
            and (t.get_extra_info("sockname") or ("", 0))[1] == port
        ]
        assert [t for t in accepted if not t.is_closing()] == []
        assert server.connections() == []
        async with asyncio.timeout(5):
            for reader, writer in clients:
                # Until EOF or reset: the server hung up (after at most its handshake bytes).
                with contextlib.suppress(ConnectionError):
                    await reader.read()
                assert reader.at_eof() or reader.exception() is not None
                writer.close()
