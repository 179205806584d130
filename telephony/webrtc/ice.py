"""ICE for browser calls: configured STUN/TURN servers, and a loopback host candidate."""

from __future__ import annotations

from collections.abc import Callable

import aioice.ice
from aiortc import RTCIceServer

LOOPBACK = "127.0.0.1"


def add_loopback_candidate() -> None:
    """Make aiortc offer 127.0.0.1 as a host candidate, besides the other interfaces.

    aioice's `get_host_addresses()` leaves out 127.0.0.1, so on a machine (or network
    namespace, or container) whose only interface is loopback the SDP carries no
    candidate and ICE never starts. It has no setting for this, so the function is
    wrapped; the wrapper is installed once per process.
    """
    original: Callable[[bool, bool], list[str]] = aioice.ice.get_host_addresses
    if getattr(original, "adds_loopback", False):
        return

    def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        addresses = original(use_ipv4, use_ipv6)
        if use_ipv4 and LOOPBACK not in addresses:
            addresses.append(LOOPBACK)
        return addresses

    get_host_addresses.adds_loopback = True  # type: ignore[attr-defined]
    aioice.ice.get_host_addresses = get_host_addresses


def rtc_ice_servers(servers: list[dict]) -> list[RTCIceServer]:
    """aiortc's form of `[{"urls": ..., "username": ..., "credential": ...}]`."""
    return [
        RTCIceServer(
            urls=s["urls"], username=s.get("username"), credential=s.get("credential")
        )
        for s in servers
    ]
