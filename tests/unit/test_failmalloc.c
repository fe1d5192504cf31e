/*
 * Failmalloc test (nghttp2's failmalloc_test.c, at the symbol level): every request path of the
 * unit suite runs once for every N from 1 up with the N-th allocation failing (failmalloc.h),
 * until a run completes without reaching its N. Each run builds its whole world (config,
 * upstream, cache, resolver, protocol session) inside the counted window, so the constructors'
 * failure paths are walked too, and tears it down again before the window closes. For every N:
 *  - no crash (and, in the ASan build, no memory error);
 *  - no leak: every block allocated during the run was freed by its teardown (fm_live() == 0);
 *  - a defined answer: every request ends answered (a complete response with a status this path
 *    may give: the normal one, or 500/503), reset, or with its connection closed; never left
 *    hanging (each request has a deadline) and never answered with a status that would blame
 *    the client (a 400 for a valid query because memory ran out).
 * A run builds the same world as the component tests: the HTTP/2 path as in test_h2.c (an
 * in-process nghttp2 client through memory, a fake UDP upstream on 127.0.0.1: the scaffolding
 * of support/dohtest.c, which allocates only in infra_new(), paused), HTTP/1.1 as in
 * test_h1.c, DNS over TCP/TLS as in test_dnsstream.c, the DNS helpers and the cache directly,
 * and the configuration parser on the
 * sample file plus a file that sets most options.
 *
 * The test's own scaffolding (event base, fake upstream, the client's nghttp2 session) is kept
 * out of the count (fm_pause(), or the real allocator for the client), so N only walks the
 * server's allocations. Before the ladder, one uncounted run does the libraries' lazy one-time
 * initialisation and one counted clean run proves the hook is active (it counted allocations):
 * a build where the interposition silently does not work fails here instead of passing.
 *
 * The HTTP paths also run with every allocation failing from N on (persistent mode), and
 * HTTP/2 with concurrent streams and with a silent upstream. Nothing is excused: any leaked
 * block, and any request left with neither an answer nor pending work, fails the test.
 *
 * Debugging (environment): FM_ONLY_N=n starts the ladder at n, FM_MAX_N=n stops it at n (the
 * assertion that the last run was clean then fails, so a bounded run cannot pass by
 * accident); FM_TRACE_FAIL=1 and FM_TRACE_SEQ=k print backtraces (failmalloc.h).
 */
#define _GNU_SOURCE /* memmem */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cmocka.h>
#include <event2/event.h>
#include <nghttp2/nghttp2.h>

#include "dohgate/cache.h"
#include "dohgate/client.h"
#include "dohgate/config.h"
#include "dohgate/dns.h"
#include "dohgate/dnsstream.h"
#include "dohgate/doh.h"
#include "dohgate/h1.h"
#include "dohgate/h2.h"
#include "dohgate/http.h"
#include "dohgate/log.h"
#include "dohgate/pagepool.h"
#include "dohgate/resolver.h"
#include "dohgate/upstream.h"
#include "dohgate/util.h"

#include "dohtest.h"
#include "failmalloc.h"

#define MAX_REC     8
#define TICK_MS     2
#define REQ_WAIT_MS 2000 /* a request not ended by then is a hang (query-timeout is 60 ms) */
#define CACHE_BYTES (1u << 20)

static unsigned long max_n = 0; /* FM_MAX_N; 0: no bound */

static const struct client_id peer_h2 = {
    .addr = {192, 0, 2, 1}, .len = 4, .key = {.b = {192, 0, 2, 1}, .len = 4}, .text = "192.0.2.1"};
static const struct client_id peer_h1 = {
    .addr = {192, 0, 2, 7}, .len = 4, .key = {.b = {192, 0, 2, 7}, .len = 4}, .text = "192.0.2.7"};

/* Fail the test from inside a run: stop injecting first, so that cmocka's reporting works. */
#define CHECK(w, cond, ...)                                                                        \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fm_stop();                                                                             \
            print_error("%s N=%lu: ", (w)->path, (w)->n);                                          \
            fail_msg(__VA_ARGS__);                                                                 \
        }                                                                                          \
    } while (0)

/* ------------------------------------------------------------ the world of one run */

struct rec {
    bool used, checked;
    int want;
    char what[64];
    uint8_t req_body[256];
    struct dt_body src;
    uint16_t qid;
    struct dt_resp resp;
};

struct world {
    const char *path; /* for messages */
    unsigned long n;
    struct event_base *base;
    struct event *tick;
    struct dt_fake fake;
    struct config *cfg;
    struct upstream *up;
    struct cache *cache;
    struct resolver *res;
    struct handler_ctx hctx;
    /* HTTP/2 */
    struct h2_session *h2;
    nghttp2_session *cli;
    struct rec rec[MAX_REC];
    bool use_pool;    /* HTTP/2 frame buffers from a page pool, as in a worker */
    bool minimal_any; /* minimal-any yes */
    struct pagepool *pool;
    /* DNS over TCP / TLS */
    struct dnsstream_session *ds;
    /* HTTP/1.1 */
    struct h1_session *h1;
    struct dg_buf out;
    bool conn_closed; /* the connection's end: what its client sees for every open request */
    bool persistent;  /* every allocation from N on fails */
    unsigned answered, resets, closed_conns, setup_failed;
    unsigned cache_hits; /* the resolver's, read before teardown */
};

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
}

static void on_wake(void *owner)
{
}

/* Scaffolding, out of the count: loop, ticker, fake upstream. */
static void infra_new(struct world *w)
{
    fm_pause();
    w->base = event_base_new();
    assert_non_null(w->base);
    w->tick = event_new(w->base, -1, EV_PERSIST, on_tick, w);
    assert_non_null(w->tick);
    struct timeval tv = {.tv_sec = 0, .tv_usec = TICK_MS * 1000};
    assert_int_equal(event_add(w->tick, &tv), 0);
    dt_fake_open(&w->fake, w->base);
    fm_resume();
}

static void infra_free(struct world *w)
{
    dt_fake_close(&w->fake);
    event_free(w->tick);
    event_base_free(w->base);
}

/* The server side below the protocol, as a worker builds it. @return false when a constructor
 * failed (its error is the defined outcome of the run). */
static bool server_new(struct world *w)
{
    char err[256] = "", addr[64];
    w->cfg = config_new();
    if (!w->cfg)
        return false;
    snprintf(addr, sizeof(addr), "127.0.0.1:%u", ntohs(w->fake.addr.sin_port));
    const char *opts[][2] = {{"upstream", addr},
                             {"upstream-timeout", "20"},
                             {"query-timeout", "60"},
                             {"minimal-any", w->minimal_any ? "yes" : "no"}};
    for (size_t i = 0; i < sizeof(opts) / sizeof(opts[0]); i++) {
        int rc = config_set(w->cfg, opts[i][0], opts[i][1], "test", 0, err, sizeof(err));
        CHECK(w, rc == 0 || rc == -ENOMEM, "config_set(%s): %d %s", opts[i][0], rc, err);
        if (rc)
            return false;
    }
    int rc = config_finish(w->cfg, err, sizeof(err));
    CHECK(w, rc == 0 || rc == -ENOMEM, "config_finish: %d %s", rc, err);
    if (rc)
        return false;
    w->up = upstream_new(w->base, w->cfg);
    if (!w->up)
        return false;
    struct cache_config cc;
    cache_config_defaults(&cc);
    cc.max_bytes = CACHE_BYTES;
    cc.nshards = 4;
    w->cache = cache_new(&cc);
    if (!w->cache)
        return false;
    w->res = resolver_new(w->up, w->cache, w->cfg);
    if (!w->res)
        return false;
    w->hctx = (struct handler_ctx){.cfg = w->cfg, .resolver = w->res};
    if (w->use_pool) {
        w->pool = pagepool_new(H2_FRAMEBUF_BYTES, 8);
        if (!w->pool)
            return false;
        w->hctx.h2_pool = w->pool;
    }
    return true;
}

static void server_free(struct world *w)
{
    if (w->res)
        w->cache_hits = (unsigned)resolver_get_stats(w->res)->hits;
    h2_session_free(w->h2);
    h1_session_free(w->h1);
    dnsstream_session_free(w->ds);
    w->ds = NULL;
    pagepool_free(w->pool); /* after the session: it holds blocks */
    w->pool = NULL;
    resolver_free(w->res);
    cache_free(w->cache);
    upstream_free(w->up);
    config_free(w->cfg);
    w->h2 = NULL;
    w->h1 = NULL;
    w->res = NULL;
    w->cache = NULL;
    w->up = NULL;
    w->cfg = NULL;
}

/* ------------------------------------------------------------ HTTP/2 client side */

static struct rec *rec_of(struct world *w, int32_t id)
{
    size_t i = (size_t)(id - 1) / 2;
    CHECK(w, id > 0 && i < MAX_REC, "unexpected stream %d", id);
    return &w->rec[i];
}

static int cli_on_header(nghttp2_session *ng, const nghttp2_frame *frame, const uint8_t *name,
                         size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                         void *ud)
{
    if (frame->hd.type != NGHTTP2_HEADERS)
        return 0;
    dt_resp_header(&rec_of(ud, frame->hd.stream_id)->resp, name, namelen, value, valuelen);
    return 0;
}

static int cli_on_data(nghttp2_session *ng, uint8_t flags, int32_t id, const uint8_t *data,
                       size_t len, void *ud)
{
    CHECK((struct world *)ud, dt_resp_data(&rec_of(ud, id)->resp, data, len), "body too large");
    return 0;
}

static int cli_on_stream_close(nghttp2_session *ng, int32_t id, uint32_t code, void *ud)
{
    struct rec *r = rec_of(ud, id);
    r->resp.closed = true;
    r->resp.close_code = code;
    return 0;
}

/* The client's nghttp2 session takes the real allocator: N walks the server only. */
static void *cm_malloc(size_t size, void *ud)
{
    return fm_real_malloc(size);
}
static void cm_free(void *p, void *ud)
{
    fm_real_free(p);
}
static void *cm_calloc(size_t n, size_t size, void *ud)
{
    return fm_real_calloc(n, size);
}
static void *cm_realloc(void *p, size_t size, void *ud)
{
    return fm_real_realloc(p, size);
}

static void client_new(struct world *w)
{
    nghttp2_session_callbacks *cbs;
    fm_pause();
    assert_int_equal(nghttp2_session_callbacks_new(&cbs), 0);
    fm_resume();
    nghttp2_session_callbacks_set_on_header_callback(cbs, cli_on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, cli_on_data);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, cli_on_stream_close);
    nghttp2_mem mem = {NULL, cm_malloc, cm_free, cm_calloc, cm_realloc};
    assert_int_equal(nghttp2_session_client_new3(&w->cli, cbs, w, NULL, &mem), 0);
    nghttp2_session_callbacks_del(cbs);
    assert_int_equal(nghttp2_submit_settings(w->cli, NGHTTP2_FLAG_NONE, NULL, 0), 0);
}

/* The connection as conn.c runs it: a failed receive sends what nghttp2 queued (its GOAWAY),
 * then closes; a failed send closes at once. */
static void conn_close(struct world *w)
{
    h2_session_free(w->h2);
    w->h2 = NULL;
    h1_session_free(w->h1);
    w->h1 = NULL;
    w->conn_closed = true;
}

static void h2_pump(struct world *w)
{
    if (!w->h2)
        return;
    enum dt_pump_end e = dt_pump(w->cli, w->h2, true);
    CHECK(w, e != DT_PUMP_CLIENT_REJECTED, "the client rejected the server's output");
    CHECK(w, e != DT_PUMP_CLIENT_FAILED, "the client's nghttp2_session_mem_send() failed");
    CHECK(w, e != DT_PUMP_BUSY, "the sessions never went quiet");
    if (e == DT_PUMP_SERVER_END)
        conn_close(w);
}

/*
 * A request nobody works on any more: the session holds it (a stream, or HTTP/1.1's current
 * request), nothing is pending below it (no resolver entry, no upstream query), and it has no
 * response. Only the connection's idle/busy timeout would end it, a minute later.
 */
static bool stuck(struct world *w, bool session_holds)
{
    return session_holds && resolver_inflight(w->res) == 0 && upstream_pending(w->up) == 0;
}

/* A stuck request is a defect: a failed http_respond*() ends in a fallback status or a reset
 * (http.c), so every request must end answered, reset or with its connection closed. */
static void stuck_end(struct world *w, const char *what)
{
    CHECK(w, false, "%s: no answer, nothing pending (a request left without an answer)", what);
    conn_close(w);
}

/* Submit a request; @p want is the status it gets when memory suffices (500 and 503 are also
 * accepted), @p qid the DNS ID of its answer when it is a DNS answer (0: not DNS). */
static int32_t h2_submit(struct world *w, const char *method, const char *path, const char *ctype,
                         const uint8_t *body, size_t blen, int want, uint16_t qid)
{
    nghttp2_nv hdrs[DT_DOH_HEADERS_MAX];
    size_t nh = dt_doh_headers(hdrs, method, path, ctype);
    struct rec *r = rec_of(w, (int32_t)nghttp2_session_get_next_stream_id(w->cli));
    CHECK(w, blen <= sizeof(r->req_body), "request body too large");
    if (body)
        memcpy(r->req_body, body, blen);
    r->src = (struct dt_body){.p = r->req_body, .len = blen};
    nghttp2_data_provider prd = {.source.ptr = &r->src, .read_callback = dt_read_body};
    int32_t id = nghttp2_submit_request(w->cli, NULL, hdrs, nh, body ? &prd : NULL, NULL);
    CHECK(w, id > 0 && rec_of(w, id) == r, "submit: %d", id);
    r->used = true;
    r->want = want;
    r->qid = qid;
    snprintf(r->what, sizeof(r->what), "%s %.40s", method, path);
    return id;
}

/* A DoH request for @p name: GET (dns= parameter) or POST. */
static int32_t h2_submit_dns(struct world *w, bool post, uint16_t qid, const char *name,
                             uint16_t qtype)
{
    uint8_t q[128];
    char path[512] = "/dns-query?dns=";
    size_t qlen = dt_build_query(q, sizeof(q), qid, name);
    dg_put16(q + qlen - 4, qtype);
    if (post)
        return h2_submit(w, "POST", "/dns-query", DOH_CONTENT_TYPE, q, qlen, 200, qid);
    size_t off = strlen(path);
    path[off + dg_b64url_encode(q, qlen, path + off)] = '\0';
    return h2_submit(w, "GET", path, NULL, NULL, 0, 200, qid);
}

static bool h2_all_closed(const struct world *w)
{
    for (size_t i = 0; i < MAX_REC; i++) {
        if (w->rec[i].used && !w->rec[i].resp.closed)
            return false;
    }
    return true;
}

/* Run until every submitted request ended (or the connection did); check each end. */
static void h2_finish(struct world *w)
{
    uint64_t end = dg_now_ms() + REQ_WAIT_MS;
    for (;;) {
        h2_pump(w);
        if (w->conn_closed || h2_all_closed(w))
            break;
        if (stuck(w, h2_session_streams(w->h2) > 0)) {
            stuck_end(w, "h2");
            break;
        }
        CHECK(w, dg_now_ms() < end, "a request got no answer, no reset, connection open (hang)");
        event_base_loop(w->base, EVLOOP_ONCE);
    }
    for (size_t i = 0; i < MAX_REC; i++) {
        struct rec *r = &w->rec[i];
        if (!r->used || r->checked)
            continue;
        r->checked = true;
        if (!r->resp.closed) {
            w->closed_conns++;
            continue;
        }
        if (r->resp.close_code != NGHTTP2_NO_ERROR) {
            w->resets++;
            continue;
        }
        CHECK(w, r->resp.status != 0, "%s: stream ended without a response", r->what);
        CHECK(w, r->resp.status == r->want || r->resp.status == 500 || r->resp.status == 503,
              "%s: status %d", r->what, r->resp.status);
        char cl[16];
        snprintf(cl, sizeof(cl), "%zu", r->resp.body_len);
        CHECK(w, strcmp(r->resp.content_length, cl) == 0, "%s: content-length %s, body %zu",
              r->what, r->resp.content_length, r->resp.body_len);
        if (r->resp.status == 200 && r->qid) {
            CHECK(w, strcmp(r->resp.ctype, DOH_CONTENT_TYPE) == 0, "content-type %s",
                  r->resp.ctype);
            CHECK(w,
                  r->resp.body_len >= DNS_HEADER_LEN && dg_get16(r->resp.body) == r->qid &&
                      (r->resp.body[2] & 0x80),
                  "%s: not the answer to the query", r->what);
        }
        w->answered++;
    }
}

static void h2_run_world(struct world *w, void (*requests)(struct world *w))
{
    infra_new(w);
    client_new(w);
    if (server_new(w)) {
        const struct h2_settings st = {.max_concurrent_streams = 100, .client = &peer_h2};
        w->h2 = h2_session_new(&st, &w->hctx, on_wake, w);
        if (w->h2)
            requests(w);
        else
            w->setup_failed++;
    } else {
        w->setup_failed++;
    }
    server_free(w);
    infra_free(w);
    nghttp2_session_del(w->cli);
}

/* (a) DoH GET and POST over HTTP/2, one after the other, each a cache miss and then a hit. */
static void h2_sequential(struct world *w)
{
    static const struct {
        bool post;
        uint16_t qid;
        const char *name;
    } reqs[] = {{false, 0x1001, "get.example.com"},
                {false, 0x1002, "get.example.com"},
                {true, 0x1003, "post.example.com"},
                {true, 0x1004, "post.example.com"}};
    for (size_t i = 0; i < sizeof(reqs) / sizeof(reqs[0]) && !w->conn_closed; i++) {
        h2_submit_dns(w, reqs[i].post, reqs[i].qid, reqs[i].name, 1);
        h2_finish(w);
    }
}

static void run_h2(struct world *w)
{
    h2_run_world(w, h2_sequential);
}

/* (a') Concurrent streams on a worker-like session (frame buffers from a page pool, minimal-any
 * on): two identical questions (coalesced onto one upstream query), another name, an ANY
 * answered locally, a query with an answer record (FORMERR, built from an ldns parse), and
 * requests refused by the HTTP layer (404, 400, 415). */
static void h2_concurrent(struct world *w)
{
    h2_submit_dns(w, false, 0x1101, "same.example.com", 1);
    h2_submit_dns(w, false, 0x1102, "same.example.com", 1);
    h2_submit_dns(w, true, 0x1103, "other.example.com", 1);
    h2_submit_dns(w, false, 0x1104, "any.example.com", 255);
    uint8_t q[160];
    size_t qlen = dt_build_query(q, sizeof(q), 0x1105, "formerr.example.com");
    size_t alen = dt_build_answer(q, qlen, q, sizeof(q)); /* an answer record in a query */
    q[2] = 0x01;
    q[3] = 0;
    h2_submit(w, "POST", "/dns-query", DOH_CONTENT_TYPE, q, alen, 200, 0x1105);
    h2_submit(w, "GET", "/nothing-here", NULL, NULL, 0, 404, 0);
    h2_submit(w, "GET", "/dns-query?dns=%%%", NULL, NULL, 0, 400, 0);
    h2_submit(w, "POST", "/dns-query", "text/plain", q, qlen, 415, 0);
    h2_finish(w);
}

static void run_h2_concurrent(struct world *w)
{
    w->use_pool = true;
    w->minimal_any = true;
    h2_run_world(w, h2_concurrent);
}

/* (a'') A silent upstream: every try times out, the answer is a SERVFAIL (RFC 8484 §4.2.1). */
static void h2_silent(struct world *w)
{
    h2_submit_dns(w, false, 0x1201, "silent.example.com", 1);
    h2_finish(w);
}

static void run_h2_silent(struct world *w)
{
    w->fake.mode = DT_FAKE_SILENT;
    h2_run_world(w, h2_silent);
}

/* ------------------------------------------------------------ HTTP/1.1 */

/* Whether out holds a complete response (content-length delimited); its status in @p status. */
static bool h1_complete(const struct dg_buf *out, int *status)
{
    if (out->len == 0)
        return false;
    const char *s = (const char *)out->data;
    const char *eoh = memmem(s, out->len, "\r\n\r\n", 4);
    if (!eoh)
        return false;
    const char *cl = memmem(s, (size_t)(eoh - s), "content-length: ", 16);
    size_t blen = cl ? strtoul(cl + 16, NULL, 10) : 0;
    if (out->len < (size_t)(eoh + 4 - s) + blen)
        return false;
    *status = strncmp(s, "HTTP/1.1 ", 9) == 0 ? atoi(s + 9) : -1;
    return true;
}

static void h1_request(struct world *w, const char *req, size_t len, uint16_t qid, int want)
{
    dg_buf_free(&w->out);
    if (h1_session_recv(w->h1, (const uint8_t *)req, len) != 0) {
        conn_close(w);
        w->closed_conns++;
        return;
    }
    uint64_t end = dg_now_ms() + REQ_WAIT_MS;
    int status = 0;
    for (;;) {
        if (h1_session_send(w->h1, &w->out, SIZE_MAX) != 0) {
            conn_close(w);
            break;
        }
        if (h1_complete(&w->out, &status))
            break;
        if (h1_session_done(w->h1)) {
            conn_close(w);
            break;
        }
        if (w->out.len == 0 && stuck(w, h1_session_busy(w->h1))) {
            stuck_end(w, "HTTP/1.1 request");
            break;
        }
        CHECK(w, dg_now_ms() < end, "%.20s: no answer, connection open (hang)", req);
        event_base_loop(w->base, EVLOOP_ONCE);
    }
    if (!h1_complete(&w->out, &status)) {
        w->closed_conns++; /* closed with no (or a partial) response: the client sees it */
        return;
    }
    CHECK(w, status == want || status == 500 || status == 503, "status %d", status);
    if (status == 200 && qid) {
        const uint8_t *body = (const uint8_t *)memmem(w->out.data, w->out.len, "\r\n\r\n", 4) + 4;
        size_t blen = w->out.len - (size_t)(body - w->out.data);
        CHECK(w, blen >= DNS_HEADER_LEN && dg_get16(body) == qid, "not the answer");
    }
    w->answered++;
    if (h1_session_done(w->h1))
        conn_close(w);
}

/* (b) HTTP/1.1 on one keep-alive connection: DoH GET (miss, hit), DoH POST, the landing page,
 * a 404. */
static void run_h1(struct world *w)
{
    infra_new(w);
    if (server_new(w)) {
        const struct h1_settings st = {.https = true, .client = &peer_h1};
        w->h1 = h1_session_new(&st, &w->hctx, on_wake, w);
        if (w->h1) {
            uint8_t q[128];
            char req[1024];
            size_t qlen = dt_build_query(q, sizeof(q), 0x2001, "h1.example.com");
            char b64[256];
            b64[dg_b64url_encode(q, qlen, b64)] = '\0';
            int n = snprintf(req, sizeof(req),
                             "GET /dns-query?dns=%s HTTP/1.1\r\nHost: doh.test\r\n\r\n", b64);
            h1_request(w, req, (size_t)n, 0x2001, 200);
            if (!w->conn_closed)
                h1_request(w, req, (size_t)n, 0x2001, 200);
            if (!w->conn_closed) {
                qlen = dt_build_query(q, sizeof(q), 0x2002, "h1post.example.com");
                n = snprintf(req, sizeof(req),
                             "POST /dns-query HTTP/1.1\r\nHost: doh.test\r\nContent-Type: "
                             "application/dns-message\r\nContent-Length: %zu\r\n\r\n",
                             qlen);
                memcpy(req + n, q, qlen);
                h1_request(w, req, (size_t)n + qlen, 0x2002, 200);
            }
            if (!w->conn_closed) {
                const char *land = "GET / HTTP/1.1\r\nHost: doh.test\r\n\r\n";
                h1_request(w, land, strlen(land), 0, 200);
            }
            if (!w->conn_closed) {
                const char *nf = "GET /nothing-here HTTP/1.1\r\nHost: doh.test\r\n\r\n";
                h1_request(w, nf, strlen(nf), 0, 404);
            }
        } else {
            w->setup_failed++;
        }
    } else {
        w->setup_failed++;
    }
    server_free(w);
    dg_buf_free(&w->out);
    infra_free(w);
}

/* ------------------------------------------------------------ (e) DNS over TCP / TLS */

/* Three pipelined queries on one DoT connection (dnsstream.c): a miss, the same question again
 * (coalesced onto it), and an ANY with EDNS keepalive answered at once (minimal ANY). Each ends
 * answered (NOERROR, or SERVFAIL when the resolver ran out of memory) or with the connection
 * closed (the session is done, or a call failed); never left with nothing pending. */
static void run_dns_stream(struct world *w)
{
    w->minimal_any = true;
    infra_new(w);
    if (!server_new(w)) {
        w->setup_failed++;
        goto out;
    }
    const struct dnsstream_settings st = {.client = &peer_h1, .transport = DG_TR_DOT};
    w->ds = dnsstream_session_new(&st, &w->hctx, on_wake, w);
    if (!w->ds) {
        w->setup_failed++;
        goto out;
    }
    uint8_t in[512];
    size_t len = 0;
    static const char *const names[] = {"ds.example.com", "ds.example.com", "any.example.com"};
    for (unsigned i = 0; i < 3; i++) {
        size_t n =
            dt_build_query(in + len + 2, sizeof(in) - len - 2, (uint16_t)(0x4001 + i), names[i]);
        if (i == 2) { /* ANY, with an OPT record carrying an empty edns-tcp-keepalive */
            static const uint8_t opt[] = {0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 4, 0, 11, 0, 0};
            dg_put16(in + len + 2 + n - 4, 255);
            memcpy(in + len + 2 + n, opt, sizeof(opt));
            n += sizeof(opt);
            dg_put16(in + len + 2 + 10, 1);
        }
        dg_put16(in + len, (uint16_t)n);
        len += 2 + n;
    }
    if (dnsstream_session_recv(w->ds, in, len) != 0) {
        w->closed_conns++;
        goto out;
    }
    bool seen[3] = {false, false, false};
    uint64_t end = dg_now_ms() + REQ_WAIT_MS;
    while (w->answered < 3) {
        if (dnsstream_session_send(w->ds, &w->out, SIZE_MAX) != 0) {
            w->closed_conns++;
            break;
        }
        size_t off = 0;
        while (w->out.len - off >= 2 && w->out.len - off - 2 >= dg_get16(w->out.data + off)) {
            size_t n = dg_get16(w->out.data + off);
            const uint8_t *m = w->out.data + off + 2;
            CHECK(w, n >= DNS_HEADER_LEN, "an answer of %zu bytes", n);
            unsigned i = dg_get16(m) - 0x4001u;
            CHECK(w, i < 3 && !seen[i], "unexpected answer ID %04x", dg_get16(m));
            int rcode = dns_rcode(m, n);
            CHECK(w, rcode == DNS_RCODE_NOERROR || rcode == DNS_RCODE_SERVFAIL, "rcode %d", rcode);
            seen[i] = true;
            w->answered++;
            off += 2 + n;
        }
        dg_buf_consume(&w->out, off);
        if (w->answered == 3)
            break;
        if (dnsstream_session_done(w->ds)) { /* it gave up on a query: the connection closes */
            w->closed_conns++;
            break;
        }
        if (w->out.len == 0 && stuck(w, dnsstream_session_inflight(w->ds) > 0)) {
            stuck_end(w, "DNS stream query");
            break;
        }
        CHECK(w, dg_now_ms() < end, "DNS stream: %u of 3 answered, connection open (hang)",
              w->answered);
        event_base_loop(w->base, EVLOOP_ONCE);
    }
out:
    server_free(w);
    dg_buf_free(&w->out);
    infra_free(w);
}

/* ------------------------------------------------------------ (c) DNS helpers and the cache */

static void run_dns(struct world *w)
{
    uint8_t q[128], a[600];
    size_t qlen = dt_build_query(q, sizeof(q), 0x3001, "Cache.Example.com");
    size_t alen = dt_build_answer(q, qlen, a, sizeof(a));
    /* a query with an OPT record (DO set): the error answer parses it with ldns */
    uint8_t qo[160];
    size_t qolen = dt_build_query(qo, sizeof(qo), 0x3002, "opt.example.com");
    static const uint8_t opt[] = {0, 0, 41, 0x10, 0, 0, 0, 0x80, 0, 0, 0};
    memcpy(qo + qolen, opt, sizeof(opt));
    qolen += sizeof(opt);
    dg_put16(qo + 10, 1);

    const char *why = NULL;
    CHECK(w, dns_query_check(q, qlen, &why) == DNS_QUERY_OK, "query check: %s", why);
    CHECK(w, dns_query_check(qo, qolen, &why) == DNS_QUERY_OK, "query check (OPT): %s", why);

    struct dg_buf ans = {0};
    int rc = dns_make_error_answer(qo, qolen, DNS_RCODE_SERVFAIL, &ans);
    CHECK(w, rc == 0 || rc == -ENOMEM, "error answer: %d", rc);
    if (rc == 0)
        CHECK(w,
              ans.len == qolen && dns_rcode(ans.data, ans.len) == DNS_RCODE_SERVFAIL &&
                  dg_get16(ans.data + 10) == 1,
              "error answer of %zu bytes", ans.len);
    else
        CHECK(w, ans.len == 0 && !ans.data, "a failed error answer left bytes behind");
    dg_buf_free(&ans);

    struct cache_config cc;
    cache_config_defaults(&cc);
    cc.max_bytes = CACHE_BYTES;
    cc.nshards = 2;
    struct cache *c = cache_new(&cc);
    if (!c) {
        w->setup_failed++;
        return;
    }
    /* the lifetime rule walks the wire: it allocates nothing, so it cannot fail */
    uint32_t ttl = cache_answer_lifetime(c, a, alen);
    CHECK(w, ttl == DT_A_RR_TTL, "cache lifetime %u", (unsigned)ttl);
    struct cache_key k;
    CHECK(w, cache_key_make(c, q, qlen, &k) == 0, "cache key");
    uint64_t now = 1000000;
    int ins = cache_insert(c, &k, a, alen, now);
    CHECK(w, ins == 0 || ins == -ENOMEM, "cache insert: %d", ins);
    /* the same question asked in another spelling and with another ID */
    uint8_t q2[128];
    size_t q2len = dt_build_query(q2, sizeof(q2), 0x3003, "cache.example.COM");
    struct cache_key k2;
    CHECK(w, cache_key_make(c, q2, q2len, &k2) == 0, "cache key 2");
    struct dg_buf out = {0};
    struct cache_hit_info info;
    enum cache_result cr = cache_lookup(c, &k2, q2, q2len, now + 5000, 0, &out, &info);
    if (ins == 0) {
        /* CACHE_MISS is also what a lookup says when it cannot copy the entry */
        CHECK(w, cr == CACHE_HIT || (cr == CACHE_MISS && out.len == 0), "lookup %d", cr);
        if (cr == CACHE_HIT) {
            CHECK(w, out.len == alen && dg_get16(out.data) == 0x3003, "hit of %zu bytes", out.len);
            CHECK(w,
                  memcmp(out.data + DNS_HEADER_LEN, q2 + DNS_HEADER_LEN, q2len - DNS_HEADER_LEN) ==
                      0,
                  "the hit does not carry the client's spelling");
            CHECK(w, info.ttl == DT_A_RR_TTL - 5, "hit ttl %u", info.ttl);
            w->answered++;
        }
    } else {
        CHECK(w, cr == CACHE_MISS && out.len == 0, "lookup after a failed insert: %d", cr);
    }
    dg_buf_free(&out);
    cache_free(c);
}

/* ------------------------------------------------------------ (d) configuration */

static const char full_conf[] = "listen 127.0.0.1:8443\n"
                                "listen [::1]:8443\n"
                                "upstream 127.0.0.1:5353\n"
                                "upstream [::1]\n"
                                "doh-path /dns-query\n"
                                "doh-path /resolve\n"
                                "server-name \"doh.example.net\"\n"
                                "workers 2\n"
                                "max-concurrent-streams 50\n"
                                "upstream-timeout 500\n"
                                "query-timeout 2000\n"
                                "cache-size 8M\n"
                                "cache-min-ttl 5\n"
                                "serve-stale no\n"
                                "allow-client 192.0.2.0/24\n"
                                "deny-client 192.0.2.128/25\n"
                                "rate-limit 100\n"
                                "header \"Alt-Svc: clear\"\n"
                                "header \"X-Test: one two\"\n"
                                "server-header dohgate\n"
                                "hsts-max-age 600\n"
                                "http-listen 127.0.0.1:8080\n"
                                "metrics-listen 127.0.0.1:9100\n"
                                "site-backend http://127.0.0.1:8081\n"
                                "log-level warn\n"
                                "query-log yes\n"
                                "query-log-client full\n";

static char full_conf_path[64];

static void load_one(struct world *w, const char *path)
{
    char err[512] = "";
    struct config *cfg = config_new();
    if (!cfg) {
        w->setup_failed++;
        return;
    }
    int rc = config_load_file(cfg, path, err, sizeof(err));
    CHECK(w, rc == 0 || rc == -ENOMEM, "load %s: %d %s", path, rc, err);
    if (rc == 0) {
        /* the sample sets no upstream: take it from a file we know */
        if (cfg->n_upstream == 0)
            rc = config_set(cfg, "upstream", "192.0.2.53", "test", 0, err, sizeof(err));
        CHECK(w, rc == 0 || rc == -ENOMEM, "set: %d %s", rc, err);
    }
    if (rc == 0) {
        rc = config_finish(cfg, err, sizeof(err));
        CHECK(w, rc == 0 || rc == -ENOMEM, "finish %s: %d %s", path, rc, err);
    }
    if (rc == 0) {
        fm_pause();
        FILE *null = fopen("/dev/null", "w");
        fm_resume();
        assert_non_null(null);
        rc = config_dump(cfg, null);
        fclose(null);
        CHECK(w, rc == 0 || rc == -EIO, "dump %s: %d", path, rc);
        w->answered++;
    } else {
        CHECK(w, err[0] != '\0', "%s: failed without a message", path);
    }
    config_free(cfg);
}

static void run_config(struct world *w)
{
    load_one(w, DG_SOURCE_DIR "/conf/dohgate.conf");
    load_one(w, full_conf_path);
}

/* ------------------------------------------------------------ the ladder */

/* For LeakSanitizer (ASan build), which checks at exit: the dynamic loader's dependency list
 * made when backtrace() (failmalloc.c) loads libgcc_s: LSan tells the loader's own allocations by
 * their caller, which is our malloc here, and the loader keeps the list where LSan does not look.
 */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void)
{
    return "leak:_dl_map_object_deps\n";
}

typedef void (*run_fn)(struct world *w);

/* Run @p fn for N = 1, 2, ... until a run reaches no N-th allocation. */
static void ladder(const char *path, run_fn fn, unsigned expect_answered, unsigned expect_hits,
                   bool persistent)
{
    struct world *w = calloc(1, sizeof(*w));
    assert_non_null(w);
    w->path = path;

    /* The libraries' lazy one-time state (allocated once, kept for the process) comes first,
     * outside any run. */
    fn(w);
    memset(w, 0, sizeof(*w));
    w->path = path;

    /* A clean counted run: the hook must be active. */
    fm_start(0, false);
    fn(w);
    fm_stop();
    unsigned long clean = fm_count();
    assert_true(clean > 0); /* the interposer sees the allocations: it is really in place */
    assert_int_equal(fm_live(), 0);
    assert_false(fm_injected());
    unsigned answered = w->answered;
    /* the clean run went the whole path: every request answered */
    assert_int_equal(answered, expect_answered);
    assert_int_equal(w->cache_hits, expect_hits); /* the repeated questions were cache hits */

    unsigned long n;
    unsigned resets = 0, closed = 0, setup = 0, partial = 0;
    bool clean_end = false;
    const char *only = getenv("FM_ONLY_N"); /* debugging: the run of this N alone */
    for (n = only ? strtoul(only, NULL, 10) : 1; !max_n || n <= max_n; n++) {
        memset(w, 0, sizeof(*w));
        w->path = path;
        w->n = n;
        w->persistent = persistent;
        fm_start(n, persistent);
        fn(w);
        fm_stop();
        bool injected = fm_injected();
        size_t live = fm_live();
        if (live != 0) {
            fm_dump_live();
            fail_msg("%s N=%lu: %zu blocks leaked", path, n, live);
        }
        resets += w->resets;
        closed += w->closed_conns;
        setup += w->setup_failed;
        partial += w->answered < answered;
        if (!injected) {
            clean_end = true;
            break;
        }
    }
    print_message("%s%s: %lu allocations in a clean run; N = 1..%lu: %u runs answered fewer, "
                  "%u resets, %u closed connections, %u failed set-ups\n",
                  path, persistent ? " (every allocation from N on fails)" : "", clean, n, partial,
                  resets, closed, setup);
    assert_true(clean_end); /* FM_MAX_N cut the ladder short */
    assert_true(n > clean / 2);
    free(w);
}

static void test_h2_doh(void **state)
{
    ladder("h2", run_h2, 4, 2, false);
}

static void test_h2_concurrent(void **state)
{
    ladder("h2 concurrent", run_h2_concurrent, 8, 0, false);
}

static void test_h2_silent_upstream(void **state)
{
    ladder("h2 silent upstream", run_h2_silent, 1, 0, false);
}

static void test_h1(void **state)
{
    ladder("h1", run_h1, 5, 1, false);
}

static void test_dns_stream(void **state)
{
    ladder("dns stream", run_dns_stream, 3, 0, false);
}

static void test_dns_stream_persistent(void **state)
{
    ladder("dns stream", run_dns_stream, 3, 0, true);
}

static void test_dns_cache(void **state)
{
    ladder("dns", run_dns, 1, 0, false);
}

static void test_config(void **state)
{
    ladder("config", run_config, 2, 0, false);
}

static void test_h2_doh_persistent(void **state)
{
    ladder("h2", run_h2, 4, 2, true);
}

static void test_h1_persistent(void **state)
{
    ladder("h1", run_h1, 5, 1, true);
}

int main(void)
{
    dg_log_set_level(DG_LOG_ERR);
    /* glibc's time zone state, allocated once on the first gmtime_r() (the first log line,
     * which may come only in some run that fails an allocation): set up now, not in a run */
    time_t t0 = 0;
    struct tm tm0;
    (void)gmtime_r(&t0, &tm0);
    const char *m = getenv("FM_MAX_N");
    if (m)
        max_n = strtoul(m, NULL, 10);
    snprintf(full_conf_path, sizeof(full_conf_path), "/tmp/failmalloc-%d.conf", (int)getpid());
    FILE *f = fopen(full_conf_path, "w");
    assert_non_null(f);
    fputs(full_conf, f);
    fclose(f);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dns_cache),
        cmocka_unit_test(test_config),
        cmocka_unit_test(test_h1),
        cmocka_unit_test(test_dns_stream),
        cmocka_unit_test(test_dns_stream_persistent),
        cmocka_unit_test(test_h2_doh),
        cmocka_unit_test(test_h2_concurrent),
        cmocka_unit_test(test_h2_silent_upstream),
        cmocka_unit_test(test_h1_persistent),
        cmocka_unit_test(test_h2_doh_persistent),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    unlink(full_conf_path);
    return rc;
}
