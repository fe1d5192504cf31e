/* tls: SNI name matching, and the store with the self-signed certificate (file pairs, reload
 * and SNI are driven end to end with real certificates in tests/integration/t_certs.sh). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "dohgate/config.h"
#include "dohgate/tls.h"

static void test_name_matches(void **state)
{
    (void)state;
    assert_true(tls_name_matches("doh.example.net", "doh.example.net"));
    assert_false(tls_name_matches("doh.example.net", "dog.example.net"));
    assert_false(tls_name_matches("doh.example.net", "a.doh.example.net"));
    assert_true(tls_name_matches("*.example.net", "doh.example.net"));
    /* one label only, and not the bare domain (RFC 6125 §6.4.3) */
    assert_false(tls_name_matches("*.example.net", "a.doh.example.net"));
    assert_false(tls_name_matches("*.example.net", "example.net"));
    assert_false(tls_name_matches("*.example.net", ".example.net"));
    assert_false(tls_name_matches("*.example.net", "doh.example.org"));
    assert_false(tls_name_matches("*.example.net", "doh"));
}

struct seen {
    int n;
    struct tls_cert_info first;
};

static void collect(const struct tls_cert_info *ci, void *arg)
{
    struct seen *s = arg;
    if (s->n++ == 0)
        s->first = *ci;
}

static void test_self_signed_store(void **state)
{
    (void)state;
    struct config *cfg = config_new();
    assert_non_null(cfg);
    char err[256], fp[128];
    assert_int_equal(config_set(cfg, "server-name", "doh.example.net", "t", 0, err, sizeof(err)),
                     0);
    struct tls_store *ts = tls_store_new(cfg, fp, err, sizeof(err));
    assert_non_null(ts);
    /* 32 bytes as colon-separated hex */
    assert_int_equal(strlen(fp), 32 * 3 - 1);

    struct seen s = {0};
    tls_store_each_cert(ts, collect, &s);
    assert_int_equal(s.n, 1);
    assert_string_equal(s.first.file, "self-signed");
    assert_string_equal(s.first.subject, "CN=doh.example.net");
    assert_string_equal(s.first.names, "doh.example.net,localhost");
    assert_string_equal(s.first.key_type, "ECDSA 256");
    time_t now = time(NULL);
    assert_true(s.first.not_after > now + 29 * 86400 && s.first.not_after <= now + 30 * 86400);

    /* no files: nothing to reload or watch */
    assert_int_equal(tls_store_reload(ts, err, sizeof(err)), TLS_RELOAD_NONE);
    assert_int_equal(tls_store_poll(ts, err, sizeof(err)), TLS_RELOAD_NONE);

    SSL *ssl = tls_store_ssl_new(ts);
    assert_non_null(ssl);
    tls_store_free(ts); /* the SSL keeps its context alive */
    assert_non_null(SSL_get_certificate(ssl));
    SSL_free(ssl);
    config_free(cfg);
}

static void test_missing_files(void **state)
{
    (void)state;
    struct config *cfg = config_new();
    assert_non_null(cfg);
    char err[512], fp[128];
    assert_int_equal(config_set(cfg, "cert", "/nonexistent/c.pem", "t", 0, err, sizeof(err)), 0);
    assert_int_equal(config_set(cfg, "key", "/nonexistent/k.pem", "t", 0, err, sizeof(err)), 0);
    assert_null(tls_store_new(cfg, fp, err, sizeof(err)));
    assert_non_null(strstr(err, "cannot load certificate chain /nonexistent/c.pem"));
    config_free(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_name_matches),
        cmocka_unit_test(test_self_signed_store),
        cmocka_unit_test(test_missing_files),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
