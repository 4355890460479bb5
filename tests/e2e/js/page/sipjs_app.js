// The test phone on SIP.js 0.21: the same window.rtc as app.js (JsSIP), so that the Python Browser
// drives either, and the same events (registered, incoming, progress, accepted, confirmed, ended,
// failed, sdp, track, dtmf, info, reinvite, hold, unhold, refer*, message...). Built on SIP.js's
// UserAgent/Registerer/Inviter/Invitation API with its default Web SessionDescriptionHandler, doing
// what SIP.js's own SimpleUser/SessionManager do for hold (re-INVITE with the SDH option `hold`)
// and DTMF (INFO application/dtmf-relay, or RFC 4733 through the SDH's RTCDTMFSender).
'use strict';

(function () {
  const { UserAgent, Registerer, RegistererState, Inviter, SessionState, Messager, Web } = SIP;

  const state = {
    ua: null,
    registerer: null,
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
    nextPcConfig: null,
  };

  function now() { return Date.now(); }

  function record(type, data) {
    const ev = Object.assign({ type, t: now() }, data || {});
    state.events.push(ev);
    console.log('[rtc] ' + JSON.stringify(ev).slice(0, 2000));
  }

  function pcConfig(opts) {
    // SIP.js's default has Google's STUN server: nothing to reach in a test, and a slower gathering.
    return Object.assign({ iceServers: [] }, (opts && opts.pcConfig) || {});
  }

  function watchConnection(pc) {
    if (!pc || pc.__rtcWatched) return;
    pc.__rtcWatched = true;
    pc.addEventListener('track', (e) => {
      record('track', { kind: e.track.kind });
      if (e.track.kind !== 'audio') return;
      const stream = e.streams && e.streams[0] ? e.streams[0] : new MediaStream([e.track]);
      state.remoteStream = stream;
      window.rtcMedia.ensureAnalyser(state, stream, record);
    });
    pc.addEventListener('iceconnectionstatechange', () => record('iceconnectionstate', { state: pc.iceConnectionState }));
    pc.addEventListener('connectionstatechange', () => record('connectionstate', { state: pc.connectionState }));
  }

  function sdpDirection(sdp) {
    const m = /a=(sendrecv|sendonly|recvonly|inactive)/.exec(sdp || '');
    return m ? m[1] : 'sendrecv';
  }

  // SIP.js's default SDH, with every SDP it makes or takes reported (and restricted to the page's
  // codecs), and the peer connection watched. The codecs of the session the SDH belongs to win.
  function sdhFactory(session, options) {
    const pc = state.nextPcConfig || pcConfig({});
    const sdh = Web.defaultSessionDescriptionHandlerFactory()(session, Object.assign({}, options, { peerConnectionConfiguration: pc }));
    watchConnection(sdh.peerConnection);
    const codecs = () => (session.__rtcCodecs !== undefined ? session.__rtcCodecs : state.codecs);
    const restrict = (d) => Promise.resolve(Object.assign({}, d, { sdp: window.rtcMedia.filterCodecs(d.sdp, codecs()) }));
    const getDescription = sdh.getDescription.bind(sdh);
    sdh.getDescription = (opts, modifiers) => getDescription(opts, (modifiers || []).concat([restrict])).then((d) => {
      record('sdp', { originator: 'local', sdp: d.body, direction: sdpDirection(d.body) });
      return d;
    });
    const setDescription = sdh.setDescription.bind(sdh);
    sdh.setDescription = (sdp, opts, modifiers) => {
      const filtered = window.rtcMedia.filterCodecs(sdp, codecs());
      record('sdp', { originator: 'remote', sdp: filtered, direction: sdpDirection(filtered) });
      return setDescription(filtered, opts, modifiers);
    };
    return sdh;
  }

  function sdhOptions() {
    return { constraints: { audio: true, video: false } };
  }

  // Reports the life of a session as app.js does for JsSIP's: SIP.js only has state changes, so
  // "failed" is a session that ended before it was established, "ended" one that ended after.
  function watchSession(session, direction, codecs) {
    state.session = session;
    state.sessions.push(session);
    if (codecs !== undefined) session.__rtcCodecs = codecs;
    let established = false;
    session.stateChange.addListener((s) => {
      record('sessionstate', { state: s });
      if (s === SessionState.Established) {
        established = true;
        if (direction === 'incoming') record('accepted', {});
        record('confirmed', {});
      } else if (s === SessionState.Terminated) {
        const originator = session.__rtcLocalEnd ? 'local' : 'remote';
        if (established) record('ended', { originator, cause: session.__rtcCause || null });
        // a cancelled Inviter is Terminated at once: its failure is the 487, reported by onReject
        else if (!session.__rtcFailed && !session.__rtcCancelled) record('failed', { originator, cause: session.__rtcCause || 'terminated', status: null });
      }
    });
    session.delegate = {
      onInfo(info) {
        const ct = info.request.getHeader('Content-Type') || '';
        const body = info.request.body || '';
        // as SessionManager does: application/dtmf-relay is a digit, anything else an INFO
        const m = /^application\/dtmf-relay/i.test(ct) ? /Signal\s*=\s*([0-9A-D#*])/i.exec(body) : null;
        if (m) record('dtmf', { originator: 'remote', tone: m[1] });
        else record('info', { originator: 'remote', contentType: ct, body });
        info.accept();
      },
      onInvite(request, response, statusCode) {
        record('reinvite', { status: statusCode, direction: sdpDirection(request.body) });
        const d = sdpDirection(request.body);
        if (d === 'sendonly' || d === 'inactive') record('hold', { originator: 'remote' });
        else record('unhold', { originator: 'remote' });
      },
      onRefer(referral) {
        const target = referral.referTo.uri.toString();
        record('refer', { target, referredBy: referral.referredBy || null });
        if (!state.acceptRefer) { referral.reject(); return; }
        // The new call becomes the page's current call (stats, tone, hangup apply to it).
        referral.accept().then(() => {
          const inviter = referral.makeInviter({ sessionDescriptionHandlerOptions: sdhOptions() });
          watchSession(inviter, 'outgoing', undefined);
          return inviter.invite();
        }).catch((e) => record('referError', { error: String(e) }));
      },
      onMessage(message) {
        const m = { from: message.request.from.uri.toString(), to: message.request.to.uri.toString(),
          body: message.request.body, contentType: message.request.getHeader('Content-Type'), t: now(), inDialog: true };
        state.messages.push(m);
        record('message', m);
        message.accept();
      },
    };
    record('session', { direction, remote: session.remoteIdentity ? session.remoteIdentity.uri.toString() : null });
  }

  function current() {
    if (!state.session) throw new Error('no call');
    return state.session;
  }

  const api = {
    // Connect (and by default register) a user agent. Resolves once registered (or connected when
    // register is false); rejects on registration failure.
    async register(opts) {
      if (state.ua) throw new Error('already started; call stop() first');
      state.codecs = opts.codecs || null;
      state.autoAnswer = opts.autoAnswer ? opts : null;
      state.acceptRefer = opts.acceptRefer ? opts : null;
      const uri = UserAgent.makeURI(opts.uri);
      if (!uri) throw new Error('bad uri ' + opts.uri);
      const uaOptions = {
        uri,
        transportOptions: { server: opts.wsUrl, traceSip: true },
        authorizationUsername: opts.authorizationUser || (opts.password ? uri.user : undefined),
        authorizationPassword: opts.password || undefined,
        displayName: opts.displayName || undefined,
        userAgentString: 'rtc2sip-e2e (SIP.js ' + SIP.version + ')',
        logLevel: opts.debug === false ? 'warn' : 'debug',
        sessionDescriptionHandlerFactory: sdhFactory,
        delegate: {
          onConnect: () => record('connected', {}),
          onDisconnect: (e) => record('disconnected', { reason: e ? String(e) : null }),
          onInvite: (invitation) => {
            state.nextPcConfig = pcConfig(state.autoAnswer || {});
            watchSession(invitation, 'incoming', undefined);
            const req = invitation.request;
            record('incoming', { from: req.from.uri.toString(), to: req.to.uri.toString() });
            if (state.autoAnswer) invitation.accept({ sessionDescriptionHandlerOptions: sdhOptions() });
          },
          onMessage: (message) => {
            const m = {
              from: message.request.from.uri.toString(),
              to: message.request.to.uri.toString(),
              body: message.request.body,
              contentType: message.request.getHeader('Content-Type'),
              t: now(),
            };
            state.messages.push(m);
            record('message', m);
            message.accept();
          },
        },
      };
      if (opts.contactParams) uaOptions.contactParams = Object.assign({ transport: 'ws' }, opts.contactParams);
      if (opts.instanceId) uaOptions.instanceId = opts.instanceId;
      if (opts.uaOptions) Object.assign(uaOptions, opts.uaOptions);
      const ua = new UserAgent(uaOptions);
      state.ua = ua;
      await ua.start();
      if (opts.register === false) return { connected: true };
      const registerer = new Registerer(ua, Object.assign({
        expires: opts.registerExpires || 600,
        extraHeaders: opts.registerHeaders || [],
      }, opts.registererOptions || {}));
      state.registerer = registerer;
      registerer.stateChange.addListener((s) => {
        record('registererstate', { state: s });
        if (s === RegistererState.Unregistered) record('unregistered', {});
      });
      return new Promise((resolve, reject) => {
        registerer.register({
          requestDelegate: {
            onAccept: (response) => {
              const msg = response.message;
              record('registered', { status: msg.statusCode, contact: msg.getHeaders('contact') });
              resolve({ registered: true, status: msg.statusCode });
            },
            onReject: (response) => {
              const msg = response.message;
              record('registrationFailed', { status: msg.statusCode, cause: msg.reasonPhrase });
              reject(new Error(JSON.stringify({ registrationFailed: msg.reasonPhrase, status: msg.statusCode })));
            },
          },
        }).catch((e) => reject(e));
      });
    },

    async unregister() {
      await state.registerer.unregister();
      return true;
    },

    async stop() {
      if (state.ua) await state.ua.stop();
      state.ua = null;
      return true;
    },

    // Start a call; progress is reported through events() (progress, accepted, confirmed, failed, ended).
    call(target, opts) {
      opts = opts || {};
      const uri = UserAgent.makeURI(target);
      if (!uri) throw new Error('bad target ' + target);
      state.nextPcConfig = pcConfig(opts);
      const inviter = new Inviter(state.ua, uri, {
        sessionDescriptionHandlerOptions: sdhOptions(),
        extraHeaders: opts.extraHeaders || [],
        // SIP.js ignores the SDP of a provisional response unless asked (JsSIP always takes it)
        earlyMedia: opts.earlyMedia === true,
      });
      watchSession(inviter, 'outgoing', opts.codecs);
      inviter.invite({
        requestDelegate: {
          onProgress: (r) => record('progress', { status: r.message.statusCode }),
          onAccept: (r) => record('accepted', { status: r.message.statusCode }),
          onReject: (r) => {
            inviter.__rtcFailed = true;
            record('failed', { originator: 'remote', cause: r.message.reasonPhrase, status: r.message.statusCode });
          },
        },
      }).catch((e) => record('inviteError', { error: String(e) }));
      return { id: inviter.id };
    },

    answer(opts) {
      opts = opts || {};
      const s = state.session;
      if (!s || !(s instanceof SIP.Invitation) || s.state !== SessionState.Initial) throw new Error('no incoming call to answer');
      if (opts.codecs !== undefined) s.__rtcCodecs = opts.codecs;
      s.accept({ sessionDescriptionHandlerOptions: sdhOptions(), extraHeaders: opts.extraHeaders || [] })
        .catch((e) => record('answerError', { error: String(e) }));
      return true;
    },

    hangup(opts) {
      opts = opts || {};
      const s = state.session;
      if (!s || s.state === SessionState.Terminated || s.state === SessionState.Terminating) return false;
      s.__rtcLocalEnd = true;
      s.__rtcCause = opts.statusCode ? 'status ' + opts.statusCode : 'hangup';
      let done;
      if (s.state === SessionState.Established) done = s.bye();
      else if (s instanceof Inviter) { s.__rtcCancelled = true; done = s.cancel(); }
      else done = s.reject(opts.statusCode ? { statusCode: opts.statusCode } : undefined);
      done.catch((e) => record('hangupError', { error: String(e) }));
      return true;
    },

    // Hold / unhold as SIP.js's SessionManager.setHold does: a re-INVITE whose offer the SDH makes
    // sendonly (or inactive) with its `hold` option, and the local tracks disabled while held.
    // Resolves once the peer accepted the offer. {useUpdate} is JsSIP's: SIP.js has no UPDATE.
    hold() { return setHold(true); },

    unhold() { return setHold(false); },

    isOnHold() { return Boolean(state.session && state.session.__rtcHeld); },

    // Blind transfer: REFER the peer of the current call to target. Progress is reported as events
    // referRequestSucceeded/referRequestFailed (the 202), referProgress/referAccepted/referFailed (NOTIFYs).
    refer(target) {
      const uri = UserAgent.makeURI(target);
      if (!uri) throw new Error('bad target ' + target);
      current().refer(uri, {
        requestDelegate: {
          onAccept: (r) => record('referRequestSucceeded', { status: r.message.statusCode }),
          onReject: (r) => record('referRequestFailed', { status: r.message.statusCode, cause: r.message.reasonPhrase }),
        },
        onNotify: (notification) => {
          const m = /^SIP\/2\.0 (\d{3})/.exec(notification.request.body || '');
          const status = m ? Number(m[1]) : null;
          notification.accept();
          if (status === null || status < 200) record('referProgress', { status });
          else if (status < 300) record('referAccepted', { status });
          else record('referFailed', { status });
        },
      }).catch((e) => record('referError', { error: String(e) }));
      return true;
    },

    // "RFC2833": RFC 4733 events in the audio stream through the SDH (RTCDTMFSender.insertDTMF);
    // "INFO": one INFO application/dtmf-relay per digit, with the body SessionManager.sendDTMF
    // sends (its Duration is 2000 ms unless options.duration), a digit every interToneGap ms
    // (default 200) without waiting for the previous INFO's answer, as a SimpleUser keypad does
    // when keys are pressed quickly. Returns at once; each answer is a dtmfSent/dtmfFailed event.
    async sendDTMF(tones, opts) {
      opts = opts || {};
      const s = current();
      if ((opts.transportType || 'RFC2833') === 'RFC2833') {
        if (!s.sessionDescriptionHandler.sendDtmf(tones, { duration: opts.duration, interToneGap: opts.interToneGap })) {
          throw new Error('sendDtmf refused');
        }
        return true;
      }
      const press = async () => {
        for (const tone of tones) {
          const body = { contentDisposition: 'render', contentType: 'application/dtmf-relay',
            content: 'Signal=' + tone + '\r\nDuration=' + (opts.duration || 2000) };
          s.info({ requestOptions: { body }, requestDelegate: {
            onAccept: (r) => record('dtmfSent', { tone, status: r.message.statusCode }),
            onReject: (r) => record('dtmfFailed', { tone, status: r.message.statusCode }),
          } }).catch((e) => record('dtmfFailed', { tone, error: String(e) }));
          await new Promise((r) => setTimeout(r, opts.interToneGap || 200));
        }
      };
      press();
      return true;
    },

    sendMessage(target, body, opts) {
      opts = opts || {};
      const uri = UserAgent.makeURI(target);
      if (!uri) throw new Error('bad target ' + target);
      return new Promise((resolve) => {
        const messager = new Messager(state.ua, uri, body, opts.contentType || 'text/plain', { extraHeaders: opts.extraHeaders || [] });
        messager.message({
          requestDelegate: {
            onAccept: (r) => resolve({ ok: true, status: r.message.statusCode }),
            onReject: (r) => resolve({ ok: false, cause: r.message.reasonPhrase, status: r.message.statusCode }),
          },
        }).catch((e) => resolve({ ok: false, cause: String(e), status: null }));
      });
    },

    messages() { return state.messages; },

    events(since) { return state.events.slice(since || 0); },

    state() {
      const s = state.session;
      return {
        registered: state.registerer ? state.registerer.state === RegistererState.Registered : false,
        connected: state.ua ? state.ua.isConnected() : false,
        session: s ? { direction: s instanceof Inviter ? 'outgoing' : 'incoming', state: s.state,
          established: s.state === SessionState.Established, ended: s.state === SessionState.Terminated } : null,
      };
    },

    stats() {
      const s = state.session;
      const sdh = s && s.sessionDescriptionHandler;
      return window.rtcMedia.stats(sdh && sdh.peerConnection);
    },

    tone(opts) { return window.rtcMedia.tone(state, opts); },
  };

  function enableTracks(s, enable) {
    const pc = s.sessionDescriptionHandler && s.sessionDescriptionHandler.peerConnection;
    if (!pc) return;
    pc.getSenders().forEach((t) => { if (t.track) t.track.enabled = enable; });
    pc.getReceivers().forEach((t) => { if (t.track) t.track.enabled = enable; });
  }

  function setHold(hold) {
    const s = current();
    return new Promise((resolve, reject) => {
      s.sessionDescriptionHandlerOptionsReInvite = Object.assign({}, s.sessionDescriptionHandlerOptionsReInvite, { hold });
      s.invite({
        requestDelegate: {
          onAccept: () => {
            s.__rtcHeld = hold;
            enableTracks(s, !hold);
            record(hold ? 'hold' : 'unhold', { originator: 'local' });
            resolve(true);
          },
          onReject: (r) => reject(new Error('re-INVITE rejected: ' + r.message.statusCode)),
        },
      }).catch(reject);
    });
  }

  window.rtc = api;
})();
