/*
 * Unit tests of the upstream TLS context and pins (uptls.h) that need no connection: the
 * pin-sha256 value against what the openssl CLI prints for the same certificate (the value
 * operators paste into the config), and the context's handling of `upstream-ca` (a file that is
 * missing or holds no certificate fails, naming the file). Handshakes, verification and
 * resumption are driven against real TLS servers by the integration tests.
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
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "dohgate/config.h"
#include "dohgate/uptls.h"

/* Self-signed P-256 certificate for dot.dohgate.test (SAN DNS:dot.dohgate.test, IP:127.0.0.1),
 * made with: openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes ... */
static const char cert_pem[] = "-----BEGIN CERTIFICATE-----\n"
                               "MIIBsDCCAVagAwIBAgIUAPpd6cDGtWqXeX2/hMnYmvR8rfEwCgYIKoZIzj0EAwIw\n"
                               "GzEZMBcGA1UEAwwQZG90LmRvaGdhdGUudGVzdDAgFw0yNjEyMDMxMDUxMDhaGA8y\n"
                               "MTI2MTEwOTEwNTEwOFowGzEZMBcGA1UEAwwQZG90LmRvaGdhdGUudGVzdDBZMBMG\n"
                               "ByqGSM49AgEGCCqGSM49AwEHA0IABK8/QULE0FWQGU20hi6Ol50dwCl4ZOABD5ET\n"
                               "NuF/TcJcbxvsZKHrjw6ER04/skt8Yqm9OUAStBZd9AI7d9MUmSSjdjB0MB0GA1Ud\n"
                               "DgQWBBT+7XAcYwRrnu/7XJhFjFL5NxUdJTAfBgNVHSMEGDAWgBT+7XAcYwRrnu/7\n"
                               "XJhFjFL5NxUdJTAPBgNVHRMBAf8EBTADAQH/MCEGA1UdEQQaMBiCEGRvdC5kb2hn\n"
                               "YXRlLnRlc3SHBH8AAAEwCgYIKoZIzj0EAwIDSAAwRQIga+pKI9Rc05LszjFvxPvp\n"
                               "hwWygJeb579/QT/GX51622kCIQCSrVUkksfgG+hI4XAyHt0r7LzVNR86R/io/vUv\n"
                               "W7ssHA==\n"
                               "-----END CERTIFICATE-----\n";

/* Its pin as the openssl CLI computes it (RFC 7858 appendix A, RFC 7469 §2.4):
 *   openssl x509 -in cert.pem -pubkey -noout | openssl pkey -pubin -outform der |
 *   openssl dgst -sha256 -binary | base64 */
static const char cert_pin_cli[] = "2X24c1f1LlnoID9QtLJZAB74sLUiKpmYx2cEVsRFte8=";
/* ... and what a wrong implementation hashing the whole certificate would give:
 *   openssl x509 -in cert.pem -outform der | openssl dgst -sha256 -binary | base64 */
static const char cert_der_sha256[] = "d6RVOthAor/9GMcBdIvzzYH1RGLB20mdLyJQNvtgkmI=";

static X509 *load_cert(void)
{
    BIO *b = BIO_new_mem_buf(cert_pem, (int)sizeof(cert_pem) - 1);
    assert_non_null(b);
    X509 *x = PEM_read_bio_X509(b, NULL, NULL, NULL);
    BIO_free(b);
    assert_non_null(x);
    return x;
}

static void b64(const uint8_t h[32], char out[45])
{
    assert_int_equal(EVP_EncodeBlock((unsigned char *)out, h, 32), 44);
}

static void test_pin_matches_openssl_cli(void **state)
{
    (void)state;
    X509 *x = load_cert();
    uint8_t h[32];
    char s[45];
    assert_int_equal(uptls_spki_sha256(x, h), 0);
    b64(h, s);
    assert_string_equal(s, cert_pin_cli);
    assert_string_not_equal(s, cert_der_sha256);
    X509_free(x);
}

/* The pin an operator writes in the config is the one the connection compares against. */
static void test_pin_as_configured(void **state)
{
    (void)state;
    char spec[200];
    snprintf(spec, sizeof(spec), "tls://127.0.0.1:853#dot.dohgate.test pin-sha256=%s",
             cert_pin_cli);
    struct dg_upstream up;
    const char *why = NULL;
    assert_int_equal(config_parse_upstream(spec, &up, &why), 0);
    assert_int_equal(up.n_pin, 1);
    X509 *x = load_cert();
    uint8_t h[32];
    assert_int_equal(uptls_spki_sha256(x, h), 0);
    assert_memory_equal(up.pin[0], h, 32);
    X509_free(x);
}

/* A certificate made here, with a key of its own: the pin is the SHA-256 of the DER
 * SubjectPublicKeyInfo of that key (i2d_PUBKEY, another way to the same bytes), not of the
 * certificate, and a second key gives a second pin. */
static X509 *make_cert(EVP_PKEY *k)
{
    X509 *x = X509_new();
    assert_non_null(x);
    assert_int_equal(X509_set_version(x, 2), 1);
    assert_int_equal(ASN1_INTEGER_set(X509_get_serialNumber(x), 1), 1);
    assert_non_null(X509_gmtime_adj(X509_getm_notBefore(x), 0));
    assert_non_null(X509_gmtime_adj(X509_getm_notAfter(x), 3600));
    X509_NAME *n = X509_get_subject_name(x);
    assert_int_equal(X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC,
                                                (const unsigned char *)"pin.dohgate.test", -1, -1,
                                                0),
                     1);
    assert_int_equal(X509_set_issuer_name(x, n), 1);
    assert_int_equal(X509_set_pubkey(x, k), 1);
    assert_true(X509_sign(x, k, EVP_sha256()) > 0);
    return x;
}

static void spki_sha256_of_key(EVP_PKEY *k, uint8_t out[32])
{
    unsigned char *der = NULL;
    int n = i2d_PUBKEY(k, &der);
    assert_true(n > 0);
    unsigned len = 0;
    assert_int_equal(EVP_Digest(der, (size_t)n, out, &len, EVP_sha256(), NULL), 1);
    assert_int_equal(len, 32);
    OPENSSL_free(der);
}

static void test_pin_generated(void **state)
{
    (void)state;
    EVP_PKEY *k1 = EVP_EC_gen("P-256");
    EVP_PKEY *k2 = EVP_EC_gen("P-384");
    assert_non_null(k1);
    assert_non_null(k2);
    X509 *x1 = make_cert(k1);
    X509 *x2 = make_cert(k2);
    uint8_t h1[32], h2[32], want[32];
    assert_int_equal(uptls_spki_sha256(x1, h1), 0);
    spki_sha256_of_key(k1, want);
    assert_memory_equal(h1, want, 32);
    assert_int_equal(uptls_spki_sha256(x2, h2), 0);
    spki_sha256_of_key(k2, want);
    assert_memory_equal(h2, want, 32);
    assert_memory_not_equal(h1, h2, 32);
    X509_free(x1);
    X509_free(x2);
    EVP_PKEY_free(k1);
    EVP_PKEY_free(k2);
}

static void test_pin_null(void **state)
{
    (void)state;
    uint8_t h[32];
    assert_int_equal(uptls_spki_sha256(NULL, h), -EINVAL);
}

/* ------------------------------------------------------------ upstream-ca */

static struct config *cfg_with_ca(const char *path)
{
    struct config *cfg = config_new();
    assert_non_null(cfg);
    char err[256];
    if (path)
        assert_int_equal(config_set(cfg, "upstream-ca", path, "t", 0, err, sizeof(err)), 0);
    return cfg;
}

static void test_ca_missing(void **state)
{
    (void)state;
    char dir[] = "/tmp/dg-uptls-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[128];
    snprintf(path, sizeof(path), "%s/no-such-ca.pem", dir);
    struct config *cfg = cfg_with_ca(path);
    char err[512] = "";
    struct uptls_ctx *ctx = uptls_ctx_new(cfg, err, sizeof(err));
    assert_null(ctx);
    assert_non_null(strstr(err, path)); /* the message names the file */
    config_free(cfg);
    assert_int_equal(rmdir(dir), 0);
}

static void test_ca_not_pem(void **state)
{
    (void)state;
    char path[] = "/tmp/dg-uptls-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    static const char junk[] = "this is no certificate\n";
    assert_int_equal(write(fd, junk, sizeof(junk) - 1), (ssize_t)sizeof(junk) - 1);
    close(fd);
    struct config *cfg = cfg_with_ca(path);
    char err[512] = "";
    assert_null(uptls_ctx_new(cfg, err, sizeof(err)));
    assert_non_null(strstr(err, path));
    config_free(cfg);
    unlink(path);
}

static void test_ca_loads(void **state)
{
    (void)state;
    char path[] = "/tmp/dg-uptls-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, cert_pem, sizeof(cert_pem) - 1), (ssize_t)sizeof(cert_pem) - 1);
    close(fd);
    struct config *cfg = cfg_with_ca(path);
    char err[512] = "";
    struct uptls_ctx *ctx = uptls_ctx_new(cfg, err, sizeof(err));
    assert_non_null(ctx);
    uptls_ctx_free(ctx);
    config_free(cfg);
    unlink(path);
    /* without upstream-ca: the system's store */
    cfg = cfg_with_ca(NULL);
    ctx = uptls_ctx_new(cfg, err, sizeof(err));
    assert_non_null(ctx);
    uptls_ctx_free(ctx);
    config_free(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pin_matches_openssl_cli),
        cmocka_unit_test(test_pin_as_configured),
        cmocka_unit_test(test_pin_generated),
        cmocka_unit_test(test_pin_null),
        cmocka_unit_test(test_ca_missing),
        cmocka_unit_test(test_ca_not_pem),
        cmocka_unit_test(test_ca_loads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
