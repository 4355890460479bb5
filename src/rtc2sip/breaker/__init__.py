"""The RTCWeb Breaker's signalling (issue 3): which calls to break (:mod:`.policy`), SIP dialogs
(:mod:`.dialog`, RFC 3261 §12) and the B2BUA that joins a WebRTC leg to a legacy one (:mod:`.b2bua`)."""

from .b2bua import B2bua
from .call import BreakerConfig
from .dialog import Dialog, DialogError
from .host import Host, MediaPlane, ProxyHost
from .policy import Decision, Facts, Mode, client_params, decide

__all__ = ["B2bua", "BreakerConfig", "Decision", "Dialog", "DialogError", "Facts", "Host", "MediaPlane", "Mode",
           "ProxyHost", "client_params", "decide"]
