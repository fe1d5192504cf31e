/*
 * admission: the verdicts (allow, refuse with a reason, rate-limited with a wait) from the ACL
 * and the per-client query rate, and how the HTTP router maps them: a DoH request from a refused
 * client gets 403, a rate-limited one 429 with Retry-After, and neither reaches the DoH handler;
 * site pages are not admission-checked. The router part runs requests through a real HTTP/1.1
 * session (no sockets), as test_h1 does.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "dohgate/acl.h"
#include "dohgate/admission.h"
#include "dohgate/client.h"
#include "dohgate/clients.h"
#include "dohgate/config.h"
#include "dohgate/h1.h"
#include "dohgate/http.h"
#include "dohgate/log.h"
#include "dohgate/util.h"

#include "dohtest.h"

static struct client_id id_of(const char *s)
{
    struct client_id id;
    assert_int_equal(client_id_from_string(&id, s), 0);
    return id;
}

static void test_no_policy(void **state)
{
    (void)state;
    const struct admission_policy p = {0};
    struct client_id a = id_of("192.0.2.1");
    struct admission_verdict v = admission_check(&p, &a);
    assert_int_equal(v.outcome, ADMISSION_ALLOW);
    assert_int_equal(v.reason, ADMISSION_REASON_NONE);
    assert_int_equal(v.wait_s, 0);
    /* nothing configured: even an unknown client is served */
    assert_int_equal(admission_check(&p, NULL).outcome, ADMISSION_ALLOW);
}

static void test_acl_refuses(void **state)
{
    (void)state;
    struct acl acl;
    char *deny[] = {"192.0.2.0/24", "2001:db8:bad::/48"};
    assert_int_equal(acl_build(&acl, NULL, 0, deny, 2), 0);
    const struct admission_policy p = {.acl = &acl};
    struct client_id in = id_of("198.51.100.1"), out = id_of("192.0.2.9"),
                     mapped = id_of("::ffff:192.0.2.9"), out6 = id_of("2001:db8:bad:1::1");
    assert_int_equal(admission_check(&p, &in).outcome, ADMISSION_ALLOW);
    const struct client_id *refused[] = {&out, &mapped, &out6, NULL};
    for (size_t i = 0; i < 4; i++) {
        struct admission_verdict v = admission_check(&p, refused[i]);
        assert_int_equal(v.outcome, ADMISSION_REFUSE);
        assert_int_equal(v.reason, ADMISSION_REASON_ACL);
        assert_int_equal(v.wait_s, 0);
    }
    assert_string_equal(admission_reason_text(ADMISSION_REASON_ACL),
                        "this resolver does not serve your network");
}

static void test_rate_limited(void **state)
{
    (void)state;
    struct clients_config cc = {.query_rate = 1, .query_burst = 2, .max_entries = 100};
    struct clients *c = clients_new(&cc);
    assert_non_null(c);
    const struct admission_policy p = {.clients = c};
    /* two addresses of one /64 are one client; another /64 is another */
    struct client_id a = id_of("2001:db8:1:2::1"), a2 = id_of("2001:db8:1:2::2"),
                     b = id_of("2001:db8:1:3::1");
    assert_int_equal(admission_check(&p, &a).outcome, ADMISSION_ALLOW);
    assert_int_equal(admission_check(&p, &a2).outcome, ADMISSION_ALLOW);
    struct admission_verdict v = admission_check(&p, &a);
    assert_int_equal(v.outcome, ADMISSION_RATE_LIMITED);
    assert_int_equal(v.reason, ADMISSION_REASON_NONE);
    assert_int_equal(v.wait_s, 1); /* one token per second: back within the second */
    assert_int_equal(admission_check(&p, &b).outcome, ADMISSION_ALLOW);
    /* an unknown client has no key: let through, not counted */
    size_t n = clients_count(c);
    assert_int_equal(admission_check(&p, NULL).outcome, ADMISSION_ALLOW);
    assert_int_equal(clients_count(c), n);
    clients_free(c);
}

static void test_acl_before_rate(void **state)
{
    (void)state;
    /* a refused client is refused, not rate-limited, and takes no entry in the table */
    struct acl acl;
    char *allow[] = {"10.0.0.0/8"};
    assert_int_equal(acl_build(&acl, allow, 1, NULL, 0), 0);
    struct clients_config cc = {.query_rate = 1, .query_burst = 1, .max_entries = 100};
    struct clients *c = clients_new(&cc);
    assert_non_null(c);
    const struct admission_policy p = {.acl = &acl, .clients = c};
    struct client_id out = id_of("192.0.2.1");
    for (int i = 0; i < 3; i++)
        assert_int_equal(admission_check(&p, &out).outcome, ADMISSION_REFUSE);
    assert_int_equal(clients_count(c), 0);
    clients_free(c);
}

static void test_no_query_rate(void **state)
{
    (void)state;
    /* the table is there for connection limits only: queries are neither limited nor tracked */
    struct clients_config cc = {.max_conns = 1, .max_entries = 100};
    struct clients *c = clients_new(&cc);
    assert_non_null(c);
    assert_false(clients_limit_queries(c));
    assert_false(clients_limit_queries(NULL));
    const struct admission_policy p = {.clients = c};
    struct client_id a = id_of("192.0.2.1");
    for (int i = 0; i < 100; i++)
        assert_int_equal(admission_check(&p, &a).outcome, ADMISSION_ALLOW);
    assert_int_equal(clients_count(c), 0);
    clients_free(c);
}

/* --- the HTTP mapping, through the router --- */

struct fixture {
    struct config *cfg;
    struct acl acl;
    struct clients *clients;
    struct handler_ctx hctx;
    struct client_id who;
    struct h1_session *s;
    struct dg_buf out;
};

static void on_wake(void *owner)
{
    (void)owner;
}

static int setup(void **state)
{
    dg_log_set_level(DG_LOG_ERR);
    struct fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    f->cfg = dt_config_new(NULL);
    char *deny[] = {"192.0.2.0/24"};
    assert_int_equal(acl_build(&f->acl, NULL, 0, deny, 1), 0);
    struct clients_config cc = {.query_rate = 1, .query_burst = 1, .max_entries = 100};
    f->clients = clients_new(&cc);
    assert_non_null(f->clients);
    f->hctx = (struct handler_ctx){.cfg = f->cfg, .acl = &f->acl, .clients = f->clients};
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    h1_session_free(f->s);
    dg_buf_free(&f->out);
    clients_free(f->clients);
    config_free(f->cfg);
    free(f);
    return 0;
}

/* A new connection from @p who, one request on it, its response as a C string. */
static const char *request_from(struct fixture *f, const char *who, const char *req)
{
    h1_session_free(f->s);
    f->out.len = 0;
    f->who = id_of(who);
    const struct h1_settings st = {.https = true, .client = &f->who};
    f->s = h1_session_new(&st, &f->hctx, on_wake, f);
    assert_non_null(f->s);
    assert_int_equal(h1_session_recv(f->s, (const uint8_t *)req, strlen(req)), 0);
    assert_int_equal(h1_session_send(f->s, &f->out, 1 << 20), 0);
    assert_int_equal(dg_buf_append(&f->out, "", 1), 0);
    f->out.len--;
    return (const char *)f->out.data;
}

/* A DoH GET whose dns= is not base64url: the handler answers 400 without any resolver. */
#define DOH_BAD "GET /dns-query?dns=!!! HTTP/1.1\r\nHost: doh.example\r\n\r\n"
#define SITE    "GET / HTTP/1.1\r\nHost: doh.example\r\n\r\n"

static void test_http_refused(void **state)
{
    struct fixture *f = *state;
    const char *o = request_from(f, "192.0.2.5", DOH_BAD);
    assert_non_null(strstr(o, "HTTP/1.1 403 "));
    assert_non_null(strstr(o, "\r\n\r\nthis resolver does not serve your network\n"));
    /* the same client, mapped, on a dual-stack listener */
    o = request_from(f, "::ffff:192.0.2.5", DOH_BAD);
    assert_non_null(strstr(o, "HTTP/1.1 403 "));
    /* the website stays public (acl-scope doh) */
    o = request_from(f, "192.0.2.5", SITE);
    assert_non_null(strstr(o, "HTTP/1.1 200 "));
}

static void test_http_rate_limited(void **state)
{
    struct fixture *f = *state;
    /* burst 1: the first query reaches the handler (its 400), the second gets 429 */
    const char *o = request_from(f, "198.51.100.7", DOH_BAD);
    assert_non_null(strstr(o, "HTTP/1.1 400 "));
    o = request_from(f, "198.51.100.7", DOH_BAD);
    assert_non_null(strstr(o, "HTTP/1.1 429 "));
    assert_non_null(strstr(o, "retry-after: 1\r\n"));
    assert_non_null(strstr(o, "\r\n\r\ntoo many queries from your address: slow down\n"));
    /* site pages take no token and are never limited */
    for (int i = 0; i < 3; i++) {
        o = request_from(f, "198.51.100.7", SITE);
        assert_non_null(strstr(o, "HTTP/1.1 200 "));
    }
    /* another client is not affected */
    o = request_from(f, "198.51.100.8", DOH_BAD);
    assert_non_null(strstr(o, "HTTP/1.1 400 "));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_no_policy),
        cmocka_unit_test(test_acl_refuses),
        cmocka_unit_test(test_rate_limited),
        cmocka_unit_test(test_acl_before_rate),
        cmocka_unit_test(test_no_query_rate),
        cmocka_unit_test_setup_teardown(test_http_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_http_rate_limited, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
