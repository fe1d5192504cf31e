#include "dohgate/tls.h"

#include <ctype.h>
#include <errno.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ocsp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include "dohgate/acmechal.h"
#include "dohgate/config.h"
#include "dohgate/log.h"
#include "dohgate/tickets.h"

/* TLS 1.2: forward secrecy and AEAD only. TLS 1.3 suites are all AEAD; OpenSSL's default order
 * (AES-GCM first, which has hardware support here) is kept. */
static const char tls12_ciphers[] = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
                                    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
                                    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";
static const char tls_groups[] = "X25519:P-256:P-384";

/* The ex_data slots that mark an SSL: a DoT connection's (tls_ssl_set_dot()), and a handshake
 * answering a tls-alpn-01 challenge (on_client_hello()). Made once, before the first context
 * (ctx_base()), so that the workers only ever read the indices. */
static int dot_index = -1, acme_index = -1;
static pthread_once_t mark_index_once = PTHREAD_ONCE_INIT;
static char dot_marker, acme_marker; /* the slots' values: their addresses, never read */

static void mark_index_init(void)
{
    dot_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
    acme_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
}

int tls_ssl_set_dot(SSL *ssl)
{
    pthread_once(&mark_index_once, mark_index_init);
    if (dot_index < 0 || SSL_set_ex_data(ssl, dot_index, &dot_marker) != 1) {
        ERR_clear_error();
        return -ENOMEM;
    }
    return 0;
}

static bool ssl_is_dot(SSL *ssl)
{
    return dot_index >= 0 && SSL_get_ex_data(ssl, dot_index) == &dot_marker;
}

static bool ssl_is_acme(SSL *ssl)
{
    return acme_index >= 0 && SSL_get_ex_data(ssl, acme_index) == &acme_marker;
}

/*
 * tls-alpn-01 (RFC 8737): OpenSSL calls this first thing on every ClientHello (a second time
 * after a HelloRetryRequest), on a worker thread, before SNI, resumption, certificate and ALPN
 * are looked at. While nothing is pending it costs one relaxed load. Otherwise a hello offering
 * ALPN acme-tls/1 for a name with a challenge pending gets that name's validation certificate
 * as its only one (so that signature algorithms cannot pick a configured RSA certificate), and
 * the SSL is marked: on_servername keeps it on its context (switching would bring the
 * context's certificates back), on_alpn_select selects acme-tls/1 only, no OCSP staple, no
 * ticket and no resumption (the CA must see the certificate). Every other hello, DoT's too
 * (tls-alpn-01 is validated on port 443 only), goes on unchanged.
 */
static int on_client_hello(SSL *ssl, int *al, void *arg)
{
    (void)arg;
    bool marked = ssl_is_acme(ssl);
    if ((!acmechal_pending() && !marked) || ssl_is_dot(ssl))
        return SSL_CLIENT_HELLO_SUCCESS;
    const unsigned char *alpn = NULL, *sni = NULL;
    size_t alpn_len = 0, sni_len = 0;
    char name[256];
    X509 *cert = NULL;
    EVP_PKEY *key = NULL;
    bool want = SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_application_layer_protocol_negotiation,
                                          &alpn, &alpn_len) == 1 &&
                SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_server_name, &sni, &sni_len) == 1 &&
                acmechal_hello_parse(alpn, alpn_len, sni, sni_len, name) &&
                acmechal_alpn_get(name, &cert, &key);
    if (!want) {
        /* A second hello (after HelloRetryRequest) that no longer asks for the challenge it
         * was marked for: the certificates were replaced already, so end it. */
        if (marked) {
            *al = SSL_AD_HANDSHAKE_FAILURE;
            return SSL_CLIENT_HELLO_ERROR;
        }
        return SSL_CLIENT_HELLO_SUCCESS;
    }
    SSL_certs_clear(ssl);
    bool ok = SSL_use_cert_and_key(ssl, cert, key, NULL, 1) == 1 &&
              (marked || SSL_set_ex_data(ssl, acme_index, &acme_marker) == 1);
    X509_free(cert);
    EVP_PKEY_free(key);
    if (!ok) {
        ERR_clear_error();
        *al = SSL_AD_INTERNAL_ERROR;
        return SSL_CLIENT_HELLO_ERROR;
    }
    SSL_set_options(ssl, SSL_OP_NO_TICKET); /* TLS 1.2 tickets; no cache either (ctx_base) */
    SSL_set_num_tickets(ssl, 0);            /* TLS 1.3 */
    return SSL_CLIENT_HELLO_SUCCESS;
}

/*
 * HTTPS listener: prefer h2; accept http/1.1 so that a 1.1-only client gets a readable HTTP error
 * instead of a handshake failure. Any other offer ("dot" too: a DoT client sent to the HTTPS
 * port) proceeds without ALPN, which is HTTP/1.1 (conn.c), as it always has: scripts and odd
 * clients keep working, and a DoT client there gets an HTTP error it can show.
 *
 * DoT listener: "dot" (RFC 7858's ALPN ID, which RFC 9103 §7.1 requires and SVCB/DDR
 * advertise, RFC 9461) when offered. An offer without it (a browser, an HTTP client sent to
 * port 853) is refused with the no_application_protocol alert, as RFC 7301 §3.2 says a server
 * that supports none of the offered protocols SHALL, and as NSD does: carrying on would have it
 * speak HTTP to a DNS session. No ALPN at all is accepted: RFC 7858 clients predate the ID
 * (kdig +tls, older stubby, Android's private DNS send none or "dot").
 */
static int on_alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                          const unsigned char *in, unsigned int inlen, void *arg)
{
    static const unsigned char https_prefs[] = "\x02h2\x08http/1.1";
    static const unsigned char dot_prefs[] = "\x03"
                                             "dot";
    static const unsigned char acme_prefs[] = "\x0a" ACMECHAL_ALPN;
    if (ssl_is_acme(ssl)) {
        /* on_client_hello() saw acme-tls/1 offered; RFC 8737 §3: exactly that protocol */
        unsigned char *sel = NULL;
        unsigned char sellen = 0;
        if (SSL_select_next_proto(&sel, &sellen, acme_prefs, sizeof(acme_prefs) - 1, in, inlen) !=
            OPENSSL_NPN_NEGOTIATED)
            return SSL_TLSEXT_ERR_ALERT_FATAL;
        *out = sel;
        *outlen = sellen;
        return SSL_TLSEXT_ERR_OK;
    }
    bool dot = ssl_is_dot(ssl);
    const unsigned char *prefs = dot ? dot_prefs : https_prefs;
    unsigned int plen = dot ? sizeof(dot_prefs) - 1 : sizeof(https_prefs) - 1;
    unsigned char *sel = NULL;
    unsigned char sellen = 0;
    if (SSL_select_next_proto(&sel, &sellen, prefs, plen, in, inlen) == OPENSSL_NPN_NEGOTIATED) {
        *out = sel;
        *outlen = sellen;
        return SSL_TLSEXT_ERR_OK;
    }
    /* OpenSSL sends no_application_protocol for ALERT_FATAL. */
    return dot ? SSL_TLSEXT_ERR_ALERT_FATAL : SSL_TLSEXT_ERR_NOACK;
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
    if (len == 3 && memcmp(p, "dot", 3) == 0)
        return TLS_ALPN_DOT;
    if (len == sizeof(ACMECHAL_ALPN) - 1 && memcmp(p, ACMECHAL_ALPN, len) == 0)
        return TLS_ALPN_ACME;
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
        dg_ssl_err_to(err, errlen, "generating an EC key");
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
        dg_ssl_err_to(err, errlen, "building the self-signed certificate (is server-name valid?)");
        goto out;
    }
    if (!X509_sign(cert, key, EVP_sha256())) {
        dg_ssl_err_to(err, errlen, "signing the self-signed certificate");
        goto out;
    }
    if (SSL_CTX_use_certificate(ctx, cert) != 1 || SSL_CTX_use_PrivateKey(ctx, key) != 1) {
        dg_ssl_err_to(err, errlen, "using the self-signed certificate");
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
    dg_ssl_err_to(err, errlen, "out of memory making the self-signed certificate");
out:
    X509_free(cert);
    EVP_PKEY_free(key);
    return rc;
}

/* ---- one generation ------------------------------------------------------------------------ */

#define MAX_NAMES_PER_CERT 100

/* The cert/key options, and the ACME client's pair */
#define MAX_PAIRS (DG_CONFIG_MAX_LIST + 1)

struct sni_entry {
    char *name;   /* lower-case; "*.example.net" for a wildcard */
    SSL_CTX *ctx; /* the group's context (not a reference of its own) */
};

/* Everything a generation owns besides its default SSL_CTX. Hung on the default SSL_CTX as
 * ex_data, so it is freed with it: after the last connection of the generation closes. */
struct tls_gen {
    SSL_CTX *extra[MAX_PAIRS]; /* contexts of groups 2..n, one reference each */
    size_t n_extra;
    struct sni_entry *names;
    size_t n_names;
    struct tls_cert_info certs[MAX_PAIRS];
    char acme_file[4096]; /* the ACME pair's cert file name (certs[].file points here) */
    size_t n_certs;
    /* OCSP staples by certificate: leaf[i] is the X509 its context serves (the context holds
     * the reference), ocsp[i] a DER response or NULL */
    const X509 *leaf[MAX_PAIRS];
    unsigned char *ocsp[MAX_PAIRS];
    size_t ocsp_len[MAX_PAIRS];
};

static int gen_index = -1;
static pthread_once_t gen_index_once = PTHREAD_ONCE_INIT;

static void gen_free(struct tls_gen *g)
{
    if (!g)
        return;
    for (size_t i = 0; i < g->n_extra; i++)
        SSL_CTX_free(g->extra[i]);
    for (size_t i = 0; i < g->n_names; i++)
        free(g->names[i].name);
    for (size_t i = 0; i < g->n_certs; i++)
        OPENSSL_free(g->ocsp[i]);
    free(g->names);
    free(g);
}

static void gen_ex_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
    (void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
    gen_free(ptr);
}

static void gen_index_init(void)
{
    gen_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, gen_ex_free);
}

bool tls_name_matches(const char *pattern, const char *name)
{
    if (pattern[0] == '*' && pattern[1] == '.') {
        /* RFC 6125 §6.4.3: the wildcard covers exactly one left-most label */
        const char *dot = strchr(name, '.');
        return dot && dot != name && strcmp(dot + 1, pattern + 2) == 0;
    }
    return strcmp(pattern, name) == 0;
}

/* Runs inside SSL_do_handshake on a worker thread, once per ClientHello. */
static int on_servername(SSL *ssl, int *alert, void *arg)
{
    const struct tls_gen *g = arg;
    if (ssl_is_acme(ssl))
        return SSL_TLSEXT_ERR_OK; /* a new context would bring its certificates back */
    const char *sn = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    if (!sn)
        return SSL_TLSEXT_ERR_OK; /* no SNI (an IP address URL): the default certificate */
    char name[256];
    size_t len = strlen(sn);
    if (len >= sizeof(name))
        return SSL_TLSEXT_ERR_OK;
    for (size_t i = 0; i <= len; i++)
        name[i] = (char)tolower((unsigned char)sn[i]);
    if (len > 0 && name[len - 1] == '.')
        name[len - 1] = '\0';
    SSL_CTX *pick = NULL;
    for (size_t i = 0; i < g->n_names && !pick; i++)
        if (g->names[i].name[0] != '*' && strcmp(g->names[i].name, name) == 0)
            pick = g->names[i].ctx;
    for (size_t i = 0; i < g->n_names && !pick; i++)
        if (g->names[i].name[0] == '*' && tls_name_matches(g->names[i].name, name))
            pick = g->names[i].ctx;
    /* An unknown name gets the default certificate, as nginx and Caddy do; the client decides. */
    if (pick && pick != SSL_get_SSL_CTX(ssl) && !SSL_set_SSL_CTX(ssl, pick)) {
        *alert = SSL_AD_INTERNAL_ERROR;
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    }
    return SSL_TLSEXT_ERR_OK;
}

/* Encrypted keys are not supported: without this, OpenSSL would ask for a passphrase on the
 * terminal and block the reload (or the start) forever. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    (void)buf, (void)size, (void)rwflag, (void)u;
    return -1;
}

/* The settings every context of ours shares. ALPN is per context because a handshake moved to
 * another group's context by SNI selects ALPN with that context's callback. */
static SSL_CTX *ctx_base(struct ticket_ring *ring, char *err, size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        dg_ssl_err_to(err, errlen, "SSL_CTX_new");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
                                 SSL_OP_CIPHER_SERVER_PREFERENCE);
    /* Partial writes let the connection keep its output buffer and retry from where it was. */
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                              SSL_MODE_RELEASE_BUFFERS);
    /* One TLS 1.3 ticket per full handshake, not OpenSSL's default two: our tickets are
     * stateless and may be used more than once, so a second one buys a client nothing, and
     * each costs a session encoding, an encryption and a MAC during the handshake. The price:
     * a client that uses each ticket once (browsers) resumes only one of several connections
     * it opens at the same moment; a DoH client keeps one HTTP/2 connection. */
    SSL_CTX_set_num_tickets(ctx, 1);
    /* Read whole socket buffers, not a 5-byte record header and then its body: 15 read(2)
     * calls per new connection became 4 (strace, h2load -c 100 -n 100 -m 1). conn.c asks
     * SSL_has_pending() for records read ahead but not processed yet. */
    SSL_CTX_set_read_ahead(ctx, 1);
    if (SSL_CTX_set_cipher_list(ctx, tls12_ciphers) != 1 ||
        SSL_CTX_set1_groups_list(ctx, tls_groups) != 1) {
        dg_ssl_err_to(err, errlen, "setting ciphers/groups");
        SSL_CTX_free(ctx);
        return NULL;
    }
    SSL_CTX_set_alpn_select_cb(ctx, on_alpn_select, NULL);
    /* OpenSSL takes it from the handshake's first context; on every one all the same. */
    pthread_once(&mark_index_once, mark_index_init);
    if (acme_index < 0) {
        dg_ssl_err_to(err, errlen, "SSL_get_ex_new_index");
        SSL_CTX_free(ctx);
        return NULL;
    }
    SSL_CTX_set_client_hello_cb(ctx, on_client_hello, NULL);
    SSL_CTX_set_default_passwd_cb(ctx, no_passphrase);
    /* Resumption is by tickets only (tickets.c: stateless, shared by workers and reloads).
     * OpenSSL's own session cache would keep up to 20,480 TLS 1.2 sessions per context behind
     * a lock and walk them every 255 handshakes, for clients that resume by session ID only. */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"dohgate", 7);
    /* On every context: OpenSSL takes the callback from the handshake's first context, the
     * callback finds the ring on the one SNI may have switched to. */
    if (ticket_ring_install(ctx, ring) != 0) {
        dg_ssl_err_to(err, errlen, "setting up session tickets");
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The certificate's DNS names (its CN when it has none), lower-cased and sorted. */
static size_t cert_names(X509 *x, char *out[MAX_NAMES_PER_CERT])
{
    size_t n = 0;
    GENERAL_NAMES *sans = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    for (int i = 0; sans && i < sk_GENERAL_NAME_num(sans) && n < MAX_NAMES_PER_CERT; i++) {
        const GENERAL_NAME *gn = sk_GENERAL_NAME_value(sans, i);
        if (gn->type != GEN_DNS)
            continue;
        const unsigned char *d = ASN1_STRING_get0_data(gn->d.dNSName);
        int len = ASN1_STRING_length(gn->d.dNSName);
        if (len <= 0 || len > 253 || memchr(d, '\0', (size_t)len))
            continue;
        char *s = strndup((const char *)d, (size_t)len);
        if (!s)
            break;
        for (char *p = s; *p; p++)
            *p = (char)tolower((unsigned char)*p);
        if (len > 1 && s[len - 1] == '.')
            s[len - 1] = '\0'; /* SNI is compared without the root's dot */
        out[n++] = s;
    }
    GENERAL_NAMES_free(sans);
    if (n == 0) {
        char cn[256];
        if (X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn, sizeof(cn)) >
                0 &&
            (out[0] = strdup(cn)) != NULL) {
            for (char *p = out[0]; *p; p++)
                *p = (char)tolower((unsigned char)*p);
            n = 1;
        }
    }
    qsort(out, n, sizeof(out[0]), cmp_str);
    return n;
}

static void cert_info(X509 *x, const char *file, struct tls_cert_info *ci)
{
    memset(ci, 0, sizeof(*ci));
    ci->file = file;
    BIO *b = BIO_new(BIO_s_mem());
    if (b) {
        X509_NAME_print_ex(b, X509_get_subject_name(x), 0, XN_FLAG_RFC2253);
        int n = BIO_read(b, ci->subject, sizeof(ci->subject) - 1);
        ci->subject[n > 0 ? n : 0] = '\0';
        BIO_free(b);
    }
    char *names[MAX_NAMES_PER_CERT];
    size_t nn = cert_names(x, names);
    size_t used = 0;
    for (size_t i = 0; i < nn; i++) {
        if (used < sizeof(ci->names)) {
            int w = snprintf(ci->names + used, sizeof(ci->names) - used, "%s%s", i ? "," : "",
                             names[i]);
            used += w > 0 ? (size_t)w : 0;
        }
        free(names[i]);
    }
    BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
    char *hex = bn ? BN_bn2hex(bn) : NULL;
    snprintf(ci->serial, sizeof(ci->serial), "%s", hex ? hex : "?");
    OPENSSL_free(hex);
    BN_free(bn);
    EVP_PKEY *pk = X509_get0_pubkey(x);
    int id = pk ? EVP_PKEY_get_base_id(pk) : 0;
    snprintf(ci->key_type, sizeof(ci->key_type), "%s %d",
             id == EVP_PKEY_RSA  ? "RSA"
             : id == EVP_PKEY_EC ? "ECDSA"
                                 : (pk ? OBJ_nid2sn(id) : "?"),
             pk ? EVP_PKEY_get_bits(pk) : 0);
    struct tm tm;
    if (ASN1_TIME_to_tm(X509_get0_notAfter(x), &tm) == 1)
        ci->not_after = timegm(&tm);
}

/* A cert file (leaf, then its chain) and its key, read once: what is checked is what is
 * served, even if the files change meanwhile. */
struct pair {
    X509 *x;
    STACK_OF(X509) * chain;
    EVP_PKEY *pk;
};

static void pair_free(struct pair *p)
{
    X509_free(p->x);
    sk_X509_pop_free(p->chain, X509_free);
    EVP_PKEY_free(p->pk);
}

static int pair_read(struct pair *p, const char *cf, const char *kf, char *err, size_t errlen)
{
    char what[1200];
    memset(p, 0, sizeof(*p));
    BIO *b = BIO_new_file(cf, "r");
    if (b)
        p->x = PEM_read_bio_X509_AUX(b, NULL, no_passphrase, NULL);
    if (p->x && (p->chain = sk_X509_new_null()) != NULL) {
        X509 *ca;
        while ((ca = PEM_read_bio_X509(b, NULL, no_passphrase, NULL)) != NULL)
            if (!sk_X509_push(p->chain, ca)) {
                X509_free(ca);
                break;
            }
        /* the loop ends on "no start line" at the end of the file; anything else is an error */
        unsigned long e = ERR_peek_last_error();
        if (ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE)
            ERR_clear_error();
    }
    BIO_free(b);
    if (!p->x || !p->chain || ERR_peek_error()) {
        snprintf(what, sizeof(what), "cannot load certificate chain %s", cf);
        dg_ssl_err_to(err, errlen, what);
        pair_free(p);
        return -1;
    }
    b = BIO_new_file(kf, "r");
    p->pk = b ? PEM_read_bio_PrivateKey(b, NULL, no_passphrase, NULL) : NULL;
    BIO_free(b);
    if (!p->pk) {
        snprintf(what, sizeof(what), "cannot load private key %s (PEM, not encrypted)", kf);
        dg_ssl_err_to(err, errlen, what);
        pair_free(p);
        return -1;
    }
    /* Checked here against this certificate: OpenSSL alone would check the key against
     * whichever certificate of the context has the key's type. */
    if (X509_check_private_key(p->x, p->pk) != 1) {
        snprintf(what, sizeof(what), "key %s does not match certificate %s", kf, cf);
        dg_ssl_err_to(err, errlen, what);
        pair_free(p);
        return -1;
    }
    return 0;
}

/*
 * The OCSP response stapled for certificate file @p cf is "<cf>.ocsp" (DER), as HAProxy does: a
 * cron job or the deploy hook fetches it (openssl ocsp -respout). No file: no stapling. A file
 * that is not a successful response for this certificate, or is out of date, is logged and not
 * stapled; it never stops the certificate from loading. Runs on the main thread.
 */
static void ocsp_load(const char *cf, X509 *leaf, STACK_OF(X509) * chain, unsigned char **der,
                      size_t *der_len, time_t *next_update)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s.ocsp", cf);
    *der = NULL;
    *der_len = 0;
    *next_update = 0;
    BIO *b = BIO_new_file(path, "rb");
    if (!b) {
        ERR_clear_error();
        return;
    }
    OCSP_RESPONSE *resp = d2i_OCSP_RESPONSE_bio(b, NULL);
    BIO_free(b);
    OCSP_BASICRESP *basic = resp ? OCSP_response_get1_basic(resp) : NULL;
    X509 *issuer = sk_X509_num(chain) > 0 ? sk_X509_value(chain, 0) : NULL;
    OCSP_CERTID *id = issuer ? OCSP_cert_to_id(NULL, leaf, issuer) : NULL;
    int status = -1, reason = 0;
    ASN1_GENERALIZEDTIME *rev = NULL, *thisupd = NULL, *nextupd = NULL;
    const char *why = NULL;
    if (!resp || OCSP_response_status(resp) != OCSP_RESPONSE_STATUS_SUCCESSFUL || !basic)
        why = "not a successful DER OCSP response";
    else if (!issuer)
        why = "the certificate file has no issuer certificate after the leaf";
    else if (!id ||
             OCSP_resp_find_status(basic, id, &status, &reason, &rev, &thisupd, &nextupd) != 1)
        why = "not a response for this certificate";
    else if (OCSP_check_validity(thisupd, nextupd, 300, -1) != 1)
        why = "out of date (or not yet valid)";
    if (why) {
        log_warn("OCSP %s: %s; not stapled", path, why);
    } else {
        unsigned char *p = NULL;
        int n = i2d_OCSP_RESPONSE(resp, &p);
        if (n > 0) {
            *der = p;
            *der_len = (size_t)n;
            struct tm tm;
            if (nextupd && ASN1_TIME_to_tm(nextupd, &tm) == 1)
                *next_update = timegm(&tm);
        }
        if (status == V_OCSP_CERTSTATUS_REVOKED)
            log_err("OCSP %s says the certificate is REVOKED; stapled as it is", path);
    }
    OCSP_CERTID_free(id);
    OCSP_BASICRESP_free(basic);
    OCSP_RESPONSE_free(resp);
    ERR_clear_error();
}

/* OpenSSL's status callback (a client asked for OCSP), on a worker thread during the
 * handshake: staple the response of the certificate chosen for this handshake. */
static int on_status(SSL *ssl, void *arg)
{
    const struct tls_gen *g = arg;
    if (ssl_is_acme(ssl))
        return SSL_TLSEXT_ERR_NOACK; /* the validation certificate has no OCSP response */
    const X509 *x = SSL_get_certificate(ssl);
    for (size_t i = 0; i < g->n_certs; i++) {
        if (g->leaf[i] != x || !g->ocsp[i])
            continue;
        unsigned char *copy = OPENSSL_memdup(g->ocsp[i], g->ocsp_len[i]);
        if (copy && SSL_set_tlsext_status_ocsp_resp(ssl, copy, (long)g->ocsp_len[i]) == 1)
            return SSL_TLSEXT_ERR_OK; /* the SSL owns the copy now */
        OPENSSL_free(copy);
        return SSL_TLSEXT_ERR_NOACK;
    }
    return SSL_TLSEXT_ERR_NOACK;
}

/* A group: pairs with the same names, at most one per key type. */
struct group {
    SSL_CTX *ctx;
    char *names[MAX_NAMES_PER_CERT];
    size_t n_names;
    int key_types[MAX_PAIRS];
    size_t n_keys;
};

static bool same_names(const struct group *g, char *const *names, size_t n)
{
    if (g->n_names != n)
        return false;
    for (size_t i = 0; i < n; i++)
        if (strcmp(g->names[i], names[i]) != 0)
            return false;
    return true;
}

static int add_sni(struct tls_gen *g, const char *name, SSL_CTX *ctx)
{
    for (size_t i = 0; i < g->n_names; i++)
        if (strcmp(g->names[i].name, name) == 0)
            return 0; /* the first pair naming it wins */
    struct sni_entry *n = realloc(g->names, (g->n_names + 1) * sizeof(*n));
    if (!n)
        return -1;
    g->names = n;
    if (!(n[g->n_names].name = strdup(name)))
        return -1;
    n[g->n_names++].ctx = ctx;
    return 0;
}

/* A ticket must not promise more life than its key has: with rotating keys, two rotations
 * (OpenSSL's default is 7200 s). */
static void session_lifetime(const struct config *cfg, SSL_CTX *ctx)
{
    long rot = (long)cfg->ticket_key_rotation_s;
    if (cfg->n_ticket_key_file == 0 && rot > 0 && 2 * rot < SSL_CTX_get_timeout(ctx))
        SSL_CTX_set_timeout(ctx, 2 * rot);
}

/* Load every pair of cfg into a new generation; returns its default SSL_CTX. */
/* The certificate pairs of a configuration: the cert/key options in order, then the ACME
 * client's pair (config_acme_files()) when acme-domain is set. The ACME pair is optional: until
 * the first issuance its files do not exist, and the generation is built without it (with only
 * it, self-signed). Its files are watched all the same, so the issuance is seen. */
struct pair_files {
    const char *cert, *key;
    char cbuf[4096], kbuf[4096];
};

/* How many pairs are configured (present or not): what the file checks watch. */
static size_t pairs_configured(const struct config *cfg)
{
    return cfg->n_cert + (cfg->n_acme_domain > 0 ? 1 : 0);
}

/* Pair @p i (< pairs_configured()); @return whether its files exist (the configured ones are
 * taken as present: a missing one is an error gen_build() reports). */
static bool pair_at(const struct config *cfg, size_t i, struct pair_files *pf)
{
    if (i < cfg->n_cert) {
        pf->cert = cfg->cert_file[i];
        pf->key = cfg->key_file[i];
        return true;
    }
    config_acme_files(cfg, pf->cbuf, pf->kbuf, sizeof(pf->cbuf));
    pf->cert = pf->cbuf;
    pf->key = pf->kbuf;
    return access(pf->cbuf, F_OK) == 0 && access(pf->kbuf, F_OK) == 0;
}

/* How many pairs a generation built now would serve (0: the self-signed certificate). */
static size_t pairs_present(const struct config *cfg)
{
    struct pair_files pf;
    size_t n = cfg->n_cert;
    if (cfg->n_acme_domain > 0 && pair_at(cfg, cfg->n_cert, &pf))
        n++;
    return n;
}

static SSL_CTX *gen_build(const struct config *cfg, struct ticket_ring *ring, char *fingerprint,
                          char *err, size_t errlen)
{
    struct group groups[MAX_PAIRS];
    size_t ngroups = 0;
    SSL_CTX *dflt = NULL;
    struct tls_gen *g = calloc(1, sizeof(*g));
    if (!g) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    fingerprint[0] = '\0';
    ERR_clear_error();
    pthread_once(&gen_index_once, gen_index_init);
    if (gen_index < 0) {
        dg_ssl_err_to(err, errlen, "SSL_CTX_get_ex_new_index");
        free(g);
        return NULL;
    }

    size_t npairs = pairs_present(cfg);
    if (npairs == 0)
        goto self_signed;

    for (size_t i = 0; i < npairs; i++) {
        struct pair_files pf;
        pair_at(cfg, i, &pf);
        const char *cf = pf.cert, *kf = pf.key;
        struct pair pr;
        /* The ACME pair is the client's to repair (it orders again when the pair on disk does
         * not load): one that cannot be used is left out with a warning, never a reason to
         * refuse the start or every reload. */
        bool acme = i >= cfg->n_cert;
        if (pair_read(&pr, cf, kf, err, errlen) != 0) {
            if (!acme)
                goto fail;
            log_warn("the ACME certificate is left out: %s", err);
            err[0] = '\0';
            continue;
        }
        char *names[MAX_NAMES_PER_CERT];
        size_t nn = cert_names(pr.x, names);
        int kt = EVP_PKEY_get_base_id(pr.pk);
        const char *why = NULL;
        if (nn == 0 && i > 0)
            why = "has no DNS name, so SNI can never choose it (only the first pair, the "
                  "default, may have none)";
        struct group *grp = NULL;
        for (size_t k = 0; k < ngroups && !grp && !why; k++)
            if (same_names(&groups[k], names, nn))
                grp = &groups[k];
        for (size_t k = 0; grp && k < grp->n_keys && !why; k++)
            if (grp->key_types[k] == kt)
                why = "has the same names and key type as an earlier cert: one of them would "
                      "never be used";
        if (!why && !grp) {
            /* Counted before its context is made: the names are the group's now, and the
             * fail path frees them with it even when ctx_base() fails. */
            grp = &groups[ngroups++];
            memset(grp, 0, sizeof(*grp));
            memcpy(grp->names, names, nn * sizeof(names[0]));
            grp->n_names = nn;
            nn = 0;
            if (!(grp->ctx = ctx_base(ring, err, errlen)))
                why = "";
        }
        for (size_t m = 0; m < nn; m++)
            free(names[m]);
        if (!why) {
            grp->key_types[grp->n_keys++] = kt;
            /* One slot per key type; "override" is moot as same-type pairs were refused. */
            if (SSL_CTX_use_cert_and_key(grp->ctx, pr.x, pr.pk, pr.chain, 1) != 1) {
                char what[600];
                snprintf(what, sizeof(what), "cannot use certificate %s", cf);
                dg_ssl_err_to(err, errlen, what);
                why = "";
            }
        } else if (why[0] && acme) {
            log_warn("the ACME certificate %s is left out: it %s", cf, why);
            pair_free(&pr);
            continue;
        } else if (why[0]) {
            snprintf(err, errlen, "certificate %s %s", cf, why);
        }
        if (!why) {
            size_t c = g->n_certs++;
            if (acme) { /* the ACME pair: its name lives in pf, on this stack */
                snprintf(g->acme_file, sizeof(g->acme_file), "%s", cf);
                cf = g->acme_file;
            }
            cert_info(pr.x, cf, &g->certs[c]);
            g->leaf[c] = pr.x; /* the context holds a reference from here on */
            ocsp_load(cf, pr.x, pr.chain, &g->ocsp[c], &g->ocsp_len[c],
                      &g->certs[c].ocsp_next_update);
        }
        pair_free(&pr);
        if (why)
            goto fail;
    }
    if (ngroups == 0) /* only the ACME pair, and it was left out */
        goto self_signed;
    for (size_t k = 0; k < ngroups; k++)
        for (size_t m = 0; m < groups[k].n_names; m++)
            if (add_sni(g, groups[k].names[m], groups[k].ctx) != 0) {
                snprintf(err, errlen, "out of memory");
                goto fail;
            }
    dflt = groups[0].ctx;
    groups[0].ctx = NULL;
    for (size_t k = 1; k < ngroups; k++) {
        g->extra[g->n_extra++] = groups[k].ctx;
        groups[k].ctx = NULL;
    }
    if (ngroups > 1 || g->n_names > 0)
        SSL_CTX_set_tlsext_servername_callback(dflt, on_servername);
    SSL_CTX_set_tlsext_servername_arg(dflt, g);
    /* on every context: OpenSSL asks the one SNI chose */
    for (size_t k = 0; k <= g->n_extra; k++) {
        SSL_CTX *ctx = k == 0 ? dflt : g->extra[k - 1];
        SSL_CTX_set_tlsext_status_cb(ctx, on_status);
        SSL_CTX_set_tlsext_status_arg(ctx, g);
    }
    goto done;

self_signed:
    if (!(dflt = ctx_base(ring, err, errlen)))
        goto fail;
    if (make_self_signed(dflt, cfg->server_name ? cfg->server_name : "localhost", fingerprint, err,
                         errlen) != 0)
        goto fail;
    cert_info(SSL_CTX_get0_certificate(dflt), "self-signed", &g->certs[g->n_certs++]);

done:
    session_lifetime(cfg, dflt);
    for (size_t k = 0; k < ngroups; k++)
        for (size_t m = 0; m < groups[k].n_names; m++)
            free(groups[k].names[m]);
    if (!SSL_CTX_set_ex_data(dflt, gen_index, g)) {
        snprintf(err, errlen, "out of memory");
        gen_free(g);
        SSL_CTX_free(dflt);
        return NULL;
    }
    return dflt;
fail:
    for (size_t k = 0; k < ngroups; k++) {
        SSL_CTX_free(groups[k].ctx);
        for (size_t m = 0; m < groups[k].n_names; m++)
            free(groups[k].names[m]);
    }
    SSL_CTX_free(dflt);
    gen_free(g);
    return NULL;
}

/* ---- the store ----------------------------------------------------------------------------- */

/* What stat(2) says of one file, through symlinks: a certbot renewal changes the link target,
 * so the inode changes even if the size and time happen to match. */
struct file_sig {
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtim, ctim;
    int err;
};

#define MAX_FILES (3 * MAX_PAIRS + DG_CONFIG_MAX_LIST)

struct tls_store {
    pthread_mutex_t mu;
    SSL_CTX *cur; /* the current generation's default context (one reference) */
    const struct config *cfg;
    size_t nfiles;
    /* cert files, key files, OCSP files, ticket-key files */
    struct file_sig loaded[MAX_FILES];  /* as last loaded */
    struct file_sig pending[MAX_FILES]; /* a change seen, waiting to settle */
    struct file_sig failed[MAX_FILES];  /* a change that did not load */
    bool have_pending, have_failed;
    struct ticket_ring *ring;
    uint64_t next_poll_ms, next_rotation_ms; /* tls_store_tick's schedule */
};

static size_t files_watched(const struct config *c)
{
    return 3 * pairs_configured(c) + c->n_ticket_key_file;
}

static void sig_take_cfg(const struct config *c, size_t nfiles, struct file_sig *out)
{
    size_t np = pairs_configured(c);
    for (size_t i = 0; i < nfiles; i++) {
        /* cert files, key files, their "<cert>.ocsp" staples, ticket-key files */
        char ocsp[4200];
        struct pair_files pf;
        const char *f;
        if (i < np) {
            pair_at(c, i, &pf);
            f = pf.cert;
        } else if (i < 2 * np) {
            pair_at(c, i - np, &pf);
            f = pf.key;
        } else if (i < 3 * np) {
            pair_at(c, i - 2 * np, &pf);
            snprintf(ocsp, sizeof(ocsp), "%s.ocsp", pf.cert);
            f = ocsp;
        } else
            f = c->ticket_key_file[i - 3 * np];
        struct stat st;
        memset(&out[i], 0, sizeof(out[i]));
        if (stat(f, &st) != 0) {
            out[i].err = errno;
            continue;
        }
        out[i].dev = st.st_dev;
        out[i].ino = st.st_ino;
        out[i].size = st.st_size;
        out[i].mtim = st.st_mtim;
        out[i].ctim = st.st_ctim;
    }
}

static void sig_take(const struct tls_store *ts, struct file_sig *out)
{
    sig_take_cfg(ts->cfg, ts->nfiles, out);
}

static bool sig_equal(const struct tls_store *ts, const struct file_sig *a,
                      const struct file_sig *b)
{
    for (size_t i = 0; i < ts->nfiles; i++)
        if (a[i].err != b[i].err || a[i].dev != b[i].dev || a[i].ino != b[i].ino ||
            a[i].size != b[i].size || a[i].mtim.tv_sec != b[i].mtim.tv_sec ||
            a[i].mtim.tv_nsec != b[i].mtim.tv_nsec || a[i].ctim.tv_sec != b[i].ctim.tv_sec ||
            a[i].ctim.tv_nsec != b[i].ctim.tv_nsec)
            return false;
    return true;
}

struct tls_store *tls_store_new(const struct config *cfg, char *fingerprint, char *err,
                                size_t errlen)
{
    struct tls_store *ts = calloc(1, sizeof(*ts));
    if (!ts) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    ts->cfg = cfg;
    ts->nfiles = files_watched(cfg);
    sig_take(ts, ts->loaded);
    if (pthread_mutex_init(&ts->mu, NULL) != 0) {
        snprintf(err, errlen, "pthread_mutex_init failed");
        free(ts);
        return NULL;
    }
    ts->ring = ticket_ring_new();
    if (!ts->ring) {
        snprintf(err, errlen, "out of memory (session-ticket keys)");
        tls_store_free(ts);
        return NULL;
    }
    if (cfg->n_ticket_key_file > 0) {
        struct ticket_key keys[TICKET_KEYS_MAX];
        int rc = ticket_keys_read(cfg->ticket_key_file, cfg->n_ticket_key_file, keys, err, errlen);
        if (rc == 0)
            ticket_ring_set(ts->ring, keys, cfg->n_ticket_key_file);
        OPENSSL_cleanse(keys, sizeof(keys));
        if (rc != 0) {
            tls_store_free(ts);
            return NULL;
        }
    }
    if (!(ts->cur = gen_build(cfg, ts->ring, fingerprint, err, errlen))) {
        tls_store_free(ts);
        return NULL;
    }
    return ts;
}

void tls_store_free(struct tls_store *ts)
{
    if (!ts)
        return;
    SSL_CTX_free(ts->cur);
    ticket_ring_free(ts->ring);
    pthread_mutex_destroy(&ts->mu);
    free(ts);
}

SSL *tls_store_ssl_new(struct tls_store *ts)
{
    pthread_mutex_lock(&ts->mu);
    SSL *ssl = SSL_new(ts->cur); /* takes its own reference on the context */
    pthread_mutex_unlock(&ts->mu);
    return ssl;
}

/* Whether the current generation serves the generated self-signed certificate. */
static bool self_signed(struct tls_store *ts)
{
    pthread_mutex_lock(&ts->mu);
    const struct tls_gen *g = SSL_CTX_get_ex_data(ts->cur, gen_index);
    bool yes = g && g->n_certs == 1 && strcmp(g->certs[0].file, "self-signed") == 0;
    pthread_mutex_unlock(&ts->mu);
    return yes;
}

static enum tls_reload reload_with(struct tls_store *ts, const struct file_sig *now, char *err,
                                   size_t errlen)
{
    const struct config *cfg = ts->cfg;
    char fp[128];
    struct ticket_key keys[TICKET_KEYS_MAX];
    SSL_CTX *fresh = NULL;
    /* All or nothing: ticket keys and certificates are both read before either is used. The
     * ring is shared, not rebuilt: tickets issued before a certificate reload still resume. */
    if ((cfg->n_ticket_key_file > 0 &&
         ticket_keys_read(cfg->ticket_key_file, cfg->n_ticket_key_file, keys, err, errlen) != 0) ||
        ((pairs_present(cfg) > 0 || !self_signed(ts)) &&
         !(fresh = gen_build(cfg, ts->ring, fp, err, errlen)))) {
        OPENSSL_cleanse(keys, sizeof(keys));
        memcpy(ts->failed, now, ts->nfiles * sizeof(*now));
        ts->have_failed = true;
        return TLS_RELOAD_FAILED;
    }
    if (cfg->n_ticket_key_file > 0)
        ticket_ring_set(ts->ring, keys, cfg->n_ticket_key_file);
    OPENSSL_cleanse(keys, sizeof(keys));
    if (fresh) {
        pthread_mutex_lock(&ts->mu);
        SSL_CTX *old = ts->cur;
        ts->cur = fresh;
        pthread_mutex_unlock(&ts->mu);
        SSL_CTX_free(old); /* lives on while connections of its generation do */
    }
    memcpy(ts->loaded, now, ts->nfiles * sizeof(*now));
    ts->have_pending = ts->have_failed = false;
    return TLS_RELOAD_DONE;
}

enum tls_reload tls_store_reload(struct tls_store *ts, char *err, size_t errlen)
{
    if (ts->nfiles == 0)
        return TLS_RELOAD_NONE;
    struct file_sig now[MAX_FILES];
    sig_take(ts, now); /* before reading, so a change made meanwhile is seen next time */
    return reload_with(ts, now, err, errlen);
}

enum tls_reload tls_store_poll(struct tls_store *ts, char *err, size_t errlen)
{
    if (ts->nfiles == 0)
        return TLS_RELOAD_NONE;
    struct file_sig now[MAX_FILES];
    sig_take(ts, now);
    if (sig_equal(ts, now, ts->loaded)) {
        ts->have_pending = false;
        return TLS_RELOAD_NONE;
    }
    if (ts->have_failed && sig_equal(ts, now, ts->failed))
        return TLS_RELOAD_NONE; /* reported once already */
    if (!ts->have_pending || !sig_equal(ts, now, ts->pending)) {
        memcpy(ts->pending, now, ts->nfiles * sizeof(*now));
        ts->have_pending = true;
        return TLS_RELOAD_NONE; /* let it settle for one interval */
    }
    return reload_with(ts, now, err, errlen);
}

void tls_store_each_cert(struct tls_store *ts,
                         void (*fn)(const struct tls_cert_info *ci, void *arg), void *arg)
{
    pthread_mutex_lock(&ts->mu);
    SSL_CTX *ctx = ts->cur;
    SSL_CTX_up_ref(ctx);
    pthread_mutex_unlock(&ts->mu);
    const struct tls_gen *g = SSL_CTX_get_ex_data(ctx, gen_index);
    for (size_t i = 0; g && i < g->n_certs; i++)
        fn(&g->certs[i], arg);
    SSL_CTX_free(ctx);
}

bool tls_store_covers_ip(struct tls_store *ts, const char *ip)
{
    pthread_mutex_lock(&ts->mu);
    SSL_CTX *ctx = ts->cur;
    SSL_CTX_up_ref(ctx);
    pthread_mutex_unlock(&ts->mu);
    /* The default certificate: a client that connects to an address sends no SNI. */
    X509 *leaf = SSL_CTX_get0_certificate(ctx);
    bool ok = leaf && X509_check_ip_asc(leaf, ip, 0) == 1;
    SSL_CTX_free(ctx);
    return ok;
}

bool tls_store_needs_tick(const struct tls_store *ts)
{
    const struct config *cfg = ts->cfg;
    bool rotate = cfg->n_ticket_key_file == 0 && cfg->ticket_key_rotation_s > 0;
    bool poll = ts->nfiles > 0 && cfg->cert_check_interval_s > 0;
    return rotate || poll;
}

enum tls_reload tls_store_tick(struct tls_store *ts, uint64_t now_ms, char *err, size_t errlen)
{
    const struct config *cfg = ts->cfg;
    if (cfg->n_ticket_key_file == 0 && cfg->ticket_key_rotation_s > 0) {
        uint64_t every = (uint64_t)cfg->ticket_key_rotation_s * 1000u;
        if (ts->next_rotation_ms == 0) {
            ts->next_rotation_ms = now_ms + every;
        } else if (now_ms >= ts->next_rotation_ms) {
            ts->next_rotation_ms = now_ms + every;
            if (ticket_ring_rotate(ts->ring) != 0)
                log_warn("session-ticket key rotation failed (no randomness?); keeping the key");
            else
                log_debug("session-ticket key rotated");
        }
    }
    if (ts->nfiles > 0 && cfg->cert_check_interval_s > 0) {
        uint64_t every = (uint64_t)cfg->cert_check_interval_s * 1000u;
        if (ts->next_poll_ms == 0) {
            ts->next_poll_ms = now_ms + every;
        } else if (now_ms >= ts->next_poll_ms) {
            ts->next_poll_ms = now_ms + every;
            return tls_store_poll(ts, err, errlen);
        }
    }
    return TLS_RELOAD_NONE;
}

/* ---- full configuration reload ------------------------------------------------------------ */

struct tls_staged {
    const struct config *cfg;
    SSL_CTX *fresh; /* NULL: keep the current generation (self-signed before and after) */
    struct ticket_key keys[TICKET_KEYS_MAX];
    size_t nkeys;
    size_t nfiles;
    struct file_sig sig[MAX_FILES];
};

struct tls_staged *tls_store_prepare(struct tls_store *ts, const struct config *cfg,
                                     char *fingerprint, char *err, size_t errlen)
{
    struct tls_staged *st = calloc(1, sizeof(*st));
    if (!st) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    fingerprint[0] = '\0';
    st->cfg = cfg;
    st->nfiles = files_watched(cfg);
    sig_take_cfg(cfg, st->nfiles, st->sig); /* before reading, as tls_store_reload() */
    if (cfg->n_ticket_key_file > 0) {
        if (ticket_keys_read(cfg->ticket_key_file, cfg->n_ticket_key_file, st->keys, err, errlen) !=
            0)
            goto fail;
        st->nkeys = cfg->n_ticket_key_file;
    }
    /* Without certificates before and after, the self-signed one stays: a new one on every
     * reload would change the fingerprint users pinned. */
    if ((pairs_present(cfg) > 0 || !self_signed(ts)) &&
        !(st->fresh = gen_build(cfg, ts->ring, fingerprint, err, errlen)))
        goto fail;
    return st;
fail:
    tls_staged_free(st);
    return NULL;
}

void tls_staged_free(struct tls_staged *st)
{
    if (!st)
        return;
    SSL_CTX_free(st->fresh);
    OPENSSL_cleanse(st->keys, sizeof(st->keys));
    free(st);
}

void tls_store_commit(struct tls_store *ts, struct tls_staged *st)
{
    bool had_files = ts->cfg->n_ticket_key_file > 0;
    if (st->nkeys > 0)
        ticket_ring_set(ts->ring, st->keys, st->nkeys);
    else if (had_files && ticket_ring_rotate(ts->ring) != 0)
        log_warn("session-ticket key: no randomness for a new key; the file keys stay");
    if (st->fresh) {
        pthread_mutex_lock(&ts->mu);
        SSL_CTX *old = ts->cur;
        ts->cur = st->fresh;
        pthread_mutex_unlock(&ts->mu);
        SSL_CTX_free(old); /* lives on while connections of its generation do */
        st->fresh = NULL;
    }
    /* A new interval starts a new schedule; an unchanged one keeps it, so that a stream of
     * reloads does not postpone the rotation. */
    if (st->cfg->cert_check_interval_s != ts->cfg->cert_check_interval_s)
        ts->next_poll_ms = 0;
    if (st->cfg->ticket_key_rotation_s != ts->cfg->ticket_key_rotation_s)
        ts->next_rotation_ms = 0;
    ts->cfg = st->cfg;
    ts->nfiles = st->nfiles;
    memcpy(ts->loaded, st->sig, st->nfiles * sizeof(st->sig[0]));
    ts->have_pending = ts->have_failed = false;
    tls_staged_free(st);
}
