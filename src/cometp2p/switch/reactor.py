"""The Reactor API: how an application plugs into the Switch (behaviour.md §3).

A Reactor owns one or more Channels. The Switch routes every whole message received on a
channel to the reactor that declared it, as an :class:`Envelope`, and calls the peer
lifecycle hooks. Subclass :class:`Reactor` and override what you need; every hook has a
harmless default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from google.protobuf.message import Message

from cometp2p.errors import LocalProtocolError
from cometp2p.sansio.mconnection import ChannelDescriptor

if TYPE_CHECKING:
    from cometp2p.switch.lifecycle import SwitchHandle
    from cometp2p.switch.peer import Peer

__all__ = ["Envelope", "Reactor", "ReactorTable"]


@dataclass(frozen=True, slots=True)
class Envelope:
    """One received message with its routing information.

    Attributes:
        channel_id: the channel it arrived on (0..255).
        src: the peer that sent it.
        message: what :meth:`Reactor.decode` made of the bytes (the raw ``bytes`` by
            default, a protobuf message for reactors that decode).
    """

    channel_id: int
    src: Peer
    message: bytes | Message


class Reactor:
    """Base class for reactors; every hook is a no-op by default.

    Attributes:
        switch: set by ``Switch.add_reactor``; ``None`` before that. Typed as the
            :class:`~cometp2p.switch.lifecycle.SwitchHandle` protocol (lifecycle events,
            ``is_running``, ``node_id``) so that this module does not import the Switch;
            a reactor that needs the whole Switch narrows it with ``isinstance``.
        name: a human-readable name used in logs.
    """

    name: str = "reactor"

    def __init__(self) -> None:
        self.switch: SwitchHandle | None = None

    def get_channels(self) -> list[ChannelDescriptor]:
        """Return the channels this reactor owns; IDs must be unique across reactors."""
        return []

    def decode(self, channel_id: int, data: bytes) -> bytes | Message:
        """Turn received bytes into the message given to :meth:`receive`.

        Raise any :class:`~cometp2p.errors.RemoteProtocolError` to refuse the bytes; the
        Switch then stops the peer with that reason. The default returns ``data``.
        """
        return data

    async def start(self) -> None:
        """Called once when the Switch starts, before it listens or adds any peer.

        A routine that needs a running Switch awaits ``self.switch.lifecycle.started``.
        """

    async def stop(self) -> None:
        """Called once when the Switch stops, after every peer was removed."""

    def init_peer(self, peer: Peer) -> None:
        """Prepare per-peer state (in ``peer.data``) before the peer starts."""

    async def add_peer(self, peer: Peer) -> None:
        """A peer was started and added to the peer set; it may be sent to now."""

    async def remove_peer(self, peer: Peer, reason: BaseException | None) -> None:
        """The peer was stopped (``reason`` is ``None`` for a graceful stop)."""

    async def receive(self, envelope: Envelope) -> None:
        """Handle one message. Exceptions stop that peer, never the node.

        Messages of one channel from one peer arrive in order; a slow ``receive`` delays
        only that channel of that peer.
        """


class ReactorTable:
    """The Switch's reactors by name and by channel, in registration order.

    Attributes:
        by_name: reactors by name.
        by_channel: the reactor that declared each channel ID.
        channels: every declared channel, in registration order.
    """

    def __init__(self) -> None:
        self.by_name: dict[str, Reactor] = {}
        self.by_channel: dict[int, Reactor] = {}
        self.channels: list[ChannelDescriptor] = []

    def add(self, name: str, reactor: Reactor) -> None:
        """Register ``reactor`` under ``name`` with its channels (nothing changes on error).

        Raises:
            LocalProtocolError: a channel ID is already owned by another reactor (or
                declared twice by this one), or the name is taken.
        """
        if name in self.by_name:
            raise LocalProtocolError(f"a reactor named {name!r} is already registered")
        descs = reactor.get_channels()
        seen: set[int] = set()
        for desc in descs:
            owner = self.by_channel.get(desc.id)
            if owner is not None:
                raise LocalProtocolError(
                    f"channel {desc.id:#04x} of reactor {name!r} is already owned by "
                    f"reactor {owner.name!r}"
                )
            if desc.id in seen:
                raise LocalProtocolError(f"reactor {name!r} declares channel {desc.id:#04x} twice")
            seen.add(desc.id)
        for desc in descs:
            self.channels.append(desc)
            self.by_channel[desc.id] = reactor
        self.by_name[name] = reactor
