"""The fuzzed connection over asyncio streams (behaviour.md §8, ``p2p/fuzz.go``).

:func:`fuzz_streams` wraps the raw TCP ``StreamReader``/``StreamWriter`` pair that the
Transport upgrades, so the SecretConnection on top sees what a lossy, slow or flaky
network would do to it. Every read and every write first asks a
:class:`~cometp2p.sansio.fuzz.FuzzCore` and then does what it says:

* ``DROP`` on a write: the bytes are lost (Go's ``Write`` returns 0 and the
  SecretConnection ignores the count, so a sealed frame vanishes; the peer's next frame
  then fails to open and the link breaks, never delivering corrupt data);
* ``DROP`` on a read: nothing is consumed (Go returns 0 bytes and ``io.ReadFull`` reads
  again), so the read simply goes ahead;
* ``CLOSE``: the socket is closed (FIN after what is buffered) and the operation skipped;
* a sleep: the operation waits ``sleep_s`` first. Writes keep their order: a write that
  must wait holds back the ones after it, and :meth:`FuzzedStreamWriter.drain` waits for
  them, so the writer is stalled as Go's blocking ``Write`` would be.

One decision is taken per ``read``/``write`` call. Our SecretConnection writes all the
frames of one batch in one call (Go writes frame by frame), so a dropped write loses the
whole batch; the effect on the link is the same (it breaks).

:func:`transport_fuzzer` makes the hook that :class:`~cometp2p.aio.transport.Transport`
calls on every new socket: as in Go, only dialed sockets by default, activating after
10 s so the handshakes succeed; ``inbound=True`` covers accepted sockets too.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
from collections.abc import Callable
from typing import Final

from cometp2p.config import FuzzConnConfig, P2PConfig
from cometp2p.sansio.fuzz import FuzzAction, FuzzCore, validate_fuzz_config

__all__ = [
    "GO_FUZZ_ACTIVATE_AFTER_S",
    "FuzzedStreamReader",
    "FuzzedStreamWriter",
    "SocketWrapper",
    "fuzz_streams",
    "fuzzer_from_config",
    "transport_fuzzer",
]

logger = logging.getLogger(__name__)

GO_FUZZ_ACTIVATE_AFTER_S: Final = 10.0
"""How long after its creation a fuzzed socket of Go's transport starts fuzzing."""

SocketWrapper = Callable[
    [asyncio.StreamReader, asyncio.StreamWriter, bool],
    tuple[asyncio.StreamReader, asyncio.StreamWriter],
]
"""``wrap(reader, writer, outbound) -> (reader, writer)``: the Transport's socket hook."""


def _close(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(Exception):
        writer.transport.close()


class FuzzedStreamReader(asyncio.StreamReader):
    """A ``StreamReader`` whose reads go through a :class:`FuzzCore` first.

    Only ``read`` and ``readexactly`` (the calls of the SecretConnection) are fuzzed; the
    line-oriented methods are not supported on a fuzzed stream.

    Args:
        inner: the socket's reader.
        core: the decisions.
        writer: the socket's writer, closed on a ``CLOSE`` decision.
        clock: monotonic time in seconds (the loop's clock by default).
    """

    def __init__(
        self,
        inner: asyncio.StreamReader,
        core: FuzzCore,
        writer: asyncio.StreamWriter,
        clock: Callable[[], float],
    ) -> None:
        super().__init__()
        self._inner = inner
        self._core = core
        self._writer = writer
        self._clock = clock

    async def _fuzz(self) -> None:
        decision = self._core.decide(self._clock())
        if decision.action is FuzzAction.CLOSE:
            _close(self._writer)
        elif decision.sleep_s > 0:
            await asyncio.sleep(decision.sleep_s)
        # DROP: Go returns 0 bytes and the caller reads again; nothing is lost.

    async def read(self, n: int = -1) -> bytes:
        """Fuzz, then read up to ``n`` bytes (``b""`` at end of stream)."""
        await self._fuzz()
        return await self._inner.read(n)

    async def readexactly(self, n: int) -> bytes:
        """Fuzz, then read exactly ``n`` bytes.

        Raises:
            asyncio.IncompleteReadError: the stream ended first.
        """
        await self._fuzz()
        return await self._inner.readexactly(n)

    def at_eof(self) -> bool:
        """True when the socket's reader is at end of stream."""
        return self._inner.at_eof()

    def exception(self) -> Exception | None:
        """The socket reader's error, if any."""
        return self._inner.exception()


class FuzzedStreamWriter(asyncio.StreamWriter):
    """A ``StreamWriter`` whose writes go through a :class:`FuzzCore` first.

    Args:
        inner: the socket's writer (kept alive: a collected StreamWriter closes its socket).
        reader: the socket's reader (its error is raised by :meth:`drain`).
        core: the decisions.
        clock: monotonic time in seconds.
    """

    def __init__(
        self,
        inner: asyncio.StreamWriter,
        reader: asyncio.StreamReader,
        core: FuzzCore,
        clock: Callable[[], float],
    ) -> None:
        transport = inner.transport
        super().__init__(transport, transport.get_protocol(), reader, asyncio.get_running_loop())
        self._inner = inner
        self._core = core
        self._clock = clock
        self._delayed: collections.deque[tuple[bytes, float]] = collections.deque()
        self._flushed = asyncio.Event()
        self._flushed.set()
        self._pump: asyncio.Task[None] | None = None

    @property
    def core(self) -> FuzzCore:
        """The decisions (and their :class:`~cometp2p.sansio.fuzz.FuzzStats`)."""
        return self._core

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Fuzz, then write ``data`` (now, or after the sleep it drew)."""
        decision = self._core.decide(self._clock())
        if decision.action is FuzzAction.CLOSE:
            self._delayed.clear()
            _close(self)
            return
        if decision.action is FuzzAction.DROP:
            return
        if not self._delayed and decision.sleep_s <= 0:
            self.transport.write(data)
            return
        self._delayed.append((bytes(data), decision.sleep_s))
        self._flushed.clear()
        if self._pump is None or self._pump.done():
            self._pump = asyncio.get_running_loop().create_task(self._run_pump())

    def writelines(self, data: object) -> None:
        """Write each buffer of ``data`` (an iterable of bytes) as one fuzzed write."""
        for chunk in data:  # type: ignore[attr-defined]
            self.write(chunk)

    async def _run_pump(self) -> None:
        try:
            while self._delayed:
                data, sleep_s = self._delayed[0]
                if sleep_s > 0:
                    await asyncio.sleep(sleep_s)
                if self._delayed:
                    self._delayed.popleft()
                if self.transport.is_closing():
                    self._delayed.clear()
                    break
                self.transport.write(data)
        finally:
            self._flushed.set()

    async def drain(self) -> None:
        """Wait for the writes held back by a sleep, then for the socket's buffer.

        Raises:
            ConnectionResetError: (or the socket's error) when the socket is closed.
        """
        await self._flushed.wait()
        await super().drain()

    def close(self) -> None:
        """Close the socket; writes still held back by a sleep are dropped."""
        self._delayed.clear()
        if self._pump is not None:
            self._pump.cancel()
        super().close()


def fuzz_streams(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    config: FuzzConnConfig,
    rng: random.Random,
    *,
    activate_after_s: float = 0.0,
    clock: Callable[[], float] | None = None,
) -> tuple[FuzzedStreamReader, FuzzedStreamWriter]:
    """Wrap one TCP stream pair in a fuzzed connection (Go ``FuzzConnAfterFromConfig``).

    Reads and writes share one :class:`FuzzCore` (reachable as ``writer.core``), so one
    ``rng`` seed replays one sequence of decisions. Must be called inside a running loop.

    Args:
        reader: the socket's reader.
        writer: the socket's writer.
        config: ``[p2p.test_fuzz_config]``.
        rng: the randomness (seed it to replay).
        activate_after_s: seconds before fuzzing starts (0 = at once).
        clock: monotonic seconds; the running loop's ``time`` by default.

    Raises:
        ConfigError: an invalid ``config`` or a negative ``activate_after_s``.
    """
    now = clock if clock is not None else asyncio.get_running_loop().time
    core = FuzzCore(config, rng, now=now(), activate_after_s=activate_after_s)
    fuzzed_writer = FuzzedStreamWriter(writer, reader, core, now)
    fuzzed_reader = FuzzedStreamReader(reader, core, fuzzed_writer, now)
    return fuzzed_reader, fuzzed_writer


def transport_fuzzer(
    config: FuzzConnConfig,
    rng: random.Random,
    *,
    activate_after_s: float = GO_FUZZ_ACTIVATE_AFTER_S,
    inbound: bool = False,
    on_wrap: Callable[[FuzzCore], None] | None = None,
) -> SocketWrapper:
    """The Transport hook for ``[p2p] test_fuzz = true``.

    Args:
        config: ``[p2p.test_fuzz_config]``.
        rng: seeds one :class:`random.Random` per socket (so a seed replays a run).
        activate_after_s: per socket, seconds before fuzzing starts (Go: 10 s).
        inbound: fuzz accepted sockets too (Go fuzzes dialed ones only).
        on_wrap: called with each new socket's core (statistics, tests).

    Raises:
        ConfigError: an invalid ``config``.
    """
    validate_fuzz_config(config)

    def wrap(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, outbound: bool
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if not outbound and not inbound:
            return reader, writer
        socket_rng = random.Random(rng.getrandbits(64))
        fuzzed = fuzz_streams(reader, writer, config, socket_rng, activate_after_s=activate_after_s)
        if on_wrap is not None:
            on_wrap(fuzzed[1].core)
        return fuzzed

    return wrap


def fuzzer_from_config(p2p: P2PConfig, rng: random.Random) -> SocketWrapper | None:
    """The Transport hook that ``[p2p]`` asks for, or ``None`` when ``test_fuzz`` is off.

    ``test_fuzz_activate_after`` (default 10 s, Go's constant) and ``test_fuzz_inbound``
    (default false, Go's behaviour) are cometp2p's own keys. A warning says that the node
    runs fuzzed.

    Raises:
        ConfigError: an invalid ``[p2p.test_fuzz_config]``.
    """
    if not p2p.test_fuzz:
        return None
    cfg = p2p.test_fuzz_config
    mode = validate_fuzz_config(cfg)
    logger.warning(
        "test_fuzz is on: %s sockets are fuzzed %g s after they open (mode %s, "
        "probdroprw %g, probdropconn %g, probsleep %g, maxdelay %g s)",
        "all" if p2p.test_fuzz_inbound else "dialed",
        p2p.test_fuzz_activate_after_s,
        mode.name.lower(),
        cfg.prob_drop_rw,
        cfg.prob_drop_conn,
        cfg.prob_sleep,
        cfg.max_delay_s,
    )
    return transport_fuzzer(
        cfg, rng, activate_after_s=p2p.test_fuzz_activate_after_s, inbound=p2p.test_fuzz_inbound
    )
