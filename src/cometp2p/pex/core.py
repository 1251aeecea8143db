"""The PEX rules as pure objects: what to answer, what to punish, whom to dial and when.

Implements the decisions of behaviour.md §4.2-§4.7 (CometBFT v0.38 ``p2p/pex``) with no IO,
no event loop and no global ``random``: time comes in as ``now`` (an aware datetime) and
randomness from an injected :class:`random.Random`. :class:`~cometp2p.pex.reactor.PEXReactor`
only moves messages and runs timers around a :class:`PexCore`.

Verdicts on what a peer sends (behaviour.md §4.5):

=====================================  ============================================
input                                  verdict
=====================================  ============================================
undecodable bytes, empty/unknown oneof  disconnect (no ban), as Go's unwrap failure
address with a bad IP or port, or a     disconnect and ban 24 h
malformed V2 URL
more than ``max_addrs_per_message``     disconnect and ban 24 h (Go has no limit)
(v0.35 peers: more than 100)
PexAddrs we did not ask for             disconnect and ban 24 h
PexRequest too soon (after two free;    disconnect and ban 24 h
v0.35 peers: within 200 ms)
peer's own listen address unparsable    disconnect (no ban)
unroutable / our own / private / banned the address is refused by the AddrBook and
addresses                               counted; the peer stays
=====================================  ============================================

Differences from Go, on purpose: addresses are counted once per message (duplicates inside
one message are skipped), a reply never contains the requester's own ID, a request is only
ever sent to a peer with no request outstanding and at least ``request_gap_s`` after the
previous one (so that short test periods cannot flood a v0.38 peer), and a request is
recorded before it is sent so that a quick answer is never taken as unsolicited.

Tendermint v0.35 peers (:mod:`cometp2p.pex.dialect`, behaviour.md §9.1) are held to v0.35's
rules instead: a request every 200 ms is fine, responses carry at most 100 addresses each
way, and a ``PexRequestV2`` is answered with a ``PexResponseV2`` of URLs. A well-formed URL
we cannot use (another transport, a host name) is refused like an unroutable address. As
v0.35's ``Advertise`` does, an answer to a v0.35 peer starts with our own address
(:attr:`PexCore.self_address`): v0.35 never learns an inbound peer's address from its
NodeInfo, only from PEX.
"""

from __future__ import annotations

import enum
import random
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final, Protocol

from google.protobuf.message import DecodeError

from cometp2p.errors import RemoteProtocolError
from cometp2p.pex.addrbook import ZERO_TIME, AddrBook, AddResult
from cometp2p.pex.config import PexConfig
from cometp2p.pex.dialect import (
    V035_MAX_ADDRESSES,
    PexDialect,
    V035RequestLimiter,
    format_pex_url,
    parse_pex_url,
)
from cometp2p.pex.errors import AddrBookError, AddrBookErrorReason
from cometp2p.types import NodeID
from cometp2p.wire.netaddress import NetAddress
from cometp2p.wire.proto.tendermint.p2p import pex_pb2, types_pb2

__all__ = [
    "BIAS_TO_SELECT_NEW_PEERS",
    "AddrsReport",
    "DialBackoff",
    "DialVerdict",
    "Offence",
    "PeerRef",
    "PeerTrust",
    "PexCore",
    "PexMessage",
    "PexMisbehaviourError",
    "RequestDecision",
    "RequestRateLimiter",
    "decode_pex_message",
    "encode_pex_addrs",
    "encode_pex_request",
    "encode_pex_response_v2",
    "ensure_peers_bias",
]

BIAS_TO_SELECT_NEW_PEERS: Final = 30
"""Percent of new addresses in a seed's answer (behaviour.md §4.1)."""

PexMessage = pex_pb2.PexRequest | pex_pb2.PexAddrs | pex_pb2.PexRequestV2 | pex_pb2.PexResponseV2
"""A decoded, unwrapped PEX message (V2: tendermint v0.35, behaviour.md §9.1)."""

PexResponse = pex_pb2.PexAddrs | pex_pb2.PexResponseV2
"""An answer to a request, in either dialect."""


class Offence(enum.Enum):
    """What a peer did wrong on the PEX channel (behaviour.md §4.5)."""

    UNDECODABLE = "undecodable PEX message"
    UNKNOWN_MESSAGE = "unknown PEX message"
    MALFORMED_ADDRESS = "malformed address in PexAddrs"
    TOO_MANY_ADDRS = "too many addresses in one PexAddrs"
    UNSOLICITED_ADDRS = "unsolicited PexAddrs"
    REQUEST_TOO_SOON = "PexRequest too soon"
    BAD_SOURCE = "peer's own listen address does not parse"


_BANNED_OFFENCES: Final = frozenset(
    {
        Offence.MALFORMED_ADDRESS,
        Offence.TOO_MANY_ADDRS,
        Offence.UNSOLICITED_ADDRS,
        Offence.REQUEST_TOO_SOON,
    }
)


class PexMisbehaviourError(RemoteProtocolError):
    """A peer broke a PEX rule; the reactor disconnects it.

    Attributes:
        offence: the :class:`Offence`.
        ban: True if the peer's address was also banned (behaviour.md §4.5).
    """

    def __init__(self, offence: Offence, message: str) -> None:
        super().__init__(f"{offence.value}: {message}")
        self.offence = offence
        self.ban = offence in _BANNED_OFFENCES


# -- messages (behaviour.md §4.2) -------------------------------------------------------


def decode_pex_message(data: bytes) -> PexMessage:
    """Decode the bytes of one PEX channel message and unwrap its oneof.

    Raises:
        PexMisbehaviourError: UNDECODABLE if the bytes are not a ``tendermint.p2p.Message``,
            UNKNOWN_MESSAGE if no known member of the oneof is set.
    """
    message = pex_pb2.Message()
    try:
        message.ParseFromString(data)
    except DecodeError as exc:
        raise PexMisbehaviourError(
            Offence.UNDECODABLE, f"expected a tendermint.p2p.Message, got {len(data)} bytes: {exc}"
        ) from exc
    which = message.WhichOneof("sum")
    if which == "pex_request":
        return message.pex_request
    if which == "pex_addrs":
        return message.pex_addrs
    if which == "pex_request_v2":
        return message.pex_request_v2
    if which == "pex_response_v2":
        return message.pex_response_v2
    raise PexMisbehaviourError(
        Offence.UNKNOWN_MESSAGE,
        f"expected a PEX request or response, got {len(data)} bytes with no known member set",
    )


def encode_pex_request(*, v2: bool = False) -> pex_pb2.Message:
    """The wrapped ``PexRequest`` to send (``PexRequestV2`` when ``v2``)."""
    if v2:
        return pex_pb2.Message(pex_request_v2=pex_pb2.PexRequestV2())
    return pex_pb2.Message(pex_request=pex_pb2.PexRequest())


def encode_pex_response_v2(addrs: Iterable[NetAddress]) -> pex_pb2.Message:
    """The wrapped ``PexResponseV2`` carrying ``addrs`` as ``mconn://`` URLs."""
    return pex_pb2.Message(
        pex_response_v2=pex_pb2.PexResponseV2(
            addresses=[pex_pb2.PexAddressV2(url=format_pex_url(a)) for a in addrs]
        )
    )


def encode_pex_addrs(addrs: Iterable[NetAddress]) -> pex_pb2.Message:
    """The wrapped ``PexAddrs`` carrying ``addrs``."""
    return pex_pb2.Message(pex_addrs=pex_pb2.PexAddrs(addrs=[a.to_proto() for a in addrs]))


# -- peers, decisions, reports --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PeerRef:
    """What the PEX rules need to know about a connected peer.

    Attributes:
        id: the peer's node ID.
        outbound: True if we dialed it.
        socket_address: the dialed address, or ``id@remote_ip:remote_port`` for inbound
            peers; bans are applied to it (by ID).
        listen_address: the peer's self-reported ``id@listen_addr`` (NodeInfo), or
            ``None`` if it does not parse.
        dialect: the PEX protocol it speaks (from its NodeInfo version, or v0.35 once it
            sent a V2 message).
    """

    id: NodeID
    outbound: bool
    socket_address: NetAddress
    listen_address: NetAddress | None
    dialect: PexDialect = PexDialect.V038


@dataclass(frozen=True, slots=True)
class RequestDecision:
    """How to answer one PexRequest.

    Attributes:
        reply: the addresses to send, or ``None`` to ignore the request (a seed already
            answered this peer and is disconnecting it).
        disconnect_after_reply: seed mode, inbound requester: flush the reply, then
            stop the peer gracefully.
        v2: answer with a ``PexResponseV2`` (the request was a ``PexRequestV2``).
    """

    reply: tuple[NetAddress, ...] | None
    disconnect_after_reply: bool = False
    v2: bool = False


@dataclass(frozen=True, slots=True)
class AddrsReport:
    """What a solicited PexAddrs did to the book.

    Attributes:
        received: addresses in the message.
        distinct: distinct addresses among them (by ``id@ip:port``).
        added: addresses whose ID was new to the book and is now in it.
        already_known: addresses whose ID the book knew before (recaptures for the
            network-size estimate).
        refused: addresses the book refused (see ``refusals``).
        refusals: refusal counts by :class:`~cometp2p.pex.errors.AddrBookErrorReason`.
        book_size_before: the book size before the message was processed.
        from_seed: the sender's listen address is one of our seeds (dial at once).
    """

    received: int
    distinct: int
    added: int
    already_known: int
    refused: int
    refusals: Mapping[AddrBookErrorReason, int] = field(default_factory=dict)
    book_size_before: int = 0
    from_seed: bool = False


def ensure_peers_bias(num_outbound: int) -> int:
    """Percent bias towards new addresses when picking dial candidates (behaviour.md §4.6).

    ``min(out, 8) * 10 + 10``: 10 % with no outbound peer, up to 90 % with eight or more.
    """
    return min(max(num_outbound, 0), 8) * 10 + 10


# -- inbound request rate limit ------------------------------------------------------------


class RequestRateLimiter:
    """Go's ``receiveRequest``: two free requests per peer, then one per interval.

    The first request is recorded with the zero time, the second with its arrival time;
    each later one must come at least ``min_interval_s`` after the last accepted one.

    Args:
        min_interval_s: the minimum gap in seconds (Go: ``ensurePeersPeriod / 3``).
    """

    __slots__ = ("_last", "_min_interval")

    def __init__(self, min_interval_s: float) -> None:
        self._min_interval = timedelta(seconds=min_interval_s)
        self._last: dict[NodeID, datetime] = {}

    def allow(self, peer_id: NodeID, now: datetime) -> bool:
        """Record a request from ``peer_id`` at ``now``; False if it came too soon.

        A refused request is not recorded.
        """
        last = self._last.get(peer_id)
        if last is None:
            self._last[peer_id] = ZERO_TIME
            return True
        if last == ZERO_TIME:
            self._last[peer_id] = now
            return True
        if now - last < self._min_interval:
            return False
        self._last[peer_id] = now
        return True

    def seen(self, peer_id: NodeID) -> bool:
        """True if a request from ``peer_id`` was recorded (and not forgotten)."""
        return peer_id in self._last

    def record(self, peer_id: NodeID, now: datetime) -> None:
        """Record a request without checking (seed mode's one answer)."""
        self._last[peer_id] = now

    def forget(self, peer_id: NodeID) -> None:
        """Drop the history of ``peer_id`` (it disconnected)."""
        self._last.pop(peer_id, None)


# -- dial back-off (behaviour.md §4.6 dialPeer) ---------------------------------------------


class DialVerdict(enum.Enum):
    """Whether an address may be dialed now."""

    DIAL = "dial"
    TOO_EARLY = "too early to dial (backing off)"
    GIVE_UP = "too many failed dials; banned"
    UNTRUSTED = "trust score below the minimum"


@dataclass(frozen=True, slots=True)
class _Attempts:
    count: int
    last_dialed: datetime


class DialBackoff:
    """Failed-dial counters per ``ip:port`` and the exponential back-off they imply.

    After ``n`` failures the next dial waits ``unit * 2**n + U[0, jitter)`` seconds (the
    jitter is drawn at each check, as in Go), capped at ``persistent_max_s`` for
    persistent peers when that is positive. A non-persistent address with more than
    ``max_attempts`` failures is given up. Counters live in memory only.
    """

    __slots__ = ("_attempts", "_config", "_rng")

    def __init__(self, config: PexConfig, rng: random.Random) -> None:
        self._config = config
        self._rng = rng
        self._attempts: dict[str, _Attempts] = {}

    def attempts(self, addr: NetAddress) -> int:
        """Failed dials of ``addr`` since its last success (0 if none)."""
        entry = self._attempts.get(addr.dial_string)
        return 0 if entry is None else entry.count

    def backoff_s(self, attempts: int, *, persistent: bool) -> float:
        """The wait in seconds after ``attempts`` failures (a fresh jitter each call)."""
        cfg = self._config
        if attempts <= 0:
            return 0.0
        backoff = cfg.dial_backoff_unit_s * float(2 ** min(attempts, 62))
        if cfg.dial_backoff_jitter_s > 0:
            backoff += self._rng.random() * cfg.dial_backoff_jitter_s
        cap = cfg.persistent_peers_max_dial_period_s
        if persistent and cap > 0 and backoff > cap:
            backoff = cap
        return backoff

    def check(self, addr: NetAddress, *, persistent: bool, now: datetime) -> DialVerdict:
        """May ``addr`` be dialed at ``now``?"""
        entry = self._attempts.get(addr.dial_string)
        if entry is None:
            return DialVerdict.DIAL
        if not persistent and entry.count > self._config.max_attempts_to_dial:
            return DialVerdict.GIVE_UP
        wait = self.backoff_s(entry.count, persistent=persistent)
        if (now - entry.last_dialed).total_seconds() < wait:
            return DialVerdict.TOO_EARLY
        return DialVerdict.DIAL

    def failed(self, addr: NetAddress, now: datetime) -> int:
        """Count a failed dial at ``now``; returns the new count."""
        count = self.attempts(addr) + 1
        self._attempts[addr.dial_string] = _Attempts(count, now)
        return count

    def forget(self, addr: NetAddress) -> None:
        """Clear the history of ``addr`` (dialed successfully, or given up)."""
        self._attempts.pop(addr.dial_string, None)


# -- the core -------------------------------------------------------------------------------


class PeerTrust(Protocol):
    """What PEX asks of a trust metric, when one is wired in (``PexCore.trust``, §6).

    ``allows(id)``: may the peer be dialed and handed out; ``score(id)``: 0..100, higher
    is dialed first (an unknown peer counts as 100).
    """

    def allows(self, node_id: NodeID) -> bool: ...

    def score(self, node_id: NodeID) -> int: ...


class PexCore:
    """The PEX state of one node and every rule applied to it (behaviour.md §4.3-§4.7).

    Holds the requests we sent and have not seen answered, the inbound request history
    for rate limiting, dial back-off counters and the seed crawler's records, and applies
    verdicts to the :class:`~cometp2p.pex.addrbook.AddrBook` (adds, attempts, bans).

    Args:
        book: the address book it feeds.
        config: PEX settings.
        rng: the only source of randomness.
        seed_addrs: the resolved seed addresses.
    """

    def __init__(
        self,
        book: AddrBook,
        config: PexConfig,
        *,
        rng: random.Random,
        seed_addrs: Sequence[NetAddress] = (),
    ) -> None:
        self.book = book
        self.config = config
        self.rng = rng
        self.seed_addrs: tuple[NetAddress, ...] = tuple(seed_addrs)
        self.rate_limiter = RequestRateLimiter(config.receive_request_interval_s)
        self.v035_limiter = V035RequestLimiter()
        self.backoff = DialBackoff(config, rng)
        self._requests_sent: set[NodeID] = set()
        self._last_request_sent: dict[NodeID, datetime] = {}
        self._crawled: dict[NodeID, datetime] = {}
        self._request_gap = timedelta(seconds=config.request_gap_s)
        self._ban_time_s = config.ban_time_s
        self._no_outbound_since: datetime | None = None
        self.trust: PeerTrust | None = None
        """Set by :class:`~cometp2p.trust.reactor.TrustReactor`: filters and orders by trust."""
        self.self_address: NetAddress | None = None
        """Our advertised address, put first in answers to v0.35 peers (set by the
        reactor once the Switch listens)."""

    # -- requests we send ----------------------------------------------------------------

    def has_outstanding_request(self, peer_id: NodeID) -> bool:
        """True while a request to ``peer_id`` is unanswered."""
        return peer_id in self._requests_sent

    def can_request(self, peer_id: NodeID, now: datetime) -> bool:
        """True if no request to ``peer_id`` is outstanding and the request gap has passed."""
        if peer_id in self._requests_sent:
            return False
        last = self._last_request_sent.get(peer_id)
        return last is None or now - last >= self._request_gap

    def next_request_allowed_at(self, peer_id: NodeID) -> datetime | None:
        """When the request gap to ``peer_id`` ends, or ``None`` if it never started."""
        last = self._last_request_sent.get(peer_id)
        return None if last is None else last + self._request_gap

    def request_sent(self, peer_id: NodeID, now: datetime) -> None:
        """Record a request to ``peer_id`` *before* it is queued, so an answer is solicited."""
        self._requests_sent.add(peer_id)
        self._last_request_sent[peer_id] = now

    def request_not_sent(self, peer_id: NodeID) -> None:
        """Undo :meth:`request_sent` when the request could not be queued."""
        self._requests_sent.discard(peer_id)

    def forget_peer(self, peer_id: NodeID) -> None:
        """The peer disconnected: drop its outstanding request and its request history."""
        self._requests_sent.discard(peer_id)
        self._last_request_sent.pop(peer_id, None)
        self.rate_limiter.forget(peer_id)
        self.v035_limiter.forget(peer_id)

    # -- peers ---------------------------------------------------------------------------

    def learn_inbound_peer(self, peer: PeerRef, now: datetime) -> AddResult | AddrBookError:
        """An inbound peer is its own source: offer its listen address to the book.

        Returns:
            What the book did, or the refusal (never raised: refusals are routine).
        """
        addr = peer.listen_address
        if addr is None:
            return AddrBookError(AddrBookErrorReason.INVALID, f"peer {peer.id} listen address")
        try:
            return self.book.add_address(addr, addr, now)
        except AddrBookError as exc:
            return exc

    # -- receiving (behaviour.md §4.5) ---------------------------------------------------

    def _punish(self, peer: PeerRef, offence: Offence, message: str, now: datetime) -> None:
        error = PexMisbehaviourError(offence, message)
        if error.ban:
            self.book.mark_bad(peer.socket_address, self._ban_time_s, now)
        raise error

    def max_addrs_for(self, peer: PeerRef) -> int:
        """The most addresses sent to, or accepted from, ``peer`` in one message."""
        limit = self.config.max_addrs_per_message
        return min(limit, V035_MAX_ADDRESSES) if peer.dialect is PexDialect.V035 else limit

    def on_request(self, peer: PeerRef, now: datetime, *, v2: bool = False) -> RequestDecision:
        """A PexRequest (``PexRequestV2`` when ``v2``) arrived from ``peer``.

        Seed mode and an inbound requester: one answer biased 30 % towards new addresses,
        then a graceful disconnect (a repeat is ignored). Otherwise the peer's dialect's
        rate limit applies (v0.38: two free requests, then one per
        ``receive_request_interval_s``; v0.35: one per 200 ms) and the answer is a random
        selection of the book. Answers hold at most :meth:`max_addrs_for` addresses and
        never the requester's own ID.

        Raises:
            PexMisbehaviourError: REQUEST_TOO_SOON (the peer's address is banned first).
        """
        limit = self.max_addrs_for(peer)
        if self.config.seed_mode and not peer.outbound:
            if self.rate_limiter.seen(peer.id):
                return RequestDecision(None)
            self.rate_limiter.record(peer.id, now)
            selection = self.book.get_selection_with_bias(BIAS_TO_SELECT_NEW_PEERS)
            reply = tuple(a for a in selection if a.id != peer.id and self._trusted(a))[:limit]
            return RequestDecision(reply, disconnect_after_reply=True, v2=v2)
        if peer.dialect is PexDialect.V035:
            if not self.v035_limiter.allow(peer.id, now):
                self._punish(
                    peer,
                    Offence.REQUEST_TOO_SOON,
                    "expected at most one request per 200 ms (tendermint v0.35)",
                    now,
                )
        elif not self.rate_limiter.allow(peer.id, now):
            interval = self.config.receive_request_interval_s
            self._punish(
                peer,
                Offence.REQUEST_TOO_SOON,
                f"expected at most one request per {interval:g} s after two free ones",
                now,
            )
        selection = [a for a in self.book.get_selection() if a.id != peer.id and self._trusted(a)]
        ours = self.self_address
        if peer.dialect is PexDialect.V035 and ours is not None and ours.id != peer.id:
            selection = [ours, *(a for a in selection if a.id != ours.id)]
        return RequestDecision(tuple(selection[:limit]), v2=v2)

    def _trusted(self, addr: NetAddress) -> bool:
        return self.trust is None or self.trust.allows(addr.id)

    def on_addrs(self, peer: PeerRef, message: PexResponse, now: datetime) -> AddrsReport:
        """A PexAddrs or PexResponseV2 arrived from ``peer``: check it, then offer each
        address to the book.

        Either kind answers an outstanding request of either kind. A URL that is well
        formed but not usable (see :func:`~cometp2p.pex.dialect.parse_pex_url`) is
        counted as refused (INVALID).

        Raises:
            PexMisbehaviourError: TOO_MANY_ADDRS, MALFORMED_ADDRESS or UNSOLICITED_ADDRS
                (the peer's address is banned first), or BAD_SOURCE (no ban).
        """
        entries: Sequence[pex_pb2.PexAddressV2 | types_pb2.NetAddress] = (
            message.addresses if isinstance(message, pex_pb2.PexResponseV2) else message.addrs
        )
        received = len(entries)
        limit = self.max_addrs_for(peer)
        if received > limit:
            self._punish(
                peer, Offence.TOO_MANY_ADDRS, f"expected at most {limit}, got {received}", now
            )
        addrs, unusable = self._parse_addrs(peer, entries, now)
        if peer.id not in self._requests_sent:
            self._punish(
                peer, Offence.UNSOLICITED_ADDRS, "expected no PexAddrs without a request", now
            )
        self._requests_sent.discard(peer.id)
        src = peer.listen_address
        if src is None:
            raise PexMisbehaviourError(
                Offence.BAD_SOURCE, f"peer {peer.id} listen address is not id@ip:port"
            )
        return self._offer_addrs(addrs, src, now, received=received, unusable=unusable)

    def _parse_addrs(
        self,
        peer: PeerRef,
        entries: Sequence[pex_pb2.PexAddressV2 | types_pb2.NetAddress],
        now: datetime,
    ) -> tuple[list[NetAddress], int]:
        """The addresses of a PEX answer, and how many were well formed but unusable.

        Raises:
            PexMisbehaviourError: MALFORMED_ADDRESS (the peer's address is banned first).
        """
        addrs: list[NetAddress] = []
        unusable = 0
        for index, entry in enumerate(entries):
            try:
                if isinstance(entry, pex_pb2.PexAddressV2):
                    parsed = parse_pex_url(entry.url).address
                    if parsed is None:
                        unusable += 1
                        continue
                    addrs.append(parsed)
                else:
                    addrs.append(NetAddress.from_proto(entry))
            except RemoteProtocolError as exc:
                self._punish(peer, Offence.MALFORMED_ADDRESS, f"addrs[{index}]: {exc}", now)
        return addrs, unusable

    def _offer_addrs(
        self,
        addrs: Sequence[NetAddress],
        src: NetAddress,
        now: datetime,
        *,
        received: int,
        unusable: int,
    ) -> AddrsReport:
        """Offer each distinct address of a checked answer to the book, learnt from ``src``."""
        book = self.book
        size_before = book.size()
        seen: set[NetAddress] = set()
        added = already_known = 0
        refused = unusable
        refusals: Counter[AddrBookErrorReason] = Counter()
        if unusable:
            refusals[AddrBookErrorReason.INVALID] += unusable
        for addr in addrs:
            if addr in seen:
                continue
            seen.add(addr)
            known = book.has_address(addr)
            try:
                result = book.add_address(addr, src, now)
            except AddrBookError as exc:
                refused += 1
                refusals[exc.reason] += 1
                continue
            if known:
                already_known += 1
            elif result is AddResult.ADDED:
                added += 1
        return AddrsReport(
            received=received,
            distinct=len(seen),
            added=added,
            already_known=already_known,
            refused=refused,
            refusals=dict(refusals),
            book_size_before=size_before,
            from_seed=src in self.seed_addrs,
        )

    # -- dialing (behaviour.md §4.6) ------------------------------------------------------

    def plan_dials(
        self,
        num_to_dial: int,
        num_outbound: int,
        is_dialing_or_existing: Callable[[NetAddress], bool],
    ) -> list[NetAddress]:
        """Pick up to ``num_to_dial`` distinct dial candidates from the book.

        ``3 * num_to_dial`` picks, biased towards new addresses by
        :func:`ensure_peers_bias`; addresses already picked, connected or being dialed
        (per ``is_dialing_or_existing``) are skipped. With :attr:`trust` set, distrusted
        addresses are skipped too and all ``3 * num_to_dial`` picks are made, of which the
        ``num_to_dial`` with the highest trust score are dialed (ties in pick order).
        """
        if num_to_dial <= 0:
            return []
        bias = ensure_peers_bias(num_outbound)
        chosen: dict[NodeID, NetAddress] = {}
        for _ in range(3 * num_to_dial):
            if self.trust is None and len(chosen) >= num_to_dial:
                break
            addr = self.book.pick_address(bias)
            if addr is None or addr.id in chosen or is_dialing_or_existing(addr):
                continue
            if not self._trusted(addr):
                continue
            chosen[addr.id] = addr
        picked = list(chosen.values())
        if self.trust is not None:
            trust = self.trust
            picked.sort(key=lambda a: -trust.score(a.id))
        return picked[:num_to_dial]

    def seed_fallback_due(self, num_outbound: int, now: datetime) -> float | None:
        """Should the seeds be dialed now whatever the book holds? (seed fallback)

        Called once per ensure-peers round. Go dials its seeds only when the book yields
        no dial candidate, so a book full of dead addresses keeps a node away from its
        seeds for good; here a node that had no outbound peer for
        ``config.seed_fallback_after_s`` seconds dials them again (then waits as long
        before the next fallback).

        Returns:
            The seconds spent without an outbound peer when the fallback is due, else
            ``None`` (also when there are no seeds).
        """
        if num_outbound > 0 or not self.seed_addrs:
            self._no_outbound_since = None
            return None
        if self._no_outbound_since is None:
            self._no_outbound_since = now
            return None
        idle_s = (now - self._no_outbound_since).total_seconds()
        if idle_s < self.config.seed_fallback_after_s:
            return None
        self._no_outbound_since = now
        return idle_s

    def check_dial(self, addr: NetAddress, *, persistent: bool, now: datetime) -> DialVerdict:
        """May ``addr`` be dialed now? A GIVE_UP verdict bans it and clears its counter."""
        if not self._trusted(addr):
            return DialVerdict.UNTRUSTED
        verdict = self.backoff.check(addr, persistent=persistent, now=now)
        if verdict is DialVerdict.GIVE_UP:
            self.book.mark_bad(addr, self._ban_time_s, now)
        return verdict

    def dial_failed(self, addr: NetAddress, now: datetime) -> int:
        """A dial of ``addr`` failed: count it in the book and in the back-off."""
        self.book.mark_attempt(addr, now)
        return self.backoff.failed(addr, now)

    def dial_succeeded(self, addr: NetAddress) -> None:
        """A dial of ``addr`` succeeded: clear its back-off."""
        self.backoff.forget(addr)

    def dialed_ourselves(self, addr: NetAddress) -> None:
        """``addr`` turned out to be us: never store or dial it again."""
        self.book.remove_address(addr)
        self.book.add_our_address(addr)
        self.backoff.forget(addr)

    # -- seed mode (behaviour.md §4.7) ---------------------------------------------------

    def crawl_targets(self, addrs: Iterable[NetAddress], now: datetime) -> list[NetAddress]:
        """The addresses of ``addrs`` not crawled recently; each is recorded as crawled now."""
        wait = timedelta(seconds=self.config.min_time_between_crawls_s)
        targets: list[NetAddress] = []
        for addr in addrs:
            last = self._crawled.get(addr.id)
            if last is not None and now - last < wait:
                continue
            self._crawled[addr.id] = now
            targets.append(addr)
        return targets

    def expire_crawl_records(self, now: datetime) -> int:
        """Forget crawl records older than ``crawl_retention_s``; returns how many."""
        horizon = now - timedelta(seconds=self.config.crawl_retention_s)
        stale = [node_id for node_id, last in self._crawled.items() if last < horizon]
        for node_id in stale:
            del self._crawled[node_id]
        return len(stale)

    def crawl_record(self, node_id: NodeID) -> datetime | None:
        """When ``node_id`` was last crawled, if remembered."""
        return self._crawled.get(node_id)
