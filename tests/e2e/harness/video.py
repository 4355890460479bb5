"""Video calls from the test browser: the page's own call() is audio-only, so :data:`VIDEO_CALLS`
patches, in the page, JsSIP's ``UA.prototype.call`` to ask for video (the fake camera) and
``RTCPeerConnection`` to keep a handle on the call's peer connection; :func:`video_stats` reads the
inbound video figures of its getStats()."""

from __future__ import annotations

from typing import Any

from .browser import Browser

VIDEO_CALLS = """(() => {
  if (window.__videoPatched) return true;
  window.__videoPatched = true;
  window.__pcs = [];
  const Native = window.RTCPeerConnection;
  class Kept extends Native {
    constructor(...args) { super(...args); window.__pcs.push(this); }
  }
  window.RTCPeerConnection = Kept;
  const call = JsSIP.UA.prototype.call;
  JsSIP.UA.prototype.call = function (target, options) {
    return call.call(this, target, Object.assign({}, options, {
      mediaConstraints: { audio: true, video: true },
      rtcOfferConstraints: { offerToReceiveAudio: true, offerToReceiveVideo: true },
    }));
  };
  return true;
})()"""

VIDEO_STATS = """(async () => {
  const pc = window.__pcs[window.__pcs.length - 1];
  if (!pc) return null;
  const report = await pc.getStats();
  let out = null;
  report.forEach((r) => {
    if (r.type === 'inbound-rtp' && r.kind === 'video') {
      const codec = r.codecId && report.get(r.codecId);
      out = {
        framesDecoded: r.framesDecoded || 0, framesReceived: r.framesReceived || 0,
        keyFramesDecoded: r.keyFramesDecoded || 0, frameWidth: r.frameWidth || 0,
        frameHeight: r.frameHeight || 0, framesPerSecond: r.framesPerSecond || 0,
        packetsReceived: r.packetsReceived || 0, packetsLost: r.packetsLost || 0,
        pliCount: r.pliCount || 0, firCount: r.firCount || 0, nackCount: r.nackCount || 0,
        codec: codec ? codec.mimeType : null,
      };
    }
  });
  return out;
})()"""


def video_stats(browser: Browser) -> dict[str, Any] | None:
    result = browser.eval(VIDEO_STATS)
    assert result is None or isinstance(result, dict)
    return result
