/*
 * libFuzzer target: what a DNS-over-HTTPS upstream sends back, into the client side (updoh.c).
 * A session without TLS (updoh_session_new(), output discarded) gets three queries, then the
 * server's bytes in fuzzer-chosen chunks through updoh_conn_input(), with a turn of the event
 * loop between chunks (the flush event sends what nghttp2 queued: SETTINGS ack, WINDOW_UPDATE,
 * RST_STREAM, the requests themselves).
 *
 * Input: byte 0 = options, byte 1 = chunk size (0: all at once, else that many bytes), then the
 * server's bytes (its preface, a SETTINGS frame, first).
 *   options bits 0-2: cancel query 0/1/2 after the first chunk;
 *   bit 3: inside the first done(), submit one more query; bit 4: and cancel another one there;
 *   bit 5: submit one more query after each chunk (while updoh_can_take());
 *   bit 6: free the session inside closed() (else right after the call that ran it);
 *   bit 7: the write function fails (-ENOMEM) once the first chunk is in.
 *
 * Invariants (updoh.h): done() runs at most once per query, never for a cancelled one, never
 * from updoh_submit()/updoh_cancel()/updoh_conn_free(), with an error of the documented set, and
 * on success with 12..65535 writable bytes; closed() runs at most once and only after every
 * query still open got done(); updoh_conn_input() returns -1 exactly when closed() ran in it;
 * updoh_submit() takes a query exactly when updoh_can_take() says so (or fails -ENOMEM), and a
 * closed session takes none.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "dohgate/config.h"
#include "dohgate/log.h"
#include "dohgate/updoh.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_Q 16

/* www.example.com A IN */
static const uint8_t query[] = {
    0x00, 0x00, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x03, 'w',  'w',  'w',  0x07, 'e',  'x',  'a',  'm',  'p',
    'l',  'e',  0x03, 'c',  'o',  'm',  0x00, 0x00, 0x01, 0x00, 0x01,
};

struct q {
    int32_t sid;
    bool submitted;
    bool cancelled;
    int done;
};

struct run {
    struct updoh_conn *c;
    uint8_t opts;
    bool in_api; /* inside updoh_submit/cancel/free: no callback may run */
    bool write_fails;
    int closed;
    bool freed;
    bool first_done;
    struct q q[MAX_Q];
    size_t nq;
};

static struct event_base *base;
static struct dg_upstream upstream;

static void submit(struct run *r)
{
    if (r->nq == MAX_Q)
        return;
    struct q *q = &r->q[r->nq];
    bool could = updoh_can_take(r->c);
    r->in_api = true;
    int32_t sid = updoh_submit(r->c, query, sizeof(query), q);
    r->in_api = false;
    if (sid > 0) {
        if (!could || (sid & 1) == 0)
            abort();
        q->sid = sid;
        q->submitted = true;
        r->nq++;
    } else if (sid != -ENOMEM && (sid != -ENOTCONN || could)) {
        abort(); /* updoh_can_take() says whether it would take one */
    }
}

static void cancel(struct run *r, size_t i)
{
    if (i >= r->nq || r->q[i].cancelled)
        return;
    r->in_api = true;
    updoh_cancel(r->c, r->q[i].sid);
    r->in_api = false;
    if (!r->q[i].done)
        r->q[i].cancelled = true;
}

static void on_ready(void *owner)
{
    (void)owner;
    abort(); /* a session without TLS never runs ready() */
}

static void on_done(void *owner, void *tag, int err, uint8_t *msg, size_t len)
{
    struct run *r = owner;
    struct q *q = tag;
    if (r->in_api || r->freed || r->closed || q < r->q || q >= r->q + r->nq)
        abort();
    if (!q->submitted || q->cancelled || q->done++)
        abort();
    switch (err) {
    case 0:
        if (!msg || len < 12 || len > 65535)
            abort();
        msg[0] ^= 1; /* scratch the owner may write (upstream.c puts the client's ID in) */
        msg[len - 1] ^= 1;
        break;
    case -EPROTO:
    case -ECONNRESET:
    case -ECONNABORTED: /* the connection ended cleanly (GOAWAY, session over) before its answer */
    case -ENOTCONN:
    case -ENOMEM:
        break;
    default:
        abort();
    }
    if (!r->first_done) {
        r->first_done = true;
        if (r->opts & 0x08)
            submit(r);
        if (r->opts & 0x10)
            for (size_t i = 0; i < r->nq; i++)
                if (&r->q[i] != q && !r->q[i].done && !r->q[i].cancelled) {
                    cancel(r, i);
                    break;
                }
    }
}

static void on_closed(void *owner, int err)
{
    struct run *r = owner;
    if (r->in_api || r->freed || r->closed++ || err >= 0)
        abort();
    for (size_t i = 0; i < r->nq; i++)
        if (!r->q[i].cancelled && r->q[i].done != 1)
            abort();
    if (updoh_can_take(r->c))
        abort();
    if (r->opts & 0x40) {
        updoh_conn_free(r->c);
        r->freed = true;
    }
}

static const struct updoh_cbs cbs = {.ready = on_ready, .done = on_done, .closed = on_closed};

static int discard(void *io, const void *p, size_t n)
{
    struct run *r = io;
    (void)p;
    (void)n;
    return r->write_fails ? -ENOMEM : 0;
}

/* The session is closed: free it if closed() did not. */
static void end_session(struct run *r)
{
    if (r->closed && !r->freed) {
        updoh_conn_free(r->c);
        r->freed = true;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!base) {
        const char *why;
        dg_log_set_level(DG_LOG_ERR);
        if (!(base = event_base_new()) ||
            config_parse_upstream("https://doh.example:8443/q?x=1 addr=127.0.0.1", &upstream,
                                  &why) != 0)
            abort();
    }
    if (size < 2)
        return 0;
    struct run r = {.opts = data[0]};
    size_t chunk = data[1] ? data[1] : size;
    data += 2;
    size -= 2;

    int err = 0;
    r.c = updoh_session_new(base, &upstream, discard, &r, &cbs, &r, &err);
    if (!r.c)
        abort();
    for (int i = 0; i < 3; i++)
        submit(&r);
    if (r.nq != 3)
        abort();
    event_base_loop(base, EVLOOP_NONBLOCK); /* preface, SETTINGS, the three requests */

    size_t off = 0;
    for (int n = 0; off < size && !r.closed; n++) {
        size_t len = size - off < chunk ? size - off : chunk;
        int before = r.closed;
        int rc = updoh_conn_input(r.c, data + off, len);
        if ((rc == -1) != (r.closed > before) || (rc != 0 && rc != -1))
            abort();
        end_session(&r);
        if (r.opts & 0x80)
            r.write_fails = true;
        off += len;
        if (r.closed)
            break;
        if (n == 0)
            for (size_t i = 0; i < 3; i++)
                if (r.opts & (1u << i))
                    cancel(&r, i);
        if (r.opts & 0x20 && updoh_can_take(r.c))
            submit(&r);
        event_base_loop(base, EVLOOP_NONBLOCK);
        end_session(&r);
    }
    if (!r.closed) {
        /* the owner frees an open session: nobody hears of it again */
        size_t done = 0;
        for (size_t i = 0; i < r.nq; i++)
            done += (size_t)r.q[i].done;
        r.in_api = true;
        updoh_conn_free(r.c);
        r.in_api = false;
        r.freed = true;
        size_t after = 0;
        for (size_t i = 0; i < r.nq; i++)
            after += (size_t)r.q[i].done;
        if (after != done)
            abort();
    }
    /* nothing of the session may be left on the loop */
    event_base_loop(base, EVLOOP_NONBLOCK);
    return 0;
}
