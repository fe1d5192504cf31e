/*
 * Component tests of the HTTP/2 layer without HTTP sockets: an in-process nghttp2 *client*
 * session talks to our server session (h2.c) through memory, and requests run the real path:
 * h2 → router → doh handler → resolver (with a cache, as in production) → upstream module → a
 * fake UDP DNS server on 127.0.0.1 (support/dohtest.c, shared with test_failmalloc.c: its
 * readiness callback on the same event_base answers at once, holds queries until the test
 * releases them, or stays silent). Each query of
 * a test asks for its own name unless the test is about the same name, so that no cache hit or
 * coalescing changes the flow by accident.
 *
 * When a stream closes, its registration on the resolver goes at once; the upstream query
 * itself runs on so that its answer fills the cache (resolver.h). So "nothing pending any more"
 * (upstream_pending() == 0, resolver_inflight() == 0) is checked after the late answers came.
 *
 * One pump() moves client output into h2_session_recv() and h2_session_send() output into the
 * client until neither side has anything left; run_until() alternates pump() with one event
 * loop iteration (a 5 ms tick bounds each iteration) so the fake server and the timers work.
 *
 * The lifetime cases (reset while pending, connection dropped with queries pending, answers
 * arriving after the stream closed) are meant to run under ASan: a callback into a freed
 * stream shows up there; here they assert what is observable (no response, close codes,
 * wake calls, upstream_pending(), the upstream's counters).
 */
#define _GNU_SOURCE /* accept4, memmem */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include <cmocka.h>
#include <event2/event.h>
#include <nghttp2/nghttp2.h>

#include "dohgate/budget.h"
#include "dohgate/cache.h"
#include "dohgate/config.h"
#include "dohgate/dns.h"
#include "dohgate/doh.h"
#include "dohgate/h2.h"
#include "dohgate/http.h"
#include "dohgate/log.h"
#include "dohgate/pagepool.h"
#include "dohgate/proxy.h"
#include "dohgate/resolver.h"
#include "dohgate/upstream.h"
#include "dohgate/util.h"

#include "dohtest.h"

#define MAX_REC 64 /* client stream records, index (stream_id - 1) / 2 */
#define TICK_MS 5
#define N_DROP  20 /* streams pending when the connection drops */
/* The queries of one loop turn share an upstream UDP socket (one sendmmsg): the first N_DROP / 2
 * answers arrive on at least one socket, maybe two. */
#define DROP_SOCKETS 1
#define BIG_BODY     70000
#define SLACK_MS     25   /* libevent's coarse clock may fire timers a little early */
#define MAX_WAIT     2000 /* ms; generous bound for things that take a few ms */
#define LATE_WAIT    40   /* ms to let late answers come in and be (not) processed */
#define ERR_TEXT     256
#define QNAME_MAX    64
#define PATH_MAX_T   512
#define CACHE_BYTES  (4u << 20)

/* ------------------------------------------------------------ client side records */

struct t {
    struct event_base *base;
    struct event *tick;
    struct dt_fake *fake;
    struct config *cfg;
    struct upstream *up;
    struct cache *cache;
    struct resolver *res;
    struct handler_ctx hctx;
    struct pagepool *pool, *pages; /* the worker's page pools (h2.c's allocator) */
    struct h2_session *srv;
    nghttp2_session *cli;
    unsigned wakes;
    bool goaway;
    unsigned goaways;         /* GOAWAY frames received */
    int32_t goaway_first_id;  /* the first one's last-stream-ID */
    unsigned pings;           /* PINGs the client got */
    unsigned goaways_at_ping; /* GOAWAYs it had got when the (last) PING came */
    int32_t goaway_last_id;
    uint32_t goaway_code;
    struct dt_resp rec[MAX_REC];
    struct dt_body body[4];
    size_t pending_at_drop;
    unsigned wakes_at_drop;
    int active_at_drop;
    const char *const *opts;     /* extra options for start(), name/value pairs, NULL-ended */
    struct budget_scope *budget; /* the connection's scope for start(); NULL: none */
};

static struct dt_resp *rec_of(struct t *t, int32_t id)
{
    assert_true(id > 0 && (id & 1) == 1);
    size_t i = (size_t)(id - 1) / 2;
    assert_true(i < MAX_REC);
    return &t->rec[i];
}

static int cli_on_begin_headers(nghttp2_session *ng, const nghttp2_frame *frame, void *ud)
{
    if (frame->hd.type == NGHTTP2_HEADERS)
        rec_of(ud, frame->hd.stream_id)->header_blocks++;
    return 0;
}

static int cli_on_header(nghttp2_session *ng, const nghttp2_frame *frame, const uint8_t *name,
                         size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                         void *ud)
{
    if (frame->hd.type != NGHTTP2_HEADERS)
        return 0;
    struct dt_resp *r = rec_of(ud, frame->hd.stream_id);
    dt_resp_header(r, name, namelen, value, valuelen);
    if (namelen == 13 && memcmp(name, "cache-control", 13) == 0)
        r->cache_control_not_indexed = (flags & NGHTTP2_NV_FLAG_NO_INDEX) != 0;
    return 0;
}

static int cli_on_data(nghttp2_session *ng, uint8_t flags, int32_t id, const uint8_t *data,
                       size_t len, void *ud)
{
    /* an overflow is recorded (body_overflow) for the test to assert */
    (void)dt_resp_data(rec_of(ud, id), data, len);
    return 0;
}

static int cli_on_stream_close(nghttp2_session *ng, int32_t id, uint32_t code, void *ud)
{
    struct dt_resp *r = rec_of(ud, id);
    assert_false(r->closed);
    r->closed = true;
    r->close_code = code;
    return 0;
}

static int cli_on_frame_recv(nghttp2_session *ng, const nghttp2_frame *frame, void *ud)
{
    struct t *t = ud;
    if (frame->hd.type == NGHTTP2_PING && !(frame->hd.flags & NGHTTP2_FLAG_ACK)) {
        t->pings++;
        t->goaways_at_ping = t->goaways;
    }
    if (frame->hd.type == NGHTTP2_GOAWAY) {
        if (!t->goaways++)
            t->goaway_first_id = frame->goaway.last_stream_id;
        t->goaway = true;
        t->goaway_last_id = frame->goaway.last_stream_id;
        t->goaway_code = frame->goaway.error_code;
    }
    return 0;
}

static int cli_on_frame_send(nghttp2_session *ng, const nghttp2_frame *frame, void *ud)
{
    if (frame->hd.type == NGHTTP2_DATA)
        rec_of(ud, frame->hd.stream_id)->data_frames_sent++;
    return 0;
}

/* ------------------------------------------------------------ driving both sides */

static void on_wake(void *owner)
{
    struct t *t = owner;
    t->wakes++;
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
}

/* Move bytes both ways until both sides are quiet. */
static void pump(struct t *t)
{
    enum dt_pump_end e = dt_pump(t->cli, t->srv, false);
    if (e != DT_PUMP_QUIET)
        fail_msg("pump: %s", e == DT_PUMP_BUSY ? "the sessions never went quiet" : "a side failed");
}

typedef bool (*pred_fn)(struct t *t, long arg);

/* Pump and run the loop until @p done (NULL: never) holds or @p max_ms passed. */
static bool run_until(struct t *t, pred_fn done, long arg, unsigned max_ms)
{
    uint64_t end = dg_now_ms() + max_ms;
    for (;;) {
        pump(t);
        if (done && done(t, arg))
            return true;
        if (dg_now_ms() >= end)
            return false;
        assert_true(event_base_loop(t->base, EVLOOP_ONCE) >= 0);
    }
}

static void run_for(struct t *t, unsigned ms)
{
    (void)run_until(t, NULL, 0, ms);
}

static bool p_closed(struct t *t, long id)
{
    return rec_of(t, (int32_t)id)->closed;
}

static bool p_held(struct t *t, long n)
{
    return t->fake->n_held >= (size_t)n;
}

static uint64_t up_answers(const struct t *t)
{
    return upstream_get_stats(t->up)->answers;
}

/* Nothing left in flight anywhere below the h2 layer. */
static void assert_idle(const struct t *t)
{
    assert_int_equal(upstream_pending(t->up), 0);
    assert_int_equal(resolver_inflight(t->res), 0);
}

/* Run the loop without pumping until the upstream delivered @p n more answers. */
static void loop_until_answers(struct t *t, uint64_t n)
{
    uint64_t end = dg_now_ms() + MAX_WAIT;
    n += up_answers(t);
    while (up_answers(t) < n) {
        assert_true(dg_now_ms() < end);
        assert_true(event_base_loop(t->base, EVLOOP_ONCE) >= 0);
    }
}

/* Config, upstream, server and client sessions; @p up_ms / @p q_ms: the two timeouts. */
static void start(struct t *t, unsigned up_ms, unsigned q_ms)
{
    char err[ERR_TEXT] = "", addr[64], v[16];
    t->cfg = config_new();
    assert_non_null(t->cfg);
    snprintf(addr, sizeof(addr), "127.0.0.1:%u", ntohs(t->fake->addr.sin_port));
    assert_int_equal(config_set(t->cfg, "upstream", addr, "test", 0, err, sizeof(err)), 0);
    snprintf(v, sizeof(v), "%u", up_ms);
    assert_int_equal(config_set(t->cfg, "upstream-timeout", v, "test", 0, err, sizeof(err)), 0);
    snprintf(v, sizeof(v), "%u", q_ms);
    assert_int_equal(config_set(t->cfg, "query-timeout", v, "test", 0, err, sizeof(err)), 0);
    for (size_t i = 0; t->opts && t->opts[i]; i += 2) {
        if (config_set(t->cfg, t->opts[i], t->opts[i + 1], "test", 0, err, sizeof(err)) != 0)
            fail_msg("config_set(%s): %s", t->opts[i], err);
    }
    if (config_finish(t->cfg, err, sizeof(err)) != 0)
        fail_msg("config_finish: %s", err);

    t->up = upstream_new(t->base, t->cfg);
    assert_non_null(t->up);
    struct cache_config cc;
    cache_config_defaults(&cc);
    cc.max_bytes = CACHE_BYTES;
    t->cache = cache_new(&cc);
    assert_non_null(t->cache);
    t->res = resolver_new(t->up, t->cache, t->cfg);
    assert_non_null(t->res);
    /* the pools a worker gives its sessions (worker.c): their allocator paths are tested too */
    t->pool = pagepool_new(H2_FRAMEBUF_BYTES, 8);
    t->pages = pagepool_new(4096, 8);
    assert_non_null(t->pool);
    assert_non_null(t->pages);
    t->hctx = (struct handler_ctx){
        .cfg = t->cfg, .resolver = t->res, .h2_pool = t->pool, .h2_pages = t->pages};
    const struct h2_settings st = {.max_concurrent_streams = t->cfg->max_concurrent_streams,
                                   .budget = t->budget};
    t->srv = h2_session_new(&st, &t->hctx, on_wake, t);
    assert_non_null(t->srv);

    nghttp2_session_callbacks *cbs;
    assert_int_equal(nghttp2_session_callbacks_new(&cbs), 0);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, cli_on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cbs, cli_on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, cli_on_data);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, cli_on_stream_close);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, cli_on_frame_recv);
    nghttp2_session_callbacks_set_on_frame_send_callback(cbs, cli_on_frame_send);
    assert_int_equal(nghttp2_session_client_new(&t->cli, cbs, t), 0);
    nghttp2_session_callbacks_del(cbs);
    assert_int_equal(nghttp2_submit_settings(t->cli, NGHTTP2_FLAG_NONE, NULL, 0), 0);
    pump(t);
    assert_int_equal(h2_session_streams(t->srv), 0);
}

static int setup(void **state)
{
    struct t *t = calloc(1, sizeof(*t));
    assert_non_null(t);
    dg_log_set_level(DG_LOG_WARN);
    t->base = event_base_new();
    assert_non_null(t->base);
    /* Two priorities before any event exists: everything defaults to 1, so a priority-0 event
     * can run first in an iteration where upstream sockets are also ready (see on_drop). */
    assert_int_equal(event_base_priority_init(t->base, 2), 0);
    t->tick = event_new(t->base, -1, EV_PERSIST, on_tick, t);
    assert_non_null(t->tick);
    struct timeval tv = {.tv_sec = 0, .tv_usec = TICK_MS * 1000};
    assert_int_equal(event_add(t->tick, &tv), 0);
    t->fake = dt_fake_new(t->base);
    *state = t;
    return 0;
}

static int teardown(void **state)
{
    struct t *t = *state;
    if (t->cli)
        nghttp2_session_del(t->cli);
    h2_session_free(t->srv);
    pagepool_free(t->pool);
    pagepool_free(t->pages);
    resolver_free(t->res);
    cache_free(t->cache);
    upstream_free(t->up);
    config_free(t->cfg);
    dt_fake_free(t->fake);
    event_free(t->tick);
    event_base_free(t->base);
    free(t);
    return 0;
}

/* ------------------------------------------------------------ requests */

/* @p clen: a content-length header to send, or NULL for none (nghttp2 adds none itself);
 * @p prd: the body, or NULL for none (END_STREAM on HEADERS). */
static int32_t submit_prd(struct t *t, const char *method, const char *path, const char *ctype,
                          const char *clen, const nghttp2_data_provider *prd)
{
    nghttp2_nv hdrs[DT_DOH_HEADERS_MAX + 1];
    size_t n = dt_doh_headers(hdrs, method, path, ctype);
    if (clen)
        hdrs[n++] = dt_nv("content-length", clen);
    int32_t id = nghttp2_submit_request(t->cli, NULL, hdrs, n, prd, NULL);
    assert_true(id > 0);
    return id;
}

static int32_t submit_cl(struct t *t, const char *method, const char *path, const char *ctype,
                         const char *clen, struct dt_body *body)
{
    nghttp2_data_provider prd = {.source.ptr = body, .read_callback = dt_read_body};
    return submit_prd(t, method, path, ctype, clen, body ? &prd : NULL);
}

static int32_t submit(struct t *t, const char *method, const char *path, const char *ctype,
                      struct dt_body *body)
{
    return submit_cl(t, method, path, ctype, NULL, body);
}

/* GET /dns-query?dns=<query for @p name with ID @p qid>. */
static int32_t submit_dns_get(struct t *t, uint16_t qid, const char *name)
{
    uint8_t q[128];
    char path[PATH_MAX_T];
    size_t len = dt_build_query(q, sizeof(q), qid, name);
    int off = snprintf(path, sizeof(path), "/dns-query?dns=");
    assert_true(off > 0 && (size_t)off + dg_b64url_encoded_len(len) < sizeof(path));
    path[(size_t)off + dg_b64url_encode(q, len, path + off)] = '\0';
    return submit(t, "GET", path, NULL, NULL);
}

static void rst(struct t *t, int32_t id)
{
    assert_int_equal(nghttp2_submit_rst_stream(t->cli, NGHTTP2_FLAG_NONE, id, NGHTTP2_CANCEL), 0);
}

/* A complete 200 DoH answer with ID @p qid and rcode @p rcode on stream @p id. */
static void assert_dns_response(struct t *t, int32_t id, uint16_t qid, int rcode)
{
    struct dt_resp *r = rec_of(t, id);
    assert_true(r->closed);
    assert_int_equal(r->close_code, NGHTTP2_NO_ERROR);
    assert_int_equal(r->status, 200);
    assert_string_equal(r->ctype, DOH_CONTENT_TYPE);
    assert_false(r->body_overflow);
    assert_true(r->body_len >= DNS_HEADER_LEN);
    char cl[16];
    snprintf(cl, sizeof(cl), "%zu", r->body_len);
    assert_string_equal(r->content_length, cl);
    assert_int_equal(dg_get16(r->body), qid);
    assert_true(r->body[2] & 0x80); /* QR */
    assert_int_equal(dns_rcode(r->body, r->body_len), rcode);
}

/* Stream @p id saw no response at all and ended with RST_STREAM(@p code). */
static void assert_no_response(struct t *t, int32_t id, uint32_t code)
{
    struct dt_resp *r = rec_of(t, id);
    assert_true(r->closed);
    assert_int_equal(r->close_code, code);
    assert_int_equal(r->status, 0);
    assert_int_equal(r->header_blocks, 0);
    assert_int_equal(r->body_len, 0);
}

/* GET the answer for @p name with ID @p qid; it must come whole, NOERROR. @return the stream */
static int32_t get_answered(struct t *t, uint16_t qid, const char *name)
{
    int32_t id = submit_dns_get(t, qid, name);
    assert_true(run_until(t, p_closed, id, MAX_WAIT));
    assert_dns_response(t, id, qid, DNS_RCODE_NOERROR);
    return id;
}

/* ------------------------------------------------------------ 1. normal answers */

static void test_get_answered(void **state)
{
    struct t *t = *state;
    start(t, 1500, 4000);
    unsigned w0 = t->wakes;
    int32_t id = get_answered(t, 0xbeef, "www.example.com");
    struct dt_resp *r = rec_of(t, id);
    assert_int_equal(dg_get16(r->body + 6), 1); /* the fake's one A record */
    char cc[32];
    snprintf(cc, sizeof(cc), "max-age=%d", DT_A_RR_TTL);
    assert_string_equal(r->cache_control, cc);
    /* max-age changes from answer to answer: kept out of both HPACK tables (h2.c hpack_flags),
     * while the constant content-type is indexed (the table is not empty) */
    assert_true(r->cache_control_not_indexed);
    size_t table = nghttp2_session_get_hd_inflate_dynamic_table_size(t->cli);
    assert_true(table > 0 && table <= 1024);
    /* The answer came from the loop, after h2_session_recv() had returned: only the wake
     * callback could make the connection flush it. */
    assert_true(t->wakes > w0);
    assert_int_equal(t->fake->queries, 1);
    assert_int_equal(up_answers(t), 1);

    /* POST with the same pipeline. */
    uint8_t q[128];
    size_t qlen = dt_build_query(q, sizeof(q), 0x0102, "post.example.com");
    t->body[0] = (struct dt_body){.p = q, .len = qlen};
    int32_t id2 = submit(t, "POST", "/dns-query", DOH_CONTENT_TYPE, &t->body[0]);
    assert_true(run_until(t, p_closed, id2, MAX_WAIT));
    assert_dns_response(t, id2, 0x0102, DNS_RCODE_NOERROR);
    assert_true(rec_of(t, id2)->cache_control_not_indexed);
    /* nothing new in the client's table: content-type was found there */
    assert_int_equal(nghttp2_session_get_hd_inflate_dynamic_table_size(t->cli), table);
    assert_int_equal(t->fake->queries, 2);
    assert_int_equal(h2_session_streams(t->srv), 0);
    assert_idle(t);
}

/* An idle session gives its pages back (h2_session_trim()): the frame buffer, whose contents are
 * dead between frames, and the stream map's page, all zeroes once no stream is left (nghttp2
 * keeps no closed streams). Not while a stream is open; and a trimmed session works as before. */
static void test_trim_idle(void **state)
{
    struct t *t = *state;
    start(t, 1500, 4000);
    (void)get_answered(t, 0xbeef, "www.example.com");
    assert_int_equal(pagepool_in_use(t->pool), 1);
    assert_int_equal(pagepool_in_use(t->pages), 1);
    size_t both = pagepool_block_size(t->pool) + pagepool_block_size(t->pages);
    assert_int_equal(h2_session_trim(t->srv), both);

    /* a question not cached: its stream stays open while the upstream answers */
    int32_t id2 = submit_dns_get(t, 0x0102, "other.example.com");
    pump(t);
    assert_int_equal(h2_session_streams(t->srv), 1);
    assert_int_equal(h2_session_trim(t->srv), 0);
    assert_true(run_until(t, p_closed, id2, MAX_WAIT));
    assert_dns_response(t, id2, 0x0102, DNS_RCODE_NOERROR);

    /* after a trim the zero-filled frame buffer carries the next responses whole */
    assert_int_equal(h2_session_trim(t->srv), both);
    for (uint16_t i = 0; i < 3; i++)
        (void)get_answered(t, (uint16_t)(0x0200 + i), "www.example.com");
    assert_int_equal(h2_session_streams(t->srv), 0);
    assert_idle(t);
}

/* nghttp2 keeps no closed streams (h2.c, for the idle trim): a frame that arrives on a stream
 * after it closed (a late DATA with END_STREAM, as a client racing our response sends it) is
 * ignored, as RFC 9113 §5.1 has it after a RST_STREAM, instead of ending the whole connection
 * with GOAWAY(STREAM_CLOSED); the connection goes on serving. */
static void test_late_frame_on_closed_stream(void **state)
{
    struct t *t = *state;
    start(t, 1500, 4000);
    int32_t id = get_answered(t, 0x0a0b, "www.example.com");
    /* DATA, flags END_STREAM, stream id, one byte of payload */
    uint8_t late[10] = {0, 0, 1, NGHTTP2_DATA, NGHTTP2_FLAG_END_STREAM, 0, 0, 0, 0, 'x'};
    late[5] = (uint8_t)(id >> 24);
    late[6] = (uint8_t)(id >> 16);
    late[7] = (uint8_t)(id >> 8);
    late[8] = (uint8_t)id;
    assert_int_equal(h2_session_recv(t->srv, late, sizeof(late)), 0);
    pump(t);
    assert_int_equal(t->goaways, 0);
    assert_true(h2_session_want_read(t->srv));
    (void)get_answered(t, 0x0a0c, "www.example.com");
}

/* ------------------------------------------------------------ 2. reset while pending */

static void test_rst_while_pending(void **state)
{
    struct t *t = *state;
    start(t, 1500, 4000);
    t->fake->mode = DT_FAKE_HOLD;
    int32_t id = submit_dns_get(t, 0x1111, "reset.example.com");
    assert_true(run_until(t, p_held, 1, MAX_WAIT));
    assert_int_equal(h2_session_streams(t->srv), 1);
    assert_int_equal(upstream_pending(t->up), 1);

    rst(t, id);
    unsigned w0 = t->wakes;
    pump(t);
    /* The reset removed the stream and its registration synchronously; the upstream query
     * runs on for the cache. */
    assert_int_equal(h2_session_streams(t->srv), 0);
    assert_int_equal(upstream_pending(t->up), 1);

    /* The upstream answers late, to a query nobody waits for any more. */
    dt_fake_release(t->fake, 0, 1);
    run_for(t, LATE_WAIT);
    assert_no_response(t, id, NGHTTP2_CANCEL);
    assert_int_equal(t->wakes, w0);
    assert_int_equal(up_answers(t), 1);
    assert_idle(t);

    /* The connection is fine: the next query is answered. */
    t->fake->mode = DT_FAKE_ANSWER;
    int32_t id2 = submit_dns_get(t, 0x2222, "after-reset.example.com");
    assert_true(run_until(t, p_closed, id2, MAX_WAIT));
    assert_dns_response(t, id2, 0x2222, DNS_RCODE_NOERROR);
    assert_idle(t);
}

/* ------------------------------------------------------------ 3. connection drop */

/* Read events on the base other than the fake server's: the upstream's UDP sockets (several
 * queries share one). */
struct fd_scan {
    int skip;
    struct pollfd pfd[DT_MAX_HELD];
    nfds_t n;
};

static int collect_read_fd(const struct event_base *base, const struct event *ev, void *arg)
{
    struct fd_scan *sc = arg;
    int fd = event_get_fd(ev);
    if (fd >= 0 && fd != sc->skip && (event_get_events(ev) & EV_READ) && sc->n < DT_MAX_HELD)
        sc->pfd[sc->n++] = (struct pollfd){.fd = fd, .events = POLLIN};
    return 0;
}

/* Wait until @p want upstream sockets have an answer queued (loopback delivery may lag
 * behind sendto() in some kernels/sandboxes), without running the loop. */
static void wait_upstream_readable(struct t *t, int want)
{
    uint64_t end = dg_now_ms() + MAX_WAIT;
    for (;;) {
        struct fd_scan sc = {.skip = t->fake->fd};
        assert_int_equal(event_base_foreach_event(t->base, collect_read_fd, &sc), 0);
        int ready = poll(sc.pfd, sc.n, 0);
        assert_true(ready >= 0);
        if (ready >= want)
            return;
        assert_true(dg_now_ms() < end);
        usleep(1000);
    }
}

static void on_drop(evutil_socket_t fd, short what, void *arg)
{
    struct t *t = arg;
    t->active_at_drop = event_base_get_num_events(t->base, EVENT_BASE_COUNT_ACTIVE);
    h2_session_free(t->srv);
    t->srv = NULL;
    t->pending_at_drop = upstream_pending(t->up);
    t->wakes_at_drop = t->wakes;
}

static void test_conn_drop_with_pending(void **state)
{
    struct t *t = *state;
    start(t, 1500, 4000);
    t->fake->mode = DT_FAKE_HOLD;
    int32_t ids[N_DROP];
    for (int i = 0; i < N_DROP; i++) {
        char name[QNAME_MAX];
        snprintf(name, sizeof(name), "n%d.drop.example", i);
        ids[i] = submit_dns_get(t, (uint16_t)(0x3000 + i), name);
    }
    assert_true(run_until(t, p_held, N_DROP, MAX_WAIT));
    assert_int_equal(h2_session_streams(t->srv), N_DROP);
    assert_int_equal(upstream_pending(t->up), N_DROP);
    unsigned w0 = t->wakes;

    /* Half of the answers are already in the upstream sockets' receive queues when the
     * connection goes: the drop runs at a higher priority in the very iteration in which those
     * sockets are reported readable, as when a TLS error and upstream answers come together. */
    dt_fake_release(t->fake, 0, N_DROP / 2);
    wait_upstream_readable(t, DROP_SOCKETS);
    usleep(20000); /* the rest of the released answers, where loopback delivery lags */
    struct event *drop = event_new(t->base, -1, 0, on_drop, t);
    assert_non_null(drop);
    assert_int_equal(event_priority_set(drop, 0), 0);
    event_active(drop, EV_TIMEOUT, 1);
    assert_true(event_base_loop(t->base, EVLOOP_ONCE) >= 0);
    event_free(drop);
    assert_null(t->srv);
    /* The answered sockets' read events were already active (queued behind the drop) when it
     * ran: they were delivered in that same iteration, right after the streams were freed. */
    assert_true(t->active_at_drop >= DROP_SOCKETS);
    assert_int_equal(t->pending_at_drop, N_DROP); /* queries run on for the cache */
    assert_int_equal(t->wakes_at_drop, w0);

    /* The rest answer late too. No answer reaches a stream. */
    dt_fake_release(t->fake, N_DROP / 2, N_DROP);
    run_for(t, LATE_WAIT);
    assert_int_equal(t->wakes, w0);
    assert_idle(t);
    assert_int_equal(up_answers(t), N_DROP);
    assert_int_equal(upstream_get_stats(t->up)->queries, N_DROP);
    for (int i = 0; i < N_DROP; i++)
        assert_int_equal(rec_of(t, ids[i])->status, 0);
}

/* ------------------------------------------------------------ 4. answer after stream close */

static void test_answer_after_close(void **state)
{
    struct t *t = *state;
    start(t, 1500, 4000);
    t->fake->mode = DT_FAKE_HOLD;

    /* (a) The answer sits in the upstream socket when the reset is processed. */
    int32_t a = submit_dns_get(t, 0x4444, "a.late.example.com");
    assert_true(run_until(t, p_held, 1, MAX_WAIT));
    dt_fake_release(t->fake, 0, 1);
    rst(t, a);
    unsigned w0 = t->wakes;
    pump(t);
    assert_int_equal(h2_session_streams(t->srv), 0);
    run_for(t, LATE_WAIT);
    assert_no_response(t, a, NGHTTP2_CANCEL);
    assert_int_equal(t->wakes, w0);
    assert_int_equal(up_answers(t), 1);
    assert_idle(t);

    /* (b) The answer was turned into a response (submitted, not yet written) when the reset
     * arrives: the stream and its response bytes go, nothing is written for it. */
    int32_t b = submit_dns_get(t, 0x5555, "b.late.example.com");
    assert_true(run_until(t, p_held, 2, MAX_WAIT));
    dt_fake_release(t->fake, 1, 2);
    loop_until_answers(t, 1); /* no pump: the response stays queued in the server session */
    assert_true(t->wakes > w0);
    assert_true(h2_session_want_write(t->srv));
    rst(t, b);
    const uint8_t *p;
    ssize_t n;
    while ((n = nghttp2_session_mem_send(t->cli, &p)) > 0)
        assert_int_equal(h2_session_recv(t->srv, p, (size_t)n), 0);
    assert_int_equal(h2_session_streams(t->srv), 0);
    pump(t);
    assert_no_response(t, b, NGHTTP2_CANCEL);
    assert_idle(t);

    /* (c) The response is already written (and the server stream closed with it) when the
     * client, which has not read it yet, resets the stream. */
    t->fake->mode = DT_FAKE_ANSWER;
    int32_t c = submit_dns_get(t, 0x6666, "c.late.example.com");
    while ((n = nghttp2_session_mem_send(t->cli, &p)) > 0)
        assert_int_equal(h2_session_recv(t->srv, p, (size_t)n), 0);
    loop_until_answers(t, 1);
    struct dg_buf out = {0};
    assert_int_equal(h2_session_send(t->srv, &out, SIZE_MAX), 0);
    assert_true(out.len > 0);
    assert_int_equal(h2_session_streams(t->srv), 0);
    rst(t, c);
    while ((n = nghttp2_session_mem_send(t->cli, &p)) > 0)
        assert_int_equal(h2_session_recv(t->srv, p, (size_t)n), 0);
    assert_int_equal(nghttp2_session_mem_recv(t->cli, out.data, out.len), (ssize_t)out.len);
    dg_buf_free(&out);
    pump(t);
    assert_true(rec_of(t, c)->closed);
    assert_int_equal(h2_session_streams(t->srv), 0);

    /* The connection is still usable. */
    int32_t d = submit_dns_get(t, 0x7777, "d.late.example.com");
    assert_true(run_until(t, p_closed, d, MAX_WAIT));
    assert_dns_response(t, d, 0x7777, DNS_RCODE_NOERROR);
    assert_idle(t);
}

/* ------------------------------------------------------------ 5. same name, one cancelled */

static void test_same_name_one_cancelled(void **state)
{
    struct t *t = *state;
    start(t, 1500, 4000);
    t->fake->mode = DT_FAKE_HOLD;
    int32_t a = submit_dns_get(t, 0x7a7a, "same.example.com");
    int32_t b = submit_dns_get(t, 0x7b7b, "same.example.com");
    /* Both queries reach the upstream, or one does if identical queries get coalesced. */
    assert_true(run_until(t, p_held, 1, MAX_WAIT));
    run_for(t, 10);
    assert_int_equal(h2_session_streams(t->srv), 2);
    size_t held = t->fake->n_held;
    assert_true(held >= 1 && held <= 2);

    rst(t, a);
    pump(t);
    assert_int_equal(h2_session_streams(t->srv), 1);
    /* Whatever was sent upstream runs on: B waits for it, or for its own query. */
    assert_int_equal(upstream_pending(t->up), held);

    dt_fake_release(t->fake, 0, held);
    assert_true(run_until(t, p_closed, b, MAX_WAIT));
    assert_dns_response(t, b, 0x7b7b, DNS_RCODE_NOERROR);
    assert_no_response(t, a, NGHTTP2_CANCEL);
    assert_int_equal(up_answers(t), held);
    assert_idle(t);
    assert_int_equal(h2_session_streams(t->srv), 0);

    /* And the other way round: the first stays, the second is cancelled. */
    t->fake->n_held = 0;
    int32_t c = submit_dns_get(t, 0x7c7c, "same2.example.com");
    int32_t d = submit_dns_get(t, 0x7d7d, "same2.example.com");
    assert_true(run_until(t, p_held, 1, MAX_WAIT));
    run_for(t, 10);
    held = t->fake->n_held;
    rst(t, d);
    pump(t);
    assert_int_equal(upstream_pending(t->up), held);
    dt_fake_release(t->fake, 0, held);
    assert_true(run_until(t, p_closed, c, MAX_WAIT));
    assert_dns_response(t, c, 0x7c7c, DNS_RCODE_NOERROR);
    assert_no_response(t, d, NGHTTP2_CANCEL);
    assert_idle(t);
}

/* ------------------------------------------------------------ 6. HTTP errors */

static void assert_text_status(struct t *t, int32_t id, int status)
{
    struct dt_resp *r = rec_of(t, id);
    assert_true(r->closed);
    assert_int_equal(r->status, status);
    assert_string_equal(r->ctype, "text/plain; charset=utf-8");
    assert_true(r->body_len > 0 && r->body[r->body_len - 1] == '\n');
}

static void test_error_statuses(void **state)
{
    struct t *t = *state;
    start(t, 1500, 4000);
    uint8_t q[128];
    size_t qlen = dt_build_query(q, sizeof(q), 0x0a0a, "err.example.com");
    uint8_t *big = calloc(1, BIG_BODY);
    assert_non_null(big);

    int32_t not_found = submit(t, "GET", "/other", NULL, NULL);
    int32_t put = submit(t, "PUT", "/dns-query?dns=AAAA", NULL, NULL);
    int32_t bad = submit(t, "GET", "/dns-query?dns=%%%not-base64", NULL, NULL);
    int32_t missing = submit(t, "GET", "/dns-query?foo=x", NULL, NULL);
    t->body[0] = (struct dt_body){.p = big, .len = BIG_BODY};
    int32_t too_big = submit(t, "POST", "/dns-query", DOH_CONTENT_TYPE, &t->body[0]);
    t->body[1] = (struct dt_body){.p = big, .len = DOH_MAX_BODY};
    int32_t at_limit = submit(t, "POST", "/dns-query", DOH_CONTENT_TYPE, &t->body[1]);
    t->body[2] = (struct dt_body){.p = q, .len = qlen};
    int32_t text = submit(t, "POST", "/dns-query", "text/plain", &t->body[2]);
    /* Announced too large: refused from the content-length header, the body is not stored. */
    t->body[3] = (struct dt_body){.p = big, .len = BIG_BODY};
    int32_t announced = submit_cl(t, "POST", "/dns-query", DOH_CONTENT_TYPE, "70000", &t->body[3]);
    /* A :path longer than DOH_MAX_URI. */
    char *long_path = malloc(DOH_MAX_URI + 64);
    assert_non_null(long_path);
    strcpy(long_path, "/dns-query?dns=");
    size_t lp = strlen(long_path);
    memset(long_path + lp, 'A', DOH_MAX_URI + 16 - lp);
    long_path[DOH_MAX_URI + 16] = '\0';
    int32_t uri_long = submit(t, "GET", long_path, NULL, NULL);

    const int32_t all[] = {not_found, put,  bad,       missing, too_big,
                           at_limit,  text, announced, uri_long};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
        assert_true(run_until(t, p_closed, all[i], MAX_WAIT));

    assert_text_status(t, not_found, 404);
    assert_text_status(t, put, 405);
    assert_string_equal(rec_of(t, put)->allow, DOH_ALLOW);
    assert_text_status(t, bad, 400);
    assert_text_status(t, missing, 400);
    assert_text_status(t, too_big, 413);
    assert_true(rec_of(t, too_big)->data_frames_sent >= 2);
    /* 65535 bytes are not too large; zeros are just not a DNS query. */
    assert_text_status(t, at_limit, 400);
    assert_text_status(t, text, 415);
    assert_int_equal(rec_of(t, text)->allow[0], '\0');
    assert_text_status(t, announced, 413);
    assert_int_equal(rec_of(t, announced)->data_frames_sent, 5); /* 70000 / 16384 */
    assert_text_status(t, uri_long, 414);
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
        assert_int_equal(rec_of(t, all[i])->close_code, NGHTTP2_NO_ERROR);

    /* None of them reached the upstream. */
    assert_int_equal(t->fake->queries, 0);
    assert_int_equal(upstream_get_stats(t->up)->queries, 0);
    assert_int_equal(h2_session_streams(t->srv), 0);
    free(long_path);
    free(big);
}

/* ------------------------------------------------------------ 7. silent upstream */

static void test_silent_upstream_servfail(void **state)
{
    struct t *t = *state;
    start(t, 50, 120);
    t->fake->mode = DT_FAKE_SILENT;
    uint64_t t0 = dg_now_ms();
    int32_t id = submit_dns_get(t, 0x5e5e, "silent.example.com");
    assert_true(run_until(t, p_closed, id, MAX_WAIT));
    uint64_t took = dg_now_ms() - t0;
    assert_dns_response(t, id, 0x5e5e, DNS_RCODE_SERVFAIL);
    assert_string_equal(rec_of(t, id)->cache_control, "max-age=0");
    /* At least two tries of 50 ms each; SERVFAIL once the 120 ms budget (or the tries) ran
     * out. The upper bound is loose: ASan and a loaded machine slow the loop down. */
    assert_true(took + SLACK_MS >= 100);
    assert_true(took < 1000);
    run_for(t, 10);
    assert_true(t->fake->queries >= 2 && t->fake->queries <= 3);
    /* Every try went unanswered and was counted as a timeout. */
    assert_int_equal(upstream_get_stats(t->up)->timeouts, t->fake->queries);
    assert_int_equal(up_answers(t), 0);
    assert_idle(t);
    assert_int_equal(h2_session_streams(t->srv), 0);
}

/* ------------------------------------------------------------ 8. GOAWAY with one pending */

static void test_goaway_pending_finishes(void **state)
{
    struct t *t = *state;
    start(t, 1500, 4000);
    t->fake->mode = DT_FAKE_HOLD;
    int32_t id = submit_dns_get(t, 0x9090, "goaway.example.com");
    assert_true(run_until(t, p_held, 1, MAX_WAIT));

    h2_session_goaway(t->srv); /* the final GOAWAY at once, as the timer sends it */
    /* Race: the client opens one more stream after the GOAWAY was submitted but before it was
     * written. nghttp2 only stops taking new streams once the GOAWAY is sent, so this one is
     * dispatched; sending the GOAWAY then closes it (no RST_STREAM), which must cancel its
     * pending operation like any other stream close. */
    int32_t late = submit_dns_get(t, 0x9191, "goaway.example.com");
    const uint8_t *p;
    ssize_t n;
    while ((n = nghttp2_session_mem_send(t->cli, &p)) > 0)
        assert_int_equal(h2_session_recv(t->srv, p, (size_t)n), 0);
    assert_int_equal(n, 0);
    pump(t);
    assert_int_equal(upstream_pending(t->up), 1);
    assert_true(t->goaway);
    assert_int_equal(t->goaway_code, NGHTTP2_NO_ERROR);
    assert_int_equal(t->goaway_last_id, id);
    assert_false(h2_session_done(t->srv));
    assert_int_equal(h2_session_streams(t->srv), 1);
    assert_false(rec_of(t, id)->closed);
    /* The client learns from the GOAWAY that its late stream was never processed. */
    assert_no_response(t, late, NGHTTP2_REFUSED_STREAM);
    /* The late stream's query may have reached the upstream (2) before the GOAWAY closed it
     * (1 when it was coalesced with the first, or if the server refused streams above the
     * GOAWAY's last id before dispatching them). */
    run_for(t, 10);
    assert_true(t->fake->queries >= 1 && t->fake->queries <= 2);

    /* Answer everything held: the late query's answer goes to a closed socket. */
    dt_fake_release(t->fake, 0, t->fake->n_held);
    assert_true(run_until(t, p_closed, id, MAX_WAIT));
    assert_dns_response(t, id, 0x9090, DNS_RCODE_NOERROR);
    assert_int_equal(h2_session_streams(t->srv), 0);
    assert_true(h2_session_done(t->srv));
    assert_idle(t);
}

/* Send what the client queued to the server, and nothing back. */
static void cli_flush_to_srv(struct t *t)
{
    const uint8_t *p;
    ssize_t n;
    while ((n = nghttp2_session_mem_send(t->cli, &p)) > 0)
        assert_int_equal(h2_session_recv(t->srv, p, (size_t)n), 0);
    assert_int_equal(n, 0);
}

/* Send what the server has queued to the client, and nothing back. */
static void srv_flush_to_cli(struct t *t)
{
    struct dg_buf out = {0};
    assert_int_equal(h2_session_send(t->srv, &out, SIZE_MAX), 0);
    if (out.len)
        assert_int_equal(nghttp2_session_mem_recv(t->cli, out.data, out.len), (ssize_t)out.len);
    dg_buf_free(&out);
}

/* Graceful shutdown in two steps (RFC 9113 §6.8): the first GOAWAY (2^31-1) and a PING; a
 * stream the client sent before it read that GOAWAY is served, not refused; the PING's ACK
 * brings the final GOAWAY, whose last-stream-ID is that late stream; the session ends when
 * the streams are done. */
static void test_goaway_two_steps(void **state)
{
    struct t *t = *state;
    start(t, 1500, 4000);
    t->fake->mode = DT_FAKE_HOLD;
    int32_t id = submit_dns_get(t, 0x9292, "drain.example.com");
    assert_true(run_until(t, p_held, 1, MAX_WAIT));

    assert_int_equal(h2_session_goaway_due(t->srv), 0);
    uint64_t t0 = dg_now_ms();
    h2_session_shutdown(t->srv);
    uint64_t due = h2_session_goaway_due(t->srv);
    assert_true(due >= t0 + H2_GOAWAY_ACK_MS && due <= dg_now_ms() + H2_GOAWAY_ACK_MS);
    h2_session_shutdown(t->srv); /* idempotent: no second notice, the same bound */
    assert_int_equal(h2_session_goaway_due(t->srv), due);
    /* The client opens a stream before it reads the first GOAWAY (its HEADERS cross it). */
    int32_t late = submit_dns_get(t, 0x9393, "late.example.com");
    cli_flush_to_srv(t);
    /* Now both ways: the client gets GOAWAY(2^31-1) and the PING, acknowledges it, and the
     * server answers with the final GOAWAY. */
    pump(t);
    assert_int_equal(t->goaways, 2);
    assert_int_equal(t->goaway_first_id, INT32_MAX);
    assert_int_equal(t->pings, 1);
    assert_int_equal(t->goaways_at_ping, 1); /* the PING follows the first GOAWAY on the wire */
    assert_int_equal(t->goaway_code, NGHTTP2_NO_ERROR);
    assert_int_equal(t->goaway_last_id, late);
    assert_int_equal(h2_session_goaway_due(t->srv), 0);
    assert_int_equal(h2_session_streams(t->srv), 2);
    assert_false(h2_session_done(t->srv));
    assert_true(h2_session_want_read(t->srv));

    assert_true(run_until(t, p_held, 2, MAX_WAIT)); /* the late query reached the upstream */
    dt_fake_release(t->fake, 0, 2);
    assert_true(run_until(t, p_closed, late, MAX_WAIT));
    assert_true(run_until(t, p_closed, id, MAX_WAIT));
    struct dt_resp *r = rec_of(t, late);
    assert_int_equal(r->close_code, NGHTTP2_NO_ERROR);
    assert_int_equal(r->status, 200);
    assert_int_equal(dg_get16(r->body), 0x9393);
    assert_int_equal(rec_of(t, id)->status, 200);
    assert_int_equal(h2_session_streams(t->srv), 0);
    assert_true(h2_session_done(t->srv));
    assert_idle(t);
}

/* No PING ACK (a client that does not answer, or a slow path): the caller's timer sends the
 * final GOAWAY at h2_session_goaway_due() (h2_session_goaway()); the open stream still
 * finishes, and then the session is done. */
static void test_goaway_no_ack(void **state)
{
    struct t *t = *state;
    start(t, 1500, 4000);
    t->fake->mode = DT_FAKE_HOLD;
    int32_t id = submit_dns_get(t, 0x9494, "noack.example.com");
    assert_true(run_until(t, p_held, 1, MAX_WAIT));
    h2_session_shutdown(t->srv);
    /* Only the server's frames reach the client; what the client answers (the ACK) is not
     * sent. */
    srv_flush_to_cli(t);
    assert_int_equal(t->goaways, 1);
    assert_int_equal(t->goaway_first_id, INT32_MAX);
    assert_int_equal(t->pings, 1);
    assert_int_equal(t->goaways_at_ping, 1);
    assert_true(h2_session_goaway_due(t->srv) != 0);
    assert_true(h2_session_want_read(t->srv)); /* still open for streams */
    h2_session_goaway(t->srv);
    assert_int_equal(h2_session_goaway_due(t->srv), 0);
    h2_session_goaway(t->srv); /* idempotent */
    srv_flush_to_cli(t);
    assert_int_equal(t->goaways, 2);
    assert_int_equal(t->goaway_last_id, id);
    assert_false(h2_session_done(t->srv));
    /* The ACK that comes after all changes nothing; the stream finishes. */
    dt_fake_release(t->fake, 0, 1);
    assert_true(run_until(t, p_closed, id, MAX_WAIT));
    assert_int_equal(rec_of(t, id)->status, 200);
    assert_int_equal(t->goaways, 2);
    assert_true(h2_session_done(t->srv));
    assert_idle(t);
}

/* The client said GOAWAY first: nghttp2 sends no shutdown notice then, so the shutdown goes
 * one step at once (the final GOAWAY now, not at the timer); the open stream still finishes. */
static void test_goaway_after_client_goaway(void **state)
{
    struct t *t = *state;
    start(t, 1500, 4000);
    t->fake->mode = DT_FAKE_HOLD;
    int32_t id = submit_dns_get(t, 0x9595, "cgoaway.example.com");
    assert_true(run_until(t, p_held, 1, MAX_WAIT));
    assert_int_equal(nghttp2_submit_goaway(t->cli, NGHTTP2_FLAG_NONE, 0, NGHTTP2_NO_ERROR, NULL, 0),
                     0);
    cli_flush_to_srv(t);
    h2_session_shutdown(t->srv);
    assert_int_equal(h2_session_goaway_due(t->srv), 0); /* no first step to wait out */
    srv_flush_to_cli(t);
    assert_int_equal(t->goaways, 1);
    assert_int_equal(t->goaway_last_id, id);
    assert_int_equal(t->pings, 0);
    dt_fake_release(t->fake, 0, 1);
    assert_true(run_until(t, p_closed, id, MAX_WAIT));
    assert_int_equal(rec_of(t, id)->status, 200);
    assert_true(h2_session_done(t->srv));
    assert_idle(t);
}

/* ------------------------------------------------------------ 9. request bodies (issue 14) */

/* A request body the client hands out a part at a time: DATA up to `allowed`, then DEFERRED
 * until the test allows more (held_more()); END_STREAM only when `end` and all of it went. */
struct held_body {
    size_t allowed, off;
    bool end;
};

static ssize_t held_read(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t length,
                         uint32_t *flags, nghttp2_data_source *source, void *ud)
{
    struct held_body *b = source->ptr;
    size_t n = b->allowed - b->off < length ? b->allowed - b->off : length;
    if (n == 0 && !b->end)
        return NGHTTP2_ERR_DEFERRED;
    memset(buf, 'x', n);
    b->off += n;
    if (b->end && b->off == b->allowed)
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

static int32_t submit_held(struct t *t, const char *method, const char *path, const char *ctype,
                           const char *clen, struct held_body *b)
{
    nghttp2_data_provider prd = {.source.ptr = b, .read_callback = held_read};
    return submit_prd(t, method, path, ctype, clen, &prd);
}

static void held_more(struct t *t, int32_t id, struct held_body *b, size_t allowed, bool end)
{
    b->allowed = allowed;
    b->end = end;
    assert_int_equal(nghttp2_session_resume_data(t->cli, id), 0);
}

static bool p_status(struct t *t, long id)
{
    return rec_of(t, (int32_t)id)->status != 0;
}

/* Outside the DoH path the site is the landing page here (no site-root, no backend): it takes
 * no body. A body is refused at the HEADERS frame from its content-length (or at its first DATA
 * byte without one), while the client is still sending, and never stored: 405 for a method
 * other than GET/HEAD, else 413. Its bytes still open the connection window, so the connection
 * goes on working. */
static void test_body_unwanted_refused(void **state)
{
    struct t *t = *state;
    start(t, 1500, 4000);
    size_t base = budget_process_used(BUDGET_BODY);
    struct held_body announced = {0}, unannounced = {.allowed = 100}, empty = {.end = true};
    int32_t a = submit_held(t, "POST", "/other", NULL, "100000", &announced);
    int32_t u = submit_held(t, "GET", "/", NULL, NULL, &unannounced);
    int32_t e = submit_held(t, "POST", "/", NULL, "0", &empty);
    assert_true(run_until(t, p_status, a, MAX_WAIT));
    assert_true(run_until(t, p_status, u, MAX_WAIT));
    assert_true(run_until(t, p_closed, e, MAX_WAIT));
    assert_int_equal(rec_of(t, a)->status, 405);
    assert_string_equal(rec_of(t, a)->allow, "GET, HEAD");
    assert_int_equal(rec_of(t, u)->status, 413);
    assert_int_equal(rec_of(t, e)->status, 405); /* no body: the landing page's own answer */
    assert_int_equal(budget_process_used(BUDGET_BODY), base);

    /* The client goes on sending more than a connection window of the refused body: discarded,
     * and the windows open again, so a DoH POST on the same connection still gets through. */
    held_more(t, a, &announced, 100000, false);
    run_for(t, 20);
    assert_int_equal(announced.off, 100000);
    uint8_t q[128];
    size_t qlen = dt_build_query(q, sizeof(q), 0x4b4b, "after-refused.example.com");
    t->body[0] = (struct dt_body){.p = q, .len = qlen};
    int32_t doh = submit(t, "POST", "/dns-query", DOH_CONTENT_TYPE, &t->body[0]);
    assert_true(run_until(t, p_closed, doh, MAX_WAIT));
    assert_dns_response(t, doh, 0x4b4b, DNS_RCODE_NOERROR);
    assert_int_equal(budget_process_used(BUDGET_BODY), base);

    rst(t, a);
    rst(t, u);
    assert_true(run_until(t, p_closed, u, MAX_WAIT));
    assert_true(run_until(t, p_closed, a, MAX_WAIT));
    assert_int_equal(h2_session_streams(t->srv), 0);
}

/* Every stored body byte is taken under the connection's body budget and given back when the
 * stream goes. Past the budget: RST_STREAM REFUSED_STREAM for a stream none of whose body was
 * taken yet (the client may retry it), 503 for one that had some taken. */
static void test_body_budget(void **state)
{
    struct t *t = *state;
    static const char *const opts[] = {"max-body-buffer-per-connection", "4K", NULL};
    struct budget_scope scope;
    budget_scope_init(&scope, NULL, NULL, NULL);
    t->opts = opts;
    t->budget = &scope;
    start(t, 1500, 4000);
    size_t base = budget_process_used(BUDGET_BODY);

    struct held_body first = {.allowed = 3000}, second = {.allowed = 2000};
    int32_t a = submit_held(t, "POST", "/dns-query", DOH_CONTENT_TYPE, NULL, &first);
    run_for(t, 10);
    assert_int_equal(scope.used[BUDGET_BODY], 3000);
    assert_int_equal(budget_process_used(BUDGET_BODY), base + 3000);
    assert_int_equal(rec_of(t, a)->status, 0); /* still being received */

    int32_t b = submit_held(t, "POST", "/dns-query", DOH_CONTENT_TYPE, NULL, &second);
    assert_true(run_until(t, p_closed, b, MAX_WAIT));
    assert_no_response(t, b, NGHTTP2_REFUSED_STREAM);
    assert_int_equal(scope.used[BUDGET_BODY], 3000);

    held_more(t, a, &first, 5000, false); /* 2000 more: over 4 KiB, with 3000 taken */
    assert_true(run_until(t, p_status, a, MAX_WAIT));
    assert_int_equal(rec_of(t, a)->status, 503);
    assert_int_equal(scope.used[BUDGET_BODY], 0);
    assert_int_equal(budget_process_used(BUDGET_BODY), base);

    /* The budget is free again: a DoH POST is answered, and gives its bytes back. */
    uint8_t q[128];
    size_t qlen = dt_build_query(q, sizeof(q), 0x4c4c, "budget.example.com");
    t->body[0] = (struct dt_body){.p = q, .len = qlen};
    int32_t doh = submit(t, "POST", "/dns-query", DOH_CONTENT_TYPE, &t->body[0]);
    assert_true(run_until(t, p_closed, doh, MAX_WAIT));
    assert_dns_response(t, doh, 0x4c4c, DNS_RCODE_NOERROR);

    rst(t, a);
    assert_true(run_until(t, p_closed, a, MAX_WAIT));
    assert_int_equal(h2_session_streams(t->srv), 0);
    assert_int_equal(scope.used[BUDGET_BODY], 0);
    assert_int_equal(budget_process_used(BUDGET_BODY), base);
    budget_scope_fini(&scope);
}

/* ------------------------------------------------------------ 10. streamed bodies (issue 14) */

static bool p_readable(struct t *t, long fd)
{
    struct pollfd p = {.fd = (int)fd, .events = POLLIN};
    return poll(&p, 1, 0) == 1;
}

static int backend_accept(struct t *t, int l)
{
    assert_true(run_until(t, p_readable, l, MAX_WAIT));
    int fd = accept4(l, NULL, NULL, SOCK_NONBLOCK);
    assert_true(fd >= 0);
    return fd;
}

/* Run the loop, reading what the proxy sends on @p fd into @p in, until it holds @p want bytes
 * (or the head's end when @p want is 0). */
static void backend_read(struct t *t, int fd, struct dg_buf *in, size_t want)
{
    uint64_t end = dg_now_ms() + MAX_WAIT;
    for (;;) {
        uint8_t buf[65536];
        ssize_t n = recv(fd, buf, sizeof(buf), 0);
        if (n > 0) {
            assert_int_equal(dg_buf_append(in, buf, (size_t)n), 0);
            continue;
        }
        if (want ? in->len >= want : (in->data && memmem(in->data, in->len, "\r\n\r\n", 4) != NULL))
            return;
        if (dg_now_ms() >= end)
            fail_msg("backend_read: %zu of %zu bytes", in->len, want);
        run_for(t, 2);
    }
}

static size_t head_len(const struct dg_buf *in)
{
    const uint8_t *e = memmem(in->data, in->len, "\r\n\r\n", 4);
    assert_non_null(e);
    return (size_t)(e - in->data) + 4;
}

/* Start the session with @p opts (a site-backend among them) and the budgets of @p scope
 * (initialised here, fini'd by the caller), and the proxy it dispatches to. */
static void start_proxied(struct t *t, const char *const *opts, struct budget_scope *scope)
{
    budget_scope_init(scope, NULL, NULL, NULL);
    t->opts = opts;
    t->budget = scope;
    start(t, 1500, 4000);
    t->hctx.proxy = proxy_new(t->base, t->cfg);
    assert_non_null(t->hctx.proxy);
}

/* Free the session, then the proxy it dispatched to, and close the backend's listening
 * socket @p l. */
static void stop_proxied(struct t *t, int l)
{
    h2_session_free(t->srv);
    t->srv = NULL;
    proxy_free(t->hctx.proxy);
    close(l);
}

/* The backend on @p fd answers 200 "ok" and closes; stream @p sid ends with that 200. */
static void backend_answer_ok(struct t *t, int fd, int32_t sid)
{
    static const char ok[] = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok";
    assert_int_equal(send(fd, ok, sizeof(ok) - 1, 0), (ssize_t)sizeof(ok) - 1);
    assert_true(run_until(t, p_closed, sid, MAX_WAIT));
    assert_int_equal(rec_of(t, sid)->status, 200);
}

#define STREAMED 1000000

/* memmem() that takes an empty buffer (NULL data) */
static const void *find(const void *hay, size_t len, const char *needle, size_t nlen)
{
    return hay ? memmem(hay, len, needle, nlen) : NULL;
}

/* In reverse-proxy mode a body is dispatched at HEADERS and streams to the backend: the head
 * reaches it before any body byte was sent; while the backend reads nothing the client gets no
 * window beyond what the sockets in between hold (the old code took the whole body into
 * memory first); as the backend reads, the rest flows, and it arrives whole. Then a backend
 * that answers 413 without reading the body: the client gets the 413 while it is still
 * sending, the rest of its body is discarded, and nothing stays held. */
static void test_body_streamed_to_backend(void **state)
{
    struct t *t = *state;
    char url[64];
    int l = dt_backend_listen(url, sizeof(url));
    const char *opts[] = {"site-backend", url, "site-max-body", "4M", NULL};
    struct budget_scope scope;
    start_proxied(t, opts, &scope);
    size_t base = budget_process_used(BUDGET_BODY);

    struct held_body up = {0};
    int32_t a = submit_held(t, "POST", "/up", "application/octet-stream", "1000000", &up);
    int b = backend_accept(t, l);
    struct dg_buf in = {0};
    backend_read(t, b, &in, 0);
    size_t hl = head_len(&in);
    assert_int_equal(hl, in.len); /* no body byte yet: the client sent none */
    assert_non_null(find(in.data, hl, "content-length: 1000000\r\n", 25));
    assert_null(find(in.data, hl, "transfer-encoding", 17));

    held_more(t, a, &up, STREAMED, true);
    run_for(t, 50);
    /* the stream window (65535), the proxy's socket buffer, the backend's: not the body */
    assert_in_range(up.off, 1, 400000);
    assert_true(scope.used[BUDGET_BODY] <= 65535);
    assert_int_equal(rec_of(t, a)->status, 0);

    backend_read(t, b, &in, hl + STREAMED);
    assert_int_equal(in.len, hl + STREAMED);
    assert_int_equal(up.off, STREAMED);
    for (size_t i = hl; i < in.len; i++) {
        if (in.data[i] != 'x')
            fail_msg("body byte %zu is 0x%02x", i - hl, in.data[i]);
    }
    backend_answer_ok(t, b, a);
    assert_int_equal(scope.used[BUDGET_BODY], 0);
    close(b);

    /* an early answer */
    struct held_body early = {.allowed = 100000};
    int32_t e = submit_held(t, "POST", "/early", NULL, NULL, &early);
    b = backend_accept(t, l);
    in.len = 0;
    backend_read(t, b, &in, 0);
    assert_non_null(find(in.data, head_len(&in), "transfer-encoding: chunked\r\n", 28));
    static const char too[] = "HTTP/1.1 413 Too Large\r\ncontent-length: 0\r\n\r\n";
    assert_int_equal(send(b, too, sizeof(too) - 1, 0), (ssize_t)sizeof(too) - 1);
    assert_true(run_until(t, p_status, e, MAX_WAIT));
    assert_int_equal(rec_of(t, e)->status, 413);
    held_more(t, e, &early, STREAMED, true); /* the client goes on: discarded */
    assert_true(run_until(t, p_closed, e, MAX_WAIT));
    assert_int_equal(early.off, STREAMED);
    assert_int_equal(rec_of(t, e)->close_code, NGHTTP2_NO_ERROR);
    assert_int_equal(scope.used[BUDGET_BODY], 0);
    assert_int_equal(budget_process_used(BUDGET_BODY), base);
    /* the backend connection was in the middle of a request: closed, never reused */
    char c;
    uint64_t end = dg_now_ms() + MAX_WAIT;
    ssize_t n;
    while ((n = recv(b, &c, 1, 0)) != 0) {
        assert_true(n < 0 && dg_now_ms() < end);
        run_for(t, 2);
    }
    close(b);

    dg_buf_free(&in);
    stop_proxied(t, l);
    budget_scope_fini(&scope);
}

/* A response source the budgets refuse (max-sources-per-connection 1, a second proxied GET
 * while the first holds its backend connection) ends with RST_STREAM REFUSED_STREAM and no
 * response head (http_refuse(): a browser retries it, a 503 it would show), and the first is
 * answered as usual. */
static void test_source_refused_stream(void **state)
{
    struct t *t = *state;
    char url[64];
    int l = dt_backend_listen(url, sizeof(url));
    const char *opts[] = {"site-backend", url, "max-sources-per-connection", "1", NULL};
    struct budget_scope scope;
    start_proxied(t, opts, &scope);

    int32_t a = submit(t, "GET", "/a", NULL, NULL);
    int b = backend_accept(t, l);
    assert_int_equal(scope.used[BUDGET_SOURCES], 1);
    int32_t r = submit(t, "GET", "/b", NULL, NULL);
    assert_true(run_until(t, p_closed, r, MAX_WAIT));
    assert_no_response(t, r, NGHTTP2_REFUSED_STREAM);
    assert_int_equal(scope.used[BUDGET_SOURCES], 1);

    struct dg_buf in = {0};
    backend_read(t, b, &in, 0);
    backend_answer_ok(t, b, a);
    assert_int_equal(rec_of(t, a)->close_code, NGHTTP2_NO_ERROR);
    close(b);

    dg_buf_free(&in);
    stop_proxied(t, l);
    assert_int_equal(scope.used[BUDGET_SOURCES], 0);
    budget_scope_fini(&scope);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_get_answered, setup, teardown),
        cmocka_unit_test_setup_teardown(test_trim_idle, setup, teardown),
        cmocka_unit_test_setup_teardown(test_late_frame_on_closed_stream, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rst_while_pending, setup, teardown),
        cmocka_unit_test_setup_teardown(test_conn_drop_with_pending, setup, teardown),
        cmocka_unit_test_setup_teardown(test_answer_after_close, setup, teardown),
        cmocka_unit_test_setup_teardown(test_same_name_one_cancelled, setup, teardown),
        cmocka_unit_test_setup_teardown(test_error_statuses, setup, teardown),
        cmocka_unit_test_setup_teardown(test_silent_upstream_servfail, setup, teardown),
        cmocka_unit_test_setup_teardown(test_goaway_pending_finishes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_goaway_two_steps, setup, teardown),
        cmocka_unit_test_setup_teardown(test_goaway_no_ack, setup, teardown),
        cmocka_unit_test_setup_teardown(test_goaway_after_client_goaway, setup, teardown),
        cmocka_unit_test_setup_teardown(test_body_unwanted_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_body_budget, setup, teardown),
        cmocka_unit_test_setup_teardown(test_body_streamed_to_backend, setup, teardown),
        cmocka_unit_test_setup_teardown(test_source_refused_stream, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
