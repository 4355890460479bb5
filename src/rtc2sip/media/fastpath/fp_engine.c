/* The media fast path's I/O engine (fp_engine.h): the thread, its batches and the hand-up queue. */
#define _GNU_SOURCE /* recvmmsg, sendmmsg */
#include "fp_engine.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#define LOCK(e) pthread_mutex_lock(&(e)->lock)
#define UNLOCK(e) pthread_mutex_unlock(&(e)->lock)

double fp_monotonic(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + t.tv_nsec * 1e-9;
}


int32_t fp_stream_handle(fp_engine *e, int idx)
{
    return idx < 0 ? -1 : fp_handle_of(e->core.streams[idx].gen, idx);
}

int32_t fp_session_handle(fp_engine *e, int idx)
{
    return idx < 0 ? -1 : fp_handle_of(e->core.sessions[idx].gen, idx);
}


static void enqueue(fp_engine *e, int kind, int session, int stream, int fd, const fp_addr *addr,
                    const uint8_t *data, int len, double now)
{
    if (e->qcount >= e->qcap || len < 0 || len > FP_BUF_SIZE) {
        e->queue_full++;
        return;
    }
    up_entry *u = &e->queue[(e->qhead + e->qcount) % e->qcap];
    u->kind = (uint8_t)kind;
    u->session = fp_session_handle(e, session);
    u->stream = fp_stream_handle(e, stream);
    u->fd = fd;
    u->addr = *addr;
    u->arrival = now;
    u->len = (uint16_t)len;
    memcpy(u->data, data, (size_t)len);
    e->qcount++;
    e->handed_up++;
}

static void flush_batch(fp_engine *e, send_batch *b)
{
    int done = 0;
    while (done < b->count) {
        int n = sendmmsg(b->fd, b->msgs + done, (unsigned)(b->count - done), MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            e->send_errors++; /* this message refused (full buffer, unreachable): skip it */
            done++;
            continue;
        }
        e->datagrams_out += (uint64_t)n;
        e->webrtc_out += (uint64_t)n;
        done += n;
    }
    if (b->count)
        e->send_batches++;
    b->count = 0;
}

static send_batch *batch_for(fp_engine *e, int fd)
{
    for (int i = 0; i < e->nwebrtc; i++)
        if (e->webrtc_fds[i] == fd)
            return &e->batches[i];
    return NULL;
}

static void send_one(fp_engine *e, int fd, const fp_addr *dest, const uint8_t *data, int len)
{
    send_batch *b = batch_for(e, fd);
    if (b == NULL) { /* a phone-side socket: one sendto (each is its own socket, as phones expect) */
        if (sendto(fd, data, (size_t)len, MSG_DONTWAIT, (const struct sockaddr *)&dest->ss, dest->len) < 0)
            e->send_errors++;
        else
            e->datagrams_out++;
        return;
    }
    if (b->count == SEND_BATCH)
        flush_batch(e, b);
    int i = b->count++;
    memcpy(b->data[i], data, (size_t)len);
    b->dest[i] = *dest;
    b->iov[i].iov_base = b->data[i];
    b->iov[i].iov_len = (size_t)len;
    memset(&b->msgs[i], 0, sizeof b->msgs[i]);
    b->msgs[i].msg_hdr.msg_name = &b->dest[i].ss;
    b->msgs[i].msg_hdr.msg_namelen = b->dest[i].len;
    b->msgs[i].msg_hdr.msg_iov = &b->iov[i];
    b->msgs[i].msg_hdr.msg_iovlen = 1;
}

static void handle_result(fp_engine *e, const fp_result *r, int from_webrtc, int fd, const fp_addr *src,
                          const uint8_t *orig, int orig_len, double now)
{
    if (r->copy_len > 0)
        enqueue(e, from_webrtc ? UP_COPY_WEBRTC : UP_COPY_LEGACY, r->session, r->stream, fd, src,
                e->copy_buf, r->copy_len, now);
    switch (r->verdict) {
    case FP_SEND:
        send_one(e, r->fd, r->dest, r->data, r->len);
        break;
    case FP_UP:
        enqueue(e, from_webrtc ? UP_WEBRTC : UP_LEGACY, r->session, r->stream, fd, src, orig, orig_len, now);
        break;
    case FP_UP_PLAIN:
        enqueue(e, from_webrtc ? UP_WEBRTC_PLAIN : UP_LEGACY_PLAIN, r->session, r->stream, fd, src, r->data, r->len,
                now);
        break;
    default:
        break;
    }
}

typedef struct rx_batch {
    struct mmsghdr msgs[RECV_BATCH];
    struct iovec iov[RECV_BATCH];
    struct sockaddr_storage addr[RECV_BATCH];
    uint8_t data[RECV_BATCH][FP_BUF_SIZE];
} rx_batch;

static int read_socket(fp_engine *e, rx_batch *rx, int fd, int stream)
{
    for (int i = 0; i < RECV_BATCH; i++) {
        rx->iov[i].iov_base = rx->data[i];
        rx->iov[i].iov_len = FP_MAX_PACKET + 1; /* one byte more: a longer datagram is MSG_TRUNC */
        memset(&rx->msgs[i].msg_hdr, 0, sizeof rx->msgs[i].msg_hdr);
        rx->msgs[i].msg_hdr.msg_name = &rx->addr[i];
        rx->msgs[i].msg_hdr.msg_namelen = sizeof rx->addr[i];
        rx->msgs[i].msg_hdr.msg_iov = &rx->iov[i];
        rx->msgs[i].msg_hdr.msg_iovlen = 1;
    }
    /* level-triggered epoll: one call per readiness, no second call just to see EAGAIN */
    int n = recvmmsg(fd, rx->msgs, stream < 0 ? RECV_BATCH : 8, MSG_DONTWAIT, NULL);
    e->recv_calls++;
    if (n <= 0)
        return 0;
    double now = fp_monotonic();
    for (int i = 0; i < n; i++) {
        fp_addr src;
        src.len = rx->msgs[i].msg_hdr.msg_namelen;
        memcpy(&src.ss, &rx->addr[i], sizeof src.ss);
        int len = (int)rx->msgs[i].msg_len;
        e->datagrams_in++;
        if (stream < 0)
            e->webrtc_in++;
        if (rx->msgs[i].msg_hdr.msg_flags & MSG_TRUNC || len > FP_MAX_PACKET) {
            e->truncated++;
            continue;
        }
        fp_result r;
        if (stream < 0) {
            /* an FP_UP verdict is always given before the core touches buf (fp_from_webrtc) */
            fp_from_webrtc(&e->core, fd, rx->data[i], len, &src, now, e->copy_buf, &r);
            handle_result(e, &r, 1, fd, &src, rx->data[i], len, now);
        } else {
            fp_from_legacy(&e->core, stream, rx->data[i], len, &src, now, e->copy_buf, &r);
            handle_result(e, &r, 0, fd, &src, rx->data[i], len, now);
        }
    }
    return n;
}

static void *engine_main(void *arg)
{
    fp_engine *e = arg;
    struct epoll_event events[64];
    rx_batch *rx = malloc(sizeof *rx);
    if (rx == NULL) {
        LOCK(e);
        e->dead = 1;
        UNLOCK(e);
        return NULL;
    }
    for (;;) {
        int n = epoll_wait(e->epfd, events, 64, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            LOCK(e);
            e->dead = 1;
            UNLOCK(e);
            break;
        }
        LOCK(e);
        e->wakeups++;
        for (int i = 0; i < n && !e->stopping; i++) {
            uint64_t tag = events[i].data.u64;
            if (tag & TAG_STOP) {
                e->stopping = 1;
            } else if (tag & TAG_WEBRTC) {
                int fd = (int)(tag & 0xFFFFFFFF);
                /* the shared socket carries every call's browser leg, against one datagram per phone
                 * socket: drain it further per readiness, or it falls behind the phone sockets */
                for (int k = 0; k < WEBRTC_READS && batch_for(e, fd) != NULL; k++)
                    if (read_socket(e, rx, fd, -1) < RECV_BATCH)
                        break;
            } else {
                int idx = (int)(tag & 0xFFFF);
                uint32_t gen = (uint32_t)(tag >> 16 & 0x7FFF);
                int fd = (int)(tag >> 32 & 0xFFFFFFF);
                if (idx < e->core.max_streams && e->core.streams[idx].in_use && e->core.streams[idx].gen == gen &&
                    e->core.streams[idx].legacy_fd == fd)
                    read_socket(e, rx, fd, idx);
            }
        }
        for (int i = 0; i < e->nwebrtc; i++)
            flush_batch(e, &e->batches[i]);
        if (e->qcount && !e->signalled) {
            uint64_t one = 1;
            if (write(e->evfd, &one, sizeof one) == sizeof one)
                e->signalled = 1;
        }
        int stop = e->stopping;
        UNLOCK(e);
        if (stop)
            break;
    }
    free(rx);
    return NULL;
}


int fp_engine_init(fp_engine *e, int max_streams, int max_sessions, int queue_size)
{
    memset(e, 0, sizeof *e);
    e->epfd = e->evfd = e->stopfd = -1;
    if ((errno = pthread_mutex_init(&e->lock, NULL)) != 0)
        return -1;
    e->lock_ok = 1;
    if (fp_core_init(&e->core, max_streams, max_sessions) != 0) {
        errno = ENOMEM;
        return -1;
    }
    e->core_ok = 1;
    e->queue = calloc((size_t)queue_size, sizeof *e->queue);
    e->batches = calloc(MAX_WEBRTC_FDS, sizeof *e->batches);
    if (e->queue == NULL || e->batches == NULL) {
        errno = ENOMEM;
        return -1;
    }
    e->qcap = queue_size;
    e->epfd = epoll_create1(EPOLL_CLOEXEC);
    e->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    e->stopfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (e->epfd < 0 || e->evfd < 0 || e->stopfd < 0)
        return -1;
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = TAG_STOP};
    return epoll_ctl(e->epfd, EPOLL_CTL_ADD, e->stopfd, &ev);
}

void fp_engine_free(fp_engine *e)
{
    fp_engine_stop(e);
    if (e->core_ok)
        fp_core_free(&e->core);
    e->core_ok = 0;
    free(e->queue);
    free(e->batches);
    e->queue = NULL;
    e->batches = NULL;
    for (int *fd = &e->epfd; fd <= &e->stopfd; fd++)
        if (*fd >= 0) {
            close(*fd);
            *fd = -1;
        }
    if (e->lock_ok)
        pthread_mutex_destroy(&e->lock);
    e->lock_ok = 0;
}

int fp_engine_start(fp_engine *e)
{
    if (e->running)
        return 0;
    e->stopping = 0;
    e->dead = 0;
    if ((errno = pthread_create(&e->thread, NULL, engine_main, e)) != 0)
        return -1;
    e->running = 1;
    return 0;
}

void fp_engine_stop(fp_engine *e)
{
    if (!e->running)
        return;
    uint64_t one = 1, v;
    if (write(e->stopfd, &one, sizeof one) < 0) {
        /* an eventfd write fails only on overflow: the thread is being woken anyway */
    }
    pthread_join(e->thread, NULL);
    e->running = 0;
    if (read(e->stopfd, &v, sizeof v) < 0) {
        /* nothing pending */
    }
    e->stopping = 0;
}

int fp_engine_is_webrtc_fd(fp_engine *e, int fd) { return batch_for(e, fd) != NULL; }

int fp_engine_add_webrtc_fd(fp_engine *e, int fd)
{
    if (batch_for(e, fd) != NULL) {
        errno = EEXIST;
        return -1;
    }
    if (e->nwebrtc >= MAX_WEBRTC_FDS) {
        errno = EMFILE;
        return -1;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = TAG_WEBRTC | (uint32_t)fd};
    if (epoll_ctl(e->epfd, EPOLL_CTL_ADD, fd, &ev) != 0)
        return -1;
    e->batches[e->nwebrtc].fd = fd;
    e->batches[e->nwebrtc].count = 0;
    e->webrtc_fds[e->nwebrtc++] = fd;
    return 0;
}

void fp_engine_remove_webrtc_fd(fp_engine *e, int fd)
{
    for (int i = 0; i < e->nwebrtc; i++)
        if (e->webrtc_fds[i] == fd) {
            flush_batch(e, &e->batches[i]);
            epoll_ctl(e->epfd, EPOLL_CTL_DEL, fd, NULL);
            e->nwebrtc--;
            e->webrtc_fds[i] = e->webrtc_fds[e->nwebrtc];
            e->batches[i] = e->batches[e->nwebrtc]; /* iov/msg pointers are rebuilt on the next send */
            return;
        }
}

int fp_engine_watch_stream(fp_engine *e, int st, int fd)
{
    fp_stream *x = &e->core.streams[st];
    struct epoll_event ev = {.events = EPOLLIN};
    ev.data.u64 = (uint64_t)fd << 32 | (uint64_t)x->gen << 16 | (uint64_t)st;
    if (epoll_ctl(e->epfd, EPOLL_CTL_ADD, fd, &ev) != 0)
        return -1;
    x->legacy_fd = fd;
    return 0;
}

void fp_engine_remove_stream(fp_engine *e, int st)
{
    if (e->core.streams[st].legacy_fd >= 0)
        epoll_ctl(e->epfd, EPOLL_CTL_DEL, e->core.streams[st].legacy_fd, NULL);
    fp_stream_remove(&e->core, st);
}

void fp_engine_remove_session(fp_engine *e, int s)
{
    for (int i = 0; i < e->core.max_streams; i++) {
        fp_stream *st = &e->core.streams[i];
        if (st->in_use && st->session == s && st->legacy_fd >= 0)
            epoll_ctl(e->epfd, EPOLL_CTL_DEL, st->legacy_fd, NULL);
    }
    fp_session_remove(&e->core, s);
}
