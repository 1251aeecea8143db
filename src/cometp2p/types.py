"""Small shared types: node IDs and channel IDs."""

from __future__ import annotations

from typing import NewType

__all__ = ["ChannelID", "NodeID"]

NodeID = NewType("NodeID", str)
"""40 lowercase hex characters: hex(SHA-256(ed25519 public key)[:20]) (wire.md §6.1)."""

ChannelID = NewType("ChannelID", int)
"""A channel byte, 0..255 (wire.md §9.1)."""
