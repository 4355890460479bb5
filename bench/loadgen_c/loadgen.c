/* The media loop of bench/loadgen.py in C (bench only, never part of the gateway).
 *
 * bench/loadgen.py sets every call up in Python (offer/answer, ICE check with USE-CANDIDATE, DTLS
 * client, SRTP key export), then hands it here with lg_add_call(). From then on this loop, in its own
 * thread (ctypes drops the GIL), does all of that call's media on the generator's two shared sockets:
 *
 * - one 172-byte PCMU packet per 20 ms each way, the 20 ms spread over 20 one-millisecond slots, the
 *   payload marked with call index, sequence and send time (CLOCK_MONOTONIC ns, big-endian, exactly
 *   the Python generator's "!IIq" at offset 12); the browser's packets SRTP-protected with libsrtp2
 *   (AES_CM_128_HMAC_SHA1_80), sent with sendmmsg;
 * - receive with recvmmsg on both sockets, drained once per slot rather than on readability: a
 *   wakeup per arriving datagram (what epoll on the sockets gave) cost more than the packets (perf:
 *   task switches were the top of this loop's profile) and made the relay pay for waking us. The
 *   arrival time is the kernel's (SO_TIMESTAMPNS, taken when the relay's datagram reached our socket),
 *   so latency does not grow by the wait for the next slot. The browser side is unprotected, both
 *   sides are counted per direction over the measurement window with a 10 µs latency histogram;
 * - ICE: a consent check (RFC 7675) per call every 5 s, with MESSAGE-INTEGRITY (HMAC-SHA1, libcrypto)
 *   and FINGERPRINT (CRC-32), and success responses to the relay's own checks (rtpengine is a full
 *   ICE agent), signed with the browser's password;
 * - whatever it does not handle itself (DTLS, STUN of calls still being set up, responses to Python's
 *   checks) goes to Python over a datagram socketpair, prefixed with the 6-byte source address and
 *   the 2-byte local key (below; 0 without one).
 *
 * Calls are told apart by the relay's source port (a relay port per call), or, for a relay that puts
 * every browser leg on one port (rtc2sip's shared WebRTC socket), by the browser's own address: each
 * call then has a loopback address of its own, 127.1.x.y with x.y its index (the "local key"), sent
 * from with IP_PKTINFO on the one browser socket (bound to the wildcard) and read back from the
 * IP_PKTINFO of what arrives.
 *
 * One mutex: this thread holds it while it works and drops it while it sleeps, so the Python
 * thread's lg_add_call/lg_window/lg_report never see half-updated state.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <srtp2/srtp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define PTIME_NS 20000000LL
#define SLOTS 20
#define SLOT_NS (PTIME_NS / SLOTS)
#define PAYLOAD 160
#define PKT (12 + PAYLOAD)
#define BIN_NS 10000LL
#define BINS 100000
#define CONSENT_NS 5000000000LL
#define BATCH 32    /* packets per sendmmsg: the send time is stamped before protect, keep it close */
#define RBATCH 64   /* datagrams per recvmmsg */
#define RROUNDS 64  /* recvmmsg calls per socket per slot at most (4096 datagrams) */
#define BUFSZ 2048
#define UFRAG_MAX 256

typedef union {
    struct cmsghdr align;
    uint8_t buf[CMSG_SPACE(sizeof(struct in_pktinfo))];
} pktinfo_t;

typedef struct {
    uint32_t index;
    struct sockaddr_in gw_browser, gw_phone;
    int local_key;       /* -1: none (the call is known by the relay's port) */
    pktinfo_t local_ctl; /* IP_PKTINFO with the call's own source address */
    uint32_t b_ssrc, p_ssrc;
    uint16_t b_seq, p_seq;
    srtp_t tx, rx;
    char ufrag[UFRAG_MAX];
    size_t ufrag_len;
    char username[2 * UFRAG_MAX + 2]; /* gw_ufrag:ufrag, the USERNAME of our checks */
    size_t username_len;
    char pwd[UFRAG_MAX], gw_pwd[UFRAG_MAX];
    int64_t next_consent;
} call_t;

typedef struct {
    uint64_t sent, received;
    uint32_t hist[BINS];
} direction_t;

typedef struct {
    uint64_t sent_b2p, received_b2p, sent_p2b, received_p2b;
    uint64_t late_slots, max_late_ns, srtp_errors, send_errors, calls;
    uint64_t consent_sent, consent_ok, consent_error, checks_answered, forwarded, forward_dropped;
} lg_report_t;

typedef struct {
    int browser_fd, phone_fd, forward_fd;
    pthread_mutex_t lock;
    atomic_int waiters; /* API calls waiting for the lock: the loop lets them in after its current slot */
    volatile int running;
    call_t **calls;
    size_t ncalls, cap;
    call_t **slot[SLOTS];
    size_t slot_len[SLOTS], slot_cap[SLOTS];
    call_t *by_port[65536];
    call_t *by_local[65536];
    int64_t window_start, window_end;
    direction_t b2p, p2b;
    lg_report_t counters; /* the scalar counters; the direction fields are filled by lg_report */
    uint32_t consent_counter;
    /* buffers */
    uint8_t sbuf_b[BATCH][PKT + SRTP_MAX_TRAILER_LEN + 16];
    uint8_t sbuf_p[BATCH][PKT];
    struct mmsghdr smsg_b[BATCH], smsg_p[BATCH];
    struct iovec siov_b[BATCH], siov_p[BATCH];
    uint8_t rbuf[RBATCH][BUFSZ];
    struct mmsghdr rmsg[RBATCH];
    struct iovec riov[RBATCH];
    struct sockaddr_in rname[RBATCH];
    uint8_t rctl[RBATCH][CMSG_SPACE(sizeof(struct timespec)) + CMSG_SPACE(sizeof(struct in_pktinfo))];
    int64_t real_to_mono; /* CLOCK_MONOTONIC - CLOCK_REALTIME, for the kernel's receive stamps */
} lg_t;

/* libsrtp2 through dlopen (lg_init): Debian's libsrtp2 is built on NSS, which costs several µs per
 * packet in PK11 context setup (perf: libsoftokn3 was most of this loop's CPU); pylibsrtp's wheel
 * bundles libsrtp2 built on OpenSSL, the very code rtc2sip's relay runs, and exports its API. Only the
 * headers come from libsrtp2-dev (the 2.x API and srtp_policy_t are the same from 2.4 to 2.7). */
static struct {
    srtp_err_status_t (*init)(void);
    srtp_err_status_t (*create)(srtp_t *, const srtp_policy_t *);
    srtp_err_status_t (*protect)(srtp_t, void *, int *);
    srtp_err_status_t (*unprotect)(srtp_t, void *, int *);
    srtp_err_status_t (*dealloc)(srtp_t);
    void (*rtp_default)(srtp_crypto_policy_t *);
    void (*rtcp_default)(srtp_crypto_policy_t *);
} S;

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void put16(uint8_t *p, uint16_t v) { p[0] = v >> 8; p[1] = v; }
static void put32(uint8_t *p, uint32_t v) { p[0] = v >> 24; p[1] = v >> 16; p[2] = v >> 8; p[3] = v; }
static void put64(uint8_t *p, uint64_t v) { put32(p, v >> 32); put32(p + 4, (uint32_t)v); }
static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static uint32_t get32(const uint8_t *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }
static int64_t get64(const uint8_t *p) { return (int64_t)((uint64_t)get32(p) << 32 | get32(p + 4)); }

/* -- STUN (RFC 5389) ------------------------------------------------------------------------------ */

#define STUN_COOKIE 0x2112A442u
static uint32_t crc_table[256];

static void crc_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[i] = c;
    }
}

static uint32_t crc32(const uint8_t *p, size_t n) {
    uint32_t c = 0xFFFFFFFFu;
    while (n--) c = crc_table[(c ^ *p++) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

static size_t stun_attr(uint8_t *msg, size_t off, uint16_t type, const void *value, size_t len) {
    put16(msg + off, type);
    put16(msg + off + 2, (uint16_t)len);
    memcpy(msg + off + 4, value, len);
    size_t padded = (len + 3) & ~(size_t)3;
    memset(msg + off + 4 + len, 0, padded - len);
    return off + 4 + padded;
}

/* MESSAGE-INTEGRITY then FINGERPRINT, each over the message with the length field already counting
 * it (RFC 5389 §15.4, §15.5). */
static size_t stun_finish(uint8_t *msg, size_t off, const char *key) {
    uint8_t mac[20];
    unsigned int maclen = 0;
    put16(msg + 2, (uint16_t)(off - 20 + 24));
    HMAC(EVP_sha1(), key, (int)strlen(key), msg, off, mac, &maclen);
    off = stun_attr(msg, off, 0x0008, mac, 20);
    put16(msg + 2, (uint16_t)(off - 20 + 8));
    uint8_t fp[4];
    put32(fp, crc32(msg, off) ^ 0x5354554Eu);
    return stun_attr(msg, off, 0x8028, fp, 4);
}

/* A datagram of call c's browser: from its own address when it has one (IP_PKTINFO). */
static ssize_t send_browser(lg_t *lg, call_t *c, const void *data, size_t len, const struct sockaddr_in *to) {
    struct iovec iov = {(void *)data, len};
    struct msghdr m = {.msg_name = (void *)to, .msg_namelen = sizeof *to, .msg_iov = &iov, .msg_iovlen = 1};
    if (c != NULL && c->local_key >= 0) {
        m.msg_control = c->local_ctl.buf;
        m.msg_controllen = sizeof c->local_ctl.buf;
    }
    return sendmsg(lg->browser_fd, &m, MSG_DONTWAIT);
}

/* The local key of a datagram from its IP_PKTINFO: x.y of 127.1.x.y, -1 for another address. */
static int local_key(struct msghdr *m) {
    for (struct cmsghdr *c = CMSG_FIRSTHDR(m); c != NULL; c = CMSG_NXTHDR(m, c)) {
        if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO) {
            struct in_pktinfo pi;
            memcpy(&pi, CMSG_DATA(c), sizeof pi);
            uint32_t dst = ntohl(pi.ipi_addr.s_addr);
            return (dst >> 16) == 0x7F01 ? (int)(dst & 0xFFFF) : -1;
        }
    }
    return -1;
}

static call_t *call_of(lg_t *lg, int key, const struct sockaddr_in *from) {
    return key >= 0 ? lg->by_local[key] : lg->by_port[ntohs(from->sin_port)];
}

static void send_consent(lg_t *lg, call_t *c) {
    uint8_t msg[600];
    put16(msg, 0x0001);
    put32(msg + 4, STUN_COOKIE);
    memcpy(msg + 8, "lgc", 3); /* ours: answered here, not forwarded to Python */
    msg[11] = 0;
    put32(msg + 12, c->index);
    put32(msg + 16, ++lg->consent_counter);
    size_t off = 20;
    off = stun_attr(msg, off, 0x0006, c->username, c->username_len);
    uint8_t prio[4], ctl[8];
    put32(prio, 2113937151u);
    put64(ctl, 0x1234567890ABCDEFull);
    off = stun_attr(msg, off, 0x0024, prio, 4);
    off = stun_attr(msg, off, 0x802A, ctl, 8);
    off = stun_finish(msg, off, c->gw_pwd);
    if (send_browser(lg, c, msg, off, &c->gw_browser) < 0)
        lg->counters.send_errors++;
    else
        lg->counters.consent_sent++;
}

static void forward(lg_t *lg, const uint8_t *data, size_t len, const struct sockaddr_in *from, int key) {
    uint8_t head[8];
    memcpy(head, &from->sin_addr.s_addr, 4);
    memcpy(head + 4, &from->sin_port, 2);
    put16(head + 6, (uint16_t)(key < 0 ? 0 : key));
    struct iovec iov[2] = {{head, 8}, {(void *)data, len}};
    struct msghdr m = {.msg_iov = iov, .msg_iovlen = 2};
    if (sendmsg(lg->forward_fd, &m, MSG_DONTWAIT) < 0)
        lg->counters.forward_dropped++;
    else
        lg->counters.forwarded++;
}

/* A STUN message on the browser socket: the relay's check of a call we own is answered here, a
 * response to one of our consent checks is counted, anything else goes to Python. */
static void on_stun(lg_t *lg, const uint8_t *d, size_t len, const struct sockaddr_in *from, int key) {
    if (len < 20 || get32(d + 4) != STUN_COOKIE) return;
    uint16_t type = get16(d);
    if ((type == 0x0101 || type == 0x0111) && memcmp(d + 8, "lgc", 3) == 0) {
        if (type == 0x0101) lg->counters.consent_ok++;
        else lg->counters.consent_error++;
        return;
    }
    call_t *c = call_of(lg, key, from);
    if (type == 0x0001 && c != NULL && c->gw_browser.sin_addr.s_addr == from->sin_addr.s_addr) {
        size_t end = 20 + get16(d + 2), off = 20;
        if (end > len) return;
        const uint8_t *user = NULL;
        size_t ulen = 0;
        while (off + 4 <= end) {
            uint16_t at = get16(d + off), al = get16(d + off + 2);
            if (off + 4 + al > end) return;
            if (at == 0x0006) { user = d + off + 4; ulen = al; break; }
            off += 4 + ((al + 3u) & ~3u);
        }
        if (user != NULL && ulen > c->ufrag_len && user[c->ufrag_len] == ':' &&
            memcmp(user, c->ufrag, c->ufrag_len) == 0) {
            uint8_t msg[200];
            put16(msg, 0x0101);
            put32(msg + 4, STUN_COOKIE);
            memcpy(msg + 8, d + 8, 12);
            uint8_t xma[8] = {0, 1};
            put16(xma + 2, ntohs(from->sin_port) ^ (STUN_COOKIE >> 16));
            put32(xma + 4, ntohl(from->sin_addr.s_addr) ^ STUN_COOKIE);
            size_t o = stun_attr(msg, 20, 0x0020, xma, 8);
            o = stun_finish(msg, o, c->pwd);
            send_browser(lg, c, msg, o, from);
            lg->counters.checks_answered++;
            return;
        }
    }
    forward(lg, d, len, from, key);
}

/* -- media ------------------------------------------------------------------------------------------ */

/* When the datagram reached our socket, on CLOCK_MONOTONIC (the send times' clock); now if the
 * kernel gave no stamp. */
static int64_t arrival(lg_t *lg, struct msghdr *m, int64_t now) {
    for (struct cmsghdr *c = CMSG_FIRSTHDR(m); c != NULL; c = CMSG_NXTHDR(m, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_TIMESTAMPNS) {
            struct timespec ts;
            memcpy(&ts, CMSG_DATA(c), sizeof ts);
            if (ts.tv_sec == 0) break;
            int64_t t = (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec + lg->real_to_mono;
            return t < now ? t : now;
        }
    }
    return now;
}

static void clocks(lg_t *lg) {
    struct timespec r, m;
    clock_gettime(CLOCK_REALTIME, &r);
    clock_gettime(CLOCK_MONOTONIC, &m);
    lg->real_to_mono = ((int64_t)m.tv_sec - r.tv_sec) * 1000000000LL + (m.tv_nsec - r.tv_nsec);
}

static int receive(lg_t *lg, int fd) {
    for (int i = 0; i < RBATCH; i++) {
        lg->rmsg[i].msg_hdr.msg_namelen = sizeof lg->rname[i];
        lg->rmsg[i].msg_hdr.msg_controllen = sizeof lg->rctl[i];
    }
    return recvmmsg(fd, lg->rmsg, RBATCH, MSG_DONTWAIT, NULL);
}

static void count(lg_t *lg, direction_t *dir, const uint8_t *mark, int64_t now) {
    int64_t sent = get64(mark + 8);
    if (sent < lg->window_start || sent >= lg->window_end) return;
    dir->received++;
    int64_t bin = (now - sent) / BIN_NS;
    if (bin < 0) bin = 0;
    if (bin >= BINS) bin = BINS - 1;
    dir->hist[bin]++;
}

static void drain_browser(lg_t *lg) {
    for (int round = 0; round < RROUNDS; round++) {
        int n = receive(lg, lg->browser_fd);
        if (n <= 0) return;
        int64_t now = now_ns();
        for (int i = 0; i < n; i++) {
            uint8_t *d = lg->rbuf[i];
            int len = (int)lg->rmsg[i].msg_len;
            const struct sockaddr_in *from = &lg->rname[i];
            if (len < 1) continue;
            uint8_t b0 = d[0];
            int key = local_key(&lg->rmsg[i].msg_hdr);
            if (b0 > 127 && b0 < 192) {
                if (len < 2 || (d[1] > 191 && d[1] < 224)) continue; /* the relay's RTCP */
                call_t *c = call_of(lg, key, from);
                if (c == NULL || c->gw_browser.sin_addr.s_addr != from->sin_addr.s_addr) continue;
                if (S.unprotect(c->rx, d, &len) != srtp_err_status_ok) {
                    lg->counters.srtp_errors++;
                    continue;
                }
                if (len >= 28) count(lg, &lg->p2b, d + 12, arrival(lg, &lg->rmsg[i].msg_hdr, now));
            } else if (b0 < 4) {
                on_stun(lg, d, (size_t)len, from, key);
            } else if (b0 > 19 && b0 < 64) {
                forward(lg, d, (size_t)len, from, key); /* DTLS: Python's, if anyone's */
            }
        }
        if (n < RBATCH) return;
    }
}

static void drain_phone(lg_t *lg) {
    for (int round = 0; round < RROUNDS; round++) {
        int n = receive(lg, lg->phone_fd);
        if (n <= 0) return;
        int64_t now = now_ns();
        for (int i = 0; i < n; i++) {
            const uint8_t *d = lg->rbuf[i];
            if (lg->rmsg[i].msg_len < 28 || (d[1] > 191 && d[1] < 224)) continue;
            count(lg, &lg->b2p, d + 12, arrival(lg, &lg->rmsg[i].msg_hdr, now));
        }
        if (n < RBATCH) return;
    }
}

static void flush(lg_t *lg, int fd, struct mmsghdr *msgs, int n) {
    int done = 0;
    while (done < n) {
        int r = sendmmsg(fd, msgs + done, (unsigned)(n - done), MSG_DONTWAIT);
        if (r < 0) {
            if (errno == EINTR) continue;
            lg->counters.send_errors++; /* counted as sent, hence lost, as in the Python generator */
            done++;                     /* skip the one the kernel refused and try the rest */
            continue;
        }
        done += r;
    }
}

static void send_slot(lg_t *lg, int k) {
    call_t **calls = lg->slot[k];
    size_t total = lg->slot_len[k];
    for (size_t start = 0; start < total; start += BATCH) {
        int n = 0, nb = 0; /* phone packets, browser packets (one fewer when libsrtp refuses one) */
        for (size_t i = start; i < total && n < BATCH; i++, n++) {
            call_t *c = calls[i];
            int64_t t = now_ns(); /* one send time for both packets: the receivers' window test */
            uint8_t *b = lg->sbuf_b[nb], *p = lg->sbuf_p[n];
            uint16_t seq = ++c->b_seq;
            b[0] = 0x80; b[1] = 0;
            put16(b + 2, seq); put32(b + 4, (uint32_t)seq * 160u); put32(b + 8, c->b_ssrc);
            put32(b + 12, c->index); put32(b + 16, seq); put64(b + 20, (uint64_t)t);
            memset(b + 28, 0xFF, PKT - 28);
            int blen = PKT;
            if (S.protect(c->tx, b, &blen) != srtp_err_status_ok) {
                lg->counters.srtp_errors++; /* counted as sent, hence lost */
            } else {
                lg->siov_b[nb] = (struct iovec){b, (size_t)blen};
                lg->smsg_b[nb].msg_hdr = (struct msghdr){.msg_name = &c->gw_browser,
                                                         .msg_namelen = sizeof c->gw_browser,
                                                         .msg_iov = &lg->siov_b[nb], .msg_iovlen = 1};
                if (c->local_key >= 0) {
                    lg->smsg_b[nb].msg_hdr.msg_control = c->local_ctl.buf;
                    lg->smsg_b[nb].msg_hdr.msg_controllen = sizeof c->local_ctl.buf;
                }
                nb++;
            }
            seq = ++c->p_seq;
            p[0] = 0x80; p[1] = 0;
            put16(p + 2, seq); put32(p + 4, (uint32_t)seq * 160u); put32(p + 8, c->p_ssrc);
            put32(p + 12, c->index); put32(p + 16, seq); put64(p + 20, (uint64_t)t);
            lg->siov_p[n] = (struct iovec){p, PKT};
            lg->smsg_p[n].msg_hdr = (struct msghdr){.msg_name = &c->gw_phone, .msg_namelen = sizeof c->gw_phone,
                                                    .msg_iov = &lg->siov_p[n], .msg_iovlen = 1};
            if (t >= lg->window_start && t < lg->window_end) {
                lg->b2p.sent++;
                lg->p2b.sent++;
            }
            if (t >= c->next_consent) {
                send_consent(lg, c);
                c->next_consent += CONSENT_NS;
                if (c->next_consent < t) c->next_consent = t + CONSENT_NS;
            }
        }
        flush(lg, lg->browser_fd, lg->smsg_b, nb);
        flush(lg, lg->phone_fd, lg->smsg_p, n);
    }
}

/* -- API (ctypes) ------------------------------------------------------------------------------------ */

/* The loop drops the lock only while it sleeps, and when it is behind (a busy core) it does not sleep:
 * an API call could then wait for seconds, and lg_window's reset land after the window it opens had
 * started (seen: received > sent). So a caller says it waits, and the loop lets it in after a slot. */
static void api_lock(lg_t *lg) {
    atomic_fetch_add(&lg->waiters, 1);
    pthread_mutex_lock(&lg->lock);
}

static void api_unlock(lg_t *lg) {
    pthread_mutex_unlock(&lg->lock);
    atomic_fetch_sub(&lg->waiters, 1);
}

/* Once per process: the libsrtp2 shared object to use (a path, or a name dlopen finds). */
int lg_init(const char *srtp_library) {
    void *h = dlopen(srtp_library, RTLD_NOW | RTLD_LOCAL);
    if (h == NULL) {
        fprintf(stderr, "loadgen_c: %s\n", dlerror());
        return -1;
    }
    *(void **)&S.init = dlsym(h, "srtp_init");
    *(void **)&S.create = dlsym(h, "srtp_create");
    *(void **)&S.protect = dlsym(h, "srtp_protect");
    *(void **)&S.unprotect = dlsym(h, "srtp_unprotect");
    *(void **)&S.dealloc = dlsym(h, "srtp_dealloc");
    *(void **)&S.rtp_default = dlsym(h, "srtp_crypto_policy_set_rtp_default");
    *(void **)&S.rtcp_default = dlsym(h, "srtp_crypto_policy_set_rtcp_default");
    if (!S.init || !S.create || !S.protect || !S.unprotect || !S.dealloc || !S.rtp_default || !S.rtcp_default) {
        fprintf(stderr, "loadgen_c: %s lacks the libsrtp2 API\n", srtp_library);
        return -1;
    }
    srtp_err_status_t st = S.init();
    /* bad_param: already initialised (pylibsrtp did it on import; its debug module is registered) */
    if (st != srtp_err_status_ok && st != srtp_err_status_bad_param) {
        fprintf(stderr, "loadgen_c: srtp_init: error %d\n", (int)st);
        return -1;
    }
    crc_init();
    return 0;
}

lg_t *lg_create(int browser_fd, int phone_fd, int forward_fd) {
    if (S.create == NULL) return NULL; /* lg_init first */
    lg_t *lg = calloc(1, sizeof *lg);
    if (lg == NULL) return NULL;
    lg->browser_fd = browser_fd;
    lg->phone_fd = phone_fd;
    lg->forward_fd = forward_fd;
    pthread_mutex_init(&lg->lock, NULL);
    for (int i = 0; i < RBATCH; i++) {
        lg->riov[i] = (struct iovec){lg->rbuf[i], BUFSZ};
        lg->rmsg[i].msg_hdr = (struct msghdr){.msg_name = &lg->rname[i], .msg_namelen = sizeof lg->rname[i],
                                              .msg_iov = &lg->riov[i], .msg_iovlen = 1,
                                              .msg_control = lg->rctl[i], .msg_controllen = sizeof lg->rctl[i]};
    }
    int on = 1;
    setsockopt(browser_fd, SOL_SOCKET, SO_TIMESTAMPNS, &on, sizeof on);
    setsockopt(phone_fd, SOL_SOCKET, SO_TIMESTAMPNS, &on, sizeof on);
    setsockopt(browser_fd, IPPROTO_IP, IP_PKTINFO, &on, sizeof on); /* the local key of what arrives */
    clocks(lg);
    lg->running = 1;
    return lg;
}

static int session(srtp_t *s, const uint8_t *key_salt, int outbound) {
    srtp_policy_t policy;
    memset(&policy, 0, sizeof policy);
    S.rtp_default(&policy.rtp); /* AES_CM_128_HMAC_SHA1_80 */
    S.rtcp_default(&policy.rtcp);
    policy.ssrc.type = outbound ? ssrc_any_outbound : ssrc_any_inbound;
    policy.key = (unsigned char *)key_salt;
    policy.window_size = 1024;
    return S.create(s, &policy) == srtp_err_status_ok ? 0 : -1;
}

static int parse_addr(struct sockaddr_in *sa, const char *host, int port) {
    memset(sa, 0, sizeof *sa);
    sa->sin_family = AF_INET;
    sa->sin_port = htons((uint16_t)port);
    return inet_pton(AF_INET, host, &sa->sin_addr) == 1 ? 0 : -1;
}

static int grow(void **array, size_t *cap, size_t need) {
    if (need <= *cap) return 0;
    size_t n = *cap ? *cap * 2 : 64;
    while (n < need) n *= 2;
    void *p = realloc(*array, n * sizeof(call_t *));
    if (p == NULL) return -1;
    *array = p;
    *cap = n;
    return 0;
}

/* 0 when the call is in; keys are 30 bytes of master key || salt (RFC 5764 §4.2, already per direction).
 * local_ip: the browser's own address, 127.1.x.y ("" when the call is known by the relay's port). */
int lg_add_call(lg_t *lg, uint32_t index, const char *gw_browser_host, int gw_browser_port,
                const char *gw_phone_host, int gw_phone_port, uint32_t b_ssrc, uint32_t p_ssrc, int b_seq,
                int p_seq, const uint8_t *tx_key, const uint8_t *rx_key, const char *ufrag, const char *pwd,
                const char *gw_ufrag, const char *gw_pwd, const char *local_ip) {
    if (strlen(ufrag) >= UFRAG_MAX || strlen(pwd) >= UFRAG_MAX || strlen(gw_ufrag) >= UFRAG_MAX ||
        strlen(gw_pwd) >= UFRAG_MAX)
        return -1;
    call_t *c = calloc(1, sizeof *c);
    if (c == NULL) return -1;
    c->index = index;
    c->b_ssrc = b_ssrc;
    c->p_ssrc = p_ssrc;
    c->b_seq = (uint16_t)b_seq;
    c->p_seq = (uint16_t)p_seq;
    strcpy(c->ufrag, ufrag);
    c->ufrag_len = strlen(ufrag);
    strcpy(c->pwd, pwd);
    strcpy(c->gw_pwd, gw_pwd);
    c->username_len = (size_t)snprintf(c->username, sizeof c->username, "%s:%s", gw_ufrag, ufrag);
    c->local_key = -1;
    if (local_ip != NULL && local_ip[0] != 0) {
        struct in_pktinfo pi;
        memset(&pi, 0, sizeof pi);
        uint32_t a;
        if (inet_pton(AF_INET, local_ip, &pi.ipi_spec_dst) != 1 || ((a = ntohl(pi.ipi_spec_dst.s_addr)) >> 16) != 0x7F01) {
            free(c);
            return -1;
        }
        c->local_key = (int)(a & 0xFFFF);
        struct cmsghdr *cm = (struct cmsghdr *)c->local_ctl.buf;
        cm->cmsg_level = IPPROTO_IP;
        cm->cmsg_type = IP_PKTINFO;
        cm->cmsg_len = CMSG_LEN(sizeof pi);
        memcpy(CMSG_DATA(cm), &pi, sizeof pi);
    }
    if (parse_addr(&c->gw_browser, gw_browser_host, gw_browser_port) ||
        parse_addr(&c->gw_phone, gw_phone_host, gw_phone_port) || session(&c->tx, tx_key, 1)) {
        free(c);
        return -1;
    }
    if (session(&c->rx, rx_key, 0)) {
        S.dealloc(c->tx);
        free(c);
        return -1;
    }
    api_lock(lg);
    /* the slot with the fewest calls, so the 20 slots stay even */
    int k = 0;
    for (int i = 1; i < SLOTS; i++)
        if (lg->slot_len[i] < lg->slot_len[k]) k = i;
    int rc = grow((void **)&lg->calls, &lg->cap, lg->ncalls + 1) ||
             grow((void **)&lg->slot[k], &lg->slot_cap[k], lg->slot_len[k] + 1);
    if (rc == 0) {
        /* consent checks spread over the period (RFC 7675 §5.1 wants them randomized anyway) */
        c->next_consent = now_ns() + (int64_t)(((uint64_t)lg->ncalls * 2654435761u) % (uint64_t)CONSENT_NS);
        lg->calls[lg->ncalls++] = c;
        lg->slot[k][lg->slot_len[k]++] = c;
        if (c->local_key >= 0)
            lg->by_local[c->local_key] = c;
        else
            lg->by_port[gw_browser_port & 0xFFFF] = c;
    }
    api_unlock(lg);
    if (rc) {
        S.dealloc(c->tx);
        S.dealloc(c->rx);
        free(c);
        return -1;
    }
    return 0;
}

/* The loop; returns within a slot of lg_stop(). */
int lg_run(lg_t *lg) {
    /* Ahead of the process's Python thread, whose call setups (DTLS handshakes) would otherwise delay
     * the media of the calls already up: a per-thread nice, which only weighs inside the generator's
     * own session (autogroup), so nothing else on the machine is pushed back. Root only; else ignored. */
    pid_t tid = (pid_t)syscall(SYS_gettid);
    errno = 0;
    int nice_now = getpriority(PRIO_PROCESS, (id_t)tid);
    if (errno == 0) setpriority(PRIO_PROCESS, (id_t)tid, nice_now - 5);
    pthread_mutex_lock(&lg->lock);
    int64_t due = now_ns();
    int k = 0;
    while (lg->running) {
        int64_t now = now_ns();
        if (due > now) {
            struct timespec ts = {due / 1000000000LL, due % 1000000000LL};
            pthread_mutex_unlock(&lg->lock);
            clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
            pthread_mutex_lock(&lg->lock);
            continue;
        }
        int64_t late = now - due;
        if (late > SLOT_NS) {
            lg->counters.late_slots++;
            if ((uint64_t)late > lg->counters.max_late_ns) lg->counters.max_late_ns = (uint64_t)late;
        }
        if (k == 0) clocks(lg); /* every 20 ms: follows any NTP slew of CLOCK_REALTIME */
        drain_browser(lg);
        drain_phone(lg);
        send_slot(lg, k);
        k = (k + 1) % SLOTS;
        due += SLOT_NS;
        if (atomic_load(&lg->waiters)) {
            pthread_mutex_unlock(&lg->lock);
            while (atomic_load(&lg->waiters)) sched_yield();
            pthread_mutex_lock(&lg->lock);
        }
    }
    pthread_mutex_unlock(&lg->lock);
    return 0;
}

void lg_stop(lg_t *lg) { lg->running = 0; }

/* A new measurement window: counters back to zero. */
void lg_window(lg_t *lg, int64_t start_ns, int64_t end_ns) {
    api_lock(lg);
    memset(&lg->b2p, 0, sizeof lg->b2p);
    memset(&lg->p2b, 0, sizeof lg->p2b);
    uint64_t calls = lg->counters.calls;
    memset(&lg->counters, 0, sizeof lg->counters);
    lg->counters.calls = calls;
    lg->window_start = start_ns;
    lg->window_end = end_ns;
    api_unlock(lg);
}

void lg_report(lg_t *lg, lg_report_t *out, uint32_t *hist_b2p, uint32_t *hist_p2b) {
    api_lock(lg);
    *out = lg->counters;
    out->calls = lg->ncalls;
    out->sent_b2p = lg->b2p.sent;
    out->received_b2p = lg->b2p.received;
    out->sent_p2b = lg->p2b.sent;
    out->received_p2b = lg->p2b.received;
    memcpy(hist_b2p, lg->b2p.hist, sizeof lg->b2p.hist);
    memcpy(hist_p2b, lg->p2b.hist, sizeof lg->p2b.hist);
    api_unlock(lg);
}

int lg_bins(void) { return BINS; }

/* After lg_run() returned: frees everything but the sockets, which are Python's. */
void lg_destroy(lg_t *lg) {
    for (size_t i = 0; i < lg->ncalls; i++) {
        S.dealloc(lg->calls[i]->tx);
        S.dealloc(lg->calls[i]->rx);
        free(lg->calls[i]);
    }
    free(lg->calls);
    for (int i = 0; i < SLOTS; i++) free(lg->slot[i]);
    pthread_mutex_destroy(&lg->lock);
    free(lg);
}
