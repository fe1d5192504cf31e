/*
 * Unit tests for doh.h: every status doh_decode() can return, the RFC 8484 examples, and path
 * matching with query strings.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "dohgate/doh.h"

/* RFC 8484 §4.1.1: the www.example.com A query with ID 0, as GET and as POST body. */
static const uint8_t example_query[] = {
    0x00, 0x00, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x03, 'w',  'w',  'w',  0x07, 'e',  'x',  'a',  'm',  'p',
    'l',  'e',  0x03, 'c',  'o',  'm',  0x00, 0x00, 0x01, 0x00, 0x01,
};
#define EXAMPLE_B64 "AAABAAABAAAAAAAAA3d3dwdleGFtcGxlA2NvbQAAAQAB"

struct result {
    int status;
    const char *why;
    struct dg_buf out;
};

static struct result run(const char *method, const char *path, const char *ct, const void *body,
                         size_t body_len)
{
    struct doh_request req = {
        .method = method,
        .path = path,
        .content_type = ct,
        .body = body,
        .body_len = body_len,
    };
    struct result r = {.why = NULL};
    r.status = doh_decode(&req, &r.out, &r.why);
    if (r.status != 0) {
        /* a refusal always explains itself and hands back nothing */
        assert_non_null(r.why);
        assert_true(strlen(r.why) > 0);
        assert_int_equal(r.out.len, 0);
    }
    return r;
}

static void expect_status(const char *method, const char *path, const char *ct, const void *body,
                          size_t body_len, int status, const char *why)
{
    struct result r = run(method, path, ct, body, body_len);
    assert_int_equal(r.status, status);
    if (why)
        assert_string_equal(r.why, why);
    dg_buf_free(&r.out);
}

static void expect_example(const char *method, const char *path, const char *ct, const void *body,
                           size_t body_len)
{
    struct result r = run(method, path, ct, body, body_len);
    assert_int_equal(r.status, 0);
    assert_int_equal(r.out.len, sizeof(example_query));
    assert_memory_equal(r.out.data, example_query, sizeof(example_query));
    dg_buf_free(&r.out);
}

static void test_get_rfc8484_example(void **state)
{
    expect_example("GET", "/dns-query?dns=" EXAMPLE_B64, NULL, NULL, 0);
    /* other parameters around it are ignored */
    expect_example("GET", "/dns-query?ct=application/dns-message&dns=" EXAMPLE_B64, NULL, NULL, 0);
    expect_example("GET", "/dns-query?dns=" EXAMPLE_B64 "&x=1&y", NULL, NULL, 0);
    expect_example("GET", "/dns-query?a=&&dns=" EXAMPLE_B64 "&", NULL, NULL, 0);
    /* a GET carrying a body or a content-type: both are irrelevant */
    expect_example("GET", "/dns-query?dns=" EXAMPLE_B64, "text/plain", "xx", 2);
}

static void test_get_missing(void **state)
{
    const char *missing = "missing dns parameter";
    expect_status("GET", "/dns-query", NULL, NULL, 0, 400, missing);
    expect_status("GET", "/dns-query?", NULL, NULL, 0, 400, missing);
    expect_status("GET", "/dns-query?foo=bar", NULL, NULL, 0, 400, missing);
    /* the name must be exactly "dns" */
    expect_status("GET", "/dns-query?dnsx=" EXAMPLE_B64, NULL, NULL, 0, 400, missing);
    expect_status("GET", "/dns-query?xdns=" EXAMPLE_B64, NULL, NULL, 0, 400, missing);
    expect_status("GET", "/dns-query?DNS=" EXAMPLE_B64, NULL, NULL, 0, 400, missing);
    expect_status("GET", "/dns-query?dn=" EXAMPLE_B64, NULL, NULL, 0, 400, missing);
    expect_status("GET", NULL, NULL, NULL, 0, 400, missing);
}

static void test_get_twice_or_empty(void **state)
{
    expect_status("GET", "/dns-query?dns=" EXAMPLE_B64 "&dns=" EXAMPLE_B64, NULL, NULL, 0, 400,
                  "dns parameter given more than once");
    expect_status("GET", "/dns-query?dns=&dns=" EXAMPLE_B64, NULL, NULL, 0, 400,
                  "dns parameter given more than once");
    expect_status("GET", "/dns-query?dns=", NULL, NULL, 0, 400, "empty dns parameter");
    expect_status("GET", "/dns-query?dns", NULL, NULL, 0, 400, "empty dns parameter");
    expect_status("GET", "/dns-query?dns=&x=1", NULL, NULL, 0, 400, "empty dns parameter");
}

static void test_get_not_base64url(void **state)
{
    const char *bad = "dns parameter is not base64url";
    /* padding (RFC 8484 §6: no padding) */
    expect_status("GET", "/dns-query?dns=AAABAAABAAAAAAAAA3d3dwdleGFtcGxlA2NvbQAAAQAB==", NULL,
                  NULL, 0, 400, bad);
    expect_status("GET", "/dns-query?dns=AA==", NULL, NULL, 0, 400, bad);
    /* the standard alphabet, percent-encoding, spaces */
    expect_status("GET", "/dns-query?dns=AA+B", NULL, NULL, 0, 400, bad);
    expect_status("GET", "/dns-query?dns=AA/B", NULL, NULL, 0, 400, bad);
    expect_status("GET", "/dns-query?dns=AA%2B", NULL, NULL, 0, 400, bad);
    expect_status("GET", "/dns-query?dns=AA B", NULL, NULL, 0, 400, bad);
    /* a length no encoder produces, and non-zero trailing bits */
    expect_status("GET", "/dns-query?dns=AAAAA", NULL, NULL, 0, 400, bad);
    expect_status("GET", "/dns-query?dns=AB", NULL, NULL, 0, 400, bad);
}

static void test_get_uri_length(void **state)
{
    /* exactly DOH_MAX_URI is accepted; one more is 414, checked before anything else */
    const char prefix[] = "/dns-query?dns=" EXAMPLE_B64 "&pad=";
    char *path = malloc(DOH_MAX_URI + 2);
    assert_non_null(path);
    memcpy(path, prefix, sizeof(prefix) - 1);
    memset(path + sizeof(prefix) - 1, 'p', DOH_MAX_URI - (sizeof(prefix) - 1));
    path[DOH_MAX_URI] = '\0';
    expect_example("GET", path, NULL, NULL, 0);
    path[DOH_MAX_URI] = 'p';
    path[DOH_MAX_URI + 1] = '\0';
    expect_status("GET", path, NULL, NULL, 0, 414, NULL);

    /* 414 wins over a missing parameter */
    memset(path, 'a', DOH_MAX_URI + 1);
    path[0] = '/';
    expect_status("GET", path, NULL, NULL, 0, 414, NULL);
    free(path);
}

static void test_post(void **state)
{
    const char *ct = DOH_CONTENT_TYPE;
    expect_example("POST", "/dns-query", ct, example_query, sizeof(example_query));
    expect_example("POST", "/dns-query", "application/dns-message; charset=x", example_query,
                   sizeof(example_query));
    expect_example("POST", "/dns-query", "Application/DNS-Message", example_query,
                   sizeof(example_query));
    expect_example("POST", "/dns-query", " application/dns-message ;q=1", example_query,
                   sizeof(example_query));
    expect_example("POST", "/dns-query", "application/dns-message\t", example_query,
                   sizeof(example_query));
    /* the query string of a POST is not looked at */
    expect_example("POST", "/dns-query?dns=AA==", ct, example_query, sizeof(example_query));
}

static void test_post_content_type(void **state)
{
    const char *want = "content-type must be application/dns-message";
    const uint8_t *b = example_query;
    size_t n = sizeof(example_query);
    expect_status("POST", "/dns-query", NULL, b, n, 415, want);
    expect_status("POST", "/dns-query", "", b, n, 415, want);
    expect_status("POST", "/dns-query", "application/json", b, n, 415, want);
    expect_status("POST", "/dns-query", "application/dns-messagex", b, n, 415, want);
    expect_status("POST", "/dns-query", "application/dns-message,text/plain", b, n, 415, want);
    expect_status("POST", "/dns-query", "application/dns", b, n, 415, want);
    expect_status("POST", "/dns-query", "application/dns-udpwireformat", b, n, 415, want);
    /* 415 is decided before the body is looked at */
    expect_status("POST", "/dns-query", "text/plain", NULL, 0, 415, want);
}

static void test_post_body_size(void **state)
{
    uint8_t *big = calloc(1, DOH_MAX_BODY + 1);
    assert_non_null(big);
    struct result r = run("POST", "/dns-query", DOH_CONTENT_TYPE, big, DOH_MAX_BODY);
    assert_int_equal(r.status, 0);
    assert_int_equal(r.out.len, DOH_MAX_BODY);
    dg_buf_free(&r.out);
    expect_status("POST", "/dns-query", DOH_CONTENT_TYPE, big, DOH_MAX_BODY + 1, 413, NULL);
    free(big);

    expect_status("POST", "/dns-query", DOH_CONTENT_TYPE, example_query, 0, 400, NULL);
    expect_status("POST", "/dns-query", DOH_CONTENT_TYPE, NULL, 0, 400, NULL);
    expect_status("POST", "/dns-query", DOH_CONTENT_TYPE, NULL, 5, 400, NULL);
}

static void test_methods(void **state)
{
    static const char *const methods[] = {"HEAD", "PUT",  "OPTIONS", "DELETE", "PATCH",
                                          "get",  "post", "GETX",    "",       "CONNECT"};
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
        expect_status(methods[i], "/dns-query?dns=" EXAMPLE_B64, DOH_CONTENT_TYPE, example_query,
                      sizeof(example_query), 405, "method not allowed");
    }
    expect_status(NULL, "/dns-query", NULL, NULL, 0, 405, "method not allowed");
    assert_string_equal(DOH_ALLOW, "GET, POST");
}

static void test_why_optional(void **state)
{
    struct doh_request req = {.method = "PUT", .path = "/dns-query"};
    struct dg_buf out = {0};
    assert_int_equal(doh_decode(&req, &out, NULL), 405);
    req.method = "GET";
    req.path = "/dns-query?dns=" EXAMPLE_B64;
    assert_int_equal(doh_decode(&req, &out, NULL), 0);
    assert_int_equal(out.len, sizeof(example_query));
    dg_buf_free(&out);
}

/* /dns-query/ID: the client ID of a per-client policy (policy.h) */
static void test_path_id(void **state)
{
    (void)state;
    char p1[] = "/dns-query";
    char p2[] = "/q";
    char *paths[] = {p1, p2};
    const char *id = NULL;
    size_t n = 0;
    assert_true(doh_path_id("/dns-query/kids-tablet", paths, 2, &id, &n));
    assert_int_equal(n, 11);
    assert_memory_equal(id, "kids-tablet", 11);
    assert_true(doh_path_id("/q/A_1?dns=" EXAMPLE_B64, paths, 2, &id, &n));
    assert_int_equal(n, 3);
    assert_memory_equal(id, "A_1", 3);
    char longest[80] = "/dns-query/";
    memset(longest + 11, 'x', 63);
    assert_true(doh_path_id(longest, paths, 2, &id, &n));
    assert_int_equal(n, 63);
    longest[11 + 63] = 'x';
    assert_false(doh_path_id(longest, paths, 2, &id, &n)); /* 64 characters */
    assert_false(doh_path_id("/dns-query", paths, 2, &id, &n));
    assert_false(doh_path_id("/dns-query/", paths, 2, &id, &n));
    assert_false(doh_path_id("/dns-query/a/b", paths, 2, &id, &n));
    assert_false(doh_path_id("/dns-query/..", paths, 2, &id, &n));
    assert_false(doh_path_id("/dns-query/%31", paths, 2, &id, &n));
    assert_false(doh_path_id("/dns-queryx/a", paths, 2, &id, &n));
    assert_false(doh_path_id("/x/dns-query/a", paths, 2, &id, &n));
    assert_false(doh_path_id(NULL, paths, 2, &id, &n));
}

static void test_path_match(void **state)
{
    char p1[] = "/dns-query";
    char p2[] = "/resolve";
    char *paths[] = {p1, p2};
    assert_true(doh_path_match("/dns-query", paths, 2));
    assert_true(doh_path_match("/dns-query?dns=" EXAMPLE_B64, paths, 2));
    assert_true(doh_path_match("/dns-query?", paths, 2));
    assert_true(doh_path_match("/resolve?name=example.com", paths, 2));
    assert_false(doh_path_match("/resolve", paths, 1));
    assert_false(doh_path_match("/dns-query/", paths, 2));
    assert_false(doh_path_match("/dns-queryx?dns=AA", paths, 2));
    assert_false(doh_path_match("/dns-quer", paths, 2));
    assert_false(doh_path_match("/DNS-QUERY", paths, 2));
    assert_false(doh_path_match("/dns-query#x", paths, 2));
    assert_false(doh_path_match("/x/dns-query", paths, 2));
    assert_false(doh_path_match("?/dns-query", paths, 2));
    assert_false(doh_path_match("", paths, 2));
    assert_false(doh_path_match("/", paths, 2));
    assert_false(doh_path_match("/dns-query", paths, 0));
    assert_false(doh_path_match(NULL, paths, 2));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_get_rfc8484_example),
        cmocka_unit_test(test_get_missing),
        cmocka_unit_test(test_get_twice_or_empty),
        cmocka_unit_test(test_get_not_base64url),
        cmocka_unit_test(test_get_uri_length),
        cmocka_unit_test(test_post),
        cmocka_unit_test(test_post_content_type),
        cmocka_unit_test(test_post_body_size),
        cmocka_unit_test(test_methods),
        cmocka_unit_test(test_why_optional),
        cmocka_unit_test(test_path_match),
        cmocka_unit_test(test_path_id),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
