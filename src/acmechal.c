/* The pending ACME challenges (acmechal.h): one table per process, written by the ACME client's
 * thread, read by the workers during handshakes and port-80 requests. */
#include "dohgate/acmechal.h"
#include "dohgate/log.h"

#include <openssl/asn1.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/objects.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* An order of Let's Encrypt has at most 100 names; twice that leaves room for another CA. */
#define MAX_CHALLENGES 256
/* RFC 8555 §8.3: a token has at least 128 bits of entropy, base64url (43 characters from Let's
 * Encrypt); 128 is the contract's bound. The key authorization is token "." thumbprint (43). */
#define MAX_TOKEN   128
#define MAX_KEYAUTH 512
/* The validation certificate only has to outlive the CA's look at it (seconds), but the CA's
 * clock may be off: valid from an hour ago for a week. */
#define CERT_BACKDATE_S 3600L
#define CERT_LIFETIME_S (7L * 24 * 3600)

struct alpn_chal {
    char name[256];
    X509 *cert;
    EVP_PKEY *key;
};

struct http_chal {
    char token[MAX_TOKEN + 1];
    char *keyauth;
};

/* The mutex guards both arrays; `pending` (their total) is written under it and read without
 * it, so that a handshake skips the table while nothing is pending. */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static struct alpn_chal alpn_tab[MAX_CHALLENGES];
static size_t n_alpn;
static struct http_chal http_tab[MAX_CHALLENGES];
static size_t n_http;
static atomic_size_t pending;

/* A name the CA can validate with tls-alpn-01: lower-case LDH labels, no wildcard (RFC 8737 §3
 * forbids tls-alpn-01 for wildcard names), no empty label, no trailing dot. */
static bool name_ok(const char *name)
{
    size_t len = strlen(name);
    if (len == 0 || len > 253 || name[0] == '.' || name[len - 1] == '.')
        return false;
    for (size_t i = 0; i < len; i++) {
        char ch = name[i];
        bool ldh = (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-' || ch == '_';
        if (!ldh && !(ch == '.' && name[i + 1] != '.'))
            return false;
    }
    return true;
}

static bool token_ok(const char *token)
{
    size_t len = strlen(token);
    if (len == 0 || len > MAX_TOKEN)
        return false;
    for (size_t i = 0; i < len; i++) {
        char ch = token[i];
        if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
              ch == '-' || ch == '_'))
            return false;
    }
    return true;
}

/* Printable ASCII only: it is sent as the body of a 200 as it is. */
static bool keyauth_ok(const char *ka)
{
    size_t len = strlen(ka);
    if (len == 0 || len > MAX_KEYAUTH)
        return false;
    for (size_t i = 0; i < len; i++)
        if (ka[i] <= ' ' || ka[i] > '~')
            return false;
    return true;
}

/*
 * RFC 8737 §3: self-signed, a dNSName SAN with the name and nothing else, and the critical
 * id-pe-acmeIdentifier extension whose extnValue is the DER of `Authorization ::= OCTET STRING
 * (SIZE (32))`, i.e. 04 20 <digest>. The subject is a fixed CN (as lego's): a CN is limited to
 * 64 characters, a name to 253, and the CA reads only the SAN.
 */
static int make_cert(const char *name, const unsigned char digest[32], X509 **out_cert,
                     EVP_PKEY **out_key, char *err, size_t errlen)
{
    int rc = -1;
    X509 *x = NULL;
    GENERAL_NAMES *gens = NULL;
    ASN1_OBJECT *oid = NULL;
    ASN1_OCTET_STRING *val = NULL;
    X509_EXTENSION *ext = NULL;
    BIGNUM *bn = NULL;
    EVP_PKEY *key = EVP_EC_gen("P-256");
    if (!key) {
        dg_ssl_err_to(err, errlen, "generating the validation key");
        goto out;
    }
    unsigned char serial[16];
    if (!(x = X509_new()) || X509_set_version(x, X509_VERSION_3) != 1 ||
        RAND_bytes(serial, sizeof(serial)) != 1 ||
        !(bn = BN_bin2bn(serial, sizeof(serial), NULL)) || !BN_set_bit(bn, 0) ||
        !BN_clear_bit(bn, 127) || !BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) ||
        !X509_gmtime_adj(X509_getm_notBefore(x), -CERT_BACKDATE_S) ||
        !X509_gmtime_adj(X509_getm_notAfter(x), CERT_LIFETIME_S) || X509_set_pubkey(x, key) != 1 ||
        X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                                   (const unsigned char *)"ACME challenge", -1, -1, 0) != 1 ||
        X509_set_issuer_name(x, X509_get_subject_name(x)) != 1) {
        dg_ssl_err_to(err, errlen, "building the validation certificate");
        goto out;
    }

    GENERAL_NAME *gn = GENERAL_NAME_new();
    ASN1_IA5STRING *ia5 = ASN1_IA5STRING_new();
    if (!gn || !ia5 || ASN1_STRING_set(ia5, name, -1) != 1 || !(gens = GENERAL_NAMES_new())) {
        GENERAL_NAME_free(gn);
        ASN1_IA5STRING_free(ia5);
        dg_ssl_err_to(err, errlen, "out of memory (validation certificate)");
        goto out;
    }
    GENERAL_NAME_set0_value(gn, GEN_DNS, ia5);
    if (!sk_GENERAL_NAME_push(gens, gn)) {
        GENERAL_NAME_free(gn);
        dg_ssl_err_to(err, errlen, "out of memory (validation certificate)");
        goto out;
    }
    if (X509_add1_ext_i2d(x, NID_subject_alt_name, gens, 0, X509V3_ADD_DEFAULT) != 1) {
        dg_ssl_err_to(err, errlen, "adding the SAN");
        goto out;
    }

    unsigned char der[2 + 32] = {V_ASN1_OCTET_STRING, 32};
    memcpy(der + 2, digest, 32);
    if (!(oid = OBJ_txt2obj("1.3.6.1.5.5.7.1.31", 1)) || !(val = ASN1_OCTET_STRING_new()) ||
        ASN1_OCTET_STRING_set(val, der, sizeof(der)) != 1 ||
        !(ext = X509_EXTENSION_create_by_OBJ(NULL, oid, 1, val)) || X509_add_ext(x, ext, -1) != 1) {
        dg_ssl_err_to(err, errlen, "adding the acmeIdentifier extension");
        goto out;
    }
    if (X509_sign(x, key, EVP_sha256()) <= 0) {
        dg_ssl_err_to(err, errlen, "signing the validation certificate");
        goto out;
    }
    *out_cert = x;
    *out_key = key;
    x = NULL;
    key = NULL;
    rc = 0;
out:
    BN_free(bn);
    X509_EXTENSION_free(ext);
    ASN1_OCTET_STRING_free(val);
    ASN1_OBJECT_free(oid);
    GENERAL_NAMES_free(gens);
    X509_free(x);
    EVP_PKEY_free(key);
    return rc;
}

int acmechal_alpn_add(const char *name, const unsigned char digest[32], char *err, size_t errlen)
{
    if (!name_ok(name)) {
        snprintf(err, errlen, "not a lower-case DNS name tls-alpn-01 can validate: \"%.64s\"",
                 name);
        return -1;
    }
    X509 *cert = NULL;
    EVP_PKEY *key = NULL;
    /* Built outside the lock: key generation and signing take a millisecond or so. */
    if (make_cert(name, digest, &cert, &key, err, errlen) != 0)
        return -1;
    X509 *old_cert = NULL;
    EVP_PKEY *old_key = NULL;
    int rc = 0;
    pthread_mutex_lock(&mu);
    size_t i = 0;
    while (i < n_alpn && strcmp(alpn_tab[i].name, name) != 0)
        i++;
    if (i < n_alpn) {
        old_cert = alpn_tab[i].cert;
        old_key = alpn_tab[i].key;
    } else if (n_alpn + n_http < MAX_CHALLENGES) {
        snprintf(alpn_tab[i].name, sizeof(alpn_tab[i].name), "%s", name);
        n_alpn++;
        atomic_fetch_add_explicit(&pending, 1, memory_order_relaxed);
    } else {
        rc = -1;
    }
    if (rc == 0) {
        alpn_tab[i].cert = cert;
        alpn_tab[i].key = key;
        cert = NULL;
        key = NULL;
    }
    pthread_mutex_unlock(&mu);
    if (rc != 0)
        snprintf(err, errlen, "too many challenges pending (%d)", MAX_CHALLENGES);
    X509_free(cert);
    EVP_PKEY_free(key);
    X509_free(old_cert);
    EVP_PKEY_free(old_key);
    return rc;
}

int acmechal_http_add(const char *token, const char *key_authorization)
{
    if (!token_ok(token) || !keyauth_ok(key_authorization))
        return -1;
    char *ka = strdup(key_authorization);
    if (!ka)
        return -1;
    int rc = 0;
    pthread_mutex_lock(&mu);
    size_t i = 0;
    while (i < n_http && strcmp(http_tab[i].token, token) != 0)
        i++;
    if (i < n_http) {
        char *old = http_tab[i].keyauth;
        http_tab[i].keyauth = ka;
        ka = old; /* freed below */
    } else if (n_alpn + n_http < MAX_CHALLENGES) {
        snprintf(http_tab[i].token, sizeof(http_tab[i].token), "%s", token);
        http_tab[i].keyauth = ka;
        ka = NULL;
        n_http++;
        atomic_fetch_add_explicit(&pending, 1, memory_order_relaxed);
    } else {
        rc = -1;
    }
    pthread_mutex_unlock(&mu);
    free(ka);
    return rc;
}

void acmechal_clear(void)
{
    pthread_mutex_lock(&mu);
    for (size_t i = 0; i < n_alpn; i++) {
        X509_free(alpn_tab[i].cert);
        EVP_PKEY_free(alpn_tab[i].key);
    }
    for (size_t i = 0; i < n_http; i++)
        free(http_tab[i].keyauth);
    memset(alpn_tab, 0, n_alpn * sizeof(alpn_tab[0]));
    memset(http_tab, 0, n_http * sizeof(http_tab[0]));
    n_alpn = n_http = 0;
    atomic_store_explicit(&pending, 0, memory_order_relaxed);
    pthread_mutex_unlock(&mu);
}

bool acmechal_pending(void)
{
    return atomic_load_explicit(&pending, memory_order_relaxed) > 0;
}

bool acmechal_alpn_get(const char *name, X509 **cert, EVP_PKEY **key)
{
    bool found = false;
    pthread_mutex_lock(&mu);
    for (size_t i = 0; i < n_alpn && !found; i++) {
        if (strcmp(alpn_tab[i].name, name) != 0)
            continue;
        /* References of the caller's own: a clear() meanwhile does not pull them away. */
        if (X509_up_ref(alpn_tab[i].cert) != 1)
            break;
        if (EVP_PKEY_up_ref(alpn_tab[i].key) != 1) {
            X509_free(alpn_tab[i].cert);
            break;
        }
        *cert = alpn_tab[i].cert;
        *key = alpn_tab[i].key;
        found = true;
    }
    pthread_mutex_unlock(&mu);
    return found;
}

size_t acmechal_http_get(const char *token, char *out, size_t outlen)
{
    size_t len = 0;
    if (strlen(token) > MAX_TOKEN)
        return 0;
    pthread_mutex_lock(&mu);
    for (size_t i = 0; i < n_http; i++) {
        if (strcmp(http_tab[i].token, token) != 0)
            continue;
        size_t n = strlen(http_tab[i].keyauth);
        if (n < outlen) { /* one that does not fit is not answered half */
            memcpy(out, http_tab[i].keyauth, n + 1);
            len = n;
        }
        break;
    }
    pthread_mutex_unlock(&mu);
    return len;
}

/* ---- the ClientHello ------------------------------------------------------------------------ */

/* RFC 7301 §3.1: ProtocolNameList = 2-byte length, then 1-byte-length IDs, none empty, and the
 * list exactly fills the extension. */
static bool alpn_offers_acme(const unsigned char *p, size_t len)
{
    if (!p || len < 2)
        return false;
    size_t list = (size_t)p[0] << 8 | p[1];
    if (list == 0 || list != len - 2)
        return false;
    bool found = false;
    for (size_t i = 2; i < len;) {
        size_t n = p[i++];
        if (n == 0 || n > len - i)
            return false;
        if (n == sizeof(ACMECHAL_ALPN) - 1 && memcmp(p + i, ACMECHAL_ALPN, n) == 0)
            found = true;
        i += n;
    }
    return found;
}

/* RFC 6066 §3: ServerNameList = 2-byte length, then entries of a type and a 2-byte-length name.
 * As OpenSSL's own parser: exactly one entry, of type host_name (0), so that what we match is
 * the name OpenSSL reports afterwards. Host-name characters and no empty label (no NUL, no
 * space: the name is only ever compared, but a strict parser has nothing to surprise us with). */
static bool sni_host(const unsigned char *p, size_t len, char name[256])
{
    if (!p || len < 5)
        return false;
    size_t list = (size_t)p[0] << 8 | p[1];
    size_t n = (size_t)p[3] << 8 | p[4];
    if (list != len - 2 || p[2] != 0 || n == 0 || n != len - 5 || n > 255)
        return false;
    const unsigned char *h = p + 5;
    if (h[n - 1] == '.')
        n--; /* the absolute form: the same name */
    if (n == 0 || n > 253)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = h[i];
        if (ch >= 'A' && ch <= 'Z')
            ch = (unsigned char)(ch - 'A' + 'a');
        else if (ch == '.' ? i == 0 || i == n - 1 || h[i - 1] == '.'
                           : !((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-' ||
                               ch == '_'))
            return false; /* an empty label, or not a host-name character */
        name[i] = (char)ch;
    }
    name[n] = '\0';
    return true;
}

bool acmechal_hello_parse(const unsigned char *alpn, size_t alpn_len, const unsigned char *sni,
                          size_t sni_len, char name[256])
{
    name[0] = '\0';
    if (!alpn_offers_acme(alpn, alpn_len) || !sni_host(sni, sni_len, name)) {
        name[0] = '\0';
        return false;
    }
    return true;
}
