/* tls: SNI name matching, the store with the self-signed certificate, and a file pair built
 * under failing allocations (file pairs, reload and SNI are driven end to end with real
 * certificates in tests/integration/t_certs.sh). */
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

#include <cmocka.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

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

/* Run a handshake between @p srv and a fresh client offering @p alpn (wire format, NULL: no
 * ALPN) through a memory BIO pair. @return true when both sides completed it; @p alert gets
 * the reason of the client's first error (0 if none). */
static bool handshake(SSL *srv, const unsigned char *alpn, unsigned alpn_len, int *alert)
{
    SSL_CTX *cctx = SSL_CTX_new(TLS_client_method());
    assert_non_null(cctx);
    SSL *cli = SSL_new(cctx);
    assert_non_null(cli);
    if (alpn)
        assert_int_equal(SSL_set_alpn_protos(cli, alpn, alpn_len), 0);
    BIO *b_srv, *b_cli;
    assert_int_equal(BIO_new_bio_pair(&b_srv, 0, &b_cli, 0), 1);
    SSL_set_bio(srv, b_srv, b_srv);
    SSL_set_bio(cli, b_cli, b_cli);
    SSL_set_accept_state(srv);
    SSL_set_connect_state(cli);
    *alert = 0;
    bool cdone = false, sdone = false, cfail = false, sfail = false;
    ERR_clear_error();
    /* The client goes once more after the server failed, to read its alert. */
    for (int i = 0; i < 50 && !(cdone && sdone) && !cfail; i++) {
        int rc = SSL_do_handshake(cli);
        if (rc == 1) {
            cdone = true;
        } else if (SSL_get_error(cli, rc) != SSL_ERROR_WANT_READ) {
            *alert = ERR_GET_REASON(ERR_peek_error());
            cfail = true;
        }
        if (sfail || sdone)
            continue;
        ERR_clear_error();
        rc = SSL_do_handshake(srv);
        if (rc == 1)
            sdone = true;
        else if (SSL_get_error(srv, rc) != SSL_ERROR_WANT_READ)
            sfail = true;
        ERR_clear_error();
    }
    ERR_clear_error();
    SSL_free(cli);
    SSL_CTX_free(cctx);
    return cdone && sdone && !cfail && !sfail;
}

/* ALPN on the DoT listener (tls_ssl_set_dot): "dot" selected, an offer without it refused with
 * the no_application_protocol alert, no ALPN accepted; the HTTPS listener keeps its rules. */
static void test_alpn_dot(void **state)
{
    (void)state;
    struct config *cfg = config_new();
    assert_non_null(cfg);
    char err[256], fp[128];
    struct tls_store *ts = tls_store_new(cfg, fp, err, sizeof(err));
    assert_non_null(ts);
    static const unsigned char dot[] = "\x03"
                                       "dot";
    static const unsigned char h2_h1[] = "\x02h2\x08http/1.1";
    static const unsigned char h2_dot[] = "\x02h2\x03"
                                          "dot";
    struct {
        bool mark_dot;
        const unsigned char *alpn;
        unsigned len;
        bool ok;
        enum tls_alpn got;
    } cases[] = {
        {true, dot, sizeof(dot) - 1, true, TLS_ALPN_DOT},
        {true, h2_dot, sizeof(h2_dot) - 1, true, TLS_ALPN_DOT},
        {true, NULL, 0, true, TLS_ALPN_NONE},
        {true, h2_h1, sizeof(h2_h1) - 1, false, TLS_ALPN_NONE},
        {false, dot, sizeof(dot) - 1, true, TLS_ALPN_NONE},
        {false, h2_dot, sizeof(h2_dot) - 1, true, TLS_ALPN_H2},
        {false, h2_h1, sizeof(h2_h1) - 1, true, TLS_ALPN_H2},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        SSL *srv = tls_store_ssl_new(ts);
        assert_non_null(srv);
        if (cases[i].mark_dot)
            assert_int_equal(tls_ssl_set_dot(srv), 0);
        int alert = 0;
        bool ok = handshake(srv, cases[i].alpn, cases[i].len, &alert);
        if (ok != cases[i].ok)
            fail_msg("case %zu: handshake %s", i, ok ? "completed" : "failed");
        if (ok)
            assert_int_equal(tls_alpn_get(srv), cases[i].got);
        else
            assert_int_equal(alert, SSL_R_TLSV1_ALERT_NO_APPLICATION_PROTOCOL);
        SSL_free(srv);
    }
    tls_store_free(ts);
    config_free(cfg);
}

/*
 * Allocation hooks. OpenSSL's allocations go through ossl_*() (installed first thing in main)
 * and can be failed one at a time. The C library allocations of the core library (tls.c's
 * names, tables, the store) are counted: this test is linked with -Wl,--wrap for malloc, calloc,
 * realloc, strdup, strndup and free (tests/CMakeLists.txt), so its own and dohgatecore's calls
 * come here, while OpenSSL's (a shared library) and ours on its behalf do not.
 */
void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t n);
char *__real_strdup(const char *s);
char *__real_strndup(const char *s, size_t n);
void __real_free(void *p);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t size);
void *__wrap_realloc(void *p, size_t n);
char *__wrap_strdup(const char *s);
char *__wrap_strndup(const char *s, size_t n);
void __wrap_free(void *p);

static long libc_blocks; /* blocks allocated and not freed yet */

static void *counted(void *p)
{
    if (p)
        libc_blocks++;
    return p;
}

void *__wrap_malloc(size_t n)
{
    return counted(__real_malloc(n));
}

void *__wrap_calloc(size_t n, size_t size)
{
    return counted(__real_calloc(n, size));
}

void *__wrap_realloc(void *p, size_t n)
{
    void *q = __real_realloc(p, n);
    if (!p && q)
        libc_blocks++;
    return q;
}

char *__wrap_strdup(const char *s)
{
    return counted(__real_strdup(s));
}

char *__wrap_strndup(const char *s, size_t n)
{
    return counted(__real_strndup(s, n));
}

void __wrap_free(void *p)
{
    if (p)
        libc_blocks--;
    __real_free(p);
}

static unsigned long ossl_fail_at; /* 0: never fail */
static unsigned long ossl_calls;

static void *ossl_malloc(size_t n, const char *file, int line)
{
    (void)file, (void)line;
    if (ossl_fail_at && ++ossl_calls == ossl_fail_at)
        return NULL;
    return __real_malloc(n);
}

static void *ossl_realloc(void *p, size_t n, const char *file, int line)
{
    (void)file, (void)line;
    if (ossl_fail_at && ++ossl_calls == ossl_fail_at)
        return NULL;
    return __real_realloc(p, n);
}

static void ossl_free(void *p, const char *file, int line)
{
    (void)file, (void)line;
    __real_free(p);
}

/* A self-signed ECDSA certificate with several DNS names, and its key, as PEM files. */
static void write_pair(const char *cf, const char *kf)
{
    EVP_PKEY *key = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    assert_non_null(key);
    assert_non_null(x);
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400);
    X509_set_pubkey(x, key);
    X509_NAME *xn = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(xn, "CN", MBSTRING_ASC, (const unsigned char *)"a.example", -1, -1,
                               0);
    X509_set_issuer_name(x, xn);
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, x, x, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(
        NULL, &ctx, NID_subject_alt_name,
        "DNS:a.example,DNS:b.example,DNS:c.example,DNS:d.example,DNS:e.example");
    assert_non_null(ext);
    assert_int_equal(X509_add_ext(x, ext, -1), 1);
    X509_EXTENSION_free(ext);
    assert_true(X509_sign(x, key, EVP_sha256()) > 0);
    FILE *f = fopen(cf, "w");
    assert_non_null(f);
    assert_int_equal(PEM_write_X509(f, x), 1);
    fclose(f);
    f = fopen(kf, "w");
    assert_non_null(f);
    assert_int_equal(PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL), 1);
    fclose(f);
    X509_free(x);
    EVP_PKEY_free(key);
}

/* Build a store with every OpenSSL allocation failed in turn (the first N for which nothing
 * fails ends the loop): whichever step fails, the context of an SNI group included (whose names
 * once leaked), nothing tls.c allocated may stay behind. @return the failed builds. */
static size_t failing_builds(const struct config *cfg)
{
    char err[512], fp[128];
    size_t failures = 0;
    for (unsigned long n = 1;; n++) {
        long blocks = libc_blocks;
        ossl_calls = 0;
        ossl_fail_at = n;
        struct tls_store *ts = tls_store_new(cfg, fp, err, sizeof(err));
        ossl_fail_at = 0;
        ERR_clear_error();
        bool injected = ossl_calls >= n;
        if (ts)
            tls_store_free(ts);
        else
            failures++;
        if (libc_blocks != blocks)
            fail_msg("OpenSSL allocation #%lu failed (%s): %ld blocks left behind", n,
                     ts ? "store built" : err, libc_blocks - blocks);
        if (!injected)
            break;
    }
    return failures;
}

static void test_failed_allocations_leak_nothing(void **state)
{
    (void)state;
    char dir[] = "/tmp/dohgate-tls-XXXXXX", cf[64], kf[64], err[256];
    assert_non_null(mkdtemp(dir));
    snprintf(cf, sizeof(cf), "%s/cert.pem", dir);
    snprintf(kf, sizeof(kf), "%s/key.pem", dir);
    write_pair(cf, kf);
    struct config *cfg = config_new();
    assert_non_null(cfg);
    assert_int_equal(config_set(cfg, "cert", cf, "t", 0, err, sizeof(err)), 0);
    assert_int_equal(config_set(cfg, "key", kf, "t", 0, err, sizeof(err)), 0);
    assert_true(failing_builds(cfg) > 0);
    config_free(cfg);
    unlink(cf);
    unlink(kf);
    rmdir(dir);
}

/* The ACME client's pair in acme-state-dir: absent at start (self-signed), served once written
 * (SIGUSR2's reload and the file check), self-signed again when it goes away. */
static void test_acme_pair(void **state)
{
    (void)state;
    char dir[] = "/tmp/dohgate-tls-XXXXXX", cf[64], kf[64], err[512], fp[128];
    assert_non_null(mkdtemp(dir));
    snprintf(cf, sizeof(cf), "%s/cert.pem", dir);
    snprintf(kf, sizeof(kf), "%s/key.pem", dir);
    struct config *cfg = config_new();
    assert_non_null(cfg);
    assert_int_equal(config_set(cfg, "acme-domain", "a.example", "t", 0, err, sizeof(err)), 0);
    assert_int_equal(config_set(cfg, "acme-state-dir", dir, "t", 0, err, sizeof(err)), 0);
    struct tls_store *ts = tls_store_new(cfg, fp, err, sizeof(err));
    assert_non_null(ts);
    assert_int_equal(strlen(fp), 32 * 3 - 1); /* self-signed until the first issuance */
    struct seen s = {0};
    tls_store_each_cert(ts, collect, &s);
    assert_string_equal(s.first.file, "self-signed");
    assert_true(tls_store_needs_tick(ts)); /* the pair's files are watched before they exist */
    assert_int_equal(tls_store_poll(ts, err, sizeof(err)), TLS_RELOAD_NONE);

    write_pair(cf, kf);
    assert_int_equal(tls_store_reload(ts, err, sizeof(err)), TLS_RELOAD_DONE);
    memset(&s, 0, sizeof(s));
    tls_store_each_cert(ts, collect, &s);
    assert_int_equal(s.n, 1);
    assert_string_equal(s.first.file, cf);
    assert_string_equal(s.first.subject, "CN=a.example");

    /* a renewal seen by the file check: loaded once it looked the same twice */
    sleep(1); /* a new mtime even on coarse clocks */
    write_pair(cf, kf);
    assert_int_equal(tls_store_poll(ts, err, sizeof(err)), TLS_RELOAD_NONE);
    assert_int_equal(tls_store_poll(ts, err, sizeof(err)), TLS_RELOAD_DONE);

    /* a pair that does not load (a crash between the two renames, an edit): left out, so the
     * start and the reloads go on (the ACME client orders again) */
    FILE *f = fopen(cf, "w");
    assert_non_null(f);
    fputs("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n", f);
    fclose(f);
    assert_int_equal(tls_store_reload(ts, err, sizeof(err)), TLS_RELOAD_DONE);
    memset(&s, 0, sizeof(s));
    tls_store_each_cert(ts, collect, &s);
    assert_string_equal(s.first.file, "self-signed");
    struct tls_store *ts2 = tls_store_new(cfg, fp, err, sizeof(err));
    assert_non_null(ts2);
    tls_store_free(ts2);

    /* gone (state dir wiped): back to a self-signed certificate, not a failure */
    unlink(cf);
    unlink(kf);
    assert_int_equal(tls_store_reload(ts, err, sizeof(err)), TLS_RELOAD_DONE);
    memset(&s, 0, sizeof(s));
    tls_store_each_cert(ts, collect, &s);
    assert_string_equal(s.first.file, "self-signed");
    tls_store_free(ts);
    config_free(cfg);
    rmdir(dir);
}

int main(void)
{
    /* before anything allocates through OpenSSL */
    if (!CRYPTO_set_mem_functions(ossl_malloc, ossl_realloc, ossl_free))
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_name_matches),
        cmocka_unit_test(test_self_signed_store),
        cmocka_unit_test(test_missing_files),
        cmocka_unit_test(test_alpn_dot),
        cmocka_unit_test(test_failed_allocations_leak_nothing),
        cmocka_unit_test(test_acme_pair),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
