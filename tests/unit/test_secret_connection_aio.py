"""SecretConnection over real loopback TCP (wire.md §3), with honest and hostile peers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from cometp2p.aio.secret_connection import SecretConnection, secret_handshake
from cometp2p.crypto.frames import FrameSealer
from cometp2p.crypto.kdf import derive_secrets
from cometp2p.crypto.keys import NodeKey
from cometp2p.errors import (
    AuthenticationError,
    ConnectionBrokenError,
    ConnectionClosedError,
    FrameError,
    HandshakeError,
    HandshakeStage,
    LocalProtocolError,
)
from cometp2p.sansio.secret_connection import compute_challenge, encode_auth_sig_message

KEY_A = NodeKey.from_seed(bytes(range(32)))
KEY_B = NodeKey.from_seed(bytes(range(32, 64)))
BOUND_S = 10.0  # upper bound for any wait in these tests; none should come close

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def tcp_pair(
    handler: Handler,
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter, asyncio.Task[None]]]:
    """Serve ``handler`` on an ephemeral loopback port and connect one client to it."""
    handler_task: asyncio.Future[asyncio.Task[None]] = asyncio.get_running_loop().create_future()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handler_task.set_result(task)
        try:
            await handler(reader, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    task: asyncio.Task[None] | None = None
    try:
        async with asyncio.timeout(BOUND_S):
            task = await handler_task
        yield reader, writer, task
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        if task is not None:  # every handler must have been released by its test
            async with asyncio.timeout(BOUND_S):
                await asyncio.wait([task])
        server.close()
        await server.wait_closed()


@contextlib.asynccontextmanager
async def secret_pair() -> AsyncIterator[tuple[SecretConnection, SecretConnection]]:
    """Two SecretConnections, A the dialer and B the listener, over loopback TCP."""
    listener: asyncio.Future[SecretConnection] = asyncio.get_running_loop().create_future()
    release = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            listener.set_result(await secret_handshake(reader, writer, KEY_B))
        except Exception as exc:
            listener.set_exception(exc)
            return
        await release.wait()

    async with tcp_pair(serve) as (reader, writer, _):
        async with asyncio.timeout(BOUND_S):
            dialer = await secret_handshake(reader, writer, KEY_A)
            accepted = await listener
        try:
            yield dialer, accepted
        finally:
            release.set()
            await accepted.close()
            await dialer.close()


async def test_two_ends_over_tcp_authenticate_each_other() -> None:
    async with secret_pair() as (a, b):
        assert a.remote_node_id == KEY_B.node_id
        assert a.remote_public_key == KEY_B.public_key
        assert a.local_node_id == KEY_A.node_id
        assert b.remote_node_id == KEY_A.node_id
        assert a.remote_address() == b.local_address()
        assert b.remote_address() == a.local_address()
        assert a.remote_address()[0] == "127.0.0.1"


async def test_stream_both_ways_including_one_mebibyte_write() -> None:
    big = bytes(range(256)) * 4096  # 1 MiB
    async with secret_pair() as (a, b):
        async with asyncio.timeout(BOUND_S):
            a.write(big)
            a.write(b"tail")
            b.write(b"pong")
            drain = asyncio.gather(a.drain(), b.drain())
            assert await b.read_exactly(len(big) + 4) == big + b"tail"
            assert await a.read_exactly(4) == b"pong"
            await drain


async def test_read_some_respects_max_bytes_and_keeps_the_rest() -> None:
    async with secret_pair() as (a, b):
        async with asyncio.timeout(BOUND_S):
            a.write(b"0123456789")
            await a.drain()
            first = await b.read_some(4)
            assert first == b"0123"
            assert await b.read_exactly(6) == b"456789"


async def test_close_gives_clean_eof_to_the_peer() -> None:
    async with secret_pair() as (a, b):
        async with asyncio.timeout(BOUND_S):
            a.write(b"last words")
            await a.drain()
            await a.close()
            assert await b.read_exactly(10) == b"last words"
            assert await b.read_some() == b""
            assert await b.read_some() == b""
        with pytest.raises(ConnectionClosedError):
            a.write(b"more")
        with pytest.raises(ConnectionClosedError):
            await a.drain()


async def test_read_exactly_eof_early_is_connection_broken() -> None:
    async with secret_pair() as (a, b):
        async with asyncio.timeout(BOUND_S):
            a.write(b"abc")
            await a.close()
            with pytest.raises(ConnectionBrokenError, match="3 of 5"):
                await b.read_exactly(5)


async def test_bad_read_arguments_are_local_errors() -> None:
    async with secret_pair() as (a, _):
        with pytest.raises(LocalProtocolError):
            await a.read_some(0)
        with pytest.raises(LocalProtocolError):
            await a.read_exactly(-1)


# -- peers built from sans-IO parts -----------------------------------------------------


def _peer_side(victim_eph_message: bytes) -> tuple[bytes, bytes, FrameSealer]:
    """Play the peer by hand: return (its eph message, the challenge, its frame sealer)."""
    peer_eph = X25519PrivateKey.generate()
    victim_eph = victim_eph_message[3:]
    peer_pub = peer_eph.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    dh_secret = peer_eph.exchange(X25519PublicKey.from_public_bytes(victim_eph))
    lo, hi = sorted([peer_pub, victim_eph])
    _, send_key = derive_secrets(dh_secret, peer_pub == lo)
    return b"\x22\x0a\x20" + peer_pub, compute_challenge(lo, hi, dh_secret), FrameSealer(send_key)


def _hand_made_peer(
    after_auth: Callable[[FrameSealer], bytes] = lambda sealer: b"",
    *,
    forge_signature: bool = False,
    send_auth: bool = True,
    hang_up: bool = False,
) -> tuple[Handler, asyncio.Event]:
    """A listener built from sans-IO parts that writes everything in one segment."""
    done = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        eph, challenge, sealer = _peer_side(await reader.readexactly(35))
        signed = b"not the challenge".ljust(32) if forge_signature else challenge
        auth = encode_auth_sig_message(KEY_B.public_key, KEY_B.sign(signed))
        out = eph + (sealer.seal(auth) if send_auth else b"")
        writer.write(out + after_auth(sealer))
        await writer.drain()
        if not hang_up:
            await done.wait()

    return serve, done


async def test_data_in_the_same_segment_as_the_auth_sig_is_not_lost() -> None:
    serve, done = _hand_made_peer(lambda sealer: sealer.seal(b"early NodeInfo bytes"))
    async with tcp_pair(serve) as (reader, writer, _):
        async with asyncio.timeout(BOUND_S):
            conn = await secret_handshake(reader, writer, KEY_A)
            assert conn.remote_node_id == KEY_B.node_id
            assert await conn.read_exactly(20) == b"early NodeInfo bytes"
        done.set()


async def test_wrong_signature_over_tcp_is_authentication_error() -> None:
    serve, done = _hand_made_peer(forge_signature=True)
    async with tcp_pair(serve) as (reader, writer, _):
        with pytest.raises(AuthenticationError, match="challenge verification failed"):
            await secret_handshake(reader, writer, KEY_A, timeout_s=BOUND_S)
        done.set()


def _flip_bit(sealed: bytes) -> bytes:
    tampered = bytearray(sealed)
    tampered[10] ^= 0x01
    return bytes(tampered)


async def test_tampered_frame_after_handshake_is_frame_error() -> None:
    serve, done = _hand_made_peer(lambda sealer: _flip_bit(sealer.seal(b"payload")))
    async with tcp_pair(serve) as (reader, writer, _):
        async with asyncio.timeout(BOUND_S):
            conn = await secret_handshake(reader, writer, KEY_A)
            with pytest.raises(FrameError, match="authentication"):
                await conn.read_some()
        done.set()


async def test_replayed_frame_after_handshake_is_frame_error() -> None:
    def replay(sealer: FrameSealer) -> bytes:
        frame = sealer.seal(b"once")
        return frame + frame

    serve, done = _hand_made_peer(replay)
    async with tcp_pair(serve) as (reader, writer, _):
        async with asyncio.timeout(BOUND_S):
            conn = await secret_handshake(reader, writer, KEY_A)
            with pytest.raises(FrameError, match="frame 2"):
                await conn.read_exactly(8)
        done.set()


async def test_truncated_frame_at_eof_is_frame_error() -> None:
    serve, _ = _hand_made_peer(lambda sealer: sealer.seal(b"payload")[:-10], hang_up=True)
    async with tcp_pair(serve) as (reader, writer, _):
        async with asyncio.timeout(BOUND_S):
            conn = await secret_handshake(reader, writer, KEY_A)
            with pytest.raises(FrameError, match="1034 of 1044"):
                await conn.read_some()


async def test_silent_peer_times_out_in_the_ephemeral_key_stage() -> None:
    stop = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await stop.wait()

    async with tcp_pair(serve) as (reader, writer, _):
        with pytest.raises(HandshakeError, match="timed out") as info:
            await secret_handshake(reader, writer, KEY_A, timeout_s=0.05)
        assert info.value.stage is HandshakeStage.EPHEMERAL_KEY
        assert isinstance(info.value.__cause__, TimeoutError)
        stop.set()


async def test_peer_withholding_auth_sig_times_out_in_the_auth_sig_stage() -> None:
    serve, done = _hand_made_peer(send_auth=False)
    async with tcp_pair(serve) as (reader, writer, _):
        with pytest.raises(HandshakeError, match="timed out") as info:
            await secret_handshake(reader, writer, KEY_A, timeout_s=0.5)
        assert info.value.stage is HandshakeStage.AUTH_SIG
        done.set()


async def test_peer_closing_during_handshake_is_connection_broken() -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(35)  # read first, so closing sends FIN rather than RST
        writer.write(b"\x22\x0a\x20")  # a tenth of a key, then hang up
        await writer.drain()

    async with tcp_pair(serve) as (reader, writer, _):
        with pytest.raises(ConnectionBrokenError) as info:
            await secret_handshake(reader, writer, KEY_A, timeout_s=BOUND_S)
        assert isinstance(info.value.__cause__, HandshakeError)
        assert "3 of the 35" in str(info.value)


async def test_garbage_instead_of_ephemeral_key_is_handshake_error() -> None:
    stop = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"GET / HTTP/1.1\r\n\r\n")
        await writer.drain()
        await stop.wait()

    async with tcp_pair(serve) as (reader, writer, _):
        with pytest.raises(HandshakeError) as info:
            await secret_handshake(reader, writer, KEY_A, timeout_s=BOUND_S)
        assert info.value.stage is HandshakeStage.EPHEMERAL_KEY
        stop.set()
