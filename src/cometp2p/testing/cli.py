"""Run the ``cometp2p`` command line as a child process from async tests."""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass

__all__ = ["CliRun", "run_cometp2p"]


@dataclass(frozen=True, slots=True)
class CliRun:
    """What a finished ``cometp2p`` process left: its exit status and its output."""

    returncode: int
    output: str
    """stdout and stderr, interleaved as written."""


async def run_cometp2p(*args: str, timeout_s: float) -> CliRun:
    """Run ``python -m cometp2p ARGS...`` without blocking the event loop.

    The loop keeps serving (e.g. the nodes the command talks to) while the child runs.

    Raises:
        TimeoutError: the process did not finish within ``timeout_s`` seconds (it is
            killed first).
    """
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cometp2p",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with asyncio.timeout(timeout_s):
            stdout, _ = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    return CliRun(process.returncode if process.returncode is not None else -1, stdout.decode())
