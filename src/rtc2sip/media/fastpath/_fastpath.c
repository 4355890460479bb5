/* rtc2sip.media.fastpath._fastpath: the Python type over the fast path's core (fp_core.c) and its
 * I/O engine (fp_engine.c: one native thread, epoll, recvmmsg/sendmmsg, the hand-up queue).
 *
 * One mutex guards the core; the engine thread holds it while it processes one epoll batch and
 * never takes the GIL, so control calls from Python wait at most one batch. The sockets stay
 * Python's (it closes them after remove_stream/remove_webrtc_socket); stream and session handles
 * carry a generation, so a stale handle or a readiness event of a removed stream does nothing.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <arpa/inet.h>
#include <errno.h>
#include <stddef.h>
#include <pthread.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "fp_engine.h"

typedef struct {
    PyObject_HEAD
    fp_engine eng;
    uint8_t sans_buf[FP_BUF_SIZE]; /* process_*'s, under the lock */
    uint8_t sans_copy[FP_BUF_SIZE];
    up_entry *scratch; /* drain's copies, DRAIN_MAX of them, made on first use */
} Engine;


/* -- addresses as Python's socket module gives them (media.ports.wire_address's forms) -------------- */

static int addr_from_py(PyObject *obj, fp_addr *out)
{
    memset(out, 0, sizeof *out);
    if (obj == Py_None)
        return 0;
    if (!PyTuple_Check(obj) || (PyTuple_GET_SIZE(obj) != 2 && PyTuple_GET_SIZE(obj) != 4)) {
        PyErr_SetString(PyExc_TypeError, "address must be (host, port) or (host, port, flowinfo, scope_id)");
        return -1;
    }
    const char *host = PyUnicode_AsUTF8(PyTuple_GET_ITEM(obj, 0));
    if (host == NULL)
        return -1;
    long port = PyLong_AsLong(PyTuple_GET_ITEM(obj, 1));
    if (port == -1 && PyErr_Occurred())
        return -1;
    if (port < 0 || port > 65535) {
        PyErr_SetString(PyExc_ValueError, "port out of range");
        return -1;
    }
    if (PyTuple_GET_SIZE(obj) == 2) {
        struct sockaddr_in *a = (void *)&out->ss;
        a->sin_family = AF_INET;
        a->sin_port = htons((uint16_t)port);
        if (inet_pton(AF_INET, host, &a->sin_addr) != 1) {
            PyErr_Format(PyExc_ValueError, "not an IPv4 address: %s", host);
            return -1;
        }
        out->len = sizeof *a;
    } else {
        struct sockaddr_in6 *a = (void *)&out->ss;
        unsigned long flow = PyLong_AsUnsignedLong(PyTuple_GET_ITEM(obj, 2));
        unsigned long scope = PyLong_AsUnsignedLong(PyTuple_GET_ITEM(obj, 3));
        if (PyErr_Occurred())
            return -1;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons((uint16_t)port);
        a->sin6_flowinfo = htonl((uint32_t)flow);
        a->sin6_scope_id = (uint32_t)scope;
        if (inet_pton(AF_INET6, host, &a->sin6_addr) != 1) {
            PyErr_Format(PyExc_ValueError, "not an IPv6 address: %s", host);
            return -1;
        }
        out->len = sizeof *a;
    }
    return 0;
}

static PyObject *addr_to_py(const fp_addr *a)
{
    char text[INET6_ADDRSTRLEN];
    if (a == NULL || a->len == 0)
        Py_RETURN_NONE;
    if (a->ss.ss_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)&a->ss;
        inet_ntop(AF_INET, &x->sin_addr, text, sizeof text);
        return Py_BuildValue("(si)", text, ntohs(x->sin_port));
    }
    const struct sockaddr_in6 *x = (const void *)&a->ss;
    inet_ntop(AF_INET6, &x->sin6_addr, text, sizeof text);
    return Py_BuildValue("(siII)", text, ntohs(x->sin6_port), ntohl(x->sin6_flowinfo), x->sin6_scope_id);
}

/* -- handles ---------------------------------------------------------------------------------------- */

static int stream_index(Engine *e, long handle)
{
    int idx = (int)(handle & 0xFFFF);
    if (handle < 0 || idx >= e->eng.core.max_streams || !e->eng.core.streams[idx].in_use ||
        e->eng.core.streams[idx].gen != (uint32_t)(handle >> 16)) {
        PyErr_Format(PyExc_KeyError, "no fast-path stream %ld", handle);
        return -1;
    }
    return idx;
}

static int session_index(Engine *e, long handle)
{
    int idx = (int)(handle & 0xFFFF);
    if (handle < 0 || idx >= e->eng.core.max_sessions || !e->eng.core.sessions[idx].in_use ||
        e->eng.core.sessions[idx].gen != (uint32_t)(handle >> 16)) {
        PyErr_Format(PyExc_KeyError, "no fast-path session %ld", handle);
        return -1;
    }
    return idx;
}

#define CHECK_INIT(e)                                                       \
    if (!(e)->eng.core_ok) {                                                    \
        PyErr_SetString(PyExc_RuntimeError, "Engine not initialised");      \
        return NULL;                                                        \
    }

#define LOCK(e) pthread_mutex_lock(&(e)->eng.lock)
#define UNLOCK(e) pthread_mutex_unlock(&(e)->eng.lock)

/* Every setter's shape: under the lock, look the handle up (KeyError if stale), change the entry. */
#define SET_UNDER_LOCK(e, index_of, handle, i, ...) \
    do {                                              \
        CHECK_INIT(e);                                \
        LOCK(e);                                      \
        int i = index_of(e, handle);                  \
        if (i >= 0)                                   \
            __VA_ARGS__                               \
        UNLOCK(e);                                    \
        if (i < 0)                                    \
            return NULL;                              \
        Py_RETURN_NONE;                               \
    } while (0)

/* -- the engine thread ---------------------------------------------------------------------------- */

/* -- type ----------------------------------------------------------------------------------------- */

static void Engine_dealloc(Engine *e);

static int Engine_init(Engine *e, PyObject *args, PyObject *kw)
{
    static char *names[] = {"max_streams", "max_sessions", "queue_size", NULL};
    int max_streams = 4096, max_sessions = 4096, queue_size = 1024;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|iii", names, &max_streams, &max_sessions, &queue_size))
        return -1;
    if (e->eng.core_ok) {
        PyErr_SetString(PyExc_RuntimeError, "Engine already initialised");
        return -1;
    }
    if (max_streams < 1 || max_streams > 65535 || max_sessions < 1 || max_sessions > 65535 || queue_size < 1 ||
        queue_size > 65536) {
        PyErr_SetString(PyExc_ValueError, "max_streams, max_sessions 1..65535, queue_size 1..65536");
        return -1;
    }
    if (fp_engine_init(&e->eng, max_streams, max_sessions, queue_size) != 0) {
        PyErr_SetFromErrno(errno == ENOMEM ? PyExc_MemoryError : PyExc_OSError);
        fp_engine_free(&e->eng);
        return -1;
    }
    return 0;
}

static void stop_thread(Engine *e)
{
    Py_BEGIN_ALLOW_THREADS
    fp_engine_stop(&e->eng);
    Py_END_ALLOW_THREADS
}

static void Engine_dealloc(Engine *e)
{
    stop_thread(e);
    fp_engine_free(&e->eng);
    PyMem_Free(e->scratch);
    Py_TYPE(e)->tp_free((PyObject *)e);
}

static PyObject *Engine_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    Engine *e = (Engine *)type->tp_alloc(type, 0);
    if (e != NULL)
        e->eng.epfd = e->eng.evfd = e->eng.stopfd = -1; /* fp_engine_free is safe before init */
    return (PyObject *)e;
}


static PyObject *Engine_set_srtp_functions(Engine *e, PyObject *args)
{
    unsigned long long protect, unprotect;
    if (!PyArg_ParseTuple(args, "KK", &protect, &unprotect))
        return NULL;
    CHECK_INIT(e);
    LOCK(e);
    e->eng.core.protect = (fp_srtp_fn)(uintptr_t)protect;
    e->eng.core.unprotect = (fp_srtp_fn)(uintptr_t)unprotect;
    UNLOCK(e);
    Py_RETURN_NONE;
}

static PyObject *Engine_add_session(Engine *e, PyObject *noargs)
{
    CHECK_INIT(e);
    LOCK(e);
    int dead = e->eng.dead;
    int s = dead ? -1 : fp_session_add(&e->eng.core);
    int32_t h = fp_session_handle(&e->eng, s);
    UNLOCK(e);
    if (dead) {
        PyErr_SetString(PyExc_RuntimeError, "fast path: the engine thread ended");
        return NULL;
    }
    if (s < 0) {
        PyErr_SetString(PyExc_OverflowError, "fast path: no free session slot");
        return NULL;
    }
    return PyLong_FromLong(h);
}

static PyObject *Engine_remove_session(Engine *e, PyObject *args)
{
    long h;
    if (!PyArg_ParseTuple(args, "l", &h))
        return NULL;
    SET_UNDER_LOCK(e, session_index, h, s, { fp_engine_remove_session(&e->eng, s); });
}

static PyObject *Engine_set_session_keys(Engine *e, PyObject *args)
{
    long h;
    unsigned long long rx, tx;
    if (!PyArg_ParseTuple(args, "lKK", &h, &rx, &tx))
        return NULL;
    SET_UNDER_LOCK(e, session_index, h, s, {
        e->eng.core.sessions[s].srtp_rx = (void *)(uintptr_t)rx;
        e->eng.core.sessions[s].srtp_tx = (void *)(uintptr_t)tx;
    });
}

static PyObject *Engine_set_session_remote(Engine *e, PyObject *args)
{
    long h;
    int fd;
    PyObject *addr;
    fp_addr a;
    if (!PyArg_ParseTuple(args, "liO", &h, &fd, &addr) || addr_from_py(addr, &a) < 0)
        return NULL;
    SET_UNDER_LOCK(e, session_index, h, s, {
        fp_session_set_remote(&e->eng.core, s, fd, &a);
    });
}

static PyObject *Engine_learn_ssrc(Engine *e, PyObject *args)
{
    long h, sh;
    unsigned long ssrc;
    if (!PyArg_ParseTuple(args, "lkl", &h, &ssrc, &sh))
        return NULL;
    CHECK_INIT(e);
    LOCK(e);
    int s = session_index(e, h);
    int st = s >= 0 ? stream_index(e, sh) : -1;
    if (st >= 0 && e->eng.core.streams[st].session != s) {
        PyErr_SetString(PyExc_ValueError, "stream of another session");
        st = -1;
    }
    if (st >= 0)
        fp_session_learn(&e->eng.core, s, (uint32_t)ssrc, st);
    UNLOCK(e);
    if (st < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *Engine_forget_ssrcs(Engine *e, PyObject *args)
{
    long h;
    if (!PyArg_ParseTuple(args, "l", &h))
        return NULL;
    SET_UNDER_LOCK(e, session_index, h, s, {
        e->eng.core.sessions[s].nssrc = 0;
    });
}

static PyObject *Engine_add_stream(Engine *e, PyObject *args, PyObject *kw)
{
    static char *names[] = {"session", "legacy_fd", "webrtc_ssrc", "legacy_ssrc", "webrtc_initial_sequence",
                            "legacy_initial_sequence", "symmetric", "history", NULL};
    long h;
    int fd, symmetric = 1;
    unsigned long wssrc, lssrc;
    unsigned int wseq, lseq;
    PyObject *history = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "likkII|pO", names, &h, &fd, &wssrc, &lssrc, &wseq, &lseq,
                                     &symmetric, &history))
        return NULL;
    int min_tail = 0, max_tail = 0;
    if (history != Py_None && !PyArg_ParseTuple(history, "ii", &min_tail, &max_tail))
        return NULL;
    if (history != Py_None && (min_tail < 1 || max_tail < min_tail || max_tail > FP_MAX_TAIL)) {
        PyErr_Format(PyExc_ValueError, "avpf-tail-length %d-%d: need 1 <= min <= max <= %d", min_tail, max_tail,
                     FP_MAX_TAIL);
        return NULL;
    }
    CHECK_INIT(e);
    LOCK(e);
    int s = session_index(e, h);
    int st = -1;
    if (s >= 0) {
        st = fp_stream_add(&e->eng.core, s);
        if (st < 0)
            PyErr_SetString(PyExc_OverflowError, "fast path: no free stream slot");
    }
    if (st >= 0) {
        fp_stream *x = &e->eng.core.streams[st];
        x->symmetric = symmetric;
        fp_rewriter_init(&x->to_webrtc, (uint32_t)wssrc, 8000, (uint16_t)wseq);
        fp_rewriter_init(&x->to_legacy, (uint32_t)lssrc, 8000, (uint16_t)lseq);
        if (history != Py_None && (x->history = fp_history_new(min_tail, max_tail)) == NULL) {
            fp_stream_remove(&e->eng.core, st);
            PyErr_NoMemory();
            st = -1;
        }
    }
    if (st >= 0 && fd >= 0 && fp_engine_watch_stream(&e->eng, st, fd) != 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        fp_stream_remove(&e->eng.core, st);
        st = -1;
    }
    int32_t sh = fp_stream_handle(&e->eng, st);
    UNLOCK(e);
    if (st < 0)
        return NULL;
    return PyLong_FromLong(sh);
}

static PyObject *Engine_remove_stream(Engine *e, PyObject *args)
{
    long h;
    if (!PyArg_ParseTuple(args, "l", &h))
        return NULL;
    SET_UNDER_LOCK(e, stream_index, h, st, { fp_engine_remove_stream(&e->eng, st); });
}

static int pt_table(PyObject *map, int16_t table[128])
{
    PyObject *k, *v;
    Py_ssize_t pos = 0;
    for (int i = 0; i < 128; i++)
        table[i] = -1;
    if (!PyDict_Check(map)) {
        PyErr_SetString(PyExc_TypeError, "payload-type map must be a dict");
        return -1;
    }
    while (PyDict_Next(map, &pos, &k, &v)) {
        long src = PyLong_AsLong(k), dst = PyLong_AsLong(v);
        if (PyErr_Occurred())
            return -1;
        if (src < 0 || src > 127 || dst < 0 || dst > 127) {
            PyErr_SetString(PyExc_ValueError, "payload types are 0..127");
            return -1;
        }
        table[src] = (int16_t)dst;
    }
    return 0;
}

static PyObject *Engine_configure_stream(Engine *e, PyObject *args, PyObject *kw)
{
    static char *names[] = {"stream", "to_legacy", "to_webrtc", "clock_rate", "webrtc_clock_rate", NULL};
    long h;
    PyObject *to_legacy, *to_webrtc;
    int clock, wclock;
    int16_t tl[128], tw[128];
    if (!PyArg_ParseTupleAndKeywords(args, kw, "lOOii", names, &h, &to_legacy, &to_webrtc, &clock, &wclock) ||
        pt_table(to_legacy, tl) < 0 || pt_table(to_webrtc, tw) < 0)
        return NULL;
    if (clock <= 0 || wclock <= 0) {
        PyErr_SetString(PyExc_ValueError, "clock rates must be positive");
        return NULL;
    }
    SET_UNDER_LOCK(e, stream_index, h, st, {
        fp_stream *x = &e->eng.core.streams[st];
        memcpy(x->to_legacy.pt_map, tl, sizeof tl);
        memcpy(x->to_webrtc.pt_map, tw, sizeof tw);
        x->to_legacy.clock_rate = x->clock_rate = clock;
        x->to_webrtc.clock_rate = x->webrtc_clock_rate = wclock;
    });
}

static PyObject *Engine_set_peer(Engine *e, PyObject *args)
{
    long h;
    PyObject *addr;
    int hold, mux;
    fp_addr a;
    if (!PyArg_ParseTuple(args, "lOpp", &h, &addr, &hold, &mux) || addr_from_py(addr, &a) < 0)
        return NULL;
    SET_UNDER_LOCK(e, stream_index, h, st, {
        fp_stream_set_peer(&e->eng.core.streams[st], &a, hold || a.len == 0, mux);
    });
}

static PyObject *Engine_set_legacy_srtp(Engine *e, PyObject *args)
{
    long h;
    unsigned long long rx, tx;
    if (!PyArg_ParseTuple(args, "lKK", &h, &rx, &tx))
        return NULL;
    SET_UNDER_LOCK(e, stream_index, h, st, {
        e->eng.core.streams[st].legacy_rx_srtp = (void *)(uintptr_t)rx;
        e->eng.core.streams[st].legacy_tx_srtp = (void *)(uintptr_t)tx;
    });
}

static PyObject *Engine_set_mode(Engine *e, PyObject *args)
{
    long h;
    int mode;
    if (!PyArg_ParseTuple(args, "li", &h, &mode))
        return NULL;
    if (mode < FP_MODE_FORWARD || mode > FP_MODE_PYTHON) {
        PyErr_SetString(PyExc_ValueError, "mode is 0 (forward), 1 (forward and copy up) or 2 (Python)");
        return NULL;
    }
    SET_UNDER_LOCK(e, stream_index, h, st, {
        e->eng.core.streams[st].mode = mode;
    });
}

/* What result_tuple needs once the lock is let go: the data stays in e->sans_buf/sans_copy (only
 * touched by Python's calls, under the GIL), the destination is copied (the engine thread may latch). */
typedef struct {
    fp_result r;
    fp_addr dest;
    int32_t session, stream;
} held_result;

static void hold_result(Engine *e, const fp_result *r, held_result *out)
{
    out->r = *r;
    memset(&out->dest, 0, sizeof out->dest);
    if (r->dest != NULL)
        out->dest = *r->dest;
    out->r.dest = &out->dest;
    out->session = fp_session_handle(&e->eng, r->session);
    out->stream = fp_stream_handle(&e->eng, r->stream);
}

static PyObject *result_tuple(const held_result *h, const uint8_t *orig, int orig_len, const uint8_t *copy)
{
    const fp_result *r = &h->r;
    PyObject *out = Py_None, *dest = Py_None, *up = Py_None;
    Py_INCREF(Py_None);
    Py_INCREF(Py_None);
    Py_INCREF(Py_None);
    if (r->verdict == FP_SEND) {
        Py_DECREF(out);
        Py_DECREF(dest);
        out = PyBytes_FromStringAndSize((const char *)r->data, r->len);
        dest = addr_to_py(r->dest);
    } else if (r->verdict == FP_UP) {
        Py_DECREF(out);
        out = PyBytes_FromStringAndSize((const char *)orig, orig_len);
    } else if (r->verdict == FP_UP_PLAIN) {
        Py_DECREF(out);
        out = PyBytes_FromStringAndSize((const char *)r->data, r->len);
    }
    if (r->copy_len > 0) {
        Py_DECREF(up);
        up = PyBytes_FromStringAndSize((const char *)copy, r->copy_len);
    }
    if (out == NULL || dest == NULL || up == NULL) {
        Py_XDECREF(out);
        Py_XDECREF(dest);
        Py_XDECREF(up);
        return NULL;
    }
    return Py_BuildValue("(iiiiNNN)", r->verdict, h->session, h->stream, r->verdict == FP_SEND ? r->fd : -1, out, dest,
                         up);
}

static PyObject *Engine_process_webrtc(Engine *e, PyObject *args)
{
    int fd;
    Py_buffer data;
    PyObject *addr;
    double now;
    fp_addr a;
    CHECK_INIT(e); /* before y*: a buffer taken must be released on every path */
    if (!PyArg_ParseTuple(args, "iy*Od", &fd, &data, &addr, &now))
        return NULL;
    if (addr_from_py(addr, &a) < 0 || data.len > FP_BUF_SIZE) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "datagram longer than 2048 bytes");
        PyBuffer_Release(&data);
        return NULL;
    }
    int len = (int)data.len;
    fp_result r;
    held_result held;
    LOCK(e);
    memcpy(e->sans_buf, data.buf, (size_t)len);
    fp_from_webrtc(&e->eng.core, fd, e->sans_buf, len, &a, now, e->sans_copy, &r);
    hold_result(e, &r, &held);
    UNLOCK(e);
    PyObject *t = result_tuple(&held, data.buf, len, e->sans_copy);
    PyBuffer_Release(&data);
    return t;
}

static PyObject *Engine_process_legacy(Engine *e, PyObject *args)
{
    long h;
    Py_buffer data;
    PyObject *addr;
    double now;
    fp_addr a;
    CHECK_INIT(e);
    if (!PyArg_ParseTuple(args, "ly*Od", &h, &data, &addr, &now))
        return NULL;
    if (addr_from_py(addr, &a) < 0 || data.len > FP_BUF_SIZE) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "datagram longer than 2048 bytes");
        PyBuffer_Release(&data);
        return NULL;
    }
    int len = (int)data.len;
    fp_result r;
    held_result held;
    LOCK(e);
    int st = stream_index(e, h);
    PyObject *t = NULL;
    if (st >= 0) {
        memcpy(e->sans_buf, data.buf, (size_t)len);
        fp_from_legacy(&e->eng.core, st, e->sans_buf, len, &a, now, e->sans_copy, &r);
        hold_result(e, &r, &held);
    }
    UNLOCK(e);
    if (st >= 0)
        t = result_tuple(&held, data.buf, len, e->sans_copy);
    PyBuffer_Release(&data);
    return t;
}

/* relay_plain(stream, plain, now): a browser packet Python demultiplexed (UP_PLAIN), relayed by the
 * fast path's rewriter so that the stream stays one numbering; sent at once when the engine runs. */
static PyObject *Engine_relay_plain(Engine *e, PyObject *args)
{
    long h;
    Py_buffer data;
    double now;
    CHECK_INIT(e);
    if (!PyArg_ParseTuple(args, "ly*d", &h, &data, &now))
        return NULL;
    if (data.len < 12 || data.len > FP_MAX_PACKET) {
        PyBuffer_Release(&data);
        PyErr_SetString(PyExc_ValueError, "RTP packet of 12..1500 bytes expected");
        return NULL;
    }
    int len = (int)data.len;
    fp_result r;
    held_result held;
    PyObject *t = NULL;
    LOCK(e);
    int st = stream_index(e, h);
    if (st >= 0) {
        memcpy(e->sans_buf, data.buf, (size_t)len);
        fp_relay_plain_webrtc(&e->eng.core, st, e->sans_buf, len, now, e->sans_copy, &r);
        if (e->eng.running && r.verdict == FP_SEND && r.fd >= 0) {
            if (sendto(r.fd, r.data, (size_t)r.len, MSG_DONTWAIT, (const struct sockaddr *)&r.dest->ss,
                       r.dest->len) < 0)
                e->eng.send_errors++;
            else
                e->eng.datagrams_out++;
        }
        hold_result(e, &r, &held);
    }
    UNLOCK(e);
    if (st >= 0)
        t = result_tuple(&held, data.buf, len, e->sans_copy);
    PyBuffer_Release(&data);
    return t;
}

typedef struct {
    Engine *e;
    PyObject *list; /* sans-I/O: collect */
    int fd;
    const fp_addr *dest;
    int sent;
} emit_ctx;

static void emit_packet(void *arg, const uint8_t *data, int len)
{
    emit_ctx *c = arg;
    if (c->list != NULL) {
        PyObject *b = PyBytes_FromStringAndSize((const char *)data, len);
        if (b != NULL) {
            PyList_Append(c->list, b);
            Py_DECREF(b);
        }
        return;
    }
    if (sendto(c->fd, data, (size_t)len, MSG_DONTWAIT, (const struct sockaddr *)&c->dest->ss, c->dest->len) >= 0) {
        c->sent++;
        c->e->eng.datagrams_out++;
        c->e->eng.webrtc_out++;
    } else {
        c->e->eng.send_errors++;
    }
}

static int seq_array(PyObject *seqs, uint16_t **out)
{
    PyObject *fast = PySequence_Fast(seqs, "seqs must be a sequence of ints");
    if (fast == NULL)
        return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    if (n > 65536)
        n = 65536;
    uint16_t *a = PyMem_Malloc((size_t)(n ? n : 1) * sizeof *a);
    if (a == NULL) {
        Py_DECREF(fast);
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        long v = PyLong_AsLong(PySequence_Fast_GET_ITEM(fast, i));
        if (v == -1 && PyErr_Occurred()) {
            PyMem_Free(a);
            Py_DECREF(fast);
            return -1;
        }
        a[i] = (uint16_t)(v & 0xFFFF);
    }
    Py_DECREF(fast);
    *out = a;
    return (int)n;
}

/* lookup(stream, seqs) -> list[bytes] (sans-I/O); retransmit(stream, seqs) -> int (sent on the socket) */
static PyObject *history_op(Engine *e, PyObject *args, int send)
{
    long h;
    PyObject *seqs;
    uint16_t *a = NULL;
    if (!PyArg_ParseTuple(args, "lO", &h, &seqs))
        return NULL;
    CHECK_INIT(e);
    int n = seq_array(seqs, &a);
    if (n < 0)
        return NULL;
    emit_ctx c = {.e = e};
    if (!send && (c.list = PyList_New(0)) == NULL) {
        PyMem_Free(a);
        return NULL;
    }
    LOCK(e);
    int st = stream_index(e, h);
    if (st >= 0) {
        fp_stream *x = &e->eng.core.streams[st];
        fp_session *se = &e->eng.core.sessions[x->session];
        c.fd = se->webrtc_fd;
        c.dest = &se->remote;
        if (x->history != NULL && (!send || (se->webrtc_fd >= 0 && se->remote.len))) {
            fp_history_lookup(x->history, a, n, emit_packet, &c);
            x->retransmitted += send ? (uint64_t)c.sent : 0;
        }
    }
    UNLOCK(e);
    PyMem_Free(a);
    if (st < 0) {
        Py_XDECREF(c.list);
        return NULL;
    }
    if (!send)
        return c.list;
    return PyLong_FromLong(c.sent);
}

static PyObject *Engine_lookup(Engine *e, PyObject *args) { return history_op(e, args, 0); }
static PyObject *Engine_retransmit(Engine *e, PyObject *args) { return history_op(e, args, 1); }

/* protect(session, rtp) with the session's SRTP context toward the browser; protect_legacy(stream,
 * rtp) with the stream's SDES context toward the phone (RFC 3711 §9.2: one context per key). */
static PyObject *protect_op(Engine *e, PyObject *args, int legacy)
{
    long h;
    Py_buffer data;
    CHECK_INIT(e);
    if (!PyArg_ParseTuple(args, "ly*", &h, &data))
        return NULL;
    if (data.len < 12 || data.len > FP_MAX_PACKET - FP_MAX_TRAILER) {
        PyBuffer_Release(&data);
        PyErr_SetString(PyExc_ValueError, "RTP packet of 12..1356 bytes expected");
        return NULL;
    }
    uint8_t buf[FP_BUF_SIZE];
    int n = (int)data.len, rc = -1;
    memcpy(buf, data.buf, (size_t)n);
    PyBuffer_Release(&data);
    LOCK(e);
    int i = legacy ? stream_index(e, h) : session_index(e, h);
    void *ctx = i < 0 ? NULL : legacy ? e->eng.core.streams[i].legacy_tx_srtp : e->eng.core.sessions[i].srtp_tx;
    if (ctx != NULL && e->eng.core.protect != NULL)
        rc = e->eng.core.protect(ctx, buf, &n);
    UNLOCK(e);
    if (i < 0)
        return NULL;
    if (rc != 0) {
        PyErr_Format(PyExc_ValueError, ctx == NULL ? "no SRTP context" : "SRTP protect failed (%d)", rc);
        return NULL;
    }
    return PyBytes_FromStringAndSize((const char *)buf, n);
}

static PyObject *Engine_protect(Engine *e, PyObject *args) { return protect_op(e, args, 0); }
static PyObject *Engine_protect_legacy(Engine *e, PyObject *args) { return protect_op(e, args, 1); }

static PyObject *Engine_take(Engine *e, PyObject *args)
{
    long h;
    int toward_legacy;
    double now;
    if (!PyArg_ParseTuple(args, "lpd", &h, &toward_legacy, &now))
        return NULL;
    CHECK_INIT(e);
    uint16_t seq = 0;
    uint32_t ts = 0;
    LOCK(e);
    int st = stream_index(e, h);
    if (st >= 0)
        fp_rewriter_take(toward_legacy ? &e->eng.core.streams[st].to_legacy : &e->eng.core.streams[st].to_webrtc, now, &seq,
                         &ts);
    UNLOCK(e);
    if (st < 0)
        return NULL;
    return Py_BuildValue("(Hk)", seq, (unsigned long)ts);
}

static PyObject *rewriter_dict(const fp_rewriter *rw)
{
    PyObject *source = rw->has_source ? PyLong_FromLongLong(rw->source) : (Py_INCREF(Py_None), Py_None);
    return Py_BuildValue("{s:k,s:i,s:N,s:H,s:k,s:H,s:k,s:d}", "ssrc", (unsigned long)rw->ssrc, "clock_rate",
                         rw->clock_rate, "source", source, "seq_offset", rw->seq_offset, "ts_offset",
                         (unsigned long)rw->ts_offset, "last_seq", rw->last_seq, "last_ts", (unsigned long)rw->last_ts,
                         "last_arrival", rw->last_arrival);
}

static PyObject *Engine_rewriter_state(Engine *e, PyObject *args)
{
    long h;
    int toward_legacy;
    if (!PyArg_ParseTuple(args, "lp", &h, &toward_legacy))
        return NULL;
    CHECK_INIT(e);
    LOCK(e);
    int st = stream_index(e, h);
    fp_rewriter copy;
    if (st >= 0)
        copy = toward_legacy ? e->eng.core.streams[st].to_legacy : e->eng.core.streams[st].to_webrtc;
    UNLOCK(e);
    if (st < 0)
        return NULL;
    return rewriter_dict(&copy);
}

static PyObject *Engine_set_rewriter_state(Engine *e, PyObject *args)
{
    long h;
    int toward_legacy;
    PyObject *source;
    unsigned int seq_offset, last_seq;
    unsigned long ts_offset, last_ts;
    double last_arrival;
    if (!PyArg_ParseTuple(args, "lpOIkIkd", &h, &toward_legacy, &source, &seq_offset, &ts_offset, &last_seq, &last_ts,
                          &last_arrival))
        return NULL;
    long long src = 0;
    if (source != Py_None && (src = PyLong_AsLongLong(source)) == -1 && PyErr_Occurred())
        return NULL;
    SET_UNDER_LOCK(e, stream_index, h, st, {
        fp_rewriter *rw = toward_legacy ? &e->eng.core.streams[st].to_legacy : &e->eng.core.streams[st].to_webrtc;
        rw->has_source = source != Py_None;
        rw->source = src;
        rw->seq_offset = (uint16_t)seq_offset;
        rw->ts_offset = (uint32_t)ts_offset;
        rw->last_seq = (uint16_t)last_seq;
        rw->last_ts = (uint32_t)last_ts;
        rw->last_arrival = last_arrival;
    });
}

static PyObject *legstats_dict(const fp_legstats *s)
{
    return Py_BuildValue("{s:K,s:K,s:K,s:K,s:K,s:K,s:d}", "packets_in", s->packets_in, "bytes_in", s->bytes_in,
                         "packets_out", s->packets_out, "bytes_out", s->bytes_out, "dropped", s->dropped,
                         "srtp_errors", s->srtp_errors, "last_in", s->last_in);
}

static PyObject *rxstats_dict(const fp_rxstats *rx)
{
    if (!rx->valid)
        Py_RETURN_NONE;
    PyObject *transit = rx->has_transit ? PyLong_FromUnsignedLong(rx->transit) : (Py_INCREF(Py_None), Py_None);
    return Py_BuildValue("{s:k,s:i,s:i,s:i,s:O,s:K,s:k,s:k,s:k,s:K,s:N,s:d}", "ssrc", (unsigned long)rx->ssrc,
                         "clock_rate", rx->clock_rate, "min_sequential", rx->min_sequential, "probation",
                         rx->probation, "started", rx->started ? Py_True : Py_False, "received", rx->received,
                         "max_seq", (unsigned long)rx->max_seq, "base_seq", (unsigned long)rx->base_seq, "bad_seq",
                         (unsigned long)rx->bad_seq, "cycles", rx->cycles, "transit", transit, "jitter", rx->jitter);
}

static PyObject *Engine_stream_stats(Engine *e, PyObject *args)
{
    long h;
    if (!PyArg_ParseTuple(args, "l", &h))
        return NULL;
    CHECK_INIT(e);
    LOCK(e);
    int st = stream_index(e, h);
    fp_stream x;
    fp_history hist;
    int has_hist = 0;
    if (st >= 0) {
        x = e->eng.core.streams[st];
        if (x.history != NULL) {
            hist = *x.history;
            has_hist = 1;
        }
    }
    UNLOCK(e);
    if (st < 0)
        return NULL;
    PyObject *history = has_hist ? Py_BuildValue("{s:i,s:i,s:K,s:K,s:K}", "depth", hist.depth, "length", hist.count,
                                                 "hits", hist.hits, "misses", hist.misses, "unknown", hist.unknown)
                                 : (Py_INCREF(Py_None), Py_None);
    PyObject *last_webrtc = x.has_last_webrtc_out
                                ? Py_BuildValue("(kd)", (unsigned long)x.last_webrtc_out_ts, x.last_webrtc_out_time)
                                : (Py_INCREF(Py_None), Py_None);
    PyObject *last_legacy = x.has_last_legacy_out
                                ? Py_BuildValue("(kd)", (unsigned long)x.last_legacy_out_ts, x.last_legacy_out_time)
                                : (Py_INCREF(Py_None), Py_None);
    return Py_BuildValue("{s:N,s:N,s:N,s:N,s:N,s:N,s:N,s:N,s:N,s:K,s:i}", "webrtc", legstats_dict(&x.webrtc), "legacy",
                         legstats_dict(&x.legacy), "webrtc_rx", rxstats_dict(&x.webrtc_rx), "legacy_rx",
                         rxstats_dict(&x.legacy_rx), "latched", addr_to_py(&x.latched), "legacy_dest",
                         addr_to_py(&x.legacy_dest), "history", history, "last_webrtc_out", last_webrtc,
                         "last_legacy_out", last_legacy, "retransmitted", x.retransmitted, "mode", x.mode);
}

static PyObject *Engine_session_stats(Engine *e, PyObject *args)
{
    long h;
    if (!PyArg_ParseTuple(args, "l", &h))
        return NULL;
    CHECK_INIT(e);
    LOCK(e);
    int s = session_index(e, h);
    fp_session x;
    if (s >= 0)
        x = e->eng.core.sessions[s];
    UNLOCK(e);
    if (s < 0)
        return NULL;
    return Py_BuildValue("{s:K,s:K,s:i,s:N}", "dropped", x.dropped, "srtp_errors", x.srtp_errors, "ssrcs", x.nssrc,
                         "remote", addr_to_py(&x.remote));
}

static PyObject *Engine_stats(Engine *e, PyObject *noargs)
{
    CHECK_INIT(e);
    LOCK(e);
    int streams = 0, sessions = 0;
    for (int i = 0; i < e->eng.core.max_streams; i++)
        streams += e->eng.core.streams[i].in_use;
    for (int i = 0; i < e->eng.core.max_sessions; i++)
        sessions += e->eng.core.sessions[i].in_use;
    PyObject *d = Py_BuildValue(
        "{s:i,s:i,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:i,s:O}", "streams", streams, "sessions", sessions,
        "webrtc_in", e->eng.webrtc_in, "webrtc_out", e->eng.webrtc_out,
        "datagrams_in", e->eng.datagrams_in, "datagrams_out", e->eng.datagrams_out, "recv_calls", e->eng.recv_calls,
        "send_batches", e->eng.send_batches, "send_errors", e->eng.send_errors, "truncated", e->eng.truncated, "queue_full",
        e->eng.queue_full, "handed_up", e->eng.handed_up, "wakeups", e->eng.wakeups, "unknown_source", e->eng.core.unknown_source,
        "not_rtp", e->eng.core.not_rtp, "queued", e->eng.qcount, "running", e->eng.running && !e->eng.dead ? Py_True : Py_False);
    UNLOCK(e);
    return d;
}

static PyObject *Engine_add_webrtc_socket(Engine *e, PyObject *args)
{
    int fd;
    if (!PyArg_ParseTuple(args, "i", &fd))
        return NULL;
    CHECK_INIT(e);
    LOCK(e);
    int rc = fp_engine_add_webrtc_fd(&e->eng, fd);
    UNLOCK(e);
    if (rc != 0)
        return PyErr_SetFromErrno(errno == EEXIST ? PyExc_ValueError : PyExc_OSError);
    Py_RETURN_NONE;
}

static PyObject *Engine_remove_webrtc_socket(Engine *e, PyObject *args)
{
    int fd;
    if (!PyArg_ParseTuple(args, "i", &fd))
        return NULL;
    CHECK_INIT(e);
    LOCK(e);
    fp_engine_remove_webrtc_fd(&e->eng, fd);
    UNLOCK(e);
    Py_RETURN_NONE;
}

static PyObject *Engine_start(Engine *e, PyObject *noargs)
{
    CHECK_INIT(e);
    if (fp_engine_start(&e->eng) != 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    Py_RETURN_NONE;
}

static PyObject *Engine_stop(Engine *e, PyObject *noargs)
{
    CHECK_INIT(e);
    stop_thread(e);
    Py_RETURN_NONE;
}

static PyObject *Engine_fileno(Engine *e, PyObject *noargs)
{
    CHECK_INIT(e);
    return PyLong_FromLong(e->eng.evfd);
}

#define DRAIN_MAX 256

static PyObject *Engine_drain(Engine *e, PyObject *args)
{
    int max = DRAIN_MAX;
    if (!PyArg_ParseTuple(args, "|i", &max))
        return NULL;
    CHECK_INIT(e);
    if (max > DRAIN_MAX)
        max = DRAIN_MAX;
    /* Entries are copied out under the lock and turned into objects after it, so the engine thread
     * never waits for Python's allocator (or a garbage collection it triggers). */
    if (e->scratch == NULL && (e->scratch = PyMem_Malloc(DRAIN_MAX * sizeof *e->scratch)) == NULL)
        return PyErr_NoMemory();
    uint64_t v;
    if (read(e->eng.evfd, &v, sizeof v) < 0) {
        /* EAGAIN: nothing signalled, the queue may still hold entries */
    }
    int n = 0;
    LOCK(e);
    e->eng.signalled = 0;
    while (e->eng.qcount > 0 && n < max) {
        const up_entry *u = &e->eng.queue[e->eng.qhead];
        memcpy(&e->scratch[n++], u, offsetof(up_entry, data) + u->len);
        e->eng.qhead = (e->eng.qhead + 1) % e->eng.qcap;
        e->eng.qcount--;
    }
    if (e->eng.qcount > 0) { /* more than asked for: stay readable */
        uint64_t one = 1;
        if (write(e->eng.evfd, &one, sizeof one) == sizeof one)
            e->eng.signalled = 1;
    }
    UNLOCK(e);
    PyObject *list = PyList_New(n);
    if (list == NULL)
        return NULL;
    for (int i = 0; i < n; i++) {
        const up_entry *u = &e->scratch[i];
        PyObject *t = Py_BuildValue("(iiiiNy#d)", u->kind, u->session, u->stream, u->fd, addr_to_py(&u->addr),
                                    (const char *)u->data, (Py_ssize_t)u->len, u->arrival);
        if (t == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, t);
    }
    return list;
}


#ifdef FP_FUZZ
/* Test-only (built by tests/unit/test_fastpath_fuzz.py with -DFP_FUZZ and ASan/UBSan): feeds
 * `iterations` datagrams, random or mutated from `corpus`, to both legs of `stream` from a few
 * source addresses, with NACK lookups and relatch-worthy clock jumps in between. */
static uint64_t rng_state;
static uint32_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)rng_state;
}

static void ignore_emit(void *arg, const uint8_t *data, int len) { (void)arg; (void)data; (void)len; }

static PyObject *Engine_fuzz(Engine *e, PyObject *args)
{
    PyObject *corpus, *addrs;
    long stream_h;
    int fd, iterations;
    unsigned long long seed;
    if (!PyArg_ParseTuple(args, "OOliiK", &corpus, &addrs, &stream_h, &fd, &iterations, &seed))
        return NULL;
    CHECK_INIT(e);
    Py_ssize_t nc = PyList_Size(corpus), na = PyList_Size(addrs);
    if (nc <= 0 || na <= 0 || na > 8)
        return PyErr_Format(PyExc_ValueError, "corpus and 1..8 addresses needed");
    fp_addr a[8];
    for (Py_ssize_t i = 0; i < na; i++)
        if (addr_from_py(PyList_GET_ITEM(addrs, i), &a[i]) < 0)
            return NULL;
    rng_state = seed | 1;
    uint8_t buf[FP_BUF_SIZE], copy[FP_BUF_SIZE];
    uint64_t verdicts[4] = {0};
    LOCK(e);
    int st = stream_index(e, stream_h);
    if (st < 0) {
        UNLOCK(e);
        return NULL;
    }
    double now = 1000.0;
    for (int it = 0; it < iterations; it++) {
        PyObject *item = PyList_GET_ITEM(corpus, rnd() % nc);
        int len = (int)PyBytes_GET_SIZE(item);
        if (len > FP_BUF_SIZE)
            len = FP_BUF_SIZE;
        uint32_t how = rnd() % 10;
        if (how == 0) { /* random bytes, random length */
            len = (int)(rnd() % (FP_MAX_PACKET + 2));
            for (int i = 0; i < len; i++)
                buf[i] = (uint8_t)rnd();
        } else {
            memcpy(buf, PyBytes_AS_STRING(item), (size_t)len);
            int flips = how < 9 ? 1 + (int)(rnd() % 4) : 0;
            for (int f = 0; f < flips && len > 0; f++) {
                uint32_t op = rnd() % 4, pos = rnd() % (uint32_t)len;
                if (op == 0)
                    buf[pos] ^= (uint8_t)(1u << (rnd() % 8));
                else if (op == 1)
                    buf[pos] = (uint8_t)rnd();
                else if (op == 2 && pos < 12)
                    buf[pos] = (uint8_t)(rnd() % 2 ? 0xFF : 0x00);
                else
                    len = (int)pos; /* truncated */
            }
            if (how == 9 && len + 8 <= FP_MAX_PACKET) { /* extended with garbage */
                for (int i = 0; i < 8; i++)
                    buf[len + i] = (uint8_t)rnd();
                len += 8;
            }
        }
        fp_result r;
        const fp_addr *src = &a[rnd() % na];
        now += (rnd() % 100 == 0) ? 3.0 : 0.02;
        if (rnd() % 2)
            fp_from_webrtc(&e->eng.core, fd, buf, len, src, now, copy, &r);
        else
            fp_from_legacy(&e->eng.core, st, buf, len, src, now, copy, &r);
        if (r.verdict == FP_SEND && (r.len < 12 || r.len > FP_BUF_SIZE))
            abort(); /* never: a packet sent is a whole RTP/SRTP packet in the buffer */
        verdicts[r.verdict & 3]++;
        if (rnd() % 64 == 0 && e->eng.core.streams[st].history != NULL) {
            uint16_t seqs[17];
            for (int i = 0; i < 17; i++)
                seqs[i] = (uint16_t)rnd();
            fp_history_lookup(e->eng.core.streams[st].history, seqs, 17, ignore_emit, NULL);
        }
    }
    UNLOCK(e);
    return Py_BuildValue("{s:K,s:K,s:K,s:K}", "drop", verdicts[FP_DROP], "up", verdicts[FP_UP], "send",
                         verdicts[FP_SEND], "up_plain", verdicts[FP_UP_PLAIN]);
}
#endif

static PyMethodDef Engine_methods[] = {
#ifdef FP_FUZZ
    {"fuzz", (PyCFunction)Engine_fuzz, METH_VARARGS, NULL},
#endif
    {"set_srtp_functions", (PyCFunction)Engine_set_srtp_functions, METH_VARARGS, NULL},
    {"add_session", (PyCFunction)Engine_add_session, METH_NOARGS, NULL},
    {"remove_session", (PyCFunction)Engine_remove_session, METH_VARARGS, NULL},
    {"set_session_keys", (PyCFunction)Engine_set_session_keys, METH_VARARGS, NULL},
    {"set_session_remote", (PyCFunction)Engine_set_session_remote, METH_VARARGS, NULL},
    {"learn_ssrc", (PyCFunction)Engine_learn_ssrc, METH_VARARGS, NULL},
    {"forget_ssrcs", (PyCFunction)Engine_forget_ssrcs, METH_VARARGS, NULL},
    {"add_stream", (PyCFunction)(void (*)(void))Engine_add_stream, METH_VARARGS | METH_KEYWORDS, NULL},
    {"remove_stream", (PyCFunction)Engine_remove_stream, METH_VARARGS, NULL},
    {"configure_stream", (PyCFunction)(void (*)(void))Engine_configure_stream, METH_VARARGS | METH_KEYWORDS, NULL},
    {"set_peer", (PyCFunction)Engine_set_peer, METH_VARARGS, NULL},
    {"set_legacy_srtp", (PyCFunction)Engine_set_legacy_srtp, METH_VARARGS, NULL},
    {"set_mode", (PyCFunction)Engine_set_mode, METH_VARARGS, NULL},
    {"process_webrtc", (PyCFunction)Engine_process_webrtc, METH_VARARGS, NULL},
    {"process_legacy", (PyCFunction)Engine_process_legacy, METH_VARARGS, NULL},
    {"relay_plain", (PyCFunction)Engine_relay_plain, METH_VARARGS, NULL},
    {"lookup", (PyCFunction)Engine_lookup, METH_VARARGS, NULL},
    {"retransmit", (PyCFunction)Engine_retransmit, METH_VARARGS, NULL},
    {"protect", (PyCFunction)Engine_protect, METH_VARARGS, NULL},
    {"protect_legacy", (PyCFunction)Engine_protect_legacy, METH_VARARGS, NULL},
    {"take", (PyCFunction)Engine_take, METH_VARARGS, NULL},
    {"rewriter_state", (PyCFunction)Engine_rewriter_state, METH_VARARGS, NULL},
    {"set_rewriter_state", (PyCFunction)Engine_set_rewriter_state, METH_VARARGS, NULL},
    {"stream_stats", (PyCFunction)Engine_stream_stats, METH_VARARGS, NULL},
    {"session_stats", (PyCFunction)Engine_session_stats, METH_VARARGS, NULL},
    {"stats", (PyCFunction)Engine_stats, METH_NOARGS, NULL},
    {"add_webrtc_socket", (PyCFunction)Engine_add_webrtc_socket, METH_VARARGS, NULL},
    {"remove_webrtc_socket", (PyCFunction)Engine_remove_webrtc_socket, METH_VARARGS, NULL},
    {"start", (PyCFunction)Engine_start, METH_NOARGS, NULL},
    {"stop", (PyCFunction)Engine_stop, METH_NOARGS, NULL},
    {"fileno", (PyCFunction)Engine_fileno, METH_NOARGS, NULL},
    {"drain", (PyCFunction)Engine_drain, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject EngineType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "rtc2sip.media.fastpath._fastpath.Engine",
    .tp_basicsize = sizeof(Engine),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The fast path's core and I/O engine (see rtc2sip.media.fastpath).",
    .tp_new = Engine_new,
    .tp_init = (initproc)Engine_init,
    .tp_dealloc = (destructor)Engine_dealloc,
    .tp_methods = Engine_methods,
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_fastpath", "rtc2sip's compiled media fast path.", -1,
                                    NULL};

PyMODINIT_FUNC PyInit__fastpath(void)
{
    if (PyType_Ready(&EngineType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&EngineType);
    if (PyModule_AddObject(m, "Engine", (PyObject *)&EngineType) < 0 ||
        PyModule_AddIntConstant(m, "DROP", FP_DROP) < 0 || PyModule_AddIntConstant(m, "UP", FP_UP) < 0 ||
        PyModule_AddIntConstant(m, "SEND", FP_SEND) < 0 || PyModule_AddIntConstant(m, "UP_PLAIN", FP_UP_PLAIN) < 0 ||
        PyModule_AddIntConstant(m, "MAX_PACKET", FP_MAX_PACKET) < 0 ||
        PyModule_AddIntConstant(m, "MAX_SSRCS", FP_MAX_SSRCS) < 0 ||
        PyModule_AddIntConstant(m, "MAX_TAIL", FP_MAX_TAIL) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
