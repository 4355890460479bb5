// rtc2sip's live view (/calls): registrations, calls in progress with both legs and small time plots
// (inline SVG sparklines of jitter, loss and bitrate per leg), ended calls with their quality summary.
// Reads /api/calls and /api/registrations every second, and /api/calls/{id}/history of the first
// PLOTTED calls in progress (described by /openapi.json); shows the RTP diagnostics' verdicts. Served by
// the admin listener ([admin]; /api/config says "admin": {"actions": true}) it records or forwards a call on
// demand (POST and DELETE /api/calls/{id}/recording|forward); on the public WebSocket port it is read-only
// and its buttons say where the admin listener is. Everything from the wire (URIs, user agents) is written
// as text, never as HTML.
'use strict';

(function () {
  const TOKEN = 'rtc2sip.adminToken';
  const $ = (id) => document.getElementById(id);
  const PLOTTED = 10; // calls in progress whose time series are fetched and drawn, each second
  const SVG = 'http://www.w3.org/2000/svg';
  const live = { last: null, registrations: null, histories: {}, updates: 0, error: null, config: null };
  window.rtc2sipLiveView = live;

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null) continue;
      if (k === 'class') e.className = v;
      else if (k.startsWith('data-')) e.setAttribute(k, v);
      else e[k] = v;
    }
    for (const c of children) e.append(c === null || c === undefined ? '' : c);
    return e;
  }

  const num = (v, digits) => (v === null || v === undefined ? '–' : Number(v).toFixed(digits || 0));
  const bytes = (v) => (v >= 1e6 ? `${(v / 1e6).toFixed(1)} MB` : v >= 1e3 ? `${(v / 1e3).toFixed(1)} kB` : `${v} B`);
  const duration = (s) => {
    const t = Math.round(s);
    return `${Math.floor(t / 60)}:${String(t % 60).padStart(2, '0')}`;
  };
  const td = (field, text, cls) => el('td', { 'data-field': field, class: cls }, text);

  async function get(path) {
    const headers = {};
    const token = sessionStorage.getItem(TOKEN);
    if (token) headers.Authorization = `Bearer ${token}`;
    const res = await fetch(path, { headers, cache: 'no-store' });
    if (res.status === 401 || res.status === 403) {
      const err = new Error(await errorText(res));
      err.status = res.status;
      throw err;
    }
    if (!res.ok) throw new Error(`${path}: HTTP ${res.status}`);
    return res.json();
  }

  async function errorText(res) {
    const type = res.headers.get('Content-Type') || '';
    if (type.startsWith('application/json')) {
      const body = await res.json().catch(() => ({}));
      return body.error || `HTTP ${res.status}`;
    }
    return (await res.text()).trim() || `HTTP ${res.status}`;
  }

  // An action on a call, on the admin listener: POST (start, a JSON body) or DELETE (stop). A JSON body
  // and no CORS: a page of another origin cannot make the browser send one.
  async function act(method, path, body) {
    const headers = {};
    const token = sessionStorage.getItem(TOKEN);
    if (token) headers.Authorization = `Bearer ${token}`;
    const init = { method, headers, cache: 'no-store' };
    if (method === 'POST') {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body || {});
    }
    const res = await fetch(path, init);
    if (!res.ok) throw new Error(await errorText(res));
    return res.json();
  }

  // Why the buttons are off here, or null when they work (served by the admin listener).
  function actionsOff() {
    const admin = live.config && live.config.admin;
    if (!admin) return 'Actions: waiting for /api/config';
    if (admin.actions) return null;
    return admin.url ? `Actions are on the admin listener: ${admin.url}` : 'Actions need the admin listener, which is off ([admin] listen)';
  }

  function legRow(leg) {
    const m = leg.media || {};
    let path = '–';
    let security = '–';
    if (leg.webrtc && m.ice) {
      path = `${m.ice.local || '?'} ⇄ ${m.ice.remote || '(no pair yet)'}`;
      security = m.dtls ? `DTLS ${m.dtls.state}${m.dtls.srtp_profile ? `, ${m.dtls.srtp_profile}` : ''}` : '–';
    } else if (!leg.webrtc && leg.media) {
      path = `→ ${m.remote || '?'}${m.latched ? ' (latched)' : ''}`;
      // RTP diagnostics: packets came from another address than the SDP announced
      if (m.nat) path += ` · NAT: SDP announced ${m.announced}, symmetric RTP used`;
      security = m.srtp ? 'SRTP (SDES)' : 'RTP';
    }
    return el('tr', { 'data-leg': leg.name, 'data-role': leg.role },
      el('th', { scope: 'row' }, `${leg.name} (${leg.role})`),
      td('peer', leg.peer_uri),
      td('address', `${leg.transport || '?'} ${leg.address || ''}`),
      td('dialog', leg.dialog),
      td('codec', leg.codec || '–'),
      td('packets_in', num(m.packets_in), 'num'),
      td('packets_out', num(m.packets_out), 'num'),
      td('bytes', leg.media ? `${bytes(m.bytes_in)} / ${bytes(m.bytes_out)}` : '–', 'num'),
      td('lost', num(m.lost), 'num'),
      td('jitter_ms', leg.media ? `${num(m.jitter_ms, 1)} ms` : '–', 'num'),
      td('rtt_ms', m.rtt_ms === null || m.rtt_ms === undefined ? '–' : `${num(m.rtt_ms, 1)} ms`, 'num'),
      td('path', path),
      td('security', security));
  }

  // ---- sparklines ------------------------------------------------------------------------------

  function svg(tag, attrs, ...children) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    for (const c of children) e.append(c);
    return e;
  }

  // One small plot: a polyline per series (values: numbers or null for unknown), scaled from 0 to the
  // largest value shown (at least `floor`, so that a flat line of small values stays low).
  function sparkline(leg, metric, label, unit, lines, floor) {
    const W = 120;
    const H = 28;
    const n = Math.max(0, ...lines.map((l) => l.values.length));
    const known = lines.flatMap((l) => l.values.filter((v) => v !== null && Number.isFinite(v)));
    const top = Math.max(floor, ...known);
    const x = (i) => (n <= 1 ? 0 : (i * W) / (n - 1));
    const y = (v) => H - 1 - (v / top) * (H - 2);
    const plot = svg('svg', { class: 'spark', viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: 'img',
      'data-leg': leg, 'data-metric': metric, 'data-samples': n });
    const last = lines.map((l) => {
      const v = l.values.length ? l.values[l.values.length - 1] : null;
      return `${l.name ? `${l.name} ` : ''}${v === null ? '–' : num(v, 1)}`;
    }).join(', ');
    const text = `${label} (${unit}), last ${n} s: now ${last}, max ${num(Math.max(0, ...known), 1)}`;
    plot.append(svg('title', {}, text));
    plot.setAttribute('aria-label', text);
    plot.append(svg('line', { class: 'axis', x1: 0, y1: H - 0.5, x2: W, y2: H - 0.5 }));
    lines.forEach((l, k) => {
      // a gap where a value is unknown: one polyline per run of known values
      let run = [];
      const flush = () => {
        if (run.length === 1) run.push([run[0][0] + 2, run[0][1]]); // a lone value: a short dash
        if (run.length) {
          plot.append(svg('polyline', { class: `series s${k}`,
            points: run.map(([px, py]) => `${px.toFixed(1)},${py.toFixed(1)}`).join(' ') }));
        }
        run = [];
      };
      l.values.forEach((v, i) => {
        if (v === null || !Number.isFinite(v)) flush();
        else run.push([x(i), y(v)]);
      });
      flush();
    });
    const now = lines.map((l) => (l.values.length ? l.values[l.values.length - 1] : null));
    return el('figure', { class: 'spark-box' }, plot,
      el('figcaption', { class: 'small' }, `${label} ${now.map((v) => num(v, 1)).join(' / ')} ${unit}`));
  }

  function plots(call) {
    const history = live.histories[call.id];
    if (!history) return '';
    return el('div', { class: 'plots', 'data-call-id': call.id }, ...history.legs.map((leg) => {
      const s = leg.samples;
      return el('div', { class: 'plot-leg', 'data-leg': leg.name },
        el('span', { class: 'plot-name' }, `${leg.name} (${leg.role})`),
        sparkline(leg.name, 'jitter_ms', 'Jitter', 'ms', [{ values: s.jitter_ms }], 5),
        sparkline(leg.name, 'loss_pct', 'Loss', '%', [{ values: s.loss_pct }], 1),
        sparkline(leg.name, 'kbps', 'Bitrate in / out', 'kbit/s',
          [{ name: 'in', values: s.kbps_in }, { name: 'out', values: s.kbps_out }], 10));
    }));
  }

  function callBlock(call) {
    const head = el('h3', {},
      `${call.id}: ${call.from || '?'} → ${call.to || '?'} `,
      el('span', { class: `badge ${call.state}` }, call.state), ' ',
      el('span', { class: 'small' }, duration(call.duration_s)));
    const table = el('table', {},
      el('thead', {}, el('tr', {}, ...['Leg', 'Peer', 'Transport', 'Dialog', 'Codec', 'Packets in', 'Packets out',
        'Bytes in / out', 'Lost', 'Jitter', 'RTT', 'ICE pair / RTP path', 'Security']
        .map((h, i) => el('th', { scope: 'col', class: i >= 5 && i <= 10 ? 'num' : undefined }, h)))),
      el('tbody', {}, ...call.legs.map(legRow)));
    const failed = call.media_failed ? el('p', { class: 'status error' }, `Media failed: ${call.media_failed}`) : '';
    let actions = '';
    if (call.session) {
      const rec = call.recording;
      const fwd = call.forwarding;
      const off = actionsOff();
      actions = el('div', { class: 'buttons' },
        el('button', { type: 'button', 'data-action': rec ? 'recording/stop' : 'recording/start',
          'data-call-id': call.id, class: rec ? 'bad' : undefined, disabled: off !== null, title: off || undefined },
        rec ? 'Stop recording' : 'Record'),
        el('button', { type: 'button', 'data-action': fwd ? 'forward/stop' : 'forward/start',
          'data-call-id': call.id, class: fwd ? 'bad' : undefined, disabled: off !== null, title: off || undefined },
        fwd ? `Stop forwarding to ${fwd.to}` : 'Forward'),
        rec ? el('span', { class: 'small', 'data-field': 'recording' }, `Recording: ${rec.sidecar}`
          + (rec.error ? ` (stopped: ${rec.error})` : '')) : '',
        fwd ? el('span', { class: 'small', 'data-field': 'forwarding' }, `Forwarding: ${fwd.sdp}`) : '');
    }
    return el('div', { class: 'call', 'data-call-id': call.id, 'data-state': call.state }, head,
      el('div', { class: 'scroll' }, table), plots(call), actions, failed);
  }

  // An ended call's quality: the monitor's summary (MOS from the simplified E-model), else its last figures.
  function quality(call) {
    const q = call.quality;
    if (q) {
      return el('ul', { class: 'quality' }, ...q.legs.map((l) => {
        if (!l.media) return el('li', { 'data-leg': l.name }, `${l.name}: no media`);
        const mos = l.mos === null ? 'no MOS (nothing received)' : `MOS ${num(l.mos, 2)} (R ${num(l.r, 0)})`;
        const rtt = l.rtt_ms_mean === null ? 'RTT –' : `RTT ${num(l.rtt_ms_mean, 1)} ms`;
        return el('li', { 'data-leg': l.name, 'data-mos': l.mos === null ? '' : String(l.mos) },
          el('strong', {}, `${l.name}: ${mos}`),
          ` · ${l.packets_in}/${l.packets_out} packets in/out, lost ${l.lost} (${num(l.loss_pct, 1)} %), `
          + `jitter ${num(l.jitter_ms_mean, 1)} mean / ${num(l.jitter_ms_max, 1)} max ms, ${rtt}`);
      }));
    }
    return call.legs.map((l) => {
      const m = l.media;
      if (!m) return `${l.name}: no media`;
      return `${l.name}: ${m.packets_in}/${m.packets_out}, lost ${m.lost}, ${num(m.jitter_ms, 1)} ms`
        + (m.rtt_ms !== null && m.rtt_ms !== undefined ? `, RTT ${num(m.rtt_ms, 1)} ms` : '');
    }).join('; ');
  }

  function render(calls, regs) {
    const box = $('calls');
    box.replaceChildren(...(calls.active.length ? calls.active.map(callBlock) : [el('p', { class: 'small' }, 'No call.')]));
    $('calls-count').textContent = String(calls.active.length);
    const rows = regs.registrations.map((r) => el('tr', {},
      el('td', {}, r.aor), el('td', {}, r.contact), el('td', {}, r.transport), el('td', {}, r.source || ''),
      el('td', { class: 'num' }, `${r.expires_in} s`), el('td', {}, r.user_agent || '')));
    $('registrations').tBodies[0].replaceChildren(...rows);
    $('regs-count').textContent = String(regs.registrations.length);
    const ended = calls.ended.map((c) => el('tr', { 'data-call-id': c.id },
      el('td', {}, c.id), el('td', {}, c.from || ''), el('td', {}, c.to || ''),
      el('td', {}, new Date(c.started_at * 1000).toLocaleTimeString()),
      el('td', { class: 'num' }, duration(c.duration_s)),
      el('td', {}, c.answered ? 'yes' : 'no'),
      el('td', {}, el('span', { class: `badge ${c.answered ? 'answered' : 'failed'}` }, c.cause)),
      el('td', { class: 'small', 'data-field': 'quality', title: c.quality ? c.quality.model : '' }, quality(c))));
    $('ended').tBodies[0].replaceChildren(...ended);
    const diags = (calls.diagnostics || []).slice().reverse().map((d) => el('tr', { 'data-call-id': d.call_id },
      el('td', {}, new Date(d.at * 1000).toLocaleTimeString()), el('td', {}, d.caller || ''),
      el('td', { class: 'small' }, d.call_id),
      el('td', {}, el('span', { class: `badge ${d.verdict === 'ok' ? 'answered' : 'failed'}`, 'data-field': 'verdict' },
        { ok: 'media as announced', nat: 'NAT in the path', none: 'no media' }[d.verdict] || d.verdict)),
      el('td', { 'data-field': 'text' }, d.text)));
    $('diagnostics').tBodies[0].replaceChildren(...diags);
  }

  function showMode() {
    const off = actionsOff();
    $('forward-box').hidden = off !== null;
    $('admin-note').hidden = off === null;
    const admin = live.config && live.config.admin;
    const note = $('admin-note');
    if (admin && admin.url && !admin.actions) {
      note.replaceChildren('Read-only here: to record or forward a call, open the live view on the admin listener, ',
        el('a', { href: admin.url }, admin.url), '.');
    } else {
      note.textContent = off ? `Read-only: ${off}.` : '';
    }
  }

  async function refresh() {
    try {
      if (!live.config) {
        live.config = await get('/api/config');
        showMode();
      }
      const [calls, regs] = await Promise.all([get('/api/calls'), get('/api/registrations')]);
      const plotted = calls.active.slice(0, PLOTTED).map((c) => c.id);
      const series = await Promise.all(plotted.map((id) => get(`/api/calls/${encodeURIComponent(id)}/history`)
        .catch(() => null))); // 404: no series (yet, or beyond the gateway's tracked calls)
      live.histories = {};
      plotted.forEach((id, i) => { if (series[i]) live.histories[id] = series[i]; });
      live.last = calls;
      live.registrations = regs;
      live.updates += 1;
      live.error = null;
      render(calls, regs);
      $('token-form').hidden = true;
      $('view').hidden = false;
      $('updated').textContent = `Updated ${new Date().toLocaleTimeString()}`;
    } catch (e) {
      live.error = String(e.message || e);
      if (e.status === 401 || e.status === 403) {
        $('view').hidden = true;
        $('token-form').hidden = false;
        $('token-error').textContent = sessionStorage.getItem(TOKEN) || e.status === 403 ? e.message : '';
      }
      $('updated').textContent = `Not updated: ${live.error}`;
    }
  }

  // One listener for the buttons of every call: the blocks are redrawn each second.
  $('calls').addEventListener('click', async (ev) => {
    const button = ev.target.closest('button[data-action]');
    if (!button) return;
    const action = button.dataset.action;
    const [what, verb] = action.split('/');
    const path = `/api/calls/${encodeURIComponent(button.dataset.callId)}/${what}`;
    let body = {};
    if (action === 'forward/start') {
      const to = $('forward-to').value.trim();
      const m = /^\[?([0-9A-Fa-f:.]+)\]?:(\d+)$/.exec(to);
      if (!m) {
        $('action-status').textContent = `Forward to: IP:port, not "${to}"`;
        $('action-status').className = 'status error';
        return;
      }
      body = { host: m[1], port: Number(m[2]) };
    }
    button.disabled = true;
    try {
      const r = await act(verb === 'start' ? 'POST' : 'DELETE', path, body);
      const what = r.sidecar ? `recording to ${r.sidecar}` : r.sdp ? `forwarding, player SDP ${r.sdp}`
        : r.stopped ? 'stopped' : 'nothing to stop';
      $('action-status').textContent = `${button.dataset.callId}: ${what}`;
      $('action-status').className = 'status';
    } catch (e) {
      $('action-status').textContent = `${button.dataset.callId}: ${e.message || e}`;
      $('action-status').className = 'status error';
    }
    refresh();
  });

  $('token-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(TOKEN, $('token').value.trim());
    refresh();
  });
  refresh();
  setInterval(refresh, 1000);
})();
