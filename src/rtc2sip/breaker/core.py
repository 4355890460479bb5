"""The B2BUA's core (:class:`B2buaCore`): the tables of live calls and dialogs, each call's event queue,
sending on a leg (responses, in-dialog requests and their next hop, the ACK of a 2xx) and ending a
call (CANCEL, BYE, the final response to the caller) with everything released.

RFC 3261 §12.2 (requests within a dialog: route set, remote target, §12.2.1.1), §13.2.2.4 (ACK of a
2xx, a forked 2xx acknowledged then ended), §9.1 (CANCEL once a provisional came), §15 (BYE), §8.1.1.7
(Via), RFC 3263 (the next hop's address). The feature modules (:mod:`.invite`, :mod:`.in_dialog`,
:mod:`.refer`, :mod:`.auth`, :mod:`.reliable`, :mod:`.info`) are functions of a core.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable
from urllib.parse import quote

from ..sip import InviteClientTransaction, ServerTransaction, make_cancel
from ..sip.errors import SipParseError
from ..sip.message import Request, Response, make_response
from ..sip.uri import SipUri, set_param
from ..transport.base import Target
from .call import BreakerConfig, Call, Leg, TxnContext
from .dialog import Dialog, State
from .host import Host, MediaPlane
from .messages import B2B_PARAM, safe_uri, user_of

log = logging.getLogger("rtc2sip.breaker")


class B2buaCore:
    """A B2BUA's calls and the means to act on their legs (:class:`rtc2sip.breaker.b2bua.B2bua` adds
    the proxy's hooks)."""

    def __init__(self, host: Host, media: MediaPlane, config: BreakerConfig | None = None,
                 secret: bytes | None = None) -> None:
        self.host = host
        self.media = media
        self.config = config or BreakerConfig()
        self.secret = secret or os.urandom(16)
        # every table is emptied by release, whatever ended the call
        self.calls: dict[str, Call] = {}
        self.dialogs: dict[tuple[str, str], Leg] = {}  # (Call-ID, local tag) -> leg
        self.call_ids: dict[str, int] = {}  # Call-IDs of live legs: the cheap first test in on_request
        self.by_flow: dict[str, set[Call]] = {}
        self.by_session: dict[str, Call] = {}
        # called as observer(call, reason) when a call ends, before its media session is deleted
        # (the live view's history and /metrics, rtc2sip.web.monitor); exceptions are logged
        self.observers: list[Callable[[Call, str], None]] = []

    def table_sizes(self) -> dict[str, int]:
        return {"calls": len(self.calls), "dialogs": len(self.dialogs), "call_ids": len(self.call_ids),
                "by_flow": len(self.by_flow), "by_session": len(self.by_session)}

    # ---- the end of a call ---------------------------------------------------------------------

    def end(self, call: Call, reason: str, by: Leg | None, status: int = 480) -> None:
        """End both legs (except ``by``, which ended itself) and release everything. Idempotent."""
        if call.ended:
            return
        call.ended = True
        for observer in self.observers:
            try:
                observer(call, reason)
            except Exception:
                log.exception("%s call observer failed", call.ids())
        for leg in call.legs:
            if leg is by:
                continue
            try:
                self._end_leg(leg, reason, status)
            except (SipParseError, ValueError, AssertionError) as e:
                log.info("%s could not end %s: %s", call.ids(), leg.name, e)
        log.info("%s ended: %s (%.1f s)", call.ids(), reason, time.monotonic() - call.started)
        self.release(call)

    def _end_leg(self, leg: Leg, reason: str, status: int) -> None:
        text = reason.replace('"', "'")
        if leg.is_caller:
            if leg.invite_st is not None and not leg.final_sent:
                leg.final_sent = True
                self.respond(leg.invite_st, leg.dialog.response(leg.invite_st.request, status, None,
                                                                  headers=[("Reason", f'SIP;text="{text}"')]))
            elif leg.dialog.state is State.CONFIRMED:
                self.bye(leg, f'SIP;text="{text}"')
            return
        if leg.invite is not None and not leg.invite_final:
            self.send_cancel(leg)
        elif leg.dialog.state is State.CONFIRMED:
            self.bye(leg, f'SIP;text="{text}"')

    def send_cancel(self, b: Leg) -> None:
        txn = b.invite_ct
        if b.invite is None or b.invite_final:
            return
        if not isinstance(txn, InviteClientTransaction) or not txn.cancellable:
            b.cancel_pending = True  # §9.1: not before a provisional response
            return
        b.cancel_pending = False
        assert b.target is not None
        cancel = make_cancel(b.invite)
        self.host.send_request(cancel, b.target, TxnContext(b.call, b, "cancel"))
        log.info("%s CANCEL -> %s", b.call.ids(), b.name)

    def bye(self, leg: Leg, reason: str | None) -> None:
        if leg.dialog.state is State.TERMINATED:
            return
        bye = leg.dialog.request("BYE", headers=[("Reason", reason)] if reason else None)
        leg.dialog.terminate()
        self.send_in_dialog(leg, bye, TxnContext(leg.call, leg, "bye", request=bye))
        log.info("%s BYE -> %s", leg.call.ids(), leg.name)

    def ack_and_bye(self, b: Leg, dialog: Dialog) -> None:
        ack = dialog.ack()
        bye = dialog.request("BYE")
        dialog.terminate()

        async def send() -> None:
            target = await self.resolve_first(dialog.target_uri()) or b.target
            if target is None:
                return
            self.add_via(ack, target)
            self.host.send_stateless(ack, target)
            self.add_via(bye, target)
            self.host.send_request(bye, target, TxnContext(b.call, b, "bye"))

        self.host.spawn(send())

    def fail(self, call: Call, status: int, reason: str | None,
              headers: list[tuple[str, str]] | None = None) -> None:
        a = call.caller
        if a is not None and a.invite_st is not None and not a.final_sent:
            a.final_sent = True
            self.respond(a.invite_st, a.dialog.response(a.invite_st.request, status, reason, headers=headers))
        self.end(call, f"{status} {reason or ''}".strip(), by=a)

    def stop_reliable(self, a: Leg) -> None:
        if a.rel_timer is not None:
            a.rel_timer.cancel()
            a.rel_timer = None
        a.rel_pending = None

    def release(self, call: Call) -> None:
        """Every table entry of the call, and its media session (issue 3 item 5)."""
        call.ended = True
        self.calls.pop(call.id, None)
        for leg in call.legs:
            self.stop_reliable(leg)
            leg.rel_queue.clear()
            key = leg.dialog.key
            if self.dialogs.get(key) is leg:
                del self.dialogs[key]
                n = self.call_ids.get(key[0], 0) - 1
                if n > 0:
                    self.call_ids[key[0]] = n
                else:
                    self.call_ids.pop(key[0], None)
            if leg.flow is not None and leg.flow.flow_id is not None:
                calls = self.by_flow.get(leg.flow.flow_id)
                if calls is not None:
                    calls.discard(call)
                    if not calls:
                        del self.by_flow[leg.flow.flow_id]
        if call.session is not None:
            session, call.session = call.session, None
            if self.by_session.get(session) is call:
                del self.by_session[session]
            self.delete_session(session)

    def delete_session(self, session: str) -> None:
        async def delete() -> None:
            try:
                await self.media.delete(session)
            except Exception:
                log.exception("media session %s: delete failed", session)

        self.host.spawn(delete())

    # ---- sending -------------------------------------------------------------------------------

    def respond(self, st: ServerTransaction, resp: Response) -> None:
        if st.terminated:
            return
        try:
            self.host.send_response(st, resp)
        except Exception as e:  # a transaction in the wrong state (a late response): log, go on
            log.info("call-id=%s response %s not sent: %s", resp.get("Call-ID"), resp.status, e)

    def send_in_dialog(self, leg: Leg, req: Request, ctx: TxnContext) -> None:
        async def send() -> None:
            target = await self.hop(leg)
            if target is None:
                log.info("%s no route to %s for %s", leg.call.ids(), leg.name, req.method)
                if ctx.server is not None:
                    origin = leg.call.other(leg)
                    self.respond(ctx.server, origin.dialog.response(ctx.server.request, 480))
                return
            self.add_via(req, target)
            ctx.request = req
            if self.host.send_request(req, target, ctx) is None and ctx.server is not None:
                self.respond(ctx.server, make_response(ctx.server.request, 503))

        if leg.flow is not None and leg.flow.flow_id is not None:
            # no DNS for a flow: send now, so that requests keep their order on the connection
            target = leg.flow
            self.add_via(req, target)
            ctx.request = req
            if self.host.send_request(req, target, ctx) is None and ctx.server is not None:
                self.respond(ctx.server, make_response(ctx.server.request, 503))
            return
        self.host.spawn(send())

    def send_invite(self, b: Leg, invite: Request) -> None:
        assert b.target is not None
        self.add_via(invite, b.target)
        ctx = TxnContext(b.call, b, "invite", request=invite)
        txn = self.host.send_request(invite, b.target, ctx)
        if txn is None:
            self.fail(b.call, 503, "Overloaded")
            return
        b.invite, b.invite_ct, b.invite_final = invite, txn, False

    def send_ack(self, b: Leg) -> None:
        if b.ack is not None and b.ack_target is not None:
            self.host.send_stateless(b.ack, b.ack_target)

    async def hop(self, leg: Leg) -> Target | None:
        """Where the leg's in-dialog requests go: its connection, else its next hop (§12.2.1.1, RFC 3263)."""
        if leg.flow is not None and leg.flow.flow_id is not None:
            return leg.flow if self.host.flow_alive(leg.flow.flow_id) else None
        nxt = leg.dialog.next_hop()
        if leg.hop is not None and leg.hop[0] == nxt:
            return leg.hop[1][0] if leg.hop[1] else None
        targets = await self.resolve_all(leg.dialog.target_uri())
        if not targets and leg.target is not None:
            targets = [leg.target]
        leg.hop = (nxt, targets)
        return targets[0] if targets else None

    async def resolve_all(self, uri: SipUri | None) -> list[Target]:
        if uri is None:
            return []
        try:
            return await self.host.resolve(uri)
        except Exception as e:
            log.info("cannot resolve %s: %s", safe_uri(uri), e)
            return []

    async def resolve_first(self, uri: SipUri | None) -> Target | None:
        targets = await self.resolve_all(uri)
        return targets[0] if targets else None

    def add_via(self, req: Request, target: Target) -> None:
        local = self.host.local_address(target.transport, ":" in target.host) or self.host.local_address("udp")
        host, port = local or ("127.0.0.1", 5060)
        host = f"[{host}]" if ":" in host and not host.startswith("[") else host
        via = f"SIP/2.0/{target.transport.upper()} {host}:{port};branch={self.host.new_branch()}"
        if target.transport == "udp":
            via += ";rport"
        req.remove("Via")
        req.add("Via", via, top=True)

    def contact(self, peer_uri: object, transport: str, local: tuple[str, int] | None) -> str:
        """Our Contact on one leg: an address of ours on the leg's transport, marked as the B2BUA's."""
        host, port = local or ("127.0.0.1", 5060)
        host = f"[{host}]" if ":" in host and not host.startswith("[") else host
        user = user_of(peer_uri) or "rtc2sip"
        uri = SipUri("sip", quote(user, safe="-_.!~*'()&=+$,;?/"), None, host, port, [])
        set_param(uri.params, "transport", transport)
        set_param(uri.params, B2B_PARAM, None)
        return f"<{uri}>"

    # ---- bookkeeping ---------------------------------------------------------------------------

    def index(self, leg: Leg) -> None:
        key = leg.dialog.key
        self.dialogs[key] = leg
        self.call_ids[key[0]] = self.call_ids.get(key[0], 0) + 1

    def watch_flow(self, call: Call, leg: Leg) -> None:
        if leg.flow is not None and leg.flow.flow_id is not None:
            self.by_flow.setdefault(leg.flow.flow_id, set()).add(call)

    def post(self, call: Call, job: Callable[[], Awaitable[None]], force: bool = False) -> None:
        """Queue an event of ``call``: one at a time, in arrival order."""
        if call.ended and not force:
            return
        call.jobs.append(job)
        if not call.running:
            call.running = True
            self.host.spawn(self._work(call))

    async def _work(self, call: Call) -> None:
        try:
            while call.jobs:
                job = call.jobs.popleft()
                try:
                    await job()
                except Exception:
                    log.exception("%s internal error", call.ids())
                    self.fail(call, 500, "Internal error")
        finally:
            call.running = False
