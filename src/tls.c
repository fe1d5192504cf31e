#include "dohgate/tls.h"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <string.h>

#include "dohgate/config.h"
#include "dohgate/log.h"

/* TLS 1.2: forward secrecy and AEAD only. TLS 1.3 suites are all AEAD; OpenSSL's default order
 * (AES-GCM first, which has hardware support here) is kept. */
static const char tls12_ciphers[] = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
                                    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
                                    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";
static const char tls_groups[] = "X25519:P-256:P-384";

static void ssl_err_to(char *err, size_t errlen, const char *what)
{
    unsigned long e = ERR_get_error();
    char buf[256] = "";
    if (e)
        ERR_error_string_n(e, buf, sizeof(buf));
    snprintf(err, errlen, "%s%s%s", what, e ? ": " : "", buf);
    ERR_clear_error();
}

/* Prefer h2; accept http/1.1 so that a 1.1-only client gets a readable HTTP error instead of
 * a handshake failure. Any other offer proceeds without ALPN. */
static int on_alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                          const unsigned char *in, unsigned int inlen, void *arg)
{
    static const unsigned char prefs[] = "\x02h2\x08http/1.1";
    unsigned char *sel = NULL;
    unsigned char sellen = 0;
    if (SSL_select_next_proto(&sel, &sellen, prefs, sizeof(prefs) - 1, in, inlen) ==
        OPENSSL_NPN_NEGOTIATED) {
        *out = sel;
        *outlen = sellen;
        return SSL_TLSEXT_ERR_OK;
    }
    return SSL_TLSEXT_ERR_NOACK;
}

enum tls_alpn tls_alpn_get(const SSL *ssl)
{
    const unsigned char *p = NULL;
    unsigned int len = 0;
    SSL_get0_alpn_selected(ssl, &p, &len);
    if (len == 2 && memcmp(p, "h2", 2) == 0)
        return TLS_ALPN_H2;
    if (len == 8 && memcmp(p, "http/1.1", 8) == 0)
        return TLS_ALPN_HTTP11;
    return TLS_ALPN_NONE;
}

static int add_ext(X509 *cert, int nid, const char *value)
{
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, cert, cert, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
    if (!ext)
        return -1;
    int ok = X509_add_ext(cert, ext, -1);
    X509_EXTENSION_free(ext);
    return ok ? 0 : -1;
}

/* An ephemeral ECDSA P-256 certificate: browsers will not trust it, but it lets `dohgate` run
 * with no set-up at all, and clients can pin the printed fingerprint. */
static int make_self_signed(SSL_CTX *ctx, const char *name, char *fingerprint, char *err,
                            size_t errlen)
{
    int rc = -1;
    X509 *cert = NULL;
    EVP_PKEY *key = EVP_EC_gen("P-256");
    if (!key) {
        ssl_err_to(err, errlen, "generating an EC key");
        goto out;
    }
    cert = X509_new();
    if (!cert)
        goto oom;
    X509_set_version(cert, 2);
    unsigned char serial[16];
    BIGNUM *bn = NULL;
    if (RAND_bytes(serial, sizeof(serial)) != 1 || !(bn = BN_bin2bn(serial, sizeof(serial), NULL)))
        goto oom;
    BN_set_bit(bn, 0);
    BN_clear_bit(bn, 127); /* positive, fixed size */
    BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert));
    BN_free(bn);
    X509_gmtime_adj(X509_getm_notBefore(cert), -3600);
    X509_gmtime_adj(X509_getm_notAfter(cert), 30L * 24 * 3600);
    X509_set_pubkey(cert, key);
    X509_NAME *xn = X509_get_subject_name(cert);
    X509_NAME_add_entry_by_txt(xn, "CN", MBSTRING_ASC, (const unsigned char *)name, -1, -1, 0);
    X509_set_issuer_name(cert, xn);
    char san[512];
    snprintf(san, sizeof(san), "DNS:%s,DNS:localhost,IP:127.0.0.1,IP:::1", name);
    if (strcmp(name, "localhost") == 0)
        snprintf(san, sizeof(san), "DNS:localhost,IP:127.0.0.1,IP:::1");
    if (add_ext(cert, NID_subject_alt_name, san) ||
        add_ext(cert, NID_basic_constraints, "CA:FALSE") ||
        add_ext(cert, NID_ext_key_usage, "serverAuth")) {
        ssl_err_to(err, errlen, "building the self-signed certificate (is server-name valid?)");
        goto out;
    }
    if (!X509_sign(cert, key, EVP_sha256())) {
        ssl_err_to(err, errlen, "signing the self-signed certificate");
        goto out;
    }
    if (SSL_CTX_use_certificate(ctx, cert) != 1 || SSL_CTX_use_PrivateKey(ctx, key) != 1) {
        ssl_err_to(err, errlen, "using the self-signed certificate");
        goto out;
    }
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    X509_digest(cert, EVP_sha256(), md, &mdlen);
    for (unsigned int i = 0; i < mdlen && i < 32; i++)
        snprintf(fingerprint + i * 3, 4, i + 1 < mdlen ? "%02X:" : "%02X", md[i]);
    rc = 0;
    goto out;
oom:
    ssl_err_to(err, errlen, "out of memory making the self-signed certificate");
out:
    X509_free(cert);
    EVP_PKEY_free(key);
    return rc;
}

SSL_CTX *tls_ctx_new(const struct config *cfg, char *fingerprint, char *err, size_t errlen)
{
    fingerprint[0] = '\0';
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        ssl_err_to(err, errlen, "SSL_CTX_new");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
                                 SSL_OP_CIPHER_SERVER_PREFERENCE);
    /* Partial writes let the connection keep its output buffer and retry from where it was. */
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    if (SSL_CTX_set_cipher_list(ctx, tls12_ciphers) != 1 ||
        SSL_CTX_set1_groups_list(ctx, tls_groups) != 1) {
        ssl_err_to(err, errlen, "setting ciphers/groups");
        goto fail;
    }
    SSL_CTX_set_alpn_select_cb(ctx, on_alpn_select, NULL);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
    SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"dohgate", 7);

    if (cfg->cert_file) {
        if (SSL_CTX_use_certificate_chain_file(ctx, cfg->cert_file) != 1) {
            char what[600];
            snprintf(what, sizeof(what), "cannot load certificate chain %s", cfg->cert_file);
            ssl_err_to(err, errlen, what);
            goto fail;
        }
        if (SSL_CTX_use_PrivateKey_file(ctx, cfg->key_file, SSL_FILETYPE_PEM) != 1) {
            char what[600];
            snprintf(what, sizeof(what), "cannot load private key %s", cfg->key_file);
            ssl_err_to(err, errlen, what);
            goto fail;
        }
        if (SSL_CTX_check_private_key(ctx) != 1) {
            char what[1200];
            snprintf(what, sizeof(what), "key %s does not match certificate %s", cfg->key_file,
                     cfg->cert_file);
            ssl_err_to(err, errlen, what);
            goto fail;
        }
    } else if (make_self_signed(ctx, cfg->server_name ? cfg->server_name : "localhost", fingerprint,
                                err, errlen) != 0) {
        goto fail;
    }
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}
