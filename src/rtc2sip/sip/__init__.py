"""The SIP stack (RFC 3261 and friends), written by hand: no maintained Python library covers it."""

from .errors import SipParseError
from .headers import CSeq, NameAddr, Via, parse_name_addr, parse_via
from .message import MessageError, Request, Response, StreamFramer, make_response, parse_message
from .uri import SipUri, TelUri, parse_uri

__all__ = [
    "CSeq", "MessageError", "NameAddr", "Request", "Response", "SipParseError", "SipUri", "StreamFramer",
    "TelUri", "Via", "make_response", "parse_message", "parse_name_addr", "parse_uri", "parse_via",
]
