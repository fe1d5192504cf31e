/*
 * updoh.c — DNS over HTTPS to upstreams: an nghttp2 client session over a uptls connection
 * (see updoh.h).
 *
 * Structure: struct updoh_conn owns the TLS connection, the nghttp2 session, a flush event and
 * its streams (struct up_stream, one per query, linked on c->streams and set as nghttp2's stream
 * user data). Output: nghttp2_session_mem_send() into the TLS connection's buffer, from the
 * flush event (activated by a submit or cancel, so that a loop turn's queries share the
 * records) or right after input was processed.
 *
 * Reentrancy: done() runs from nghttp2's on_stream_close (inside mem_recv) or from conn_fail();
 * there the owner may submit (nghttp2 allows submissions inside callbacks) and cancel (which only
 * forgets the tag and queues RST_STREAM). closed() is always the last thing a path does with the
 * connection: the owner may free it there.
 */
#include "dohgate/updoh.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/event.h>
#include <nghttp2/nghttp2.h>

#include "dohgate/config.h"
#include "dohgate/dns.h"
#include "dohgate/list.h"
#include "dohgate/uptls.h"
#include "dohgate/util.h"

/* Streams open at once on one connection (the server's SETTINGS may lower it). */
#define UPDOH_MAX_STREAMS 100

struct up_stream {
    struct updoh_conn *c;
    void *tag; /* NULL once cancelled */
    int32_t id;
    int status;
    bool type_ok;
    bool too_big;
    uint8_t *q;
    size_t qlen, qoff;
    struct dg_buf body;
    struct dg_lnode node; /* on c->streams */
};

struct updoh_conn {
    const struct dg_upstream *up;
    struct uptls_conn *tls; /* NULL for a session made by updoh_session_new() */
    updoh_write_fn write;   /* where nghttp2's output goes (the TLS connection, or a test's) */
    void *io;
    nghttp2_session *ng;
    struct event *flush_ev;
    const struct updoh_cbs *cbs;
    void *owner;
    struct dg_list streams;
    size_t n_streams;
    bool goaway;     /* the server sent GOAWAY: no new streams */
    bool ready;      /* the owner's ready() ran: TLS done and HTTP/2 agreed */
    bool no_streams; /* the server's SETTINGS allow no stream at all */
    bool closing;    /* failed: reporting to the owner */
    char why[200];
};

static void stream_free(struct up_stream *st)
{
    dg_list_unlink(&st->c->streams, &st->node);
    st->c->n_streams--;
    dg_buf_free(&st->body);
    free(st);
}

/* The connection is over: every open query hears it, then the owner. Last action of a path. */
static void conn_fail(struct updoh_conn *c, int err, const char *why)
{
    if (c->closing)
        return;
    c->closing = true;
    if (!c->why[0])
        snprintf(c->why, sizeof(c->why), "%s", why);
    for (struct dg_lnode *n = c->streams.head; n; n = n->next) {
        struct up_stream *st = dg_list_entry(n, struct up_stream, node);
        void *tag = st->tag;
        st->tag = NULL;
        /* the owner may cancel others (tag = NULL) but no submit succeeds now. A close by the
         * server (-ECONNRESET from the TLS layer, GOAWAY) left these unanswered: -ECONNABORTED
         * says "send it again"; anything else is a failure of the connection. */
        if (tag)
            c->cbs->done(c->owner, tag,
                         err == -ENOMEM       ? -ENOMEM
                         : err == -ECONNRESET ? -ECONNABORTED
                                              : -ECONNRESET,
                         NULL, 0);
    }
    c->cbs->closed(c->owner, err);
}

/* nghttp2's output into the TLS connection. @return 0, or -1 after conn_fail(). */
static int pump(struct updoh_conn *c)
{
    for (;;) {
        const uint8_t *p;
        ssize_t n = nghttp2_session_mem_send(c->ng, &p);
        if (n < 0) {
            conn_fail(c, -EPROTO, nghttp2_strerror((int)n));
            return -1;
        }
        if (n == 0)
            break;
        if (c->write(c->io, p, (size_t)n) < 0) {
            conn_fail(c, -ENOMEM, "out of memory");
            return -1;
        }
    }
    if (!nghttp2_session_want_read(c->ng) && !nghttp2_session_want_write(c->ng)) {
        /* GOAWAY both ways and every stream done */
        /* we never end a session ourselves but on an error of the server's: nghttp2 then
         * queued a GOAWAY and wants nothing more */
        if (c->goaway)
            conn_fail(c, -ECONNRESET, "the server sent GOAWAY");
        else
            conn_fail(c, -EPROTO, "HTTP/2 protocol error by the server");
        return -1;
    }
    return 0;
}

static void on_flush(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct updoh_conn *c = arg;
    if (!c->closing)
        (void)pump(c);
}

static void schedule_flush(struct updoh_conn *c)
{
    event_active(c->flush_ev, EV_WRITE, 1);
}

/* ---------------------------------------------------------------- nghttp2 callbacks */

static ssize_t on_read_query(nghttp2_session *ng, int32_t sid, uint8_t *buf, size_t length,
                             uint32_t *flags, nghttp2_data_source *src, void *user)
{
    (void)ng;
    (void)sid;
    (void)user;
    struct up_stream *st = src->ptr;
    size_t n = st->qlen - st->qoff;
    if (n > length)
        n = length;
    memcpy(buf, st->q + st->qoff, n);
    st->qoff += n;
    if (st->qoff == st->qlen)
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

static int on_header(nghttp2_session *ng, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *user)
{
    (void)flags;
    (void)user;
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_RESPONSE)
        return 0; /* trailers and the like: nothing we need */
    struct up_stream *st = nghttp2_session_get_stream_user_data(ng, frame->hd.stream_id);
    if (!st)
        return 0;
    if (namelen == 7 && memcmp(name, ":status", 7) == 0) {
        int v = 0;
        for (size_t i = 0; i < valuelen && i < 3; i++)
            v = v * 10 + (value[i] >= '0' && value[i] <= '9' ? value[i] - '0' : 0);
        st->status = valuelen == 3 ? v : 0;
    } else if (namelen == 12 && memcmp(name, "content-type", 12) == 0) {
        /* "application/dns-message", parameters allowed */
        static const char mt[] = "application/dns-message";
        st->type_ok = valuelen >= sizeof(mt) - 1 &&
                      strncasecmp((const char *)value, mt, sizeof(mt) - 1) == 0 &&
                      (valuelen == sizeof(mt) - 1 || value[sizeof(mt) - 1] == ';' ||
                       value[sizeof(mt) - 1] == ' ');
    }
    return 0;
}

static int on_data_chunk(nghttp2_session *ng, uint8_t flags, int32_t sid, const uint8_t *data,
                         size_t len, void *user)
{
    (void)flags;
    (void)user;
    struct up_stream *st = nghttp2_session_get_stream_user_data(ng, sid);
    if (!st || st->too_big)
        return 0;
    if (st->body.len + len > DNS_MAX_MSG) {
        /* no DNS message is that large: stop it here */
        st->too_big = true;
        nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, sid, NGHTTP2_CANCEL);
        return 0;
    }
    if (dg_buf_append(&st->body, data, len) < 0)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    return 0;
}

static int on_stream_close(nghttp2_session *ng, int32_t sid, uint32_t error_code, void *user)
{
    struct updoh_conn *c = user;
    struct up_stream *st = nghttp2_session_get_stream_user_data(ng, sid);
    if (!st)
        return 0;
    nghttp2_session_set_stream_user_data(ng, sid, NULL);
    void *tag = st->tag;
    st->tag = NULL;
    if (tag) {
        int err = 0;
        if (error_code == NGHTTP2_REFUSED_STREAM)
            err = -ENOTCONN; /* not processed (GOAWAY, or refused): send it again elsewhere */
        else if (error_code != NGHTTP2_NO_ERROR && !st->too_big)
            err = -ECONNRESET;
        else if (st->too_big || st->status != 200 || !st->type_ok || st->body.len < DNS_HEADER_LEN)
            err = -EPROTO;
        if (err == -EPROTO && !c->why[0]) {
            /* once per connection, for the owner's log */
            if (st->status != 200)
                snprintf(c->why, sizeof(c->why), "answered HTTP status %d", st->status);
            else if (!st->type_ok)
                snprintf(c->why, sizeof(c->why),
                         "answered without content-type application/dns-message");
            else
                snprintf(c->why, sizeof(c->why), "answered a body that is no DNS message");
        }
        c->cbs->done(c->owner, tag, err, err ? NULL : st->body.data, err ? 0 : st->body.len);
    }
    stream_free(st);
    return 0;
}

static int on_frame_recv(nghttp2_session *ng, const nghttp2_frame *frame, void *user)
{
    (void)ng;
    struct updoh_conn *c = user;
    if (frame->hd.type == NGHTTP2_SETTINGS && !(frame->hd.flags & NGHTTP2_FLAG_ACK) &&
        nghttp2_session_get_remote_settings(ng, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS) == 0)
        c->no_streams = true; /* ended after mem_recv returns: not from inside a callback */
    if (frame->hd.type == NGHTTP2_GOAWAY) {
        /* streams above last_stream_id are closed by nghttp2 with REFUSED_STREAM */
        c->goaway = true;
        if (!c->why[0])
            snprintf(c->why, sizeof(c->why), "the server sent GOAWAY (error %u)",
                     frame->goaway.error_code);
    }
    return 0;
}

/* ---------------------------------------------------------------- TLS callbacks */

static void on_tls_ready(void *arg)
{
    struct updoh_conn *c = arg;
    char alpn[32];
    if (strcmp(uptls_conn_alpn(c->tls, alpn, sizeof(alpn)), "h2") != 0) {
        conn_fail(c, -EPROTO, "the server does not offer HTTP/2 (ALPN h2)");
        return;
    }
    c->ready = true;
    c->cbs->ready(c->owner);
}

int updoh_conn_input(struct updoh_conn *c, const uint8_t *data, size_t len)
{
    if (c->closing)
        return -1;
    ssize_t n = nghttp2_session_mem_recv(c->ng, data, len);
    if (n >= 0 && c->no_streams) {
        conn_fail(c, -EPROTO, "the server's SETTINGS allow no streams");
        return -1;
    }
    if (n < 0) {
        char why[120];
        snprintf(why, sizeof(why), "HTTP/2 error: %s", nghttp2_strerror((int)n));
        /* queue the GOAWAY nghttp2 may have prepared, then end */
        const uint8_t *p;
        ssize_t k;
        while ((k = nghttp2_session_mem_send(c->ng, &p)) > 0)
            (void)c->write(c->io, p, (size_t)k);
        conn_fail(c, -EPROTO, why);
        return -1;
    }
    return pump(c);
}

static void on_tls_input(void *arg, struct dg_buf *in)
{
    struct updoh_conn *c = arg;
    size_t len = in->len;
    in->len = 0; /* consumed whatever happens; c may be gone after the call */
    (void)updoh_conn_input(c, in->data, len);
}

static void on_tls_closed(void *arg, int err)
{
    struct updoh_conn *c = arg;
    snprintf(c->why, sizeof(c->why), "%s", uptls_conn_why(c->tls));
    conn_fail(c, err, c->why);
}

static const struct uptls_cbs tls_cbs = {
    .ready = on_tls_ready, .input = on_tls_input, .closed = on_tls_closed};

/* ---------------------------------------------------------------- API */

static int tls_write(void *io, const void *p, size_t n)
{
    return uptls_conn_write(io, p, n);
}

/* The session part of a connection: nghttp2 client session, flush event, SETTINGS queued. */
static struct updoh_conn *session_new(struct event_base *base, const struct dg_upstream *up,
                                      const struct updoh_cbs *cbs, void *owner, int *err)
{
    struct updoh_conn *c = calloc(1, sizeof(*c));
    nghttp2_session_callbacks *ncb = NULL;
    if (!c || nghttp2_session_callbacks_new(&ncb) != 0) {
        free(c);
        *err = -ENOMEM;
        return NULL;
    }
    c->up = up;
    c->cbs = cbs;
    c->owner = owner;
    nghttp2_session_callbacks_set_on_header_callback(ncb, on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(ncb, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(ncb, on_stream_close);
    nghttp2_session_callbacks_set_on_frame_recv_callback(ncb, on_frame_recv);
    int rc = nghttp2_session_client_new(&c->ng, ncb, c);
    nghttp2_session_callbacks_del(ncb);
    /* no push; the server's answers are small: the default windows do */
    nghttp2_settings_entry set[] = {{NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
                                    {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 0}};
    if (rc != 0 || !(c->flush_ev = event_new(base, -1, 0, on_flush, c)) ||
        nghttp2_submit_settings(c->ng, NGHTTP2_FLAG_NONE, set, 2) != 0) {
        *err = -ENOMEM;
        goto fail;
    }
    return c;
fail:
    if (c->flush_ev)
        event_free(c->flush_ev);
    nghttp2_session_del(c->ng);
    free(c);
    return NULL;
}

struct updoh_conn *updoh_session_new(struct event_base *base, const struct dg_upstream *up,
                                     updoh_write_fn write, void *io, const struct updoh_cbs *cbs,
                                     void *owner, int *err)
{
    struct updoh_conn *c = session_new(base, up, cbs, owner, err);
    if (!c)
        return NULL;
    c->write = write;
    c->io = io;
    schedule_flush(c);
    return c;
}

struct updoh_conn *updoh_conn_new(struct uptls_ctx *tls, struct event_base *base,
                                  const struct dg_upstream *up, SSL_SESSION **session,
                                  unsigned handshake_ms, const struct updoh_cbs *cbs, void *owner,
                                  int *err)
{
    struct updoh_conn *c = session_new(base, up, cbs, owner, err);
    if (!c)
        return NULL;
    c->tls = uptls_conn_new(tls, base, up, "\x02h2", session, handshake_ms, &tls_cbs, c, err);
    if (!c->tls) {
        c->tls = NULL;
        updoh_conn_free(c);
        return NULL;
    }
    c->write = tls_write;
    c->io = c->tls;
    schedule_flush(c); /* the preface and SETTINGS wait in the TLS buffer for the handshake */
    return c;
}

bool updoh_can_take(const struct updoh_conn *c)
{
    if (c->closing || c->goaway)
        return false;
    uint32_t max =
        nghttp2_session_get_remote_settings(c->ng, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
    if (max > UPDOH_MAX_STREAMS)
        max = UPDOH_MAX_STREAMS;
    return c->n_streams < max;
}

int32_t updoh_submit(struct updoh_conn *c, const uint8_t *msg, size_t len, void *tag)
{
    if (!updoh_can_take(c))
        return -ENOTCONN;
    struct up_stream *st = calloc(1, sizeof(*st) + len);
    if (!st)
        return -ENOMEM;
    st->c = c;
    st->tag = tag;
    st->q = (uint8_t *)(st + 1);
    memcpy(st->q, msg, len);
    st->qlen = len;
    char clen[24];
    snprintf(clen, sizeof(clen), "%zu", len);
#define NV(n, v)                                                                                   \
    {(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v),                                     \
     NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE}
    nghttp2_nv nv[] = {
        NV(":method", "POST"),
        NV(":scheme", "https"),
        NV(":authority", c->up->authority),
        NV(":path", c->up->path),
        NV("content-type", "application/dns-message"),
        NV("accept", "application/dns-message"),
        NV("content-length", clen),
    };
#undef NV
    nv[6].flags = NGHTTP2_NV_FLAG_NO_COPY_NAME; /* clen lives on this stack frame */
    nghttp2_data_provider prd = {.source.ptr = st, .read_callback = on_read_query};
    int32_t sid = nghttp2_submit_request(c->ng, NULL, nv, sizeof(nv) / sizeof(nv[0]), &prd, st);
    if (sid < 0) {
        free(st);
        return sid == NGHTTP2_ERR_NOMEM ? -ENOMEM : -ENOTCONN;
    }
    st->id = sid;
    dg_list_push_front(&c->streams, &st->node);
    c->n_streams++;
    schedule_flush(c);
    return sid;
}

void updoh_cancel(struct updoh_conn *c, int32_t sid)
{
    /* by our own list: a stream whose HEADERS are still queued has no nghttp2 stream yet */
    struct up_stream *st = NULL;
    for (struct dg_lnode *n = c->streams.head; n && sid > 0; n = n->next)
        if (dg_list_entry(n, struct up_stream, node)->id == sid)
            st = dg_list_entry(n, struct up_stream, node);
    if (!st || !st->tag)
        return;
    st->tag = NULL;
    if (!c->closing) {
        nghttp2_submit_rst_stream(c->ng, NGHTTP2_FLAG_NONE, sid, NGHTTP2_CANCEL);
        schedule_flush(c);
    }
}

bool updoh_ready(const struct updoh_conn *c)
{
    return c->ready;
}

struct uptls_conn *updoh_tls(const struct updoh_conn *c)
{
    return c->tls;
}

const char *updoh_conn_why(const struct updoh_conn *c)
{
    return c->why;
}

void updoh_conn_free(struct updoh_conn *c)
{
    if (!c)
        return;
    while (c->streams.head)
        stream_free(dg_list_entry(c->streams.head, struct up_stream, node));
    event_free(c->flush_ev);
    nghttp2_session_del(c->ng);
    uptls_conn_free(c->tls); /* safe inside its callbacks: the memory goes when they return */
    free(c);
}
