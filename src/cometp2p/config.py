"""Node configuration: the ``[p2p]`` section and the few other keys cometp2p reads.

Loads and writes ``<home>/config/config.toml`` in CometBFT v0.38's layout (behaviour.md §10,
wire.md §12.2), so a home made by ``cometbft init`` loads here and a file written here loads
in ``cometbft``. Keys we do not model are ignored on load, as viper ignores keys it does
not know; keys are matched case-insensitively, as viper lowercases them. Durations are Go
duration strings in the file (``"100ms"``, ``"1m0s"``) and float seconds in Python, with
the unit in the field name. Comma-separated lists become tuples of trimmed, non-empty
strings (Go's ``SplitAndTrimEmpty``).

Home directory: ``--home``, else ``$COMETP2P_HOME``, else ``~/.cometp2p``
(:func:`resolve_home`). Relative file names in the config are relative to the home.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Final, TypeVar

from cometp2p.errors import ConfigError
from cometp2p.fileio import atomic_write_bytes

logger = logging.getLogger(__name__)

__all__ = [
    "CONFIG_FILE",
    "DEFAULT_HOME",
    "HOME_ENV",
    "Config",
    "FuzzConnConfig",
    "InstrumentationConfig",
    "P2PConfig",
    "TrustConfig",
    "default_moniker",
    "format_go_duration",
    "load_chain_id",
    "load_config",
    "parse_go_duration",
    "render_config_toml",
    "resolve_home",
    "unknown_keys",
    "write_config",
]

HOME_ENV: Final = "COMETP2P_HOME"
"""Environment variable naming the home directory when ``--home`` is not given."""

DEFAULT_HOME: Final = "~/.cometp2p"
"""Home directory used when neither ``--home`` nor ``$COMETP2P_HOME`` is set."""

CONFIG_FILE: Final = "config/config.toml"
"""The config file, relative to the home directory."""


# -- Go durations ------------------------------------------------------------------------

_NS_PER_UNIT: Final = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,  # micro sign, what Go prints
    "\u03bcs": 1_000,  # Greek mu, also accepted by Go
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_UNIT_RE: Final = "|".join(sorted(map(re.escape, _NS_PER_UNIT), key=len, reverse=True))
_COMPONENT: Final = re.compile(rf"([0-9]+\.?[0-9]*|\.[0-9]+)({_UNIT_RE})")
_DURATION: Final = re.compile(rf"[-+]?(?:0|(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:{_UNIT_RE}))+)")
_MAX_DURATION_NS: Final = (1 << 63) - 1
_NS_PER_S: Final = 1_000_000_000


def parse_go_duration(text: str) -> float:
    """Parse a Go ``time.ParseDuration`` string (``"100ms"``, ``"1m0s"``, ``"-1.5h"``, ``"0"``).

    Returns:
        The duration in seconds (exact to the nanosecond, as Go stores it).

    Raises:
        ValueError: if ``text`` is not a Go duration or overflows Go's int64 nanoseconds.
    """
    if _DURATION.fullmatch(text) is None:
        raise ValueError(f"expected a Go duration such as '100ms' or '1m0s', got {text!r}")
    negative = text.startswith("-")
    total = Fraction(0)
    for number, unit in _COMPONENT.findall(text):
        total += Fraction(number) * _NS_PER_UNIT[unit]
    ns = int(total)  # Go truncates sub-nanosecond fractions
    if ns > _MAX_DURATION_NS:
        raise ValueError(f"duration {text!r} overflows Go's time.Duration")
    return (-ns if negative else ns) / _NS_PER_S


def _fraction_text(whole: int, frac: int, digits: int) -> str:
    if frac == 0:
        return str(whole)
    return f"{whole}." + f"{frac:0{digits}d}".rstrip("0")


def format_go_duration(seconds: float) -> str:
    """Format ``seconds`` as Go's ``time.Duration.String()`` does (``0.1`` → ``"100ms"``).

    The value is rounded to whole nanoseconds first.
    """
    ns = round(seconds * _NS_PER_S)
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    u = abs(ns)
    if u < 1_000:
        return f"{sign}{u}ns"
    if u < 1_000_000:
        return sign + _fraction_text(*divmod(u, 1_000), 3) + "\u00b5s"
    if u < _NS_PER_S:
        return sign + _fraction_text(*divmod(u, 1_000_000), 6) + "ms"
    whole_s, frac_ns = divmod(u, _NS_PER_S)
    out = _fraction_text(whole_s % 60, frac_ns, 9) + "s"
    minutes = whole_s // 60
    if minutes:
        hours, minutes = divmod(minutes, 60)
        out = f"{minutes}m{out}"
        if hours:
            out = f"{hours}h{out}"
    return sign + out


# -- the config dataclasses ----------------------------------------------------------------


def default_moniker() -> str:
    """CometBFT's default moniker: the host name, or ``"anonymous"`` if there is none."""
    try:
        name = socket.gethostname()
    except OSError:
        return "anonymous"
    return name or "anonymous"


@dataclass(frozen=True, slots=True)
class FuzzConnConfig:
    """``[p2p.test_fuzz_config]``: the fuzzed-connection test aid (behaviour.md §8).

    Not in CometBFT's config template; Go matches these keys to its field names
    case-insensitively (``mode``, ``maxdelay``, ``probdroprw``, ...).
    """

    mode: int = 0
    """``mode``, default 0: 0 = drop, 1 = delay."""
    max_delay_s: float = 3.0
    """``maxdelay``, default ``"3s"``: upper bound of an injected sleep."""
    prob_drop_rw: float = 0.2
    """``probdroprw``, default 0.2: probability to drop one read or write."""
    prob_drop_conn: float = 0.0
    """``probdropconn``, default 0.0: probability to close the connection."""
    prob_sleep: float = 0.0
    """``probsleep``, default 0.0: probability to sleep before a read or write."""


PEX_STRATEGIES: Final = ("v0.38", "adaptive")
"""The values of ``[p2p] pex_strategy`` (see :class:`cometp2p.pex.config.RequestStrategy`)."""


@dataclass(frozen=True, slots=True)
class P2PConfig:
    """Every ``[p2p]`` key of CometBFT v0.38 with its default (behaviour.md §10).

    Raises:
        ConfigError: on construction, if a limit, rate, size or the flush throttle or max
            dial period is negative (Go's ``ValidateBasic``).
    """

    laddr: str = "tcp://0.0.0.0:26656"
    """``laddr``, default ``"tcp://0.0.0.0:26656"``: listen address (scheme optional)."""
    external_address: str = ""
    """``external_address``, default ``""``: ``host:port`` advertised in NodeInfo."""
    seeds: tuple[str, ...] = ()
    """``seeds``, default ``""``: comma-separated ``id@host:port`` seed nodes."""
    persistent_peers: tuple[str, ...] = ()
    """``persistent_peers``, default ``""``: comma-separated ``id@host:port`` always dialed."""
    addr_book_file: str = "config/addrbook.json"
    """``addr_book_file``, default ``"config/addrbook.json"``: relative to the home."""
    addr_book_strict: bool = True
    """``addr_book_strict``, default ``true``: reject non-routable addresses."""
    max_num_inbound_peers: int = 40
    """``max_num_inbound_peers``, default 40."""
    max_num_outbound_peers: int = 10
    """``max_num_outbound_peers``, default 10."""
    unconditional_peer_ids: tuple[str, ...] = ()
    """``unconditional_peer_ids``, default ``""``: node IDs exempt from peer limits."""
    persistent_peers_max_dial_period_s: float = 0.0
    """``persistent_peers_max_dial_period``, default ``"0s"`` (0 = pure exponential back-off)."""
    flush_throttle_timeout_s: float = 0.1
    """``flush_throttle_timeout``, default ``"100ms"`` (v1.0: ``"10ms"``)."""
    max_packet_msg_payload_bytes: int = 1024
    """``max_packet_msg_payload_size``, default 1024: bytes of data per PacketMsg."""
    send_rate_bytes_per_s: int = 5_120_000
    """``send_rate``, default 5120000: per-connection send limit in bytes/s."""
    recv_rate_bytes_per_s: int = 5_120_000
    """``recv_rate``, default 5120000: per-connection receive limit in bytes/s."""
    pex: bool = True
    """``pex``, default ``true``: run the PEXReactor and list channel 0x00."""
    seed_mode: bool = False
    """``seed_mode``, default ``false``: crawler mode (needs ``pex``)."""
    private_peer_ids: tuple[str, ...] = ()
    """``private_peer_ids``, default ``""``: node IDs never gossiped nor stored."""
    allow_duplicate_ip: bool = False
    """``allow_duplicate_ip``, default ``false``."""
    handshake_timeout_s: float = 20.0
    """``handshake_timeout``, default ``"20s"`` (declared; Go's transport uses 3 s)."""
    dial_timeout_s: float = 3.0
    """``dial_timeout``, default ``"3s"`` (declared; Go's transport uses 1 s)."""
    upnp: bool = False
    """``upnp``, default ``false``: map the listen port on the UPnP gateway and advertise
    its external IP (behaviour.md §7; a v0.34 key, written only when true)."""
    test_dial_fail: bool = False
    """``test_dial_fail`` (hidden), default ``false``: every dial fails."""
    test_fuzz: bool = False
    """``test_fuzz`` (hidden), default ``false``: fuzz outbound connections."""
    test_fuzz_config: FuzzConnConfig = FuzzConnConfig()
    """``[p2p.test_fuzz_config]`` (hidden)."""
    test_fuzz_inbound: bool = False
    """``test_fuzz_inbound`` (hidden, cometp2p only), default ``false``: fuzz accepted
    sockets too (Go fuzzes dialed ones only)."""
    block_protocol_version: int = 11
    """``block_protocol_version`` (hidden, cometp2p only), default 11 (CometBFT v0.38 and
    v1.0): the ``protocol_version.block`` our NodeInfo sends. Peers with another block
    version refuse us, so set it to the network's (tendermint v0.34: 11 as well)."""
    test_fuzz_activate_after_s: float = 10.0
    """``test_fuzz_activate_after`` (hidden, cometp2p only), default ``"10s"`` (Go's
    constant): how long a fuzzed socket runs clean first."""
    pex_strategy: str = "v0.38"
    """``pex_strategy`` (cometp2p only; CometBFT ignores it), default ``"v0.38"``: how PEX
    asks peers for addresses: ``"v0.38"`` (one random peer per ensure-peers round) or
    ``"adaptive"`` (tendermint v0.35's round-robin queue with an adaptive interval).
    Written to config.toml only when not the default."""

    def __post_init__(self) -> None:
        if self.pex_strategy not in PEX_STRATEGIES:
            raise ConfigError(
                f"p2p.pex_strategy: expected one of {', '.join(PEX_STRATEGIES)}, "
                f"got {self.pex_strategy!r}"
            )
        for key, value in (
            ("max_num_inbound_peers", self.max_num_inbound_peers),
            ("max_num_outbound_peers", self.max_num_outbound_peers),
            ("flush_throttle_timeout", self.flush_throttle_timeout_s),
            ("persistent_peers_max_dial_period", self.persistent_peers_max_dial_period_s),
            ("max_packet_msg_payload_size", self.max_packet_msg_payload_bytes),
            ("send_rate", self.send_rate_bytes_per_s),
            ("recv_rate", self.recv_rate_bytes_per_s),
            ("block_protocol_version", self.block_protocol_version),
            ("test_fuzz_activate_after", self.test_fuzz_activate_after_s),
        ):
            if value < 0:
                raise ConfigError(f"p2p.{key}: expected a non-negative value, got {value}")


@dataclass(frozen=True, slots=True)
class InstrumentationConfig:
    """The ``[instrumentation]`` keys (behaviour.md §2.4, §10)."""

    prometheus: bool = False
    """``prometheus``, default ``false``: serve Prometheus metrics."""
    prometheus_listen_addr: str = ":26660"
    """``prometheus_listen_addr``, default ``":26660"``."""
    max_open_connections: int = 3
    """``max_open_connections``, default 3: metrics-server connection cap (0 = none)."""
    namespace: str = "cometbft"
    """``namespace``, default ``"cometbft"``: metric name prefix."""


@dataclass(frozen=True, slots=True)
class TrustConfig:
    """The ``[trust]`` keys (cometp2p's own; CometBFT ignores the table), behaviour.md §6.

    The metric's weights and intervals are validated by
    :class:`~cometp2p.trust.config.TrustMetricConfig` when the node is built.
    """

    enabled: bool = True
    """``enabled``, default ``true``: keep per-peer trust metrics and let them decide."""
    db_file: str = "data/trust_metric.sqlite"
    """``db_file``, default ``"data/trust_metric.sqlite"``: the SQLite store."""
    min_score: int = 50
    """``min_score``, default 50: below it a peer is not dialed nor gossiped and is banned."""
    ban_time_s: float = 86_400.0
    """``ban_time``, default ``"24h0m0s"``: how long a distrusted peer stays excluded."""
    misbehaviour_events: int = 10
    """``misbehaviour_events``, default 10: bad events for one stop for a protocol error,
    a PEX violation or an oversized or undecodable message."""
    pong_timeout_events: int = 1
    """``pong_timeout_events``, default 1: bad events for one stop for a pong timeout
    (often the network's fault rather than the peer's)."""
    proportional_weight: float = 0.4
    """``proportional_weight``, default 0.4 (Go's ``ProportionalWeight``)."""
    integral_weight: float = 0.6
    """``integral_weight``, default 0.6 (Go's ``IntegralWeight``)."""
    interval_length_s: float = 60.0
    """``interval_length``, default ``"1m0s"`` (Go's ``IntervalLength``)."""
    tracking_window_s: float = 14 * 86_400.0
    """``tracking_window``, default ``"336h0m0s"`` (Go's ``TrackingWindow``, 14 days)."""

    def __post_init__(self) -> None:
        if not 0 <= self.min_score <= 100:
            raise ConfigError(f"trust.min_score: expected 0..100, got {self.min_score}")
        for key, value in (
            ("misbehaviour_events", self.misbehaviour_events),
            ("pong_timeout_events", self.pong_timeout_events),
        ):
            if value < 0:
                raise ConfigError(f"trust.{key}: expected a non-negative count, got {value}")
        if self.ban_time_s < 0:
            raise ConfigError(
                f"trust.ban_time: expected a non-negative value, got {self.ban_time_s}"
            )


@dataclass(frozen=True, slots=True)
class Config:
    """A node's configuration: home, the base keys we use, ``[p2p]``, ``[instrumentation]``."""

    home: Path
    """The home directory; relative file names below are resolved against it."""
    moniker: str = field(default_factory=default_moniker)
    """``moniker``, default: the host name (``"anonymous"`` if none)."""
    node_key_file: str = "config/node_key.json"
    """``node_key_file``, default ``"config/node_key.json"``."""
    genesis_file: str = "config/genesis.json"
    """``genesis_file``, default ``"config/genesis.json"``."""
    filter_peers: bool = False
    """``filter_peers``, default ``false``: ask the ABCI app to filter peers."""
    rpc_laddr: str = "tcp://127.0.0.1:26657"
    """``[rpc] laddr``, default ``"tcp://127.0.0.1:26657"``: NodeInfo ``other.rpc_address``."""
    tx_index_indexer: str = "kv"
    """``[tx_index] indexer``, default ``"kv"``: NodeInfo ``tx_index`` is off iff ``"null"``."""
    p2p: P2PConfig = P2PConfig()
    """The ``[p2p]`` section."""
    instrumentation: InstrumentationConfig = InstrumentationConfig()
    """The ``[instrumentation]`` section."""
    trust: TrustConfig = TrustConfig()
    """The ``[trust]`` section (cometp2p only)."""

    def path(self, name: str) -> Path:
        """Resolve a config file name against the home (absolute names are kept)."""
        return self.home / Path(name).expanduser()

    @property
    def config_path(self) -> Path:
        """``<home>/config/config.toml``."""
        return self.home / CONFIG_FILE

    @property
    def node_key_path(self) -> Path:
        """``node_key_file`` resolved against the home."""
        return self.path(self.node_key_file)

    @property
    def genesis_path(self) -> Path:
        """``genesis_file`` resolved against the home."""
        return self.path(self.genesis_file)

    @property
    def addr_book_path(self) -> Path:
        """``p2p.addr_book_file`` resolved against the home."""
        return self.path(self.p2p.addr_book_file)

    @property
    def trust_db_path(self) -> Path:
        """``trust.db_file`` resolved against the home."""
        return self.path(self.trust.db_file)

    @property
    def data_dir(self) -> Path:
        """``<home>/data``."""
        return self.home / "data"


# -- loading -------------------------------------------------------------------------------

_T = TypeVar("_T")
_Table = Mapping[str, object]


def _lower_keys(table: _Table) -> dict[str, object]:
    # viper lowercases every key, so [P2P] and [p2p.x] land in the same table.
    out: dict[str, object] = {}
    for key, value in table.items():
        lowered = key.lower()
        if isinstance(value, dict):
            value = _lower_keys(value)
            existing = out.get(lowered)
            if isinstance(existing, dict):
                value = {**existing, **value}
        out[lowered] = value
    return out


def _section(table: _Table, name: str) -> _Table:
    value = table.get(name, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{name}: expected a [{name}] table, got {value!r}")
    return value


def _as_str(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError("expected a string")
    return value


def _as_bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError("expected true or false")
    return value


def _as_int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("expected an integer")
    return value


def _as_float(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError("expected a number")
    return float(value)


def _as_duration(value: object) -> float:
    # viper/mapstructure turn a bare integer into nanoseconds.
    if isinstance(value, int) and not isinstance(value, bool):
        return value / _NS_PER_S
    if not isinstance(value, str):
        raise TypeError("expected a Go duration string such as '100ms'")
    return parse_go_duration(value)


def _as_list(value: object) -> tuple[str, ...]:
    text = _as_str(value)
    return tuple(part.strip(" ") for part in text.split(",") if part.strip(" "))


def _get(table: _Table, prefix: str, key: str, conv: Callable[[object], _T], default: _T) -> _T:
    if key not in table:
        return default
    value = table[key]
    try:
        return conv(value)
    except (TypeError, ValueError) as exc:
        detail = str(exc)
        if repr(value) not in detail:  # some converters already quote the value
            detail += f", got {value!r}"
        raise ConfigError(f"{prefix}{key}: {detail}") from exc


# (toml key, field name, converter) for each [p2p] key with a scalar value.
_P2P_KEYS: Final[tuple[tuple[str, str, Callable[[object], object]], ...]] = (
    ("laddr", "laddr", _as_str),
    ("external_address", "external_address", _as_str),
    ("seeds", "seeds", _as_list),
    ("persistent_peers", "persistent_peers", _as_list),
    ("addr_book_file", "addr_book_file", _as_str),
    ("addr_book_strict", "addr_book_strict", _as_bool),
    ("max_num_inbound_peers", "max_num_inbound_peers", _as_int),
    ("max_num_outbound_peers", "max_num_outbound_peers", _as_int),
    ("unconditional_peer_ids", "unconditional_peer_ids", _as_list),
    (
        "persistent_peers_max_dial_period",
        "persistent_peers_max_dial_period_s",
        _as_duration,
    ),
    ("flush_throttle_timeout", "flush_throttle_timeout_s", _as_duration),
    ("max_packet_msg_payload_size", "max_packet_msg_payload_bytes", _as_int),
    ("send_rate", "send_rate_bytes_per_s", _as_int),
    ("recv_rate", "recv_rate_bytes_per_s", _as_int),
    ("pex", "pex", _as_bool),
    ("seed_mode", "seed_mode", _as_bool),
    ("private_peer_ids", "private_peer_ids", _as_list),
    ("allow_duplicate_ip", "allow_duplicate_ip", _as_bool),
    ("handshake_timeout", "handshake_timeout_s", _as_duration),
    ("dial_timeout", "dial_timeout_s", _as_duration),
    ("upnp", "upnp", _as_bool),
    ("test_dial_fail", "test_dial_fail", _as_bool),
    ("test_fuzz", "test_fuzz", _as_bool),
    ("test_fuzz_inbound", "test_fuzz_inbound", _as_bool),
    ("test_fuzz_activate_after", "test_fuzz_activate_after_s", _as_duration),
    ("block_protocol_version", "block_protocol_version", _as_int),
    ("pex_strategy", "pex_strategy", _as_str),
)
_HIDDEN_P2P_KEYS: Final = frozenset(
    {
        "upnp",  # a v0.34 key: written only when true
        "test_dial_fail",
        "test_fuzz",
        "test_fuzz_inbound",
        "test_fuzz_activate_after",
        "block_protocol_version",
        "pex_strategy",  # cometp2p only: written only when not the default
    }
)

_FUZZ_KEYS: Final[tuple[tuple[str, str, Callable[[object], object]], ...]] = (
    ("mode", "mode", _as_int),
    ("maxdelay", "max_delay_s", _as_duration),
    ("probdroprw", "prob_drop_rw", _as_float),
    ("probdropconn", "prob_drop_conn", _as_float),
    ("probsleep", "prob_sleep", _as_float),
)

_INSTRUMENTATION_KEYS: Final[tuple[tuple[str, str, Callable[[object], object]], ...]] = (
    ("prometheus", "prometheus", _as_bool),
    ("prometheus_listen_addr", "prometheus_listen_addr", _as_str),
    ("max_open_connections", "max_open_connections", _as_int),
    ("namespace", "namespace", _as_str),
)

_TRUST_KEYS: Final[tuple[tuple[str, str, Callable[[object], object]], ...]] = (
    ("enabled", "enabled", _as_bool),
    ("db_file", "db_file", _as_str),
    ("min_score", "min_score", _as_int),
    ("ban_time", "ban_time_s", _as_duration),
    ("misbehaviour_events", "misbehaviour_events", _as_int),
    ("pong_timeout_events", "pong_timeout_events", _as_int),
    ("proportional_weight", "proportional_weight", _as_float),
    ("integral_weight", "integral_weight", _as_float),
    ("interval_length", "interval_length_s", _as_duration),
    ("tracking_window", "tracking_window_s", _as_duration),
)


def _load_fields(
    cls: type[_T],
    table: _Table,
    prefix: str,
    keys: tuple[tuple[str, str, Callable[[object], object]], ...],
    **extra: object,
) -> _T:
    defaults = cls()
    values = {
        name: _get(table, prefix, key, conv, getattr(defaults, name)) for key, name, conv in keys
    }
    return cls(**values, **extra)


# What a CometBFT v0.38 / v1.0 config.toml may hold that we do not read: not typos.
_KNOWN_TOP_LEVEL: Final = frozenset(
    {
        "version", "proxy_app", "moniker", "db_backend", "db_dir", "log_level", "log_format",
        "genesis_file", "priv_validator_key_file", "priv_validator_state_file",
        "priv_validator_laddr", "node_key_file", "abci", "filter_peers", "fast_sync",
        "event_bus_buffer_capacity",
        # sections
        "rpc", "grpc", "p2p", "mempool", "statesync", "blocksync", "fastsync", "consensus",
        "storage", "tx_index", "instrumentation",
        "trust",  # ours (behaviour.md §6 wiring); CometBFT ignores it
    }
)  # fmt: skip
_KNOWN_P2P: Final = frozenset(
    {key for key, _, _ in _P2P_KEYS} | {"test_fuzz_config", "upnp"}
)  # upnp: v0.34's key
_KNOWN_SECTIONS: Final = {
    "": _KNOWN_TOP_LEVEL,
    "p2p.": _KNOWN_P2P,
    "p2p.test_fuzz_config.": frozenset(key for key, _, _ in _FUZZ_KEYS),
    "instrumentation.": frozenset(key for key, _, _ in _INSTRUMENTATION_KEYS),
    "trust.": frozenset(key for key, _, _ in _TRUST_KEYS),
}


def unknown_keys(doc: _Table) -> list[str]:
    """The dotted keys of ``doc`` (a lower-cased config.toml) that neither cometp2p nor
    CometBFT knows: in the top level, ``[p2p]``, ``[p2p.test_fuzz_config]``,
    ``[instrumentation]`` and ``[trust]`` (the sections we read; others belong to
    CometBFT's other parts).
    """
    found: list[str] = []
    for prefix, known in _KNOWN_SECTIONS.items():
        table: object = doc
        for part in prefix.strip(".").split(".") if prefix else ():
            table = table.get(part, {}) if isinstance(table, dict) else {}
        if isinstance(table, dict):
            found.extend(f"{prefix}{key}" for key in table if key not in known)
    return found


def _parse_config(home: Path, doc: _Table) -> Config:
    p2p_table = _section(doc, "p2p")
    fuzz = _load_fields(
        FuzzConnConfig, _section(p2p_table, "test_fuzz_config"), "p2p.test_fuzz_config.", _FUZZ_KEYS
    )
    p2p = _load_fields(P2PConfig, p2p_table, "p2p.", _P2P_KEYS, test_fuzz_config=fuzz)
    instrumentation = _load_fields(
        InstrumentationConfig,
        _section(doc, "instrumentation"),
        "instrumentation.",
        _INSTRUMENTATION_KEYS,
    )
    base = Config(home=home)
    return Config(
        home=home,
        moniker=_get(doc, "", "moniker", _as_str, base.moniker),
        node_key_file=_get(doc, "", "node_key_file", _as_str, base.node_key_file),
        genesis_file=_get(doc, "", "genesis_file", _as_str, base.genesis_file),
        filter_peers=_get(doc, "", "filter_peers", _as_bool, base.filter_peers),
        rpc_laddr=_get(_section(doc, "rpc"), "rpc.", "laddr", _as_str, base.rpc_laddr),
        tx_index_indexer=_get(
            _section(doc, "tx_index"), "tx_index.", "indexer", _as_str, base.tx_index_indexer
        ),
        p2p=p2p,
        instrumentation=instrumentation,
        trust=_load_fields(TrustConfig, _section(doc, "trust"), "trust.", _TRUST_KEYS),
    )


def load_config(home: Path) -> Config:
    """Load ``<home>/config/config.toml``; a missing file gives the defaults (as in CometBFT).

    Args:
        home: the home directory (see :func:`resolve_home`).

    Logs a warning naming each unknown key (see :func:`unknown_keys`), and one for an
    empty file.

    Raises:
        ConfigError: if the file cannot be read, is not TOML, or a key we use has a value
            of the wrong type or out of range; the message names the key and the value.
    """
    path = home / CONFIG_FILE
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return Config(home=home)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc}") from exc
    try:
        doc = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: not a valid TOML file: {exc}") from exc
    lowered = _lower_keys(doc)
    if not lowered:
        logger.warning("%s is empty: every setting takes its default", path)
    for key in unknown_keys(lowered):
        logger.warning("%s: unknown key %r (a typo?); it is ignored", path, key)
    try:
        return _parse_config(home, lowered)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


# -- writing -------------------------------------------------------------------------------


def _toml_value(value: object) -> object:
    if isinstance(value, tuple):
        return ",".join(value)
    return value


def _render_fields(
    obj: object, keys: tuple[tuple[str, str, Callable[[object], object]], ...]
) -> dict[str, object]:
    out: dict[str, object] = {}
    for key, name, conv in keys:
        value = getattr(obj, name)
        out[key] = format_go_duration(value) if conv is _as_duration else _toml_value(value)
    return out


def render_config_toml(cfg: Config) -> str:
    """Render ``cfg`` as a ``config.toml`` that both cometp2p and CometBFT v0.38 load.

    The ``[p2p]`` section carries every documented key (durations as Go duration strings,
    lists comma-separated); the hidden ``test_*`` keys are written only when they differ
    from their defaults, as CometBFT's own template never writes them. Keys not written
    take CometBFT's defaults when CometBFT reads the file.
    """
    p2p = _render_fields(cfg.p2p, _P2P_KEYS)
    defaults = P2PConfig()
    for key, name, _ in _P2P_KEYS:
        if key in _HIDDEN_P2P_KEYS and getattr(cfg.p2p, name) == getattr(defaults, name):
            del p2p[key]
    if cfg.p2p.test_fuzz_config != defaults.test_fuzz_config:
        p2p["test_fuzz_config"] = _render_fields(cfg.p2p.test_fuzz_config, _FUZZ_KEYS)
    doc: dict[str, object] = {
        "moniker": cfg.moniker,
        "node_key_file": cfg.node_key_file,
        "genesis_file": cfg.genesis_file,
        "filter_peers": cfg.filter_peers,
        "rpc": {"laddr": cfg.rpc_laddr},
        "tx_index": {"indexer": cfg.tx_index_indexer},
        "p2p": p2p,
        "instrumentation": _render_fields(cfg.instrumentation, _INSTRUMENTATION_KEYS),
        "trust": _render_fields(cfg.trust, _TRUST_KEYS),
    }
    header = (
        "# cometp2p node configuration, in CometBFT v0.38's config.toml layout.\n"
        "# Durations are Go duration strings; lists are comma-separated.\n\n"
    )
    import tomli_w  # only writers need it; a running node never writes its config

    return header + tomli_w.dumps(doc)


def write_config(cfg: Config) -> Path:
    """Write :func:`render_config_toml` of ``cfg`` to ``<home>/config/config.toml`` atomically.

    Returns:
        The path written.

    Raises:
        ConfigError: if the file cannot be written.
    """
    path = cfg.config_path
    try:
        atomic_write_bytes(path, render_config_toml(cfg).encode("utf-8"), mode=0o644)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot write config file: {exc}") from exc
    return path


# -- home and genesis ----------------------------------------------------------------------


def resolve_home(explicit: str | None) -> Path:
    """The home directory: ``explicit`` (``--home``), else ``$COMETP2P_HOME``, else ``~/.cometp2p``.

    ``~`` is expanded; the directory need not exist.
    """
    if explicit:
        return Path(explicit).expanduser()
    from_env = os.environ.get(HOME_ENV)
    if from_env:
        return Path(from_env).expanduser()
    return Path(DEFAULT_HOME).expanduser()


def load_chain_id(home: Path, genesis_file: str = "config/genesis.json") -> str | None:
    """The ``chain_id`` of ``<home>/<genesis_file>``, or ``None`` if the file or key is absent.

    Raises:
        ConfigError: if the file exists but is unreadable, not JSON, or its ``chain_id`` is
            not a string.
    """
    path = home / Path(genesis_file).expanduser()
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read genesis file: {exc}") from exc
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: genesis file is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict) or "chain_id" not in doc:
        return None
    chain_id = doc["chain_id"]
    if not isinstance(chain_id, str):
        raise ConfigError(f"{path}: chain_id: expected a string, got {chain_id!r}")
    return chain_id
