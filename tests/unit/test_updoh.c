/*
 * Unit tests of the DoH client (updoh.h) against a real HTTP/2 server: nghttp2's own server
 * session, driven in this process through memory. The client is a session without TLS
 * (updoh_session_new()): its output is collected in a buffer and handed to the server's
 * nghttp2_session_mem_recv(); the server's output goes to updoh_conn_input(). exchange() moves
 * bytes both ways, with turns of the event loop for the client's flush event, until neither
 * side has anything more to say. Each test decides how the server answers: it records every
 * request (headers, body, RST_STREAM it got) and the test submits the response it wants.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <event2/event.h>
#include <nghttp2/nghttp2.h>

#include "dohgate/config.h"
#include "dohgate/updoh.h"
#include "dohgate/util.h"

#define MAX_SRV  8
#define MAX_DONE 8

/* www.example.com A IN, RD */
static const uint8_t query[] = {
    0x00, 0x00, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x03, 'w',  'w',  'w',  0x07, 'e',  'x',  'a',  'm',  'p',
    'l',  'e',  0x03, 'c',  'o',  'm',  0x00, 0x00, 0x01, 0x00, 0x01,
};
/* its answer: 192.0.2.1, TTL 300 */
static const uint8_t answer[] = {
    0x00, 0x00, 0x81, 0x80, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x03,
    'w',  'w',  'w',  0x07, 'e',  'x',  'a',  'm',  'p',  'l',  'e',  0x03, 'c',
    'o',  'm',  0x00, 0x00, 0x01, 0x00, 0x01, 0xc0, 0x0c, 0x00, 0x01, 0x00, 0x01,
    0x00, 0x00, 0x01, 0x2c, 0x00, 0x04, 0xc0, 0x00, 0x02, 0x01,
};

/* A request as the server saw it, and the response body it is sending. */
struct srv_stream {
    int32_t id;
    char method[16], scheme[16], path[64], authority[64], ctype[64], accept[64], clen[16];
    struct dg_buf body;
    bool ended;        /* the request's END_STREAM arrived */
    bool rst;          /* the client reset it */
    uint32_t rst_code; /* with this code */
    const uint8_t *out;
    size_t out_len, out_off;
};

struct done_rec {
    void *tag;
    int err;
    struct dg_buf msg;
};

struct h {
    struct event_base *base;
    struct dg_upstream up;
    struct updoh_conn *c;
    struct dg_buf c2s; /* client → server, waiting */
    struct dg_buf s2c; /* server → client, waiting */
    nghttp2_session *srv;
    struct srv_stream st[MAX_SRV];
    size_t n_st;
    struct done_rec done[MAX_DONE];
    size_t n_done;
    int closed;
    int closed_err;
};

/* ------------------------------------------------------------ the client's side */

static int client_write(void *io, const void *p, size_t n)
{
    struct h *h = io;
    return dg_buf_append(&h->c2s, p, n) < 0 ? -ENOMEM : 0;
}

static void on_ready(void *owner)
{
    (void)owner;
    fail_msg("ready() ran for a session without TLS");
}

static void on_done(void *owner, void *tag, int err, uint8_t *msg, size_t len)
{
    struct h *h = owner;
    assert_true(h->n_done < MAX_DONE);
    assert_int_equal(h->closed, 0);
    struct done_rec *d = &h->done[h->n_done++];
    d->tag = tag;
    d->err = err;
    if (err == 0)
        assert_int_equal(dg_buf_append(&d->msg, msg, len), 0);
}

static void on_closed(void *owner, int err)
{
    struct h *h = owner;
    h->closed++;
    h->closed_err = err;
}

static const struct updoh_cbs cbs = {.ready = on_ready, .done = on_done, .closed = on_closed};

/* ------------------------------------------------------------ the server's side */

static struct srv_stream *srv_find(struct h *h, int32_t id)
{
    for (size_t i = 0; i < h->n_st; i++)
        if (h->st[i].id == id)
            return &h->st[i];
    return NULL;
}

static int srv_begin_headers(nghttp2_session *s, const nghttp2_frame *f, void *user)
{
    (void)s;
    struct h *h = user;
    if (f->hd.type == NGHTTP2_HEADERS && f->headers.cat == NGHTTP2_HCAT_REQUEST) {
        assert_true(h->n_st < MAX_SRV);
        h->st[h->n_st++].id = f->hd.stream_id;
    }
    return 0;
}

static void copy_value(char *dst, size_t cap, const uint8_t *v, size_t len)
{
    assert_true(len < cap);
    memcpy(dst, v, len);
    dst[len] = '\0';
}

static int srv_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name,
                      size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                      void *user)
{
    (void)s;
    (void)flags;
    struct srv_stream *st = srv_find(user, f->hd.stream_id);
    assert_non_null(st);
    static const struct {
        const char *name;
        size_t off, cap;
    } fields[] = {
        {":method", offsetof(struct srv_stream, method), 16},
        {":scheme", offsetof(struct srv_stream, scheme), 16},
        {":path", offsetof(struct srv_stream, path), 64},
        {":authority", offsetof(struct srv_stream, authority), 64},
        {"content-type", offsetof(struct srv_stream, ctype), 64},
        {"accept", offsetof(struct srv_stream, accept), 64},
        {"content-length", offsetof(struct srv_stream, clen), 16},
    };
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
        if (strlen(fields[i].name) == namelen && memcmp(fields[i].name, name, namelen) == 0)
            copy_value((char *)st + fields[i].off, fields[i].cap, value, valuelen);
    return 0;
}

static int srv_data(nghttp2_session *s, uint8_t flags, int32_t sid, const uint8_t *data, size_t len,
                    void *user)
{
    (void)s;
    (void)flags;
    struct srv_stream *st = srv_find(user, sid);
    assert_non_null(st);
    assert_int_equal(dg_buf_append(&st->body, data, len), 0);
    return 0;
}

static int srv_frame_recv(nghttp2_session *s, const nghttp2_frame *f, void *user)
{
    (void)s;
    struct srv_stream *st = f->hd.stream_id ? srv_find(user, f->hd.stream_id) : NULL;
    if (!st)
        return 0;
    if ((f->hd.type == NGHTTP2_HEADERS || f->hd.type == NGHTTP2_DATA) &&
        (f->hd.flags & NGHTTP2_FLAG_END_STREAM))
        st->ended = true;
    if (f->hd.type == NGHTTP2_RST_STREAM) {
        st->rst = true;
        st->rst_code = f->rst_stream.error_code;
    }
    return 0;
}

static ssize_t srv_read_body(nghttp2_session *s, int32_t sid, uint8_t *buf, size_t length,
                             uint32_t *flags, nghttp2_data_source *src, void *user)
{
    (void)s;
    (void)sid;
    (void)user;
    struct srv_stream *st = src->ptr;
    size_t n = st->out_len - st->out_off;
    if (n > length)
        n = length;
    if (n)
        memcpy(buf, st->out + st->out_off, n);
    st->out_off += n;
    if (st->out_off == st->out_len)
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

/* The server answers stream @p sid: @p status, content-type @p ctype (NULL: none), @p body. */
static void respond(struct h *h, int32_t sid, const char *status, const char *ctype,
                    const uint8_t *body, size_t len)
{
    struct srv_stream *st = srv_find(h, sid);
    assert_non_null(st);
    assert_true(st->ended);
    st->out = body;
    st->out_len = len;
    st->out_off = 0;
    nghttp2_nv nv[2] = {
        {(uint8_t *)":status", (uint8_t *)status, 7, strlen(status), NGHTTP2_NV_FLAG_NONE},
        {(uint8_t *)"content-type", (uint8_t *)ctype, 12, ctype ? strlen(ctype) : 0,
         NGHTTP2_NV_FLAG_NONE},
    };
    nghttp2_data_provider prd = {.source.ptr = st, .read_callback = srv_read_body};
    assert_int_equal(nghttp2_submit_response(h->srv, sid, nv, ctype ? 2 : 1, &prd), 0);
}

static void respond_dns(struct h *h, int32_t sid)
{
    respond(h, sid, "200", "application/dns-message", answer, sizeof(answer));
}

/* ------------------------------------------------------------ plumbing */

/* The server's pending output, into its buffer (not yet to the client). */
static void srv_send(struct h *h)
{
    const uint8_t *p;
    ssize_t n;
    while ((n = nghttp2_session_mem_send(h->srv, &p)) > 0)
        assert_int_equal(dg_buf_append(&h->s2c, p, (size_t)n), 0);
    assert_true(n == 0);
}

/* Move bytes both ways until both sides are quiet. */
static void exchange(struct h *h)
{
    for (int round = 0; round < 1000; round++) {
        bool moved = false;
        event_base_loop(h->base, EVLOOP_NONBLOCK); /* the client's flush event */
        if (h->c2s.len) {
            ssize_t n = nghttp2_session_mem_recv(h->srv, h->c2s.data, h->c2s.len);
            assert_true(n == (ssize_t)h->c2s.len);
            h->c2s.len = 0;
            moved = true;
        }
        srv_send(h);
        if (h->s2c.len && !h->closed) {
            struct dg_buf in = h->s2c;
            h->s2c = (struct dg_buf){0};
            (void)updoh_conn_input(h->c, in.data, in.len);
            dg_buf_free(&in);
            moved = true;
        }
        if (!moved)
            return;
    }
    fail_msg("the two sides never went quiet");
}

static int setup(void **state)
{
    struct h *h = calloc(1, sizeof(*h));
    assert_non_null(h);
    const char *why = NULL;
    assert_int_equal(
        config_parse_upstream("https://doh.dohgate.test:8443/custom/dns-query addr=127.0.0.1",
                              &h->up, &why),
        0);
    h->base = event_base_new();
    assert_non_null(h->base);
    nghttp2_session_callbacks *cb;
    assert_int_equal(nghttp2_session_callbacks_new(&cb), 0);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, srv_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cb, srv_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, srv_data);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, srv_frame_recv);
    assert_int_equal(nghttp2_session_server_new(&h->srv, cb, h), 0);
    nghttp2_session_callbacks_del(cb);
    assert_int_equal(nghttp2_submit_settings(h->srv, NGHTTP2_FLAG_NONE, NULL, 0), 0);
    int err = 0;
    h->c = updoh_session_new(h->base, &h->up, client_write, h, &cbs, h, &err);
    assert_non_null(h->c);
    *state = h;
    return 0;
}

static int teardown(void **state)
{
    struct h *h = *state;
    updoh_conn_free(h->c);
    nghttp2_session_del(h->srv);
    for (size_t i = 0; i < h->n_st; i++)
        dg_buf_free(&h->st[i].body);
    for (size_t i = 0; i < h->n_done; i++)
        dg_buf_free(&h->done[i].msg);
    dg_buf_free(&h->c2s);
    dg_buf_free(&h->s2c);
    event_base_free(h->base);
    free(h);
    return 0;
}

static int tags[8]; /* distinct addresses for tags */

static int32_t submit(struct h *h, int i)
{
    size_t before = h->n_done;
    int32_t sid = updoh_submit(h->c, query, sizeof(query), &tags[i]);
    assert_true(sid > 0);
    assert_int_equal(h->n_done, before); /* done() never runs from updoh_submit() */
    return sid;
}

static const struct done_rec *done_for(struct h *h, int i)
{
    const struct done_rec *found = NULL;
    for (size_t k = 0; k < h->n_done; k++)
        if (h->done[k].tag == &tags[i]) {
            assert_null(found); /* once per query */
            found = &h->done[k];
        }
    return found;
}

/* ------------------------------------------------------------ tests */

static void test_request(void **state)
{
    struct h *h = *state;
    int32_t sid = submit(h, 0);
    exchange(h);
    struct srv_stream *st = srv_find(h, sid);
    assert_non_null(st);
    assert_true(st->ended);
    assert_string_equal(st->method, "POST");
    assert_string_equal(st->scheme, "https");
    assert_string_equal(st->path, "/custom/dns-query");
    assert_string_equal(st->path, h->up.path);
    assert_string_equal(st->authority, "doh.dohgate.test:8443");
    assert_string_equal(st->authority, h->up.authority);
    assert_string_equal(st->ctype, "application/dns-message");
    assert_string_equal(st->accept, "application/dns-message");
    char clen[16];
    snprintf(clen, sizeof(clen), "%zu", sizeof(query));
    assert_string_equal(st->clen, clen);
    assert_int_equal(st->body.len, sizeof(query));
    assert_memory_equal(st->body.data, query, sizeof(query));
    assert_int_equal(h->n_done, 0); /* no answer yet */
}

static void test_answer(void **state)
{
    struct h *h = *state;
    int32_t sid = submit(h, 0);
    exchange(h);
    respond_dns(h, sid);
    exchange(h);
    assert_int_equal(h->n_done, 1);
    const struct done_rec *d = done_for(h, 0);
    assert_non_null(d);
    assert_int_equal(d->err, 0);
    assert_int_equal(d->msg.len, sizeof(answer));
    assert_memory_equal(d->msg.data, answer, sizeof(answer));
    assert_int_equal(h->closed, 0);
    assert_true(updoh_can_take(h->c));
}

/* A failed query fails alone: the next one on the same connection is answered. */
static void next_one_answered(struct h *h, int i)
{
    int32_t sid = submit(h, i);
    exchange(h);
    respond_dns(h, sid);
    exchange(h);
    const struct done_rec *d = done_for(h, i);
    assert_non_null(d);
    assert_int_equal(d->err, 0);
    assert_int_equal(d->msg.len, sizeof(answer));
    assert_int_equal(h->closed, 0);
}

static void test_status_500(void **state)
{
    struct h *h = *state;
    int32_t sid = submit(h, 0);
    exchange(h);
    /* a DNS message in the body does not make a 500 an answer */
    respond(h, sid, "500", "application/dns-message", answer, sizeof(answer));
    exchange(h);
    assert_int_equal(h->n_done, 1);
    assert_int_equal(done_for(h, 0)->err, -EPROTO);
    next_one_answered(h, 1);
}

static void test_wrong_content_type(void **state)
{
    struct h *h = *state;
    int32_t a = submit(h, 0);
    int32_t b = submit(h, 1);
    exchange(h);
    respond(h, a, "200", "text/plain", answer, sizeof(answer));
    respond(h, b, "200", NULL, answer, sizeof(answer));
    exchange(h);
    assert_int_equal(h->n_done, 2);
    assert_int_equal(done_for(h, 0)->err, -EPROTO);
    assert_int_equal(done_for(h, 1)->err, -EPROTO);
    next_one_answered(h, 2);
}

static uint8_t big[65536];

static void test_body_too_large(void **state)
{
    struct h *h = *state;
    int32_t sid = submit(h, 0);
    exchange(h);
    respond(h, sid, "200", "application/dns-message", big, sizeof(big)); /* 65536 */
    exchange(h);
    assert_int_equal(h->n_done, 1);
    assert_int_equal(done_for(h, 0)->err, -EPROTO);
    /* the client stopped the stream rather than read on */
    assert_true(srv_find(h, sid)->rst);
    next_one_answered(h, 1);
}

/* The largest DNS message is still an answer (the limit is not off by one). */
static void test_body_65535(void **state)
{
    struct h *h = *state;
    int32_t sid = submit(h, 0);
    exchange(h);
    big[0] = 0x42;
    big[65534] = 0x24;
    respond(h, sid, "200", "application/dns-message", big, 65535);
    exchange(h);
    assert_int_equal(h->n_done, 1);
    const struct done_rec *d = done_for(h, 0);
    assert_int_equal(d->err, 0);
    assert_int_equal(d->msg.len, 65535);
    assert_memory_equal(d->msg.data, big, 65535);
    big[0] = 0;
    big[65534] = 0;
}

static void test_rst_stream(void **state)
{
    struct h *h = *state;
    int32_t a = submit(h, 0);
    int32_t b = submit(h, 1);
    exchange(h);
    assert_int_equal(
        nghttp2_submit_rst_stream(h->srv, NGHTTP2_FLAG_NONE, a, NGHTTP2_INTERNAL_ERROR), 0);
    assert_int_equal(
        nghttp2_submit_rst_stream(h->srv, NGHTTP2_FLAG_NONE, b, NGHTTP2_REFUSED_STREAM), 0);
    exchange(h);
    assert_int_equal(h->n_done, 2);
    assert_int_equal(done_for(h, 0)->err, -ECONNRESET);
    assert_int_equal(done_for(h, 1)->err, -ENOTCONN); /* refused: never processed */
    next_one_answered(h, 2);
}

static void test_goaway(void **state)
{
    struct h *h = *state;
    int32_t s1 = submit(h, 0);
    int32_t s3 = submit(h, 1);
    int32_t s5 = submit(h, 2);
    assert_int_equal(s1, 1);
    assert_int_equal(s3, 3);
    assert_int_equal(s5, 5);
    exchange(h);
    assert_int_equal(h->n_st, 3);
    assert_int_equal(nghttp2_submit_goaway(h->srv, NGHTTP2_FLAG_NONE, 1, NGHTTP2_NO_ERROR, NULL, 0),
                     0);
    exchange(h);
    /* 3 and 5 are refused at once; 1 goes on, and the connection takes nothing new */
    assert_int_equal(h->n_done, 2);
    assert_int_equal(done_for(h, 1)->err, -ENOTCONN);
    assert_int_equal(done_for(h, 2)->err, -ENOTCONN);
    assert_false(updoh_can_take(h->c));
    assert_int_equal(updoh_submit(h->c, query, sizeof(query), &tags[3]), -ENOTCONN);
    assert_int_equal(h->closed, 0);
    respond_dns(h, s1);
    exchange(h);
    assert_int_equal(h->n_done, 3);
    const struct done_rec *d = done_for(h, 0);
    assert_int_equal(d->err, 0);
    assert_int_equal(d->msg.len, sizeof(answer));
    assert_memory_equal(d->msg.data, answer, sizeof(answer));
    assert_null(done_for(h, 3));
    /* nothing left on it: the owner hears it is over, once, after the queries */
    assert_int_equal(h->closed, 1);
    assert_true(h->closed_err < 0);
    assert_false(updoh_can_take(h->c));
}

static void test_cancel(void **state)
{
    struct h *h = *state;
    int32_t a = submit(h, 0);
    int32_t b = submit(h, 1);
    exchange(h);
    /* both answers are on their way when the owner cancels a */
    respond_dns(h, a);
    respond_dns(h, b);
    srv_send(h);
    updoh_cancel(h->c, a);
    assert_int_equal(h->n_done, 0); /* never from updoh_cancel() */
    exchange(h);
    assert_true(srv_find(h, a)->rst);
    assert_int_equal(srv_find(h, a)->rst_code, NGHTTP2_CANCEL);
    assert_false(srv_find(h, b)->rst);
    assert_int_equal(h->n_done, 1);
    assert_null(done_for(h, 0));
    assert_int_equal(done_for(h, 1)->err, 0);
    assert_int_equal(h->closed, 0);
}

/* The answer arrives after the cancel and before the RST_STREAM went out. */
static void test_cancel_answer_first(void **state)
{
    struct h *h = *state;
    int32_t a = submit(h, 0);
    exchange(h);
    respond_dns(h, a);
    srv_send(h);
    updoh_cancel(h->c, a);
    struct dg_buf in = h->s2c;
    h->s2c = (struct dg_buf){0};
    assert_int_equal(updoh_conn_input(h->c, in.data, in.len), 0);
    dg_buf_free(&in);
    exchange(h);
    assert_int_equal(h->n_done, 0);
    assert_int_equal(h->closed, 0);
    next_one_answered(h, 1);
    assert_int_equal(h->n_done, 1);
}

/* Content-type parameters are allowed; an empty or short body is no DNS message. */
static void test_type_params_and_short_body(void **state)
{
    struct h *h = *state;
    int32_t a = submit(h, 0);
    int32_t b = submit(h, 1);
    int32_t c = submit(h, 2);
    exchange(h);
    respond(h, a, "200", "application/dns-message; charset=binary", answer, sizeof(answer));
    respond(h, b, "200", "application/dns-message", NULL, 0);
    respond(h, c, "200", "application/dns-message", answer, 11);
    exchange(h);
    assert_int_equal(h->n_done, 3);
    assert_int_equal(done_for(h, 0)->err, 0);
    assert_int_equal(done_for(h, 0)->msg.len, sizeof(answer));
    assert_int_equal(done_for(h, 1)->err, -EPROTO);
    assert_int_equal(done_for(h, 2)->err, -EPROTO);
}

/* The owner frees a connection with queries open: no callback runs (updoh_conn_free()). */
static void test_free_with_pending(void **state)
{
    struct h *h = *state;
    submit(h, 0);
    submit(h, 1);
    exchange(h);
    assert_int_equal(h->n_st, 2);
    updoh_conn_free(h->c);
    h->c = NULL;
    event_base_loop(h->base, EVLOOP_NONBLOCK);
    assert_int_equal(h->n_done, 0);
    assert_int_equal(h->closed, 0);
}

/* Cancelled in the turn it was submitted, before its HEADERS went out (updoh_cancel() found no
 * nghttp2 stream for it yet and did nothing: done() then ran for a cancelled query). */
static void test_cancel_before_sent(void **state)
{
    struct h *h = *state;
    int32_t a = submit(h, 0);
    updoh_cancel(h->c, a);
    exchange(h);
    struct srv_stream *st = srv_find(h, a);
    if (st && st->ended && !st->rst)
        respond_dns(h, a); /* the request went out after all: the server answers it */
    exchange(h);
    assert_null(done_for(h, 0));
    assert_int_equal(h->n_done, 0);
    next_one_answered(h, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_request, setup, teardown),
        cmocka_unit_test_setup_teardown(test_answer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_status_500, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wrong_content_type, setup, teardown),
        cmocka_unit_test_setup_teardown(test_body_too_large, setup, teardown),
        cmocka_unit_test_setup_teardown(test_body_65535, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rst_stream, setup, teardown),
        cmocka_unit_test_setup_teardown(test_goaway, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_answer_first, setup, teardown),
        cmocka_unit_test_setup_teardown(test_type_params_and_short_body, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_with_pending, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_before_sent, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
