"""The SIP stack (RFC 3261 and friends), written by hand: no maintained Python library covers it.

Sans-I/O throughout: URIs (uri.py, RFC 3261 §19.1, RFC 3966), header values (headers.py, §20, §25),
messages (message.py, §7, §8.2.6), their parsing and checks (parser.py, §7, §16.3), stream framing
(framing.py, §18.3), transactions (transaction.py and the client_transaction, server_transaction and
transaction_layer modules, §17, RFC 6026), digest authentication (digest.py and digest_hash,
digest_server, digest_client; RFC 7616, RFC 8760).
"""

from .client_transaction import (
    InviteClientTransaction,
    NonInviteClientTransaction,
    client_transaction,
    make_ack,
    make_cancel,
    new_branch,
)
from .digest import Challenge, Credentials, parse_challenge, parse_credentials
from .digest_client import answer_challenge, select_challenge
from .digest_hash import ALGORITHMS, Algorithm, compute_ha1, compute_response, userhash
from .digest_server import DigestServer, Lookup, Outcome, Verification, check_response, find_credentials
from .errors import DigestError, SipParseError
from .framing import StreamFramer
from .headers import CSeq, NameAddr, Via, parse_int_header, parse_name_addr, parse_via, unquote_string
from .message import MAGIC_COOKIE, Message, MessageError, Request, Response, make_response
from .parser import parse_message
from .server_transaction import InviteServerTransaction, NonInviteServerTransaction, server_transaction
from .transaction import (
    Action,
    CancelTimer,
    ClientTransaction,
    Deliver,
    Event,
    LayerAction,
    LayerFull,
    LocalProtocolError,
    ServerTransaction,
    StartTimer,
    State,
    Terminated,
    Timeout,
    Timers,
    Transaction,
    TransactionError,
    Transmit,
    TransportError,
)
from .transaction_layer import DEFAULT_MAX_TRANSACTIONS, TransactionLayer
from .uri import (
    Param,
    SipUri,
    TelUri,
    Uri,
    del_param,
    get_param,
    params_text,
    parse_sip_uri,
    parse_uri,
    set_param,
    valid_host,
)

__all__ = [
    "ALGORITHMS",
    "DEFAULT_MAX_TRANSACTIONS",
    "MAGIC_COOKIE",
    "Action",
    "Algorithm",
    "CSeq",
    "CancelTimer",
    "Challenge",
    "ClientTransaction",
    "Credentials",
    "Deliver",
    "DigestError",
    "DigestServer",
    "Event",
    "InviteClientTransaction",
    "InviteServerTransaction",
    "LayerAction",
    "LayerFull",
    "LocalProtocolError",
    "Lookup",
    "Message",
    "MessageError",
    "NameAddr",
    "NonInviteClientTransaction",
    "NonInviteServerTransaction",
    "Outcome",
    "Param",
    "Request",
    "Response",
    "ServerTransaction",
    "SipParseError",
    "SipUri",
    "StartTimer",
    "State",
    "StreamFramer",
    "TelUri",
    "Terminated",
    "Timeout",
    "Timers",
    "Transaction",
    "TransactionError",
    "TransactionLayer",
    "Transmit",
    "TransportError",
    "Uri",
    "Verification",
    "Via",
    "answer_challenge",
    "check_response",
    "client_transaction",
    "compute_ha1",
    "compute_response",
    "del_param",
    "find_credentials",
    "get_param",
    "make_ack",
    "make_cancel",
    "make_response",
    "new_branch",
    "params_text",
    "parse_challenge",
    "parse_credentials",
    "parse_int_header",
    "parse_message",
    "parse_name_addr",
    "parse_sip_uri",
    "parse_uri",
    "parse_via",
    "select_challenge",
    "server_transaction",
    "set_param",
    "unquote_string",
    "userhash",
    "valid_host",
]
