/* The media fast path's sans-I/O core: one bridged stream's per-packet work in C.
 *
 * RFC 3550 §5.1 (RTP header), §8.2 and RFC 7667 §3.2.1.3 (SSRC/sequence/timestamp continuity
 * across source changes), §A.1/§A.8 (receive statistics for the report blocks), RFC 3711 §3.3
 * (SRTP, through libsrtp function pointers taken from pylibsrtp's compiled module), RFC 4585
 * §6.2.1 (the history generic NACKs are answered from), RFC 7983 §7 and RFC 5761 §4 (first-byte
 * and RTCP demultiplexing), RFC 5764 (DTLS-SRTP: the keys come from Python after the handshake).
 *
 * Everything here mirrors rtc2sip.media.rtp.RtpRewriter, media.nack.RetransmissionHistory,
 * media.rtcpstats.ReceiveStatistics.update and the packet path of media.path.StreamPath, byte for byte:
 * tests/unit/test_fastpath_core.py compares the two on the same packets. No I/O, no allocation on
 * the packet path except the NACK history's slot buffers (grown once, then reused).
 */
#ifndef RTC2SIP_FP_CORE_H
#define RTC2SIP_FP_CORE_H

#include <stdint.h>
#include <sys/socket.h>
#include <netinet/in.h>

/* pylibsrtp's working buffer is 1500 bytes (media/srtp.py): a longer packet is an SrtpError there. */
#define FP_MAX_PACKET 1500
/* SRTP_MAX_TRAILER_LEN of libsrtp 2 (tag 16 + MKI 128): the room protect needs after the packet. */
#define FP_MAX_TRAILER 144
#define FP_BUF_SIZE 2048
#define FP_MAX_SSRCS 32 /* relay.MAX_LEARNT_SSRCS */
#define FP_MAX_TAIL 4096 /* bound on avpf-tail-length's maximum */
#define FP_RELATCH_AFTER 2.0 /* relay.RELATCH_AFTER */

typedef int (*fp_srtp_fn)(void *ctx, void *buf, int *len);

typedef struct fp_addr {
    socklen_t len; /* 0: none */
    struct sockaddr_storage ss;
} fp_addr;

int fp_addr_equal(const fp_addr *a, const fp_addr *b);
uint32_t fp_addr_hash(const fp_addr *a);

typedef struct fp_rewriter {
    uint32_t ssrc;
    int clock_rate;
    int16_t pt_map[128];
    int has_source;  /* Python's _source is not None */
    int64_t source;  /* -1 after take(): no SSRC, the next packet recomputes the offsets */
    uint16_t seq_offset;
    uint32_t ts_offset;
    uint16_t last_seq;
    uint32_t last_ts;
    double last_arrival;
} fp_rewriter;

void fp_rewriter_init(fp_rewriter *rw, uint32_t ssrc, int clock_rate, uint16_t initial_sequence);
int fp_rewrite(fp_rewriter *rw, uint8_t *buf, double arrival);
void fp_rewriter_take(fp_rewriter *rw, double arrival, uint16_t *seq, uint32_t *ts);

typedef struct fp_hslot {
    uint16_t seq;
    uint16_t len;
    uint16_t cap;
    uint8_t *data;
} fp_hslot;

typedef struct fp_history {
    int min_tail, max_tail, depth;
    int head, count, cap; /* ring of cap = max_tail + 1 slots, oldest at head */
    fp_hslot *slots;
    uint8_t present[8192]; /* one bit per 16-bit sequence number */
    int has_newest;
    uint16_t newest;
    uint64_t hits, misses, unknown;
} fp_history;

fp_history *fp_history_new(int min_tail, int max_tail);
void fp_history_free(fp_history *h);
int fp_history_store(fp_history *h, uint16_t seq, const uint8_t *data, int len);
typedef void (*fp_history_emit)(void *arg, const uint8_t *data, int len);
int fp_history_lookup(fp_history *h, const uint16_t *seqs, int n, fp_history_emit emit, void *arg);

typedef struct fp_rxstats {
    int valid; /* Python: the ReceiveStatistics object exists */
    uint32_t ssrc;
    int clock_rate;
    int min_sequential;
    int probation;
    int started;
    uint64_t received;
    uint32_t max_seq, base_seq, bad_seq;
    uint64_t cycles;
    int has_transit;
    uint32_t transit;
    double jitter;
} fp_rxstats;

void fp_rxstats_init(fp_rxstats *rx, uint32_t ssrc, int clock_rate, int min_sequential);
int fp_rxstats_update(fp_rxstats *rx, uint16_t seq, uint32_t ts, double arrival);

typedef struct fp_legstats { /* relay.LegStats, the per-packet part */
    uint64_t packets_in, bytes_in, packets_out, bytes_out, dropped, srtp_errors;
    double last_in;
} fp_legstats;

enum fp_mode {
    FP_MODE_FORWARD = 0, /* relayed in C */
    FP_MODE_COPY = 1,    /* relayed in C, and every received packet also handed up (taps) */
    FP_MODE_PYTHON = 2   /* Python relays it (coder): packets of both legs handed up after SRTP,
                            latching and counting; the SRTP contexts stay here (fp protect calls) */
};

typedef struct fp_stream {
    int in_use;
    uint32_t gen;
    int session;
    int legacy_fd;
    int mode;
    fp_rewriter to_legacy, to_webrtc;
    int symmetric;
    fp_addr latched;
    double latched_last;
    fp_addr sdp_dest;    /* len 0: hold, or no peer yet */
    fp_addr legacy_dest; /* where packets toward the phone go (len 0: nowhere) */
    int legacy_mux;
    void *legacy_rx_srtp, *legacy_tx_srtp; /* SDES on the legacy leg, or NULL */
    fp_history *history;
    fp_legstats webrtc, legacy;
    fp_rxstats webrtc_rx, legacy_rx;
    int clock_rate, webrtc_clock_rate;
    int has_last_webrtc_out, has_last_legacy_out;
    uint32_t last_webrtc_out_ts, last_legacy_out_ts;
    double last_webrtc_out_time, last_legacy_out_time;
    uint64_t retransmitted;
} fp_stream;

typedef struct fp_session {
    int in_use;
    uint32_t gen;
    int webrtc_fd;
    fp_addr remote; /* the ICE-selected pair's remote address: source accepted, destination used */
    int hash_next;  /* next session in the same address bucket, -1 */
    int hashed;
    void *srtp_rx, *srtp_tx;
    int nssrc;
    uint32_t ssrcs[FP_MAX_SSRCS];
    int ssrc_stream[FP_MAX_SSRCS];
    uint64_t dropped, srtp_errors;
} fp_session;

#define FP_HASH_BUCKETS 4096

typedef struct fp_core {
    int max_streams, max_sessions;
    fp_stream *streams;
    fp_session *sessions;
    int buckets[FP_HASH_BUCKETS];
    fp_srtp_fn protect, unprotect;
    uint64_t unknown_source, not_rtp, handed_up;
} fp_core;

/* What to do with one datagram. */
enum fp_verdict {
    FP_DROP = 0,    /* counted, never forwarded */
    FP_UP = 1,      /* hand the datagram up to Python unchanged */
    FP_SEND = 2,    /* send data to dest (on fd) */
    FP_UP_PLAIN = 3 /* hand up the unprotected RTP (unknown SSRC, or a Python-relayed stream) */
};

typedef struct fp_result {
    int verdict;
    int session;  /* index, -1 when unknown */
    int stream;   /* index, -1 when unknown */
    int fd;       /* where to send */
    const fp_addr *dest;
    uint8_t *data; /* the packet to send (in the caller's buffer) */
    int len;
    int copy_len;  /* > 0, whatever the verdict: copy_buf holds the plain packet received, for the taps */
} fp_result;

int fp_core_init(fp_core *core, int max_streams, int max_sessions);
void fp_core_free(fp_core *core);
int fp_session_add(fp_core *core);
void fp_session_remove(fp_core *core, int s);
void fp_session_set_remote(fp_core *core, int s, int fd, const fp_addr *remote);
int fp_session_find(fp_core *core, const fp_addr *src);
int fp_session_learn(fp_core *core, int s, uint32_t ssrc, int stream);
int fp_stream_add(fp_core *core, int session);
void fp_stream_remove(fp_core *core, int st);
/* relay._Stream.configure's legacy part: a new SDP address, or hold, latches afresh. */
void fp_stream_set_peer(fp_stream *st, const fp_addr *sdp_dest, int hold, int legacy_mux);

/* buf holds len bytes and has FP_BUF_SIZE room; copy_buf FP_BUF_SIZE (may be NULL: no copies). */
void fp_from_webrtc(fp_core *core, int fd, uint8_t *buf, int len, const fp_addr *src, double now,
                    uint8_t *copy_buf, fp_result *res);
/* The part of fp_from_webrtc after SRTP and demultiplexing: `n` >= 12 bytes of plain RTP for stream
 * `sti` (Python demultiplexed its new SSRC and hands the packet back, so no packet is lost). */
void fp_relay_plain_webrtc(fp_core *core, int sti, uint8_t *buf, int n, double now, uint8_t *copy_buf,
                           fp_result *res);
void fp_from_legacy(fp_core *core, int stream, uint8_t *buf, int len, const fp_addr *src, double now,
                    uint8_t *copy_buf, fp_result *res);

#endif
