/* The media fast path's I/O engine: one native thread, epoll over the phone-side RTP sockets and the
 * WebRTC socket(s), recvmmsg/sendmmsg, a bounded hand-up queue signalled through an eventfd. No Python:
 * _fastpath.c binds it. One mutex (lock) guards the core and the queue; the thread holds it for one
 * epoll batch. */
#ifndef RTC2SIP_FP_ENGINE_H
#define RTC2SIP_FP_ENGINE_H

#include <pthread.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "fp_core.h"

#define RECV_BATCH 32
#define SEND_BATCH 64
#define MAX_WEBRTC_FDS 16
#define WEBRTC_READS 32 /* recvmmsg calls per readiness of a WebRTC socket: up to 1024 datagrams */
#define TAG_WEBRTC (1ULL << 62)
#define TAG_STOP (1ULL << 61)

enum up_kind {
    UP_WEBRTC = 0,
    UP_WEBRTC_PLAIN = 1,
    UP_LEGACY = 2,
    UP_COPY_WEBRTC = 3,
    UP_COPY_LEGACY = 4,
    UP_LEGACY_PLAIN = 5
};

typedef struct up_entry {
    uint8_t kind;
    int32_t session, stream; /* handles, -1 */
    int fd;
    fp_addr addr;
    double arrival;
    uint16_t len;
    uint8_t data[FP_BUF_SIZE];
} up_entry;

typedef struct send_batch {
    int fd;
    int count;
    struct mmsghdr msgs[SEND_BATCH];
    struct iovec iov[SEND_BATCH];
    fp_addr dest[SEND_BATCH];
    uint8_t data[SEND_BATCH][FP_BUF_SIZE];
} send_batch;

typedef struct fp_engine {
    pthread_mutex_t lock;
    int lock_ok;
    fp_core core;
    int core_ok;
    int epfd, evfd, stopfd;
    pthread_t thread;
    int running, stopping;
    int dead; /* the thread ended without being asked (epoll or memory failure): nothing reads the sockets */
    up_entry *queue;
    int qcap, qhead, qcount, signalled;
    int webrtc_fds[MAX_WEBRTC_FDS];
    int nwebrtc;
    send_batch *batches; /* one per WebRTC socket */
    uint8_t copy_buf[FP_BUF_SIZE];   /* the engine thread's */
    uint64_t datagrams_in, datagrams_out, recv_calls, send_batches, send_errors, truncated,
        queue_full, handed_up, wakeups;
    uint64_t webrtc_in, webrtc_out; /* of those, on the WebRTC socket(s): the shared socket's own counters */
} fp_engine;


static inline int32_t fp_handle_of(uint32_t gen, int idx) { return (int32_t)(gen << 16 | (uint32_t)idx); }
int32_t fp_stream_handle(fp_engine *e, int idx);
int32_t fp_session_handle(fp_engine *e, int idx);
double fp_monotonic(void);

/* 0, or -1 with errno set (ENOMEM included); the engine is then half built: fp_engine_free it. */
int fp_engine_init(fp_engine *e, int max_streams, int max_sessions, int queue_size);
void fp_engine_free(fp_engine *e);
int fp_engine_start(fp_engine *e);
void fp_engine_stop(fp_engine *e); /* joins the thread: call without the GIL */
/* Under the lock: */
int fp_engine_add_webrtc_fd(fp_engine *e, int fd); /* 0, -1 errno (EEXIST, EMFILE, epoll's) */
void fp_engine_remove_webrtc_fd(fp_engine *e, int fd);
int fp_engine_watch_stream(fp_engine *e, int stream, int fd);
void fp_engine_remove_stream(fp_engine *e, int stream);
void fp_engine_remove_session(fp_engine *e, int session);
int fp_engine_is_webrtc_fd(fp_engine *e, int fd);

#endif
