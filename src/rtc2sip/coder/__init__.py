"""The Media Coder (webrtc2sip's ``enable-media-coder``): transcoding when the legs share no codec.

``audio``: Opus ⇄ G.711/G.722 per direction, sans I/O; ``worker``: runs transcoders off the event
loop with a bound on concurrent sessions; ``video``, ``rtp_video`` and ``jitterbuffer``: VP8 ⇄ H.264,
their RTP payload formats and the video jitter buffer (``enable-videojb``; the recorder's WebM
reader uses the last two as well).
"""

from .audio import AudioTranscoder, DtmfMapper, TranscoderStats
from .audiocodec import CODECS
from .common import CoderError, OutPacket
from .worker import CoderBusy, CoderPool, CoderSession

__all__ = [
    "CODECS",
    "AudioTranscoder",
    "CoderBusy",
    "CoderError",
    "CoderPool",
    "CoderSession",
    "DtmfMapper",
    "OutPacket",
    "TranscoderStats",
]
