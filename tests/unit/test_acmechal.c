/* acmechal: the tls-alpn-01 validation certificate's contents (RFC 8737 §3), the ClientHello
 * extension parser on good and malformed bodies, the http-01 table, and in-memory handshakes
 * against a real TLS store (tls.c's ClientHello, SNI and ALPN callbacks). */
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
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "dohgate/acmechal.h"
#include "dohgate/client.h"
#include "dohgate/config.h"
#include "dohgate/h1.h"
#include "dohgate/http.h"
#include "dohgate/log.h"
#include "dohgate/site.h"
#include "dohgate/tls.h"
#include "dohgate/util.h"

#include "dohtest.h"

static const char ACME_OID[] = "1.3.6.1.5.5.7.1.31";

static void digest_of(const char *keyauth, unsigned char out[32])
{
    unsigned int len = 0;
    assert_int_equal(EVP_Digest(keyauth, strlen(keyauth), out, &len, EVP_sha256(), NULL), 1);
    assert_int_equal(len, 32);
}

/* The extension's extnValue when @p x has id-pe-acmeIdentifier (else NULL), and its criticality. */
static const ASN1_OCTET_STRING *acme_ext(X509 *x, int *critical)
{
    ASN1_OBJECT *oid = OBJ_txt2obj(ACME_OID, 1);
    assert_non_null(oid);
    int at = X509_get_ext_by_OBJ(x, oid, -1);
    ASN1_OBJECT_free(oid);
    if (at < 0)
        return NULL;
    X509_EXTENSION *ext = X509_get_ext(x, at);
    *critical = X509_EXTENSION_get_critical(ext);
    return X509_EXTENSION_get_data(ext);
}

static void check_validation_cert(X509 *x, EVP_PKEY *key, const char *name,
                                  const unsigned char digest[32])
{
    /* exactly one SAN, a dNSName with the name */
    GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    assert_non_null(gens);
    assert_int_equal(sk_GENERAL_NAME_num(gens), 1);
    const GENERAL_NAME *gn = sk_GENERAL_NAME_value(gens, 0);
    assert_int_equal(gn->type, GEN_DNS);
    assert_int_equal(ASN1_STRING_length(gn->d.dNSName), (int)strlen(name));
    assert_memory_equal(ASN1_STRING_get0_data(gn->d.dNSName), name, strlen(name));
    GENERAL_NAMES_free(gens);
    /* the critical acmeIdentifier: an OCTET STRING (04 20) holding the digest */
    int critical = -1;
    const ASN1_OCTET_STRING *v = acme_ext(x, &critical);
    assert_non_null(v);
    assert_int_equal(critical, 1);
    assert_int_equal(ASN1_STRING_length(v), 34);
    const unsigned char *d = ASN1_STRING_get0_data(v);
    assert_int_equal(d[0], 0x04);
    assert_int_equal(d[1], 32);
    assert_memory_equal(d + 2, digest, 32);
    /* ...and it parses as exactly that DER */
    const unsigned char *p = d;
    ASN1_OCTET_STRING *inner = d2i_ASN1_OCTET_STRING(NULL, &p, 34);
    assert_non_null(inner);
    assert_int_equal(p - d, 34);
    assert_int_equal(ASN1_STRING_length(inner), 32);
    assert_memory_equal(ASN1_STRING_get0_data(inner), digest, 32);
    ASN1_OCTET_STRING_free(inner);
    /* a P-256 key, matching, self-signed with it */
    assert_int_equal(EVP_PKEY_get_base_id(key), EVP_PKEY_EC);
    char group[64] = "";
    size_t glen = 0;
    assert_int_equal(EVP_PKEY_get_group_name(key, group, sizeof(group), &glen), 1);
    assert_string_equal(group, "prime256v1");
    assert_int_equal(X509_check_private_key(x, key), 1);
    assert_int_equal(X509_verify(x, key), 1);
    assert_int_equal(X509_NAME_cmp(X509_get_subject_name(x), X509_get_issuer_name(x)), 0);
    /* short-lived: valid now, for days, not months */
    time_t now = time(NULL);
    assert_true(X509_cmp_time(X509_get0_notBefore(x), &now) < 0);
    assert_true(X509_cmp_time(X509_get0_notAfter(x), &now) > 0);
    time_t month = now + 31 * 86400;
    assert_true(X509_cmp_time(X509_get0_notAfter(x), &month) < 0);
}

static void test_validation_cert(void **state)
{
    (void)state;
    acmechal_clear();
    assert_false(acmechal_pending());
    unsigned char dg[32], dg2[32];
    digest_of("tok.thumb", dg);
    digest_of("tok2.thumb", dg2);
    char err[256] = "";
    assert_int_equal(acmechal_alpn_add("doh.example.net", dg, err, sizeof(err)), 0);
    assert_true(acmechal_pending());
    X509 *x = NULL;
    EVP_PKEY *k = NULL;
    assert_true(acmechal_alpn_get("doh.example.net", &x, &k));
    check_validation_cert(x, k, "doh.example.net", dg);

    /* the lookup is exact: no other name, no case folding, no trailing dot */
    X509 *y = NULL;
    EVP_PKEY *yk = NULL;
    assert_false(acmechal_alpn_get("example.net", &y, &yk));
    assert_false(acmechal_alpn_get("DOH.example.net", &y, &yk));
    assert_false(acmechal_alpn_get("doh.example.net.", &y, &yk));

    /* a second add for the name replaces the first (a new key, the new digest); the caller's
     * references stay valid */
    assert_int_equal(acmechal_alpn_add("doh.example.net", dg2, err, sizeof(err)), 0);
    assert_true(acmechal_alpn_get("doh.example.net", &y, &yk));
    check_validation_cert(y, yk, "doh.example.net", dg2);
    assert_int_not_equal(X509_cmp(x, y), 0);
    assert_int_not_equal(EVP_PKEY_eq(k, yk), 1);
    check_validation_cert(x, k, "doh.example.net", dg);
    X509_free(y);
    EVP_PKEY_free(yk);

    /* a long name (longer than a CN may be) fits in the SAN */
    char longname[254];
    memset(longname, 'a', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    for (size_t i = 63; i < sizeof(longname) - 1; i += 64)
        longname[i] = '.';
    assert_int_equal(acmechal_alpn_add(longname, dg, err, sizeof(err)), 0);
    assert_true(acmechal_alpn_get(longname, &y, &yk));
    check_validation_cert(y, yk, longname, dg);
    X509_free(y);
    EVP_PKEY_free(yk);

    /* names tls-alpn-01 cannot validate, or not in the contract's form */
    const char *bad[] = {
        "",   "Doh.example.net", "*.example.net", "doh.example.net.", ".example", "a..b", "a b",
        "a/b"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        if (acmechal_alpn_add(bad[i], dg, err, sizeof(err)) != -1)
            fail_msg("name \"%s\" accepted", bad[i]);
        assert_true(err[0] != '\0');
    }
    char toolong[255];
    memcpy(toolong, longname, 253);
    toolong[253] = 'b';
    toolong[254] = '\0';
    assert_int_equal(acmechal_alpn_add(toolong, dg, err, sizeof(err)), -1);

    acmechal_clear();
    assert_false(acmechal_pending());
    assert_false(acmechal_alpn_get("doh.example.net", &y, &yk));
    /* the references taken before the clear are still the caller's */
    check_validation_cert(x, k, "doh.example.net", dg);
    X509_free(x);
    EVP_PKEY_free(k);
}

/* ---- acmechal_hello_parse ---------------------------------------------------------------------
 */

/* An ALPN extension body (RFC 7301 §3.1) offering @p ids. */
static size_t alpn_body(unsigned char *out, const char *const *ids, size_t n)
{
    size_t len = 2;
    for (size_t i = 0; i < n; i++) {
        size_t l = strlen(ids[i]);
        out[len++] = (unsigned char)l;
        memcpy(out + len, ids[i], l);
        len += l;
    }
    out[0] = (unsigned char)((len - 2) >> 8);
    out[1] = (unsigned char)(len - 2);
    return len;
}

/* A server_name extension body (RFC 6066 §3) with one host_name. */
static size_t sni_body(unsigned char *out, const char *host, size_t hlen)
{
    out[0] = (unsigned char)((hlen + 3) >> 8);
    out[1] = (unsigned char)(hlen + 3);
    out[2] = 0; /* host_name */
    out[3] = (unsigned char)(hlen >> 8);
    out[4] = (unsigned char)hlen;
    memcpy(out + 5, host, hlen);
    return hlen + 5;
}

static void test_hello_parse(void **state)
{
    (void)state;
    unsigned char a[512], s[512];
    char name[256];
    const char *acme_only[] = {"acme-tls/1"};
    const char *mixed[] = {"h2", "acme-tls/1", "http/1.1"};
    size_t alen = alpn_body(a, acme_only, 1);
    size_t slen = sni_body(s, "x.test", 6);
    assert_true(acmechal_hello_parse(a, alen, s, slen, name));
    assert_string_equal(name, "x.test");
    alen = alpn_body(a, mixed, 3);
    assert_true(acmechal_hello_parse(a, alen, s, slen, name));
    assert_string_equal(name, "x.test");
    /* upper case and the trailing dot: the same name */
    slen = sni_body(s, "X.Test.", 7);
    assert_true(acmechal_hello_parse(a, alen, s, slen, name));
    assert_string_equal(name, "x.test");

    /* acme-tls/1 not offered, or something that only looks like it */
    const char *no[][2] = {{"h2", "http/1.1"},
                           {"acme-tls/2", "h2"},
                           {"acme-tls", "h2"},
                           {"acme-tls/10", "h2"},
                           {"ACME-TLS/1", "h2"}};
    slen = sni_body(s, "x.test", 6);
    for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++) {
        alen = alpn_body(a, no[i], 2);
        if (acmechal_hello_parse(a, alen, s, slen, name))
            fail_msg("ALPN case %zu taken for acme-tls/1", i);
        assert_string_equal(name, "");
    }

    /* malformed ALPN bodies */
    alen = alpn_body(a, mixed, 3);
    assert_false(acmechal_hello_parse(NULL, 0, s, slen, name));
    assert_false(acmechal_hello_parse(a, 0, s, slen, name));
    assert_false(acmechal_hello_parse(a, 1, s, slen, name));
    assert_false(acmechal_hello_parse(a, alen - 1, s, slen, name)); /* truncated list */
    unsigned char big[600];
    memcpy(big, a, alen);
    big[alen] = 0;
    assert_false(acmechal_hello_parse(big, alen + 1, s, slen, name)); /* list shorter */
    unsigned char t[] = {0, 12, 10, 'a', 'c', 'm', 'e', '-', 't', 'l', 's', '/', '1', 5};
    assert_false(acmechal_hello_parse(t, sizeof(t), s, slen, name)); /* ID past the end */
    unsigned char z[] = {0, 12, 0, 10, 'a', 'c', 'm', 'e', '-', 't', 'l', 's', '/', '1'};
    assert_false(acmechal_hello_parse(z, sizeof(z), s, slen, name)); /* zero-length ID */
    unsigned char e[] = {0, 0};
    assert_false(acmechal_hello_parse(e, sizeof(e), s, slen, name)); /* empty list */
    unsigned char ok[] = {0, 11, 10, 'a', 'c', 'm', 'e', '-', 't', 'l', 's', '/', '1'};
    assert_true(acmechal_hello_parse(ok, sizeof(ok), s, slen, name));

    /* no SNI, or malformed */
    alen = alpn_body(a, acme_only, 1);
    assert_false(acmechal_hello_parse(a, alen, NULL, 0, name));
    assert_false(acmechal_hello_parse(a, alen, s, 0, name));
    assert_false(acmechal_hello_parse(a, alen, s, 4, name));
    assert_false(acmechal_hello_parse(a, alen, s, slen - 1, name)); /* truncated name */
    memcpy(big, s, slen);
    big[slen] = 'x';
    assert_false(acmechal_hello_parse(a, alen, big, slen + 1, name)); /* trailing byte */
    big[1]++;
    assert_false(acmechal_hello_parse(a, alen, big, slen + 1, name)); /* name len short */
    memcpy(big, s, slen);
    big[2] = 1; /* not host_name */
    assert_false(acmechal_hello_parse(a, alen, big, slen, name));
    /* two host names (RFC 6066 allows one per type; OpenSSL refuses more than one entry) */
    size_t two = sni_body(big, "x.test", 6);
    memcpy(big + two, "\0\0\6y.test", 9);
    big[1] = (unsigned char)(two - 2 + 9);
    assert_false(acmechal_hello_parse(a, alen, big, two + 9, name));
    const char *badnames[] = {"", ".", "x\0y", "x y", "x/y", "x.test\xc3\xa9", "x.test.."};
    const size_t badlens[] = {0, 1, 3, 3, 3, 8, 8};
    for (size_t i = 0; i < sizeof(badnames) / sizeof(badnames[0]); i++) {
        slen = sni_body(s, badnames[i], badlens[i]);
        if (acmechal_hello_parse(a, alen, s, slen, name))
            fail_msg("SNI case %zu accepted as \"%s\"", i, name);
    }
    /* 253 characters (254 with the root's dot) fit; 254 do not */
    char host[256];
    memset(host, 'a', sizeof(host));
    for (size_t i = 63; i < sizeof(host); i += 64)
        host[i] = '.';
    host[253] = '.';
    slen = sni_body(s, host, 254);
    assert_true(acmechal_hello_parse(a, alen, s, slen, name));
    assert_int_equal(strlen(name), 253);
    host[253] = 'a';
    slen = sni_body(s, host, 254);
    assert_false(acmechal_hello_parse(a, alen, s, slen, name));
}

/* ---- http-01 ----------------------------------------------------------------------------------
 */

static void test_http_table(void **state)
{
    (void)state;
    acmechal_clear();
    char out[600];
    assert_int_equal(acmechal_http_get("tok", out, sizeof(out)), 0);
    assert_int_equal(acmechal_http_add("LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0",
                                       "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0.9jg46WB3rR_"
                                       "AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"),
                     0);
    assert_true(acmechal_pending());
    size_t n = acmechal_http_get("LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0", out, sizeof(out));
    assert_int_equal(n, 87);
    assert_string_equal(out, "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0.9jg46WB3rR_AHD-"
                             "EBXdN7cBkH1WOu0tA3M9fm21mqTI");
    /* exact tokens only */
    assert_int_equal(acmechal_http_get("LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX", out, 600), 0);
    assert_int_equal(acmechal_http_get("LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0?x", out, 600),
                     0);
    /* a buffer too small: nothing, never half of it */
    assert_int_equal(acmechal_http_get("LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0", out, 87), 0);
    assert_int_equal(acmechal_http_get("LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0", out, 88), 87);

    /* replace */
    assert_int_equal(acmechal_http_add("a-b_C9", "a-b_C9.thumb"), 0);
    assert_int_equal(acmechal_http_add("a-b_C9", "a-b_C9.other"), 0);
    assert_int_equal(acmechal_http_get("a-b_C9", out, sizeof(out)), 12);
    assert_string_equal(out, "a-b_C9.other");

    /* 128 characters: the limit */
    char tok[130];
    memset(tok, 'Z', sizeof(tok));
    tok[128] = '\0';
    assert_int_equal(acmechal_http_add(tok, "ka.x"), 0);
    assert_int_equal(acmechal_http_get(tok, out, sizeof(out)), 4);
    tok[128] = 'Z';
    tok[129] = '\0';
    assert_int_equal(acmechal_http_add(tok, "ka.x"), -1);
    assert_int_equal(acmechal_http_get(tok, out, sizeof(out)), 0);

    /* not base64url */
    const char *bad[] = {"", "a/b", "a.b", "a+b", "ab=", "a b", "../x", "a%2f", "a\nb"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (acmechal_http_add(bad[i], "x.y") != -1)
            fail_msg("token \"%s\" accepted", bad[i]);
    /* key authorizations go out as they are: printable, one line */
    assert_int_equal(acmechal_http_add("tok", "a\r\nb"), -1);
    assert_int_equal(acmechal_http_add("tok", ""), -1);

    acmechal_clear();
    assert_false(acmechal_pending());
    assert_int_equal(acmechal_http_get("a-b_C9", out, sizeof(out)), 0);
}

/* A full table refuses more, of either kind, and stays usable. */
static void test_table_limit(void **state)
{
    (void)state;
    acmechal_clear();
    char tok[32];
    int i = 0;
    for (;; i++) {
        snprintf(tok, sizeof(tok), "t%d", i);
        if (acmechal_http_add(tok, "k.v") != 0)
            break;
        assert_true(i < 10000);
    }
    assert_true(i >= 100); /* an order of 100 names fits */
    unsigned char dg[32] = {0};
    char err[128];
    assert_int_equal(acmechal_alpn_add("x.test", dg, err, sizeof(err)), -1);
    char out[16];
    assert_int_equal(acmechal_http_get("t0", out, sizeof(out)), 3);
    /* replacing one already there needs no room */
    assert_int_equal(acmechal_http_add("t0", "k.w"), 0);
    acmechal_clear();
    assert_int_equal(acmechal_alpn_add("x.test", dg, err, sizeof(err)), 0);
    acmechal_clear();
}

/* ---- handshakes through tls.c --------------------------------------------------------------- */

struct hs_result {
    bool ok;
    X509 *peer; /* the client's reference */
    char alpn[32];
    enum tls_alpn server_alpn;
    int tickets; /* the server's SSL_get_num_tickets() */
    bool reused; /* the client resumed resume_with */
};

/* A session the next handshake's client offers (NULL: none), and where to keep the session of
 * the next one that completes (NULL: not kept). */
static SSL_SESSION *resume_with;
static SSL_SESSION **keep_session;

/* Signature algorithms the next handshakes' client accepts (NULL: OpenSSL's default). */
static const char *client_sigalgs;

/* A handshake between @p srv and a new client offering @p alpn (wire format) with SNI @p sni
 * (NULL: none), through a memory BIO pair, at most TLS @p max_version. */
static struct hs_result handshake(SSL *srv, const char *alpn, size_t alpn_len, const char *sni,
                                  int max_version)
{
    struct hs_result r = {0};
    SSL_CTX *cctx = SSL_CTX_new(TLS_client_method());
    assert_non_null(cctx);
    if (max_version)
        assert_int_equal(SSL_CTX_set_max_proto_version(cctx, max_version), 1);
    SSL *cli = SSL_new(cctx);
    assert_non_null(cli);
    if (alpn)
        assert_int_equal(SSL_set_alpn_protos(cli, (const unsigned char *)alpn, alpn_len), 0);
    if (sni)
        assert_int_equal(SSL_set_tlsext_host_name(cli, sni), 1);
    if (client_sigalgs)
        assert_int_equal(SSL_set1_sigalgs_list(cli, client_sigalgs), 1);
    if (resume_with)
        assert_int_equal(SSL_set_session(cli, resume_with), 1);
    BIO *b_srv, *b_cli;
    assert_int_equal(BIO_new_bio_pair(&b_srv, 0, &b_cli, 0), 1);
    SSL_set_bio(srv, b_srv, b_srv);
    SSL_set_bio(cli, b_cli, b_cli);
    SSL_set_accept_state(srv);
    SSL_set_connect_state(cli);
    bool cdone = false, sdone = false, fail = false;
    for (int i = 0; i < 50 && !(cdone && sdone) && !fail; i++) {
        ERR_clear_error();
        int rc = SSL_do_handshake(cli);
        if (rc == 1)
            cdone = true;
        else if (SSL_get_error(cli, rc) != SSL_ERROR_WANT_READ)
            fail = true;
        if (sdone)
            continue;
        ERR_clear_error();
        rc = SSL_do_handshake(srv);
        if (rc == 1)
            sdone = true;
        else if (SSL_get_error(srv, rc) != SSL_ERROR_WANT_READ)
            fail = true;
    }
    ERR_clear_error();
    r.ok = cdone && sdone && !fail;
    if (r.ok) {
        r.peer = SSL_get1_peer_certificate(cli);
        const unsigned char *p = NULL;
        unsigned int len = 0;
        SSL_get0_alpn_selected(cli, &p, &len);
        snprintf(r.alpn, sizeof(r.alpn), "%.*s", (int)len, p ? (const char *)p : "");
        r.server_alpn = tls_alpn_get(srv);
        r.tickets = (int)SSL_get_num_tickets(srv);
        r.reused = SSL_session_reused(cli) == 1;
        if (keep_session) {
            char b;
            (void)SSL_read(cli, &b, 1); /* takes TLS 1.3 tickets */
            /* a clean end: SSL_free() makes the session of an unfinished one unresumable */
            SSL_set_quiet_shutdown(cli, 1);
            SSL_shutdown(cli);
            ERR_clear_error();
            *keep_session = SSL_get1_session(cli);
            keep_session = NULL;
        }
    }
    SSL_free(cli);
    SSL_CTX_free(cctx);
    return r;
}

static bool has_acme_ext(X509 *x)
{
    int critical;
    return acme_ext(x, &critical) != NULL;
}

static void test_handshakes(void **state)
{
    (void)state;
    acmechal_clear();
    struct config *cfg = config_new();
    assert_non_null(cfg);
    char err[256], fp[128];
    struct tls_store *ts = tls_store_new(cfg, fp, err, sizeof(err));
    assert_non_null(ts);
    SSL *probe = tls_store_ssl_new(ts);
    X509 *normal = X509_dup(SSL_get_certificate(probe)); /* the self-signed default */
    assert_non_null(normal);
    SSL_free(probe);

    unsigned char dg[32];
    digest_of("token.thumbprint", dg);
    assert_int_equal(acmechal_alpn_add("x.test", dg, err, sizeof(err)), 0);
    X509 *vcert = NULL;
    EVP_PKEY *vkey = NULL;
    assert_true(acmechal_alpn_get("x.test", &vcert, &vkey));

    static const char acme[] = "\x0a"
                               "acme-tls/1";
    static const char h2[] = "\x02h2\x08http/1.1";
    static const char h2_acme[] = "\x02h2\x0a"
                                  "acme-tls/1";
    struct {
        const char *alpn;
        size_t len;
        const char *sni;
        int max_version;
        bool dot;
        bool validation; /* the validation certificate expected (else the normal one) */
        const char *want_alpn;
        enum tls_alpn want_server;
    } cases[] = {
        /* 0: the CA, TLS 1.3 and 1.2, and the name as a client may write it */
        {acme, sizeof(acme) - 1, "x.test", 0, false, true, "acme-tls/1", TLS_ALPN_ACME},
        {acme, sizeof(acme) - 1, "x.test", TLS1_2_VERSION, false, true, "acme-tls/1",
         TLS_ALPN_ACME},
        {acme, sizeof(acme) - 1, "X.TEST.", 0, false, true, "acme-tls/1", TLS_ALPN_ACME},
        /* 3: acme-tls/1 among others: still the challenge, and only acme-tls/1 selected */
        {h2_acme, sizeof(h2_acme) - 1, "x.test", 0, false, true, "acme-tls/1", TLS_ALPN_ACME},
        /* 4: a browser for the same name: unchanged */
        {h2, sizeof(h2) - 1, "x.test", 0, false, false, "h2", TLS_ALPN_H2},
        /* 5: acme-tls/1 for a name with nothing pending, or no SNI: unchanged, no ALPN */
        {acme, sizeof(acme) - 1, "y.test", 0, false, false, "", TLS_ALPN_NONE},
        {acme, sizeof(acme) - 1, NULL, 0, false, false, "", TLS_ALPN_NONE},
        /* 7: no ALPN at all */
        {NULL, 0, "x.test", 0, false, false, "", TLS_ALPN_NONE},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        SSL *srv = tls_store_ssl_new(ts);
        assert_non_null(srv);
        struct hs_result r =
            handshake(srv, cases[i].alpn, cases[i].len, cases[i].sni, cases[i].max_version);
        if (!r.ok)
            fail_msg("case %zu: the handshake failed", i);
        assert_non_null(r.peer);
        if (cases[i].validation) {
            if (X509_cmp(r.peer, vcert) != 0)
                fail_msg("case %zu: not the validation certificate", i);
            assert_true(has_acme_ext(r.peer));
            assert_int_equal(r.tickets, 0);
        } else {
            if (X509_cmp(r.peer, normal) != 0)
                fail_msg("case %zu: not the normal certificate", i);
            assert_false(has_acme_ext(r.peer));
        }
        if (strcmp(r.alpn, cases[i].want_alpn) != 0)
            fail_msg("case %zu: ALPN \"%s\", expected \"%s\"", i, r.alpn, cases[i].want_alpn);
        assert_int_equal(r.server_alpn, cases[i].want_server);
        X509_free(r.peer);
        SSL_free(srv);
    }

    /* The DoT listener never answers tls-alpn-01: an offer without "dot" is refused there as
     * always (no validation certificate served), one with "dot" gets the normal certificate. */
    static const char dot_acme[] = "\x03"
                                   "dot\x0a"
                                   "acme-tls/1";
    SSL *srv = tls_store_ssl_new(ts);
    assert_int_equal(tls_ssl_set_dot(srv), 0);
    struct hs_result r = handshake(srv, acme, sizeof(acme) - 1, "x.test", 0);
    assert_false(r.ok);
    SSL_free(srv);
    srv = tls_store_ssl_new(ts);
    assert_int_equal(tls_ssl_set_dot(srv), 0);
    r = handshake(srv, dot_acme, sizeof(dot_acme) - 1, "x.test", 0);
    assert_true(r.ok);
    assert_int_equal(X509_cmp(r.peer, normal), 0);
    assert_string_equal(r.alpn, "dot");
    assert_int_equal(r.server_alpn, TLS_ALPN_DOT);
    X509_free(r.peer);
    SSL_free(srv);

    /* A client resuming a session (a ticket of an ordinary handshake) is not resumed when it
     * asks for the challenge: the CA must see the validation certificate. The same session
     * resumes an ordinary handshake, so resumption itself works here. */
    for (int tls12 = 0; tls12 < 2; tls12++) {
        int maxv = tls12 ? TLS1_2_VERSION : 0;
        SSL_SESSION *sess = NULL;
        keep_session = &sess;
        srv = tls_store_ssl_new(ts);
        r = handshake(srv, h2, sizeof(h2) - 1, "x.test", maxv);
        assert_true(r.ok);
        X509_free(r.peer);
        SSL_free(srv);
        assert_non_null(sess);
        assert_int_equal(SSL_SESSION_is_resumable(sess), 1);
        resume_with = sess;
        srv = tls_store_ssl_new(ts);
        r = handshake(srv, h2, sizeof(h2) - 1, "x.test", maxv);
        assert_true(r.ok);
        assert_true(r.reused);
        X509_free(r.peer);
        SSL_free(srv);
        srv = tls_store_ssl_new(ts);
        r = handshake(srv, acme, sizeof(acme) - 1, "x.test", maxv);
        resume_with = NULL;
        assert_true(r.ok);
        assert_false(r.reused);
        assert_int_equal(X509_cmp(r.peer, vcert), 0);
        assert_string_equal(r.alpn, "acme-tls/1");
        X509_free(r.peer);
        SSL_free(srv);
        SSL_SESSION_free(sess);
    }

    /* After the clear, the CA's hello gets what anybody gets. */
    acmechal_clear();
    srv = tls_store_ssl_new(ts);
    r = handshake(srv, acme, sizeof(acme) - 1, "x.test", 0);
    assert_true(r.ok);
    assert_int_equal(X509_cmp(r.peer, normal), 0);
    assert_string_equal(r.alpn, "");
    assert_int_equal(r.server_alpn, TLS_ALPN_NONE);
    X509_free(r.peer);
    SSL_free(srv);

    X509_free(vcert);
    EVP_PKEY_free(vkey);
    X509_free(normal);
    tls_store_free(ts);
    config_free(cfg);
}

/* A self-signed pair for @p name (RSA or ECDSA) written to @p cf and @p kf. */
static void write_pair(const char *cf, const char *kf, const char *name, bool rsa)
{
    EVP_PKEY *key = rsa ? EVP_RSA_gen(2048) : EVP_EC_gen("P-256");
    assert_non_null(key);
    X509 *x = X509_new();
    assert_non_null(x);
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), rsa ? 2 : 1);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400);
    X509_set_pubkey(x, key);
    X509_NAME *xn = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(xn, "CN", MBSTRING_ASC, (const unsigned char *)name, -1, -1, 0);
    X509_set_issuer_name(x, xn);
    char san[300];
    snprintf(san, sizeof(san), "DNS:%s", name);
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, x, x, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &ctx, NID_subject_alt_name, san);
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

static bool names_host(X509 *x, const char *name)
{
    return X509_check_host(x, name, 0, 0, NULL) == 1;
}

/*
 * Configured pairs: an ECDSA and an RSA certificate for a.test (the default context), and one
 * for x.test (its own SNI context). The CA's hello for x.test must get the validation
 * certificate although SNI names a configured context (which on_servername must not switch
 * to), and although the default context holds an RSA certificate (which the client's signature
 * algorithms must not be able to pick instead of the validation certificate).
 */
static void test_handshakes_with_files(void **state)
{
    (void)state;
    acmechal_clear();
    char dir[] = "/tmp/dohgate-acmechal-XXXXXX", f[6][64], err[512], fp[128];
    assert_non_null(mkdtemp(dir));
    const char *fn[6] = {"a.pem", "a.key", "ar.pem", "ar.key", "x.pem", "x.key"};
    for (int i = 0; i < 6; i++)
        snprintf(f[i], sizeof(f[i]), "%s/%s", dir, fn[i]);
    write_pair(f[0], f[1], "a.test", false);
    write_pair(f[2], f[3], "a.test", true);
    write_pair(f[4], f[5], "x.test", false);
    struct config *cfg = config_new();
    assert_non_null(cfg);
    for (int i = 0; i < 6; i += 2) {
        assert_int_equal(config_set(cfg, "cert", f[i], "t", 0, err, sizeof(err)), 0);
        assert_int_equal(config_set(cfg, "key", f[i + 1], "t", 0, err, sizeof(err)), 0);
    }
    struct tls_store *ts = tls_store_new(cfg, fp, err, sizeof(err));
    if (!ts)
        fail_msg("store: %s", err);
    unsigned char dg[32];
    digest_of("tok.print", dg);
    assert_int_equal(acmechal_alpn_add("x.test", dg, err, sizeof(err)), 0);
    static const char acme[] = "\x0a"
                               "acme-tls/1";
    static const char h2[] = "\x02h2";
    for (int tls12 = 0; tls12 < 2; tls12++) {
        /* the CA */
        SSL *srv = tls_store_ssl_new(ts);
        struct hs_result r =
            handshake(srv, acme, sizeof(acme) - 1, "x.test", tls12 ? TLS1_2_VERSION : 0);
        assert_true(r.ok);
        assert_true(has_acme_ext(r.peer));
        assert_int_equal(EVP_PKEY_get_base_id(X509_get0_pubkey(r.peer)), EVP_PKEY_EC);
        assert_string_equal(r.alpn, "acme-tls/1");
        X509_free(r.peer);
        SSL_free(srv);
        /* a browser for x.test: x.test's configured certificate */
        srv = tls_store_ssl_new(ts);
        r = handshake(srv, h2, sizeof(h2) - 1, "x.test", tls12 ? TLS1_2_VERSION : 0);
        assert_true(r.ok);
        assert_false(has_acme_ext(r.peer));
        assert_true(names_host(r.peer, "x.test"));
        assert_string_equal(r.alpn, "h2");
        X509_free(r.peer);
        SSL_free(srv);
        /* acme-tls/1 for a.test (nothing pending): a.test's certificate, no ALPN */
        srv = tls_store_ssl_new(ts);
        r = handshake(srv, acme, sizeof(acme) - 1, "a.test", tls12 ? TLS1_2_VERSION : 0);
        assert_true(r.ok);
        assert_false(has_acme_ext(r.peer));
        assert_true(names_host(r.peer, "a.test"));
        assert_string_equal(r.alpn, "");
        X509_free(r.peer);
        SSL_free(srv);
    }
    /* A client that can only verify RSA signatures (TLS 1.2) cannot be served the ECDSA
     * validation certificate: it fails rather than get a.test's RSA certificate with ALPN
     * acme-tls/1. */
    client_sigalgs = "RSA+SHA256:RSA+SHA384";
    SSL *srv = tls_store_ssl_new(ts);
    struct hs_result r = handshake(srv, acme, sizeof(acme) - 1, "x.test", TLS1_2_VERSION);
    assert_false(r.ok);
    SSL_free(srv);
    /* (the same client gets a.test's RSA certificate when nothing is pending for it) */
    srv = tls_store_ssl_new(ts);
    r = handshake(srv, h2, sizeof(h2) - 1, "a.test", TLS1_2_VERSION);
    assert_true(r.ok);
    assert_int_equal(EVP_PKEY_get_base_id(X509_get0_pubkey(r.peer)), EVP_PKEY_RSA);
    X509_free(r.peer);
    SSL_free(srv);
    client_sigalgs = NULL;
    acmechal_clear();
    tls_store_free(ts);
    config_free(cfg);
    for (int i = 0; i < 6; i++)
        unlink(f[i]);
    rmdir(dir);
}

/* ---- http-01 through the router ------------------------------------------------------------ */

static const struct client_id peer = {
    .addr = {192, 0, 2, 7}, .len = 4, .key = {.b = {192, 0, 2, 7}, .len = 4}, .text = "192.0.2.7"};

static void no_wake(void *owner)
{
    (void)owner;
}

/* One request on a new HTTP/1.1 session (@p https: the TLS listener, else port 80) through the
 * real router; the response bytes into @p out (NUL-terminated). */
static const char *request(struct config *cfg, bool https, const char *req, struct dg_buf *out)
{
    struct site site = {.root.fd = -1, .acme.fd = -1, .https_port = 443};
    struct handler_ctx hctx = {.cfg = cfg, .site = &site};
    const struct h1_settings st = {.https = https, .client = &peer};
    struct h1_session *s = h1_session_new(&st, &hctx, no_wake, NULL);
    assert_non_null(s);
    out->len = 0;
    assert_int_equal(h1_session_recv(s, (const uint8_t *)req, strlen(req)), 0);
    assert_int_equal(h1_session_send(s, out, 1 << 20), 0);
    h1_session_free(s);
    assert_int_equal(dg_buf_append(out, "", 1), 0);
    out->len--;
    return (const char *)out->data;
}

static void test_http01_router(void **state)
{
    (void)state;
    dg_log_set_level(DG_LOG_ERR);
    acmechal_clear();
    const char *opts[] = {"acme-domain",    "doh.example", "acme-challenge",
                          "http-01",        "http-listen", "[::1]:80",
                          "acme-state-dir", "/tmp",        NULL};
    struct config *cfg = dt_config_new(opts);
    struct config *plain = dt_config_new(NULL); /* no built-in ACME client */
    struct dg_buf out = {0};
    const char *ka = "tok_-9.thumbprint";
    assert_int_equal(acmechal_http_add("tok_-9", ka), 0);

    const char *o = request(
        cfg, false, "GET /.well-known/acme-challenge/tok_-9 HTTP/1.1\r\nHost: doh.example\r\n\r\n",
        &out);
    assert_non_null(strstr(o, "HTTP/1.1 200 "));
    assert_non_null(strstr(o, "content-type: application/octet-stream\r\n"));
    assert_non_null(strstr(o, "content-length: 17\r\n"));
    const char *body = strstr(o, "\r\n\r\n");
    assert_non_null(body);
    assert_string_equal(body + 4, ka);
    /* HEAD: the same head, no body */
    o = request(cfg, false,
                "HEAD /.well-known/acme-challenge/tok_-9 HTTP/1.1\r\nHost: doh.example\r\n\r\n",
                &out);
    assert_non_null(strstr(o, "HTTP/1.1 200 "));
    assert_non_null(strstr(o, "content-length: 17\r\n"));
    assert_string_equal(strstr(o, "\r\n\r\n") + 4, "");
    /* the answer does not depend on the ACME client's configuration (the table decides) */
    o = request(plain, false,
                "GET /.well-known/acme-challenge/tok_-9 HTTP/1.1\r\nHost: doh.example\r\n\r\n",
                &out);
    assert_non_null(strstr(o, "HTTP/1.1 200 "));

    /* an unknown token: 404 with the built-in client, the redirect as before without it */
    o = request(cfg, false,
                "GET /.well-known/acme-challenge/other HTTP/1.1\r\nHost: doh.example\r\n\r\n",
                &out);
    assert_non_null(strstr(o, "HTTP/1.1 404 "));
    o = request(cfg, false,
                "GET /.well-known/acme-challenge/tok_-9?x HTTP/1.1\r\nHost: doh.example\r\n\r\n",
                &out);
    assert_non_null(strstr(o, "HTTP/1.1 404 "));
    o = request(plain, false,
                "GET /.well-known/acme-challenge/other HTTP/1.1\r\nHost: doh.example\r\n\r\n",
                &out);
    assert_non_null(strstr(o, "HTTP/1.1 301 "));

    /* other methods and other paths: the redirect */
    o = request(cfg, false,
                "POST /.well-known/acme-challenge/tok_-9 HTTP/1.1\r\nHost: doh.example\r\n"
                "Content-Length: 0\r\n\r\n",
                &out);
    assert_null(strstr(o, ka));
    o = request(cfg, false, "GET /tok_-9 HTTP/1.1\r\nHost: doh.example\r\n\r\n", &out);
    assert_non_null(strstr(o, "HTTP/1.1 301 "));

    /* never on the TLS listener */
    o = request(cfg, true,
                "GET /.well-known/acme-challenge/tok_-9 HTTP/1.1\r\nHost: doh.example\r\n\r\n",
                &out);
    assert_null(strstr(o, ka));
    assert_null(strstr(o, "HTTP/1.1 200 "));

    /* cleared: 404 */
    acmechal_clear();
    o = request(cfg, false,
                "GET /.well-known/acme-challenge/tok_-9 HTTP/1.1\r\nHost: doh.example\r\n\r\n",
                &out);
    assert_non_null(strstr(o, "HTTP/1.1 404 "));

    dg_buf_free(&out);
    config_free(cfg);
    config_free(plain);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_validation_cert), cmocka_unit_test(test_hello_parse),
        cmocka_unit_test(test_http_table),      cmocka_unit_test(test_table_limit),
        cmocka_unit_test(test_handshakes),      cmocka_unit_test(test_handshakes_with_files),
        cmocka_unit_test(test_http01_router),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    acmechal_clear();
    return rc;
}
