/* pthread_rwlockattr_setkind_np() */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "dohgate/tickets.h"

#include <errno.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RANDOM_KEYS_KEPT 3 /* the current key and two older ones */

struct ticket_ring {
    pthread_rwlock_t lock;
    struct ticket_key keys[TICKET_KEYS_MAX];
    size_t n;
};

static int ring_index = -1;
static pthread_once_t ring_index_once = PTHREAD_ONCE_INIT;

static void ring_index_init(void)
{
    ring_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
}

static int random_key(struct ticket_key *k)
{
    return RAND_bytes((unsigned char *)k, sizeof(*k)) == 1 ? 0 : -1;
}

struct ticket_ring *ticket_ring_new(void)
{
    struct ticket_ring *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    /* Writer first: a stream of handshakes must not hold off a rotation for long. */
    pthread_rwlockattr_t attr;
    pthread_rwlockattr_init(&attr);
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    int rc = pthread_rwlock_init(&r->lock, &attr);
    pthread_rwlockattr_destroy(&attr);
    if (rc != 0) {
        free(r);
        return NULL;
    }
    if (random_key(&r->keys[0]) != 0) {
        ticket_ring_free(r);
        return NULL;
    }
    r->n = 1;
    return r;
}

void ticket_ring_free(struct ticket_ring *r)
{
    if (!r)
        return;
    OPENSSL_cleanse(r->keys, sizeof(r->keys));
    pthread_rwlock_destroy(&r->lock);
    free(r);
}

int ticket_ring_rotate(struct ticket_ring *r)
{
    struct ticket_key k;
    if (random_key(&k) != 0)
        return -1;
    pthread_rwlock_wrlock(&r->lock);
    size_t keep = r->n < RANDOM_KEYS_KEPT ? r->n : RANDOM_KEYS_KEPT - 1;
    memmove(&r->keys[1], &r->keys[0], keep * sizeof(r->keys[0]));
    OPENSSL_cleanse(&r->keys[keep + 1], (TICKET_KEYS_MAX - keep - 1) * sizeof(r->keys[0]));
    r->keys[0] = k;
    r->n = keep + 1;
    pthread_rwlock_unlock(&r->lock);
    OPENSSL_cleanse(&k, sizeof(k));
    return 0;
}

int ticket_keys_read(char *const *files, size_t n, struct ticket_key *keys, char *err,
                     size_t errlen)
{
    if (n > TICKET_KEYS_MAX) {
        snprintf(err, errlen, "at most %d ticket-key-file entries", TICKET_KEYS_MAX);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        FILE *f = fopen(files[i], "rb");
        if (!f) {
            snprintf(err, errlen, "ticket-key-file %s: %s", files[i], strerror(errno));
            return -1;
        }
        /* unbuffered: no copy of the key is left in a stdio buffer freed without wiping */
        setvbuf(f, NULL, _IONBF, 0);
        unsigned char buf[TICKET_KEY_LEN + 1];
        size_t got = fread(buf, 1, sizeof(buf), f);
        fclose(f);
        if (got != TICKET_KEY_LEN) {
            snprintf(err, errlen,
                     "ticket-key-file %s: must hold exactly %d bytes (openssl rand %d > FILE), "
                     "not %s%zu",
                     files[i], TICKET_KEY_LEN, TICKET_KEY_LEN,
                     got > TICKET_KEY_LEN ? "more than " : "",
                     got > TICKET_KEY_LEN ? (size_t)TICKET_KEY_LEN : got);
            OPENSSL_cleanse(buf, sizeof(buf));
            return -1;
        }
        memcpy(keys[i].name, buf, 16);
        memcpy(keys[i].hmac, buf + 16, 32);
        memcpy(keys[i].aes, buf + 48, 32);
        OPENSSL_cleanse(buf, sizeof(buf));
    }
    return 0;
}

void ticket_ring_set(struct ticket_ring *r, const struct ticket_key *keys, size_t n)
{
    pthread_rwlock_wrlock(&r->lock);
    OPENSSL_cleanse(r->keys, sizeof(r->keys));
    memcpy(r->keys, keys, n * sizeof(keys[0]));
    r->n = n;
    pthread_rwlock_unlock(&r->lock);
}

static int set_mac(EVP_MAC_CTX *hctx, const struct ticket_key *k)
{
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, (void *)k->hmac, sizeof(k->hmac)),
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
        OSSL_PARAM_construct_end(),
    };
    return EVP_MAC_CTX_set_params(hctx, params) == 1 ? 0 : -1;
}

/* OpenSSL's ticket callback (SSL_CTX_set_tlsext_ticket_key_evp_cb), on a worker thread.
 * enc=1: choose the current key. enc=0: find the ticket's key: 1 = use it, 2 = use it and
 * issue a fresh ticket (an older key), 0 = unknown key (full handshake), -1 = error. */
static int on_ticket(SSL *ssl, unsigned char key_name[16], unsigned char iv[EVP_MAX_IV_LENGTH],
                     EVP_CIPHER_CTX *ectx, EVP_MAC_CTX *hctx, int enc)
{
    struct ticket_ring *r = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), ring_index);
    if (!r)
        return -1;
    int rc = -1;
    pthread_rwlock_rdlock(&r->lock);
    if (enc) {
        const struct ticket_key *k = &r->keys[0];
        if (r->n > 0 && RAND_bytes(iv, 16) == 1 &&
            EVP_EncryptInit_ex(ectx, EVP_aes_256_cbc(), NULL, k->aes, iv) == 1 &&
            set_mac(hctx, k) == 0) {
            memcpy(key_name, k->name, 16);
            rc = 1;
        }
    } else {
        rc = 0;
        for (size_t i = 0; i < r->n; i++) {
            const struct ticket_key *k = &r->keys[i];
            if (memcmp(key_name, k->name, 16) != 0)
                continue;
            rc = EVP_DecryptInit_ex(ectx, EVP_aes_256_cbc(), NULL, k->aes, iv) == 1 &&
                         set_mac(hctx, k) == 0
                     ? (i == 0 ? 1 : 2)
                     : -1;
            break;
        }
    }
    pthread_rwlock_unlock(&r->lock);
    return rc;
}

int ticket_ring_install(SSL_CTX *ctx, struct ticket_ring *r)
{
    pthread_once(&ring_index_once, ring_index_init);
    if (ring_index < 0 || !SSL_CTX_set_ex_data(ctx, ring_index, r))
        return -1;
    return SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, on_ticket) == 1 ? 0 : -1;
}
