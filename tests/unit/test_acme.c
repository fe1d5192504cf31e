/* acme / acmemsg: the parsers of the CA's JSON (directory, problem documents, order,
 * authorization, ARI with RFC 9773's example and its variations), the renewal-time choice (ARI
 * window draw, 1/3 rule, test knob), the backoff bounds over 12 failures, Retry-After, the
 * encodings (JWS ES256 verified with OpenSSL from its own JWK, EAB HS256, RFC 7638's thumbprint
 * example, RFC 9773's certID example, DER to raw ECDSA), and acme_start()'s state dir and a
 * prompt acme_stop() while the CA is unreachable.
 *
 * pebble 2.4 (Debian) has no renewalInfo: ARI is tested here only, against recorded answers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cmocka.h>
#include <jansson.h>
#include <openssl/core_names.h>
#include <openssl/ecdsa.h>
#include <openssl/hmac.h>
#include <openssl/param_build.h>
#include <openssl/x509v3.h>

#include "dohgate/acme.h"
#include "dohgate/acmemsg.h"
#include "dohgate/config.h"
#include "dohgate/util.h"

#define J(s) (s), strlen(s)

/* RFC 9773 §4.2's example answer. */
static const char ari_example[] = "{\"suggestedWindow\":{\"start\":\"2025-01-02T04:00:00Z\","
                                  "\"end\":\"2025-01-03T04:00:00Z\"},"
                                  "\"explanationURL\":\"https://acme.example.com/docs/ari\"}";

static void test_ari_example(void **state)
{
    struct acme_window w;
    assert_int_equal(acmemsg_ari_parse(J(ari_example), &w), 0);
    assert_int_equal((long long)w.start, 1735790400LL); /* 2025-01-02T04:00:00Z */
    assert_int_equal((long long)(w.end - w.start), 86400);
}

static void test_ari_variations(void **state)
{
    struct acme_window w = {1, 2};
    /* offsets and fractions are RFC 3339 too */
    assert_int_equal(acmemsg_ari_parse(J("{\"suggestedWindow\":{\"start\":\"2025-01-02T05:00:00."
                                         "5+01:00\",\"end\":\"2025-01-03T04:00:00z\"}}"),
                                       &w),
                     0);
    assert_int_equal((long long)w.start, 1735790400LL);
    const char *bad[] = {
        "{\"suggestedWindow\":{\"start\":\"2025-01-02T04:00:00Z\"}}", /* no end */
        "{\"suggestedWindow\":{\"end\":\"2025-01-02T04:00:00Z\"}}",   /* no start */
        "{\"explanationURL\":\"https://x.example/\"}",                /* no window */
        "{\"suggestedWindow\":{\"start\":\"2025-01-03T04:00:00Z\",\"end\":\"2025-01-02T04:00:00Z\"}"
        "}",
        "{\"suggestedWindow\":{\"start\":\"2025-01-02T04:00:00Z\",\"end\":\"2025-01-02T04:00:00Z\"}"
        "}",
        "{\"suggestedWindow\":{\"start\":\"2025-01-02 "
        "04:00:00\",\"end\":\"2025-01-03T04:00:00Z\"}}",
        "{\"suggestedWindow\":{\"start\":1735790400,\"end\":1735876800}}",
        "{\"suggestedWindow\":{\"start\":\"2025-13-02T04:00:00Z\",\"end\":\"2025-01-03T04:00:00Z\"}"
        "}",
        "[]",
        "{\"suggestedWindow\":",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        w.start = 1;
        w.end = 2;
        assert_int_equal(acmemsg_ari_parse(J(bad[i]), &w), -1);
        assert_int_equal((long long)w.start, 1); /* untouched */
    }
}

static void test_renew_window(void **state)
{
    struct acme_window w;
    assert_int_equal(acmemsg_ari_parse(J(ari_example), &w), 0);
    time_t before = w.start - 1000;
    /* draw 0 → start, draw near 1 → just before end, every draw in [start, end) */
    assert_int_equal(acmemsg_renew_at(0, 0, &w, 0.0, before, 0), w.start);
    assert_int_equal(acmemsg_renew_at(0, 0, &w, 0.5, before, 0), w.start + 43200);
    time_t last = acmemsg_renew_at(0, 0, &w, 0.9999999, before, 0);
    assert_true(last < w.end && last >= w.end - 1);
    for (int i = 0; i < 1000; i++) {
        time_t t = acmemsg_renew_at(0, 0, &w, (double)i / 1000.0, before, 0);
        assert_true(t >= w.start && t < w.end);
    }
    /* a window already over: now */
    assert_int_equal(acmemsg_renew_at(0, 0, &w, 0.5, w.end + 5, 0), w.end + 5);
    /* an out-of-range draw is treated as 0, not outside the window */
    assert_int_equal(acmemsg_renew_at(0, 0, &w, 7.0, before, 0), w.start);
}

static void test_renew_third(void **state)
{
    time_t nb = 1700000000, na = nb + 90 * 86400;
    assert_int_equal(acmemsg_renew_at(nb, na, NULL, 0.3, nb, 0), nb + 60 * 86400);
    /* 6-day certificates: 2 days before the end */
    assert_int_equal(acmemsg_renew_at(nb, nb + 6 * 86400, NULL, 0.3, nb, 0), nb + 4 * 86400);
    /* the test knob wins over both */
    struct acme_window w = {nb + 10, nb + 20};
    assert_int_equal(acmemsg_renew_at(nb, na, &w, 0.3, nb, 30), nb + 30);
    assert_int_equal(acmemsg_renew_at(nb, na, NULL, 0.3, nb, 30), nb + 30);
}

static void test_backoff(void **state)
{
    long prev_max = 0;
    for (unsigned n = 1; n <= 12; n++) {
        long d = 60L << (n - 1);
        if (d > ACMEMSG_BACKOFF_MAX_S)
            d = ACMEMSG_BACKOFF_MAX_S;
        long lo = acmemsg_backoff(n, 60, 0.0, 0), hi = acmemsg_backoff(n, 60, 0.999999, 0);
        assert_int_equal(lo, d / 2);
        assert_true(hi <= d && hi >= d - 1);
        for (int i = 0; i < 50; i++) {
            long v = acmemsg_backoff(n, 60, (double)i / 50.0, 0);
            assert_true(v >= d / 2 && v <= d);
        }
        assert_true(hi >= prev_max || hi == ACMEMSG_BACKOFF_MAX_S - 1 ||
                    d == ACMEMSG_BACKOFF_MAX_S);
        prev_max = hi;
    }
    /* capped at 6 h from the 10th failure on (60 * 2^9 > 21600) */
    assert_true(acmemsg_backoff(12, 60, 0.999999, 0) <= 6 * 3600);
    assert_int_equal(acmemsg_backoff(12, 60, 0.0, 0), 3 * 3600);
    assert_int_equal(acmemsg_backoff(1000, 60, 0.0, 0), 3 * 3600); /* no overflow */
    /* never less than the CA's Retry-After */
    assert_int_equal(acmemsg_backoff(1, 60, 0.0, 3600), 3600);
    assert_int_equal(acmemsg_backoff(1, 60, 0.0, 10), 30);
    /* the test knob's base: doubling kept */
    assert_int_equal(acmemsg_backoff(3, 2, 0.0, 0), 4);
}

static void test_retry_after(void **state)
{
    assert_int_equal(acmemsg_retry_after("120", 0), 120);
    assert_int_equal(acmemsg_retry_after(" 7 ", 0), 7);
    time_t now = 784111777 - 60; /* Sun, 06 Nov 1994 08:49:37 GMT minus a minute */
    assert_int_equal(acmemsg_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now), 60);
    assert_int_equal(acmemsg_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now + 600), 0);
    assert_int_equal(acmemsg_retry_after("soon", 0), -1);
    assert_int_equal(acmemsg_retry_after("12abc", 0), -1);
    assert_int_equal(acmemsg_retry_after("", 0), -1);
    assert_int_equal(acmemsg_retry_after(NULL, 0), -1);
}

static void test_problem(void **state)
{
    struct acme_problem p;
    assert_int_equal(
        acmemsg_problem_parse(J("{\"type\":\"urn:ietf:params:acme:error:rateLimited\","
                                "\"detail\":\"too many certificates\\nfor example.org\","
                                "\"status\":429,\"subproblems\":[{\"type\":\"x\"}]}"),
                              &p),
        0);
    assert_true(acmemsg_problem_is(&p, "rateLimited"));
    assert_false(acmemsg_problem_is(&p, "badNonce"));
    assert_int_equal(p.status, 429);
    assert_string_equal(p.detail, "too many certificates?for example.org"); /* one log line */
    assert_int_equal(
        acmemsg_problem_parse(J("{\"type\":\"urn:ietf:params:acme:error:badNonce\","
                                "\"detail\":\"JWS has an invalid anti-replay nonce\"}"),
                              &p),
        0);
    assert_true(acmemsg_problem_is(&p, "badNonce"));
    assert_int_equal(p.status, 0);
    /* a prefix is not the name */
    assert_int_equal(
        acmemsg_problem_parse(J("{\"type\":\"urn:ietf:params:acme:error:badNonceX\"}"), &p), 0);
    assert_false(acmemsg_problem_is(&p, "badNonce"));
    assert_int_equal(acmemsg_problem_parse(J("{\"type\":\"urn:ietf:params:acme:error:"), &p), -1);
    assert_int_equal(acmemsg_problem_parse(J("[1,2]"), &p), -1);
    assert_int_equal(acmemsg_problem_parse(J("<html>502</html>"), &p), -1);
    assert_int_equal(acmemsg_problem_parse(J("{\"type\":1,\"status\":\"x\"}"), &p), 0);
    assert_string_equal(p.type, "");
    assert_int_equal(p.status, 0);
}

static void test_directory(void **state)
{
    struct acme_directory d;
    char err[128];
    assert_int_equal(
        acmemsg_directory_parse(
            J("{\"newNonce\":\"https://ca.example/nonce-plz\",\"newAccount\":\"https://"
              "ca.example/sign-me-up\",\"newOrder\":\"https://ca.example/order-plz\","
              "\"renewalInfo\":\"https://ca.example/draft-ietf-acme-ari-03/renewalInfo\","
              "\"meta\":{\"externalAccountRequired\":true,\"termsOfService\":\"data:x\"}}"),
            &d, err, sizeof(err)),
        0);
    assert_string_equal(d.new_order, "https://ca.example/order-plz");
    assert_non_null(d.renewal_info);
    assert_true(d.eab_required);
    acmemsg_directory_free(&d);
    /* pebble 2.4's: no renewalInfo */
    assert_int_equal(
        acmemsg_directory_parse(J("{\"newNonce\":\"https://127.0.0.1:14000/nonce-plz\","
                                  "\"newAccount\":\"https://127.0.0.1:14000/sign-me-up\","
                                  "\"newOrder\":\"https://127.0.0.1:14000/order-plz\"}"),
                                &d, err, sizeof(err)),
        0);
    assert_null(d.renewal_info);
    assert_false(d.eab_required);
    acmemsg_directory_free(&d);
    assert_int_equal(acmemsg_directory_parse(J("{\"newNonce\":\"https://a/\",\"newAccount\":"
                                               "\"https://a/\"}"),
                                             &d, err, sizeof(err)),
                     -1);
    assert_int_equal(acmemsg_directory_parse(J("{\"newNonce\":\"http://a/\",\"newAccount\":"
                                               "\"https://a/\",\"newOrder\":\"https://a/\"}"),
                                             &d, err, sizeof(err)),
                     -1);
    assert_int_equal(acmemsg_directory_parse(J("{\"newNonce\":\"https://a/\",\"newNonce\":"
                                               "\"https://b/\",\"newAccount\":\"https://a/\","
                                               "\"newOrder\":\"https://a/\"}"),
                                             &d, err, sizeof(err)),
                     -1); /* duplicate keys */
}

static void test_order_authz(void **state)
{
    struct acme_order o;
    char err[128];
    assert_int_equal(
        acmemsg_order_parse(J("{\"status\":\"pending\",\"expires\":\"2016-01-05T14:09:07.99Z\","
                              "\"identifiers\":[{\"type\":\"dns\",\"value\":\"www.example.org\"}],"
                              "\"authorizations\":[\"https://example.com/acme/authz/PAniVnsZcis\","
                              "\"https://example.com/acme/authz/r4HqLzrSrpI\"],"
                              "\"finalize\":\"https://example.com/acme/order/TOlocE8rfgo/"
                              "finalize\"}"),
                            &o, err, sizeof(err)),
        0);
    assert_int_equal(o.status, ACME_ST_PENDING);
    assert_int_equal(o.n_authz, 2);
    assert_null(o.certificate);
    acmemsg_order_free(&o);
    assert_int_equal(acmemsg_order_parse(J("{\"status\":\"invalid\",\"authorizations\":["
                                           "\"https://a/1\"],\"finalize\":\"https://a/f\","
                                           "\"error\":{\"type\":\"urn:ietf:params:acme:error:"
                                           "badCSR\",\"detail\":\"no\"}}"),
                                         &o, err, sizeof(err)),
                     0);
    assert_true(o.has_error);
    assert_string_equal(o.error.detail, "no");
    acmemsg_order_free(&o);
    assert_int_equal(acmemsg_order_parse(J("{\"status\":\"pending\",\"authorizations\":[],"
                                           "\"finalize\":\"https://a/f\"}"),
                                         &o, err, sizeof(err)),
                     -1);
    assert_int_equal(acmemsg_order_parse(J("{\"status\":\"weird\",\"authorizations\":["
                                           "\"https://a/1\"],\"finalize\":\"https://a/f\"}"),
                                         &o, err, sizeof(err)),
                     -1);

    static const char authz[] =
        "{\"status\":\"pending\",\"identifier\":{\"type\":\"dns\",\"value\":\"WWW.example.org\"},"
        "\"challenges\":[{\"url\":\"https://example.com/acme/chall/prV_B7yEyA4\",\"type\":"
        "\"http-01\",\"status\":\"pending\",\"token\":\"DGyRejmCefe7v4NfDGDKfA\"},"
        "{\"url\":\"https://example.com/acme/chall/alpn\",\"type\":\"tls-alpn-01\",\"status\":"
        "\"invalid\",\"token\":\"evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA\",\"error\":{"
        "\"type\":\"urn:ietf:params:acme:error:unauthorized\",\"detail\":\"bad key auth\"}}]}";
    struct acme_authz a;
    assert_int_equal(acmemsg_authz_parse(J(authz), "http-01", &a, err, sizeof(err)), 0);
    assert_string_equal(a.identifier, "WWW.example.org");
    assert_string_equal(a.ch_url, "https://example.com/acme/chall/prV_B7yEyA4");
    assert_string_equal(a.ch_token, "DGyRejmCefe7v4NfDGDKfA");
    assert_false(a.ch_has_error);
    acmemsg_authz_free(&a);
    assert_int_equal(acmemsg_authz_parse(J(authz), "tls-alpn-01", &a, err, sizeof(err)), 0);
    assert_int_equal(a.ch_status, ACME_ST_INVALID);
    assert_true(a.ch_has_error);
    assert_true(acmemsg_problem_is(&a.ch_error, "unauthorized"));
    acmemsg_authz_free(&a);
    assert_int_equal(acmemsg_authz_parse(J(authz), "dns-01", &a, err, sizeof(err)), 0);
    assert_null(a.ch_url); /* not offered */
    acmemsg_authz_free(&a);
    /* a token that is not base64url would end up in a URL path: refused */
    assert_int_equal(acmemsg_authz_parse(J("{\"status\":\"pending\",\"identifier\":{\"value\":"
                                           "\"a.example\"},\"challenges\":[{\"type\":\"http-01\","
                                           "\"url\":\"https://a/c\",\"token\":\"../../etc\"}]}"),
                                         "http-01", &a, err, sizeof(err)),
                     -1);
}

/* A P-256 public key from a JWK's x and y. */
static EVP_PKEY *key_from_jwk(json_t *jwk)
{
    uint8_t pub[65] = {4};
    const char *x = json_string_value(json_object_get(jwk, "x"));
    const char *y = json_string_value(json_object_get(jwk, "y"));
    assert_non_null(x);
    assert_non_null(y);
    assert_int_equal(dg_b64url_decode(x, strlen(x), pub + 1, 33), 32);
    assert_int_equal(dg_b64url_decode(y, strlen(y), pub + 33, 33), 32);
    OSSL_PARAM_BLD *b = OSSL_PARAM_BLD_new();
    OSSL_PARAM_BLD_push_utf8_string(b, OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0);
    OSSL_PARAM_BLD_push_octet_string(b, OSSL_PKEY_PARAM_PUB_KEY, pub, sizeof(pub));
    OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(b);
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
    EVP_PKEY *k = NULL;
    assert_int_equal(EVP_PKEY_fromdata_init(ctx), 1);
    assert_int_equal(EVP_PKEY_fromdata(ctx, &k, EVP_PKEY_PUBLIC_KEY, params), 1);
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(b);
    return k;
}

static json_t *b64_json(const char *s)
{
    uint8_t buf[4096];
    long n = dg_b64url_decode(s, strlen(s), buf, sizeof(buf));
    assert_true(n >= 0);
    return json_loadb((const char *)buf, (size_t)n, 0, NULL);
}

static void verify_jws(const char *jws, const char *kid, const char *payload, EVP_PKEY *key)
{
    json_t *o = json_loads(jws, 0, NULL);
    assert_non_null(o);
    const char *prot = json_string_value(json_object_get(o, "protected"));
    const char *pay = json_string_value(json_object_get(o, "payload"));
    const char *sig = json_string_value(json_object_get(o, "signature"));
    assert_non_null(prot);
    assert_non_null(pay);
    assert_non_null(sig);
    json_t *h = b64_json(prot);
    assert_string_equal(json_string_value(json_object_get(h, "alg")), "ES256");
    assert_string_equal(json_string_value(json_object_get(h, "nonce")), "n0nce");
    assert_string_equal(json_string_value(json_object_get(h, "url")), "https://ca.example/x");
    EVP_PKEY *pub;
    if (kid) {
        assert_string_equal(json_string_value(json_object_get(h, "kid")), kid);
        assert_null(json_object_get(h, "jwk"));
        pub = key;
        EVP_PKEY_up_ref(pub);
    } else {
        assert_null(json_object_get(h, "kid"));
        pub = key_from_jwk(json_object_get(h, "jwk"));
        assert_int_equal(EVP_PKEY_eq(pub, key), 1);
    }
    char dec[256];
    long pl = dg_b64url_decode(pay, strlen(pay), (uint8_t *)dec, sizeof(dec) - 1);
    assert_int_equal(pl, (long)strlen(payload));
    dec[pl] = '\0';
    assert_string_equal(dec, payload);
    /* raw r||s → DER, verified over protected "." payload */
    uint8_t raw[64];
    assert_int_equal(dg_b64url_decode(sig, strlen(sig), raw, sizeof(raw)), 64);
    ECDSA_SIG *es = ECDSA_SIG_new();
    ECDSA_SIG_set0(es, BN_bin2bn(raw, 32, NULL), BN_bin2bn(raw + 32, 32, NULL));
    unsigned char *der = NULL;
    int dl = i2d_ECDSA_SIG(es, &der);
    char input[4096];
    snprintf(input, sizeof(input), "%s.%s", prot, pay);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    assert_int_equal(EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, pub), 1);
    assert_int_equal(
        EVP_DigestVerify(md, der, (size_t)dl, (const unsigned char *)input, strlen(input)), 1);
    /* and a changed input does not verify */
    input[0] ^= 1;
    assert_int_equal(EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, pub), 1);
    assert_int_not_equal(
        EVP_DigestVerify(md, der, (size_t)dl, (const unsigned char *)input, strlen(input)), 1);
    EVP_MD_CTX_free(md);
    OPENSSL_free(der);
    ECDSA_SIG_free(es);
    EVP_PKEY_free(pub);
    json_decref(h);
    json_decref(o);
}

static void test_jws(void **state)
{
    EVP_PKEY *key = EVP_EC_gen("P-256");
    assert_non_null(key);
    for (int i = 0; i < 20; i++) { /* several signatures: r or s with a leading zero byte */
        char *jws = acmemsg_jws_es256(key, NULL, "n0nce", "https://ca.example/x",
                                      "{\"termsOfServiceAgreed\":true}");
        assert_non_null(jws);
        verify_jws(jws, NULL, "{\"termsOfServiceAgreed\":true}", key);
        free(jws);
    }
    char *jws =
        acmemsg_jws_es256(key, "https://ca.example/acct/1", "n0nce", "https://ca.example/x", "");
    assert_non_null(jws);
    verify_jws(jws, "https://ca.example/acct/1", "", key); /* POST-as-GET: empty payload */
    free(jws);

    /* the JWK's thumbprint is the same whatever the members' order or extra members */
    char *jwk = acmemsg_jwk(key);
    char t1[44], t2[44];
    assert_int_equal(acmemsg_thumbprint(jwk, t1), 0);
    json_t *j = json_loads(jwk, 0, NULL);
    json_object_set_new(j, "kid", json_string("extra"));
    char *re = json_dumps(j, JSON_INDENT(2)); /* other order, whitespace */
    assert_int_equal(acmemsg_thumbprint(re, t2), 0);
    assert_string_equal(t1, t2);
    assert_int_equal(strlen(t1), 43);
    char *ka = acmemsg_key_authz("tok", t1);
    assert_int_equal(strncmp(ka, "tok.", 4), 0);
    assert_string_equal(ka + 4, t1);
    free(ka);
    free(re);
    json_decref(j);

    /* EAB: HS256 over the JWK with the HMAC key, protected {alg, kid, url} */
    const unsigned char mac_key[] = "0123456789abcdef0123456789abcdef";
    char *eab = acmemsg_jws_eab("kid-1", mac_key, 32, "https://ca.example/new-acct", jwk);
    assert_non_null(eab);
    json_t *e = json_loads(eab, 0, NULL);
    const char *prot = json_string_value(json_object_get(e, "protected"));
    const char *pay = json_string_value(json_object_get(e, "payload"));
    json_t *h = b64_json(prot);
    assert_string_equal(json_string_value(json_object_get(h, "alg")), "HS256");
    assert_string_equal(json_string_value(json_object_get(h, "kid")), "kid-1");
    assert_string_equal(json_string_value(json_object_get(h, "url")),
                        "https://ca.example/new-acct");
    json_t *pj = b64_json(pay);
    json_t *jj = json_loads(jwk, 0, NULL);
    assert_true(json_equal(pj, jj)); /* the payload is the account's JWK */
    json_decref(jj);
    char input[2048];
    snprintf(input, sizeof(input), "%s.%s", prot, pay);
    unsigned char mac[32];
    unsigned int ml = 0;
    HMAC(EVP_sha256(), mac_key, 32, (const unsigned char *)input, strlen(input), mac, &ml);
    char macs[64];
    dg_b64url_encode(mac, ml, macs);
    assert_string_equal(json_string_value(json_object_get(e, "signature")), macs);
    json_decref(pj);
    json_decref(h);
    json_decref(e);
    free(eab);
    free(jwk);
    EVP_PKEY_free(key);
}

static void test_thumbprint_rfc7638(void **state)
{
    /* RFC 7638 §3.1 */
    static const char jwk[] =
        "{\"kty\":\"RSA\",\"n\":"
        "\"0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_"
        "BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_"
        "FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-"
        "bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw\","
        "\"e\":\"AQAB\",\"alg\":\"RS256\",\"kid\":\"2011-04-29\"}";
    char t[44];
    assert_int_equal(acmemsg_thumbprint(jwk, t), 0);
    assert_string_equal(t, "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
    assert_int_equal(acmemsg_thumbprint("{\"kty\":\"oct\",\"k\":\"x\"}", t), -1);
    assert_int_equal(acmemsg_thumbprint("{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"a\"}", t), -1);
}

static void test_cert_id_rfc9773(void **state)
{
    /* RFC 9773 §4.1: AKI keyIdentifier 69:88:5B:6B:87:46:40:41:E1:B3:7B:84:7B:A0:AE:2C:DE:01:
     * C8:D4, serial 0x87654321 (DER content 00 87 65 43 21) → aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE
     */
    static const unsigned char kid[] = {0x69, 0x88, 0x5B, 0x6B, 0x87, 0x46, 0x40, 0x41, 0xE1, 0xB3,
                                        0x7B, 0x84, 0x7B, 0xA0, 0xAE, 0x2C, 0xDE, 0x01, 0xC8, 0xD4};
    X509 *x = X509_new();
    ASN1_INTEGER_set_uint64(X509_get_serialNumber(x), 0x87654321u);
    AUTHORITY_KEYID *ak = AUTHORITY_KEYID_new();
    ak->keyid = ASN1_OCTET_STRING_new();
    ASN1_OCTET_STRING_set(ak->keyid, kid, sizeof(kid));
    assert_int_equal(X509_add1_ext_i2d(x, NID_authority_key_identifier, ak, 0, 0), 1);
    AUTHORITY_KEYID_free(ak);
    char id[128];
    assert_int_equal(acmemsg_cert_id(x, id, sizeof(id)), 0);
    assert_string_equal(id, "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE");
    assert_int_equal(acmemsg_cert_id(x, id, 20), -1); /* too small */
    X509_free(x);
    /* no AKI: no certID */
    x = X509_new();
    ASN1_INTEGER_set(X509_get_serialNumber(x), 5);
    assert_int_equal(acmemsg_cert_id(x, id, sizeof(id)), -1);
    X509_free(x);
}

static void test_der_to_raw(void **state)
{
    /* r = 0x01, s = 0x00ff..ff (32 bytes, DER with a leading zero) → left-padded */
    unsigned char der[64] = {0x30, 0, 0x02, 0x01, 0x01, 0x02, 0x21, 0x00};
    memset(der + 8, 0xff, 32);
    der[1] = (unsigned char)(3 + 2 + 33);
    unsigned char raw[64];
    assert_int_equal(acmemsg_ecdsa_der_to_raw(der, 40, raw, 32), 0);
    for (int i = 0; i < 31; i++)
        assert_int_equal(raw[i], 0);
    assert_int_equal(raw[31], 1);
    for (int i = 32; i < 64; i++)
        assert_int_equal(raw[i], 0xff);
    assert_int_equal(acmemsg_ecdsa_der_to_raw(der, 39, raw, 32), -1); /* cut */
    der[1]++;
    der[40] = 0;
    assert_int_equal(acmemsg_ecdsa_der_to_raw(der, 41, raw, 32), -1); /* trailing garbage */
    assert_int_equal(acmemsg_ecdsa_der_to_raw((const unsigned char *)"\x05", 1, raw, 32), -1);
}

/* acme_start(): creates the state dir 0700 (tightens a wider one) and a stop while the CA is
 * unreachable (connection refused, then the backoff wait) returns promptly. */
static void test_start_stop(void **state)
{
    char dir[] = "/tmp/test_acme.XXXXXX";
    assert_non_null(mkdtemp(dir));
    char state_dir[256], conf[256];
    snprintf(state_dir, sizeof(state_dir), "%s/a/state", dir);
    snprintf(conf, sizeof(conf), "%s/dohgate.conf", dir);
    FILE *f = fopen(conf, "w");
    assert_non_null(f);
    fprintf(f,
            "acme-domain dns.example.test\nacme-directory https://127.0.0.1:1/dir\n"
            "acme-state-dir %s\n",
            state_dir);
    fclose(f);
    struct config *cfg = config_new();
    char err[256] = "";
    assert_int_equal(config_load_file(cfg, conf, err, sizeof(err)), 0);
    if (config_finish(cfg, err, sizeof(err)) != 0)
        fail_msg("config: %s", err);
    struct acme *a = acme_start(cfg, NULL, NULL, err, sizeof(err));
    if (!a)
        fail_msg("acme_start: %s", err);
    struct stat st;
    assert_int_equal(stat(state_dir, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);
    /* wait (generously) for the first failure to be counted */
    struct acme_status s = {0};
    for (int i = 0; i < 300 && s.failures[ACME_FAIL_NETWORK] == 0; i++) {
        usleep(20000);
        acme_status_get(a, &s);
    }
    assert_int_equal(s.failures[ACME_FAIL_NETWORK], 1);
    assert_int_equal(s.orders, 0);
    assert_int_equal(s.last_success, 0);
    assert_true(s.next_attempt >= time(NULL) + 25); /* 60 s base: [30, 60] */
    acme_stop(a); /* returns although the retry is 30+ s away (no timing assertion) */
    /* account key made on first use, 0600 */
    char path[300];
    snprintf(path, sizeof(path), "%s/account.key", state_dir);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    /* a wider existing dir is tightened */
    assert_int_equal(chmod(state_dir, 0755), 0);
    a = acme_start(cfg, NULL, NULL, err, sizeof(err));
    assert_non_null(a);
    acme_stop(a);
    assert_int_equal(stat(state_dir, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);
    assert_string_equal(acme_failure_name(ACME_FAIL_RATE_LIMITED), "rate_limited");
    config_unref(cfg);
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

/* acme_stop() during a transfer: a "CA" that accepts the connection (the kernel's backlog) and
 * never answers the TLS handshake. The stop flag aborts the transfer through curl's progress
 * callback (called about once a second while idle); without it the stop waits for the 10 s
 * connect timeout (checked: 10.1 s with the callback disabled), so the bound below (8 s, the
 * abort takes about 1 s) still tells the two apart on a loaded machine. */
static void test_stop_during_transfer(void **state)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t sl = sizeof(sa);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(fd, 8), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);

    char dir[] = "/tmp/test_acme.XXXXXX";
    assert_non_null(mkdtemp(dir));
    char conf[256];
    snprintf(conf, sizeof(conf), "%s/dohgate.conf", dir);
    FILE *f = fopen(conf, "w");
    assert_non_null(f);
    fprintf(f,
            "acme-domain dns.example.test\nacme-directory https://127.0.0.1:%u/dir\n"
            "acme-state-dir %s/state\n",
            ntohs(sa.sin_port), dir);
    fclose(f);
    struct config *cfg = config_new();
    char err[256] = "";
    assert_int_equal(config_load_file(cfg, conf, err, sizeof(err)), 0);
    if (config_finish(cfg, err, sizeof(err)) != 0)
        fail_msg("config: %s", err);
    struct acme *a = acme_start(cfg, NULL, NULL, err, sizeof(err));
    assert_non_null(a);
    /* the account key exists once the thread got to its first transfer */
    char key[300];
    snprintf(key, sizeof(key), "%s/state/account.key", dir);
    for (int i = 0; i < 500 && access(key, F_OK) != 0; i++)
        usleep(10000);
    usleep(300000); /* into the handshake */
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    acme_stop(a);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    assert_true(t1.tv_sec - t0.tv_sec < 8);
    close(fd);
    config_unref(cfg);
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ari_example),
        cmocka_unit_test(test_ari_variations),
        cmocka_unit_test(test_renew_window),
        cmocka_unit_test(test_renew_third),
        cmocka_unit_test(test_backoff),
        cmocka_unit_test(test_retry_after),
        cmocka_unit_test(test_problem),
        cmocka_unit_test(test_directory),
        cmocka_unit_test(test_order_authz),
        cmocka_unit_test(test_jws),
        cmocka_unit_test(test_thumbprint_rfc7638),
        cmocka_unit_test(test_cert_id_rfc9773),
        cmocka_unit_test(test_der_to_raw),
        cmocka_unit_test(test_start_stop),
        cmocka_unit_test(test_stop_during_transfer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
