/* Per-client connection counts and token buckets, sharded and bounded: see clients.h. */
#include "dohgate/clients.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <xxhash.h>

#include "dohgate/list.h"

#define SHARDS 64

struct entry {
    struct client_key key;
    struct entry *hnext; /* hash chain */
    struct dg_lnode lru; /* the shard's LRU order, most recent first */
    uint32_t conns;
    size_t held[CLIENTS_NHOLD]; /* budget.h units held by this client's requests */
    /* token buckets in thousandths of a token, refilled lazily */
    int64_t conn_tokens, query_tokens;
    uint64_t conn_ts, query_ts;
};

struct shard {
    pthread_mutex_t mu;
    struct entry **buckets;
    size_t nbuckets; /* a power of two */
    struct dg_list lru;
    size_t n, max;
};

struct clients {
    struct clients_config cfg;
    uint64_t seed;
    struct shard shards[SHARDS];
};

struct clients *clients_new(const struct clients_config *cfg)
{
    struct clients *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->cfg = *cfg;
    if (getrandom(&c->seed, sizeof(c->seed), 0) != sizeof(c->seed))
        c->seed = (uint64_t)(uintptr_t)c ^ 0x9e3779b97f4a7c15ull;
    size_t per = cfg->max_entries / SHARDS + 1;
    size_t nb = 16;
    while (nb < per)
        nb <<= 1;
    for (int i = 0; i < SHARDS; i++) {
        struct shard *s = &c->shards[i];
        s->max = per;
        s->nbuckets = nb;
        s->buckets = calloc(nb, sizeof(*s->buckets));
        if (!s->buckets || pthread_mutex_init(&s->mu, NULL) != 0) {
            free(s->buckets);
            s->buckets = NULL;
            clients_free(c);
            return NULL;
        }
    }
    return c;
}

void clients_free(struct clients *c)
{
    if (!c)
        return;
    for (int i = 0; i < SHARDS; i++) {
        struct shard *s = &c->shards[i];
        if (!s->buckets)
            continue;
        for (struct dg_lnode *n = s->lru.head, *next; n; n = next) {
            next = n->next;
            free(dg_list_entry(n, struct entry, lru));
        }
        free(s->buckets);
        pthread_mutex_destroy(&s->mu);
    }
    free(c);
}

static bool key_eq(const struct client_key *a, const struct client_key *b)
{
    return a->len == b->len && memcmp(a->b, b->b, a->len) == 0;
}

/* The shard of @p k, locked; *@p h receives the key's hash. */
static struct shard *lock_shard(struct clients *c, const struct client_key *k, uint64_t *h)
{
    *h = XXH3_64bits_withSeed(k->b, k->len, c->seed);
    struct shard *s = &c->shards[*h % SHARDS];
    pthread_mutex_lock(&s->mu);
    return s;
}

static struct entry **chain_of(struct shard *s, uint64_t h)
{
    return &s->buckets[(h / SHARDS) & (s->nbuckets - 1)];
}

/* Find @p k, or make its entry (full buckets), evicting the least recently seen client without
 * connections when the shard is full. NULL: not tracked. The entry becomes the most recent. */
static struct entry *get(struct clients *c, struct shard *s, const struct client_key *k, uint64_t h,
                         uint64_t now)
{
    struct entry **pp = chain_of(s, h);
    for (struct entry *e = *pp; e; e = e->hnext) {
        if (key_eq(&e->key, k)) {
            dg_list_unlink(&s->lru, &e->lru);
            dg_list_push_front(&s->lru, &e->lru);
            return e;
        }
    }
    struct entry *e = NULL;
    if (s->n >= s->max) {
        for (struct dg_lnode *n = s->lru.tail; n; n = n->prev) {
            e = dg_list_entry(n, struct entry, lru);
            if (e->conns == 0 && !e->held[0] && !e->held[1])
                break;
            e = NULL;
        }
        if (!e)
            return NULL;
        uint64_t eh = XXH3_64bits_withSeed(e->key.b, e->key.len, c->seed);
        for (struct entry **q = chain_of(s, eh); *q; q = &(*q)->hnext) {
            if (*q == e) {
                *q = e->hnext;
                break;
            }
        }
        dg_list_unlink(&s->lru, &e->lru);
    } else {
        e = malloc(sizeof(*e));
        if (!e)
            return NULL;
        s->n++;
    }
    memset(e, 0, sizeof(*e));
    e->key = *k;
    e->conn_tokens = (int64_t)c->cfg.conn_burst * 1000;
    e->query_tokens = (int64_t)c->cfg.query_burst * 1000;
    e->conn_ts = e->query_ts = now;
    e->hnext = *pp;
    *pp = e;
    dg_list_push_front(&s->lru, &e->lru);
    return e;
}

/* Take one token from a bucket of @p rate per second and @p burst; @return 0, or the
 * milliseconds until one is there. */
static uint64_t take(int64_t *tokens, uint64_t *ts, unsigned rate, unsigned burst, uint64_t now)
{
    if (now > *ts) {
        int64_t cap = (int64_t)burst * 1000;
        int64_t add = (int64_t)(now - *ts) * (int64_t)rate; /* thousandths per ms = per second */
        *tokens = *tokens + add > cap ? cap : *tokens + add;
        *ts = now;
    }
    if (*tokens >= 1000) {
        *tokens -= 1000;
        return 0;
    }
    return (uint64_t)((1000 - *tokens + rate - 1) / rate);
}

enum client_verdict clients_conn_open(struct clients *c, const struct client_key *k,
                                      uint64_t now_ms)
{
    if (!c->cfg.max_conns && !c->cfg.conn_rate)
        return CLIENT_UNTRACKED;
    uint64_t h;
    struct shard *s = lock_shard(c, k, &h);
    enum client_verdict v = CLIENT_OK;
    struct entry *e = get(c, s, k, h, now_ms);
    if (!e)
        v = CLIENT_UNTRACKED;
    else if (c->cfg.max_conns && e->conns >= c->cfg.max_conns)
        v = CLIENT_TOO_MANY_CONNS;
    else if (c->cfg.conn_rate &&
             take(&e->conn_tokens, &e->conn_ts, c->cfg.conn_rate, c->cfg.conn_burst, now_ms))
        v = CLIENT_CONN_RATE;
    else
        e->conns++;
    pthread_mutex_unlock(&s->mu);
    return v;
}

void clients_conn_close(struct clients *c, const struct client_key *k)
{
    uint64_t h;
    struct shard *s = lock_shard(c, k, &h);
    for (struct entry *e = *chain_of(s, h); e; e = e->hnext) {
        if (key_eq(&e->key, k)) {
            if (e->conns > 0) /* an entry with connections is never evicted: always true */
                e->conns--;
            break;
        }
    }
    pthread_mutex_unlock(&s->mu);
}

unsigned clients_query(struct clients *c, const struct client_key *k, uint64_t now_ms)
{
    if (!c->cfg.query_rate)
        return 0;
    uint64_t h;
    struct shard *s = lock_shard(c, k, &h);
    struct entry *e = get(c, s, k, h, now_ms);
    uint64_t wait =
        e ? take(&e->query_tokens, &e->query_ts, c->cfg.query_rate, c->cfg.query_burst, now_ms) : 0;
    pthread_mutex_unlock(&s->mu);
    return wait ? (unsigned)((wait + 999) / 1000) : 0;
}

bool clients_hold(struct clients *c, const struct client_key *k, unsigned kind, size_t n,
                  size_t limit)
{
    if (kind >= CLIENTS_NHOLD)
        return true;
    uint64_t h;
    struct shard *s = lock_shard(c, k, &h);
    struct entry *e = get(c, s, k, h, 0);
    bool ok = true;
    if (e) {
        if (limit && e->held[kind] + n > limit)
            ok = false;
        else
            e->held[kind] += n;
    }
    pthread_mutex_unlock(&s->mu);
    return ok;
}

void clients_unhold(struct clients *c, const struct client_key *k, unsigned kind, size_t n)
{
    if (kind >= CLIENTS_NHOLD)
        return;
    uint64_t h;
    struct shard *s = lock_shard(c, k, &h);
    for (struct entry *e = *chain_of(s, h); e; e = e->hnext) {
        if (key_eq(&e->key, k)) {
            /* An entry that could not be made at hold time never got the units: clamp. */
            e->held[kind] = e->held[kind] > n ? e->held[kind] - n : 0;
            break;
        }
    }
    pthread_mutex_unlock(&s->mu);
}

bool clients_limit_queries(const struct clients *c)
{
    return c && c->cfg.query_rate != 0;
}

size_t clients_count(struct clients *c)
{
    size_t n = 0;
    for (int i = 0; i < SHARDS; i++) {
        pthread_mutex_lock(&c->shards[i].mu);
        n += c->shards[i].n;
        pthread_mutex_unlock(&c->shards[i].mu);
    }
    return n;
}
