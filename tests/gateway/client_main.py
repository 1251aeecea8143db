"""Our UPnP client, run inside the test's client namespace by :class:`lab.GatewayLab`.

``python client_main.py OP [ARGS]`` prints one JSON line: the result, or
``{"error": <class>, "reason": <UpnpFailure value>, "message", "elapsed_s"}``.

Operations: ``discover [SOURCE_IP]``, ``open LOCATION``, ``map LOCATION PORT LEASE_S``,
``delete LOCATION PORT``, ``stalled LOCATION`` (open, print ``{"opened": true}``, wait
for a line on stdin, then ask for the external IP: the test stops the daemon meanwhile).
``$TIMEOUT_S`` bounds each step (default 3).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Any

from cometp2p.upnp import Gateway, UpnpError, discover, open_gateway


async def _describe(gateway: Gateway) -> dict[str, Any]:
    return {
        "location": gateway.location,
        "control_url": gateway.control_url,
        "service_type": gateway.service_type,
        "urn_domain": gateway.urn_domain,
        "local_ip": gateway.local_ip,
        "external_ip": str(await gateway.get_external_address()),
    }


async def _main(op: str, args: list[str], timeout_s: float) -> dict[str, Any]:
    if op == "discover":
        source_ip = args[0] if args else None
        async with await discover(source_ip=source_ip, timeout_s=timeout_s) as gateway:
            return await _describe(gateway)
    async with await open_gateway(args[0], timeout_s=timeout_s) as gateway:
        if op == "open":
            return await _describe(gateway)
        if op == "stalled":
            print(json.dumps({"opened": True}), flush=True)
            await asyncio.to_thread(sys.stdin.readline)
            started = time.monotonic()
            try:
                await gateway.get_external_address()
            finally:
                print(json.dumps({"action_s": round(time.monotonic() - started, 3)}), flush=True)
            return {"unexpected": "an answer"}
        port = int(args[1])
        if op == "map":
            lease_s = int(args[2])
            mapped = await gateway.add_port_mapping("tcp", port, port, "cometp2p test", lease_s)
            return {"mapped": mapped, "internal_client": gateway.local_ip}
        if op == "delete":
            await gateway.delete_port_mapping("tcp", port)
            return {"deleted": port}
    raise SystemExit(f"unknown op {op!r}")


def main() -> None:
    timeout_s = float(os.environ.get("TIMEOUT_S", "3"))
    started = time.monotonic()
    try:
        result = asyncio.run(_main(sys.argv[1], sys.argv[2:], timeout_s))
    except UpnpError as exc:
        result = {"error": type(exc).__name__, "reason": exc.reason.value, "message": str(exc)}
    result["elapsed_s"] = round(time.monotonic() - started, 3)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
