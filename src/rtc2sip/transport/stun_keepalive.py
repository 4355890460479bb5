"""STUN keepalives on the SIP UDP port (RFC 5626 §4.4.2, §8.4), using aioice's STUN codec."""

from __future__ import annotations

import logging
import struct

from aioice import stun

log = logging.getLogger("rtc2sip.transport")


def binding_response(data: bytes, host: str, port: int) -> bytes | None:
    """The Binding success response for a Binding request, or None for anything else (dropped)."""
    try:
        req = stun.parse_message(data)
    except (ValueError, struct.error):  # aioice unpacks a short PRIORITY, ICE-CONTROLLING... with struct
        log.debug("dropped a non-SIP, non-STUN datagram from %s:%s", host, port)
        return None
    if req.message_method != stun.Method.BINDING or req.message_class != stun.Class.REQUEST:
        return None
    resp = stun.Message(stun.Method.BINDING, stun.Class.RESPONSE, req.transaction_id)
    resp.attributes["XOR-MAPPED-ADDRESS"] = (host, port)
    return bytes(resp)
