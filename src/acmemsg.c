/*
 * The pure parts of the ACME client: parsers of the CA's JSON (jansson), renewal and backoff
 * arithmetic, JWK/JWS encodings (OpenSSL). See acmemsg.h.
 */
#include "dohgate/acmemsg.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <openssl/core_names.h>
#include <openssl/ecdsa.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dohgate/util.h"

#define ACME_ERR_NS "urn:ietf:params:acme:error:"

static void seterr(char *err, size_t errlen, const char *msg)
{
    if (err && errlen)
        snprintf(err, errlen, "%s", msg);
}

/* Parse with jansson, no duplicate keys (one meaning per document), bounded by len. */
static json_t *load(const char *json, size_t len)
{
    return json_loadb(json, len, JSON_REJECT_DUPLICATES, NULL);
}

static char *dup_str(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_string(v))
        return NULL;
    const char *s = json_string_value(v);
    /* jansson accepts embedded NULs: a URL with one would be cut where we use it. */
    if (strlen(s) != json_string_length(v))
        return NULL;
    return strdup(s);
}

static bool is_url(const char *s)
{
    return s && strncmp(s, "https://", 8) == 0 && s[8] != '\0';
}

int acmemsg_directory_parse(const char *json, size_t len, struct acme_directory *d, char *err,
                            size_t errlen)
{
    memset(d, 0, sizeof(*d));
    json_t *root = load(json, len);
    if (!json_is_object(root)) {
        json_decref(root);
        seterr(err, errlen, "directory is not a JSON object");
        return -1;
    }
    d->new_nonce = dup_str(root, "newNonce");
    d->new_account = dup_str(root, "newAccount");
    d->new_order = dup_str(root, "newOrder");
    d->renewal_info = dup_str(root, "renewalInfo");
    json_t *meta = json_object_get(root, "meta");
    if (json_is_object(meta))
        d->eab_required = json_is_true(json_object_get(meta, "externalAccountRequired"));
    json_decref(root);
    if (!is_url(d->new_nonce) || !is_url(d->new_account) || !is_url(d->new_order)) {
        acmemsg_directory_free(d);
        seterr(err, errlen, "directory lacks newNonce, newAccount or newOrder https URLs");
        return -1;
    }
    if (d->renewal_info && !is_url(d->renewal_info)) {
        free(d->renewal_info);
        d->renewal_info = NULL;
    }
    return 0;
}

void acmemsg_directory_free(struct acme_directory *d)
{
    free(d->new_nonce);
    free(d->new_account);
    free(d->new_order);
    free(d->renewal_info);
    memset(d, 0, sizeof(*d));
}

/* Copy a string member for a log line: printable ASCII only (the CA's text goes to the log). */
static void copy_clean(char *dst, size_t cap, json_t *v)
{
    dst[0] = '\0';
    if (!json_is_string(v))
        return;
    const char *s = json_string_value(v);
    size_t n = json_string_length(v), j = 0;
    for (size_t i = 0; i < n && j + 1 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        dst[j++] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
    }
    dst[j] = '\0';
}

static void problem_from(json_t *o, struct acme_problem *p)
{
    memset(p, 0, sizeof(*p));
    copy_clean(p->type, sizeof(p->type), json_object_get(o, "type"));
    copy_clean(p->detail, sizeof(p->detail), json_object_get(o, "detail"));
    json_t *st = json_object_get(o, "status");
    if (json_is_integer(st) && json_integer_value(st) >= 100 && json_integer_value(st) <= 599)
        p->status = (int)json_integer_value(st);
}

int acmemsg_problem_parse(const char *json, size_t len, struct acme_problem *p)
{
    memset(p, 0, sizeof(*p));
    json_t *root = load(json, len);
    if (!json_is_object(root)) {
        json_decref(root);
        return -1;
    }
    problem_from(root, p);
    json_decref(root);
    return 0;
}

bool acmemsg_problem_is(const struct acme_problem *p, const char *name)
{
    size_t n = strlen(ACME_ERR_NS);
    return strncmp(p->type, ACME_ERR_NS, n) == 0 && strcmp(p->type + n, name) == 0;
}

enum acme_st acmemsg_status(const char *s)
{
    static const char *const names[] = {"",        "pending", "ready",       "processing", "valid",
                                        "invalid", "expired", "deactivated", "revoked"};
    if (!s)
        return ACME_ST_UNKNOWN;
    for (size_t i = 1; i < sizeof(names) / sizeof(names[0]); i++)
        if (strcmp(s, names[i]) == 0)
            return (enum acme_st)i;
    return ACME_ST_UNKNOWN;
}

static enum acme_st status_of(json_t *o)
{
    json_t *v = json_object_get(o, "status");
    return json_is_string(v) ? acmemsg_status(json_string_value(v)) : ACME_ST_UNKNOWN;
}

int acmemsg_order_parse(const char *json, size_t len, struct acme_order *o, char *err,
                        size_t errlen)
{
    memset(o, 0, sizeof(*o));
    json_t *root = load(json, len);
    if (!json_is_object(root)) {
        json_decref(root);
        seterr(err, errlen, "order is not a JSON object");
        return -1;
    }
    const char *why = NULL;
    o->status = status_of(root);
    json_t *az = json_object_get(root, "authorizations");
    if (o->status == ACME_ST_UNKNOWN)
        why = "order without a known status";
    else if (!json_is_array(az) || json_array_size(az) == 0 ||
             json_array_size(az) > ACMEMSG_MAX_AUTHZ)
        why = "order without authorizations";
    for (size_t i = 0; !why && i < json_array_size(az); i++) {
        json_t *u = json_array_get(az, i);
        if (!json_is_string(u) || !is_url(json_string_value(u)) ||
            strlen(json_string_value(u)) != json_string_length(u)) {
            why = "order with a bad authorization URL";
            break;
        }
        if (!(o->authz[o->n_authz++] = strdup(json_string_value(u))))
            why = "out of memory";
    }
    if (!why) {
        o->finalize = dup_str(root, "finalize");
        if (!is_url(o->finalize))
            why = "order without a finalize URL";
    }
    if (!why) {
        o->certificate = dup_str(root, "certificate");
        if (o->certificate && !is_url(o->certificate))
            why = "order with a bad certificate URL";
        json_t *e = json_object_get(root, "error");
        if (json_is_object(e)) {
            problem_from(e, &o->error);
            o->has_error = true;
        }
    }
    json_decref(root);
    if (why) {
        acmemsg_order_free(o);
        seterr(err, errlen, why);
        return -1;
    }
    return 0;
}

void acmemsg_order_free(struct acme_order *o)
{
    for (size_t i = 0; i < o->n_authz; i++)
        free(o->authz[i]);
    free(o->finalize);
    free(o->certificate);
    memset(o, 0, sizeof(*o));
}

static bool is_b64url(const char *s)
{
    if (!s || !*s)
        return false;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && *s != '-' && *s != '_')
            return false;
    return true;
}

int acmemsg_authz_parse(const char *json, size_t len, const char *type, struct acme_authz *a,
                        char *err, size_t errlen)
{
    memset(a, 0, sizeof(*a));
    json_t *root = load(json, len);
    if (!json_is_object(root)) {
        json_decref(root);
        seterr(err, errlen, "authorization is not a JSON object");
        return -1;
    }
    const char *why = NULL;
    a->status = status_of(root);
    json_t *id = json_object_get(root, "identifier");
    json_t *chs = json_object_get(root, "challenges");
    if (a->status == ACME_ST_UNKNOWN)
        why = "authorization without a known status";
    else if (!json_is_object(id) || !(a->identifier = dup_str(id, "value")))
        why = "authorization without an identifier";
    else if (strlen(a->identifier) > 253 ||
             strspn(a->identifier,
                    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.*") !=
                 strlen(a->identifier))
        why = "authorization for something that is not a DNS name"; /* also kept out of logs */
    else if (!json_is_array(chs))
        why = "authorization without challenges";
    for (size_t i = 0; !why && i < json_array_size(chs); i++) {
        json_t *c = json_array_get(chs, i);
        json_t *t = json_object_get(c, "type");
        if (!json_is_object(c) || !json_is_string(t) || strcmp(json_string_value(t), type) != 0)
            continue;
        a->ch_status = status_of(c);
        a->ch_url = dup_str(c, "url");
        a->ch_token = dup_str(c, "token");
        if (!is_url(a->ch_url) || !is_b64url(a->ch_token) || strlen(a->ch_token) > 128)
            why = "challenge without a URL or a base64url token";
        json_t *e = json_object_get(c, "error");
        if (json_is_object(e)) {
            problem_from(e, &a->ch_error);
            a->ch_has_error = true;
        }
        break;
    }
    json_decref(root);
    if (why) {
        acmemsg_authz_free(a);
        seterr(err, errlen, why);
        return -1;
    }
    return 0;
}

void acmemsg_authz_free(struct acme_authz *a)
{
    free(a->identifier);
    free(a->ch_url);
    free(a->ch_token);
    memset(a, 0, sizeof(*a));
}

static int digits(const char **p, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)**p))
            return -1;
        v = v * 10 + (**p - '0');
        (*p)++;
    }
    *out = v;
    return 0;
}

int acmemsg_rfc3339(const char *s, time_t *out)
{
    int Y, M, D, h, m, sec;
    const char *p = s;
    if (digits(&p, 4, &Y) || *p++ != '-' || digits(&p, 2, &M) || *p++ != '-' || digits(&p, 2, &D) ||
        (*p != 'T' && *p != 't') || !*p++ || digits(&p, 2, &h) || *p++ != ':' ||
        digits(&p, 2, &m) || *p++ != ':' || digits(&p, 2, &sec))
        return -1;
    if (M < 1 || M > 12 || D < 1 || D > 31 || h > 23 || m > 59 || sec > 60 || Y < 1970)
        return -1;
    if (*p == '.') { /* fractional seconds: dropped (a window is seconds-wide at least) */
        p++;
        if (!isdigit((unsigned char)*p))
            return -1;
        while (isdigit((unsigned char)*p))
            p++;
    }
    long off = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int sign = *p++ == '-' ? -1 : 1, oh, om;
        if (digits(&p, 2, &oh) || *p++ != ':' || digits(&p, 2, &om) || oh > 23 || om > 59)
            return -1;
        off = sign * (oh * 3600L + om * 60L);
    } else {
        return -1;
    }
    if (*p)
        return -1;
    struct tm tm = {.tm_year = Y - 1900,
                    .tm_mon = M - 1,
                    .tm_mday = D,
                    .tm_hour = h,
                    .tm_min = m,
                    .tm_sec = sec > 59 ? 59 : sec};
    time_t t = timegm(&tm);
    if (t == (time_t)-1)
        return -1;
    *out = t - off;
    return 0;
}

int acmemsg_ari_parse(const char *json, size_t len, struct acme_window *w)
{
    json_t *root = load(json, len);
    int rc = -1;
    json_t *sw = json_object_get(root, "suggestedWindow");
    json_t *st = json_object_get(sw, "start"), *en = json_object_get(sw, "end");
    struct acme_window tmp;
    if (json_is_object(root) && json_is_object(sw) && json_is_string(st) && json_is_string(en) &&
        acmemsg_rfc3339(json_string_value(st), &tmp.start) == 0 &&
        acmemsg_rfc3339(json_string_value(en), &tmp.end) == 0 && tmp.end > tmp.start) {
        *w = tmp;
        rc = 0;
    }
    json_decref(root);
    return rc;
}

long acmemsg_retry_after(const char *value, time_t now)
{
    if (!value)
        return -1;
    while (*value == ' ' || *value == '\t')
        value++;
    if (isdigit((unsigned char)*value)) {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(value, &end, 10);
        while (*end == ' ' || *end == '\t' || *end == '\r' || *end == '\n')
            end++;
        if (*end || errno)
            return -1;
        return v > 86400ULL * 365 ? 86400L * 365 : (long)v;
    }
    /* IMF-fixdate, "Sun, 06 Nov 1994 08:49:37 GMT" (the form RFC 9110 says senders use). */
    static const char *const mon[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                      "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    char wd[4], mo[4], gmt[4];
    int d, y, h, mi, s;
    if (sscanf(value, "%3s, %d %3s %d %d:%d:%d %3s", wd, &d, mo, &y, &h, &mi, &s, gmt) != 8 ||
        strcmp(gmt, "GMT") != 0)
        return -1;
    int m = -1;
    for (int i = 0; i < 12; i++)
        if (strcmp(mo, mon[i]) == 0)
            m = i;
    if (m < 0 || d < 1 || d > 31 || y < 1970 || y > 9999 || h > 23 || mi > 59 || s > 60 || h < 0 ||
        mi < 0 || s < 0)
        return -1;
    struct tm tm = {
        .tm_year = y - 1900, .tm_mon = m, .tm_mday = d, .tm_hour = h, .tm_min = mi, .tm_sec = s};
    time_t t = timegm(&tm);
    if (t == (time_t)-1)
        return -1;
    return t > now ? (long)(t - now) : 0;
}

time_t acmemsg_renew_at(time_t not_before, time_t not_after, const struct acme_window *w,
                        double draw, time_t now, long test_renew_s)
{
    if (test_renew_s > 0)
        return not_before + test_renew_s;
    if (draw < 0 || draw >= 1 || isnan(draw))
        draw = 0;
    if (w && w->end > w->start) {
        if (w->end <= now)
            return now;
        return w->start + (time_t)(draw * (double)(w->end - w->start));
    }
    time_t life = not_after > not_before ? not_after - not_before : 0;
    return not_after - life / 3;
}

long acmemsg_backoff(unsigned failures, long base_s, double draw, long retry_after)
{
    if (base_s < 1)
        base_s = 1;
    if (draw < 0 || draw >= 1 || isnan(draw))
        draw = 0;
    long d = base_s;
    for (unsigned i = 1; i < failures && d < ACMEMSG_BACKOFF_MAX_S; i++)
        d *= 2;
    if (d > ACMEMSG_BACKOFF_MAX_S)
        d = ACMEMSG_BACKOFF_MAX_S;
    long delay = d / 2 + (long)(draw * (double)(d - d / 2));
    if (delay < 1)
        delay = 1;
    return delay < retry_after ? retry_after : delay;
}

int acmemsg_cert_id(X509 *cert, char *out, size_t outlen)
{
    /* Decoded here rather than with X509_get0_authority_key_id(), which answers NULL for a
     * certificate whose extension cache cannot be built (e.g. one not signed yet). */
    AUTHORITY_KEYID *ak = X509_get_ext_d2i(cert, NID_authority_key_identifier, NULL, NULL);
    const ASN1_INTEGER *serial = X509_get0_serialNumber(cert);
    const ASN1_OCTET_STRING *kid = ak ? ak->keyid : NULL;
    unsigned char *der = NULL;
    int n = serial ? i2d_ASN1_INTEGER(serial, &der) : -1;
    int rc = -1;
    /* The serial's DER content octets: i2d gives tag, length, content; skip the first two
     * (a serial is at most 20 octets, so the length is one byte). */
    if (kid && ASN1_STRING_length(kid) > 0 && n >= 3 && der[1] < 0x80) {
        size_t klen = (size_t)ASN1_STRING_length(kid), slen = (size_t)n - 2;
        if (dg_b64url_encoded_len(klen) + 1 + dg_b64url_encoded_len(slen) + 1 <= outlen) {
            size_t k = dg_b64url_encode(ASN1_STRING_get0_data(kid), klen, out);
            out[k++] = '.';
            dg_b64url_encode(der + 2, slen, out + k);
            rc = 0;
        }
    }
    OPENSSL_free(der);
    AUTHORITY_KEYID_free(ak);
    return rc;
}

int acmemsg_ecdsa_der_to_raw(const unsigned char *der, size_t len, unsigned char *raw, size_t n)
{
    const unsigned char *p = der;
    ECDSA_SIG *sig = d2i_ECDSA_SIG(NULL, &p, (long)len);
    if (!sig)
        return -1;
    int rc = -1;
    if (p == der + len) {
        const BIGNUM *r, *s;
        ECDSA_SIG_get0(sig, &r, &s);
        if (BN_bn2binpad(r, raw, (int)n) == (int)n && BN_bn2binpad(s, raw + n, (int)n) == (int)n)
            rc = 0;
    }
    ECDSA_SIG_free(sig);
    return rc;
}

static char *b64(const unsigned char *p, size_t n)
{
    char *s = malloc(dg_b64url_encoded_len(n) + 1);
    if (s)
        dg_b64url_encode(p, n, s);
    return s;
}

char *acmemsg_jwk(EVP_PKEY *key)
{
    BIGNUM *x = NULL, *y = NULL;
    char *out = NULL;
    unsigned char xb[32], yb[32];
    if (EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_EC_PUB_X, &x) == 1 &&
        EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_EC_PUB_Y, &y) == 1 &&
        BN_bn2binpad(x, xb, 32) == 32 && BN_bn2binpad(y, yb, 32) == 32) {
        char xs[48], ys[48];
        dg_b64url_encode(xb, 32, xs);
        dg_b64url_encode(yb, 32, ys);
        char buf[200];
        snprintf(buf, sizeof(buf), "{\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":\"%s\",\"y\":\"%s\"}",
                 xs, ys);
        out = strdup(buf);
    }
    BN_free(x);
    BN_free(y);
    return out;
}

int acmemsg_thumbprint(const char *jwk_json, char out[44])
{
    json_t *jwk = json_loads(jwk_json, JSON_REJECT_DUPLICATES, NULL);
    json_t *kty = json_object_get(jwk, "kty");
    static const char *const ec[] = {"crv", "kty", "x", "y", NULL};
    static const char *const rsa[] = {"e", "kty", "n", NULL};
    const char *const *members = NULL;
    if (json_is_string(kty) && strcmp(json_string_value(kty), "EC") == 0)
        members = ec;
    else if (json_is_string(kty) && strcmp(json_string_value(kty), "RSA") == 0)
        members = rsa;
    int rc = -1;
    json_t *req = json_object();
    for (size_t i = 0; members && req && members[i]; i++) {
        json_t *v = json_object_get(jwk, members[i]);
        if (!json_is_string(v) || json_object_set(req, members[i], v) != 0)
            members = NULL;
    }
    /* RFC 7638 §3.3: required members only, sorted, no whitespace; the values are base64url or
     * short names, so jansson's compact form is the canonical one. */
    char *canon = members && req ? json_dumps(req, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    if (canon) {
        unsigned char h[SHA256_DIGEST_LENGTH];
        SHA256((const unsigned char *)canon, strlen(canon), h);
        dg_b64url_encode(h, sizeof(h), out);
        rc = 0;
    }
    free(canon);
    json_decref(req);
    json_decref(jwk);
    return rc;
}

char *acmemsg_key_authz(const char *token, const char *thumbprint)
{
    size_t n = strlen(token) + 1 + strlen(thumbprint) + 1;
    char *s = malloc(n);
    if (s)
        snprintf(s, n, "%s.%s", token, thumbprint);
    return s;
}

/* {"protected":P,"payload":Y,"signature":S} from the three base64url parts. */
static char *flattened(const char *prot, const char *payload, const char *sig)
{
    json_t *o =
        json_pack("{s:s, s:s, s:s}", "protected", prot, "payload", payload, "signature", sig);
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    return s;
}

/* base64url(protected JSON) "." base64url(payload): the JWS signing input, malloc'd. */
static char *signing_input(json_t *prot, const char *payload, char **prot_b64, char **pay_b64)
{
    char *ph = json_dumps(prot, JSON_COMPACT);
    char *input = NULL;
    *prot_b64 = ph ? b64((const unsigned char *)ph, strlen(ph)) : NULL;
    *pay_b64 = b64((const unsigned char *)payload, strlen(payload));
    if (*prot_b64 && *pay_b64) {
        size_t n = strlen(*prot_b64) + strlen(*pay_b64) + 2;
        if ((input = malloc(n)))
            snprintf(input, n, "%s.%s", *prot_b64, *pay_b64);
    }
    free(ph);
    return input;
}

char *acmemsg_jws_es256(EVP_PKEY *key, const char *kid, const char *nonce, const char *url,
                        const char *payload)
{
    json_t *prot = json_pack("{s:s, s:s, s:s}", "alg", "ES256", "nonce", nonce, "url", url);
    if (!prot)
        return NULL;
    if (kid) {
        json_object_set_new(prot, "kid", json_string(kid));
    } else {
        char *jwk = acmemsg_jwk(key);
        json_t *j = jwk ? json_loads(jwk, 0, NULL) : NULL;
        free(jwk);
        if (!j) {
            json_decref(prot);
            return NULL;
        }
        json_object_set_new(prot, "jwk", j);
    }
    char *pb = NULL, *yb = NULL, *out = NULL;
    char *input = signing_input(prot, payload, &pb, &yb);
    json_decref(prot);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    unsigned char der[80], raw[64];
    size_t derlen = sizeof(der);
    if (input && md && EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, key) == 1 &&
        EVP_DigestSign(md, der, &derlen, (const unsigned char *)input, strlen(input)) == 1 &&
        acmemsg_ecdsa_der_to_raw(der, derlen, raw, 32) == 0) {
        char sig[100];
        dg_b64url_encode(raw, sizeof(raw), sig);
        out = flattened(pb, yb, sig);
    }
    EVP_MD_CTX_free(md);
    free(input);
    free(pb);
    free(yb);
    return out;
}

char *acmemsg_jws_eab(const char *kid, const unsigned char *hmac_key, size_t hmac_len,
                      const char *url, const char *jwk_json)
{
    json_t *prot = json_pack("{s:s, s:s, s:s}", "alg", "HS256", "kid", kid, "url", url);
    if (!prot)
        return NULL;
    char *pb = NULL, *yb = NULL, *out = NULL;
    char *input = signing_input(prot, jwk_json, &pb, &yb);
    json_decref(prot);
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;
    if (input && HMAC(EVP_sha256(), hmac_key, (int)hmac_len, (const unsigned char *)input,
                      strlen(input), mac, &maclen)) {
        char sig[64];
        dg_b64url_encode(mac, maclen, sig);
        out = flattened(pb, yb, sig);
    }
    free(input);
    free(pb);
    free(yb);
    return out;
}
