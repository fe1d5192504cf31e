/**
 * @file tls.h
 * Builds the server's SSL_CTX from the configuration: TLS 1.2 and 1.3 only, TLS 1.2 limited to
 * ECDHE with AEAD ciphers, X25519 first, ALPN "h2" preferred over "http/1.1", certificate and key
 * from files or an ephemeral self-signed ECDSA P-256 certificate made at start. Knows nothing of
 * HTTP. The SSL_CTX is shared by all workers (OpenSSL makes that thread-safe), which also shares
 * the session-ticket keys between them.
 */
#ifndef DOHGATE_TLS_H
#define DOHGATE_TLS_H

#include <openssl/ssl.h>
#include <stddef.h>

struct config;

/** Which application protocol the handshake chose. */
enum tls_alpn { TLS_ALPN_NONE = 0, TLS_ALPN_H2, TLS_ALPN_HTTP11 };

/**
 * Build the context. With cfg->cert_file NULL, generate a self-signed certificate for
 * cfg->server_name (and localhost, 127.0.0.1, ::1); @p fingerprint then receives its SHA-256
 * fingerprint as colon-separated hex (needs 96 bytes), else an empty string.
 * @return the context, or NULL with a message in @p err (unreadable file, key mismatch, ...).
 */
SSL_CTX *tls_ctx_new(const struct config *cfg, char *fingerprint, char *err, size_t errlen);

/** The ALPN result of a finished handshake. */
enum tls_alpn tls_alpn_get(const SSL *ssl);

#endif
