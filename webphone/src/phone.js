// rtc2sip's web phone: the page at / of the gateway (src/rtc2sip/web/static/index.html).
//
// One JsSIP user agent, at most one call at a time: register, call, answer, hang up, hold, mute,
// video on/off, a DTMF keypad (RFC 4733 through the browser's RTCDTMFSender), SIP MESSAGE chat, and
// the call's statistics from RTCPeerConnection.getStats() every second. Bundled with JsSIP by build.mjs.
//
// Video: the "Video" toggle chooses, before a call, whether it is placed or answered with the camera
// (getUserMedia video, an m=video line). During a call it turns the camera on and off: a call that
// sends video stops and restarts its track (track.enabled: black frames, no renegotiation); a call
// without video gets the camera added and a re-INVITE (JsSIP renegotiate()).
//
// window.rtc2sipPhone (state, stats, tone, events, messages) lets a test read what the page sees
// without scraping it; the page works the same without anyone reading it.
import JsSIP from 'jssip';

const $ = (id) => document.getElementById(id);
const PREFS = 'rtc2sip.phone';
const PC_CONFIG = { iceServers: [], bundlePolicy: 'max-bundle', rtcpMuxPolicy: 'require' };
const media = () => ({ audio: true, video: state.video });

const state = {
  ua: null,
  domain: '',
  session: null, // the current call (placed, or answered)
  incoming: null, // a call ringing, not answered yet
  peer: '',
  events: [],
  messages: [],
  audioCtx: null,
  analyser: null,
  statsTimer: null,
  previous: null, // last getStats figures, for bitrates
  stats: null,
  video: false, // the Video toggle: calls with the camera
};

function record(type, data) {
  state.events.push(Object.assign({ type, t: Date.now() }, data || {}));
  if (state.events.length > 1000) state.events.splice(0, state.events.length - 1000);
}

function setStatus(id, text, error) {
  const el = $(id);
  el.textContent = text;
  el.classList.toggle('error', !!error);
}

// ---- account ----------------------------------------------------------------------------------

function defaultServer() {
  return `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/`;
}

function loadPrefs() {
  try {
    return JSON.parse(localStorage.getItem(PREFS) || '{}');
  } catch (e) {
    return {};
  }
}

function savePrefs() {
  const prefs = { user: $('user').value, domain: $('domain').value, displayName: $('display-name').value,
    server: $('server').value, target: $('target').value, video: state.video };
  try {
    localStorage.setItem(PREFS, JSON.stringify(prefs));
  } catch (e) { /* private mode: nothing remembered */ }
}

function register(ev) {
  ev.preventDefault();
  stopUa();
  const user = $('user').value.trim();
  const domain = $('domain').value.trim();
  state.domain = domain;
  savePrefs();
  let ua;
  try {
    const socket = new JsSIP.WebSocketInterface($('server').value.trim() || defaultServer());
    ua = new JsSIP.UA({
      sockets: [socket],
      uri: `sip:${user}@${domain}`,
      password: $('password').value || undefined,
      display_name: $('display-name').value.trim() || undefined,
      register: true,
      session_timers: false,
      user_agent: `rtc2sip-webphone (JsSIP ${JsSIP.version})`,
      connection_recovery_min_interval: 2,
      connection_recovery_max_interval: 30,
    });
  } catch (e) {
    setStatus('reg-status', `Cannot start: ${e.message || e}`, true);
    return;
  }
  state.ua = ua;
  ua.on('connecting', () => setStatus('reg-status', 'Connecting…'));
  ua.on('connected', () => { record('connected'); setStatus('reg-status', 'Connected, registering…'); });
  ua.on('disconnected', (e) => {
    record('disconnected', { code: e && e.code });
    setStatus('reg-status', 'Disconnected from the gateway (retrying)', true);
    setRegistered(false);
  });
  ua.on('registered', (e) => {
    record('registered', { status: e.response.status_code });
    setStatus('reg-status', `Registered as sip:${user}@${domain}`);
    setRegistered(true);
  });
  ua.on('unregistered', () => { record('unregistered'); setStatus('reg-status', 'Not registered'); setRegistered(false); });
  ua.on('registrationFailed', (e) => {
    const status = e.response ? e.response.status_code : null;
    record('registrationFailed', { cause: e.cause, status });
    setStatus('reg-status', `Registration failed: ${e.cause}${status ? ` (${status})` : ''}`, true);
    setRegistered(false);
  });
  ua.on('newRTCSession', onNewSession);
  ua.on('newMessage', onMessage);
  $('unregister').disabled = false;
  ua.start();
}

function stopUa() {
  if (!state.ua) return;
  const ua = state.ua;
  state.ua = null;
  ua.removeAllListeners();
  ua.stop();
  setRegistered(false);
}

function unregister() {
  stopUa();
  $('unregister').disabled = true;
  setStatus('reg-status', 'Not registered');
}

function setRegistered(on) {
  $('call').disabled = !on || !!state.session;
  $('chat-send').disabled = !on;
}

// ---- calls ------------------------------------------------------------------------------------

function targetUri(text) {
  const t = text.trim();
  if (/^sips?:/i.test(t)) return t;
  if (t.includes('@')) return `sip:${t}`;
  return `sip:${t}@${state.domain}`;
}

// A user gesture (the click on Call or Answer) lets the page start its AudioContext.
function ensureAudioContext() {
  if (!state.audioCtx) state.audioCtx = new AudioContext();
  if (state.audioCtx.state !== 'running') state.audioCtx.resume().catch(() => {});
}

function placeCall(ev) {
  ev.preventDefault();
  if (!state.ua || state.session) return;
  ensureAudioContext();
  const target = targetUri($('target').value);
  savePrefs();
  let session;
  try {
    session = state.ua.call(target, {
      mediaConstraints: media(),
      pcConfig: PC_CONFIG,
      rtcOfferConstraints: { offerToReceiveAudio: true, offerToReceiveVideo: state.video },
    });
  } catch (e) {
    setStatus('call-status', `Cannot call ${target}: ${e.message || e}`, true);
  }
  if (session) record('calling', { target, video: state.video });
}

function onNewSession(e) {
  const session = e.session;
  if (e.originator === 'local') {
    adopt(session, 'outgoing');
    return;
  }
  if (state.session || state.incoming) {
    session.terminate({ status_code: 486, reason_phrase: 'Busy Here' });
    return;
  }
  state.incoming = session;
  const from = session.remote_identity;
  const who = from.display_name ? `${from.display_name} <${from.uri}>` : String(from.uri);
  record('incoming', { from: String(from.uri) });
  $('incoming-text').textContent = `Incoming call from ${who}`;
  $('incoming').hidden = false;
  $('answer').focus();
  const gone = (ev) => {
    if (state.incoming !== session) return;
    state.incoming = null;
    $('incoming').hidden = true;
    setStatus('call-status', `Missed call from ${who} (${ev.cause})`);
  };
  session.on('failed', gone);
  session.on('ended', gone);
}

function answer() {
  const session = state.incoming;
  if (!session) return;
  ensureAudioContext();
  state.incoming = null;
  $('incoming').hidden = true;
  adopt(session, 'incoming');
  session.answer({ mediaConstraints: media(), pcConfig: PC_CONFIG });
}

function decline() {
  const session = state.incoming;
  if (!session) return;
  state.incoming = null;
  $('incoming').hidden = true;
  session.terminate({ status_code: 603, reason_phrase: 'Decline' });
  setStatus('call-status', 'Call declined');
}

function adopt(session, direction) {
  state.session = session;
  state.peer = String(session.remote_identity.uri);
  if (!$('chat-to').value) $('chat-to').value = state.peer;
  record('session', { direction, peer: state.peer });
  setStatus('call-status', direction === 'outgoing' ? `Calling ${state.peer}…` : `Answering ${state.peer}…`);
  $('dtmf-sent').textContent = '';
  $('dtmf-sent').dataset.tones = '';
  setInCall(true, false);
  if (session.connection) watchConnection(session.connection);
  session.on('peerconnection', (e) => watchConnection(e.peerconnection));
  session.on('progress', (e) => {
    const status = e.response ? e.response.status_code : null;
    record('progress', { status });
    if (direction === 'outgoing') setStatus('call-status', `Ringing ${state.peer}…`);
  });
  session.on('accepted', () => { record('accepted'); showLocalVideo(session); });
  session.on('confirmed', () => {
    record('confirmed');
    showLocalVideo(session);
    setStatus('call-status', `In call with ${state.peer}`);
    setInCall(true, true);
  });
  session.on('hold', () => updateHold(session));
  session.on('unhold', () => updateHold(session));
  session.on('muted', () => updateMute(session));
  session.on('unmuted', () => updateMute(session));
  session.on('newDTMF', (e) => record('dtmf', { originator: e.originator, tone: e.dtmf.tone }));
  const over = (kind) => (e) => {
    if (state.session !== session) return;
    record(kind, { cause: e.cause, originator: e.originator });
    setStatus('call-status', kind === 'failed' ? `Call failed: ${e.cause}` : `Call ended (${e.cause})`, kind === 'failed');
    state.session = null;
    setInCall(false, false);
    stopStats();
    hideVideo();
  };
  session.on('ended', over('ended'));
  session.on('failed', over('failed'));
  startStats();
}

function setInCall(inCall, established) {
  $('hangup').disabled = !inCall;
  $('hold').disabled = !established;
  $('mute').disabled = !established;
  for (const b of document.querySelectorAll('#keypad button')) b.disabled = !established;
  $('call').disabled = inCall || !(state.ua && state.ua.isRegistered());
  if (!inCall) {
    $('hold').setAttribute('aria-pressed', 'false');
    $('hold').textContent = 'Hold';
    $('mute').setAttribute('aria-pressed', 'false');
    $('mute').textContent = 'Mute';
  }
}

function hangup() {
  if (state.session && !state.session.isEnded()) state.session.terminate();
}

function toggleHold(tries = 0) {
  const s = state.session;
  if (!s || s.isEnded()) return;
  // JsSIP refuses a new offer while the previous re-INVITE is unanswered (hold() and unhold() then
  // return false and do nothing): a quick Resume right after Hold would be lost. Wait for it instead.
  if (!s.isReadyToReOffer()) {
    if (tries < 50) setTimeout(() => toggleHold(tries + 1), 100);
    return;
  }
  if (s.isOnHold().local) s.unhold();
  else s.hold();
}

function updateHold(session) {
  const held = session.isOnHold();
  const on = held.local;
  $('hold').setAttribute('aria-pressed', String(on));
  $('hold').textContent = on ? 'Resume' : 'Hold';
  record('hold', { local: held.local, remote: held.remote });
  if (state.session === session && session.isEstablished()) {
    let text = `In call with ${state.peer}`;
    if (held.local) text = `On hold: ${state.peer}`;
    else if (held.remote) text = `${state.peer} put you on hold`;
    setStatus('call-status', text);
  }
}

function toggleMute() {
  const s = state.session;
  if (!s) return;
  if (s.isMuted().audio) s.unmute({ audio: true });
  else s.mute({ audio: true });
}

function updateMute(session) {
  const on = session.isMuted().audio;
  $('mute').setAttribute('aria-pressed', String(on));
  $('mute').textContent = on ? 'Unmute' : 'Mute';
  record('mute', { muted: on });
}

function sendTone(ev) {
  const tone = ev.target.closest('button[data-tone]');
  if (!tone || !state.session || !state.session.isEstablished()) return;
  const sent = $('dtmf-sent');
  try {
    // RFC 4733 events in the media (the browser's RTCDTMFSender): what legacy phones and IVRs expect
    state.session.sendDTMF(tone.dataset.tone, { transportType: 'RFC2833', duration: 160, interToneGap: 80 });
  } catch (e) {
    record('dtmfError', { tone: tone.dataset.tone, error: String(e) });
    sent.textContent = `Cannot send ${tone.dataset.tone}: ${e.message || e}`;
    return;
  }
  record('dtmf', { originator: 'local', tone: tone.dataset.tone });
  sent.dataset.tones = (sent.dataset.tones || '') + tone.dataset.tone;
  sent.textContent = `Sent: ${sent.dataset.tones}`;
}

// ---- video ------------------------------------------------------------------------------------

function videoSender(session) {
  const pc = session && session.connection;
  if (!pc) return null;
  return pc.getSenders().find((x) => x.track && x.track.kind === 'video') || null;
}

function showLocalVideo(session) {
  const sender = videoSender(session);
  const v = $('local-video');
  if (!sender) {
    v.srcObject = null;
    return;
  }
  if (!v.srcObject || v.srcObject.getVideoTracks()[0] !== sender.track) v.srcObject = new MediaStream([sender.track]);
  $('videos').hidden = false;
  v.play().catch(() => {});
}

function hideVideo() {
  for (const id of ['local-video', 'remote-video']) {
    const v = $(id);
    if (v.srcObject) for (const t of v.srcObject.getTracks()) if (id === 'local-video') t.stop();
    v.srcObject = null;
  }
  $('videos').hidden = true;
}

function setVideoButton() {
  $('video').setAttribute('aria-pressed', String(state.video));
  $('video').textContent = state.video ? 'Video on' : 'Video off';
}

// Before a call: the choice for the next one. During a call: the camera on or off (see the header).
async function toggleVideo() {
  state.video = !state.video;
  setVideoButton();
  savePrefs();
  const session = state.session;
  if (!session || !session.isEstablished()) return;
  const sender = videoSender(session);
  if (sender) {
    sender.track.enabled = state.video;
    record('video', { on: state.video, renegotiated: false });
    return;
  }
  if (!state.video) return;
  try {
    const stream = await navigator.mediaDevices.getUserMedia({ video: true });
    const [track] = stream.getVideoTracks();
    session.connection.addTrack(track, stream);
    const started = session.renegotiate({ rtcOfferConstraints: { offerToReceiveAudio: true, offerToReceiveVideo: true } },
      () => { record('video', { on: true, renegotiated: true }); showLocalVideo(session); });
    if (!started) throw new Error('a renegotiation is already in progress');
  } catch (e) {
    record('videoError', { error: String(e) });
    setStatus('call-status', `Cannot start the camera: ${e.message || e}`, true);
    state.video = false;
    setVideoButton();
  }
}

// ---- remote audio -----------------------------------------------------------------------------

function watchConnection(pc) {
  if (!pc || pc.__rtc2sip) return;
  pc.__rtc2sip = true;
  pc.addEventListener('track', (e) => {
    record('track', { kind: e.track.kind });
    if (e.track.kind === 'video') {
      const v = $('remote-video');
      v.srcObject = new MediaStream([e.track]);
      $('videos').hidden = false;
      v.play().catch((err) => record('videoElementError', { error: String(err) }));
      return;
    }
    if (e.track.kind !== 'audio') return;
    const stream = e.streams && e.streams[0] ? e.streams[0] : new MediaStream([e.track]);
    // Chromium feeds a remote WebRTC track to WebAudio only while a media element plays it.
    const el = $('remote-audio');
    el.srcObject = stream;
    el.play().catch((err) => record('audioElementError', { error: String(err) }));
    ensureAudioContext();
    const analyser = state.audioCtx.createAnalyser();
    analyser.fftSize = 16384;
    analyser.smoothingTimeConstant = 0;
    state.audioCtx.createMediaStreamSource(stream).connect(analyser);
    state.analyser = analyser;
  });
  pc.addEventListener('iceconnectionstatechange', () => record('iceconnectionstate', { state: pc.iceConnectionState }));
  pc.addEventListener('connectionstatechange', () => record('connectionstate', { state: pc.connectionState }));
}

function level() {
  const a = state.analyser;
  if (!a) return 0;
  const time = new Float32Array(2048);
  a.getFloatTimeDomainData(time);
  let sum = 0;
  for (const x of time) sum += x * x;
  return Math.sqrt(sum / time.length);
}

// Which tone the far end plays: dominant frequency of the remote track (FFT peak with parabolic
// interpolation), the median over a few reads, with its level.
async function tone(opts) {
  opts = opts || {};
  const a = state.analyser;
  if (!a) return { frequency: 0, levelDb: -200, rms: 0, reason: 'no remote audio track' };
  const binHz = state.audioCtx.sampleRate / a.fftSize;
  const freq = new Float32Array(a.frequencyBinCount);
  const freqs = [];
  const levels = [];
  const rmss = [];
  for (let i = 0; i < (opts.samples || 5); i++) {
    if (i) await new Promise((r) => setTimeout(r, opts.interval || 100));
    a.getFloatFrequencyData(freq);
    let best = Math.max(1, Math.ceil((opts.fmin || 100) / binHz));
    const last = Math.min(freq.length - 2, Math.floor((opts.fmax || 8000) / binHz));
    for (let k = best; k <= last; k++) if (freq[k] > freq[best]) best = k;
    const [l, c, r] = [freq[best - 1], freq[best], freq[best + 1]];
    const denom = l - 2 * c + r;
    const delta = denom !== 0 && Number.isFinite(denom) ? (0.5 * (l - r)) / denom : 0;
    freqs.push((best + delta) * binHz);
    levels.push(Number.isFinite(c) ? c : -200);
    rmss.push(level());
  }
  const median = (xs) => xs.slice().sort((x, y) => x - y)[Math.floor(xs.length / 2)];
  const rms = median(rmss);
  return { frequency: rms > 0 ? median(freqs) : 0, levelDb: median(levels), rms };
}

// ---- statistics -------------------------------------------------------------------------------

function startStats() {
  stopStats();
  state.previous = null;
  state.statsTimer = setInterval(() => { updateStats().catch((e) => record('statsError', { error: String(e) })); }, 1000);
}

function stopStats() {
  if (state.statsTimer) clearInterval(state.statsTimer);
  state.statsTimer = null;
  $('level').value = 0;
}

async function collectStats() {
  const s = state.session;
  const pc = s && s.connection;
  if (!pc) return null;
  const report = await pc.getStats();
  const out = { t: Date.now(), connectionState: pc.connectionState, inbound: null, outbound: null,
    remoteInbound: null, transport: null, pair: null, codec: null, videoIn: null, videoOut: null };
  report.forEach((r) => {
    if (r.type === 'inbound-rtp' && r.kind === 'video') out.videoIn = r;
    else if (r.type === 'outbound-rtp' && r.kind === 'video') out.videoOut = r;
    if (r.type === 'inbound-rtp' && r.kind === 'audio') out.inbound = r;
    else if (r.type === 'outbound-rtp' && r.kind === 'audio') out.outbound = r;
    else if (r.type === 'remote-inbound-rtp' && r.kind === 'audio') out.remoteInbound = r;
    else if (r.type === 'transport') out.transport = r;
  });
  const get = (id) => (id ? report.get(id) : undefined);
  const codec = get((out.inbound && out.inbound.codecId) || (out.outbound && out.outbound.codecId));
  const pair = get(out.transport && out.transport.selectedCandidatePairId);
  const cand = (id) => {
    const c = get(id);
    return c ? { address: c.address || c.ip, port: c.port, type: c.candidateType, protocol: c.protocol } : null;
  };
  const inb = out.inbound || {};
  const outb = out.outbound || {};
  const rin = out.remoteInbound || {};
  const figures = {
    t: out.t,
    connectionState: out.connectionState,
    codec: codec ? `${codec.mimeType.replace(/^audio\//, '')}/${codec.clockRate}` : null,
    packetsSent: outb.packetsSent || 0,
    packetsReceived: inb.packetsReceived || 0,
    bytesSent: outb.bytesSent || 0,
    bytesReceived: inb.bytesReceived || 0,
    packetsLost: inb.packetsLost || 0,
    jitterMs: inb.jitter !== undefined ? inb.jitter * 1000 : null,
    totalAudioEnergy: inb.totalAudioEnergy || 0,
    remoteLost: rin.packetsLost !== undefined ? rin.packetsLost : null,
    rttMs: rin.roundTripTime !== undefined ? rin.roundTripTime * 1000
      : pair && pair.currentRoundTripTime !== undefined ? pair.currentRoundTripTime * 1000 : null,
    local: pair ? cand(pair.localCandidateId) : null,
    remote: pair ? cand(pair.remoteCandidateId) : null,
    dtlsState: out.transport ? out.transport.dtlsState : null,
    srtpCipher: out.transport ? out.transport.srtpCipher : null,
    framesDecoded: out.videoIn ? out.videoIn.framesDecoded || 0 : null,
    framesSent: out.videoOut ? out.videoOut.framesSent || 0 : null,
  };
  const prev = state.previous;
  if (prev && figures.t > prev.t) {
    const dt = (figures.t - prev.t) / 1000;
    figures.kbpsOut = (8 * (figures.bytesSent - prev.bytesSent)) / dt / 1000;
    figures.kbpsIn = (8 * (figures.bytesReceived - prev.bytesReceived)) / dt / 1000;
  }
  state.previous = figures;
  return figures;
}

const fmt = (v, digits) => (v === null || v === undefined || Number.isNaN(v) ? '–' : Number(v).toFixed(digits));
const addr = (c) => (c ? `${c.address}:${c.port} (${c.type})` : '?');

async function updateStats() {
  const f = await collectStats();
  state.stats = f;
  $('level').value = Math.min(1, level() * 4);
  if (!f) return;
  const expected = f.packetsReceived + f.packetsLost;
  $('st-codec').textContent = f.codec || '–';
  $('st-packets').textContent = `${f.packetsSent} / ${f.packetsReceived}`;
  $('st-bitrate').textContent = `${fmt(f.kbpsOut, 1)} / ${fmt(f.kbpsIn, 1)} kbit/s`;
  $('st-jitter').textContent = `${fmt(f.jitterMs, 1)} ms`;
  $('st-loss').textContent = `received: ${f.packetsLost} (${fmt(expected ? (100 * f.packetsLost) / expected : 0, 1)} %)`
    + (f.remoteLost !== null ? `, sent: ${f.remoteLost}` : '');
  $('st-rtt').textContent = `${fmt(f.rttMs, 1)} ms`;
  $('st-ice').textContent = f.local || f.remote ? `${addr(f.local)} ⇄ ${addr(f.remote)}` : '–';
  $('st-dtls').textContent = f.dtlsState ? `${f.dtlsState}${f.srtpCipher ? `, ${f.srtpCipher}` : ''}` : '–';
  $('st-video').textContent = f.framesSent === null && f.framesDecoded === null ? '–'
    : `${f.framesSent === null ? '–' : f.framesSent} / ${f.framesDecoded === null ? '–' : f.framesDecoded}`;
}

// ---- messages ---------------------------------------------------------------------------------

function addMessage(who, text, note) {
  const li = document.createElement('li');
  const w = document.createElement('span');
  w.className = 'who';
  w.textContent = `${who}: `;
  const body = document.createElement('span');
  body.textContent = text;
  li.append(w, body);
  if (note) {
    const n = document.createElement('span');
    n.className = 'small';
    n.textContent = ` ${note}`;
    li.append(n);
  }
  $('messages').append(li);
  li.scrollIntoView({ block: 'nearest' });
  return li;
}

function sendMessage(ev) {
  ev.preventDefault();
  if (!state.ua) return;
  const to = targetUri($('chat-to').value);
  const text = $('chat-text').value;
  if (!text.trim()) return;
  const li = addMessage(`me → ${to}`, text, '(sending…)');
  const note = li.lastChild;
  const m = { direction: 'out', to, body: text, t: Date.now(), status: null };
  state.messages.push(m);
  state.ua.sendMessage(to, text, {
    contentType: 'text/plain',
    eventHandlers: {
      succeeded: (e) => { m.status = e.response ? e.response.status_code : 200; note.textContent = ' (delivered)'; },
      failed: (e) => {
        m.status = e.response ? e.response.status_code : null;
        note.textContent = ` (not delivered: ${e.cause})`;
      },
    },
  });
  $('chat-text').value = '';
}

function onMessage(e) {
  if (e.originator !== 'remote') return;
  const from = String(e.request.from.uri);
  const body = e.request.body || '';
  state.messages.push({ direction: 'in', from, body, t: Date.now() });
  record('message', { from });
  addMessage(from, body);
  if (!$('chat-to').value) $('chat-to').value = from;
}

// ---- start ------------------------------------------------------------------------------------

async function init() {
  const prefs = loadPrefs();
  $('user').value = prefs.user || '';
  $('display-name').value = prefs.displayName || '';
  $('server').value = prefs.server || defaultServer();
  $('target').value = prefs.target || '';
  state.video = !!prefs.video;
  setVideoButton();
  try {
    const res = await fetch('/api/config', { cache: 'no-store' });
    const config = await res.json();
    $('domain').value = prefs.domain || config.domain;
    $('version').textContent = `rtc2sip ${config.version}`;
    if (!config.auth_required) $('password').placeholder = 'not needed on this gateway';
  } catch (e) {
    $('domain').value = prefs.domain || location.hostname;
  }
  state.domain = $('domain').value;
  if (new URLSearchParams(location.search).has('debug')) JsSIP.debug.enable('JsSIP:*');
  else JsSIP.debug.disable();
  $('register-form').addEventListener('submit', register);
  $('unregister').addEventListener('click', unregister);
  $('call-form').addEventListener('submit', placeCall);
  $('answer').addEventListener('click', answer);
  $('decline').addEventListener('click', decline);
  $('hangup').addEventListener('click', hangup);
  $('hold').addEventListener('click', () => toggleHold());
  $('mute').addEventListener('click', toggleMute);
  $('video').addEventListener('click', () => { toggleVideo(); });
  $('keypad').addEventListener('click', sendTone);
  $('chat-form').addEventListener('submit', sendMessage);
  window.addEventListener('beforeunload', () => { hangup(); stopUa(); });
  document.body.dataset.ready = 'true';
}

window.rtc2sipPhone = {
  state() {
    const s = state.session;
    return {
      registered: state.ua ? state.ua.isRegistered() : false,
      connected: state.ua ? state.ua.isConnected() : false,
      ringing: !!state.incoming,
      call: s ? { peer: state.peer, established: s.isEstablished(), ended: s.isEnded(),
        hold: s.isOnHold(), muted: s.isMuted().audio, video: !!videoSender(s),
        videoSending: !!(videoSender(s) && videoSender(s).track.enabled) } : null,
      video: state.video,
    };
  },
  stats: () => collectStats(),
  tone,
  events: (since) => state.events.slice(since || 0),
  messages: () => state.messages.slice(),
  version: () => JsSIP.version,
};

if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
else init();
