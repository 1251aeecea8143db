"""Fuzzed connections for tests: drop, delay or close a link's reads and writes.

The library pieces live in :mod:`cometp2p.sansio.fuzz` (the decisions) and
:mod:`cometp2p.aio.fuzz` (the stream wrapper); this module is the one-call way to use
them in a test or a bench:

* :func:`fuzz_connection` wraps one ``(reader, writer)`` pair;
* :func:`fuzz_switch` makes every new socket of a (not yet started) Switch fuzzed, and
  returns a :class:`FuzzRecorder` holding each socket's decision counts.

Example::

    recorder = fuzz_switch(switch, FuzzConnConfig(mode=1, max_delay_s=0.05), seed=7)
    async with switch:
        ...
    print(recorder.totals())
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field

from cometp2p.aio.fuzz import FuzzedStreamReader, FuzzedStreamWriter, fuzz_streams, transport_fuzzer
from cometp2p.config import FuzzConnConfig
from cometp2p.sansio.fuzz import FuzzCore, FuzzStats
from cometp2p.switch.switch import Switch

__all__ = [
    "DELAY",
    "DROP",
    "FuzzRecorder",
    "fuzz_connection",
    "fuzz_switch",
]

DROP = 0
"""``FuzzConnConfig.mode`` for drop mode."""
DELAY = 1
"""``FuzzConnConfig.mode`` for delay mode."""


def fuzz_connection(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    config: FuzzConnConfig | None = None,
    *,
    seed: int = 0,
    activate_after_s: float = 0.0,
) -> tuple[FuzzedStreamReader, FuzzedStreamWriter]:
    """Wrap one stream pair; the same ``seed`` replays the same decisions.

    Args:
        reader: the stream's reader.
        writer: the stream's writer.
        config: probabilities and mode (Go's defaults: drop mode, ``probdroprw`` 0.2).
        seed: seeds the decisions.
        activate_after_s: seconds of clean running first (Go's ``FuzzConnAfter``).

    Raises:
        ConfigError: an invalid ``config``.
    """
    return fuzz_streams(
        reader,
        writer,
        config or FuzzConnConfig(),
        random.Random(seed),
        activate_after_s=activate_after_s,
    )


@dataclass(slots=True)
class FuzzRecorder:
    """The cores of every socket a fuzzed Switch opened, in order."""

    cores: list[FuzzCore] = field(default_factory=list)

    def totals(self) -> FuzzStats:
        """The decision counts summed over every socket."""
        total = FuzzStats()
        for core in self.cores:
            s = core.stats
            total.passed += s.passed
            total.dropped += s.dropped
            total.closed += s.closed
            total.slept += s.slept
            total.slept_s += s.slept_s
            total.inactive += s.inactive
        return total


def fuzz_switch(
    switch: Switch,
    config: FuzzConnConfig,
    *,
    seed: int = 0,
    activate_after_s: float = 0.0,
    inbound: bool = True,
) -> FuzzRecorder:
    """Fuzz every socket ``switch`` dials (and, with ``inbound``, accepts) from now on.

    Returns:
        The recorder of the sockets' decisions.

    Raises:
        ConfigError: an invalid ``config``.
    """
    recorder = FuzzRecorder()
    switch.transport.socket_wrapper = transport_fuzzer(
        config,
        random.Random(seed),
        activate_after_s=activate_after_s,
        inbound=inbound,
        on_wrap=recorder.cores.append,
    )
    return recorder
