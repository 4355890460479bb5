// What both test phones (app.js: JsSIP, sipjs_app.js: SIP.js) do with the media of a call, whatever
// the SIP stack: restrict codecs in SDP, play and analyse the remote track, flatten getStats().
'use strict';

(function () {
  // Keep only the named codecs (case-insensitive encoding names) in every m=audio section.
  // Applied to the remote offer as well as to our own SDP: Chromium may otherwise send a codec its
  // answer left out.
  function filterCodecs(sdp, codecs) {
    if (!codecs || !codecs.length) return sdp;
    const wanted = new Set(codecs.map((c) => c.toLowerCase()));
    const lines = sdp.split('\r\n');
    const out = [];
    let section = null;
    const flush = () => {
      if (!section) return;
      if (!section.audio) { out.push(...section.lines); return; }
      const names = {};
      for (const l of section.lines) {
        const m = /^a=rtpmap:(\d+) ([^/]+)/.exec(l);
        if (m) names[m[1]] = m[2].toLowerCase();
      }
      const keep = new Set(Object.keys(names).filter((pt) => wanted.has(names[pt])));
      for (const l of section.lines) {
        if (l.startsWith('m=audio')) {
          const f = l.split(' ');
          const pts = f.slice(3).filter((pt) => keep.has(pt) || (!(pt in names) && Number(pt) < 96 && wanted.has(staticName(pt))));
          out.push(f.slice(0, 3).concat(pts).join(' '));
          continue;
        }
        const m = /^a=(?:rtpmap|fmtp|rtcp-fb):(\d+)/.exec(l);
        if (m && !keep.has(m[1])) continue;
        out.push(l);
      }
    };
    for (const l of lines) {
      if (l.startsWith('m=')) {
        flush();
        section = { audio: l.startsWith('m=audio'), lines: [l] };
      } else if (section) {
        section.lines.push(l);
      } else {
        out.push(l);
      }
    }
    flush();
    return out.join('\r\n');
  }

  function staticName(pt) {
    return { 0: 'pcmu', 8: 'pcma', 9: 'g722', 13: 'cn' }[pt] || '';
  }

  // Plays `stream` in the page's <audio id="remote"> and puts an AnalyserNode on it; `state` keeps
  // audioCtx and analyser across calls. `record` reports a failure to play.
  function ensureAnalyser(state, stream, record) {
    // Chromium only feeds a remote WebRTC track into WebAudio while a media element plays it.
    const el = document.getElementById('remote');
    el.srcObject = stream;
    el.play().catch((e) => record('audioElementError', { error: String(e) }));
    if (!state.audioCtx) state.audioCtx = new AudioContext();
    if (state.audioCtx.state !== 'running') state.audioCtx.resume();
    const src = state.audioCtx.createMediaStreamSource(stream);
    const analyser = state.audioCtx.createAnalyser();
    analyser.fftSize = 16384;
    analyser.smoothingTimeConstant = 0;
    src.connect(analyser);
    state.analyser = analyser;
  }

  // The evidence that media flowed: pc.getStats(), flattened.
  async function stats(pc) {
    if (!pc) return null;
    const report = await pc.getStats();
    const out = {
      connectionState: pc.connectionState,
      iceConnectionState: pc.iceConnectionState,
      signalingState: pc.signalingState,
      inbound: null, outbound: null, transport: null, selectedPair: null, remoteInbound: null,
    };
    const pick = (o, keys) => Object.fromEntries(keys.filter((k) => o[k] !== undefined).map((k) => [k, o[k]]));
    report.forEach((r) => {
      if (r.type === 'inbound-rtp' && r.kind === 'audio') {
        out.inbound = pick(r, ['ssrc', 'packetsReceived', 'bytesReceived', 'packetsLost', 'jitter', 'totalAudioEnergy',
          'audioLevel', 'totalSamplesReceived', 'concealedSamples', 'totalSamplesDuration', 'codecId']);
      } else if (r.type === 'outbound-rtp' && r.kind === 'audio') {
        out.outbound = pick(r, ['ssrc', 'packetsSent', 'bytesSent', 'codecId']);
      } else if (r.type === 'remote-inbound-rtp' && r.kind === 'audio') {
        out.remoteInbound = pick(r, ['packetsLost', 'roundTripTime', 'jitter']);
      } else if (r.type === 'transport') {
        out.transport = pick(r, ['dtlsState', 'dtlsRole', 'srtpCipher', 'tlsVersion', 'selectedCandidatePairId', 'iceRole']);
      }
    });
    const codec = (id) => { const c = id && report.get(id); return c ? { mimeType: c.mimeType, payloadType: c.payloadType, clockRate: c.clockRate } : null; };
    if (out.inbound) out.inbound.codec = codec(out.inbound.codecId);
    if (out.outbound) out.outbound.codec = codec(out.outbound.codecId);
    const pairId = out.transport && out.transport.selectedCandidatePairId;
    const pair = pairId && report.get(pairId);
    if (pair) {
      const cand = (id) => { const c = report.get(id); return c ? pick(c, ['address', 'port', 'protocol', 'candidateType']) : null; };
      out.selectedPair = Object.assign(pick(pair, ['state', 'nominated', 'bytesSent', 'bytesReceived']), {
        local: cand(pair.localCandidateId), remote: cand(pair.remoteCandidateId),
      });
    }
    return out;
  }

  // Which tone arrives from the far end: dominant frequency of the remote track (AnalyserNode FFT,
  // parabolic interpolation), median over a few reads, and its level.
  async function tone(state, opts) {
    opts = opts || {};
    const a = state.analyser;
    if (!a) return { frequency: 0, levelDb: -200, rms: 0, reason: 'no remote audio track' };
    const fmin = opts.fmin || 100;
    const fmax = opts.fmax || 8000;
    const sr = state.audioCtx.sampleRate;
    const binHz = sr / a.fftSize;
    const freq = new Float32Array(a.frequencyBinCount);
    const time = new Float32Array(a.fftSize);
    const freqs = []; const levels = []; const rmss = [];
    for (let i = 0; i < (opts.samples || 5); i++) {
      if (i) await new Promise((r) => setTimeout(r, opts.interval || 100));
      a.getFloatFrequencyData(freq);
      let k = Math.max(1, Math.ceil(fmin / binHz));
      let best = k;
      const last = Math.min(freq.length - 2, Math.floor(fmax / binHz));
      for (; k <= last; k++) if (freq[k] > freq[best]) best = k;
      const [l, c, r] = [freq[best - 1], freq[best], freq[best + 1]];
      const denom = l - 2 * c + r;
      const delta = denom !== 0 && Number.isFinite(denom) ? 0.5 * (l - r) / denom : 0;
      a.getFloatTimeDomainData(time);
      let sum = 0;
      for (const x of time) sum += x * x;
      freqs.push((best + delta) * binHz);
      levels.push(Number.isFinite(c) ? c : -200);
      rmss.push(Math.sqrt(sum / time.length));
    }
    const median = (xs) => xs.slice().sort((x, y) => x - y)[Math.floor(xs.length / 2)];
    const rms = median(rmss);
    return { frequency: rms > 0 ? median(freqs) : 0, levelDb: median(levels), rms, sampleRate: sr };
  }

  window.rtcMedia = { filterCodecs, ensureAnalyser, stats, tone };
})();
