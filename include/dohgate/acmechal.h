/**
 * @file acmechal.h
 * The ACME challenges being validated right now, for the listeners to answer (RFC 8555 §8):
 * tls-alpn-01 (RFC 8737) validation certificates by name, and http-01 key authorizations by
 * token. Filled by the ACME client's thread (acme.c), read by the workers during a TLS
 * handshake (tls.c) and a request on the port-80 listener (router.c).
 *
 * One table per process (there is one ACME client): a mutex guards it, and an atomic count
 * lets the hot path skip it entirely while nothing is pending (one relaxed load per
 * ClientHello; its extensions are only looked at while something is pending).
 *
 * Threads: every function is thread-safe. Nothing here calls back.
 */
#ifndef DOHGATE_ACMECHAL_H
#define DOHGATE_ACMECHAL_H

#include <openssl/evp.h>
#include <openssl/x509.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/** The ALPN protocol ID of tls-alpn-01 (RFC 8737 §6.2), as it appears on the wire (no length). */
#define ACMECHAL_ALPN "acme-tls/1"

/**
 * tls-alpn-01: make the validation certificate for @p name (lower-case DNS name): self-signed,
 * a fresh P-256 key, one dNSName SAN, and the critical id-pe-acmeIdentifier extension
 * (1.3.6.1.5.5.7.1.31) holding an OCTET STRING of @p digest, the SHA-256 of the key
 * authorization (RFC 8737 §3). Replaces one already there for the name.
 * @return 0, or -1 with @p err set.
 */
int acmechal_alpn_add(const char *name, const unsigned char digest[32], char *err, size_t errlen);

/** http-01: serve @p key_authorization at /.well-known/acme-challenge/@p token. @return 0 or
 * -1 (out of memory, token not base64url or longer than 128). */
int acmechal_http_add(const char *token, const char *key_authorization);

/** Forget every challenge (the ACME client, when an order is done or abandoned). */
void acmechal_clear(void);

/** Whether any challenge is pending (relaxed: a miss only means the CA retries). */
bool acmechal_pending(void);

/**
 * The validation certificate and key for @p name (lower-case, no trailing dot), each with a
 * reference of the caller's own (X509_free/EVP_PKEY_free).
 * @return true when @p name has a tls-alpn-01 challenge pending.
 */
bool acmechal_alpn_get(const char *name, X509 **cert, EVP_PKEY **key);

/**
 * The key authorization for http-01 @p token (the path's last segment) copied into @p out
 * (@p outlen bytes, NUL-terminated). @return its length, or 0 when no such token is pending.
 */
size_t acmechal_http_get(const char *token, char *out, size_t outlen);

/**
 * From a ClientHello's raw extensions (as SSL_client_hello_get0_ext() gives them): whether the
 * ALPN extension @p alpn (its whole body: a 2-byte list length and length-prefixed IDs) offers
 * "acme-tls/1", and the host name of the server_name extension @p sni (its whole body),
 * lower-cased without a trailing dot, into @p name (256 bytes). Pure: the fuzz target's entry.
 * @return true when both are present and well formed and acme-tls/1 is offered.
 */
bool acmechal_hello_parse(const unsigned char *alpn, size_t alpn_len, const unsigned char *sni,
                          size_t sni_len, char name[256]);

#endif
