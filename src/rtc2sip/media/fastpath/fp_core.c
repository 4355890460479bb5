/* The media fast path's sans-I/O core (see fp_core.h): RTP rewrite, latching, NACK history,
 * receive statistics and the per-datagram decision, for both legs of every bridged stream. */
#include "fp_core.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static inline uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static inline uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline void wr16(uint8_t *p, uint16_t v) { p[0] = v >> 8; p[1] = (uint8_t)v; }
static inline void wr32(uint8_t *p, uint32_t v)
{
    p[0] = v >> 24; p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}

/* -- addresses: equal as Python's tuples are ((host, port) or (host, port, flowinfo, scope)) -------- */

int fp_addr_equal(const fp_addr *a, const fp_addr *b)
{
    if (a->len == 0 || b->len == 0 || a->ss.ss_family != b->ss.ss_family)
        return 0;
    if (a->ss.ss_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)&a->ss, *y = (const void *)&b->ss;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    if (a->ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *x = (const void *)&a->ss, *y = (const void *)&b->ss;
        return x->sin6_port == y->sin6_port && x->sin6_flowinfo == y->sin6_flowinfo &&
               x->sin6_scope_id == y->sin6_scope_id && !memcmp(&x->sin6_addr, &y->sin6_addr, 16);
    }
    return 0;
}

uint32_t fp_addr_hash(const fp_addr *a)
{
    uint32_t h = 2166136261u;
    const uint8_t *p;
    int n;
    uint16_t port;
    if (a->ss.ss_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)&a->ss;
        p = (const uint8_t *)&x->sin_addr;
        n = 4;
        port = x->sin_port;
    } else if (a->ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *x = (const void *)&a->ss;
        p = (const uint8_t *)&x->sin6_addr;
        n = 16;
        port = x->sin6_port;
    } else {
        return 0;
    }
    for (int i = 0; i < n; i++)
        h = (h ^ p[i]) * 16777619u;
    h = (h ^ (port & 0xFF)) * 16777619u;
    h = (h ^ (port >> 8)) * 16777619u;
    return h;
}

/* -- RtpRewriter (media/rtp.py) --------------------------------------------------------------------- */

void fp_rewriter_init(fp_rewriter *rw, uint32_t ssrc, int clock_rate, uint16_t initial_sequence)
{
    memset(rw, 0, sizeof *rw);
    rw->ssrc = ssrc;
    rw->clock_rate = clock_rate;
    for (int i = 0; i < 128; i++)
        rw->pt_map[i] = -1;
    rw->last_seq = (uint16_t)(initial_sequence - 1);
}

/* Python's round(): to nearest, ties to even (nearbyint in the default rounding mode), kept in
 * int64 range (a gap of 2^62 timestamp units is beyond any call). */
static int64_t py_round(double x)
{
    double r = nearbyint(x);
    if (!(r > -4.6e18))
        return r != r ? 0 : INT64_MIN / 2;
    if (r > 4.6e18)
        return INT64_MAX / 2;
    return (int64_t)r;
}

int fp_rewrite(fp_rewriter *rw, uint8_t *buf, double arrival)
{
    uint8_t b1 = buf[1];
    int pt = rw->pt_map[b1 & 0x7F];
    if (pt < 0)
        return 0;
    uint16_t seq = rd16(buf + 2);
    uint32_t ts = rd32(buf + 4), source = rd32(buf + 8);
    if (!rw->has_source || rw->source != (int64_t)source) {
        int64_t gap = 0;
        if (rw->has_source) {
            gap = py_round((arrival - rw->last_arrival) * rw->clock_rate);
            if (gap < 1)
                gap = 1;
        }
        rw->seq_offset = (uint16_t)(rw->last_seq + 1 - seq);
        rw->ts_offset = (uint32_t)((uint64_t)rw->last_ts + (uint64_t)gap - ts);
        rw->has_source = 1;
        rw->source = source;
    }
    uint16_t out_seq = (uint16_t)(seq + rw->seq_offset);
    uint32_t out_ts = ts + rw->ts_offset;
    /* the newest packet, not the latest arrived, is the base: a reordered one does not move it */
    if ((uint16_t)(out_seq - rw->last_seq) < 0x8000) {
        rw->last_seq = out_seq;
        rw->last_ts = out_ts;
        rw->last_arrival = arrival;
    }
    buf[1] = (uint8_t)((b1 & 0x80) | pt);
    wr16(buf + 2, out_seq);
    wr32(buf + 4, out_ts);
    wr32(buf + 8, rw->ssrc);
    return 1;
}

void fp_rewriter_take(fp_rewriter *rw, double arrival, uint16_t *seq, uint32_t *ts)
{
    int64_t gap = rw->has_source ? py_round((arrival - rw->last_arrival) * rw->clock_rate) : 0;
    rw->last_seq = (uint16_t)(rw->last_seq + 1);
    rw->last_ts = (uint32_t)((uint64_t)rw->last_ts + (uint64_t)(gap > 0 ? gap : 0));
    rw->last_arrival = arrival;
    rw->has_source = 1;
    rw->source = -1;
    *seq = rw->last_seq;
    *ts = rw->last_ts;
}

/* -- RetransmissionHistory (media/nack.py) ------------------------------------------------------------ */

fp_history *fp_history_new(int min_tail, int max_tail)
{
    if (min_tail < 1 || max_tail < min_tail || max_tail > FP_MAX_TAIL)
        return NULL;
    fp_history *h = calloc(1, sizeof *h);
    if (h == NULL)
        return NULL;
    h->cap = max_tail + 1;
    h->slots = calloc((size_t)h->cap, sizeof *h->slots);
    if (h->slots == NULL) {
        free(h);
        return NULL;
    }
    h->min_tail = min_tail;
    h->max_tail = max_tail;
    h->depth = min_tail;
    return h;
}

void fp_history_free(fp_history *h)
{
    if (h == NULL)
        return;
    for (int i = 0; i < h->cap; i++)
        free(h->slots[i].data);
    free(h->slots);
    free(h);
}

static inline int present(const fp_history *h, uint16_t seq) { return h->present[seq >> 3] >> (seq & 7) & 1; }
static inline void set_present(fp_history *h, uint16_t seq, int on)
{
    if (on)
        h->present[seq >> 3] |= (uint8_t)(1 << (seq & 7));
    else
        h->present[seq >> 3] &= (uint8_t)~(1 << (seq & 7));
}

/* ring position i (0 = oldest) -> slot */
static inline fp_hslot *slot_at(fp_history *h, int i) { return &h->slots[(h->head + i) % h->cap]; }

static int find(fp_history *h, uint16_t seq)
{
    for (int i = h->count - 1; i >= 0; i--)
        if (slot_at(h, i)->seq == seq)
            return i;
    return -1;
}

int fp_history_store(fp_history *h, uint16_t seq, const uint8_t *data, int len)
{
    if (len < 0 || len > FP_BUF_SIZE)
        return -1;
    if (present(h, seq)) { /* sent again: Python's order.remove(seq), the slots after it move up */
        int i = find(h, seq);
        if (i >= 0) {
            fp_hslot removed = *slot_at(h, i);
            for (int j = i; j < h->count - 1; j++)
                *slot_at(h, j) = *slot_at(h, j + 1);
            *slot_at(h, h->count - 1) = removed; /* its buffer stays with the ring, to be reused */
            h->count--;
        }
        set_present(h, seq, 0);
    }
    /* count <= depth <= max_tail < cap: there is always a free slot after the newest */
    fp_hslot *s = slot_at(h, h->count);
    if (s->cap < len) {
        uint8_t *d = realloc(s->data, (size_t)(len ? len : 1));
        if (d == NULL)
            return -1;
        s->data = d;
        s->cap = (uint16_t)len;
    }
    memcpy(s->data, data, (size_t)len);
    s->len = (uint16_t)len;
    s->seq = seq;
    h->count++;
    set_present(h, seq, 1);
    if (!h->has_newest || (uint16_t)(seq - h->newest) < 0x8000) {
        h->newest = seq;
        h->has_newest = 1;
    }
    while (h->count > h->depth) {
        set_present(h, slot_at(h, 0)->seq, 0);
        h->head = (h->head + 1) % h->cap;
        h->count--;
    }
    return 0;
}

int fp_history_lookup(fp_history *h, const uint16_t *seqs, int n, fp_history_emit emit, void *arg)
{
    int found = 0, dropped = 0;
    for (int k = 0; k < n; k++) {
        uint16_t seq = seqs[k];
        int i = present(h, seq) ? find(h, seq) : -1;
        if (i >= 0) {
            fp_hslot *s = slot_at(h, i);
            emit(arg, s->data, s->len);
            h->hits++;
            found++;
        } else if (h->has_newest && (uint16_t)(h->newest - seq) != 0 &&
                   (uint16_t)(h->newest - seq) <= h->max_tail * 2) {
            h->misses++;
            dropped = 1;
        } else {
            h->unknown++;
        }
    }
    if (dropped && h->depth < h->max_tail)
        h->depth = h->depth * 2 < h->max_tail ? h->depth * 2 : h->max_tail;
    return found;
}

/* -- ReceiveStatistics.update (media/rtcp.py, RFC 3550 A.1 and A.8) ------------------------------------ */

#define RTP_SEQ_MOD (1u << 16)
#define MAX_DROPOUT 3000
#define MAX_MISORDER 100

void fp_rxstats_init(fp_rxstats *rx, uint32_t ssrc, int clock_rate, int min_sequential)
{
    memset(rx, 0, sizeof *rx);
    rx->valid = 1;
    rx->ssrc = ssrc;
    rx->clock_rate = clock_rate;
    rx->min_sequential = min_sequential;
    rx->probation = min_sequential;
    rx->bad_seq = RTP_SEQ_MOD + 1;
}

static void init_seq(fp_rxstats *rx, uint32_t seq)
{
    rx->base_seq = seq;
    rx->max_seq = seq;
    rx->bad_seq = RTP_SEQ_MOD + 1;
    rx->cycles = 0;
    rx->received = 0;
}

static int update_seq(fp_rxstats *rx, uint32_t seq)
{
    uint32_t udelta = (seq - rx->max_seq) & 0xFFFF;
    if (rx->probation) {
        if (seq == ((rx->max_seq + 1) & 0xFFFF)) {
            rx->probation--;
            rx->max_seq = seq;
            if (rx->probation == 0) {
                init_seq(rx, seq);
                rx->received++;
                return 1;
            }
        } else {
            rx->probation = rx->min_sequential - 1;
            rx->max_seq = seq;
        }
        return 0;
    }
    if (udelta < MAX_DROPOUT) {
        if (seq < rx->max_seq)
            rx->cycles += RTP_SEQ_MOD;
        rx->max_seq = seq;
    } else if (udelta <= RTP_SEQ_MOD - MAX_MISORDER) {
        if (seq == rx->bad_seq) {
            init_seq(rx, seq);
        } else {
            rx->bad_seq = (seq + 1) & 0xFFFF;
            return 0;
        }
    }
    rx->received++;
    return 1;
}

static void update_jitter(fp_rxstats *rx, uint32_t ts, double arrival)
{
    /* Python: int(arrival * clock_rate), truncated toward zero, then modulo 2^32 */
    double scaled = arrival * rx->clock_rate;
    int64_t units = (scaled > -9.2e18 && scaled < 9.2e18) ? (int64_t)scaled : 0;
    uint32_t transit = (uint32_t)((uint64_t)units - ts);
    if (rx->has_transit) {
        uint32_t d = transit - rx->transit;
        double dd = (d & 0x80000000u) ? (double)(0x100000000ull - d) : (double)d;
        rx->jitter += (dd - rx->jitter) / 16;
    }
    rx->transit = transit;
    rx->has_transit = 1;
}

int fp_rxstats_update(fp_rxstats *rx, uint16_t seq, uint32_t ts, double arrival)
{
    if (!rx->started) {
        rx->started = 1;
        init_seq(rx, seq);
        rx->max_seq = (uint32_t)(seq - 1) & 0xFFFF;
        if (rx->probation == 0) {
            rx->max_seq = seq;
            rx->received = 1;
            update_jitter(rx, ts, arrival);
            return 1;
        }
    }
    if (!update_seq(rx, seq))
        return 0;
    update_jitter(rx, ts, arrival);
    return 1;
}

/* -- tables ------------------------------------------------------------------------------------------- */

int fp_core_init(fp_core *core, int max_streams, int max_sessions)
{
    memset(core, 0, sizeof *core);
    core->streams = calloc((size_t)max_streams, sizeof *core->streams);
    core->sessions = calloc((size_t)max_sessions, sizeof *core->sessions);
    if (core->streams == NULL || core->sessions == NULL) {
        free(core->streams);
        free(core->sessions);
        return -1;
    }
    core->max_streams = max_streams;
    core->max_sessions = max_sessions;
    for (int i = 0; i < FP_HASH_BUCKETS; i++)
        core->buckets[i] = -1;
    return 0;
}

void fp_core_free(fp_core *core)
{
    for (int i = 0; i < core->max_streams; i++)
        fp_history_free(core->streams[i].history);
    free(core->streams);
    free(core->sessions);
    core->streams = NULL;
    core->sessions = NULL;
}

static void unhash(fp_core *core, int s)
{
    fp_session *se = &core->sessions[s];
    if (!se->hashed)
        return;
    int *p = &core->buckets[fp_addr_hash(&se->remote) % FP_HASH_BUCKETS];
    while (*p != -1 && *p != s)
        p = &core->sessions[*p].hash_next;
    if (*p == s)
        *p = se->hash_next;
    se->hashed = 0;
    se->hash_next = -1;
}

int fp_session_add(fp_core *core)
{
    for (int i = 0; i < core->max_sessions; i++) {
        fp_session *se = &core->sessions[i];
        if (!se->in_use) {
            uint32_t gen = se->gen + 1;
            memset(se, 0, sizeof *se);
            se->in_use = 1;
            se->gen = gen & 0x7FFF ? gen & 0x7FFF : 1;
            se->webrtc_fd = -1;
            se->hash_next = -1;
            return i;
        }
    }
    return -1;
}

void fp_session_remove(fp_core *core, int s)
{
    fp_session *se = &core->sessions[s];
    if (!se->in_use)
        return;
    for (int i = 0; i < core->max_streams; i++)
        if (core->streams[i].in_use && core->streams[i].session == s)
            fp_stream_remove(core, i);
    unhash(core, s);
    se->in_use = 0;
    se->srtp_rx = se->srtp_tx = NULL;
}

void fp_session_set_remote(fp_core *core, int s, int fd, const fp_addr *remote)
{
    fp_session *se = &core->sessions[s];
    unhash(core, s);
    se->webrtc_fd = fd;
    if (remote == NULL || remote->len == 0) {
        se->remote.len = 0;
        return;
    }
    se->remote = *remote;
    int *bucket = &core->buckets[fp_addr_hash(remote) % FP_HASH_BUCKETS];
    se->hash_next = *bucket;
    *bucket = s;
    se->hashed = 1;
}

int fp_session_find(fp_core *core, const fp_addr *src)
{
    /* first owner keeps an address (udpmux's rule): the oldest entry of the chain is the last */
    int found = -1;
    for (int s = core->buckets[fp_addr_hash(src) % FP_HASH_BUCKETS]; s != -1; s = core->sessions[s].hash_next)
        if (fp_addr_equal(&core->sessions[s].remote, src))
            found = s;
    return found;
}

int fp_session_learn(fp_core *core, int s, uint32_t ssrc, int stream)
{
    fp_session *se = &core->sessions[s];
    for (int i = 0; i < se->nssrc; i++)
        if (se->ssrcs[i] == ssrc) {
            se->ssrc_stream[i] = stream;
            return 0;
        }
    if (se->nssrc >= FP_MAX_SSRCS) /* relay.demultiplex: bounded, the sources in use are learnt again */
        se->nssrc = 0;
    se->ssrcs[se->nssrc] = ssrc;
    se->ssrc_stream[se->nssrc] = stream;
    se->nssrc++;
    return 0;
}

static void forget_stream_ssrcs(fp_session *se, int stream)
{
    int j = 0;
    for (int i = 0; i < se->nssrc; i++)
        if (se->ssrc_stream[i] != stream) {
            se->ssrcs[j] = se->ssrcs[i];
            se->ssrc_stream[j] = se->ssrc_stream[i];
            j++;
        }
    se->nssrc = j;
}

int fp_stream_add(fp_core *core, int session)
{
    for (int i = 0; i < core->max_streams; i++) {
        fp_stream *st = &core->streams[i];
        if (!st->in_use) {
            uint32_t gen = st->gen + 1;
            memset(st, 0, sizeof *st);
            st->in_use = 1;
            st->gen = gen & 0x7FFF ? gen & 0x7FFF : 1;
            st->session = session;
            st->legacy_fd = -1;
            st->clock_rate = st->webrtc_clock_rate = 8000;
            fp_rewriter_init(&st->to_legacy, 0, 8000, 0);
            fp_rewriter_init(&st->to_webrtc, 0, 8000, 0);
            return i;
        }
    }
    return -1;
}

void fp_stream_remove(fp_core *core, int i)
{
    fp_stream *st = &core->streams[i];
    if (!st->in_use)
        return;
    if (st->session >= 0 && st->session < core->max_sessions)
        forget_stream_ssrcs(&core->sessions[st->session], i);
    fp_history_free(st->history);
    st->history = NULL;
    st->in_use = 0;
    st->legacy_fd = -1;
    st->legacy_rx_srtp = st->legacy_tx_srtp = NULL;
}

void fp_stream_set_peer(fp_stream *st, const fp_addr *sdp_dest, int hold, int legacy_mux)
{
    fp_addr none = {0};
    const fp_addr *dest = hold || sdp_dest == NULL ? &none : sdp_dest;
    int same = (dest->len == 0 && st->sdp_dest.len == 0) || fp_addr_equal(dest, &st->sdp_dest);
    if (!same || hold)
        st->latched.len = 0; /* latch afresh; the same address in a re-INVITE keeps the latch */
    st->sdp_dest = *dest;
    st->legacy_dest = st->latched.len ? st->latched : *dest;
    st->legacy_mux = legacy_mux;
}

/* -- the per-datagram decision ------------------------------------------------------------------------ */

static void drop(fp_result *res) { res->verdict = FP_DROP; }

void fp_from_webrtc(fp_core *core, int fd, uint8_t *buf, int len, const fp_addr *src, double now,
                    uint8_t *copy_buf, fp_result *res)
{
    memset(res, 0, sizeof *res);
    res->session = res->stream = -1;
    if (len < 1 || buf[0] < 128 || buf[0] > 191) { /* STUN, DTLS, ZRTP, TURN, unknown: Python's (RFC 7983) */
        res->verdict = FP_UP;
        core->not_rtp++;
        return;
    }
    int s = fp_session_find(core, src);
    if (s < 0 || core->sessions[s].webrtc_fd != fd) {
        res->verdict = FP_UP; /* ICE may have validated it: Python decides */
        core->unknown_source++;
        return;
    }
    fp_session *se = &core->sessions[s];
    res->session = s;
    if (se->srtp_rx == NULL || core->unprotect == NULL) { /* no keys yet: Python drops it */
        res->verdict = FP_UP;
        return;
    }
    if (len < 12) {
        se->dropped++;
        return drop(res);
    }
    if (buf[1] >= 192 && buf[1] <= 223) { /* SRTCP (RFC 5761 §4): terminated in Python */
        res->verdict = FP_UP;
        return;
    }
    if (len > FP_MAX_PACKET) {
        se->srtp_errors++;
        return drop(res);
    }
    int n = len;
    if (core->unprotect(se->srtp_rx, buf, &n) != 0 || n < 12) {
        se->srtp_errors++;
        return drop(res);
    }
    uint32_t ssrc = rd32(buf + 8);
    int sti = -1;
    for (int i = 0; i < se->nssrc; i++)
        if (se->ssrcs[i] == ssrc) {
            sti = se->ssrc_stream[i];
            break;
        }
    res->data = buf;
    res->len = n;
    if (sti < 0 || !core->streams[sti].in_use || core->streams[sti].session != s ||
        core->streams[sti].mode == FP_MODE_PYTHON) {
        res->stream = sti >= 0 && core->streams[sti].in_use && core->streams[sti].session == s ? sti : -1;
        res->verdict = FP_UP_PLAIN; /* BUNDLE demux of a new source (RFC 8843 §9.2), or Python's stream */
        return;
    }
    fp_relay_plain_webrtc(core, sti, buf, n, now, copy_buf, res);
}

void fp_relay_plain_webrtc(fp_core *core, int sti, uint8_t *buf, int n, double now, uint8_t *copy_buf,
                           fp_result *res)
{
    fp_stream *st = &core->streams[sti];
    uint16_t seq = rd16(buf + 2);
    uint32_t ts = rd32(buf + 4), ssrc = rd32(buf + 8);
    memset(res, 0, sizeof *res);
    res->session = st->session;
    res->stream = sti;
    res->data = buf;
    res->len = n;
    fp_legstats *stats = &st->webrtc;
    stats->packets_in++;
    stats->bytes_in += (uint64_t)n;
    stats->last_in = now;
    if (!st->webrtc_rx.valid || st->webrtc_rx.ssrc != ssrc) /* SRTP authenticated it: no probation */
        fp_rxstats_init(&st->webrtc_rx, ssrc, st->webrtc_clock_rate, 0);
    fp_rxstats_update(&st->webrtc_rx, seq, ts, now);
    if (st->mode == FP_MODE_COPY && copy_buf != NULL) {
        memcpy(copy_buf, buf, (size_t)n);
        res->copy_len = n;
    }
    if (st->legacy_dest.len == 0) {
        stats->dropped++;
        res->verdict = FP_DROP;
        return;
    }
    if (!fp_rewrite(&st->to_legacy, buf, now)) {
        stats->dropped++;
        res->verdict = FP_DROP;
        return;
    }
    uint32_t out_ts = rd32(buf + 4);
    int plain_len = n;
    if (st->legacy_tx_srtp != NULL) {
        if (n > FP_MAX_PACKET - FP_MAX_TRAILER || core->protect(st->legacy_tx_srtp, buf, &n) != 0) {
            stats->srtp_errors++;
            res->verdict = FP_DROP;
            return;
        }
    }
    st->has_last_legacy_out = 1;
    st->last_legacy_out_ts = out_ts;
    st->last_legacy_out_time = now;
    st->legacy.packets_out++;
    st->legacy.bytes_out += (uint64_t)plain_len; /* relay.py counts the plain length on this leg */
    res->verdict = FP_SEND;
    res->fd = st->legacy_fd;
    res->dest = &st->legacy_dest;
    res->len = n;
}

/* relay._Stream._accept_source: symmetric RTP, webrtc2sip's enable-rtp-symetric */
static int accept_source(fp_stream *st, const fp_addr *addr, double now)
{
    if (fp_addr_equal(addr, &st->latched)) {
        st->latched_last = now;
        return 1;
    }
    if (!st->symmetric)
        return 1;
    if (st->latched.len == 0 || now - st->latched_last > FP_RELATCH_AFTER) {
        st->latched = *addr;
        st->latched_last = now;
        st->legacy_dest = *addr;
        return 1;
    }
    return 0;
}

void fp_from_legacy(fp_core *core, int sti, uint8_t *buf, int len, const fp_addr *src, double now,
                    uint8_t *copy_buf, fp_result *res)
{
    memset(res, 0, sizeof *res);
    res->session = -1;
    res->stream = sti;
    if (sti < 0 || sti >= core->max_streams || !core->streams[sti].in_use) {
        res->stream = -1;
        return drop(res);
    }
    fp_stream *st = &core->streams[sti];
    res->session = st->session;
    fp_legstats *stats = &st->legacy;
    if (len < 12 || buf[0] < 128 || buf[0] > 191) {
        stats->dropped++;
        return drop(res);
    }
    if (buf[1] >= 192 && buf[1] <= 223) {
        if (st->legacy_mux) { /* RFC 5761 §4: RTCP on the RTP port, terminated in Python */
            res->verdict = FP_UP;
            return;
        }
        stats->dropped++;
        return drop(res);
    }
    if (!accept_source(st, src, now)) {
        stats->dropped++;
        return drop(res);
    }
    int n = len;
    if (st->legacy_rx_srtp != NULL) {
        if (n > FP_MAX_PACKET || core->unprotect(st->legacy_rx_srtp, buf, &n) != 0 || n < 12) {
            stats->srtp_errors++;
            return drop(res);
        }
    }
    stats->packets_in++;
    stats->bytes_in += (uint64_t)n;
    stats->last_in = now;
    uint16_t seq = rd16(buf + 2);
    uint32_t ts = rd32(buf + 4), ssrc = rd32(buf + 8);
    if (!st->legacy_rx.valid || st->legacy_rx.ssrc != ssrc)
        fp_rxstats_init(&st->legacy_rx, ssrc, st->clock_rate, 2);
    fp_rxstats_update(&st->legacy_rx, seq, ts, now);
    res->data = buf;
    res->len = n;
    if (st->mode == FP_MODE_PYTHON) { /* latched, unprotected and counted here; Python relays it */
        res->verdict = FP_UP_PLAIN;
        return;
    }
    if (st->mode == FP_MODE_COPY && copy_buf != NULL) {
        memcpy(copy_buf, buf, (size_t)n);
        res->copy_len = n;
    }
    fp_session *se = &core->sessions[st->session];
    if (se->srtp_tx == NULL || core->protect == NULL || se->remote.len == 0) {
        stats->dropped++;
        res->verdict = FP_DROP;
        return;
    }
    if (!fp_rewrite(&st->to_webrtc, buf, now)) {
        stats->dropped++;
        res->verdict = FP_DROP;
        return;
    }
    uint16_t out_seq = rd16(buf + 2);
    uint32_t out_ts = rd32(buf + 4);
    if (n > FP_MAX_PACKET - FP_MAX_TRAILER || core->protect(se->srtp_tx, buf, &n) != 0) {
        stats->srtp_errors++; /* as toward the phone: an SRTP failure is srtp_errors, not dropped */
        res->verdict = FP_DROP;
        return;
    }
    if (st->history != NULL) /* kept protected: a retransmission is the same SRTP packet */
        fp_history_store(st->history, out_seq, buf, n);
    st->has_last_webrtc_out = 1;
    st->last_webrtc_out_ts = out_ts;
    st->last_webrtc_out_time = now;
    st->webrtc.packets_out++;
    st->webrtc.bytes_out += (uint64_t)n;
    res->verdict = FP_SEND;
    res->fd = se->webrtc_fd;
    res->dest = &se->remote;
    res->len = n;
}
