/* Response rate limiting for plain DNS over UDP: see rrl.h. */
#include "dohgate/rrl.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <xxhash.h>

#define NIL UINT32_MAX
/* A full bucket after this long idle: no need to add more (and no overflow). */
#define REFILL_CAP_MS 1000u

/* The network of a client: 3 bytes (IPv4 /24) or 7 bytes (IPv6 /56), and the length, so
 * that an IPv4 /24 never equals an IPv6 prefix. */
struct net_key {
    uint8_t b[7];
    uint8_t len;
};

struct entry {
    struct net_key key;
    uint32_t hnext;      /* hash chain (index in the shard's pool) */
    uint32_t prev, next; /* LRU order, most recent first */
    uint32_t limited;    /* answers over the limit so far (slip counting) */
    uint64_t tokens;     /* thousandths of an answer */
    uint64_t ts;         /* last refill, ms */
};

struct shard {
    pthread_mutex_t mu;
    struct entry *pool; /* max entries, all allocated at start */
    uint32_t *buckets;  /* chain heads; nbuckets a power of two */
    uint32_t nbuckets;
    uint32_t n, max; /* used, capacity */
    uint32_t head, tail;
};

struct rrl {
    struct rrl_config cfg;
    uint64_t seed;
    struct shard shards[RRL_SHARDS];
};

struct rrl *rrl_new(const struct rrl_config *cfg)
{
    if (!cfg->rate)
        return NULL;
    struct rrl *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->cfg = *cfg;
    if (getrandom(&r->seed, sizeof(r->seed), 0) != sizeof(r->seed))
        r->seed = (uint64_t)(uintptr_t)r ^ 0x9e3779b97f4a7c15ull;
    size_t per = cfg->max_entries / RRL_SHARDS;
    if (per < 1)
        per = 1;
    if (per > UINT32_MAX / 4)
        per = UINT32_MAX / 4;
    uint32_t nb = 16;
    while (nb < 2 * per)
        nb <<= 1;
    for (int i = 0; i < RRL_SHARDS; i++) {
        struct shard *s = &r->shards[i];
        s->max = (uint32_t)per;
        s->nbuckets = nb;
        s->head = s->tail = NIL;
        /* calloc of a large block maps zero pages: memory is used as networks arrive */
        s->pool = calloc(per, sizeof(*s->pool));
        s->buckets = malloc(nb * sizeof(*s->buckets));
        if (!s->pool || !s->buckets || pthread_mutex_init(&s->mu, NULL) != 0) {
            free(s->pool);
            free(s->buckets);
            s->pool = NULL;
            rrl_free(r);
            return NULL;
        }
        memset(s->buckets, 0xff, nb * sizeof(*s->buckets)); /* NIL */
    }
    return r;
}

void rrl_free(struct rrl *r)
{
    if (!r)
        return;
    for (int i = 0; i < RRL_SHARDS; i++) {
        struct shard *s = &r->shards[i];
        if (!s->pool)
            continue;
        free(s->pool);
        free(s->buckets);
        pthread_mutex_destroy(&s->mu);
    }
    free(r);
}

static void lru_unlink(struct shard *s, uint32_t i)
{
    struct entry *e = &s->pool[i];
    if (e->prev != NIL)
        s->pool[e->prev].next = e->next;
    else
        s->head = e->next;
    if (e->next != NIL)
        s->pool[e->next].prev = e->prev;
    else
        s->tail = e->prev;
}

static void lru_push_front(struct shard *s, uint32_t i)
{
    struct entry *e = &s->pool[i];
    e->prev = NIL;
    e->next = s->head;
    if (s->head != NIL)
        s->pool[s->head].prev = i;
    else
        s->tail = i;
    s->head = i;
}

static uint32_t *chain_of(struct shard *s, uint64_t h)
{
    return &s->buckets[(h / RRL_SHARDS) & (s->nbuckets - 1)];
}

static uint64_t hash_key(const struct rrl *r, const struct net_key *k)
{
    return XXH3_64bits_withSeed(k, sizeof(*k), r->seed);
}

/* Remove entry @p i from its hash chain. */
static void chain_remove(struct rrl *r, struct shard *s, uint32_t i)
{
    uint32_t *pp = chain_of(s, hash_key(r, &s->pool[i].key));
    while (*pp != NIL && *pp != i)
        pp = &s->pool[*pp].hnext;
    if (*pp == i)
        *pp = s->pool[i].hnext;
}

/* The entry of @p k, made (full bucket) or reused from the least recently seen network when
 * the shard is full; it becomes the most recent. */
static struct entry *get(struct rrl *r, struct shard *s, const struct net_key *k, uint64_t h,
                         uint64_t now)
{
    uint32_t *head = chain_of(s, h);
    for (uint32_t i = *head; i != NIL; i = s->pool[i].hnext) {
        if (memcmp(&s->pool[i].key, k, sizeof(*k)) == 0) {
            if (s->head != i) {
                lru_unlink(s, i);
                lru_push_front(s, i);
            }
            return &s->pool[i];
        }
    }
    uint32_t i;
    if (s->n < s->max) {
        i = s->n++;
    } else {
        i = s->tail;
        lru_unlink(s, i);
        chain_remove(r, s, i);
    }
    struct entry *e = &s->pool[i];
    e->key = *k;
    e->tokens = (uint64_t)r->cfg.rate * 1000;
    e->ts = now;
    e->limited = 0;
    e->hnext = *head;
    *head = i;
    lru_push_front(s, i);
    return e;
}

enum rrl_verdict rrl_check(struct rrl *r, const struct client_id *client, uint64_t now_ms)
{
    if (!client_id_known(client))
        return RRL_PASS;
    struct net_key k = {0};
    if (client->len == 4) {
        memcpy(k.b, client->addr, 3); /* /24 */
        k.len = 3;
    } else {
        memcpy(k.b, client->addr, 7); /* /56 */
        k.len = 7;
    }
    uint64_t h = hash_key(r, &k);
    struct shard *s = &r->shards[h % RRL_SHARDS];
    pthread_mutex_lock(&s->mu);
    struct entry *e = get(r, s, &k, h, now_ms);
    /* Refill: rate answers per 1000 ms = rate thousandths per ms; never above one second's
     * worth. A clock that went backwards (another worker's later read) adds nothing. */
    uint64_t full = (uint64_t)r->cfg.rate * 1000;
    if (now_ms > e->ts) {
        uint64_t dt = now_ms - e->ts;
        e->tokens += (dt > REFILL_CAP_MS ? REFILL_CAP_MS : dt) * r->cfg.rate;
        if (e->tokens > full)
            e->tokens = full;
        e->ts = now_ms;
    }
    enum rrl_verdict v;
    if (e->tokens >= 1000) {
        e->tokens -= 1000;
        v = RRL_PASS;
    } else {
        e->limited++;
        v = r->cfg.slip && e->limited % r->cfg.slip == 0 ? RRL_SLIP : RRL_DROP;
    }
    pthread_mutex_unlock(&s->mu);
    return v;
}

size_t rrl_entries(struct rrl *r)
{
    size_t n = 0;
    for (int i = 0; i < RRL_SHARDS; i++) {
        pthread_mutex_lock(&r->shards[i].mu);
        n += r->shards[i].n;
        pthread_mutex_unlock(&r->shards[i].mu);
    }
    return n;
}
