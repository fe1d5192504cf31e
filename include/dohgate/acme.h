/**
 * @file acme.h
 * The built-in ACME client (RFC 8555): obtains one certificate for every acme-domain name from
 * the CA at acme-directory, keeps it in acme-state-dir (account.key, cert.pem, key.pem), and
 * renews it: at the window the CA's renewal information suggests (RFC 9773, when the directory
 * offers renewalInfo), else when a third of its lifetime is left. Challenges: tls-alpn-01
 * (RFC 8737) answered by the TLS listener, or http-01 by http-listen, through acmechal.h.
 *
 * It runs on a thread of its own with blocking libcurl transfers (bounded by timeouts) and
 * jansson; no worker ever waits for it. A new pair is written beside the old one and renamed
 * over it (key first, then the chain), then @p installed is called: main reloads the
 * certificates the way a file change is reloaded (tls.h), open connections keep theirs. Until
 * the first issuance the TLS store serves its self-signed certificate; a pair already in the
 * state dir that is valid and covers the names is served from the start and not ordered again.
 *
 * Failures are retried with exponential backoff and jitter (minutes to hours, honouring
 * Retry-After); the served certificate stays until a new one is in place. Each failure is one
 * log line (the CA's problem document: type, detail).
 */
#ifndef DOHGATE_ACME_H
#define DOHGATE_ACME_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

struct config;
struct acme;

/** Why an attempt failed (the metric's reason label: acme_failure_name()). */
enum acme_failure {
    ACME_FAIL_NETWORK = 0,  /**< no connection, timeout, TLS failure to the CA */
    ACME_FAIL_PROTOCOL,     /**< an answer that is not what RFC 8555 says (bad JSON, status) */
    ACME_FAIL_REJECTED,     /**< the CA said no (a problem document other than the ones below) */
    ACME_FAIL_VALIDATION,   /**< a challenge or authorization ended "invalid" */
    ACME_FAIL_RATE_LIMITED, /**< urn:ietf:params:acme:error:rateLimited */
    ACME_FAIL_LOCAL,        /**< state dir, key or file trouble on this machine */
    ACME_FAIL__COUNT
};

/** "network", "protocol", "rejected", "validation", "rate_limited", "local". */
const char *acme_failure_name(enum acme_failure f);

/** What metrics.c exports (a copy, taken under the client's lock). */
struct acme_status {
    time_t last_success; /**< last certificate installed (seconds since the epoch); 0: never */
    time_t next_attempt; /**< when the client will next order or retry; 0: nothing planned */
    time_t not_after;    /**< expiry of the certificate it holds; 0: none yet */
    uint64_t orders;     /**< orders placed since start */
    uint64_t failures[ACME_FAIL__COUNT];
};

/**
 * Start the client for @p cfg (n_acme_domain > 0; @p cfg must outlive it). Creates
 * acme-state-dir (0700) if needed and checks it can write there, then starts the thread.
 * @p installed (may be NULL) is called on the client's thread after a new pair is in place.
 * Call it after privileges are dropped: the files are the run user's.
 * @return the client, or NULL with @p err set (state dir unusable, out of memory).
 */
struct acme *acme_start(const struct config *cfg, void (*installed)(void *arg), void *arg,
                        char *err, size_t errlen);

/** Stop the thread (a transfer in progress is aborted within about a second) and free.
 * NULL is ignored. */
void acme_stop(struct acme *a);

/** A copy of the client's status (thread-safe). */
void acme_status_get(struct acme *a, struct acme_status *out);

#endif
