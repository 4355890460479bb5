// The test phone: JsSIP in a page, driven through window.rtc by driver.mjs (from Python).
// Everything returned is plain JSON. One page = one user agent with at most one current call.
'use strict';

(function () {
  const state = {
    ua: null,
    session: null,
    sessions: [],
    events: [],
    messages: [],
    audioCtx: null,
    analyser: null,
    remoteStream: null,
    codecs: null,
    autoAnswer: null,
    acceptRefer: null,
  };

  function now() { return Date.now(); }

  function record(type, data) {
    const ev = Object.assign({ type, t: now() }, data || {});
    state.events.push(ev);
    console.log('[rtc] ' + JSON.stringify(ev).slice(0, 2000));
  }

  const { filterCodecs } = window.rtcMedia;
  const ensureAnalyser = (stream) => window.rtcMedia.ensureAnalyser(state, stream, record);

  function watchConnection(session, pc) {
    if (!pc || pc.__rtcWatched) return;
    pc.__rtcWatched = true;
    pc.addEventListener('track', (e) => {
      record('track', { kind: e.track.kind });
      if (e.track.kind !== 'audio') return;
      const stream = e.streams && e.streams[0] ? e.streams[0] : new MediaStream([e.track]);
      state.remoteStream = stream;
      ensureAnalyser(stream);
    });
    pc.addEventListener('iceconnectionstatechange', () => record('iceconnectionstate', { state: pc.iceConnectionState }));
    pc.addEventListener('connectionstatechange', () => record('connectionstate', { state: pc.connectionState }));
  }

  function watchSession(session, direction, codecs) {
    state.session = session;
    state.sessions.push(session);
    session.on('peerconnection', (e) => watchConnection(session, e.peerconnection));
    if (session.connection) watchConnection(session, session.connection);
    session.on('sdp', (e) => {
      const c = codecs !== undefined ? codecs : state.codecs;
      e.sdp = filterCodecs(e.sdp, c);
      record('sdp', { originator: e.originator, sdpType: e.type, sdp: e.sdp });
    });
    session.on('progress', (e) => record('progress', { status: e.response ? e.response.status_code : null }));
    session.on('accepted', () => record('accepted', {}));
    session.on('confirmed', () => record('confirmed', {}));
    session.on('ended', (e) => record('ended', { originator: e.originator, cause: e.cause }));
    session.on('failed', (e) => record('failed', {
      originator: e.originator, cause: e.cause, status: e.message && e.message.status_code ? e.message.status_code : null,
    }));
    session.on('getusermediafailed', (e) => record('getusermediafailed', { error: String(e) }));
    session.on('newDTMF', (e) => record('dtmf', { originator: e.originator, tone: e.dtmf.tone }));
    session.on('newInfo', (e) => record('info', { originator: e.originator, contentType: e.info.contentType, body: e.info.body }));
    session.on('reinvite', () => record('reinvite', {}));
    session.on('hold', (e) => record('hold', { originator: e.originator }));
    session.on('unhold', (e) => record('unhold', { originator: e.originator }));
    session.on('refer', (e) => {
      const target = e.request.refer_to ? e.request.refer_to.uri.toString() : null;
      record('refer', { target, referredBy: e.request.getHeader('Referred-By') || null });
      if (!state.acceptRefer) { e.reject(); return; }
      // The new call becomes the page's current call (stats, tone, hangup apply to it).
      e.accept((s) => watchSession(s, 'outgoing', undefined), answerOptions(state.acceptRefer));
    });
    // An INVITE with Replaces naming this session (RFC 3891, attended transfer): JsSIP asks first;
    // accepting starts a new incoming session (answered like any other) that ends this one once confirmed.
    session.on('replaces', (e) => {
      record('replaces', { replaces: e.request.getHeader('Replaces'), from: e.request.from.uri.toString() });
      e.accept();
    });
    record('session', { direction, remote: session.remote_identity ? session.remote_identity.uri.toString() : null });
  }

  function pcConfig(opts) {
    return Object.assign({ iceServers: [], bundlePolicy: 'max-bundle', rtcpMuxPolicy: 'require' }, opts.pcConfig || {});
  }

  function answerOptions(opts) {
    return {
      mediaConstraints: { audio: true, video: false },
      pcConfig: pcConfig(opts),
      extraHeaders: opts.extraHeaders || [],
    };
  }

  const api = {
    // Connect (and by default register) a user agent. Resolves once registered (or connected when
    // register is false); rejects on registration failure.
    register(opts) {
      if (state.ua) throw new Error('already started; call stop() first');
      if (opts.debug !== false) JsSIP.debug.enable('JsSIP:*');
      state.codecs = opts.codecs || null;
      state.autoAnswer = opts.autoAnswer ? opts : null;
      state.acceptRefer = opts.acceptRefer ? opts : null;
      const socket = new JsSIP.WebSocketInterface(opts.wsUrl);
      const config = {
        sockets: [socket],
        uri: opts.uri,
        password: opts.password || undefined,
        authorization_user: opts.authorizationUser || undefined,
        // A Contact URI of our own (every request's Contact, not only REGISTER's): webrtc2sip clients put
        // impi/ha1 there for the gateway.
        contact_uri: opts.contactUri || undefined,
        display_name: opts.displayName || undefined,
        register: opts.register !== false,
        register_expires: opts.registerExpires || 600,
        session_timers: opts.sessionTimers === true,
        user_agent: 'rtc2sip-e2e (JsSIP ' + JsSIP.version + ')',
        connection_recovery_min_interval: 1,
        connection_recovery_max_interval: 3,
      };
      const ua = new JsSIP.UA(config);
      state.ua = ua;
      if (opts.contactParams) ua.registrator().setExtraContactParams(opts.contactParams);
      if (opts.contactUri) {
        // The registrar's pub-gruu would replace our Contact (and its parameters) in every dialog:
        // keep the URI we were given, as a webrtc2sip client (sipML5) does.
        const contact = ua.contact;
        const plain = contact.toString;
        contact.toString = function (o) {
          const gruu = this.pub_gruu;
          this.pub_gruu = null;
          try { return plain.call(this, o); } finally { this.pub_gruu = gruu; }
        };
      }
      if (opts.registerHeaders) ua.registrator().setExtraHeaders(opts.registerHeaders);
      ua.on('connecting', () => record('connecting', {}));
      ua.on('connected', () => record('connected', {}));
      ua.on('disconnected', (e) => record('disconnected', { code: e && e.code, reason: e && e.reason }));
      ua.on('registered', (e) => record('registered', { status: e.response.status_code, contact: e.response.getHeaders('Contact') }));
      ua.on('unregistered', () => record('unregistered', {}));
      ua.on('registrationFailed', (e) => record('registrationFailed', {
        cause: e.cause, status: e.response ? e.response.status_code : null,
      }));
      ua.on('newRTCSession', (e) => {
        if (e.originator !== 'remote') return;
        watchSession(e.session, 'incoming', undefined);
        record('incoming', { from: e.request.from.uri.toString(), to: e.request.to.uri.toString() });
        if (state.autoAnswer) e.session.answer(answerOptions(state.autoAnswer));
      });
      ua.on('newMessage', (e) => {
        if (e.originator !== 'remote') return;
        const m = {
          from: e.request.from.uri.toString(),
          to: e.request.to.uri.toString(),
          body: e.request.body,
          contentType: e.request.getHeader('Content-Type'),
          t: now(),
        };
        state.messages.push(m);
        record('message', m);
      });
      return new Promise((resolve, reject) => {
        const done = (ok, value) => (ok ? resolve(value) : reject(new Error(JSON.stringify(value))));
        // A refused or dropped WebSocket would otherwise only show as a timeout: JsSIP retries forever.
        if (opts.failOnDisconnect !== false) {
          ua.once('disconnected', (e) => done(false, { disconnected: true, code: e && e.code, reason: e && e.reason }));
        }
        if (config.register) {
          ua.once('registered', (e) => done(true, { registered: true, status: e.response.status_code }));
          ua.once('registrationFailed', (e) => done(false, { registrationFailed: e.cause, status: e.response ? e.response.status_code : null }));
        } else {
          ua.once('connected', () => done(true, { connected: true }));
        }
        ua.start();
      });
    },

    unregister() {
      return new Promise((resolve) => {
        state.ua.once('unregistered', () => resolve(true));
        state.ua.unregister({ all: false });
      });
    },

    stop() {
      if (state.ua) state.ua.stop();
      state.ua = null;
      return true;
    },

    // Start a call; progress is reported through events() (progress, accepted, confirmed, failed, ended).
    call(target, opts) {
      opts = opts || {};
      const session = state.ua.call(target, {
        mediaConstraints: { audio: true, video: false },
        pcConfig: pcConfig(opts),
        extraHeaders: opts.extraHeaders || [],
        rtcOfferConstraints: { offerToReceiveAudio: true, offerToReceiveVideo: false },
        eventHandlers: {
          peerconnection: (e) => watchConnection(null, e.peerconnection),
        },
      });
      watchSession(session, 'outgoing', opts.codecs);
      return { id: session.id };
    },

    answer(opts) {
      opts = opts || {};
      const s = state.session;
      if (!s || s.direction !== 'incoming' || !s.isInProgress()) throw new Error('no incoming call to answer');
      if (opts.codecs !== undefined) state.codecs = opts.codecs;
      s.answer(answerOptions(opts));
      return true;
    },

    hangup(opts) {
      opts = opts || {};
      const s = state.session;
      if (!s || s.isEnded()) return false;
      s.terminate(opts.statusCode ? { status_code: opts.statusCode } : undefined);
      return true;
    },

    // Hold / unhold the current call (re-INVITE, or UPDATE with {useUpdate: true}); resolves once the
    // peer answered the offer.
    hold(opts) {
      return new Promise((resolve, reject) => {
        if (!state.session.hold(opts || {}, () => resolve(true))) reject(new Error('hold() refused'));
      });
    },

    unhold(opts) {
      return new Promise((resolve, reject) => {
        if (!state.session.unhold(opts || {}, () => resolve(true))) reject(new Error('unhold() refused'));
      });
    },

    isOnHold() { return state.session.isOnHold(); },

    // Blind transfer: REFER the peer of the current call to target. Progress is reported as events
    // referRequestSucceeded/referRequestFailed (the 202), referProgress/referAccepted/referFailed (NOTIFYs).
    refer(target, opts) {
      const sub = state.session.refer(target, Object.assign({}, opts || {}));
      if (!sub) throw new Error('refer() refused');
      sub.on('requestSucceeded', (e) => record('referRequestSucceeded', { status: e.response.status_code }));
      sub.on('requestFailed', (e) => record('referRequestFailed', { status: e.response ? e.response.status_code : null, cause: e.cause }));
      sub.on('trying', (e) => record('referProgress', { status: e.status_line ? e.status_line.status_code : null }));
      sub.on('progress', (e) => record('referProgress', { status: e.status_line ? e.status_line.status_code : null }));
      sub.on('accepted', (e) => record('referAccepted', { status: e.status_line ? e.status_line.status_code : null }));
      sub.on('failed', (e) => record('referFailed', { status: e.status_line ? e.status_line.status_code : null }));
      return true;
    },

    sendDTMF(tones, opts) {
      state.session.sendDTMF(tones, Object.assign({ transportType: 'RFC2833' }, opts || {}));
      return true;
    },

    sendMessage(target, body, opts) {
      opts = opts || {};
      return new Promise((resolve) => {
        state.ua.sendMessage(target, body, {
          contentType: opts.contentType || 'text/plain',
          extraHeaders: opts.extraHeaders || [],
          eventHandlers: {
            succeeded: (e) => resolve({ ok: true, status: e.response ? e.response.status_code : null }),
            failed: (e) => resolve({ ok: false, cause: e.cause, status: e.response ? e.response.status_code : null }),
          },
        });
      });
    },

    messages() { return state.messages; },

    events(since) { return state.events.slice(since || 0); },

    state() {
      const s = state.session;
      return {
        registered: state.ua ? state.ua.isRegistered() : false,
        connected: state.ua ? state.ua.isConnected() : false,
        session: s ? { direction: s.direction, established: s.isEstablished(), ended: s.isEnded(), inProgress: s.isInProgress() } : null,
      };
    },

    // The evidence that media flowed: RTCPeerConnection.getStats() of the current call, flattened.
    stats() { return window.rtcMedia.stats(state.session && state.session.connection); },

    tone(opts) { return window.rtcMedia.tone(state, opts); },
  };

  window.rtc = api;
})();
