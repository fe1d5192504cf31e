/*
 * HTTP/1.1 session tests (h1.c) without sockets: raw request bytes go into h1_session_recv(),
 * the response bytes come out of h1_session_send(). Requests run the real router; the site is the
 * built-in landing page ("/" 200, other paths 404) and DoH requests that fail before the
 * resolver (415, 400) show that bodies reach the handler. No resolver is needed.
 */
#define _GNU_SOURCE /* accept4, memmem */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
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
#include <sys/socket.h>
#include <unistd.h>

#include "dohgate/budget.h"
#include "dohgate/client.h"
#include "dohgate/config.h"
#include "dohgate/h1.h"
#include "dohgate/http.h"
#include "dohgate/log.h"
#include "dohgate/proxy.h"
#include "dohgate/router.h"
#include "dohgate/site.h"
#include "dohgate/util.h"

#include "dohtest.h"

static const struct client_id peer = {
    .addr = {192, 0, 2, 7}, .len = 4, .key = {.b = {192, 0, 2, 7}, .len = 4}, .text = "192.0.2.7"};

struct fixture {
    struct config *cfg;
    struct handler_ctx hctx;
    struct h1_session *s;
    struct dg_buf out;
    int wakes;
};

static void on_wake(void *owner)
{
    ((struct fixture *)owner)->wakes++;
}

static int setup_with(void **state, const char *const *opts)
{
    struct fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    f->cfg = dt_config_new(opts);
    f->hctx = (struct handler_ctx){.cfg = f->cfg};
    const struct h1_settings st = {.https = true, .client = &peer};
    f->s = h1_session_new(&st, &f->hctx, on_wake, f);
    assert_non_null(f->s);
    *state = f;
    return 0;
}

static int setup(void **state)
{
    dg_log_set_level(DG_LOG_ERR);
    return setup_with(state, NULL);
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    h1_session_free(f->s);
    dg_buf_free(&f->out);
    config_free(f->cfg);
    free(f);
    return 0;
}

/* Feed @p req, then collect everything the session has to send, as a C string. */
static const char *roundtrip(struct fixture *f, const char *req, size_t len)
{
    assert_int_equal(h1_session_recv(f->s, (const uint8_t *)req, len), 0);
    assert_int_equal(h1_session_send(f->s, &f->out, 1 << 20), 0);
    assert_int_equal(dg_buf_append(&f->out, "", 1), 0);
    f->out.len--; /* keep it NUL-terminated but not counted */
    return (const char *)f->out.data;
}

#define RT(f, s) roundtrip((f), (s), strlen(s))

static int count(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)) != NULL; p += strlen(needle))
        n++;
    return n;
}

static void test_get_keepalive(void **state)
{
    struct fixture *f = *state;
    const char *o = RT(f, "GET / HTTP/1.1\r\nHost: doh.example\r\n\r\n");
    assert_non_null(strstr(o, "HTTP/1.1 200 OK\r\n"));
    assert_non_null(strstr(o, "content-type: text/html"));
    assert_non_null(strstr(o, "content-length: "));
    assert_non_null(strstr(o, "strict-transport-security: max-age=31536000\r\n"));
    assert_null(strstr(o, "connection: close"));
    /* the page names the DoH URL from the request's Host */
    assert_non_null(strstr(o, "https://doh.example/dns-query"));
    assert_false(h1_session_done(f->s));
    assert_false(h1_session_busy(f->s));
    assert_true(f->wakes > 0);
}

/* Between requests the session gives back its header array (h1_session_trim(), called by the
 * connection once it is quiet); the next request on the same session is answered as before. */
static void test_trim_between_requests(void **state)
{
    struct fixture *f = *state;
    const char *o = RT(f, "GET / HTTP/1.1\r\nHost: doh.example\r\n\r\n");
    assert_non_null(strstr(o, "HTTP/1.1 200 OK\r\n"));
    assert_false(h1_session_busy(f->s));
    size_t b = h1_session_trim(f->s);
    assert_true(b >= 16 * sizeof(struct http_header)); /* the array of the first request's fields */
    assert_int_equal(h1_session_trim(f->s), 0);        /* nothing more to give */
    f->out.len = 0;
    o = RT(f, "GET / HTTP/1.1\r\nHost: doh.example\r\nAccept: text/html\r\n\r\n");
    assert_non_null(strstr(o, "HTTP/1.1 200 OK\r\n"));
    assert_non_null(strstr(o, "https://doh.example/dns-query"));
    /* a request in progress keeps what it has */
    static const char head[] = "GET / HTTP/1.1\r\nHost: doh.example\r\n";
    assert_int_equal(h1_session_recv(f->s, (const uint8_t *)head, strlen(head)), 0);
    assert_true(h1_session_busy(f->s));
    assert_int_equal(h1_session_trim(f->s), 0);
    f->out.len = 0;
    o = RT(f, "\r\n");
    assert_non_null(strstr(o, "HTTP/1.1 200 OK\r\n"));
}

static void test_pipelined(void **state)
{
    struct fixture *f = *state;
    const char *o = RT(f, "GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n"
                          "HEAD /b HTTP/1.1\r\nHost: x\r\n\r\n");
    const char *first = strstr(o, "HTTP/1.1 404");
    const char *second = strstr(o, "HTTP/1.1 200");
    const char *third = second ? strstr(second + 1, "HTTP/1.1 404") : NULL;
    assert_non_null(first);
    assert_non_null(second);
    assert_non_null(third);
    assert_true(first < second);
    assert_int_equal(count(o, "HTTP/1.1 "), 3);
    /* HEAD: the length of the body it would have had, and no body */
    assert_non_null(strstr(third, "content-length: 10\r\n"));
    assert_string_equal(strstr(third, "\r\n\r\n"), "\r\n\r\n");
    assert_false(h1_session_done(f->s));
}

static void test_split_bytes(void **state)
{
    /* One byte at a time: the parser keeps state across reads. */
    struct fixture *f = *state;
    const char *req = "GET / HTTP/1.1\r\nHost: split\r\nX-Long: aaaaaaaaaaaaaaaa\r\n\r\n";
    for (size_t i = 0; req[i]; i++)
        assert_int_equal(h1_session_recv(f->s, (const uint8_t *)req + i, 1), 0);
    const char *o = RT(f, "");
    assert_non_null(strstr(o, "HTTP/1.1 200 OK"));
}

static void test_http10_close(void **state)
{
    struct fixture *f = *state;
    const char *o = RT(f, "GET / HTTP/1.0\r\n\r\n");
    assert_non_null(strstr(o, "HTTP/1.1 200 OK"));
    assert_non_null(strstr(o, "connection: close\r\n"));
    assert_true(h1_session_done(f->s));
}

static void test_connection_close(void **state)
{
    struct fixture *f = *state;
    const char *o =
        RT(f, "GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\nGET / HTTP/1.1\r\n"
              "Host: a\r\n\r\n");
    assert_int_equal(count(o, "HTTP/1.1 "), 1); /* the second request is not served */
    assert_non_null(strstr(o, "connection: close"));
    assert_true(h1_session_done(f->s));
}

static void test_no_host(void **state)
{
    struct fixture *f = *state;
    const char *o = RT(f, "GET / HTTP/1.1\r\n\r\n");
    assert_non_null(strstr(o, "HTTP/1.1 400 Bad Request"));
    assert_non_null(strstr(o, "connection: close"));
    assert_true(h1_session_done(f->s));
}

static void test_uri_too_long(void **state)
{
    struct fixture *f = *state;
    char req[6000];
    int n = snprintf(req, sizeof(req), "GET /%05000d HTTP/1.1\r\nHost: a\r\n\r\n", 1);
    const char *o = roundtrip(f, req, (size_t)n);
    assert_non_null(strstr(o, "HTTP/1.1 414 URI Too Long"));
    assert_true(h1_session_done(f->s));
}

static void test_headers_too_large(void **state)
{
    struct fixture *f = *state;
    struct dg_buf b = {0};
    assert_int_equal(dg_buf_append(&b, "GET / HTTP/1.1\r\nHost: a\r\n", 25), 0);
    for (int i = 0; i < 40; i++) {
        char line[600];
        int n = snprintf(line, sizeof(line), "X-H%d: %0500d\r\n", i, 0);
        assert_int_equal(dg_buf_append(&b, line, (size_t)n), 0);
    }
    assert_int_equal(dg_buf_append(&b, "\r\n", 2), 0);
    const char *o = roundtrip(f, (const char *)b.data, b.len);
    assert_non_null(strstr(o, "HTTP/1.1 431 "));
    assert_true(h1_session_done(f->s));
    dg_buf_free(&b);
}

static void test_too_many_fields(void **state)
{
    struct fixture *f = *state;
    struct dg_buf b = {0};
    assert_int_equal(dg_buf_append(&b, "GET / HTTP/1.1\r\nHost: a\r\n", 25), 0);
    for (int i = 0; i < 150; i++) {
        char line[32];
        int n = snprintf(line, sizeof(line), "X-%d: 1\r\n", i);
        assert_int_equal(dg_buf_append(&b, line, (size_t)n), 0);
    }
    assert_int_equal(dg_buf_append(&b, "\r\n", 2), 0);
    const char *o = roundtrip(f, (const char *)b.data, b.len);
    assert_non_null(strstr(o, "HTTP/1.1 431 "));
    dg_buf_free(&b);
}

static void test_body_too_large_announced(void **state)
{
    /* DoH bodies are capped at 65535: refused from Content-Length, before any body byte. */
    struct fixture *f = *state;
    const char *o = RT(f, "POST /dns-query HTTP/1.1\r\nHost: a\r\nContent-Type: "
                          "application/dns-message\r\nContent-Length: 70000\r\n\r\n");
    assert_non_null(strstr(o, "HTTP/1.1 413 "));
    assert_true(h1_session_done(f->s));
}

static void test_chunked_body_too_large(void **state)
{
    struct fixture *f = *state;
    struct dg_buf b = {0};
    const char *h = "POST /dns-query HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
    assert_int_equal(dg_buf_append(&b, h, strlen(h)), 0);
    static char chunk[8192 + 16];
    for (int i = 0; i < 10; i++) {
        int n = snprintf(chunk, sizeof(chunk), "2000\r\n");
        memset(chunk + n, 'a', 8192);
        memcpy(chunk + n + 8192, "\r\n", 2);
        assert_int_equal(dg_buf_append(&b, chunk, (size_t)n + 8194), 0);
    }
    const char *o = roundtrip(f, (const char *)b.data, b.len);
    assert_non_null(strstr(o, "HTTP/1.1 413 "));
    dg_buf_free(&b);
}

static void test_body_reaches_handler(void **state)
{
    /* A chunked body: the DoH handler sees it and finds it is not a DNS message (400). */
    struct fixture *f = *state;
    const char *o = RT(f, "POST /dns-query HTTP/1.1\r\nHost: a\r\nContent-Type: "
                          "application/dns-message\r\nTransfer-Encoding: chunked\r\n\r\n"
                          "3\r\nabc\r\n0\r\n\r\n");
    assert_non_null(strstr(o, "HTTP/1.1 400 "));
    assert_false(h1_session_done(f->s)); /* a handler's 400 keeps the connection */
    dg_buf_free(&f->out);
    o = RT(f, "POST /dns-query HTTP/1.1\r\nHost: a\r\nContent-Type: text/plain\r\n"
              "Content-Length: 3\r\n\r\nabc");
    assert_non_null(strstr(o, "HTTP/1.1 415 "));
}

static void test_smuggling_refused(void **state)
{
    struct fixture *f = *state;
    const char *o = RT(f, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: "
                          "chunked\r\n\r\n0\r\n\r\nGET /x HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_non_null(strstr(o, "HTTP/1.1 400 "));
    assert_int_equal(count(o, "HTTP/1.1 "), 1);
    assert_true(h1_session_done(f->s));
}

static void test_expect_continue(void **state)
{
    struct fixture *f = *state;
    const char *o = RT(f, "POST /dns-query HTTP/1.1\r\nHost: a\r\nContent-Type: text/plain\r\n"
                          "Content-Length: 3\r\nExpect: 100-continue\r\n\r\n");
    assert_string_equal(o, "HTTP/1.1 100 Continue\r\n\r\n");
    assert_true(h1_session_busy(f->s));
    o = RT(f, "abc");
    assert_non_null(strstr(o, "HTTP/1.1 415 "));
    dg_buf_free(&f->out);
    o = RT(f, "GET / HTTP/1.1\r\nHost: a\r\nExpect: something\r\n\r\n");
    assert_non_null(strstr(o, "HTTP/1.1 417 "));
}

static void test_garbage(void **state)
{
    struct fixture *f = *state;
    const char *o = RT(f, "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 garbage\r\n\r\n");
    assert_non_null(strstr(o, "HTTP/1.1 400 "));
    assert_true(h1_session_done(f->s));
}

static void test_connect_refused(void **state)
{
    struct fixture *f = *state;
    const char *o = RT(f, "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n");
    assert_non_null(strstr(o, "HTTP/1.1 405 "));
}

static void test_absolute_form(void **state)
{
    struct fixture *f = *state;
    const char *o = RT(f, "GET https://abs.example:8443/ HTTP/1.1\r\nHost: other\r\n\r\n");
    assert_non_null(strstr(o, "HTTP/1.1 200 OK"));
    /* the authority of the target wins over Host (RFC 9112 3.2.2) */
    assert_non_null(strstr(o, "https://abs.example:8443/dns-query"));
}

static void test_timeout(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(h1_session_request_started(f->s), 0);
    const char *o = RT(f, "GET / HTTP/1.1\r\nHost: a\r\n");
    assert_string_equal(o, "");
    assert_true(h1_session_request_started(f->s) > 0);
    h1_session_timeout(f->s);
    o = RT(f, "");
    assert_non_null(strstr(o, "HTTP/1.1 408 "));
    assert_true(h1_session_done(f->s));
}

static void test_shutdown_idle_and_busy(void **state)
{
    struct fixture *f = *state;
    const char *o = RT(f, "GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_non_null(strstr(o, "200 OK"));
    h1_session_shutdown(f->s);
    assert_true(h1_session_done(f->s));

    /* Shut down with a request half-read: it is answered with connection: close. */
    struct fixture *g;
    setup_with((void **)&g, NULL);
    RT(g, "GET / HTTP/1.1\r\nHost: a\r\n");
    h1_session_shutdown(g->s);
    assert_false(h1_session_done(g->s));
    o = RT(g, "\r\n");
    assert_non_null(strstr(o, "200 OK"));
    assert_non_null(strstr(o, "connection: close"));
    assert_true(h1_session_done(g->s));
    teardown((void **)&g);
}

static void test_config_headers(void **state)
{
    struct fixture *g;
    const char *const opts[] = {"hsts-max-age",  "0",       "header", "Alt-Svc: clear",
                                "server-header", "dohgate", NULL};
    setup_with((void **)&g, opts);
    const char *o = RT(g, "GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_null(strstr(o, "strict-transport-security"));
    assert_non_null(strstr(o, "alt-svc: clear\r\n"));
    assert_non_null(strstr(o, "server: dohgate\r\n"));
    teardown((void **)&g);
}

static void test_plain_listener(void **state)
{
    /* The port-80 session: no HSTS, everything redirected to https. */
    struct fixture *f = *state;
    h1_session_free(f->s);
    const struct h1_settings st = {.https = false, .client = &peer};
    struct site site = {.root.fd = -1, .acme.fd = -1, .https_port = 443};
    f->hctx.site = &site;
    f->s = h1_session_new(&st, &f->hctx, on_wake, f);
    const char *o = RT(f, "GET /dns-query?dns=AAAB HTTP/1.1\r\nHost: doh.example\r\n\r\n");
    assert_non_null(strstr(o, "HTTP/1.1 301 "));
    assert_non_null(strstr(o, "location: https://doh.example/dns-query?dns=AAAB\r\n"));
    assert_null(strstr(o, "strict-transport-security"));
    /* the TLS listener on another port (or a socket from systemd): the redirect says so */
    site.https_port = 8443;
    o = RT(f, "GET /x HTTP/1.1\r\nHost: doh.example:80\r\n\r\n");
    assert_non_null(strstr(o, "location: https://doh.example:8443/x\r\n"));
    f->hctx.site = NULL;
}

static void test_pending_input_bounded(void **state)
{
    /* While a response waits to be pulled, pipelined input is held; past 64 KiB the session
     * asks the connection to stop reading. Then it is parsed in turn (a 70 KB header: 431). */
    struct fixture *f = *state;
    const char *req = "POST /dns-query HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n"
                      "Content-Type: text/plain\r\n\r\nabc";
    assert_int_equal(h1_session_recv(f->s, (const uint8_t *)req, strlen(req)), 0);
    assert_int_equal(h1_session_recv(f->s, (const uint8_t *)"GET / HTTP/1.1\r\n", 16), 0);
    assert_true(h1_session_want_read(f->s));
    static char junk[70000];
    memset(junk, 'a', sizeof(junk));
    assert_int_equal(h1_session_recv(f->s, (const uint8_t *)junk, sizeof(junk)), 0);
    assert_false(h1_session_want_read(f->s));
    const char *o = RT(f, "");
    const char *first = strstr(o, "HTTP/1.1 415 ");
    assert_non_null(first);
    assert_non_null(strstr(first, "HTTP/1.1 431 "));
    assert_true(h1_session_done(f->s));
}

/* Issue 14: the landing page, static files, the metrics listener and the plain-HTTP listener
 * take no body. One announced with Content-Length is refused before a byte of it is read; a
 * chunked one at its first byte; none is stored. 405 (allow: GET, HEAD) for a method these
 * routes do not take, else 413. */
static void test_body_unwanted_refused(void **state)
{
    struct fixture *f = *state;
    size_t base = budget_process_used(BUDGET_BODY);
    const char *o = RT(f, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n");
    assert_non_null(strstr(o, "HTTP/1.1 405 "));
    assert_non_null(strstr(o, "allow: GET, HEAD\r\n"));
    assert_true(h1_session_done(f->s));
    teardown(state);

    setup(state);
    f = *state;
    o = RT(f, "GET /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabcde\r\n");
    assert_non_null(strstr(o, "HTTP/1.1 413 "));
    assert_true(h1_session_done(f->s));
    assert_int_equal(budget_process_used(BUDGET_BODY), base);
    teardown(state);

    /* An empty body is no body: the landing page answers as for any POST. */
    setup(state);
    f = *state;
    o = RT(f, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n");
    assert_non_null(strstr(o, "HTTP/1.1 405 "));
    assert_false(h1_session_done(f->s));

    /* the metrics and the plain-HTTP listeners */
    for (int metrics = 0; metrics < 2; metrics++) {
        h1_session_free(f->s);
        dg_buf_free(&f->out);
        const struct h1_settings st = {.https = false, .metrics = metrics, .client = &peer};
        f->s = h1_session_new(&st, &f->hctx, on_wake, f);
        assert_non_null(f->s);
        o = RT(f, metrics ? "GET /metrics HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n"
                          : "POST /dns-query HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n");
        assert_non_null(strstr(o, metrics ? "HTTP/1.1 413 " : "HTTP/1.1 405 "));
    }
    /* The route's limit: DoH 65535; the site only as a reverse proxy (a stand-in pointer: the
     * limit only asks whether there is one). */
    assert_int_equal(router_max_body(&f->hctx, "/dns-query", true, false), 65535);
    assert_int_equal(router_max_body(&f->hctx, "/upload", true, false), 0);
    assert_int_equal(router_max_body(&f->hctx, "/dns-query", true, true), 0);
    struct handler_ctx proxied = f->hctx;
    proxied.proxy = (struct proxy *)&proxied;
    assert_int_equal(router_max_body(&proxied, "/upload", true, false), f->cfg->site_max_body);
    assert_int_equal(router_max_body(&proxied, "/upload", false, false), 0);
}

/* Stored body bytes are taken under the connection's budget while the request is read and
 * given back when it is done with; past the budget: 503, and the connection closes. */
static void test_body_budget(void **state)
{
    static const char *const opts[] = {"max-body-buffer-per-connection", "4K", NULL};
    struct fixture *f = *state;
    teardown(state);
    setup_with(state, opts);
    f = *state;
    struct budget_scope scope;
    budget_scope_init(&scope, NULL, &peer, NULL);
    h1_session_free(f->s);
    const struct h1_settings st = {.https = true, .client = &peer, .budget = &scope};
    f->s = h1_session_new(&st, &f->hctx, on_wake, f);
    assert_non_null(f->s);
    size_t base = budget_process_used(BUDGET_BODY);

    static char body[5000];
    memset(body, 'q', sizeof(body));
    const char *h = "POST /dns-query HTTP/1.1\r\nHost: a\r\nContent-Type: text/plain\r\n"
                    "Content-Length: 3000\r\n\r\n";
    assert_int_equal(h1_session_recv(f->s, (const uint8_t *)h, strlen(h)), 0);
    assert_int_equal(h1_session_recv(f->s, (const uint8_t *)body, 1000), 0);
    assert_int_equal(scope.used[BUDGET_BODY], 1000);
    assert_int_equal(budget_process_used(BUDGET_BODY), base + 1000);
    const char *o = roundtrip(f, body, 2000);
    assert_non_null(strstr(o, "HTTP/1.1 415 ")); /* the handler had the whole body */
    assert_int_equal(scope.used[BUDGET_BODY], 0);
    assert_int_equal(budget_process_used(BUDGET_BODY), base);
    assert_false(h1_session_done(f->s));

    dg_buf_free(&f->out);
    h = "POST /dns-query HTTP/1.1\r\nHost: a\r\nContent-Type: text/plain\r\n"
        "Content-Length: 5000\r\n\r\n";
    assert_int_equal(h1_session_recv(f->s, (const uint8_t *)h, strlen(h)), 0);
    assert_int_equal(h1_session_recv(f->s, (const uint8_t *)body, 4000), 0);
    o = roundtrip(f, body, 1000);
    assert_non_null(strstr(o, "HTTP/1.1 503 "));
    assert_true(h1_session_done(f->s));
    assert_int_equal(scope.used[BUDGET_BODY], 0);
    assert_int_equal(budget_process_used(BUDGET_BODY), base);
    h1_session_free(f->s);
    f->s = NULL;
    budget_scope_fini(&scope);
}

/* A request that must be refused with 400 and the connection closed, each on a new session. */
static void expect_400(const char *req, size_t len, bool bytewise)
{
    struct fixture *g;
    setup_with((void **)&g, NULL);
    const char *o;
    if (bytewise) {
        for (size_t i = 0; i < len; i++)
            assert_int_equal(h1_session_recv(g->s, (const uint8_t *)req + i, 1), 0);
        o = roundtrip(g, "", 0);
    } else {
        o = roundtrip(g, req, len);
    }
    if (!strstr(o, "HTTP/1.1 400 ") || count(o, "HTTP/1.1 ") != 1 || !h1_session_done(g->s))
        fail_msg("not a lone 400 and close for [%s]: got [%s]", req, o);
    teardown((void **)&g);
}

static void test_field_name_syntax(void **state)
{
    /* RFC 9112 §5.1: nothing between the name and the colon; a name is a token. The parser's
     * non-strict mode took "Transfer-Encoding :" as Transfer-Encoding. */
    (void)state;
    static const char *const bad[] = {
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding\t: chunked\r\n\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length : 3\r\n\r\nabc",
        "GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-Host : evil.example\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nX Y: z\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nX(Y): z\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\n: z\r\n\r\n",
        " GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        expect_400(bad[i], strlen(bad[i]), false);
        expect_400(bad[i], strlen(bad[i]), true);
    }
}

static void test_obs_fold_and_bare_cr(void **state)
{
    /* RFC 9112 §5.2 (obs-fold: 400) and §2.2 (a bare CR: invalid). Byte by byte as well: the
     * line end and the fold's SP arrive in different reads. */
    (void)state;
    static const char *const bad[] = {
        "GET / HTTP/1.1\r\nHost: a\r\nX-A: one\r\n two\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nX-A: one\r\n\ttwo\r\n\r\n",
        "GET / HTTP/1.1\nHost: a\nX-A: one\n two\n\n",
        "POST / HTTP/1.1\r\nHost: a\r\nX-A: x\r\n Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "GET / HTTP/1.1\r\n Host: a\r\n\r\n", /* whitespace before the first field */
        "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\rTransfer-Encoding: chunked\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\n\rX\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nX-A: \x01\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        expect_400(bad[i], strlen(bad[i]), false);
        expect_400(bad[i], strlen(bad[i]), true);
    }
}

static void test_host_rules(void **state)
{
    /* RFC 9112 §3.2: one Host, a valid authority, required on 1.1 (absolute-form too) */
    struct fixture *f = *state;
    static const char *const bad[] = {
        "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n",
        "GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: user@evil.example\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: evil.example/x\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a:b\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a:65536\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a:\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: [zz]\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: ::1\r\n\r\n",
        "GET / HTTP/1.1\r\nHost:\r\n\r\n",
        "GET / HTTP/1.0\r\nHost: <script>\r\n\r\n",
        "GET http://abs.example/ HTTP/1.1\r\n\r\n",
        "GET http://user@abs.example/ HTTP/1.1\r\nHost: a\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        expect_400(bad[i], strlen(bad[i]), false);
    /* and the valid shapes still pass */
    const char *o = RT(f, "GET / HTTP/1.1\r\nHost: [2001:db8::1]:8443\r\n\r\n");
    assert_non_null(strstr(o, "HTTP/1.1 200 OK"));
    assert_non_null(strstr(o, "https://[2001:db8::1]:8443/dns-query"));
    dg_buf_free(&f->out);
    o = RT(f, "GET / HTTP/1.1\r\nHost: 192.0.2.1:443\r\n\r\n");
    assert_non_null(strstr(o, "HTTP/1.1 200 OK"));
    dg_buf_free(&f->out);
    o = RT(f, "GET / HTTP/1.1\r\nHost: Doh.Example\r\nX-A: b\tc\r\n\r\n");
    assert_non_null(strstr(o, "HTTP/1.1 200 OK"));
    assert_false(h1_session_done(f->s));
}

static void test_trailers_dropped(void **state)
{
    /* Trailers of a chunked body are checked (a bad name is 400) but never become fields. */
    struct fixture *f = *state;
    const char *o = RT(f, "POST /dns-query HTTP/1.1\r\nHost: a\r\nContent-Type: "
                          "application/dns-message\r\nTransfer-Encoding: chunked\r\n\r\n"
                          "3\r\nabc\r\n0\r\nContent-Type: text/plain\r\nX-T: 1\r\n\r\n");
    /* still the DoH handler's 400 (not a DNS message), not the 415 of a text/plain body */
    assert_non_null(strstr(o, "HTTP/1.1 400 "));
    assert_false(h1_session_done(f->s));
    const char *bad = "POST /dns-query HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                      "3\r\nabc\r\n0\r\nX T: 1\r\n\r\n";
    expect_400(bad, strlen(bad), false);
}

/* ---- a request body streamed to the site backend (issue 14) ---- */

#define STREAMED 1000000

/* memmem() that takes an empty buffer (NULL data) */
static const void *find(const void *hay, size_t len, const char *needle, size_t nlen)
{
    return hay ? memmem(hay, len, needle, nlen) : NULL;
}

/* What the connection does between reads: the loop's events (the proxy), then its output. */
static void turn(struct fixture *f, struct event_base *base)
{
    assert_true(event_base_loop(base, EVLOOP_NONBLOCK) >= 0);
    assert_int_equal(h1_session_send(f->s, &f->out, 1 << 20), 0);
}

/* Feed body bytes as the connection would: only while the session wants to read.
 * @return the bytes it took. */
static size_t feed_body(struct fixture *f, size_t *sent, size_t total)
{
    static char chunk[16384];
    memset(chunk, 'y', sizeof(chunk));
    size_t took = 0;
    while (*sent < total && h1_session_want_read(f->s)) {
        size_t n = total - *sent < sizeof(chunk) ? total - *sent : sizeof(chunk);
        assert_int_equal(h1_session_recv(f->s, (const uint8_t *)chunk, n), 0);
        *sent += n;
        took += n;
    }
    return took;
}

/* In reverse-proxy mode the request is dispatched at the end of its head and the body streams
 * to the backend: the session takes no more input than one window plus what waits for it while
 * the backend reads nothing (the old code read the whole body into memory before the backend
 * heard of the request), the rest flows as the backend reads, and it arrives whole. */
static void test_body_streamed(void **state)
{
    struct fixture *f = *state;
    char url[64];
    int l = dt_backend_listen(url, sizeof(url));
    const char *opts[] = {"site-backend", url, "site-max-body", "4M", NULL};

    h1_session_free(f->s);
    config_free(f->cfg);
    f->cfg = dt_config_new(opts);
    struct event_base *base = event_base_new();
    assert_non_null(base);
    f->hctx = (struct handler_ctx){.cfg = f->cfg, .proxy = proxy_new(base, f->cfg)};
    assert_non_null(f->hctx.proxy);
    struct budget_scope scope;
    budget_scope_init(&scope, NULL, &peer, NULL);
    const struct h1_settings st = {.https = true, .client = &peer, .budget = &scope};
    f->s = h1_session_new(&st, &f->hctx, on_wake, f);
    assert_non_null(f->s);

    const char *h = "POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000\r\n\r\n";
    assert_int_equal(h1_session_recv(f->s, (const uint8_t *)h, strlen(h)), 0);
    struct pollfd pl = {.fd = l, .events = POLLIN};
    for (int i = 0; i < 2000 && poll(&pl, 1, 1) == 0; i++)
        turn(f, base);
    assert_int_equal(poll(&pl, 1, 0), 1); /* the backend has the request before the body came */
    int b = accept4(l, NULL, NULL, SOCK_NONBLOCK);
    assert_true(b >= 0);

    size_t sent = 0;
    for (int i = 0; i < 50; i++) {
        feed_body(f, &sent, STREAMED);
        turn(f, base);
        usleep(1000);
    }
    /* one window held, one waiting, the sockets' buffers: not the body */
    assert_in_range(sent, 1, 400000);
    assert_true(scope.used[BUDGET_BODY] <= 65536 + 16384);
    assert_false(h1_session_want_read(f->s));

    struct dg_buf in = {0};
    uint8_t buf[65536];
    for (int i = 0; i < 20000; i++) {
        ssize_t n = recv(b, buf, sizeof(buf), 0);
        if (n > 0)
            assert_int_equal(dg_buf_append(&in, buf, (size_t)n), 0);
        feed_body(f, &sent, STREAMED);
        turn(f, base);
        const uint8_t *e = find(in.data, in.len, "\r\n\r\n", 4);
        if (e && in.len - (size_t)(e + 4 - in.data) == STREAMED)
            break;
        if (n <= 0)
            usleep(200);
    }
    const uint8_t *e = find(in.data, in.len, "\r\n\r\n", 4);
    assert_non_null(e);
    size_t hl = (size_t)(e + 4 - in.data);
    assert_non_null(find(in.data, hl, "content-length: 1000000\r\n", 25));
    assert_int_equal(in.len - hl, STREAMED);
    for (size_t i = hl; i < in.len; i++) {
        if (in.data[i] != 'y')
            fail_msg("body byte %zu is 0x%02x", i - hl, in.data[i]);
    }
    static const char ok[] = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
    assert_int_equal(send(b, ok, sizeof(ok) - 1, 0), (ssize_t)sizeof(ok) - 1);
    for (int i = 0; i < 2000 && !find(f->out.data, f->out.len, "\r\n\r\nok", 6); i++) {
        turn(f, base);
        usleep(500);
    }
    assert_non_null(find(f->out.data, f->out.len, "HTTP/1.1 200 OK\r\n", 17));
    assert_false(h1_session_done(f->s)); /* keep-alive: the body was read whole */
    assert_int_equal(scope.used[BUDGET_BODY], 0);

    dg_buf_free(&in);
    h1_session_free(f->s);
    f->s = NULL;
    proxy_free(f->hctx.proxy);
    event_base_free(base);
    budget_scope_fini(&scope);
    close(b);
    close(l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_get_keepalive, setup, teardown),
        cmocka_unit_test_setup_teardown(test_trim_between_requests, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pipelined, setup, teardown),
        cmocka_unit_test_setup_teardown(test_split_bytes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_http10_close, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connection_close, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_host, setup, teardown),
        cmocka_unit_test_setup_teardown(test_uri_too_long, setup, teardown),
        cmocka_unit_test_setup_teardown(test_headers_too_large, setup, teardown),
        cmocka_unit_test_setup_teardown(test_too_many_fields, setup, teardown),
        cmocka_unit_test_setup_teardown(test_body_too_large_announced, setup, teardown),
        cmocka_unit_test_setup_teardown(test_chunked_body_too_large, setup, teardown),
        cmocka_unit_test_setup_teardown(test_body_reaches_handler, setup, teardown),
        cmocka_unit_test_setup_teardown(test_smuggling_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_expect_continue, setup, teardown),
        cmocka_unit_test_setup_teardown(test_garbage, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connect_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_absolute_form, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_shutdown_idle_and_busy, setup, teardown),
        cmocka_unit_test_setup_teardown(test_config_headers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_plain_listener, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pending_input_bounded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_body_unwanted_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_body_budget, setup, teardown),
        cmocka_unit_test_setup_teardown(test_field_name_syntax, setup, teardown),
        cmocka_unit_test_setup_teardown(test_obs_fold_and_bare_cr, setup, teardown),
        cmocka_unit_test_setup_teardown(test_host_rules, setup, teardown),
        cmocka_unit_test_setup_teardown(test_trailers_dropped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_body_streamed, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
