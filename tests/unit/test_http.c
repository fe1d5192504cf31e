/*
 * The HTTP exchange state machine (http.c) through a fake transport: responding releases the
 * pending operation, the end cancels it exactly once, a response that cannot be queued falls
 * back to 503/500 and then to a reset, the body rules (HEAD, 204, 304) and the streamed-body
 * length checks, and the events the observer sees.
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

#include "dohgate/config.h"
#include "dohgate/http.h"
#include "dohgate/log.h"
#include "dohgate/observer.h"
#include "dohgate/site.h"

/* A transport that records what it was asked, and fails the next N responses on demand. */
struct fake {
    struct http_exchange ex;
    int fail_next; /* respond calls to fail with fail_rc */
    int fail_rc;
    int nresp, nreset, nresume;
    struct http_response last;
    bool last_had_body;
    size_t body_len;
    bool streamed;
    char location[256];   /* the last response's location header, copied */
    char retry_after[16]; /* and its retry-after */
    /* a streamed request body: bytes the transport holds, its end, a failure */
    uint8_t held[64];
    size_t nheld;
    bool body_end;
    int body_err;
    int nabandon, nbody_read;
    bool in_body_read; /* inside ops->body_read: the reader's callback must not run */
};

/* A response reaching the fake transport: it fails while fail_next lasts (the caller keeps its
 * body then), else it is counted and kept in last. */
static int f_take(struct fake *f, const struct http_response *resp, bool streamed)
{
    if (f->fail_next > 0) {
        f->fail_next--;
        return f->fail_rc;
    }
    f->nresp++;
    f->last = *resp;
    f->streamed = streamed;
    f->location[0] = '\0';
    f->retry_after[0] = '\0';
    for (size_t i = 0; i < resp->nhdrs; i++) {
        if (strcmp(resp->hdrs[i].name, "location") == 0)
            snprintf(f->location, sizeof(f->location), "%s", resp->hdrs[i].value);
        if (strcmp(resp->hdrs[i].name, "retry-after") == 0)
            snprintf(f->retry_after, sizeof(f->retry_after), "%s", resp->hdrs[i].value);
    }
    return 0;
}

static int f_respond(struct http_exchange *ex, const struct http_response *resp,
                     struct dg_buf *body)
{
    struct fake *f = (struct fake *)ex;
    int rc = f_take(f, resp, false);
    if (rc)
        return rc;
    f->last_had_body = body != NULL;
    f->body_len = body ? body->len : 0;
    if (body)
        dg_buf_free(body); /* taken */
    return 0;
}

static int f_respond_stream(struct http_exchange *ex, const struct http_response *resp)
{
    return f_take((struct fake *)ex, resp, true);
}

static void f_resume(struct http_exchange *ex)
{
    ((struct fake *)ex)->nresume++;
}

static void f_reset(struct http_exchange *ex)
{
    ((struct fake *)ex)->nreset++;
}

static int reader_calls;
static bool reader_reentered;

static long f_body_read(struct http_exchange *ex, uint8_t *buf, size_t max, bool *eof)
{
    struct fake *f = (struct fake *)ex;
    f->nbody_read++;
    f->in_body_read = true;
    long n;
    *eof = false;
    if (f->body_err) {
        n = f->body_err;
    } else if (f->nheld == 0) {
        *eof = f->body_end;
        n = f->body_end ? 0 : HTTP_BODY_AGAIN;
    } else {
        n = (long)(f->nheld < max ? f->nheld : max);
        memcpy(buf, f->held, (size_t)n);
        memmove(f->held, f->held + n, f->nheld - (size_t)n);
        f->nheld -= (size_t)n;
        *eof = f->body_end && f->nheld == 0;
    }
    f->in_body_read = false;
    return n;
}

static void f_body_abandon(struct http_exchange *ex)
{
    ((struct fake *)ex)->nabandon++;
}

static int nrefuse;
static void f_refuse(struct http_exchange *ex)
{
    (void)ex;
    nrefuse++;
}

static const struct http_exchange_ops fake_ops = {f_respond,   f_respond_stream, f_resume, f_reset,
                                                  f_body_read, f_body_abandon,   NULL};
/* the same, with a transport that can refuse a stream (HTTP/2) */
static const struct http_exchange_ops refusing_ops = {
    f_respond, f_respond_stream, f_resume, f_reset, f_body_read, f_body_abandon, f_refuse};

struct seen {
    int n;
    enum dg_event ev;
    unsigned idx;
    uint64_t value;
};

static void on_event(void *arg, enum dg_event ev, unsigned idx, uint64_t value)
{
    struct seen *s = arg;
    s->n++;
    s->ev = ev;
    s->idx = idx;
    s->value = value;
}

static struct config *cfg;
static struct seen seen;
static struct dg_observer obs = {on_event, &seen};
static struct handler_ctx hctx;

static void start(struct fake *f, const char *method)
{
    memset(f, 0, sizeof(*f));
    memset(&seen, 0, sizeof(seen));
    http_exchange_init(&f->ex, &fake_ops, &hctx);
    f->ex.req = (struct http_request){.method = method, .path = "/x", .version = 20, .https = true};
}

/* A GET exchange begun, whose transport fails its next @p n responses with @p rc. */
static void start_failing(struct fake *f, int n, int rc)
{
    start(f, "GET");
    http_exchange_begin(&f->ex);
    f->fail_next = n;
    f->fail_rc = rc;
}

/* A pending operation that counts its cancels. */
static int cancels;
static void op_cancel(void *op)
{
    (void)op;
    cancels++;
}

static void no_answer(struct http_exchange *ex)
{
    (void)ex;
}

static void answer_later(struct http_exchange *ex)
{
    http_set_pending(ex, op_cancel, ex);
}

static void answer_now(struct http_exchange *ex)
{
    http_respond_text(ex, 404, "not here", NULL, 0);
}

static void test_dispatch_states(void **state)
{
    struct fake f;
    start(&f, "GET");
    assert_int_equal(f.ex.state, HTTP_EX_READING);
    http_exchange_dispatch(&f.ex, answer_now);
    assert_int_equal(f.ex.state, HTTP_EX_RESPONDED);
    assert_int_equal(f.nresp, 1);
    assert_int_equal(f.last.status, 404);
    http_exchange_end(&f.ex);
    assert_int_equal(f.ex.state, HTTP_EX_DONE);
    http_exchange_end(&f.ex); /* again: nothing */
    assert_int_equal(f.ex.state, HTTP_EX_DONE);
}

static void test_unanswered_gets_500(void **state)
{
    struct fake f;
    start(&f, "GET");
    http_exchange_dispatch(&f.ex, no_answer);
    assert_int_equal(f.nresp, 1);
    assert_int_equal(f.last.status, 500);
    assert_int_equal(f.ex.state, HTTP_EX_RESPONDED);
}

static void test_respond_releases_pending(void **state)
{
    struct fake f;
    start(&f, "GET");
    cancels = 0;
    http_exchange_dispatch(&f.ex, answer_later);
    assert_int_equal(f.nresp, 0); /* pending work: no 500 */
    assert_non_null(f.ex.cancel);
    /* the operation completes and answers without clearing anything by hand */
    struct dg_buf body = {0};
    assert_int_equal(dg_buf_append(&body, "abc", 3), 0);
    assert_int_equal(http_respond(&f.ex, 200, NULL, 0, &body), 0);
    assert_null(f.ex.cancel);
    assert_null(f.ex.pending);
    assert_int_equal(body.len, 0); /* moved */
    http_exchange_end(&f.ex);
    assert_int_equal(cancels, 0); /* answered: never cancelled */
}

/* http_refuse(): a transport that can refuse (HTTP/2 REFUSED_STREAM) ends the exchange with
 * no response, releasing the pending operation; one that cannot (HTTP/1.1) answers 503 with
 * retry-after and the text. */
static void test_refuse(void **state)
{
    struct fake f;
    start(&f, "GET");
    f.ex.ops = &refusing_ops;
    cancels = 0;
    nrefuse = 0;
    http_exchange_dispatch(&f.ex, answer_later);
    assert_int_equal(http_refuse(&f.ex, "too many"), 0);
    assert_int_equal(nrefuse, 1);
    assert_int_equal(f.nresp, 0);
    assert_int_equal(f.nreset, 0);
    assert_int_equal(f.ex.state, HTTP_EX_DONE);
    assert_null(f.ex.cancel);
    http_exchange_end(&f.ex);
    assert_int_equal(cancels, 0); /* the refusal released it: never cancelled */

    start(&f, "GET");
    http_exchange_dispatch(&f.ex, answer_later);
    assert_int_equal(http_refuse(&f.ex, "too many"), 0);
    assert_int_equal(nrefuse, 1);
    assert_int_equal(f.nresp, 1);
    assert_int_equal(f.last.status, 503);
    assert_int_equal(f.body_len, strlen("too many\n"));
    assert_string_equal(f.retry_after, "1");
    assert_int_equal(f.ex.state, HTTP_EX_RESPONDED);
    http_exchange_end(&f.ex);
    assert_int_equal(cancels, 0);
}

static void test_end_cancels_once(void **state)
{
    struct fake f;
    start(&f, "GET");
    cancels = 0;
    http_exchange_dispatch(&f.ex, answer_later);
    http_exchange_end(&f.ex);
    assert_int_equal(cancels, 1);
    http_exchange_end(&f.ex);
    assert_int_equal(cancels, 1);
    assert_int_equal(f.nresp, 0);
}

static void test_failed_respond_falls_back(void **state)
{
    struct fake f;
    /* out of memory: 503 instead */
    start(&f, "GET");
    http_exchange_dispatch(&f.ex, answer_later);
    f.fail_next = 1;
    f.fail_rc = -ENOMEM;
    struct dg_buf body = {0};
    assert_int_equal(dg_buf_append(&body, "abc", 3), 0);
    assert_int_equal(http_respond(&f.ex, 200, NULL, 0, &body), -ENOMEM);
    dg_buf_free(&body); /* still the caller's on failure */
    assert_int_equal(f.nresp, 1);
    assert_int_equal(f.last.status, 503);
    assert_int_equal(f.nreset, 0);
    assert_int_equal(f.ex.state, HTTP_EX_RESPONDED);
    assert_null(f.ex.cancel);
    /* another error: 500 */
    start_failing(&f, 1, -EINVAL);
    assert_int_equal(http_respond_text(&f.ex, 404, "no", NULL, 0), -EINVAL);
    assert_int_equal(f.last.status, 500);
    assert_int_equal(f.nreset, 0);
}

static void test_failed_fallback_resets(void **state)
{
    struct fake f;
    start(&f, "GET");
    cancels = 0;
    http_exchange_dispatch(&f.ex, answer_later);
    f.fail_next = 2; /* the response and its fallback */
    f.fail_rc = -ENOMEM;
    assert_int_equal(http_respond_text(&f.ex, 200, "ok", NULL, 0), -ENOMEM);
    assert_int_equal(f.nresp, 0);
    assert_int_equal(f.nreset, 1);
    assert_int_equal(f.ex.state, HTTP_EX_DONE);
    http_exchange_end(&f.ex);
    assert_int_equal(cancels, 0);
    assert_int_equal(f.nreset, 1);
    /* a handler's own 503 that fails once: the fallback (its own 503 text) goes out */
    start_failing(&f, 1, -ENOMEM);
    http_respond_text(&f.ex, 503, "busy", NULL, 0);
    assert_int_equal(f.nresp, 1);
    assert_int_equal(f.last.status, 503);
    assert_int_equal(f.nreset, 0);
}

/* A body source over a fixed buffer that can be told to hold more than it announces. */
struct src {
    const char *data;
    size_t len, off;
    size_t asked_max;
    int closes;
    bool again;
};

static long s_read(void *arg, uint8_t *buf, size_t max)
{
    struct src *s = arg;
    if (s->again)
        return HTTP_BODY_AGAIN;
    if (max > s->asked_max)
        s->asked_max = max;
    size_t n = s->len - s->off < max ? s->len - s->off : max;
    memcpy(buf, s->data + s->off, n);
    s->off += n;
    return (long)n;
}

static void s_close(void *arg)
{
    ((struct src *)arg)->closes++;
}

static void test_stream_failure_closes_source(void **state)
{
    struct fake f;
    struct src s = {.data = "hello", .len = 5};
    const struct http_body_source bs = {s_read, s_close, &s};
    start_failing(&f, 1, -ENOMEM);
    assert_int_equal(http_respond_stream(&f.ex, 200, NULL, 0, 5, &bs), -ENOMEM);
    assert_int_equal(s.closes, 1);
    assert_int_equal(f.last.status, 503);
    assert_false(f.streamed);
    http_exchange_end(&f.ex);
    assert_int_equal(s.closes, 1);
}

static void test_body_rules(void **state)
{
    struct fake f;
    struct dg_buf body = {0};
    /* HEAD: the length of the body it would get, no body */
    start(&f, "HEAD");
    http_exchange_begin(&f.ex);
    assert_int_equal(dg_buf_append(&body, "12345", 5), 0);
    assert_int_equal(http_respond(&f.ex, 200, NULL, 0, &body), 0);
    assert_true(f.last.no_body);
    assert_int_equal(f.last.length, 5);
    assert_false(f.last_had_body);
    assert_int_equal(body.len, 0);
    /* 304 and 204: no body, no length */
    static const int bodyless[] = {204, 304};
    for (size_t i = 0; i < 2; i++) {
        start(&f, "GET");
        http_exchange_begin(&f.ex);
        assert_int_equal(dg_buf_append(&body, "12345", 5), 0);
        assert_int_equal(http_respond(&f.ex, bodyless[i], NULL, 0, &body), 0);
        assert_true(f.last.no_body);
        assert_int_equal(f.last.length, -1);
        assert_false(f.last_had_body);
    }
    /* a GET 200: the body and its length */
    start(&f, "GET");
    http_exchange_begin(&f.ex);
    assert_int_equal(dg_buf_append(&body, "12345", 5), 0);
    assert_int_equal(http_respond(&f.ex, 200, NULL, 0, &body), 0);
    assert_false(f.last.no_body);
    assert_int_equal(f.last.length, 5);
    assert_int_equal(f.body_len, 5);
    /* streamed HEAD and 304: the source is closed at once, HEAD keeps the length */
    struct src s = {.data = "hello", .len = 5};
    const struct http_body_source bs = {s_read, s_close, &s};
    start(&f, "HEAD");
    http_exchange_begin(&f.ex);
    assert_int_equal(http_respond_stream(&f.ex, 200, NULL, 0, 5, &bs), 0);
    assert_int_equal(s.closes, 1);
    assert_true(f.last.no_body);
    assert_int_equal(f.last.length, 5);
    assert_int_equal(s.off, 0);
    start(&f, "GET");
    http_exchange_begin(&f.ex);
    assert_int_equal(http_respond_stream(&f.ex, 304, NULL, 0, 5, &bs), 0);
    assert_int_equal(s.closes, 2);
    assert_int_equal(f.last.length, -1);
    assert_true(http_no_body("GET", 100));
    assert_false(http_no_body("POST", 200));
}

static void test_stream_length_checks(void **state)
{
    struct fake f;
    uint8_t buf[64];
    bool eof;
    /* a source with more than its length is never asked for more */
    struct src s = {.data = "0123456789", .len = 10};
    const struct http_body_source bs = {s_read, s_close, &s};
    start(&f, "GET");
    http_exchange_begin(&f.ex);
    assert_int_equal(http_respond_stream(&f.ex, 200, NULL, 0, 4, &bs), 0);
    assert_int_equal(http_body_pull(&f.ex, buf, sizeof(buf), &eof), 4);
    assert_true(eof);
    assert_int_equal(s.asked_max, 4);
    assert_int_equal(s.closes, 1);
    assert_int_equal(http_body_pull(&f.ex, buf, sizeof(buf), &eof), -EIO); /* closed */
    /* a source that ends early: an error, never a short complete body */
    struct src s2 = {.data = "abc", .len = 3};
    const struct http_body_source bs2 = {s_read, s_close, &s2};
    start(&f, "GET");
    http_exchange_begin(&f.ex);
    assert_int_equal(http_respond_stream(&f.ex, 200, NULL, 0, 8, &bs2), 0);
    assert_int_equal(http_body_pull(&f.ex, buf, sizeof(buf), &eof), 3);
    assert_false(eof);
    assert_true(http_body_pull(&f.ex, buf, sizeof(buf), &eof) < 0);
    assert_int_equal(s2.closes, 1);
    /* unknown length: its end is the end; AGAIN waits, resume reaches the transport */
    struct src s3 = {.data = "xyz", .len = 3, .again = true};
    const struct http_body_source bs3 = {s_read, s_close, &s3};
    start(&f, "GET");
    http_exchange_begin(&f.ex);
    assert_int_equal(http_respond_stream(&f.ex, 200, NULL, 0, -1, &bs3), 0);
    assert_int_equal(f.last.length, -1);
    assert_false(f.last.no_body);
    assert_int_equal(http_body_pull(&f.ex, buf, sizeof(buf), &eof), HTTP_BODY_AGAIN);
    s3.again = false;
    http_body_resume(&f.ex);
    assert_int_equal(f.nresume, 1);
    assert_int_equal(http_body_pull(&f.ex, buf, sizeof(buf), &eof), 3);
    assert_false(eof);
    assert_int_equal(http_body_pull(&f.ex, buf, sizeof(buf), &eof), 0);
    assert_true(eof);
    assert_int_equal(s3.closes, 1);
    /* the exchange ends mid-body: closed exactly once */
    struct src s4 = {.data = "0123456789", .len = 10};
    const struct http_body_source bs4 = {s_read, s_close, &s4};
    start(&f, "GET");
    http_exchange_begin(&f.ex);
    assert_int_equal(http_respond_stream(&f.ex, 200, NULL, 0, 10, &bs4), 0);
    assert_int_equal(http_body_pull(&f.ex, buf, 3, &eof), 3);
    http_exchange_end(&f.ex);
    http_exchange_end(&f.ex);
    assert_int_equal(s4.closes, 1);
}

/* ---- request bodies streamed to the handler ---- */

static void on_reader(void *arg)
{
    struct fake *f = arg;
    if (f->in_body_read)
        reader_reentered = true;
    reader_calls++;
}

static void read_later(struct http_exchange *ex)
{
    http_req_body_set_reader(ex, on_reader, ex);
    http_set_pending(ex, op_cancel, ex);
}

static void start_streamed(struct fake *f, long long length)
{
    start(f, "POST");
    f->ex.req.body_stream = true;
    f->ex.req.body_length = length;
    reader_calls = 0;
    reader_reentered = false;
}

static void feed(struct fake *f, const char *bytes, bool end)
{
    size_t n = strlen(bytes);
    assert_true(f->nheld + n <= sizeof(f->held));
    memcpy(f->held + f->nheld, bytes, n);
    f->nheld += n;
    f->body_end = end;
    http_req_body_ready(&f->ex);
}

/* Bytes flow as the transport gets them; the reader is woken once per HTTP_BODY_AGAIN, never
 * from inside its own read, and the end closes the body. */
static void test_req_body_flow(void **state)
{
    struct fake f;
    uint8_t buf[16];
    bool eof;
    start_streamed(&f, 9);
    http_exchange_dispatch(&f.ex, read_later);
    assert_int_equal(f.nresp, 0);
    assert_int_equal(f.nabandon, 0); /* a reader is registered: nothing discarded */
    assert_int_equal(http_req_body_read(&f.ex, buf, sizeof(buf), &eof), HTTP_BODY_AGAIN);
    assert_false(eof);
    assert_int_equal(reader_calls, 0);
    feed(&f, "abcd", false);
    assert_int_equal(reader_calls, 1);
    feed(&f, "ef", false); /* not waiting: no second call */
    assert_int_equal(reader_calls, 1);
    assert_int_equal(http_req_body_read(&f.ex, buf, 4, &eof), 4);
    assert_memory_equal(buf, "abcd", 4);
    assert_int_equal(http_req_body_read(&f.ex, buf, sizeof(buf), &eof), 2);
    assert_false(eof);
    assert_int_equal(http_req_body_read(&f.ex, buf, sizeof(buf), &eof), HTTP_BODY_AGAIN);
    feed(&f, "ghi", true);
    assert_int_equal(reader_calls, 2);
    assert_int_equal(http_req_body_read(&f.ex, buf, sizeof(buf), &eof), 3);
    assert_true(eof);
    assert_true(http_req_body_closed(&f.ex));
    int reads = f.nbody_read;
    assert_int_equal(http_req_body_read(&f.ex, buf, sizeof(buf), &eof), -EIO);
    assert_int_equal(f.nbody_read, reads); /* closed: the transport is not asked again */
    http_req_body_ready(&f.ex);
    assert_int_equal(reader_calls, 2);
    assert_false(reader_reentered);
    assert_int_equal(f.nabandon, 0);
    http_exchange_end(&f.ex);
}

/* A response before the body is read (an early 413): abandoning reaches the transport once, the
 * reader is never called again; a handler that answers without a reader gets the body abandoned
 * for it; the end of the exchange forgets the reader. */
static void test_req_body_abandon(void **state)
{
    struct fake f;
    uint8_t buf[16];
    bool eof;
    start_streamed(&f, -1);
    http_exchange_dispatch(&f.ex, read_later);
    assert_int_equal(http_req_body_read(&f.ex, buf, sizeof(buf), &eof), HTTP_BODY_AGAIN);
    http_req_body_abandon(&f.ex);
    assert_int_equal(http_respond_status(&f.ex, 413, NULL, 0), 0);
    http_req_body_abandon(&f.ex);
    assert_int_equal(f.nabandon, 1);
    feed(&f, "late", true);
    assert_int_equal(reader_calls, 0);
    assert_int_equal(http_req_body_read(&f.ex, buf, sizeof(buf), &eof), -EIO);
    http_exchange_end(&f.ex);

    start_streamed(&f, 5);
    http_exchange_dispatch(&f.ex, answer_now);
    assert_int_equal(f.last.status, 404);
    assert_int_equal(f.nabandon, 1);

    start_streamed(&f, 5);
    http_exchange_dispatch(&f.ex, read_later);
    assert_int_equal(http_req_body_read(&f.ex, buf, sizeof(buf), &eof), HTTP_BODY_AGAIN);
    http_exchange_end(&f.ex);
    feed(&f, "x", true);
    assert_int_equal(reader_calls, 0);
    assert_int_equal(f.nabandon, 0); /* the transport's end drops the body itself */
}

/* A failure wakes the reader even when it is not waiting (so that it answers 413 now); the read
 * returns the error once and the body is closed. */
static void test_req_body_failure(void **state)
{
    struct fake f;
    uint8_t buf[16];
    bool eof;
    start_streamed(&f, -1);
    http_exchange_dispatch(&f.ex, read_later);
    feed(&f, "ab", false);
    assert_int_equal(reader_calls, 0); /* not waiting yet */
    f.body_err = -EMSGSIZE;
    http_req_body_failed(&f.ex);
    assert_int_equal(reader_calls, 1);
    assert_int_equal(http_req_body_read(&f.ex, buf, sizeof(buf), &eof), -EMSGSIZE);
    assert_true(http_req_body_closed(&f.ex));
    http_req_body_failed(&f.ex);
    assert_int_equal(reader_calls, 1);
    http_exchange_end(&f.ex);
}

/* The transport takes an exchange back from its handler (HTTP/1.1 request-timeout during a
 * streamed body): the pending operation is cancelled once, the reader is forgotten, and the
 * transport answers; the end cancels nothing more. Once answered, nothing can be taken back. */
static void test_take_back(void **state)
{
    struct fake f;
    start_streamed(&f, 100);
    cancels = 0;
    http_exchange_dispatch(&f.ex, read_later);
    uint8_t buf[4];
    bool eof;
    assert_int_equal(http_req_body_read(&f.ex, buf, sizeof(buf), &eof), HTTP_BODY_AGAIN);
    assert_true(http_exchange_take_back(&f.ex));
    assert_int_equal(cancels, 1);
    feed(&f, "ab", false);
    assert_int_equal(reader_calls, 0);
    assert_int_equal(http_respond_status(&f.ex, 408, NULL, 0), 0);
    assert_int_equal(f.last.status, 408);
    assert_false(http_exchange_take_back(&f.ex));
    http_exchange_end(&f.ex);
    assert_int_equal(cancels, 1);
}

/* A body the transport buffered whole reads through the same calls, in pieces, then its end. */
static void test_req_body_buffered(void **state)
{
    struct fake f;
    uint8_t buf[4];
    bool eof;
    start(&f, "POST");
    f.ex.req.body = (const uint8_t *)"hello";
    f.ex.req.body_len = 5;
    http_exchange_dispatch(&f.ex, answer_later);
    assert_int_equal(http_req_body_read(&f.ex, buf, 4, &eof), 4);
    assert_false(eof);
    assert_int_equal(http_req_body_read(&f.ex, buf, 4, &eof), 1);
    assert_true(eof);
    assert_int_equal(buf[0], 'o');
    assert_int_equal(f.nbody_read, 0);
    assert_int_equal(http_req_body_read(&f.ex, buf, 4, &eof), -EIO);
    http_exchange_end(&f.ex);
}

static void test_observed(void **state)
{
    struct fake f;
    start(&f, "POST");
    f.ex.req.version = 11;
    http_exchange_dispatch(&f.ex, answer_now);
    assert_int_equal(seen.n, 1);
    assert_int_equal(seen.ev, DG_EV_HTTP_RESPONSE);
    assert_int_equal(seen.idx, 404);
    assert_int_equal(DG_HTTP_KEY_VERSION(seen.value), 11);
    assert_int_equal(DG_HTTP_KEY_METHOD(seen.value), HTTP_M_POST);
    /* the fallback is what was sent, and is what counts */
    start_failing(&f, 1, -ENOMEM);
    http_respond_text(&f.ex, 200, "ok", NULL, 0);
    assert_int_equal(seen.n, 1);
    assert_int_equal(seen.idx, 503);
    /* a reset is not a response */
    start_failing(&f, 2, -ENOMEM);
    http_respond_text(&f.ex, 200, "ok", NULL, 0);
    assert_int_equal(seen.n, 0);
    /* scrapes of the metrics listener are not traffic */
    start(&f, "GET");
    f.ex.req.metrics = true;
    http_exchange_dispatch(&f.ex, answer_now);
    assert_int_equal(seen.n, 0);
}

static void test_methods(void **state)
{
    static const char *const idem[] = {"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"};
    for (size_t i = 0; i < sizeof(idem) / sizeof(idem[0]); i++)
        assert_true(http_method_idempotent(http_method_kind(idem[i])));
    static const char *const not_idem[] = {"POST", "PATCH", "CONNECT", "get", "FOO", ""};
    for (size_t i = 0; i < sizeof(not_idem) / sizeof(not_idem[0]); i++)
        assert_false(http_method_idempotent(http_method_kind(not_idem[i])));
    assert_int_equal(http_method_kind(NULL), HTTP_M_OTHER);
    assert_string_equal(http_reason(404), "Not Found");
    assert_string_equal(http_reason(299), "");
}

static void test_token_and_value(void **state)
{
    static const char *const tokens[] = {"host", "Transfer-Encoding", "x-a_b.c~d",
                                         "!#$%&'*+-.^_`|~", "A9"};
    for (size_t i = 0; i < sizeof(tokens) / sizeof(tokens[0]); i++)
        assert_true(http_token_valid(tokens[i], strlen(tokens[i])));
    static const char *const not_tokens[] = {
        "",    "transfer-encoding ", " host", "a b", "a\tb", "a:b", "a(b)", "a\"b", "a/b", "a@b",
        "a\r", "\xc3\xa9",           "a{b}",  "a,b", "a;b",  "a=b"};
    for (size_t i = 0; i < sizeof(not_tokens) / sizeof(not_tokens[0]); i++) {
        if (http_token_valid(not_tokens[i], strlen(not_tokens[i])))
            fail_msg("token: [%s] accepted", not_tokens[i]);
    }
    assert_false(http_token_valid("ab\0c", 4)); /* a NUL inside */

    static const char *const values[] = {"", "a", "a b\tc", "text/html; charset=\"x\"",
                                         "\x80\xff obs-text"};
    for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++)
        assert_true(http_field_value_valid(values[i], strlen(values[i])));
    static const char *const not_values[] = {" a",   "a ",    "\ta",   "a\r\nb", "a\nb",
                                             "a\rb", "a\x01", "a\x7f", "a\x1f b"};
    for (size_t i = 0; i < sizeof(not_values) / sizeof(not_values[0]); i++) {
        if (http_field_value_valid(not_values[i], strlen(not_values[i])))
            fail_msg("value: [%s] accepted", not_values[i]);
    }
    assert_false(http_field_value_valid("a\0b", 3));
}

static void test_authority(void **state)
{
    static const char *const good[] = {
        "a",
        "doh.example",
        "Doh.Example:8443",
        "192.0.2.1",
        "192.0.2.1:443",
        "[::1]",
        "[2001:db8::1]:65535",
        "[::ffff:192.0.2.1]",
        "xn--bcher-kva.example",
        "under_score.example",
        "a%2Eb",
        "sub!$&'()*+,;=delims",
        "host:0",
        "h:00443",
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        if (!http_authority_valid(good[i]))
            fail_msg("authority: [%s] refused", good[i]);
    }
    char longest[256 + 6];
    memset(longest, 'a', 255);
    memcpy(longest + 255, ":8443", 6);
    assert_true(http_authority_valid(longest));
    char too_long[257];
    memset(too_long, 'a', 256);
    too_long[256] = '\0';
    static const char *const bad[] = {
        "",
        ":443",
        "a:",
        "a:b",
        "a:-1",
        "a:65536",
        "a:123456",
        "a:+80",
        "a: 80",
        "a b",
        "a\tb",
        "a/b",
        "a?b",
        "a#b",
        "user@a",
        "a@b:80",
        "a\\b",
        "a\"b",
        "<a>",
        "a%2",
        "a%zz",
        "::1",
        "[::1",
        "[::1]x",
        "[::1]:",
        "[zz]",
        "[]",
        "[1.2.3.4]",
        "[fe80::1%25eth0]",
        "[v1.x]",
        "a:80:80",
        "a\r\nb",
        "\xc3\xa9.example",
        "a.example.",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        /* "a.example." is a valid reg-name (a fully qualified name) */
        bool expect = strcmp(bad[i], "a.example.") == 0;
        if (http_authority_valid(bad[i]) != expect)
            fail_msg("authority: [%s] %s", bad[i], expect ? "refused" : "accepted");
    }
    assert_false(http_authority_valid(too_long));
    assert_false(http_authority_valid(NULL));
}

/* Scan @p msg in pieces of @p step bytes: the scanner's verdict and where it says the head
 * ended (offset past the empty line, or -1). */
static long scan(const char *msg, size_t step, long *head_end)
{
    struct http_head_scan sc = {0};
    size_t len = strlen(msg), off = 0;
    *head_end = -1;
    while (off < len) {
        size_t n = len - off < step ? len - off : step;
        long r = http_head_scan(&sc, (const uint8_t *)msg + off, n);
        if (r < 0)
            return r;
        if (http_head_scan_done(&sc) && *head_end < 0)
            *head_end = (long)(off + (size_t)r);
        off += n;
    }
    return 0;
}

static void test_head_scan(void **state)
{
    static const struct {
        const char *msg;
        long verdict;
        long head_end;
    } cases[] = {
        {"GET / HTTP/1.1\r\nHost: a\r\n\r\nbody \r\n x", 0, 27},
        {"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", 0, 31},
        {"GET / HTTP/1.1\nHost: a\n\n\n x", 0, 24},
        {"GET / HTTP/1.1\r\nHost: a\r\n", 0, -1},
        {"GET / HTTP/1.1\r\nHost: a\r\n b\r\n\r\n", -EBADMSG, -1},
        {"GET / HTTP/1.1\r\nHost: a\r\n\tb\r\n\r\n", -EBADMSG, -1},
        {"GET / HTTP/1.1\r\n Host: a\r\n\r\n", -EBADMSG, -1},
        {"GET / HTTP/1.1\r\nA: b\rC: d\r\n\r\n", -EBADMSG, -1},
        {"GET / HTTP/1.1\r\nA: b\r\n\rX", -EBADMSG, -1},
        {"GET /\r HTTP/1.1\r\n\r\n", -EBADMSG, -1},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        for (size_t step = 1; step <= 64; step += 63) { /* byte by byte, and whole */
            long end;
            long v = scan(cases[i].msg, step, &end);
            if (v != cases[i].verdict || (v == 0 && end != cases[i].head_end))
                fail_msg("head scan case %zu step %zu: verdict %ld end %ld", i, step, v, end);
        }
    }
    /* once done, nothing more is head */
    struct http_head_scan sc = {0};
    assert_int_equal(http_head_scan(&sc, (const uint8_t *)"A\r\n\r\n", 5), 5);
    assert_true(http_head_scan_done(&sc));
    assert_int_equal(http_head_scan(&sc, (const uint8_t *)" x", 2), 0);
}

static int handled;
static void count_and_answer(struct http_exchange *ex)
{
    handled++;
    http_respond_text(ex, 200, "ok", NULL, 0);
}

static void test_dispatch_checks_authority(void **state)
{
    /* HTTP/2's :authority (and a host field) reach the handlers only when valid: 400 else */
    static const char *const bad[] = {"user@a.example", "a.example:x", "[zz]", "a b", ""};
    struct fake f;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        start(&f, "GET");
        handled = 0;
        f.ex.req.authority = bad[i];
        http_exchange_dispatch(&f.ex, count_and_answer);
        assert_int_equal(handled, 0);
        assert_int_equal(f.last.status, 400);
        assert_int_equal(f.ex.state, HTTP_EX_RESPONDED);
    }
    const struct http_header host_bad[] = {{"accept", "*/*"}, {"host", "a/b"}};
    start(&f, "GET");
    handled = 0;
    f.ex.req.headers = host_bad;
    f.ex.req.nheaders = 2;
    http_exchange_dispatch(&f.ex, count_and_answer);
    assert_int_equal(handled, 0);
    assert_int_equal(f.last.status, 400);

    const struct http_header host_ok[] = {{"host", "doh.example:443"}};
    start(&f, "GET");
    handled = 0;
    f.ex.req.authority = "[2001:db8::1]:8443";
    f.ex.req.headers = host_ok;
    f.ex.req.nheaders = 1;
    http_exchange_dispatch(&f.ex, count_and_answer);
    assert_int_equal(handled, 1);
    assert_int_equal(f.last.status, 200);
    start(&f, "GET"); /* no authority at all: the handler decides (HTTP/1.0) */
    handled = 0;
    http_exchange_dispatch(&f.ex, count_and_answer);
    assert_int_equal(handled, 1);
}

static void test_redirect_never_from_invalid_host(void **state)
{
    /* The port-80 redirect called directly (without the dispatch check): an invalid authority
     * or host field never makes the Location, server-name does. */
    static const char *const bad[] = {"[evil]", "evil.example:+80", "user@evil.example",
                                      "evil.example/x", "[::1]x"};
    struct site site = {.root.fd = -1, .acme.fd = -1, .https_port = 443};
    struct handler_ctx ctx = hctx;
    ctx.site = &site;
    struct fake f;
    for (size_t i = 0; i < 2 * sizeof(bad) / sizeof(bad[0]); i++) {
        const char *h = bad[i / 2];
        const struct http_header host = {"host", h};
        start(&f, "GET");
        f.ex.ctx = &ctx;
        f.ex.req.https = false;
        if (i % 2) {
            f.ex.req.headers = &host;
            f.ex.req.nheaders = 1;
        } else {
            f.ex.req.authority = h;
        }
        http_exchange_begin(&f.ex);
        site_handle_plain(&f.ex);
        assert_int_equal(f.last.status, 301);
        if (strcmp(f.location, "https://localhost/x") != 0)
            fail_msg("redirect for [%s]: location [%s]", h, f.location);
    }
    start(&f, "GET");
    f.ex.ctx = &ctx;
    f.ex.req.authority = "[2001:db8::1]:80";
    http_exchange_begin(&f.ex);
    site_handle_plain(&f.ex);
    assert_string_equal(f.location, "https://[2001:db8::1]/x");
}

int main(void)
{
    char err[256];
    dg_log_set_level(DG_LOG_ERR);
    cfg = config_new();
    if (!cfg || config_set(cfg, "upstream", "127.0.0.1:9", "t", 0, err, sizeof(err)) != 0 ||
        config_finish(cfg, err, sizeof(err)) != 0)
        return 1;
    hctx = (struct handler_ctx){.cfg = cfg, .obs = &obs};
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dispatch_states),
        cmocka_unit_test(test_unanswered_gets_500),
        cmocka_unit_test(test_respond_releases_pending),
        cmocka_unit_test(test_refuse),
        cmocka_unit_test(test_end_cancels_once),
        cmocka_unit_test(test_failed_respond_falls_back),
        cmocka_unit_test(test_failed_fallback_resets),
        cmocka_unit_test(test_stream_failure_closes_source),
        cmocka_unit_test(test_body_rules),
        cmocka_unit_test(test_stream_length_checks),
        cmocka_unit_test(test_observed),
        cmocka_unit_test(test_req_body_flow),
        cmocka_unit_test(test_req_body_abandon),
        cmocka_unit_test(test_req_body_failure),
        cmocka_unit_test(test_req_body_buffered),
        cmocka_unit_test(test_take_back),
        cmocka_unit_test(test_methods),
        cmocka_unit_test(test_token_and_value),
        cmocka_unit_test(test_authority),
        cmocka_unit_test(test_head_scan),
        cmocka_unit_test(test_dispatch_checks_authority),
        cmocka_unit_test(test_redirect_never_from_invalid_host),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    config_free(cfg);
    return rc;
}
