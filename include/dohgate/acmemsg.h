/**
 * @file acmemsg.h
 * The pure parts of the ACME client (RFC 8555), pulled out of acme.c so that they can be unit
 * tested and fuzzed: parsing the CA's JSON objects (directory, problem document, order,
 * authorization, renewal information), the renewal-time and backoff arithmetic, and the
 * cryptographic encodings (JWK, its thumbprint, JWS ES256 and HS256, the ARI certID, DER to raw
 * ECDSA signatures).
 *
 * No I/O, no global state, no locks: every function touches only what it is given, so any thread
 * may call it. Parsers take untrusted bytes (the CA's answers) with their length; strings they
 * return are the caller's (free with acmemsg_*_free()). Nothing here calls back.
 */
#ifndef DOHGATE_ACMEMSG_H
#define DOHGATE_ACMEMSG_H

#include <openssl/evp.h>
#include <openssl/x509.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

/** The directory object (RFC 8555 §7.1.1). renewal_info is RFC 9773's; NULL when absent. */
struct acme_directory {
    char *new_nonce;
    char *new_account;
    char *new_order;
    char *renewal_info;
    bool eab_required; /**< meta.externalAccountRequired */
};

/** Parse a directory; newNonce, newAccount and newOrder are required (https URLs).
 * @return 0, or -1 with @p err set (and @p d empty). */
int acmemsg_directory_parse(const char *json, size_t len, struct acme_directory *d, char *err,
                            size_t errlen);
void acmemsg_directory_free(struct acme_directory *d);

/** A problem document (RFC 7807 / RFC 8555 §6.7); subproblems are ignored. */
struct acme_problem {
    char type[128];   /**< e.g. "urn:ietf:params:acme:error:badNonce"; "" when absent */
    char detail[256]; /**< control characters replaced by '?', truncated */
    int status;       /**< the document's "status" member; 0 when absent */
};

/** @return 0 when @p json is an object (type and detail optional), -1 otherwise. */
int acmemsg_problem_parse(const char *json, size_t len, struct acme_problem *p);
/** Whether @p p's type is urn:ietf:params:acme:error:@p name. */
bool acmemsg_problem_is(const struct acme_problem *p, const char *name);

/** Order status (§7.1.6); ACME_ST_UNKNOWN for anything else. Authorizations and challenges
 * share the names. */
enum acme_st {
    ACME_ST_UNKNOWN = 0,
    ACME_ST_PENDING,
    ACME_ST_READY,
    ACME_ST_PROCESSING,
    ACME_ST_VALID,
    ACME_ST_INVALID,
    ACME_ST_EXPIRED,
    ACME_ST_DEACTIVATED,
    ACME_ST_REVOKED,
};
enum acme_st acmemsg_status(const char *s);

#define ACMEMSG_MAX_AUTHZ 100

/** An order object (§7.1.3). */
struct acme_order {
    enum acme_st status;
    char *authz[ACMEMSG_MAX_AUTHZ];
    size_t n_authz;
    char *finalize;
    char *certificate; /**< NULL until valid */
    struct acme_problem error;
    bool has_error;
};
/** status, authorizations (1..ACMEMSG_MAX_AUTHZ strings) and finalize are required. */
int acmemsg_order_parse(const char *json, size_t len, struct acme_order *o, char *err,
                        size_t errlen);
void acmemsg_order_free(struct acme_order *o);

/** An authorization (§7.1.4) and the one challenge of the wanted type. */
struct acme_authz {
    enum acme_st status;
    char *identifier;       /**< the dns identifier's value */
    enum acme_st ch_status; /**< the chosen challenge's */
    char *ch_url;           /**< NULL when no challenge of that type */
    char *ch_token;         /**< base64url, checked */
    struct acme_problem ch_error;
    bool ch_has_error;
};
/** Parse an authorization and pick the challenge of @p type ("tls-alpn-01", "http-01"). */
int acmemsg_authz_parse(const char *json, size_t len, const char *type, struct acme_authz *a,
                        char *err, size_t errlen);
void acmemsg_authz_free(struct acme_authz *a);

/** An ARI suggested window [start, end) (RFC 9773 §4.2). */
struct acme_window {
    time_t start;
    time_t end;
};
/** @return 0, or -1 when a field is missing, not an RFC 3339 time, or end <= start. */
int acmemsg_ari_parse(const char *json, size_t len, struct acme_window *w);

/** RFC 3339 date-time ("2025-01-02T04:00:00Z", fraction and offset allowed) to seconds since
 * the epoch. @return 0 or -1. */
int acmemsg_rfc3339(const char *s, time_t *out);

/** Retry-After (RFC 9110 §10.2.3): delay-seconds or an HTTP-date, seconds from @p now (>= 0).
 * @return -1 when neither. */
long acmemsg_retry_after(const char *value, time_t now);

/**
 * When to renew. With @p test_renew_s > 0 (the DOHGATE_TEST_ACME_RENEW_S knob): not_before +
 * test_renew_s. Else with a window @p w: start + draw * (end - start), or @p now if end is past.
 * Else: not_after - lifetime / 3.
 * @param draw uniform in [0, 1)
 */
time_t acmemsg_renew_at(time_t not_before, time_t not_after, const struct acme_window *w,
                        double draw, time_t now, long test_renew_s);

/** Backoff after @p failures consecutive failures (>= 1): d = base * 2^(failures-1), capped at
 * 6 h; the delay is d/2 + draw * d/2, and at least @p retry_after. In seconds. */
long acmemsg_backoff(unsigned failures, long base_s, double draw, long retry_after);
#define ACMEMSG_BACKOFF_MAX_S (6 * 3600L)

/** RFC 9773 §4.1 certID: base64url(AKI keyIdentifier) "." base64url(serial's DER content).
 * @return 0, or -1 (no AKI keyIdentifier, @p outlen too small). */
int acmemsg_cert_id(X509 *cert, char *out, size_t outlen);

/** ECDSA DER signature to raw r||s of @p n bytes each (32 for P-256). @return 0 or -1. */
int acmemsg_ecdsa_der_to_raw(const unsigned char *der, size_t len, unsigned char *raw, size_t n);

/** The public JWK of a P-256 key, members in thumbprint order: {"crv","kty","x","y"}.
 * @return malloc'd JSON or NULL. */
char *acmemsg_jwk(EVP_PKEY *key);

/** RFC 7638 thumbprint (SHA-256, base64url) of the JWK @p jwk_json (EC or RSA: only the
 * required members count). @p out needs 44 bytes. @return 0 or -1. */
int acmemsg_thumbprint(const char *jwk_json, char out[44]);

/** The key authorization token "." thumbprint into a malloc'd string, or NULL. */
char *acmemsg_key_authz(const char *token, const char *thumbprint);

/**
 * A flattened JWS (RFC 7515 §7.2.2) signed with ES256 by @p key: protected {alg, nonce, url,
 * and kid when @p kid is set, else the jwk}. @p payload "" makes a POST-as-GET.
 * @return malloc'd JSON or NULL.
 */
char *acmemsg_jws_es256(EVP_PKEY *key, const char *kid, const char *nonce, const char *url,
                        const char *payload);

/** The externalAccountBinding JWS (RFC 8555 §7.3.4): HS256 over @p jwk_json with @p hmac_key,
 * protected {alg HS256, kid, url}. @return malloc'd JSON or NULL. */
char *acmemsg_jws_eab(const char *kid, const unsigned char *hmac_key, size_t hmac_len,
                      const char *url, const char *jwk_json);

#endif
