/*
 * The ACME client (RFC 8555) on a thread of its own: blocking libcurl easy transfers (each
 * bounded by CONNECTTIMEOUT 10 s and TIMEOUT 30 s, aborted by the stop flag through the
 * progress callback), jansson and OpenSSL. See acme.h for the contract, acmemsg.h for the pure
 * parts (parsers, JWS, arithmetic) and docs/design.md "Automatic certificates (ACME)".
 *
 * Test-only knobs (environment, read once by acme_start(); never set them in production):
 *   DOHGATE_TEST_ACME_RETRY_S  backoff base in seconds instead of 60 (doubling, 6 h cap kept)
 *   DOHGATE_TEST_ACME_RENEW_S  renew this many seconds after the certificate's notBefore
 *                              instead of the computed time (ARI is still queried and logged)
 */
#include "dohgate/acme.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dohgate/acmechal.h"
#include "dohgate/acmemsg.h"
#include "dohgate/config.h"
#include "dohgate/log.h"
#include "dohgate/util.h"

#define BODY_MAX              (1u << 20) /* a CA answer above 1 MiB is a protocol failure */
#define POLL_LIMIT_S          120        /* authorization and order polling */
#define ARI_RECHECK_DEFAULT_S (6 * 3600L)
#define PATH_LEN              4096

struct resp {
    long code;
    struct dg_buf body;
    bool too_big;
    char nonce[256];
    char location[2048];
    char retry_after[64];
};

struct acme {
    const struct config *cfg;
    void (*installed)(void *arg);
    void *arg;
    pthread_t thread;
    pthread_mutex_t mu; /* guards status and the condvar wait */
    pthread_cond_t cv;
    atomic_bool stop;
    struct acme_status status;

    /* Below: the client thread's only. */
    CURL *curl;
    char ua[64];
    long retry_base_s;
    long test_renew_s;
    char acct_path[PATH_LEN], cert_path[PATH_LEN], key_path[PATH_LEN];
    EVP_PKEY *account;
    char *jwk;
    char thumb[44];
    char *kid;
    char nonce[256];
    struct acme_directory dir;
    bool have_dir;
    /* The current certificate (loaded from cert.pem), NULL when none usable. */
    X509 *cert;
    /* The last failure: reason, one-line message, the CA's Retry-After (s; 0 none). */
    enum acme_failure fail;
    char failmsg[512];
    long ca_retry_after;
    struct acme_problem problem; /* the last problem document (type "" when none) */
    bool order_refused;          /* this attempt's newOrder itself got a problem document */
};

const char *acme_failure_name(enum acme_failure f)
{
    static const char *const names[] = {"network",    "protocol",     "rejected",
                                        "validation", "rate_limited", "local"};
    return (unsigned)f < ACME_FAIL__COUNT ? names[f] : "unknown";
}

/* Record why the attempt failed (logged by the scheduler with the retry delay). */
__attribute__((format(printf, 4, 5))) static int fail(struct acme *a, enum acme_failure f,
                                                      const char *step, const char *fmt, ...)
{
    a->fail = f;
    if (f != ACME_FAIL_REJECTED && f != ACME_FAIL_RATE_LIMITED)
        memset(&a->problem, 0, sizeof(a->problem));
    int n = snprintf(a->failmsg, sizeof(a->failmsg), "%s failed: ", step);
    if (n < 0 || (size_t)n >= sizeof(a->failmsg))
        return -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(a->failmsg + n, sizeof(a->failmsg) - (size_t)n, fmt, ap);
    va_end(ap);
    return -1;
}

static double draw01(void)
{
    uint64_t v = 0;
    if (RAND_bytes((unsigned char *)&v, sizeof(v)) != 1)
        v = (uint64_t)rand();
    return (double)(v >> 11) / 9007199254740992.0; /* 2^53 */
}

/* Sleep until @p when (wall clock) or the stop flag. @return false when stopping. */
static bool wait_until(struct acme *a, time_t when)
{
    struct timespec ts = {.tv_sec = when};
    pthread_mutex_lock(&a->mu);
    while (!atomic_load(&a->stop) && time(NULL) < when) {
        if (pthread_cond_timedwait(&a->cv, &a->mu, &ts) == ETIMEDOUT)
            break;
    }
    pthread_mutex_unlock(&a->mu);
    return !atomic_load(&a->stop);
}

/* ---- HTTP ---- */

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
    struct resp *r = ud;
    size_t len = size * n;
    if (r->body.len + len > BODY_MAX) {
        r->too_big = true;
        return 0; /* aborts the transfer (CURLE_WRITE_ERROR) */
    }
    return dg_buf_append(&r->body, p, len) == 0 ? len : 0;
}

static void header_value(const char *line, size_t len, size_t skip, char *out, size_t cap)
{
    const char *v = line + skip;
    size_t n = len - skip;
    while (n && (*v == ' ' || *v == '\t'))
        v++, n--;
    while (n && (v[n - 1] == '\r' || v[n - 1] == '\n' || v[n - 1] == ' '))
        n--;
    if (n >= cap)
        n = cap - 1;
    memcpy(out, v, n);
    out[n] = '\0';
}

static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
    struct resp *r = ud;
    size_t len = size * n;
    static const struct {
        const char *name;
        size_t off, cap;
    } h[] = {
        {"replay-nonce:", offsetof(struct resp, nonce), sizeof(((struct resp *)0)->nonce)},
        {"location:", offsetof(struct resp, location), sizeof(((struct resp *)0)->location)},
        {"retry-after:", offsetof(struct resp, retry_after),
         sizeof(((struct resp *)0)->retry_after)},
    };
    for (size_t i = 0; i < sizeof(h) / sizeof(h[0]); i++) {
        size_t l = strlen(h[i].name);
        if (len >= l && strncasecmp(p, h[i].name, l) == 0)
            header_value(p, len, l, (char *)r + h[i].off, h[i].cap);
    }
    return len;
}

static int on_progress(void *ud, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
    struct acme *a = ud;
    return atomic_load(&a->stop) ? 1 : 0;
}

static void resp_free(struct resp *r)
{
    dg_buf_free(&r->body);
    memset(r, 0, sizeof(*r));
}

/* One transfer: GET (@p body NULL, or HEAD with @p head), or POST of a JWS. On a curl error
 * the failure is recorded (network, or protocol for an oversized body) and -1 returned; any
 * HTTP status is 0 (the caller judges). */
static int http(struct acme *a, const char *step, const char *url, const char *body, bool head,
                const char *accept, struct resp *r)
{
    memset(r, 0, sizeof(*r));
    CURL *c = a->curl;
    curl_easy_reset(c);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "https");
    curl_easy_setopt(c, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
    /* No signals from libcurl in a threaded process (its DNS timeout uses SIGALRM otherwise);
     * SIGPIPE from a peer that closed is ignored process-wide by main.c. */
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 10L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L);
    curl_easy_setopt(c, CURLOPT_USERAGENT, a->ua);
    if (a->cfg->acme_ca)
        curl_easy_setopt(c, CURLOPT_CAINFO, a->cfg->acme_ca);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, a);
    struct curl_slist *hdrs = NULL;
    if (body) {
        hdrs = curl_slist_append(hdrs, "Content-Type: application/jose+json");
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    } else if (head) {
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    }
    if (accept) {
        char h[128];
        snprintf(h, sizeof(h), "Accept: %s", accept);
        hdrs = curl_slist_append(hdrs, h);
    }
    if (hdrs)
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
    CURLcode rc = curl_easy_perform(c);
    curl_slist_free_all(hdrs);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->code);
    if (rc != CURLE_OK) {
        bool big = r->too_big;
        resp_free(r);
        if (big)
            return fail(a, ACME_FAIL_PROTOCOL, step, "answer larger than %u bytes", BODY_MAX);
        return fail(a, ACME_FAIL_NETWORK, step, "%s", curl_easy_strerror(rc));
    }
    if (r->nonce[0])
        snprintf(a->nonce, sizeof(a->nonce), "%s", r->nonce);
    long ra = acmemsg_retry_after(r->retry_after[0] ? r->retry_after : NULL, time(NULL));
    if (ra > 0 && (r->code == 429 || r->code == 503))
        a->ca_retry_after = ra;
    return 0;
}

/* An error status: record the CA's problem document (or a protocol failure). */
static int fail_status(struct acme *a, const char *step, struct resp *r)
{
    struct acme_problem p;
    memset(&a->problem, 0, sizeof(a->problem));
    if (acmemsg_problem_parse((const char *)r->body.data, r->body.len, &p) != 0 || !p.type[0])
        return fail(a, r->code == 429 ? ACME_FAIL_RATE_LIMITED : ACME_FAIL_PROTOCOL, step,
                    "HTTP status %ld without a problem document", r->code);
    a->problem = p;
    enum acme_failure f = ACME_FAIL_REJECTED;
    if (acmemsg_problem_is(&p, "rateLimited") || r->code == 429)
        f = ACME_FAIL_RATE_LIMITED;
    return fail(a, f, step, "%s %s (status %d)", p.type, p.detail,
                p.status ? p.status : (int)r->code);
}

static int get_nonce(struct acme *a)
{
    struct resp r;
    if (http(a, "nonce", a->dir.new_nonce, NULL, true, NULL, &r) != 0)
        return -1;
    int rc = 0;
    if (!r.nonce[0])
        rc = fail(a, ACME_FAIL_PROTOCOL, "nonce", "no Replay-Nonce (status %ld)", r.code);
    resp_free(&r);
    return rc;
}

/* A signed POST (@p payload "" is POST-as-GET), jwk in the header when @p use_jwk, else kid.
 * A badNonce answer is retried once with the nonce it carried. On success (2xx) @p r holds the
 * answer (the caller frees it); on failure it is freed and the failure recorded. */
static int post(struct acme *a, const char *step, const char *url, const char *payload,
                bool use_jwk, const char *accept, struct resp *r)
{
    for (int attempt = 0; attempt < 2; attempt++) {
        if (!a->nonce[0] && get_nonce(a) != 0)
            return -1;
        char *jws = acmemsg_jws_es256(a->account, use_jwk ? NULL : a->kid, a->nonce, url, payload);
        a->nonce[0] = '\0'; /* used: the answer brings the next */
        if (!jws)
            return fail(a, ACME_FAIL_LOCAL, step, "cannot sign the request");
        int rc = http(a, step, url, jws, false, accept, r);
        free(jws);
        if (rc != 0)
            return -1;
        if (r->code >= 200 && r->code < 300)
            return 0;
        struct acme_problem p;
        if (attempt == 0 && r->code == 400 &&
            acmemsg_problem_parse((const char *)r->body.data, r->body.len, &p) == 0 &&
            acmemsg_problem_is(&p, "badNonce")) {
            log_debug("ACME: %s: badNonce, retrying once with the fresh nonce", step);
            resp_free(r);
            continue;
        }
        rc = fail_status(a, step, r);
        resp_free(r);
        return rc;
    }
    return -1;
}

/* ---- files ---- */

/* Write @p data to "@p path.tmp" and fsync it (the first half of a replacement). */
static int write_tmp(const char *path, const void *data, size_t len, mode_t mode)
{
    char tmp[PATH_LEN + 16];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    unlink(tmp);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd < 0)
        return -1;
    const char *p = data;
    size_t left = len;
    while (left) {
        ssize_t w = write(fd, p, left);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            close(fd);
            unlink(tmp);
            return -1;
        }
        p += w;
        left -= (size_t)w;
    }
    if (fsync(fd) != 0 || close(fd) != 0) {
        unlink(tmp);
        return -1;
    }
    return 0;
}

/* Rename "@p path.tmp" over @p path (readers see the old file or the new one). */
static int commit_tmp(const char *path)
{
    char tmp[PATH_LEN + 16];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    if (rename(tmp, path) != 0) {
        unlink(tmp);
        return -1;
    }
    return 0;
}

static int write_atomic(const char *path, const void *data, size_t len, mode_t mode)
{
    return write_tmp(path, data, len, mode) == 0 ? commit_tmp(path) : -1;
}

/* fsync the directory holding the renamed files, so the renames survive a crash. */
static void sync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
}

static char *pem_key(EVP_PKEY *k, size_t *len)
{
    BIO *b = BIO_new(BIO_s_mem());
    char *out = NULL;
    if (b && PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL) == 1) {
        char *p;
        long n = BIO_get_mem_data(b, &p);
        if (n > 0 && (out = malloc((size_t)n))) {
            memcpy(out, p, (size_t)n);
            *len = (size_t)n;
        }
    }
    BIO_free(b);
    return out;
}

/* An encrypted key file fails to load instead of OpenSSL's default: a prompt on the terminal. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    return -1;
}

static bool is_p256(EVP_PKEY *k)
{
    char group[32];
    size_t gl;
    return EVP_PKEY_is_a(k, "EC") &&
           EVP_PKEY_get_utf8_string_param(k, "group", group, sizeof(group), &gl) == 1 &&
           strcmp(group, "prime256v1") == 0;
}

static int load_account_once(struct acme *a)
{
    FILE *f = fopen(a->acct_path, "re");
    if (f) {
        a->account = PEM_read_PrivateKey(f, NULL, no_passphrase, NULL);
        fclose(f);
        if (!a->account || !is_p256(a->account))
            return fail(a, ACME_FAIL_LOCAL, "account key",
                        "%s is not a P-256 private key (remove it to make a new account)",
                        a->acct_path);
    } else {
        if (errno != ENOENT)
            return fail(a, ACME_FAIL_LOCAL, "account key", "%s: %s", a->acct_path, strerror(errno));
        a->account = EVP_EC_gen("P-256");
        size_t len = 0;
        char *pem = a->account ? pem_key(a->account, &len) : NULL;
        int rc = pem ? write_atomic(a->acct_path, pem, len, 0600) : -1;
        if (pem)
            OPENSSL_cleanse(pem, len);
        free(pem);
        if (rc != 0)
            return fail(a, ACME_FAIL_LOCAL, "account key", "cannot write %s: %s", a->acct_path,
                        strerror(errno));
        log_info("ACME: new account key in %s", a->acct_path);
    }
    a->jwk = acmemsg_jwk(a->account);
    if (!a->jwk || acmemsg_thumbprint(a->jwk, a->thumb) != 0)
        return fail(a, ACME_FAIL_LOCAL, "account key", "cannot encode the public key");
    return 0;
}

/* The account key and its JWK, loaded (or made) once; a failure leaves neither behind, so the
 * next attempt tries again instead of signing with half a key. */
static int load_account(struct acme *a)
{
    if (a->account && a->jwk)
        return 0;
    if (load_account_once(a) == 0)
        return 0;
    EVP_PKEY_free(a->account);
    a->account = NULL;
    free(a->jwk);
    a->jwk = NULL;
    return -1;
}

/* Whether @p cert covers every acme-domain name. */
static bool covers(const struct acme *a, X509 *cert)
{
    for (size_t i = 0; i < a->cfg->n_acme_domain; i++)
        if (X509_check_host(cert, a->cfg->acme_domain[i], 0, X509_CHECK_FLAG_NO_WILDCARDS, NULL) !=
            1)
            return false;
    return true;
}

static time_t asn1_time(const ASN1_TIME *t)
{
    struct tm tm;
    if (ASN1_TIME_to_tm(t, &tm) != 1)
        return 0;
    return timegm(&tm);
}

/* Load cert.pem/key.pem when they match, cover every name and are not expired. */
static X509 *load_current(struct acme *a)
{
    FILE *f = fopen(a->cert_path, "re");
    if (!f)
        return NULL;
    X509 *cert = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    EVP_PKEY *key = NULL;
    if ((f = fopen(a->key_path, "re"))) {
        key = PEM_read_PrivateKey(f, NULL, no_passphrase, NULL);
        fclose(f);
    }
    bool ok = cert && key && X509_check_private_key(cert, key) == 1 && covers(a, cert) &&
              asn1_time(X509_get0_notAfter(cert)) > time(NULL);
    EVP_PKEY_free(key);
    if (!ok) {
        if (cert)
            log_info("ACME: %s does not match its key, misses a name or has expired: ordering",
                     a->cert_path);
        X509_free(cert);
        return NULL;
    }
    return cert;
}

/* ---- the order ---- */

static int get_directory(struct acme *a)
{
    struct resp r;
    if (http(a, "directory", a->cfg->acme_directory, NULL, false, NULL, &r) != 0)
        return -1;
    char err[128];
    struct acme_directory d;
    int rc = 0;
    if (r.code != 200)
        rc = fail_status(a, "directory", &r);
    else if (acmemsg_directory_parse((const char *)r.body.data, r.body.len, &d, err, sizeof(err)) !=
             0)
        rc = fail(a, ACME_FAIL_PROTOCOL, "directory", "%s", err);
    resp_free(&r);
    if (rc == 0) {
        acmemsg_directory_free(&a->dir);
        a->dir = d;
        a->have_dir = true;
    }
    return rc;
}

static int new_account(struct acme *a)
{
    const struct config *cfg = a->cfg;
    json_t *p = json_pack("{s:b}", "termsOfServiceAgreed", 1);
    if (cfg->acme_email) {
        char m[300];
        snprintf(m, sizeof(m), "mailto:%s", cfg->acme_email);
        json_object_set_new(p, "contact", json_pack("[s]", m));
    }
    if (cfg->acme_eab_kid && cfg->acme_eab_hmac_key) {
        /* Tolerate padding and the standard alphabet in what the CA's web page shows. */
        char k[512];
        size_t n = 0;
        for (const char *s = cfg->acme_eab_hmac_key; *s && *s != '=' && n + 1 < sizeof(k); s++)
            k[n++] = *s == '+' ? '-' : *s == '/' ? '_' : *s;
        k[n] = '\0';
        uint8_t key[384];
        long kl = dg_b64url_decode(k, n, key, sizeof(key));
        char *eab =
            kl > 0 ? acmemsg_jws_eab(cfg->acme_eab_kid, key, (size_t)kl, a->dir.new_account, a->jwk)
                   : NULL;
        OPENSSL_cleanse(key, sizeof(key));
        OPENSSL_cleanse(k, sizeof(k));
        json_t *e = eab ? json_loads(eab, 0, NULL) : NULL;
        free(eab);
        if (!e) {
            json_decref(p);
            return fail(a, ACME_FAIL_LOCAL, "account", "acme-eab-hmac-key is not base64url");
        }
        json_object_set_new(p, "externalAccountBinding", e);
    } else if (a->dir.eab_required) {
        json_decref(p);
        return fail(a, ACME_FAIL_LOCAL, "account",
                    "the CA requires external account binding (acme-eab-kid, acme-eab-hmac-key)");
    }
    char *payload = p ? json_dumps(p, JSON_COMPACT) : NULL;
    json_decref(p);
    if (!payload)
        return fail(a, ACME_FAIL_LOCAL, "account", "out of memory");
    struct resp r;
    int rc = post(a, "account", a->dir.new_account, payload, true, NULL, &r);
    free(payload);
    if (rc != 0)
        return -1;
    if (!r.location[0]) {
        resp_free(&r);
        return fail(a, ACME_FAIL_PROTOCOL, "account", "no Location (status %ld)", r.code);
    }
    if (!a->kid || strcmp(a->kid, r.location) != 0) {
        free(a->kid);
        a->kid = strdup(r.location);
        log_info("ACME: account %s (%s)", r.location, r.code == 201 ? "new" : "existing");
    }
    resp_free(&r);
    return a->kid ? 0 : fail(a, ACME_FAIL_LOCAL, "account", "out of memory");
}

static long poll_delay(struct resp *r);

/* POST-as-GET @p url and parse it as an order; @p delay (may be NULL): the poll interval its
 * Retry-After asks for. */
static int fetch_order(struct acme *a, const char *step, const char *url, struct acme_order *o,
                       long *delay)
{
    struct resp r;
    if (post(a, step, url, "", false, NULL, &r) != 0)
        return -1;
    if (delay)
        *delay = poll_delay(&r);
    char err[128];
    int rc = acmemsg_order_parse((const char *)r.body.data, r.body.len, o, err, sizeof(err));
    resp_free(&r);
    return rc == 0 ? 0 : fail(a, ACME_FAIL_PROTOCOL, step, "%s", err);
}

/* The poll interval: the answer's Retry-After, else 1 s; at most 10 s so that a poll (2 min at
 * most) still looks several times. */
static long poll_delay(struct resp *r)
{
    long ra = acmemsg_retry_after(r->retry_after[0] ? r->retry_after : NULL, time(NULL));
    return ra < 1 ? 1 : ra > 10 ? 10 : ra;
}

/* Answer the challenge of one authorization and wait until it is valid. */
static int do_authz(struct acme *a, const char *url)
{
    const char *type = a->cfg->acme_challenge == ACME_CHALLENGE_HTTP ? "http-01" : "tls-alpn-01";
    time_t deadline = time(NULL) + POLL_LIMIT_S;
    bool answered = false;
    for (;;) {
        struct resp r;
        if (post(a, "authorization", url, "", false, NULL, &r) != 0)
            return -1;
        struct acme_authz az;
        char err[128];
        long delay = poll_delay(&r);
        int rc =
            acmemsg_authz_parse((const char *)r.body.data, r.body.len, type, &az, err, sizeof(err));
        resp_free(&r);
        if (rc != 0)
            return fail(a, ACME_FAIL_PROTOCOL, "authorization", "%s", err);
        if (az.status == ACME_ST_VALID) {
            if (answered)
                log_info("ACME: %s validated", az.identifier);
            acmemsg_authz_free(&az);
            return 0;
        }
        if (az.status != ACME_ST_PENDING) {
            if (az.ch_has_error)
                rc = fail(a, ACME_FAIL_VALIDATION, "validation", "%s %s %s (status %d)",
                          az.identifier, az.ch_error.type, az.ch_error.detail, az.ch_error.status);
            else
                rc = fail(a, ACME_FAIL_VALIDATION, "validation", "%s: authorization %s",
                          az.identifier, az.status == ACME_ST_INVALID ? "invalid" : "not pending");
            acmemsg_authz_free(&az);
            return rc;
        }
        if (!answered) {
            if (!az.ch_url) {
                rc = fail(a, ACME_FAIL_PROTOCOL, "authorization", "%s: no %s challenge offered",
                          az.identifier, type);
                acmemsg_authz_free(&az);
                return rc;
            }
            char *ka = acmemsg_key_authz(az.ch_token, a->thumb);
            char name[256];
            size_t n = 0;
            for (; az.identifier[n] && n + 1 < sizeof(name); n++)
                name[n] = (char)((az.identifier[n] >= 'A' && az.identifier[n] <= 'Z')
                                     ? az.identifier[n] + 32
                                     : az.identifier[n]);
            name[n] = '\0';
            char cerr[128] = "out of memory";
            rc = -1;
            if (ka && a->cfg->acme_challenge == ACME_CHALLENGE_HTTP) {
                rc = acmechal_http_add(az.ch_token, ka);
            } else if (ka) {
                unsigned char dg[32];
                SHA256((const unsigned char *)ka, strlen(ka), dg);
                rc = acmechal_alpn_add(name, dg, cerr, sizeof(cerr));
            }
            free(ka);
            if (rc != 0) {
                rc = fail(a, ACME_FAIL_LOCAL, "challenge", "%s: %s", name, cerr);
                acmemsg_authz_free(&az);
                return rc;
            }
            struct resp cr;
            rc = post(a, "challenge", az.ch_url, "{}", false, NULL, &cr);
            acmemsg_authz_free(&az);
            if (rc != 0)
                return -1;
            resp_free(&cr);
            answered = true;
        } else {
            acmemsg_authz_free(&az);
        }
        if (time(NULL) + delay > deadline)
            return fail(a, ACME_FAIL_VALIDATION, "validation", "still pending after %d s",
                        POLL_LIMIT_S);
        if (!wait_until(a, time(NULL) + delay))
            return fail(a, ACME_FAIL_LOCAL, "validation", "stopping");
    }
}

/* Poll the order at @p url until its status is @p want (or a final one). */
static int poll_order(struct acme *a, const char *url, enum acme_st want, struct acme_order *o)
{
    time_t deadline = time(NULL) + POLL_LIMIT_S;
    for (;;) {
        long delay = 1;
        if (fetch_order(a, "order", url, o, &delay) != 0)
            return -1;
        if (o->status == want)
            return 0;
        if (o->status == ACME_ST_INVALID || o->status == ACME_ST_VALID ||
            o->status == ACME_ST_READY) {
            int rc = o->has_error ? fail(a, ACME_FAIL_REJECTED, "order", "%s %s (status %d)",
                                         o->error.type, o->error.detail, o->error.status)
                                  : fail(a, ACME_FAIL_PROTOCOL, "order", "order is %s",
                                         o->status == ACME_ST_INVALID ? "invalid" : "unexpected");
            acmemsg_order_free(o);
            return rc;
        }
        acmemsg_order_free(o);
        if (time(NULL) + delay > deadline)
            return fail(a, ACME_FAIL_PROTOCOL, "order", "not done after %d s", POLL_LIMIT_S);
        if (!wait_until(a, time(NULL) + delay))
            return fail(a, ACME_FAIL_LOCAL, "order", "stopping");
    }
}

/* A CSR in DER, base64url: CN = the first name, SAN = every name. */
static char *make_csr(struct acme *a, EVP_PKEY *key)
{
    X509_REQ *req = X509_REQ_new();
    X509_NAME *nm = X509_NAME_new();
    GENERAL_NAMES *gens = sk_GENERAL_NAME_new_null();
    STACK_OF(X509_EXTENSION) *exts = sk_X509_EXTENSION_new_null();
    char *out = NULL;
    unsigned char *der = NULL;
    /* CN: the first name that fits its 64-character bound (RFC 5280 ub-common-name); with
     * none, an empty subject (the names are in the SAN, which is what CAs read). */
    const char *cn = NULL;
    for (size_t i = 0; !cn && i < a->cfg->n_acme_domain; i++)
        if (strlen(a->cfg->acme_domain[i]) <= 64)
            cn = a->cfg->acme_domain[i];
    bool ok = req && nm && gens && exts &&
              (!cn || X509_NAME_add_entry_by_txt(nm, "CN", MBSTRING_ASC, (const unsigned char *)cn,
                                                 -1, -1, 0) == 1) &&
              X509_REQ_set_subject_name(req, nm) == 1 && X509_REQ_set_pubkey(req, key) == 1;
    for (size_t i = 0; ok && i < a->cfg->n_acme_domain; i++) {
        GENERAL_NAME *g = GENERAL_NAME_new();
        ASN1_IA5STRING *s = ASN1_IA5STRING_new();
        ok = g && s && ASN1_STRING_set(s, a->cfg->acme_domain[i], -1) == 1;
        if (ok) {
            GENERAL_NAME_set0_value(g, GEN_DNS, s);
            ok = sk_GENERAL_NAME_push(gens, g) > 0;
            if (!ok)
                GENERAL_NAME_free(g);
        } else {
            GENERAL_NAME_free(g);
            ASN1_IA5STRING_free(s);
        }
    }
    X509_EXTENSION *ext = ok ? X509V3_EXT_i2d(NID_subject_alt_name, 0, gens) : NULL;
    ok = ext && sk_X509_EXTENSION_push(exts, ext) > 0;
    if (!ok)
        X509_EXTENSION_free(ext);
    ok = ok && X509_REQ_add_extensions(req, exts) == 1 && X509_REQ_sign(req, key, EVP_sha256()) > 0;
    int n = ok ? i2d_X509_REQ(req, &der) : -1;
    if (n > 0 && (out = malloc(dg_b64url_encoded_len((size_t)n) + 1)))
        dg_b64url_encode(der, (size_t)n, out);
    OPENSSL_free(der);
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    GENERAL_NAMES_free(gens);
    X509_NAME_free(nm);
    X509_REQ_free(req);
    return out;
}

/* Check the downloaded chain and write key.pem then cert.pem. */
static int install(struct acme *a, EVP_PKEY *key, struct resp *r)
{
    /* Every certificate of the chain is parsed and written out again as PEM: the TLS store
     * reads cert.pem strictly, and a stray block or a corrupt intermediate in the CA's answer
     * would make the reload refuse the pair while this client believed it had succeeded. */
    BIO *b = BIO_new_mem_buf(r->body.data, (int)r->body.len);
    BIO *out = BIO_new(BIO_s_mem());
    X509 *leaf = NULL;
    int ncerts = 0;
    bool bad = !b || !out;
    for (X509 *x; !bad && (x = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL; ncerts++) {
        bad = PEM_write_bio_X509(out, x) != 1 || ncerts >= 10;
        if (!leaf)
            leaf = x;
        else
            X509_free(x);
    }
    /* the loop ends at the end of the data (PEM_R_NO_START_LINE) or at a block that fails */
    unsigned long last = ERR_peek_last_error();
    if (!bad && !(ERR_GET_LIB(last) == ERR_LIB_PEM && ERR_GET_REASON(last) == PEM_R_NO_START_LINE))
        bad = true;
    ERR_clear_error();
    BIO_free(b);
    char *chain = NULL;
    long chain_len = out ? BIO_get_mem_data(out, &chain) : 0;
    if (bad || !leaf || chain_len <= 0) {
        X509_free(leaf);
        BIO_free(out);
        return fail(a, ACME_FAIL_PROTOCOL, "download",
                    leaf ? "a certificate of the chain does not parse"
                         : "no PEM certificate in the answer");
    }
    if (X509_check_private_key(leaf, key) != 1 || !covers(a, leaf)) {
        X509_free(leaf);
        BIO_free(out);
        return fail(a, ACME_FAIL_PROTOCOL, "download",
                    "the certificate does not match the key or misses a name");
    }
    size_t klen = 0;
    char *kpem = pem_key(key, &klen);
    /* Both files are written and synced before either is renamed, so that the step most
     * likely to fail (a full disk) never leaves a new key beside the old chain; then the key
     * is renamed first, the chain last (the TLS store's file check sees the pair complete). */
    int rc = kpem ? write_tmp(a->key_path, kpem, klen, 0600) : -1;
    if (kpem)
        OPENSSL_cleanse(kpem, klen);
    free(kpem);
    if (rc == 0 && write_tmp(a->cert_path, chain, (size_t)chain_len, 0644) != 0) {
        int e = errno;
        char tmp[PATH_LEN + 16];
        snprintf(tmp, sizeof(tmp), "%s.tmp", a->key_path);
        unlink(tmp);
        errno = e;
        rc = -1;
    }
    if (rc == 0 && commit_tmp(a->key_path) != 0)
        rc = -1;
    if (rc == 0 && commit_tmp(a->cert_path) != 0)
        rc = -1;
    int werr = errno;
    BIO_free(out);
    if (rc != 0) {
        X509_free(leaf);
        return fail(a, ACME_FAIL_LOCAL, "install", "cannot write in %s: %s", a->cfg->acme_state_dir,
                    strerror(werr));
    }
    sync_dir(a->cfg->acme_state_dir);
    X509_free(a->cert);
    a->cert = leaf;
    return 0;
}

/* One order, from the directory to the installed pair. @p replaces: the ARI certID or NULL. */
static int attempt(struct acme *a, const char *replaces)
{
    const struct config *cfg = a->cfg;
    /* a problem document belongs to the attempt that got it (the caller reads it after) */
    memset(&a->problem, 0, sizeof(a->problem));
    a->order_refused = false;
    if (load_account(a) != 0 || get_directory(a) != 0 || new_account(a) != 0)
        return -1;

    json_t *ids = json_array();
    for (size_t i = 0; ids && i < cfg->n_acme_domain; i++)
        json_array_append_new(ids,
                              json_pack("{s:s, s:s}", "type", "dns", "value", cfg->acme_domain[i]));
    json_t *p = json_pack("{s:o}", "identifiers", ids);
    if (p && replaces && a->dir.renewal_info)
        json_object_set_new(p, "replaces", json_string(replaces));
    char *payload = p ? json_dumps(p, JSON_COMPACT) : NULL;
    json_decref(p);
    if (!payload)
        return fail(a, ACME_FAIL_LOCAL, "order", "out of memory");
    struct resp r;
    int rc = post(a, "order", a->dir.new_order, payload, false, NULL, &r);
    free(payload);
    if (rc != 0) {
        a->order_refused = a->problem.type[0] != '\0';
        return -1;
    }
    pthread_mutex_lock(&a->mu);
    a->status.orders++;
    pthread_mutex_unlock(&a->mu);
    struct acme_order o;
    char err[128], order_url[2048];
    snprintf(order_url, sizeof(order_url), "%s", r.location);
    rc = acmemsg_order_parse((const char *)r.body.data, r.body.len, &o, err, sizeof(err));
    resp_free(&r);
    if (rc != 0)
        return fail(a, ACME_FAIL_PROTOCOL, "order", "%s", err);
    if (strncmp(order_url, "https://", 8) != 0) {
        acmemsg_order_free(&o);
        return fail(a, ACME_FAIL_PROTOCOL, "order", "no Location");
    }
    log_info("ACME: order placed for %zu name%s (%zu authorization%s)", cfg->n_acme_domain,
             cfg->n_acme_domain == 1 ? "" : "s", o.n_authz, o.n_authz == 1 ? "" : "s");

    rc = 0;
    for (size_t i = 0; rc == 0 && o.status == ACME_ST_PENDING && i < o.n_authz; i++)
        rc = do_authz(a, o.authz[i]);
    acmemsg_order_free(&o);
    if (rc != 0 || poll_order(a, order_url, ACME_ST_READY, &o) != 0)
        return -1;

    EVP_PKEY *key = EVP_EC_gen("P-256");
    char *csr = key ? make_csr(a, key) : NULL;
    json_t *fp = csr ? json_pack("{s:s}", "csr", csr) : NULL;
    payload = fp ? json_dumps(fp, JSON_COMPACT) : NULL;
    json_decref(fp);
    free(csr);
    if (!payload) {
        EVP_PKEY_free(key);
        acmemsg_order_free(&o);
        return fail(a, ACME_FAIL_LOCAL, "finalize", "cannot make the key or the CSR");
    }
    rc = post(a, "finalize", o.finalize, payload, false, NULL, &r);
    free(payload);
    acmemsg_order_free(&o);
    if (rc == 0) {
        resp_free(&r);
        rc = poll_order(a, order_url, ACME_ST_VALID, &o);
    }
    if (rc == 0 && !o.certificate) {
        acmemsg_order_free(&o);
        rc = fail(a, ACME_FAIL_PROTOCOL, "finalize", "valid order without a certificate URL");
    }
    if (rc == 0) {
        log_info("ACME: certificate issued");
        rc = post(a, "download", o.certificate, "", false, "application/pem-certificate-chain", &r);
        acmemsg_order_free(&o);
        if (rc == 0) {
            rc = install(a, key, &r);
            resp_free(&r);
        }
    }
    EVP_PKEY_free(key);
    return rc;
}

/* ARI (RFC 9773): the suggested window for the current certificate, and when to ask again.
 * @return 0 with @p w set, or -1 (no renewalInfo, no AKI, any failure: the 1/3 rule then). */
static int query_ari(struct acme *a, struct acme_window *w, long *recheck, char *certid,
                     size_t idlen)
{
    *recheck = ARI_RECHECK_DEFAULT_S;
    if (!a->have_dir && get_directory(a) != 0) {
        log_info("ACME: %s; renewal from the certificate's lifetime", a->failmsg);
        return -1;
    }
    if (!a->dir.renewal_info || acmemsg_cert_id(a->cert, certid, idlen) != 0)
        return -1;
    char url[4096];
    size_t n = strlen(a->dir.renewal_info);
    snprintf(url, sizeof(url), "%s%s%s", a->dir.renewal_info,
             n && a->dir.renewal_info[n - 1] == '/' ? "" : "/", certid);
    struct resp r;
    if (http(a, "renewal information", url, NULL, false, NULL, &r) != 0) {
        log_info("ACME: %s; renewal from the certificate's lifetime", a->failmsg);
        return -1;
    }
    int rc = -1;
    if (r.code == 200 && acmemsg_ari_parse((const char *)r.body.data, r.body.len, w) == 0)
        rc = 0;
    else
        log_info("ACME: renewal information unusable (status %ld); renewal from the "
                 "certificate's lifetime",
                 r.code);
    long ra = acmemsg_retry_after(r.retry_after[0] ? r.retry_after : NULL, time(NULL));
    if (ra > 0)
        *recheck = ra < 3600 ? 3600 : ra > 86400 ? 86400 : ra;
    resp_free(&r);
    return rc;
}

static void fmt_time(time_t t, char *buf, size_t len)
{
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static void set_next(struct acme *a, time_t next)
{
    pthread_mutex_lock(&a->mu);
    a->status.next_attempt = next;
    pthread_mutex_unlock(&a->mu);
}

static void *run(void *arg)
{
    struct acme *a = arg;
    unsigned failures = 0;
    /* The renewal instant drawn for the current certificate, kept while the CA's window stays
     * the same: drawing again at every ARI re-check would pull renewals towards the start of
     * the window (the minimum of several draws). 0: not drawn yet. */
    time_t planned = 0;
    struct acme_window last_w = {0, 0};
    bool last_ari = false;
    a->cert = load_current(a);
    if (a->cert) {
        pthread_mutex_lock(&a->mu);
        a->status.not_after = asn1_time(X509_get0_notAfter(a->cert));
        pthread_mutex_unlock(&a->mu);
    }
    while (!atomic_load(&a->stop)) {
        char certid[256] = "";
        bool have_id = false;
        if (a->cert && failures == 0) {
            struct acme_window w = {0, 0};
            long recheck;
            bool ari = query_ari(a, &w, &recheck, certid, sizeof(certid)) == 0;
            have_id = certid[0] != '\0';
            time_t nb = asn1_time(X509_get0_notBefore(a->cert));
            time_t na = asn1_time(X509_get0_notAfter(a->cert));
            time_t now = time(NULL);
            if (!planned || ari != last_ari || w.start != last_w.start || w.end != last_w.end) {
                time_t at =
                    acmemsg_renew_at(nb, na, ari ? &w : NULL, draw01(), now, a->test_renew_s);
                /* A window that ends after the expiry (a CA's bug) must not let it lapse: at the
                 * latest with a tenth of the lifetime left. */
                time_t latest = na - (na - nb) / 10;
                if (a->test_renew_s == 0 && na > nb && at > latest)
                    at = latest;
                if (at > now && at != planned) {
                    char t1[32], t2[32];
                    fmt_time(na, t1, sizeof(t1));
                    fmt_time(at, t2, sizeof(t2));
                    log_info("ACME: certificate for %zu name%s valid until %s, renewal planned "
                             "at %s%s",
                             a->cfg->n_acme_domain, a->cfg->n_acme_domain == 1 ? "" : "s", t1, t2,
                             ari ? " (renewal information)" : "");
                }
                planned = at;
                last_ari = ari;
                last_w = w;
            }
            if (planned > now) {
                /* With ARI, wake at the re-check time to follow a changed window. */
                time_t wake = ari && now + recheck < planned ? now + recheck : planned;
                set_next(a, planned);
                if (!wait_until(a, wake))
                    break;
                if (time(NULL) < planned)
                    continue;
            }
        } else if (a->cert && a->dir.renewal_info) {
            have_id = acmemsg_cert_id(a->cert, certid, sizeof(certid)) == 0;
        }
        set_next(a, time(NULL));
        a->ca_retry_after = 0;
        int rc = attempt(a, have_id ? certid : NULL);
        acmechal_clear();
        /* RFC 9773 §5: a CA that refuses "replaces" (already replaced, not this account's
         * certificate, a certID it does not know after a new account key or another CA) still
         * issues a plain order. Any refusal of the newOrder itself counts, but not a rate
         * limit, which a second order would only hit again. */
        if (rc != 0 && have_id && !atomic_load(&a->stop) && a->order_refused &&
            !acmemsg_problem_is(&a->problem, "rateLimited")) {
            log_info("ACME: %s; ordering without replaces", a->failmsg);
            rc = attempt(a, NULL);
            acmechal_clear();
        }
        if (atomic_load(&a->stop))
            break;
        if (rc == 0) {
            failures = 0;
            planned = 0;
            time_t na = asn1_time(X509_get0_notAfter(a->cert));
            char t[32];
            fmt_time(na, t, sizeof(t));
            log_info("ACME: certificate installed for %zu name%s, valid until %s",
                     a->cfg->n_acme_domain, a->cfg->n_acme_domain == 1 ? "" : "s", t);
            pthread_mutex_lock(&a->mu);
            a->status.last_success = time(NULL);
            a->status.not_after = na;
            pthread_mutex_unlock(&a->mu);
            if (a->installed)
                a->installed(a->arg);
            continue;
        }
        failures++;
        long delay = acmemsg_backoff(failures, a->retry_base_s, draw01(), a->ca_retry_after);
        if (delay > 86400) /* a CA's Retry-After of days would let the certificate lapse */
            delay = 86400;
        log_warn("ACME: %s; retry in %lds", a->failmsg, delay);
        a->nonce[0] = '\0';
        pthread_mutex_lock(&a->mu);
        a->status.failures[a->fail]++;
        a->status.next_attempt = time(NULL) + delay;
        pthread_mutex_unlock(&a->mu);
        if (!wait_until(a, time(NULL) + delay))
            break;
    }
    return NULL;
}

/* mkdir -p @p dir, the last component 0700 (tightened when it exists with wider bits). */
static int make_dir(const char *dir, char *err, size_t errlen)
{
    char path[PATH_LEN];
    if (snprintf(path, sizeof(path), "%s", dir) >= (int)sizeof(path)) {
        snprintf(err, errlen, "acme-state-dir too long");
        return -1;
    }
    for (char *p = path + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(path, 0755) != 0 && errno != EEXIST) {
            snprintf(err, errlen, "cannot create %s: %s", path, strerror(errno));
            return -1;
        }
        *p = '/';
    }
    if (mkdir(path, 0700) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "cannot create %s: %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode)) {
        snprintf(err, errlen, "acme-state-dir %s is not a directory", path);
        return -1;
    }
    if ((st.st_mode & 077) && chmod(path, 0700) != 0) {
        snprintf(err, errlen, "cannot chmod 0700 %s: %s", path, strerror(errno));
        return -1;
    }
    char probe[PATH_LEN + 16];
    snprintf(probe, sizeof(probe), "%s/.probe", path);
    int fd = open(probe, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "cannot write in acme-state-dir %s: %s", path, strerror(errno));
        return -1;
    }
    close(fd);
    unlink(probe);
    return 0;
}

static long env_seconds(const char *name)
{
    const char *v = getenv(name);
    if (!v || !*v)
        return 0;
    char *end;
    long n = strtol(v, &end, 10);
    return (*end || n < 0) ? 0 : n;
}

struct acme *acme_start(const struct config *cfg, void (*installed)(void *arg), void *arg,
                        char *err, size_t errlen)
{
    if (cfg->n_acme_domain == 0 || !cfg->acme_state_dir || !cfg->acme_directory) {
        snprintf(err, errlen, "no acme-domain, acme-state-dir or acme-directory");
        return NULL;
    }
    if (make_dir(cfg->acme_state_dir, err, errlen) != 0)
        return NULL;
    /* curl_global_init is thread-safe since 7.84 (Debian has 7.88); the client is its only user. */
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        snprintf(err, errlen, "libcurl initialisation failed");
        return NULL;
    }
    struct acme *a = calloc(1, sizeof(*a));
    if (!a || !(a->curl = curl_easy_init())) {
        free(a);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    a->cfg = cfg;
    a->installed = installed;
    a->arg = arg;
    snprintf(a->ua, sizeof(a->ua), "dohgate/%s", DOHGATE_VERSION);
    snprintf(a->acct_path, sizeof(a->acct_path), "%s/account.key", cfg->acme_state_dir);
    config_acme_files(cfg, a->cert_path, a->key_path, sizeof(a->cert_path));
    a->retry_base_s = env_seconds("DOHGATE_TEST_ACME_RETRY_S");
    if (a->retry_base_s <= 0)
        a->retry_base_s = 60;
    a->test_renew_s = env_seconds("DOHGATE_TEST_ACME_RENEW_S");
    if (env_seconds("DOHGATE_TEST_ACME_RETRY_S") || a->test_renew_s)
        log_warn("ACME: test knobs set (DOHGATE_TEST_ACME_RETRY_S=%ld, "
                 "DOHGATE_TEST_ACME_RENEW_S=%ld): not for production",
                 env_seconds("DOHGATE_TEST_ACME_RETRY_S"), a->test_renew_s);
    pthread_mutex_init(&a->mu, NULL);
    pthread_cond_init(&a->cv, NULL);
    int rc = pthread_create(&a->thread, NULL, run, a);
    if (rc != 0) {
        snprintf(err, errlen, "cannot start the ACME thread: %s", strerror(rc));
        pthread_cond_destroy(&a->cv);
        pthread_mutex_destroy(&a->mu);
        curl_easy_cleanup(a->curl);
        free(a);
        return NULL;
    }
    return a;
}

void acme_stop(struct acme *a)
{
    if (!a)
        return;
    pthread_mutex_lock(&a->mu);
    atomic_store(&a->stop, true);
    pthread_cond_broadcast(&a->cv);
    pthread_mutex_unlock(&a->mu);
    pthread_join(a->thread, NULL);
    acmechal_clear();
    curl_easy_cleanup(a->curl);
    EVP_PKEY_free(a->account);
    X509_free(a->cert);
    free(a->jwk);
    free(a->kid);
    acmemsg_directory_free(&a->dir);
    pthread_cond_destroy(&a->cv);
    pthread_mutex_destroy(&a->mu);
    free(a);
}

void acme_status_get(struct acme *a, struct acme_status *out)
{
    pthread_mutex_lock(&a->mu);
    *out = a->status;
    pthread_mutex_unlock(&a->mu);
}
