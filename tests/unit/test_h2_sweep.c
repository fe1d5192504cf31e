/* h2_session_sweep() (send-timeout, issue 14) driven by an in-memory nghttp2 client: a response
 * held back by a zero window stalls the connection however many PINGs come, a granted window
 * (DATA sent) is progress; an unfinished request is reset with RST_STREAM CANCEL; a stream whose
 * response is still being made (the server's wait) is left to the backstop. The sweep takes the
 * time as an argument, so the tests choose it; the streams' progress times are real, hence the
 * short sleeps (only lower bounds matter). */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <nghttp2/nghttp2.h>

#include "dohgate/budget.h"
#include "dohgate/config.h"
#include "dohgate/h2.h"
#include "dohgate/http.h"
#include "dohgate/log.h"
#include "dohgate/util.h"

#include "dohtest.h"

#define MAX_REC 64 /* test_waiting_turn drains the connection window with landing pages */
#define SEND_MS 40 /* the send-timeout the sweeps are given */
#define WAIT_MS 60 /* slept so that what happened before is older than SEND_MS */
#define LONG_MS 100000

struct t {
    struct config *cfg;
    struct handler_ctx hctx;
    struct h2_session *srv;
    nghttp2_session *cli;
    unsigned wakes;
    struct dt_resp rec[MAX_REC];
};

static struct dt_resp *rec_of(struct t *t, int32_t id)
{
    assert_true(id > 0 && (id & 1) == 1 && (size_t)(id - 1) / 2 < MAX_REC);
    return &t->rec[(id - 1) / 2];
}

static int cli_on_header(nghttp2_session *ng, const nghttp2_frame *frame, const uint8_t *name,
                         size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                         void *ud)
{
    if (frame->hd.type == NGHTTP2_HEADERS)
        dt_resp_header(rec_of(ud, frame->hd.stream_id), name, namelen, value, valuelen);
    return 0;
}

static int cli_on_data(nghttp2_session *ng, uint8_t flags, int32_t id, const uint8_t *data,
                       size_t len, void *ud)
{
    (void)dt_resp_data(rec_of(ud, id), data, len);
    return 0;
}

static int cli_on_stream_close(nghttp2_session *ng, int32_t id, uint32_t code, void *ud)
{
    struct dt_resp *r = rec_of(ud, id);
    r->closed = true;
    r->close_code = code;
    return 0;
}

static void on_wake(void *owner)
{
    ((struct t *)owner)->wakes++;
}

static void pump(struct t *t)
{
    assert_int_equal(dt_pump(t->cli, t->srv, false), DT_PUMP_QUIET);
}

/* A server session (landing-page mode: no site, no proxy, no resolver) and a client whose
 * SETTINGS (settings()) the test sends. */
static int setup(void **state)
{
    struct t *t = calloc(1, sizeof(*t));
    assert_non_null(t);
    dg_log_set_level(DG_LOG_WARN);
    t->cfg = dt_config_new(NULL);
    t->hctx = (struct handler_ctx){.cfg = t->cfg};
    const struct h2_settings st = {.max_concurrent_streams = 100};
    t->srv = h2_session_new(&st, &t->hctx, on_wake, t);
    assert_non_null(t->srv);
    nghttp2_session_callbacks *cbs;
    assert_int_equal(nghttp2_session_callbacks_new(&cbs), 0);
    nghttp2_session_callbacks_set_on_header_callback(cbs, cli_on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, cli_on_data);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, cli_on_stream_close);
    /* the client opens windows only when a test says so */
    nghttp2_option *opt;
    assert_int_equal(nghttp2_option_new(&opt), 0);
    nghttp2_option_set_no_auto_window_update(opt, 1);
    assert_int_equal(nghttp2_session_client_new2(&t->cli, cbs, t, opt), 0);
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cbs);
    *state = t;
    return 0;
}

static int teardown(void **state)
{
    struct t *t = *state;
    nghttp2_session_del(t->cli);
    h2_session_free(t->srv);
    config_free(t->cfg);
    free(t);
    return 0;
}

static void settings(struct t *t, uint32_t window)
{
    nghttp2_settings_entry iv = {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, window};
    assert_int_equal(nghttp2_submit_settings(t->cli, NGHTTP2_FLAG_NONE, &iv, 1), 0);
    pump(t);
}

static int32_t get(struct t *t, const char *path)
{
    nghttp2_nv hdrs[DT_DOH_HEADERS_MAX];
    size_t n = dt_doh_headers(hdrs, "GET", path, NULL);
    int32_t id = nghttp2_submit_request(t->cli, NULL, hdrs, n, NULL, NULL);
    assert_true(id > 0);
    pump(t);
    return id;
}

static struct h2_sweep sweep(struct t *t, uint64_t send_ms, uint64_t pending_ms)
{
    struct h2_sweep sw = {.now = dg_now_ms(), .send_ms = send_ms, .pending_ms = pending_ms};
    h2_session_sweep(t->srv, &sw);
    return sw;
}

static void ping(struct t *t)
{
    assert_int_equal(nghttp2_submit_ping(t->cli, NGHTTP2_FLAG_NONE, NULL), 0);
    pump(t);
}

/* The landing page, with a zero window: its head comes, its body cannot. PINGs do not help;
 * once SEND_MS passed the connection is stalled. */
static void test_zero_window_stalls(void **state)
{
    struct t *t = *state;
    settings(t, 0);
    int32_t id = get(t, "/");
    assert_int_equal(rec_of(t, id)->status, 200);
    assert_int_equal(rec_of(t, id)->body_len, 0);
    assert_int_equal(h2_session_streams(t->srv), 1);
    struct h2_sweep sw = sweep(t, SEND_MS, LONG_MS);
    assert_false(sw.stalled);
    assert_int_equal(sw.reset, 0);
    assert_true(sw.next > sw.now && sw.next <= sw.now + SEND_MS);
    for (int i = 0; i < 3; i++) {
        usleep(WAIT_MS * 1000 / 3);
        ping(t); /* "activity", but no progress */
    }
    sw = sweep(t, SEND_MS, LONG_MS);
    assert_true(sw.stalled);
    assert_int_equal(sw.reset, 0); /* the caller closes the connection: nothing else done */
    /* with a longer send-timeout, nothing is due yet */
    sw = sweep(t, LONG_MS, LONG_MS);
    assert_false(sw.stalled);
    assert_int_equal(sw.reset, 0);
}

/* The same, but the client opens its window after a while: DATA leaves, which is progress. */
static void test_window_is_progress(void **state)
{
    struct t *t = *state;
    settings(t, 0);
    int32_t id = get(t, "/");
    usleep(WAIT_MS * 1000);
    assert_int_equal(nghttp2_submit_window_update(t->cli, NGHTTP2_FLAG_NONE, id, 100), 0);
    pump(t);
    assert_int_equal(rec_of(t, id)->body_len, 100); /* 100 bytes left */
    struct h2_sweep sw = sweep(t, SEND_MS, LONG_MS);
    assert_false(sw.stalled);
    assert_int_equal(sw.reset, 0);
    /* and the whole body once the window allows: nothing held, nothing due */
    assert_int_equal(nghttp2_submit_window_update(t->cli, NGHTTP2_FLAG_NONE, id, 1 << 20), 0);
    pump(t);
    assert_true(rec_of(t, id)->closed);
    assert_int_equal(rec_of(t, id)->close_code, NGHTTP2_NO_ERROR);
    assert_int_equal(h2_session_streams(t->srv), 0);
    usleep(WAIT_MS * 1000);
    sw = sweep(t, SEND_MS, LONG_MS);
    assert_false(sw.stalled);
    assert_int_equal(sw.next, 0);
}

/* A request without END_STREAM whose body never comes (a DoH POST: the site here takes no
 * body, so its routes would refuse it at HEADERS): reset with CANCEL after SEND_MS, not
 * before, PINGs or not; the other stream (answered) is untouched. */
static ssize_t never(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t length, uint32_t *flags,
                     nghttp2_data_source *source, void *ud)
{
    return NGHTTP2_ERR_DEFERRED;
}

/* Submit a DoH POST announcing a 1000-byte body that @p read (over @p src) gives, and pump;
 * its stream id. */
static int32_t submit_post(struct t *t, nghttp2_data_source_read_callback read, void *src)
{
    nghttp2_nv hdrs[DT_DOH_HEADERS_MAX + 1];
    size_t n = dt_doh_headers(hdrs, "POST", "/dns-query", "application/dns-message");
    hdrs[n++] = dt_nv("content-length", "1000");
    nghttp2_data_provider prd = {.source.ptr = src, .read_callback = read};
    int32_t id = nghttp2_submit_request(t->cli, NULL, hdrs, n, &prd, NULL);
    assert_true(id > 0);
    pump(t);
    return id;
}

static void test_unfinished_request_reset(void **state)
{
    struct t *t = *state;
    settings(t, 65535);
    int32_t id = submit_post(t, never, NULL);
    int32_t done = get(t, "/");
    assert_true(rec_of(t, done)->closed);
    assert_int_equal(h2_session_streams(t->srv), 1);
    struct h2_sweep sw = sweep(t, SEND_MS, LONG_MS);
    assert_int_equal(sw.reset, 0);
    usleep(WAIT_MS * 1000);
    ping(t);
    unsigned wakes = t->wakes;
    sw = sweep(t, SEND_MS, LONG_MS);
    assert_false(sw.stalled);
    assert_int_equal(sw.reset, 1);
    assert_true(t->wakes > wakes); /* the RST_STREAM is to be sent */
    pump(t);
    assert_true(rec_of(t, id)->closed);
    assert_int_equal(rec_of(t, id)->close_code, NGHTTP2_CANCEL);
    assert_int_equal(rec_of(t, id)->status, 0);
    assert_int_equal(h2_session_streams(t->srv), 0);
    sw = sweep(t, SEND_MS, LONG_MS); /* nothing twice */
    assert_int_equal(sw.reset, 0);
}

/* A body that keeps coming is progress: each DATA frame restarts the stream's clock. */
struct trickle {
    int allow; /* DATA frames of 10 bytes it may still send */
};

static ssize_t trickle_read(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t length,
                            uint32_t *flags, nghttp2_data_source *source, void *ud)
{
    struct trickle *tr = source->ptr;
    if (tr->allow == 0 || length < 10)
        return NGHTTP2_ERR_DEFERRED;
    tr->allow--;
    memset(buf, 'x', 10);
    return 10;
}

static void test_request_bytes_are_progress(void **state)
{
    struct t *t = *state;
    settings(t, 65535);
    struct trickle tr = {0};
    int32_t id = submit_post(t, trickle_read, &tr);
    /* 3 x 30 ms: longer than SEND_MS in all, never SEND_MS without a byte */
    for (int i = 0; i < 3; i++) {
        usleep(WAIT_MS * 1000 / 2);
        tr.allow = 1;
        assert_int_equal(nghttp2_session_resume_data(t->cli, id), 0);
        pump(t);
        assert_int_equal(tr.allow, 0); /* the 10 bytes left */
        struct h2_sweep sw = sweep(t, SEND_MS, LONG_MS);
        assert_int_equal(sw.reset, 0);
    }
    /* and once they stop, the stream is reset */
    usleep(WAIT_MS * 1000);
    struct h2_sweep sw = sweep(t, SEND_MS, LONG_MS);
    assert_int_equal(sw.reset, 1);
    pump(t);
    assert_int_equal(rec_of(t, id)->close_code, NGHTTP2_CANCEL);
}

/* Review finding 1: a stream waiting its turn is not stalled. The connection window is drained
 * with landing pages the client does not give back, so that the last one (A) is cut short; B
 * depends exclusively on A, so nghttp2 sends B nothing while A has data. The client then
 * reads A slowly but steadily (10 bytes of connection window at a time): the connection makes
 * progress and B's own window is open, so B is not reset however long it waits. */
static void test_waiting_turn_not_reset(void **state)
{
    struct t *t = *state;
    settings(t, 1 << 20); /* stream windows are never the limit here */
    int32_t a;
    do {
        a = get(t, "/");
    } while (rec_of(t, a)->closed);
    int32_t got = nghttp2_session_get_stream_effective_recv_data_length(t->cli, a);
    assert_true(got > 0);
    nghttp2_nv hdrs[DT_DOH_HEADERS_MAX];
    size_t n = dt_doh_headers(hdrs, "GET", "/", NULL);
    nghttp2_priority_spec pri;
    nghttp2_priority_spec_init(&pri, a, 16, 1);
    int32_t b = nghttp2_submit_request(t->cli, &pri, hdrs, n, NULL, NULL);
    assert_true(b > 0);
    pump(t);
    assert_int_equal(rec_of(t, b)->status, 200);
    for (int i = 0; i < 3; i++) {
        usleep(WAIT_MS * 1000 / 3);
        assert_int_equal(nghttp2_submit_window_update(t->cli, NGHTTP2_FLAG_NONE, 0, 10), 0);
        pump(t);
        int32_t now_got = nghttp2_session_get_stream_effective_recv_data_length(t->cli, a);
        assert_int_equal(now_got, got + 10); /* A moves */
        got = now_got;
    }
    /* B was queued more than SEND_MS ago and got nothing: it waits its turn */
    assert_int_equal(nghttp2_session_get_stream_effective_recv_data_length(t->cli, b), 0);
    struct h2_sweep sw = sweep(t, SEND_MS, LONG_MS);
    assert_false(sw.stalled);
    assert_int_equal(sw.reset, 0);
    assert_true(sw.next > 0); /* the connection check still runs */
    /* and once the window opens, both finish */
    assert_int_equal(nghttp2_submit_window_update(t->cli, NGHTTP2_FLAG_NONE, 0, 1 << 20), 0);
    pump(t);
    assert_true(rec_of(t, a)->closed);
    assert_int_equal(rec_of(t, a)->close_code, NGHTTP2_NO_ERROR);
    assert_true(rec_of(t, b)->closed);
    assert_int_equal(rec_of(t, b)->close_code, NGHTTP2_NO_ERROR);
    assert_true(rec_of(t, b)->body_len > 0); /* B was served, not reset */
}

/* The other side of test_waiting_turn_not_reset: a stream whose own window the client keeps
 * shut is stalled even while another stream of the connection moves (and so the connection
 * check does not fire): B is reset with CANCEL, A goes on. */
static void test_shut_stream_window_reset(void **state)
{
    struct t *t = *state;
    settings(t, 0);
    int32_t a = get(t, "/");
    int32_t b = get(t, "/");
    for (int i = 0; i < 3; i++) {
        usleep(WAIT_MS * 1000 / 3);
        assert_int_equal(nghttp2_submit_window_update(t->cli, NGHTTP2_FLAG_NONE, a, 10), 0);
        pump(t);
    }
    assert_int_equal(rec_of(t, a)->body_len, 30);
    assert_int_equal(rec_of(t, b)->body_len, 0);
    struct h2_sweep sw = sweep(t, SEND_MS, LONG_MS);
    assert_false(sw.stalled);
    assert_int_equal(sw.reset, 1);
    pump(t);
    assert_true(rec_of(t, b)->closed);
    assert_int_equal(rec_of(t, b)->close_code, NGHTTP2_CANCEL);
    assert_false(rec_of(t, a)->closed);
}

/* Review finding 5: a stream reset by the sweep gives its buffered body (and its budget) back
 * at once, not when its RST_STREAM leaves (the client may not read). */
static void test_sweep_releases_body(void **state)
{
    struct t *t = *state;
    settings(t, 65535);
    size_t base = budget_process_used(BUDGET_BODY);
    struct trickle tr = {.allow = 10};
    int32_t id = submit_post(t, trickle_read, &tr);
    assert_int_equal(tr.allow, 0);
    assert_int_equal(budget_process_used(BUDGET_BODY), base + 100);
    usleep(WAIT_MS * 1000);
    struct h2_sweep sw = sweep(t, SEND_MS, LONG_MS);
    assert_int_equal(sw.reset, 1);
    assert_int_equal(budget_process_used(BUDGET_BODY), base); /* before the RST_STREAM left */
    assert_int_equal(h2_session_streams(t->srv), 1);
    pump(t);
    assert_int_equal(rec_of(t, id)->close_code, NGHTTP2_CANCEL);
    assert_int_equal(h2_session_streams(t->srv), 0);
    assert_int_equal(budget_process_used(BUDGET_BODY), base);
}

/* Review finding 6: padding is not progress. DATA frames of padding alone (written by hand:
 * nghttp2's client would not send them) come every WAIT_MS / 2; the stream is reset once
 * SEND_MS passed since its HEADERS. */
static void send_padding(struct t *t, int32_t id)
{
    uint8_t f[9 + 1 + 50] = {0};
    size_t len = sizeof(f) - 9;
    f[0] = (uint8_t)(len >> 16);
    f[1] = (uint8_t)(len >> 8);
    f[2] = (uint8_t)len;
    f[3] = NGHTTP2_DATA;
    f[4] = NGHTTP2_FLAG_PADDED;
    f[5] = (uint8_t)((uint32_t)id >> 24);
    f[6] = (uint8_t)((uint32_t)id >> 16);
    f[7] = (uint8_t)((uint32_t)id >> 8);
    f[8] = (uint8_t)id;
    f[9] = 50; /* Pad Length: the rest of the frame */
    assert_int_equal(h2_session_recv(t->srv, f, sizeof(f)), 0);
    pump(t);
}

static void test_padding_is_not_progress(void **state)
{
    struct t *t = *state;
    settings(t, 65535);
    int32_t id = submit_post(t, never, NULL);
    for (int i = 0; i < 3; i++) {
        usleep(WAIT_MS * 1000 / 2);
        send_padding(t, id);
    }
    assert_int_equal(h2_session_streams(t->srv), 1);
    struct h2_sweep sw = sweep(t, SEND_MS, LONG_MS);
    assert_int_equal(sw.reset, 1);
    pump(t);
    assert_true(rec_of(t, id)->closed);
    assert_int_equal(rec_of(t, id)->close_code, NGHTTP2_CANCEL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_zero_window_stalls, setup, teardown),
        cmocka_unit_test_setup_teardown(test_window_is_progress, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unfinished_request_reset, setup, teardown),
        cmocka_unit_test_setup_teardown(test_request_bytes_are_progress, setup, teardown),
        cmocka_unit_test_setup_teardown(test_waiting_turn_not_reset, setup, teardown),
        cmocka_unit_test_setup_teardown(test_shut_stream_window_reset, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sweep_releases_body, setup, teardown),
        cmocka_unit_test_setup_teardown(test_padding_is_not_progress, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
