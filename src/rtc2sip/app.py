"""Assembly of one gateway process: settings in, listeners, proxy and registrar out."""

from __future__ import annotations

import asyncio
import errno
import logging
import ssl
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .breaker.b2bua import B2bua
from .breaker.call import BreakerConfig
from .breaker.host import ProxyHost
from .breaker.policy import Mode
from .config import Settings
from .gc_tuning import manage_gc, tune_gc
from .media.certificate import default_certificate
from .media.plane import MediaPlane
from .media.remote import RemotePlane
from .memtrace import from_environment as memory_trace
from .proxy.auth import Policy
from .proxy.locate import Resolver
from .proxy.location import LocationStore
from .proxy.registrar import Registrar
from .proxy.server import Proxy
from .proxy.throttle import Throttle
from .proxy.users import UserStore
from .services import Services, breaker_inspector
from .sip import parse_sip_uri
from .transport.layer import Limits, ListenAddress, TransportLayer
from .transport.tls import TlsContexts
from .web import Monitor, WebRouter
from .web.admin import AdminListener, AdminRouter, admin_ssl_context

if TYPE_CHECKING:
    from .coder import CoderPool
    from .media.forward import Forwarder
    from .media.recording import Recorder

log = logging.getLogger("rtc2sip")


def tls_contexts(settings: Settings) -> TlsContexts | None:
    """TLS/WSS contexts from ``ssl-certificates`` (rtc2sip.transport.tls), None without a key pair."""
    c = settings.ssl_certificates
    if c is None or c.private_key is None or c.public_cert is None:
        return None
    return TlsContexts(c.private_key, c.public_cert, c.ca, c.verify)


@dataclass
class Gateway:
    settings: Settings
    transports: TransportLayer | None = None
    proxy: Proxy | None = None
    store: LocationStore | None = None
    users: UserStore | None = None
    media: MediaPlane | RemotePlane | None = None
    breaker: B2bua | None = None  # the RTCWeb Breaker; the proxy sees it as its Interceptor
    coder: CoderPool | None = None
    monitor: Monitor | None = None
    web: WebRouter | None = None
    admin: AdminListener | None = None  # [admin]: the admin API's own listener
    services: Services | None = None
    recorder: Recorder | None = None
    forwarder: Forwarder | None = None
    tls: TlsContexts | None = None  # ssl-certificates, reloaded on SIGHUP
    listening: list[ListenAddress] = field(default_factory=list)

    async def start(self) -> None:
        s = self.settings
        data_dir = s.gateway.data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        self.store = LocationStore(data_dir / "location.sqlite3")
        lim = s.limits
        registrar = Registrar(
            self.store,
            set(s.gateway.domains),
            min_expires=lim.min_expires,
            default_expires=lim.default_expires,
            max_expires=lim.max_expires,
            max_per_source=lim.max_registrations_per_source or None,
        )
        upstream = parse_sip_uri(s.gateway.upstream_proxy) if s.gateway.upstream_proxy else None
        policy = Policy(
            domains=frozenset(d.lower() for d in s.gateway.domains),
            trusted=s.loopback_only(),
            open_relay=s.gateway.open_relay,
            auth_required=s.auth_required(),
            upstream=upstream,
            users=dict(s.users),
            digest_algorithms=s.gateway.digest_algorithms,
        )
        resolver = Resolver(list(s.webrtc2sip.nameservers), timeout=lim.dns_timeout)

        proxy_ref: list[Proxy] = []

        def on_data(data: bytes, source: object) -> None:
            proxy_ref[0].on_data(data, source)  # type: ignore[arg-type]

        def on_closed(flow_id: str) -> None:
            proxy_ref[0].on_flow_closed(flow_id)

        self.transports = TransportLayer(
            on_data,
            on_closed,
            Limits(
                max_message_size=lim.max_message_size,
                max_connections_per_source=lim.max_connections_per_source or 1_000_000,
                ws_origins=tuple(lim.ws_origins),
            ),
        )
        self.users = UserStore(data_dir / "users.sqlite3")  # beside the TOML ones ([users])
        self.proxy = Proxy(self.transports, self.store, registrar, resolver, policy,
                           max_message_size=lim.max_message_size, nonce_lifetime=float(lim.nonce_lifetime),
                           user_store=self.users, final_response_timeout=lim.final_response_timeout,
                           dns_timeout=lim.dns_timeout,
                           throttle=Throttle(lim.rate_per_source, lim.burst_per_source, lim.max_auth_failures,
                                             lim.auth_failure_window, lim.block_time))
        proxy_ref.append(self.proxy)
        workers = s.media.workers
        if s.gateway.breaker != "never" and workers:
            # [media] workers: each worker's own coder pool takes its share of the limit
            limit = -(-(lim.max_transcoded_calls or 1_000_000) // workers)
            rec_dir = s.recording.dir or data_dir / "recordings"
            remote = RemotePlane(s, default_certificate(data_dir), workers=workers, host=self._media_host(webrtc=True),
                                 port_range=s.media.rtp_ports,
                                 legacy_host=self._media_host(),
                                 coder_limit=limit if s.webrtc2sip.enable_media_coder else 0,
                                 recording_dir=rec_dir, forward_dir=s.forward.dir or rec_dir)
            await remote.start()
            self.media = remote
        elif s.gateway.breaker != "never":
            if s.webrtc2sip.enable_media_coder:
                from .coder import CoderPool  # PyAV: loaded only when transcoding is on

                # 0 in [limits] means unlimited, as for the other counts
                self.coder = CoderPool(lim.max_transcoded_calls or 1_000_000)
            self.media = MediaPlane(s, default_certificate(data_dir), host=self._media_host(webrtc=True),
                                    legacy_host=self._media_host(), port_range=s.media.rtp_ports, coder=self.coder)
            await self.media.start()  # the shared WebRTC socket ([media] webrtc_socket)
        if self.media is not None:
            self.breaker = B2bua(
                ProxyHost(self.proxy), self.media,
                BreakerConfig(Mode(s.gateway.breaker), s.webrtc2sip.enable_100rel,
                              dtmf_type=s.webrtc2sip.dtmf_type,
                              final_response_timeout=lim.final_response_timeout),
            )
            self.proxy.breaker = self.breaker
        if isinstance(self.media, MediaPlane):
            self._start_taps()
        elif isinstance(self.media, RemotePlane):
            self._start_remote_taps(self.media)
        # the web phone, the live view, /api and /metrics on the WS/WSS ports (rtc2sip.web)
        self.monitor = Monitor(self.breaker, self.media)
        self.monitor.start()
        self.web = WebRouter(s, self.proxy, self.monitor, self.media, self.transports)
        self.transports.http_handler = self.web.handle
        self.tls = tls_contexts(s)
        tls = self.tls.server if self.tls is not None else None
        if self.tls is not None:
            self.transports.client_ssl = self.tls.client
        for lst in s.active_listeners():
            if lst.transport not in ("udp", "tcp", "tls", "ws", "wss"):
                continue
            try:
                await self.transports.listen(lst.transport, lst.host, lst.port, tls if lst.secure else None)
            except OSError as exc:
                raise _listener_error(f"<transport>{lst.transport};{lst.host};{lst.port}", exc) from exc
        self.listening = list(self.transports.listening)
        if s.gateway.services and self.transports.local_address("udp") is not None:
            # sip:echo@ and sip:diag@ of every local domain: a UAS on loopback the proxy routes to
            self.services = Services(media_host=self._media_host(),
                                     ports=self.media.ports if self.media is not None else None,
                                     diag_duration=float(s.gateway.diag_duration),
                                     on_verdict=self.monitor.diagnostics.appendleft,
                                     inspect=breaker_inspector(self.breaker, self.media))
            await self.services.start()
            self.proxy.services = self.services
        a = s.admin
        if a.listen is not None:
            tls = admin_ssl_context(str(a.tls_cert), str(a.tls_key)) if a.tls_cert and a.tls_key else None
            self.admin = AdminListener(AdminRouter(self.web, a.token), a.listen[0], a.listen[1], tls)
            try:
                await self.admin.start()
            except OSError as exc:
                self.admin = None
                raise _listener_error(f"[admin] listen {a.listen[0]}:{a.listen[1]}", exc) from exc
            # what pages link to: a wildcard address replaced by an interface's, port 0 by the real one
            host = TransportLayer._advertised(a.listen[0], ":" in a.listen[0])
            host = f"[{host}]" if ":" in host else host
            self.web.admin_url = f"{'https' if tls else 'http'}://{host}:{self.admin.port}"

    def _start_taps(self) -> None:
        """Recording ([recording], issue 5 item 6) and forwarding to players ([forward], item 7): both
        on the media plane's tap, started by their rules when a call's media starts."""
        from .breaker.call_info import breaker_call_info
        from .media.forward import Forwarder
        from .media.recording import Recorder

        s, media = self.settings, self.media
        assert isinstance(media, MediaPlane) and self.proxy is not None
        rec_dir = s.recording.dir or s.gateway.data_dir / "recordings"
        info = breaker_call_info(self.breaker)
        self.recorder = Recorder(s.recording, rec_dir, media, info)
        self.forwarder = Forwarder(s.forward, s.forward.dir or rec_dir, media, info)
        media.recorder, media.forwarder = self.recorder, self.forwarder
        if s.recording.enabled:
            media.on_answered(self.recorder.answered)
            if self.breaker is not None:
                self.breaker.observers.append(self.recorder.call_ended)
            log.info("recording calls matching %s to %s (%s)", " ".join(s.recording.rule), rec_dir,
                     s.recording.format)
        if s.forward.to is not None:
            media.on_answered(self.forwarder.answered)
            log.info("forwarding the audio of calls matching %s to %s:%d", " ".join(s.forward.rule), *s.forward.to)

    def _start_remote_taps(self, media: RemotePlane) -> None:
        """Recording and forwarding with media workers: they run in the workers, the rules here."""
        from .breaker.call_info import breaker_call_info

        s = self.settings
        assert self.proxy is not None
        media.call_info = breaker_call_info(self.breaker)
        if s.recording.enabled:
            if self.breaker is not None:
                self.breaker.observers.append(media.call_ended)
            log.info("recording calls matching %s to %s (%s), in the media workers", " ".join(s.recording.rule),
                     media.recording_dir, s.recording.format)
        if s.forward.to is not None:
            log.info("forwarding the audio of calls matching %s to %s:%d, from the media workers",
                     " ".join(s.forward.rule), *s.forward.to)

    def state_summary(self) -> dict[str, int]:
        """Live sizes of what calls hold (logged on SIGUSR1): media sessions and ports, the breaker's
        tables, asyncio tasks. Everything but ``tasks`` is 0 when no call is up."""
        out: dict[str, int] = {}
        if self.media is not None:
            out["media_sessions"] = len(self.media.sessions)
            out["media_ports"] = self.media.ports.in_use
            # the shared WebRTC socket's routing keys (rtc2sip.media.udpmux): what calls left there
            mux = self.media.mux if isinstance(self.media, MediaPlane) else None
            out["webrtc_routes"] = mux.table.routes if mux is not None else 0
        if self.coder is not None:
            out["transcoded_calls"] = self.coder.active
        if self.breaker is not None:
            out |= self.breaker.table_sizes()
        out["tasks"] = len(asyncio.all_tasks())
        return out

    async def state_summary_async(self) -> dict[str, int]:
        """:meth:`state_summary` plus, with media workers, what the workers themselves hold (each
        asked over its channel): their sessions, ports and tap sinks."""
        out = self.state_summary()
        if isinstance(self.media, RemotePlane):
            states = await self.media.worker_states()
            for key in ("sessions", "ports", "sinks"):
                out[f"worker_{key}"] = sum(st[key] for st in states)
        return out

    def _media_host(self, *, webrtc: bool = False) -> str:
        """The address media sockets bind to and SDP announces: for the browser leg (``webrtc``) the
        first WebSocket listener's, for the legacy leg the first other SIP listener's (so that each
        leg's media takes the address family its signalling does: browsers on IPv4 and phones on
        IPv6, or the other way), else the first listener's, or the address of the default route's
        interface for a wildcard listener."""
        listeners = [lst for lst in self.settings.active_listeners()
                     if lst.transport in ("udp", "tcp", "tls", "ws", "wss") and lst.host not in ("0.0.0.0", "::", "")]
        for lst in listeners:
            if (lst.transport in ("ws", "wss")) == webrtc:
                return lst.host
        if listeners:
            return listeners[0].host
        return TransportLayer._advertised("0.0.0.0", False)

    def reload_certificates(self) -> bool:
        """SIGHUP: read ``ssl-certificates`` again for new TLS/WSS handshakes; connections and calls up
        now are untouched. False (and the old certificate kept) when the files do not load."""
        if self.tls is None:
            log.info("certificates: nothing to reload (no ssl-certificates)")
            return False
        try:
            summary = self.tls.reload()
        except (OSError, ValueError, ssl.SSLError) as e:
            log.error("certificates: reload failed, the old ones stay: %s", e)
            return False
        log.info("certificates: reloaded, now %s", summary)
        return True

    def web_urls(self) -> list[str]:
        """The web phone's address on each WS/WSS listener (http/https on the same port)."""
        urls = []
        for la in self.listening:
            if la.transport in ("ws", "wss"):
                host = TransportLayer._advertised(la.host, ":" in la.host)
                host = f"[{host}]" if ":" in host else host
                urls.append(f"{'https' if la.transport == 'wss' else 'http'}://{host}:{la.port}/")
        return urls

    async def stop(self) -> None:
        if self.admin is not None:
            await self.admin.close()  # first: no action may reach a media plane being closed
        if self.services is not None:
            await self.services.close()
        if self.monitor is not None:
            await self.monitor.close()
        if self.media is not None:
            await self.media.close()  # closes every tap: recordings finalise
        if self.recorder is not None:
            await self.recorder.close()
        if self.coder is not None:
            await self.coder.shutdown()
        if self.proxy is not None:
            await self.proxy.close()
        if self.transports is not None:
            await self.transports.close()
        if self.store is not None:
            self.store.close()
        if self.users is not None:
            self.users.close()


async def run(settings: Settings, banner: bool = True) -> None:
    # before the start: the SIP listeners answer while the rest still starts, and a SIGTERM then
    # (a supervisor, a test that got its answers) must stop cleanly, not kill
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    import signal

    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    memory = memory_trace()  # before the start, so that what the start allocates is traced too
    gw = Gateway(settings)
    await gw.start()
    tune_gc()
    collector = asyncio.get_running_loop().create_task(manage_gc())
    if banner:
        for line in settings.banner_lines():
            log.info("%s", line)
        for url in gw.web_urls():
            log.info("Web phone on %s (live view %scalls, metrics %smetrics)", url, url, url)
        if not settings.loopback_only() and settings.gateway.admin_token is None:
            log.warning("Admin pages (/calls data, /api, /metrics) are off on the WebSocket ports: "
                        "set [gateway] admin_token")
        log.info("rtc2sip ready: built-in registrar for %s; data in %s", ", ".join(settings.gateway.domains),
                 settings.gateway.data_dir)

    async def log_state_async() -> None:
        state = await gw.state_summary_async()
        log.info("rtc2sip state: %s", " ".join(f"{k}={v}" for k, v in state.items()))

    state_tasks: set[asyncio.Task[None]] = set()

    def log_state() -> None:
        if memory is not None:
            log.info("rtc2sip memory: %s", memory.report())
        if not isinstance(gw.media, RemotePlane):
            log.info("rtc2sip state: %s", " ".join(f"{k}={v}" for k, v in gw.state_summary().items()))
            return
        task = loop.create_task(log_state_async())  # the workers answer over their channels
        state_tasks.add(task)
        task.add_done_callback(state_tasks.discard)

    try:
        loop.add_signal_handler(signal.SIGUSR1, log_state)
    except (NotImplementedError, RuntimeError, AttributeError):
        pass
    if memory is not None:
        log.info("tracing memory allocations (%s): SIGUSR2 marks, SIGUSR1 reports", "RTC2SIP_TRACEMALLOC")
        try:
            loop.add_signal_handler(signal.SIGUSR2, memory.mark)
        except (NotImplementedError, RuntimeError, AttributeError):
            pass
    try:
        loop.add_signal_handler(signal.SIGHUP, gw.reload_certificates)
    except (NotImplementedError, RuntimeError, AttributeError):
        pass
    try:
        await stop.wait()
    finally:
        log.info("rtc2sip stopping")
        collector.cancel()
        await gw.stop()


def _listener_error(what: str, exc: OSError) -> OSError:
    """The operator's setting named in a bind failure ("cannot start: <transport>udp;0.0.0.0;5060:
    Address already in use"), the errno kept for callers. uvloop's UDP bind error carries no errno;
    the one beneath it does."""
    code = exc.errno
    inner = exc.__cause__ or exc.__context__
    if code is None and isinstance(inner, OSError):
        code = inner.errno
    busy = code == errno.EADDRINUSE or (code is None and "bind" in str(exc))
    hint = " (another program holds it: stop it or choose another port)" if busy else ""
    text = f"{what}: {exc.strerror or exc}{hint}"
    return OSError(code, text) if code is not None else OSError(text)
