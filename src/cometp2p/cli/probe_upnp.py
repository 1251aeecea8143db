"""``cometp2p probe-upnp``: what the UPnP gateway can do for us (behaviour.md §7.3).

As tendermint's ``probe_upnp``: finds the gateway, prints it, its external IP and the
PortMapping and Hairpin capabilities; the probe's mapping is always removed. Exit
status 0 after a complete probe, 1 when it failed (the reason is printed). The probe
needs the optional extra ``cometp2p[upnp]``.
"""

from __future__ import annotations

import asyncio
import json

import click

from cometp2p.cli.main import cli_errors
from cometp2p.upnp.client import DEFAULT_TIMEOUT_S, interface_ipv4
from cometp2p.upnp.probe import PROBE_PORT, ProbeResult, probe

__all__ = ["COMMANDS", "format_result", "probe_upnp_command"]


def format_result(result: ProbeResult) -> list[str]:
    """The lines ``probe-upnp`` prints for ``result``."""
    lines: list[str] = []
    if result.location:
        lines.append(f"Gateway:      {result.gateway} ({result.location})")
        lines.append(f"Control URL:  {result.control_url}")
        lines.append(f"Our IP:       {result.local_ip}")
    if result.external_ip:
        lines.append(f"External IP:  {result.external_ip}")
    caps = result.capabilities
    lines.append(f"PortMapping:  {str(caps.port_mapping).lower()}")
    lines.append(f"Hairpin:      {str(caps.hairpin).lower()}")
    if result.cleanup_error is not None:
        lines.append(f"Mapping not removed: {result.cleanup_error}")
    if result.error is not None:
        lines.append(f"Probe failed: {result.error}")
    else:
        lines.append("Probe success!")
        lines.append(
            json.dumps(
                {"PortMapping": caps.port_mapping, "Hairpin": caps.hairpin}, separators=(",", ":")
            )
        )
    return lines


@click.command("probe-upnp")
@click.option("--interface", default=None, help="Search and connect from this interface's IPv4.")
@click.option("--source-ip", "source_ip", default=None, help="Search and connect from this IP.")
@click.option("--location", default=None, help="Gateway description URL (skips the search).")
@click.option("--port", type=click.IntRange(1, 65535), default=PROBE_PORT, show_default=True)
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(min=0, min_open=True),
    default=DEFAULT_TIMEOUT_S,
    show_default=True,
    help="Seconds each UPnP step may take.",
)
@click.option(
    "--hairpin-timeout",
    "hairpin_timeout_s",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    show_default=True,
    help="Seconds the hairpin test data may take.",
)
@click.option("-v", "--verbose", is_flag=True, help="Print each step.")
def probe_upnp_command(
    interface: str | None,
    source_ip: str | None,
    location: str | None,
    port: int,
    timeout_s: float,
    hairpin_timeout_s: float,
    verbose: bool,
) -> None:
    """Probe the UPnP gateway: external IP, PortMapping and Hairpin capabilities."""
    with cli_errors():
        if interface is not None:
            if source_ip is not None:
                raise click.UsageError("give --interface or --source-ip, not both")
            source_ip = interface_ipv4(interface)
    result = asyncio.run(
        probe(
            port=port,
            source_ip=source_ip,
            location=location,
            timeout_s=timeout_s,
            hairpin_timeout_s=hairpin_timeout_s,
            log=(lambda line: click.echo(f"... {line}", err=True)) if verbose else lambda _: None,
        )
    )
    for line in format_result(result):
        click.echo(line)
    if result.error is not None or result.cleanup_error is not None:
        raise SystemExit(1)


# tendermint spells it probe_upnp; keep that alias out of --help.
probe_upnp_alias = click.Command(
    "probe_upnp",
    callback=probe_upnp_command.callback,
    params=probe_upnp_command.params,
    help=probe_upnp_command.help,
    hidden=True,
)

COMMANDS: tuple[click.Command, ...] = (probe_upnp_command, probe_upnp_alias)
