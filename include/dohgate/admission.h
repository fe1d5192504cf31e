/**
 * @file admission.h
 * Whether a client's query is served: the policy step that runs before any handler work (and
 * before any decoding). It checks the client access list (acl.h: refused networks) and the
 * per-client query rate (clients.h: token bucket) against the client_id filled at accept, and
 * returns a verdict. It knows no protocol: each front end maps the verdict to its own answer
 * (the HTTP router: 403, or 429 with Retry-After; a plain DNS listener would answer REFUSED).
 *
 * Connection-time checks (acl-scope all, per-client connection counts and rates) stay at accept
 * in worker.c, where a refusal closes the socket before any TLS work.
 *
 * Threads: admission_check() is thread-safe (the ACL is read-only, the clients table locks).
 * It neither allocates nor calls back.
 */
#ifndef DOHGATE_ADMISSION_H
#define DOHGATE_ADMISSION_H

struct acl;
struct clients;
struct client_id;

/** What the policy needs; the pointers are borrowed (the worker's, shared by all workers). */
struct admission_policy {
    const struct acl *acl;   /**< refused networks; NULL or empty: everybody may ask */
    struct clients *clients; /**< query rate per client; NULL or no rate: no limit */
};

enum admission_outcome {
    ADMISSION_ALLOW = 0,
    ADMISSION_REFUSE,       /**< not served at all: see reason */
    ADMISSION_RATE_LIMITED, /**< served, but not now: see wait_s */
};

enum admission_reason {
    ADMISSION_REASON_NONE = 0,
    ADMISSION_REASON_ACL, /**< the client's network is denied (or not allowed) */
};

struct admission_verdict {
    enum admission_outcome outcome;
    enum admission_reason reason; /**< ADMISSION_REFUSE: why; else NONE */
    unsigned wait_s;              /**< ADMISSION_RATE_LIMITED: seconds until a query would pass
                                       (at least 1, for Retry-After); else 0 */
};

/**
 * Judge one query of client @p id. The ACL comes first (a refused client spends no token);
 * an allowed query takes one token from the client's bucket. An unknown client (@p id NULL or
 * not IPv4/IPv6) is refused when the ACL has entries, and not rate-limited (it has no key).
 * The clock is read only when a query rate is configured.
 */
struct admission_verdict admission_check(const struct admission_policy *p,
                                         const struct client_id *id);

/** A short sentence for a refusal, for the client (HTTP 403 body, logs). Never NULL. */
const char *admission_reason_text(enum admission_reason reason);

#endif
