"""What the PEX reactor counts and the clock it reads.

:class:`PexCounters` records what the :class:`~cometp2p.pex.reactor.PEXReactor` did (for
tests, logs and metrics), :func:`monotonic_utc_clock` is its default time source.
:mod:`cometp2p.pex.reactor` re-exports all three names.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final

from cometp2p.pex.core import Offence
from cometp2p.pex.dialect import PexDialect

__all__ = ["CADENCE_HISTORY", "Clock", "PexCounters", "monotonic_utc_clock"]

CADENCE_HISTORY: Final = 1000
"""Most send times kept per dialect in :attr:`PexCounters.sent_times`."""

Clock = Callable[[], datetime]
"""Returns the current time as an aware UTC datetime."""


def monotonic_utc_clock() -> Clock:
    """A clock that reads as UTC wall time at creation and then advances monotonically.

    Rate limits and back-offs never see time go backwards when the system clock is set.
    """
    wall0 = datetime.now(UTC)
    mono0 = time.monotonic()
    return lambda: wall0 + timedelta(seconds=time.monotonic() - mono0)


@dataclass(slots=True)
class PexCounters:
    """What the reactor did since it was created (for tests, logs and metrics).

    Attributes:
        requests_sent: PexRequests we sent.
        requests_answered: PexRequests we answered.
        addrs_received: solicited PexAddrs processed.
        addresses_added: addresses new to the book from those.
        addresses_refused: addresses the book refused from those.
        dials: dials started by PEX (ensure-peers and crawl).
        dials_failed: of those, the ones that failed.
        seed_dials: seed dials.
        violations: peers disconnected, by :class:`~cometp2p.pex.core.Offence`.
        sent_by_dialect: requests we sent, by the peer's dialect (``"v0.35"``, ``"v0.38"``).
        received_by_dialect: requests peers sent us, by their dialect.
        refused_by_dialect: of those, the ones refused as too soon.
        v2_requests_received: of those, the ``PexRequestV2`` ones.
        sent_times: when recent requests were sent (reactor clock), by dialect: the
            cadence (at most :data:`CADENCE_HISTORY` per dialect).
    """

    requests_sent: int = 0
    requests_answered: int = 0
    addrs_received: int = 0
    addresses_added: int = 0
    addresses_refused: int = 0
    dials: int = 0
    dials_failed: int = 0
    seed_dials: int = 0
    violations: Counter[Offence] = field(default_factory=Counter)
    sent_by_dialect: Counter[str] = field(default_factory=Counter)
    received_by_dialect: Counter[str] = field(default_factory=Counter)
    refused_by_dialect: Counter[str] = field(default_factory=Counter)
    v2_requests_received: int = 0
    sent_times: dict[str, deque[datetime]] = field(default_factory=dict)

    def record_sent(self, dialect: PexDialect, now: datetime) -> None:
        """Count one request sent to a peer of ``dialect`` at ``now``."""
        self.requests_sent += 1
        self.sent_by_dialect[dialect.value] += 1
        times = self.sent_times.setdefault(dialect.value, deque(maxlen=CADENCE_HISTORY))
        times.append(now)

    def summary(self) -> str:
        """One line: requests sent/received/refused by dialect, the median gap between
        consecutive requests sent, by dialect, then the answers we took in and the
        addresses they added to the book."""
        parts = []
        for dialect in (PexDialect.V035.value, PexDialect.V038.value):
            times = list(self.sent_times.get(dialect, ()))
            gaps = sorted((b - a).total_seconds() for a, b in itertools.pairwise(times))
            median = f"{gaps[len(gaps) // 2]:.1f}s" if gaps else "-"
            parts.append(
                f"{dialect}: sent={self.sent_by_dialect[dialect]} median_gap={median} "
                f"received={self.received_by_dialect[dialect]} "
                f"refused={self.refused_by_dialect[dialect]}"
            )
        parts.append(
            f"v2_received={self.v2_requests_received} "
            f"answers={self.addrs_received} added={self.addresses_added}"
        )
        return "; ".join(parts)
