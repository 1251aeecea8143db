"""The Crawler: map a CometBFT network through the p2p protocol itself.

Starting from seed addresses, the crawler dials every node it learns of, runs the real
upgrade (the Transport's own pipeline, :func:`~cometp2p.aio.upgrade.upgrade_stream`:
SecretConnection handshake, NodeInfo exchange and checks; wire.md §3, §5-§7), records the
node's NodeInfo, asks it once for addresses over PEX (behaviour.md §4.2) and dials what
it is told, until nothing new is left. Many nodes are handled at once (``concurrency``,
200 by default); each step with a node is bounded by ``timeout_s``.

Why it is polite to real nodes (behaviour.md §4.5):

* exactly one ``PexRequest`` per connection, sent right after the handshake: CometBFT lets
  a peer's first two requests through and only then enforces its 10 s minimum interval;
* a node is connected to at most once per crawl and never twice at the same time (Go
  refuses a second connection from the same IP unless ``allow_duplicate_ip``);
* it never sends an unsolicited ``PexAddrs``; a ``PexRequest`` from the node is answered
  with an empty list;
* our NodeInfo advertises only the PEX channel and the listen address ``0.0.0.0:0``, which
  address books refuse as invalid, so no node stores or gossips the crawler's address.

When the network (chain ID) is not given, :meth:`Crawler.detect_network` asks the seeds
for their NodeInfo first, with a throw-away key so that the refusal of the probe (the
wrong network) cannot colour the real visit. The real visit to a probed seed starts
:data:`REDIAL_GAP_S` after the probe did: tendermint v0.35's router refuses a connection from
an IP whose previous connection started less than 100 ms before (behaviour.md §9.2).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

from cometp2p.aio.connection import Connection
from cometp2p.aio.secret_connection import SecretConnection
from cometp2p.aio.transport import close_writer
from cometp2p.aio.upgrade import UpgradeError, UpgradeStep, upgrade_stream
from cometp2p.crawler.model import (
    CrawlProgress,
    CrawlResult,
    FailureReason,
    NodeRecord,
    NodeState,
)
from cometp2p.crypto.keys import NodeKey
from cometp2p.errors import (
    AuthenticationError,
    CometP2PError,
    ConfigError,
    ConnectionBrokenError,
    CrawlError,
    LocalProtocolError,
)
from cometp2p.pex.config import PEX_CHANNEL
from cometp2p.pex.core import (
    decode_pex_message,
    encode_pex_addrs,
    encode_pex_request,
    encode_pex_response_v2,
)
from cometp2p.pex.reactor import MAX_MSG_SIZE_BYTES
from cometp2p.sansio.mconnection import ChannelDescriptor, MConnectionConfig
from cometp2p.types import NodeID
from cometp2p.wire.netaddress import NetAddress, validate_node_id
from cometp2p.wire.nodeinfo import (
    BLOCK_PROTOCOL,
    DEFAULT_SOFTWARE_VERSION,
    P2P_PROTOCOL,
    NodeInfo,
    ProtocolVersion,
)
from cometp2p.wire.proto.tendermint.p2p import pex_pb2

__all__ = ["CRAWLER_LISTEN_ADDR", "CrawlConfig", "Crawler", "IPNetwork"]

logger = logging.getLogger(__name__)

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
"""An allowed range of addresses to dial."""

CRAWLER_LISTEN_ADDR: Final = "tcp://0.0.0.0:0"
"""The listen address in the crawler's NodeInfo: valid NodeInfo, invalid book entry."""

_PROBE_NETWORK: Final = "cometp2p-crawler-probe"

REDIAL_GAP_S: Final = 0.3
"""Seconds between the start of a seed's probe and the real dial of it: v0.35's per-IP
connection tracker window (100 ms), with a margin for scheduling delays."""
_CLOSE_FLUSH_S: Final = 0.5

_MCONNECTION_CONFIG: Final = MConnectionConfig(flush_throttle_s=0.01)
"""The request goes out at once; nothing else is ever sent."""

_PEX_CHANNELS: Final = (
    ChannelDescriptor(
        id=PEX_CHANNEL, priority=1, send_queue_capacity=10, recv_message_capacity=MAX_MSG_SIZE_BYTES
    ),
)


@dataclass(frozen=True, slots=True)
class CrawlConfig:
    """How a crawl runs.

    Attributes:
        concurrency: the most nodes dialed or talked to at once.
        timeout_s: the bound, in seconds, on each step with one node: the TCP connect, the
            whole handshake (SecretConnection and NodeInfo), and the wait for its PEX answer.
        max_nodes: stop taking in new node IDs after this many (the rest of what nodes
            say is still recorded as edges).
        max_duration_s: stop the whole crawl after this many seconds (``None``: no bound
            but the per-step ones); nodes not dialed by then stay ``not_dialed``.
        allowed_networks: dial only addresses inside these IP ranges (empty: any). Nodes
            outside are recorded but not dialed.
        moniker: the moniker in the crawler's NodeInfo.
        version: the software version in the crawler's NodeInfo.
        block_version: the block protocol version advertised; nodes with another one are
            ``incompatible``. ``None`` (the default): the seed's, learnt with the network
            when the network is not given (issue #12), else 11 (CometBFT v0.38 and v1.0).
        dial_filter: ``None`` (dial every node learnt), or a predicate on a node ID that a
            node learnt during the crawl (not a seed) must pass to be dialed; the others are
            recorded (and their edges kept) but stay ``not_dialed``. Multi-round crawls
            (:mod:`cometp2p.seed`) use it to dial only the nodes that are due.

    Raises:
        ConfigError: a non-positive concurrency, timeout, max_nodes or max_duration_s.
    """

    concurrency: int = 200
    timeout_s: float = 10.0
    max_nodes: int = 10_000
    max_duration_s: float | None = None
    allowed_networks: tuple[IPNetwork, ...] = ()
    moniker: str = "cometp2p-crawler"
    version: str = DEFAULT_SOFTWARE_VERSION
    block_version: int | None = None
    dial_filter: Callable[[NodeID], bool] | None = None

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ConfigError(f"crawl concurrency must be >= 1, got {self.concurrency}")
        if not self.timeout_s > 0:
            raise ConfigError(f"crawl timeout must be > 0 s, got {self.timeout_s}")
        if self.max_nodes < 1:
            raise ConfigError(f"crawl max_nodes must be >= 1, got {self.max_nodes}")
        if self.max_duration_s is not None and not self.max_duration_s > 0:
            raise ConfigError(f"crawl max_duration_s must be > 0 s, got {self.max_duration_s}")

    def allows(self, addr: NetAddress) -> bool:
        """Whether ``addr`` may be dialed: a valid address inside ``allowed_networks``."""
        if not addr.valid():
            return False
        if not self.allowed_networks:
            return True
        return any(addr.ip in net for net in self.allowed_networks)


class _AttemptFailedError(Exception):
    """One failed attempt at a node, classified."""

    def __init__(self, reason: FailureReason, detail: str, info: NodeInfo | None = None) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.info = info


@dataclass(slots=True)
class _Link:
    """An upgraded connection to a compatible node, before the PEX exchange."""

    secret: SecretConnection
    info: NodeInfo
    leftover: bytes


@dataclass(slots=True)
class _State:
    records: dict[NodeID, NodeRecord] = field(default_factory=dict)
    edges: dict[tuple[NodeID, NodeID], None] = field(default_factory=dict)
    queue: deque[NodeRecord] = field(default_factory=deque)
    in_flight: int = 0
    peak_in_flight: int = 0


class Crawler:
    """Crawls a CometBFT network from seed addresses; one :meth:`crawl` per instance.

    Args:
        network: the chain ID to crawl; ``None`` to learn it from the seeds first
            (:meth:`detect_network`).
        config: see :class:`CrawlConfig`.
        node_key: the crawler's identity (default: a fresh key, so crawls are unlinkable).
        clock: monotonic seconds, for ``elapsed_s``.

    Example::

        crawler = Crawler("cosmoshub-4")
        result = await crawler.crawl([NetAddress.parse("id@127.0.0.1:26656")])
        print(len(result.reached), "reachable nodes")
    """

    def __init__(
        self,
        network: str | None,
        config: CrawlConfig | None = None,
        *,
        node_key: NodeKey | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.network = network
        self.config = config or CrawlConfig()
        self.node_key = node_key or NodeKey.generate()
        self._clock = clock
        self._started = clock()
        self._state = _State()
        self._used = False
        self.seed_block_version: int | None = None
        """The block protocol version of the seed :meth:`detect_network` heard from."""
        self._dialed_at: dict[str, float] = {}  # dial string -> loop time of the last connect

    # ------------------------------------------------------------------ public

    def progress(self) -> CrawlProgress:
        """A snapshot of the crawl so far (safe to call from any task at any time)."""
        records = self._state.records.values()
        return CrawlProgress(
            found=len(self._state.records),
            reached=sum(1 for r in records if r.state is NodeState.REACHED),
            failed=sum(1 for r in records if r.state is NodeState.FAILED),
            in_flight=self._state.in_flight,
            queued=len(self._state.queue),
            elapsed_s=self._clock() - self._started,
        )

    async def detect_network(self, seeds: Sequence[NetAddress]) -> str:
        """Learn the chain ID from the first seed that sends its NodeInfo; sets ``network``.

        Each seed is tried in order with a throw-away node key; the seed refuses the
        probe (its network differs from the probe's), which does not matter: its NodeInfo
        has arrived by then.

        Raises:
            CrawlError: no seed sent a NodeInfo (the reasons are in the message).
        """
        reasons: list[str] = []
        for seed in seeds:
            if not self.config.allows(seed):
                reasons.append(f"{seed}: outside the allowed networks")
                continue
            try:
                info = await self._probe(seed)
            except _AttemptFailedError as failure:
                reasons.append(f"{seed}: {failure.reason.value}: {failure.detail}")
                continue
            self.network = info.network
            self.seed_block_version = info.protocol_version.block
            logger.info(
                "seed %s is on network %s, block protocol %d",
                seed,
                info.network,
                info.protocol_version.block,
            )
            return info.network
        raise CrawlError(
            "could not learn the network from any seed; pass it explicitly. "
            + "; ".join(reasons or ["no seeds"])
        )

    async def crawl(self, seeds: Iterable[NetAddress]) -> CrawlResult:
        """Crawl from ``seeds`` until every learnt node was tried (or a bound was hit).

        Returns:
            The :class:`CrawlResult`. Failures are recorded per node, never raised.

        Raises:
            CrawlError: ``network`` is ``None`` and no seed told us its network.
            LocalProtocolError: called twice on one instance.
        """
        if self._used:
            raise LocalProtocolError("Crawler.crawl() may be called once per Crawler")
        self._used = True
        seed_list = list(dict.fromkeys(seeds))
        started_at = datetime.now(UTC)
        self._started = self._clock()
        network = self.network or await self.detect_network(seed_list)
        block_version = self.config.block_version
        if block_version is None:
            block_version = self.seed_block_version or BLOCK_PROTOCOL
        ours = NodeInfo(
            protocol_version=ProtocolVersion(P2P_PROTOCOL, block_version, 0),
            node_id=self.node_key.node_id,
            listen_addr=CRAWLER_LISTEN_ADDR,
            network=network,
            version=self.config.version,
            channels=bytes([PEX_CHANNEL]),
            moniker=self.config.moniker,
            tx_index="off",
        )
        for seed in seed_list:
            record = self._learn(seed, seed=True)
            if record is not None:
                record.seed = True
        try:
            if self.config.max_duration_s is None:
                await self._run(ours)
            else:
                async with asyncio.timeout(self.config.max_duration_s):
                    await self._run(ours)
        except TimeoutError:
            logger.info("crawl stopped after max_duration_s=%g s", self.config.max_duration_s)
            self._state.queue.clear()
            for record in self._state.records.values():
                if record.state in (NodeState.QUEUED, NodeState.DIALING):
                    record.state = NodeState.NOT_DIALED
        return CrawlResult(
            network=network,
            seeds=tuple(seed_list),
            nodes=tuple(self._state.records.values()),
            edges=tuple(self._state.edges),
            started_at=started_at,
            elapsed_s=self._clock() - self._started,
            peak_in_flight=self._state.peak_in_flight,
        )

    # ------------------------------------------------------------------ scheduling

    def _learn(self, addr: NetAddress, *, seed: bool = False) -> NodeRecord | None:
        """Record ``addr``; queue its node if it is new and dialable. None if not taken."""
        state = self._state
        node_id = addr.id
        if node_id == self.node_key.node_id:
            return None
        record = state.records.get(node_id)
        if record is None:
            if len(state.records) >= self.config.max_nodes:
                return None
            record = NodeRecord(node_id=node_id)
            state.records[node_id] = record
        if any(addr.same(known) for known in record.addresses):
            return record
        record.addresses.append(addr)
        if not self.config.allows(addr):
            return record
        wanted = self.config.dial_filter
        if not seed and not record.seed and wanted is not None and not wanted(node_id):
            return record
        record.untried.append(addr)
        if record.state in (NodeState.NOT_DIALED, NodeState.FAILED):
            record.state = NodeState.QUEUED
            state.queue.append(record)
        return record

    async def _run(self, ours: NodeInfo) -> None:
        state = self._state
        running: set[asyncio.Task[None]] = set()
        try:
            while state.queue or running:
                while state.queue and len(running) < self.config.concurrency:
                    record = state.queue.popleft()
                    running.add(
                        asyncio.create_task(
                            self._visit(record, ours), name=f"crawl-{record.node_id}"
                        )
                    )
                done, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    if (exc := task.exception()) is not None:  # a bug, not a node's fault
                        logger.error("crawl visit failed", exc_info=exc)
        finally:
            for task in running:
                task.cancel()
            for task in running:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def _visit(self, record: NodeRecord, ours: NodeInfo) -> None:
        state = self._state
        state.in_flight += 1
        state.peak_in_flight = max(state.peak_in_flight, state.in_flight)
        record.state = NodeState.DIALING
        try:
            while record.untried:
                addr = record.untried.pop(0)
                record.attempts += 1
                try:
                    link = await self._upgrade(addr, self.node_key, ours)
                except _AttemptFailedError as failure:
                    record.error, record.error_detail = failure.reason, failure.detail
                    if failure.info is not None:
                        record.node_info = failure.info
                    logger.debug("%s: %s: %s", addr, failure.reason.value, failure.detail)
                    continue
                record.state = NodeState.REACHED
                record.node_info, record.dialed = link.info, addr
                record.error = record.error_detail = None
                await self._exchange_addrs(record, link)
                return
            record.state = NodeState.FAILED
        finally:
            state.in_flight -= 1

    # ------------------------------------------------------------------ one node

    async def _probe(self, addr: NetAddress) -> NodeInfo:
        probe_info = NodeInfo(
            node_id=(key := NodeKey.generate()).node_id,
            listen_addr=CRAWLER_LISTEN_ADDR,
            network=_PROBE_NETWORK,
            channels=bytes([PEX_CHANNEL]),
            moniker=self.config.moniker,
            tx_index="off",
        )
        try:
            link = await self._upgrade(addr, key, probe_info)
        except _AttemptFailedError as failure:
            if failure.info is not None:
                return failure.info
            raise
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_CLOSE_FLUSH_S):
                await link.secret.close()
        return link.info

    async def _upgrade(self, addr: NetAddress, key: NodeKey, ours: NodeInfo) -> _Link:
        """Dial ``addr`` and run the handshake; raise _AttemptFailedError with the reason.

        An address dialed less than :data:`REDIAL_GAP_S` ago (a seed after its probe) is
        dialed again once that gap has passed (the wait is bounded by the gap)."""
        timeout_s = self.config.timeout_s
        loop = asyncio.get_running_loop()
        last = self._dialed_at.get(addr.dial_string)
        if last is not None:
            await asyncio.sleep(max(0.0, last + REDIAL_GAP_S - loop.time()))
        self._dialed_at[addr.dial_string] = loop.time()
        try:
            async with asyncio.timeout(timeout_s):
                reader, writer = await asyncio.open_connection(str(addr.ip), addr.port)
        except TimeoutError as exc:
            raise _AttemptFailedError(
                FailureReason.TIMEOUT, f"no TCP connection within {timeout_s:g} s"
            ) from exc
        except ConnectionRefusedError as exc:
            raise _AttemptFailedError(FailureReason.REFUSED, "TCP connection refused") from exc
        except OSError as exc:
            raise _AttemptFailedError(
                FailureReason.UNREACHABLE, f"TCP connect failed: {exc}"
            ) from exc
        try:
            async with asyncio.timeout(timeout_s):
                return await self._handshake(addr, reader, writer, key, ours)
        except TimeoutError as exc:
            _abort(writer)
            raise _AttemptFailedError(
                FailureReason.TIMEOUT, f"handshake not finished within {timeout_s:g} s"
            ) from exc
        except _AttemptFailedError:
            await close_writer(writer)
            raise
        except BaseException:
            _abort(writer)
            raise

    async def _handshake(
        self,
        addr: NetAddress,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        key: NodeKey,
        ours: NodeInfo,
    ) -> _Link:
        # The outer asyncio.timeout is the real bound; the inner ones only must not fire first.
        inner_s = self.config.timeout_s * 2 + 1.0
        try:
            stream = await upgrade_stream(
                reader, writer, key, ours, dialed_id=addr.id, timeout_s=inner_s
            )
        except UpgradeError as exc:
            failure = _AttemptFailedError(_failure_reason(exc), _failure_detail(exc), exc.node_info)
            raise failure from (exc.cause or exc)
        return _Link(stream.secret, stream.node_info, stream.leftover)

    async def _exchange_addrs(self, record: NodeRecord, link: _Link) -> None:
        """Ask the node once for addresses and learn them; record a PEX failure on it."""
        timeout_s = self.config.timeout_s
        conn = Connection(
            link.secret, _PEX_CHANNELS, _MCONNECTION_CONFIG, initial_plaintext=link.leftover
        )
        conn.start()
        try:
            conn.try_send(PEX_CHANNEL, encode_pex_request().SerializeToString())
            async with asyncio.timeout(timeout_s):
                while True:
                    message = decode_pex_message(await conn.receive(PEX_CHANNEL))
                    if isinstance(message, pex_pb2.PexAddrs):
                        self._on_addrs(record, message)
                        return
                    # A request from the node: answer with nothing, in the kind it came in.
                    empty = (
                        encode_pex_response_v2(())
                        if isinstance(message, pex_pb2.PexRequestV2)
                        else encode_pex_addrs(())
                    )
                    conn.try_send(PEX_CHANNEL, empty.SerializeToString())
        except TimeoutError:
            record.pex_error = f"no PexAddrs within {timeout_s:g} s"
        except CometP2PError as exc:
            record.pex_error = f"no PexAddrs: {exc}"
        finally:
            await conn.close(flush_timeout_s=_CLOSE_FLUSH_S)

    def _on_addrs(self, record: NodeRecord, message: pex_pb2.PexAddrs) -> None:
        record.pex_addrs = len(message.addrs)
        bad = 0
        for proto in message.addrs:
            try:
                received = NetAddress.from_proto(proto)
                addr = NetAddress(validate_node_id(received.id), received.ip, received.port)
            except CometP2PError:  # a bad IP, port or node ID
                bad += 1
                continue
            self._state.edges.setdefault((record.node_id, addr.id), None)
            self._learn(addr)
        if bad:
            record.pex_error = f"{bad} of {len(message.addrs)} addresses were malformed"


_FAILURE_REASONS: Final = {
    UpgradeStep.DIALED_ID: FailureReason.AUTH_FAILURE,
    UpgradeStep.NODE_INFO_EXCHANGE: FailureReason.PROTOCOL_ERROR,
    UpgradeStep.NODE_INFO_INVALID: FailureReason.PROTOCOL_ERROR,
    UpgradeStep.NODE_INFO_ID: FailureReason.AUTH_FAILURE,
    UpgradeStep.SELF: FailureReason.AUTH_FAILURE,
    UpgradeStep.INCOMPATIBLE: FailureReason.INCOMPATIBLE,
}


def _failure_reason(exc: UpgradeError) -> FailureReason:
    """The crawl's name for a failed upgrade step (the ``error`` of network.json)."""
    if exc.step is not UpgradeStep.SECRET_CONNECTION:
        return _FAILURE_REASONS[exc.step]
    if isinstance(exc.cause, AuthenticationError):
        return FailureReason.AUTH_FAILURE
    if isinstance(exc.cause, ConnectionBrokenError):
        return FailureReason.REFUSED  # hung up: its filters, duplicate-IP rule or limits
    return FailureReason.PROTOCOL_ERROR


def _failure_detail(exc: UpgradeError) -> str:
    if exc.step is UpgradeStep.SECRET_CONNECTION and isinstance(exc.cause, ConnectionBrokenError):
        return f"closed during the SecretConnection handshake: {exc.detail}"
    if exc.step is UpgradeStep.NODE_INFO_EXCHANGE:
        return f"no valid NodeInfo: {exc.detail}"
    return exc.detail


def _abort(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(Exception):
        writer.transport.abort()
