/**
 * @file tls.h
 * The server's TLS contexts: TLS 1.2 and 1.3 only, TLS 1.2 limited to ECDHE with AEAD ciphers,
 * X25519 first, ALPN "h2" preferred over "http/1.1" ("dot" on the DoT listener: tls_ssl_set_dot()).
 * Certificates come from cert/key file pairs, or an ephemeral self-signed ECDSA P-256
 * certificate is made at start. Knows nothing of HTTP.
 *
 * A struct tls_store holds the current generation: one SSL_CTX per group of pairs that share
 * their names (an ECDSA and an RSA certificate for the same names go in one SSL_CTX, and
 * OpenSSL picks by the client's signature algorithms). The first group's SSL_CTX is the
 * default; the SNI callback switches a handshake to another group's SSL_CTX by name.
 *
 * Reload: tls_store_reload() builds a whole new generation from the files and swaps it in only
 * if every pair loads and every key matches its certificate; otherwise the old one stays.
 * Connections hold their own reference (SSL_new takes one on the SSL_CTX, and the SNI table is
 * owned by the default SSL_CTX), so open connections keep their generation until they close.
 * Session-ticket keys (tickets.h) belong to the store, not to a generation: tickets stay valid
 * across reloads.
 *
 * ACME tls-alpn-01 (RFC 8737): while a challenge is pending (acmechal.h), a ClientHello
 * offering ALPN "acme-tls/1" for a pending name gets that name's validation certificate instead
 * of the configured ones, ALPN acme-tls/1 (tls_alpn_get(): TLS_ALPN_ACME), no OCSP staple and
 * no session ticket; on the HTTPS listener only, never on DoT. Every other handshake, one
 * offering acme-tls/1 for a name with nothing pending too, is unchanged (no ALPN selected).
 *
 * Threads: tls_store_ssl_new() is called by every worker; reload/poll by the main thread
 * only. A mutex guards the current pointer (held for one SSL_new).
 */
#ifndef DOHGATE_TLS_H
#define DOHGATE_TLS_H

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

struct config;
struct tls_store;
struct tls_staged;

/** Which application protocol the handshake chose. TLS_ALPN_ACME ("acme-tls/1") only on a
 * handshake that answered a pending tls-alpn-01 challenge (acmechal.h) with its validation
 * certificate: RFC 8737 §3 says nothing more is spoken on it, the connection only closes. */
enum tls_alpn { TLS_ALPN_NONE = 0, TLS_ALPN_H2, TLS_ALPN_HTTP11, TLS_ALPN_DOT, TLS_ALPN_ACME };

/**
 * Build the first generation. With no cert in @p cfg, generate a self-signed certificate for
 * cfg->server_name (and localhost, 127.0.0.1, ::1); @p fingerprint then receives its SHA-256
 * fingerprint as colon-separated hex (needs 96 bytes), else an empty string. @p cfg must
 * outlive the store.
 * @return the store, or NULL with a message in @p err (unreadable file, key mismatch, ...).
 */
struct tls_store *tls_store_new(const struct config *cfg, char *fingerprint, char *err,
                                size_t errlen);
void tls_store_free(struct tls_store *ts);

/** A server-side SSL on the current generation (thread-safe). NULL when out of memory. */
SSL *tls_store_ssl_new(struct tls_store *ts);

/** Results of reload and poll. */
enum tls_reload { TLS_RELOAD_NONE = 0, TLS_RELOAD_DONE, TLS_RELOAD_FAILED };

/**
 * Load every pair again now (SIGHUP). DONE: swapped in; FAILED: @p err says why and the old
 * generation stays; NONE: nothing to load (self-signed).
 */
enum tls_reload tls_store_reload(struct tls_store *ts, char *err, size_t errlen);

/**
 * Check the files (stat, which follows symlinks, so certbot's link swaps count). A change is
 * loaded once the files have looked the same on two calls in a row, so a half-written renewal
 * (new cert, old key) is not tried; a set of files that failed once is not retried until it
 * changes again. Call it every cert-check-interval.
 */
enum tls_reload tls_store_poll(struct tls_store *ts, char *err, size_t errlen);

/**
 * Periodic work, on the main thread: the file check every cert-check-interval (as
 * tls_store_poll(), whose result it returns), and the session-ticket key rotation every
 * ticket-key-rotation (random keys only). Call it about once a second, and after signals;
 * @p now_ms is a monotonic clock. The first call only sets the schedule.
 */
enum tls_reload tls_store_tick(struct tls_store *ts, uint64_t now_ms, char *err, size_t errlen);
/** Whether tls_store_tick() has anything to do (else the main thread can sleep). */
bool tls_store_needs_tick(const struct tls_store *ts);

/**
 * Full reload, step 1 (main thread): read the ticket-key files and build a new generation from
 * @p cfg's certificates, without using them yet. With no certificate before and after, the
 * self-signed generation is kept. @p fingerprint (96 bytes) receives the fingerprint of a new
 * self-signed certificate (certificates removed), else "".
 * @return the staged state for tls_store_commit() or tls_staged_free(), or NULL with @p err set.
 */
struct tls_staged *tls_store_prepare(struct tls_store *ts, const struct config *cfg,
                                     char *fingerprint, char *err, size_t errlen);
/**
 * Full reload, step 2 (main thread, cannot fail): install what tls_store_prepare() read; new
 * connections use it, open ones keep their generation. From here the store reads the staged
 * config (file list, intervals), which must outlive the store or the next commit. Frees @p st.
 */
void tls_store_commit(struct tls_store *ts, struct tls_staged *st);
/** Drop a staged reload that will not be committed. NULL is ignored. */
void tls_staged_free(struct tls_staged *st);

/** One loaded certificate, for logs and metrics. */
struct tls_cert_info {
    const char *file;        /**< the cert file ("self-signed" for the generated one) */
    char subject[256];       /**< one line, e.g. "CN=doh.example.net" */
    char names[256];         /**< DNS names, comma-separated (CN when there are none) */
    char serial[80];         /**< hex */
    char key_type[16];       /**< "ECDSA P-256", "RSA 2048", ... */
    time_t not_after;        /**< expiry, seconds since the epoch */
    time_t ocsp_next_update; /**< the stapled OCSP response's nextUpdate; 0: none stapled */
};

/** Call @p fn for each certificate of the current generation, in configuration order. */
void tls_store_each_cert(struct tls_store *ts,
                         void (*fn)(const struct tls_cert_info *ci, void *arg), void *arg);

/** Whether the default certificate (the one a client without SNI gets) names IP address @p ip
 * ("192.0.2.1", "2001:db8::1") as an IP SAN: what DDR's verified discovery needs (RFC 9462). */
bool tls_store_covers_ip(struct tls_store *ts, const char *ip);

/** Whether @p name (lower-case) is matched by certificate name @p pattern ("*.x" wildcards). */
bool tls_name_matches(const char *pattern, const char *name);

/**
 * Mark @p ssl (before its handshake) as a DoT connection (dot-listen): ALPN then selects "dot"
 * when offered, refuses an offer without it (no_application_protocol alert), and accepts a
 * ClientHello without ALPN. Unmarked connections select h2 or http/1.1 (or nothing) as before.
 * The same certificates, SNI and session tickets serve both. @return 0, or -ENOMEM.
 */
int tls_ssl_set_dot(SSL *ssl);

/** The ALPN result of a finished handshake. */
enum tls_alpn tls_alpn_get(const SSL *ssl);

#endif
