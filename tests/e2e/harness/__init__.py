"""End-to-end harness: real peers (rtc2sip, kamailio, baresip, Chromium + JsSIP, sipp, tshark) on
loopback, each a process group stopped at teardown, logging into artifacts/<test-name>/."""

from .artifacts import REPO_ROOT, Artifacts
from .baresip import Baresip
from .browser import Browser, BrowserDriver, js_ready, non_loopback_interfaces
from .capture import Capture, port_filter
from .coturn import Coturn
from .gateway import Gateway
from .kamailio import Kamailio
from .loss import LossyPorts, loss_available
from .procs import HarnessError, Proc, free_port, wait_for
from .sipp import Sipp, SippResult
from .tone import ToneResult, analyse_wav, write_tone_wav

__all__ = [
    "REPO_ROOT",
    "Artifacts",
    "Baresip",
    "Browser",
    "BrowserDriver",
    "Capture",
    "Coturn",
    "Gateway",
    "HarnessError",
    "Kamailio",
    "LossyPorts",
    "Proc",
    "Sipp",
    "SippResult",
    "ToneResult",
    "analyse_wav",
    "free_port",
    "js_ready",
    "loss_available",
    "non_loopback_interfaces",
    "port_filter",
    "wait_for",
    "write_tone_wav",
]
