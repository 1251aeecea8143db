"""Build and drive ``goharness``, our small Go program around CometBFT's p2p packages.

One responsibility: turn ``tests/interop/goharness/`` (module ``cometp2p/goharness``) into
a cached binary and run its subcommands (``mconn-echo``, ``switch-echo``, ``bench-mconn``)
as asyncio subprocesses whose stdout JSON lines become events. See ``main.go`` for the
flags and event names. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Final

from interop.cometbft import JSONObject
from interop.gobuild import build_go_module, module_hash

__all__ = [
    "GOHARNESS_DIR",
    "GoHarness",
    "GoHarnessError",
    "ensure_goharness_binary",
    "payload",
    "source_hash",
]

GOHARNESS_DIR: Final = Path(__file__).resolve().parent / "goharness"
"""The Go module ``cometp2p/goharness``."""

BUILD_TIMEOUT_S: Final = 600.0
"""Upper bound for ``go build`` (module download included) on a fresh machine."""

DEFAULT_LIFETIME_S: Final = 60.0
"""Passed as ``--lifetime-s`` unless the caller gives one: a harness never outlives a test."""


class GoHarnessError(Exception):
    """The Go harness could not be built, or exited / misbehaved during a test."""


def source_hash() -> str:
    """SHA-256 over go.mod, go.sum and every ``*.go`` file (names and contents)."""
    return module_hash(GOHARNESS_DIR)


def ensure_goharness_binary(timeout_s: float = BUILD_TIMEOUT_S) -> Path:
    """Return a goharness binary built from the current sources.

    Cached as ``<cache>/goharness/<hash>/goharness``, keyed by :func:`source_hash`
    (:func:`interop.gobuild.build_go_module`).

    Raises:
        GoHarnessError: if ``go`` is missing or the build fails or times out.
    """
    return build_go_module(GOHARNESS_DIR, "goharness", GoHarnessError, timeout_s=timeout_s)


def payload(size: int) -> bytes:
    """The harness's deterministic test payload: byte ``i`` is ``i mod 256``."""
    whole, rest = divmod(size, 256)
    return bytes(range(256)) * whole + bytes(range(rest))


class GoHarness:
    """One running goharness subcommand.

    Its stdout is read continuously by a background task (so the Go side never blocks
    on a full pipe); each JSON line is an event dict with an ``"event"`` key, kept in
    :attr:`events`. :meth:`wait_for` returns each event at most once.

    Use as ``async with await GoHarness.start(...) as h:`` or call :meth:`aclose`.
    """

    def __init__(
        self, process: asyncio.subprocess.Process, argv: list[str], log_path: Path
    ) -> None:
        self.process = process
        self.argv = argv
        self.log_path = log_path
        self.events: list[JSONObject] = []
        self._consumed: set[int] = set()
        self._first_unconsumed = 0
        self._changed = asyncio.Condition()
        self._eof = False
        self._reader = asyncio.create_task(self._read_stdout(), name=f"goharness {argv[1]}")

    @classmethod
    async def start(cls, binary: Path, subcommand: str, *args: str, log_path: Path) -> GoHarness:
        """Start ``binary subcommand args...`` with stdin/stdout pipes and stderr to a file.

        ``--lifetime-s`` defaults to :data:`DEFAULT_LIFETIME_S`; closing stdin (see
        :meth:`aclose`) also ends the process.
        """
        argv = [str(binary), subcommand, *args]
        if not any(arg.startswith(("--lifetime-s", "-lifetime-s")) for arg in args):
            argv += ["--lifetime-s", str(DEFAULT_LIFETIME_S)]
        with log_path.open("ab") as log:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                limit=16 * 1024 * 1024,
            )
        return cls(process, argv, log_path)

    async def _read_stdout(self) -> None:
        stdout = self.process.stdout
        if stdout is None:  # cannot happen: started with stdout=PIPE
            raise GoHarnessError("goharness started without a stdout pipe")
        try:
            while line := await stdout.readline():
                try:
                    event = json.loads(line)
                except ValueError:
                    event = {"event": "unparsed", "line": line.decode(errors="replace")}
                async with self._changed:
                    self.events.append(event)
                    self._changed.notify_all()
        finally:
            async with self._changed:
                self._eof = True
                self._changed.notify_all()

    def stderr_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    async def wait_for(self, event: str, timeout_s: float = 10.0, **match: object) -> JSONObject:
        """Return the earliest not yet returned event named ``event`` matching ``match``.

        Waits for it if needed. Events that do not match stay available to later calls,
        so the order of ``wait_for`` calls need not follow the order of arrival.

        Raises:
            GoHarnessError: if the process's output ends first.
            TimeoutError: after ``timeout_s`` seconds.
        """
        try:
            async with asyncio.timeout(timeout_s), self._changed:
                while True:
                    for index in range(self._first_unconsumed, len(self.events)):
                        candidate = self.events[index]
                        if (
                            index not in self._consumed
                            and candidate.get("event") == event
                            and all(candidate.get(k) == v for k, v in match.items())
                        ):
                            self._consumed.add(index)
                            while self._first_unconsumed in self._consumed:
                                self._first_unconsumed += 1
                            return candidate
                    if self._eof:
                        raise GoHarnessError(
                            f"goharness {self.argv[1]} ended before event {event!r} {match}; "
                            f"last events: {self.events[-5:]}\nstderr:\n{self.stderr_tail()}"
                        )
                    await self._changed.wait()
        except TimeoutError:
            raise TimeoutError(
                f"no {event!r} event {match} from goharness {self.argv[1]} within {timeout_s} s; "
                f"last events: {self.events[-5:]}"
            ) from None

    def seen(self, event: str) -> list[JSONObject]:
        """Every event named ``event`` so far (consumed or not)."""
        return [e for e in self.events if e.get("event") == event]

    async def send(self, command: Mapping[str, object]) -> None:
        """Write one JSON command line to the harness's stdin (e.g. ``{"cmd": "send", ...}``)."""
        stdin = self.process.stdin
        if stdin is None or stdin.is_closing():
            raise GoHarnessError("goharness stdin is closed")
        stdin.write(json.dumps(dict(command)).encode() + b"\n")
        async with asyncio.timeout(5.0):
            await stdin.drain()

    async def aclose(self, timeout_s: float = 5.0) -> int:
        """Close stdin (the harness exits), wait up to ``timeout_s``, then kill. Idempotent.

        Returns:
            the exit status.
        """
        stdin = self.process.stdin
        if stdin is not None and not stdin.is_closing():
            stdin.close()
            with contextlib.suppress(ConnectionError):
                await stdin.wait_closed()
        try:
            async with asyncio.timeout(timeout_s):
                await self.process.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            async with asyncio.timeout(timeout_s):
                await self.process.wait()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._reader
        return self.process.returncode if self.process.returncode is not None else -1

    async def __aenter__(self) -> GoHarness:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
