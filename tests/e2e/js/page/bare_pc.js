// A bare RTCPeerConnection (no JsSIP, no SIP) for tests that hand SDP to rtc2sip's media plane
// directly (tests/e2e/test_media_plane_browser.py). Not served by driver.mjs: the test evaluates this
// file in the phone page (Browser.eval), which installs window.bare and yields true.
// Same evidence as app.js: getStats() figures, and the far end's tone from a WebAudio analyser.
(() => {
  const st = { pc: null, audioCtx: null, analyser: null, events: [] };

  function attach(stream) {
    // Chromium feeds a remote WebRTC track to WebAudio only while a media element plays it.
    const el = document.getElementById('remote');
    el.srcObject = stream;
    el.play().catch((e) => st.events.push('play: ' + e));
    if (!st.audioCtx) st.audioCtx = new AudioContext();
    if (st.audioCtx.state !== 'running') st.audioCtx.resume();
    const analyser = st.audioCtx.createAnalyser();
    analyser.fftSize = 16384;
    analyser.smoothingTimeConstant = 0;
    st.audioCtx.createMediaStreamSource(stream).connect(analyser);
    st.analyser = analyser;
  }

  async function newPc() {
    if (st.pc) st.pc.close();
    const pc = new RTCPeerConnection({ iceServers: [], bundlePolicy: 'max-bundle', rtcpMuxPolicy: 'require' });
    const mic = await navigator.mediaDevices.getUserMedia({ audio: true, video: false });
    for (const track of mic.getTracks()) pc.addTrack(track, mic);
    pc.addEventListener('track', (e) => attach(e.streams && e.streams[0] ? e.streams[0] : new MediaStream([e.track])));
    pc.addEventListener('connectionstatechange', () => st.events.push('connection: ' + pc.connectionState));
    pc.addEventListener('iceconnectionstatechange', () => st.events.push('ice: ' + pc.iceConnectionState));
    st.pc = pc;
    return pc;
  }

  // The gateway does not trickle: hand it the SDP with every candidate in it.
  function gathered(pc) {
    return new Promise((resolve) => {
      if (pc.iceGatheringState === 'complete') return resolve();
      pc.addEventListener('icegatheringstatechange', () => { if (pc.iceGatheringState === 'complete') resolve(); });
      setTimeout(resolve, 5000);
    });
  }

  window.bare = {
    async offer() {
      const pc = await newPc();
      await pc.setLocalDescription(await pc.createOffer());
      await gathered(pc);
      return pc.localDescription.sdp;
    },
    async acceptAnswer(sdp) {
      await st.pc.setRemoteDescription({ type: 'answer', sdp });
      return true;
    },
    async answer(sdp) {
      const pc = await newPc();
      await pc.setRemoteDescription({ type: 'offer', sdp });
      await pc.setLocalDescription(await pc.createAnswer());
      await gathered(pc);
      return pc.localDescription.sdp;
    },
    events() { return st.events; },
    async stats() {
      const pc = st.pc;
      if (!pc) return null;
      const report = await pc.getStats();
      const out = { connectionState: pc.connectionState, inbound: null, outbound: null, transport: null, pair: null };
      const pick = (o, keys) => Object.fromEntries(keys.filter((k) => o[k] !== undefined).map((k) => [k, o[k]]));
      report.forEach((r) => {
        if (r.type === 'inbound-rtp' && r.kind === 'audio') {
          out.inbound = pick(r, ['ssrc', 'packetsReceived', 'bytesReceived', 'packetsLost', 'jitter', 'totalAudioEnergy', 'codecId']);
          const c = report.get(r.codecId);
          if (c) out.inbound.codec = c.mimeType;
        } else if (r.type === 'outbound-rtp' && r.kind === 'audio') {
          out.outbound = pick(r, ['ssrc', 'packetsSent', 'bytesSent']);
        } else if (r.type === 'transport') {
          out.transport = pick(r, ['dtlsState', 'dtlsRole', 'srtpCipher', 'selectedCandidatePairId']);
        } else if (r.type === 'remote-inbound-rtp' && r.kind === 'audio') {
          out.remoteInbound = pick(r, ['packetsLost', 'roundTripTime', 'jitter']);
        }
      });
      const pair = out.transport && report.get(out.transport.selectedCandidatePairId);
      if (pair) {
        const cand = (id) => { const c = report.get(id); return c ? pick(c, ['address', 'port', 'candidateType']) : null; };
        out.pair = { nominated: pair.nominated, local: cand(pair.localCandidateId), remote: cand(pair.remoteCandidateId) };
      }
      return out;
    },
    // Dominant frequency of the remote track (FFT peak with parabolic interpolation), median of reads.
    async tone(samples) {
      const a = st.analyser;
      if (!a) return { frequency: 0, rms: 0 };
      const binHz = st.audioCtx.sampleRate / a.fftSize;
      const freq = new Float32Array(a.frequencyBinCount);
      const time = new Float32Array(a.fftSize);
      const freqs = []; const rmss = [];
      for (let i = 0; i < (samples || 5); i++) {
        if (i) await new Promise((r) => setTimeout(r, 100));
        a.getFloatFrequencyData(freq);
        let best = Math.ceil(100 / binHz);
        const last = Math.min(freq.length - 2, Math.floor(8000 / binHz));
        for (let k = best; k <= last; k++) if (freq[k] > freq[best]) best = k;
        const [l, c, r] = [freq[best - 1], freq[best], freq[best + 1]];
        const denom = l - 2 * c + r;
        const delta = denom !== 0 && Number.isFinite(denom) ? 0.5 * (l - r) / denom : 0;
        a.getFloatTimeDomainData(time);
        let sum = 0;
        for (const x of time) sum += x * x;
        freqs.push((best + delta) * binHz);
        rmss.push(Math.sqrt(sum / time.length));
      }
      const median = (xs) => xs.slice().sort((x, y) => x - y)[Math.floor(xs.length / 2)];
      return { frequency: median(rmss) > 0 ? median(freqs) : 0, rms: median(rmss) };
    },
    close() { if (st.pc) st.pc.close(); st.pc = null; return true; },
  };
  return true;
})()
