/**
 * @file tickets.h
 * Session-ticket keys for TLS 1.2 tickets and TLS 1.3 resumption tickets, shared by every
 * worker and every certificate generation (so a reload does not cost clients a full
 * handshake), and rotated: the newest key encrypts, older ones only decrypt (a client with an
 * old ticket resumes and gets a new one), and a key older than that is forgotten, so a stolen
 * key exposes a bounded window of sessions (forward secrecy of resumed sessions).
 *
 * Keys are random, made in memory and rotated by ticket_ring_rotate(); or, for several servers
 * behind one name, read from files (ticket-key-file: 80 bytes each, `openssl rand 80`, the
 * first file encrypts), which the operator rotates on all servers at once.
 *
 * Threads: the OpenSSL callback runs on the workers under a read lock; rotate/set run on the
 * main thread under the write lock.
 */
#ifndef DOHGATE_TICKETS_H
#define DOHGATE_TICKETS_H

#include <openssl/ssl.h>
#include <stddef.h>

#define TICKET_KEY_LEN  80 /* 16 name, 32 HMAC-SHA256 key, 32 AES-256-CBC key (nginx's layout) */
#define TICKET_KEYS_MAX 16 /* random keys: the current one and 2 older; files: up to 16 */

struct ticket_key {
    unsigned char name[16], hmac[32], aes[32];
};

struct ticket_ring;

/** A ring with one random key. @return NULL on OOM or no randomness. */
struct ticket_ring *ticket_ring_new(void);
void ticket_ring_free(struct ticket_ring *r);

/** A new random key encrypts from now on; the previous two still decrypt. @return 0 or -1. */
int ticket_ring_rotate(struct ticket_ring *r);

/**
 * Read key files (@p n of them, 80 bytes each) into @p keys (capacity TICKET_KEYS_MAX).
 * @return 0, or -1 with @p err naming the file and what is wrong with it.
 */
int ticket_keys_read(char *const *files, size_t n, struct ticket_key *keys, char *err,
                     size_t errlen);

/** Replace the ring's keys by @p keys (keys[0] encrypts). */
void ticket_ring_set(struct ticket_ring *r, const struct ticket_key *keys, size_t n);

/** Make @p ctx issue and accept tickets with the ring's keys. @p r must outlive @p ctx. */
int ticket_ring_install(SSL_CTX *ctx, struct ticket_ring *r);

#endif
