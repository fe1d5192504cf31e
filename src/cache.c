/*
 * cache.c: the sharded, byte-bounded DNS message cache (see cache.h).
 *
 * Layout. The cache is an array of shards, each with its own mutex, hash table (chains through
 * the entries) and intrusive LRU list. A key's 64-bit hash picks the shard (low bits) and the
 * bucket (high bits). The hash is XXH3 keyed with a per-cache random secret: the names are
 * chosen by clients, and with a public hash function an attacker could pile every name into one
 * chain.
 *
 * Memory bound. Accounted bytes are the cache struct, the shard array, every shard's bucket
 * table and every entry's one allocation (struct + TTL offsets + key + answer). max_bytes minus
 * the fixed part is split evenly between the shards; a shard evicts from its LRU tail until a
 * new entry fits in its share, so the sum never exceeds max_bytes whatever the load. A shard's
 * table doubles while it has more entries than buckets, up to an eighth of its share; an entry
 * larger than the rest of the share is refused with -E2BIG before anything is evicted. Malloc's
 * own per-allocation overhead is not counted.
 *
 * Entries. dnswire_answer_lifetime() judges an answer at insert time (kind, lifetime, how many
 * TTLs, where the last record ends); a walk with the dnswire iterator then records the offset of
 * every TTL (OPT excluded, its "TTL" holds EDNS flags). The stored TTLs are rewritten by
 * dnswire_record_ttl() into the same bounds as the lifetime (clamps, and RFC 2308 §3 min(SOA
 * TTL, SOA MINIMUM) for the SOA of a negative answer), so that what a client is told agrees with
 * how long we keep the entry: with min_ttl = 60 an answer with TTL 5 is served with TTL 60 − age
 * rather than 0 for most of its life. A hit then only copies the bytes and patches ID, question
 * name and TTLs: no parsing on the hit path. Trailing bytes after the last counted record are not
 * stored. An answer with a name that a decoder would read partly from bytes a hit rewrites (a
 * compression pointer into a TTL field or the header) is not stored: its meaning would change with
 * its age.
 *
 * Locking. Every operation on a shard holds its mutex; allocation of a new entry happens before
 * taking it, and entries removed while holding it (replaced, evicted, dead) are freed after
 * releasing it. cache_key_make() only reads the immutable secret.
 */
#include "dohgate/cache.h"

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "dohgate/list.h"

#include "dohgate/dns.h"
#include "dohgate/dnswire.h"

#define EDNS_DO 0x8000u

#define PREFETCH_MIN_LIFETIME 10u /* prefetching a TTL shorter than this is pointless churn */

/* Key layout: name (wire, lower-cased) | qtype (2) | qclass (2) | flags (1). */
#define KEY_TAIL   5
#define KEY_MIN    (1 + KEY_TAIL)
#define KEY_F_DO   0x01u
#define KEY_F_CD   0x02u
#define KEY_F_EDNS 0x04u

#define SECRET_SIZE      192 /* XXH3_SECRET_DEFAULT_SIZE; at least XXH3_SECRET_SIZE_MIN */
#define NSHARDS_DEFAULT  64u
#define NSHARDS_MAX      4096u
#define TABLE_INITIAL    16u
#define SHARD_MIN_BUDGET 4096u /* below this a shard cannot hold a useful answer */
#define CACHE_LINE       64

_Static_assert(SECRET_SIZE >= XXH3_SECRET_SIZE_MIN, "XXH3 secret too short");
_Static_assert(CACHE_KEY_MAX >= 255 + KEY_TAIL, "cache key too short for the longest name");

enum entry_kind { KIND_POSITIVE = 0, KIND_NEGATIVE, KIND_SERVFAIL };

struct entry {
    struct entry *hnext; /* hash chain; also the free list after removal */
    struct dg_lnode lru; /* the shard's LRU order, most recently used first */
    uint64_t hash;
    uint64_t stored_ms;
    uint64_t expire_ms; /* fresh before this */
    uint64_t dead_ms;   /* usable as stale data before this, deleted from then on */
    size_t size;        /* accounted bytes of this allocation */
    uint32_t lifetime_s;
    uint32_t anslen;
    uint16_t keylen;
    uint16_t nttl;   /* TTL offsets stored */
    uint16_t ncount; /* the first ncount of them (answer + authority) bound Cache-Control */
    uint8_t kind;
    bool prefetch_sent;
    uint16_t ttl_off[]; /* nttl offsets, then keylen key bytes, then anslen answer bytes */
};

struct shard {
    _Alignas(CACHE_LINE) pthread_mutex_t lock; /* a shard per cache line: no false sharing */
    struct entry **table;
    size_t nbuckets;
    struct dg_list lru;
    size_t bytes; /* table + entries */
    uint64_t hits, stale_hits, misses, inserts, evictions, entries;
};

struct cache {
    struct cache_config cfg;
    struct dnswire_ttl_policy ttl; /* from cfg */
    struct shard *shards;
    unsigned nshards;
    size_t budget;      /* per shard */
    size_t max_buckets; /* per shard */
    size_t fixed_bytes; /* this struct + the shard array */
    uint8_t secret[SECRET_SIZE];
};

/* ---- wire walking ------------------------------------------------------------------------- */

static uint8_t ascii_lower(uint8_t c)
{
    return (c >= 'A' && c <= 'Z') ? (uint8_t)(c + ('a' - 'A')) : c;
}

/* Monotonic clocks do not wrap, but a caller's now_ms is only an input: never overflow. */
static uint64_t add_sat(uint64_t a, uint64_t b)
{
    return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

/*
 * Names that would change under a hit's rewriting. A hit rewrites the header's ID and every TTL
 * field. A compression pointer aimed into those bytes (no encoder does that, but a message can)
 * would make a name read different bytes from hit to hit: the client would get another name or
 * a message that no longer parses. Such answers are not cached. Checking needs every name a
 * decoder follows: owners, and the names inside rdata, found with ldns's rdata descriptors and
 * the field sizes ldns_wire2rdf() uses (as dns.c does to cap pointer hops).
 */
struct rewritten {
    const uint16_t *ttl_off; /* ascending */
    size_t n;
    /* The question's name, which the answer's names mostly point into: the offsets where its
     * labels start (bit i: offset DNS_HEADER_LEN + i) and where it ends (after its root
     * label). It is well formed (its key was made from it) and lies before every TTL, so a
     * name that reaches one of its labels is stable from there on: no need to walk it again
     * for each owner and rdata name (callgrind: most of name_stable's cost per miss). */
    uint64_t qlabels[4];
    size_t qname_end;
};

/* Fill @p rw's question-name part from @p msg's question (@p name_len bytes, well formed). */
static void rewritten_question(struct rewritten *rw, const uint8_t *msg, size_t name_len)
{
    memset(rw->qlabels, 0, sizeof(rw->qlabels));
    rw->qname_end = DNS_HEADER_LEN + name_len;
    for (size_t i = 0; i < name_len && i < 256; i += (size_t)msg[DNS_HEADER_LEN + i] + 1)
        rw->qlabels[i / 64] |= (uint64_t)1 << (i % 64);
}

/* Does [a, b) overlap the header or a TTL field? */
static bool is_rewritten(const struct rewritten *rw, size_t a, size_t b)
{
    if (a < DNS_HEADER_LEN)
        return true;
    /* the question and every name before the first TTL: most labels of an answer */
    if (rw->n == 0 || b <= rw->ttl_off[0])
        return false;
    size_t lo = 0, hi = rw->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if ((size_t)rw->ttl_off[mid] + 4 <= a)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < rw->n && rw->ttl_off[lo] < b;
}

/* Follow the name at @p off through its pointers (bounded). @return true if it is well formed
 * and made of bytes no hit rewrites. */
static bool name_stable(const uint8_t *msg, size_t len, size_t off, const struct rewritten *rw)
{
    size_t wire_len = 0;
    unsigned hops = 0;
    for (;;) {
        if (off >= len)
            return false;
        if (off >= DNS_HEADER_LEN && off < rw->qname_end) {
            size_t i = off - DNS_HEADER_LEN;
            if (rw->qlabels[i / 64] & ((uint64_t)1 << (i % 64)))
                return wire_len + (rw->qname_end - off) <= 255;
        }
        uint8_t lab = msg[off];
        if ((lab & 0xc0u) == 0xc0u) {
            if (len - off < 2 || is_rewritten(rw, off, off + 2) || ++hops > DNSWIRE_MAX_PTR_HOPS)
                return false;
            off = ((size_t)(lab & 0x3fu) << 8) | msg[off + 1];
            continue;
        }
        if (lab & 0xc0u)
            return false;
        wire_len += (size_t)lab + 1;
        if (wire_len > 255 || (size_t)lab + 1 > len - off ||
            is_rewritten(rw, off, off + (size_t)lab + 1))
            return false;
        if (lab == 0)
            return true;
        off += (size_t)lab + 1;
    }
}

static bool name_stable_cb(const uint8_t *msg, size_t len, size_t off, void *arg)
{
    return name_stable(msg, len, off, arg);
}

/* The names in one record's rdata (dns_rdata_each_name() finds them as ldns lays them out). */
static bool rdata_names_stable(const uint8_t *msg, size_t len, const struct dnswire_rr *rr,
                               const struct rewritten *rw)
{
    return dnswire_rdata_each_name(msg, len, rr, name_stable_cb, (void *)rw);
}

/* ---- keys --------------------------------------------------------------------------------- */

static uint64_t key_hash(const struct cache *c, const uint8_t *data, size_t len)
{
    return XXH3_64bits_withSecret(data, len, c->secret, sizeof(c->secret));
}

static bool key_valid(const struct cache_key *k)
{
    return k && k->len >= KEY_MIN && k->len <= CACHE_KEY_MAX;
}

int cache_key_make(const struct cache *c, const uint8_t *query, size_t len, struct cache_key *k)
{
    size_t qend = dns_question_end(query, len);
    if (qend == 0)
        return -EINVAL;
    size_t name_len = qend - 4 - DNS_HEADER_LEN;
    if (name_len + KEY_TAIL > CACHE_KEY_MAX)
        return -EINVAL;

    uint8_t flags = (query[3] & DNS_F3_CD) ? KEY_F_CD : 0;
    struct dnswire_iter it;
    struct dnswire_rr rr;
    int r;
    dnswire_iter_init_answer(&it, query, len, 0, qend);
    while ((r = dnswire_iter_next(&it, &rr)) == 1) {
        if (rr.sec == DNSWIRE_AR && rr.type == DNSWIRE_TYPE_OPT) {
            flags |= KEY_F_EDNS;
            if (dg_get32(query + rr.ttl_off) & EDNS_DO)
                flags |= KEY_F_DO;
            break; /* dns_query_check() refused queries with several OPT */
        }
    }
    if (r < 0)
        return -EINVAL;

    for (size_t i = 0; i < name_len; i++)
        k->data[i] = ascii_lower(query[DNS_HEADER_LEN + i]);
    memcpy(k->data + name_len, query + qend - 4, 4);
    k->data[name_len + 4] = flags;
    k->len = name_len + KEY_TAIL;
    k->hash = key_hash(c, k->data, k->len);
    return 0;
}

/* Does the question at offset 12 of @p msg spell the key's name (any case), type and class? */
static bool question_is_key(const uint8_t *msg, size_t len, const struct cache_key *k)
{
    size_t name_len = k->len - KEY_TAIL;
    if (dns_question_end(msg, len) != DNS_HEADER_LEN + name_len + 4)
        return false;
    for (size_t i = 0; i < name_len; i++) {
        if (ascii_lower(msg[DNS_HEADER_LEN + i]) != k->data[i])
            return false;
    }
    return memcmp(msg + DNS_HEADER_LEN + name_len, k->data + name_len, 4) == 0;
}

/* ---- answer analysis ---------------------------------------------------------------------- */

static enum entry_kind kind_of(enum dnswire_answer_kind k)
{
    return k == DNSWIRE_POSITIVE   ? KIND_POSITIVE
           : k == DNSWIRE_NEGATIVE ? KIND_NEGATIVE
                                   : KIND_SERVFAIL;
}

static enum dnswire_answer_kind dnswire_kind_of(enum entry_kind k)
{
    return k == KIND_POSITIVE   ? DNSWIRE_POSITIVE
           : k == KIND_NEGATIVE ? DNSWIRE_NEGATIVE
                                : DNSWIRE_SERVFAIL;
}

uint32_t cache_answer_lifetime(const struct cache *c, const uint8_t *ans, size_t len)
{
    return c ? dnswire_answer_lifetime(ans, len, 0, &c->ttl, NULL) : 0;
}

/* ---- shards ------------------------------------------------------------------------------- */

static size_t bucket_of(const struct shard *s, uint64_t hash)
{
    return (size_t)(hash >> 32) & (s->nbuckets - 1);
}

static const uint8_t *entry_key(const struct entry *e)
{
    return (const uint8_t *)(e->ttl_off + e->nttl);
}

static uint8_t *entry_answer(struct entry *e)
{
    return (uint8_t *)(e->ttl_off + e->nttl) + e->keylen;
}

static struct entry **chain_find(struct shard *s, const struct cache_key *k)
{
    struct entry **pp = &s->table[bucket_of(s, k->hash)];
    for (; *pp; pp = &(*pp)->hnext) {
        const struct entry *e = *pp;
        if (e->hash == k->hash && e->keylen == k->len && memcmp(entry_key(e), k->data, k->len) == 0)
            return pp;
    }
    return pp;
}

static void lru_unlink(struct shard *s, struct entry *e)
{
    dg_list_unlink(&s->lru, &e->lru);
}

static void lru_push_front(struct shard *s, struct entry *e)
{
    dg_list_push_front(&s->lru, &e->lru);
}

/* Unlink the entry *pp points at from the table and the LRU and push it on *freelist. */
static void shard_remove(struct shard *s, struct entry **pp, struct entry **freelist)
{
    struct entry *e = *pp;
    *pp = e->hnext;
    lru_unlink(s, e);
    s->bytes -= e->size;
    s->entries--;
    e->hnext = *freelist;
    *freelist = e;
}

/* Unlink @p e, wherever it sits in its chain. */
static void shard_remove_entry(struct shard *s, struct entry *e, struct entry **freelist)
{
    struct entry **pp = &s->table[bucket_of(s, e->hash)];
    while (*pp != e)
        pp = &(*pp)->hnext;
    shard_remove(s, pp, freelist);
}

static void free_list(struct entry *e)
{
    while (e) {
        struct entry *next = e->hnext;
        free(e);
        e = next;
    }
}

/*
 * Double the table while the shard has more entries than buckets, within the cap. A failed
 * allocation is harmless: chains just get longer.
 */
static void shard_maybe_grow(const struct cache *c, struct shard *s)
{
    if (s->entries < s->nbuckets || s->nbuckets >= c->max_buckets)
        return;
    size_t n = s->nbuckets * 2;
    struct entry **t = calloc(n, sizeof(*t));
    if (!t)
        return;
    for (size_t i = 0; i < s->nbuckets; i++) {
        struct entry *e = s->table[i];
        while (e) {
            struct entry *next = e->hnext;
            size_t b = (size_t)(e->hash >> 32) & (n - 1);
            e->hnext = t[b];
            t[b] = e;
            e = next;
        }
    }
    free(s->table);
    s->bytes += (n - s->nbuckets) * sizeof(*t);
    s->table = t;
    s->nbuckets = n;
}

/* ---- lifecycle ---------------------------------------------------------------------------- */

void cache_config_defaults(struct cache_config *cc)
{
    memset(cc, 0, sizeof(*cc));
    cc->max_bytes = (size_t)64 << 20;
    cc->nshards = NSHARDS_DEFAULT;
    cc->min_ttl = 0;
    cc->max_ttl = 86400;
    cc->max_negative_ttl = 3600;
    cc->nosoa_negative_ttl = 30;
    cc->servfail_ttl = 5;
    cc->serve_stale = true;
    cc->stale_max_s = 86400;
    cc->stale_answer_ttl = 30;
    cc->prefetch_percent = 10;
}

static void cache_ttl_policy(struct cache *c)
{
    c->ttl.min_ttl = c->cfg.min_ttl;
    c->ttl.max_ttl = c->cfg.max_ttl;
    c->ttl.max_negative_ttl = c->cfg.max_negative_ttl;
    c->ttl.nosoa_negative_ttl = c->cfg.nosoa_negative_ttl;
    c->ttl.servfail_ttl = c->cfg.servfail_ttl;
}

struct cache *cache_new(const struct cache_config *cc)
{
    if (!cc)
        return NULL;
    unsigned nshards = cc->nshards ? cc->nshards : NSHARDS_DEFAULT;
    if (nshards > NSHARDS_MAX || (nshards & (nshards - 1)) != 0)
        return NULL;
    if (cc->max_bytes == 0) {
        /* Caching off: a cache that stores nothing but still makes keyed hashes, which the
         * resolver's in-flight table needs (keyed, so attackers cannot choose colliding
         * names). Lookups miss, inserts refuse. */
        struct cache *c = calloc(1, sizeof(*c));
        if (!c)
            return NULL;
        c->cfg = *cc;
        cache_ttl_policy(c);
        arc4random_buf(c->secret, sizeof(c->secret));
        return c;
    }
    size_t fixed = sizeof(struct cache) + (size_t)nshards * sizeof(struct shard);
    if (cc->max_bytes < fixed || (cc->max_bytes - fixed) / nshards < SHARD_MIN_BUDGET)
        return NULL;

    struct cache *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->cfg = *cc;
    c->cfg.nshards = nshards;
    cache_ttl_policy(c);
    if (c->cfg.prefetch_percent > 100)
        c->cfg.prefetch_percent = 100;
    c->nshards = nshards;
    c->fixed_bytes = fixed;
    c->budget = (cc->max_bytes - fixed) / nshards;
    /* The table may take up to an eighth of a shard's share: at one entry per bucket that is
     * 8 bytes against the ~100 or more of the smallest entry. */
    c->max_buckets = TABLE_INITIAL;
    while (c->max_buckets * 2 * sizeof(struct entry *) <= c->budget / 8)
        c->max_buckets *= 2;
    arc4random_buf(c->secret, sizeof(c->secret));

    c->shards = aligned_alloc(CACHE_LINE, (size_t)nshards * sizeof(struct shard));
    if (!c->shards)
        goto fail_cache;
    unsigned i;
    for (i = 0; i < nshards; i++) {
        struct shard *s = &c->shards[i];
        memset(s, 0, sizeof(*s));
        s->nbuckets = TABLE_INITIAL;
        s->table = calloc(s->nbuckets, sizeof(*s->table));
        if (!s->table)
            goto fail_shards;
        if (pthread_mutex_init(&s->lock, NULL) != 0) {
            free(s->table);
            goto fail_shards;
        }
        s->bytes = s->nbuckets * sizeof(*s->table);
    }
    return c;

fail_shards:
    while (i-- > 0) {
        pthread_mutex_destroy(&c->shards[i].lock);
        free(c->shards[i].table);
    }
    free(c->shards);
fail_cache:
    free(c);
    return NULL;
}

void cache_free(struct cache *c)
{
    if (!c)
        return;
    for (unsigned i = 0; i < c->nshards; i++) {
        struct shard *s = &c->shards[i];
        for (struct dg_lnode *n = s->lru.head, *next; n; n = next) {
            next = n->next;
            free(dg_list_entry(n, struct entry, lru));
        }
        free(s->table);
        pthread_mutex_destroy(&s->lock);
    }
    free(c->shards);
    free(c);
}

static struct shard *shard_of(struct cache *c, uint64_t hash)
{
    return &c->shards[hash & (c->nshards - 1)];
}

/* ---- insert ------------------------------------------------------------------------------- */

/*
 * Fill a new entry's TTL offsets and rewrite its stored TTLs (the walk repeats the plan's).
 * @return false when a name of the answer would change under rewriting (see name_stable()).
 */
static bool entry_fill_ttls(const struct cache *c, struct entry *e)
{
    uint8_t *msg = entry_answer(e);
    size_t start = DNS_HEADER_LEN + (e->keylen - KEY_TAIL) + 4;
    enum dnswire_answer_kind kind = dnswire_kind_of((enum entry_kind)e->kind);
    struct dnswire_iter it;
    struct dnswire_rr rr;
    size_t n = 0;
    dnswire_iter_init_answer(&it, msg, e->anslen, 0, start);
    while (dnswire_iter_next(&it, &rr) == 1) {
        if (rr.type == DNSWIRE_TYPE_OPT)
            continue;
        assert(n < e->nttl);
        dg_put32(msg + rr.ttl_off, dnswire_record_ttl(msg, &rr, kind, &c->ttl));
        e->ttl_off[n++] = (uint16_t)rr.ttl_off;
    }
    assert(n == e->nttl);

    struct rewritten rw = {.ttl_off = e->ttl_off, .n = e->nttl};
    rewritten_question(&rw, msg, (size_t)e->keylen - KEY_TAIL);
    dnswire_iter_init_answer(&it, msg, e->anslen, 0, start);
    while (dnswire_iter_next(&it, &rr) == 1) {
        if (!name_stable(msg, e->anslen, rr.name_off, &rw) ||
            !rdata_names_stable(msg, e->anslen, &rr, &rw))
            return false;
    }
    return true;
}

int cache_insert(struct cache *c, const struct cache_key *k, const uint8_t *ans, size_t len,
                 uint64_t now_ms)
{
    if (!c || c->nshards == 0 || !key_valid(k))
        return 1;
    if (!ans || !question_is_key(ans, len, k))
        return 1;
    struct dnswire_answer_info plan;
    uint32_t lifetime = dnswire_answer_lifetime(ans, len, 0, &c->ttl, &plan);
    if (lifetime == 0)
        return 1;
    enum entry_kind kind = kind_of(plan.kind);

    size_t size = sizeof(struct entry) + plan.nttl * sizeof(uint16_t) + k->len + plan.end;
    /* What is left of a shard's share once its table has grown to the cap. */
    size_t room = c->budget - c->max_buckets * sizeof(struct entry *);
    if (size > room)
        return -E2BIG;

    struct entry *e = malloc(size);
    if (!e)
        return -ENOMEM;
    memset(e, 0, sizeof(*e));
    e->hash = k->hash;
    e->size = size;
    e->kind = (uint8_t)kind;
    e->lifetime_s = lifetime;
    e->stored_ms = now_ms;
    e->expire_ms = add_sat(now_ms, (uint64_t)lifetime * 1000);
    /* A SERVFAIL is never "stale data": it dies when it expires. */
    e->dead_ms = add_sat(e->expire_ms, c->cfg.serve_stale && kind != KIND_SERVFAIL
                                           ? (uint64_t)c->cfg.stale_max_s * 1000
                                           : 0);
    e->anslen = (uint32_t)plan.end;
    e->keylen = (uint16_t)k->len;
    e->nttl = (uint16_t)plan.nttl;
    e->ncount = (uint16_t)plan.ncount;
    memcpy((uint8_t *)(e->ttl_off + e->nttl), k->data, k->len);
    memcpy(entry_answer(e), ans, plan.end);
    if (!entry_fill_ttls(c, e)) {
        free(e);
        return 1;
    }

    struct shard *s = shard_of(c, k->hash);
    struct entry *freelist = NULL;
    int rc = 0;
    pthread_mutex_lock(&s->lock);
    struct entry **pp = chain_find(s, k);
    if (*pp) {
        struct entry *old = *pp;
        /* A SERVFAIL does not push out real data that can still be served (fresh, or stale
         * within stale_max_s): serving that is what serve-stale is for (RFC 8767). */
        if (kind == KIND_SERVFAIL && old->kind != KIND_SERVFAIL && now_ms < old->dead_ms) {
            rc = 1;
            freelist = e;
            e->hnext = NULL;
            goto out;
        }
        shard_remove(s, pp, &freelist);
    }
    shard_maybe_grow(c, s);
    while (s->bytes + size > c->budget && s->lru.tail) {
        shard_remove_entry(s, dg_list_entry(s->lru.tail, struct entry, lru), &freelist);
        s->evictions++;
    }
    /* The -E2BIG check above guarantees an empty shard has room. */
    assert(s->bytes + size <= c->budget);
    pp = &s->table[bucket_of(s, k->hash)];
    e->hnext = *pp;
    *pp = e;
    lru_push_front(s, e);
    s->bytes += size;
    s->entries++;
    s->inserts++;
out:
    pthread_mutex_unlock(&s->lock);
    free_list(freelist);
    return rc;
}

/* ---- lookup ------------------------------------------------------------------------------- */

/* Copy @p e into @p out as the answer to @p query. @return false on OOM (out untouched). */
static bool entry_serve(const struct cache *c, const struct entry *e, const uint8_t *query,
                        uint64_t now_ms, bool stale, struct dg_buf *out, uint32_t *ttl_out)
{
    if (dg_buf_reserve(out, e->anslen) != 0)
        return false;
    uint8_t *p = out->data + out->len;
    memcpy(p, (const uint8_t *)(e->ttl_off + e->nttl) + e->keylen, e->anslen);
    memcpy(p, query, 2);
    p[2] = (uint8_t)((p[2] & ~0x01u) | (query[2] & 0x01u)); /* the client's RD bit */
    /* The client's spelling of the name (0x20 randomisation); same length as the key's. */
    memcpy(p + DNS_HEADER_LEN, query + DNS_HEADER_LEN, (size_t)e->keylen - KEY_TAIL);

    uint64_t age_ms = now_ms > e->stored_ms ? now_ms - e->stored_ms : 0;
    uint32_t age = age_ms / 1000 > UINT32_MAX ? UINT32_MAX : (uint32_t)(age_ms / 1000);
    uint32_t min_count = UINT32_MAX;
    for (size_t i = 0; i < e->nttl; i++) {
        uint8_t *t = p + e->ttl_off[i];
        uint32_t v;
        if (stale) {
            v = c->cfg.stale_answer_ttl;
        } else {
            v = dg_get32(t);
            v = v > age ? v - age : 0;
        }
        dg_put32(t, v);
        if (i < e->ncount && v < min_count)
            min_count = v;
    }
    out->len += e->anslen;

    if (stale)
        *ttl_out = c->cfg.stale_answer_ttl;
    else if (e->kind == KIND_POSITIVE && min_count != UINT32_MAX)
        *ttl_out = min_count;
    else
        *ttl_out = e->lifetime_s > age ? e->lifetime_s - age : 0;
    return true;
}

enum cache_result cache_lookup(struct cache *c, const struct cache_key *k, const uint8_t *query,
                               size_t qlen, uint64_t now_ms, unsigned flags, struct dg_buf *out,
                               struct cache_hit_info *info)
{
    bool allow_stale = flags & CACHE_ALLOW_STALE;
    uint64_t counted = !(flags & CACHE_UNCOUNTED);
    struct cache_hit_info dummy;
    if (!info)
        info = &dummy;
    info->ttl = 0;
    info->prefetch = false;
    if (!c || c->nshards == 0 || !key_valid(k) || !out)
        return CACHE_MISS;
    /* The key must be this query's: the stored question name is overwritten with its bytes
     * (the caller may vouch for that: CACHE_KEY_OF_QUERY). */
    if (!(flags & CACHE_KEY_OF_QUERY) && !question_is_key(query, qlen, k))
        return CACHE_MISS;

    struct shard *s = shard_of(c, k->hash);
    struct entry *freelist = NULL;
    enum cache_result res = CACHE_MISS;
    pthread_mutex_lock(&s->lock);
    struct entry **pp = chain_find(s, k);
    struct entry *e = *pp;
    if (!e)
        goto miss;
    if (now_ms >= e->dead_ms) {
        shard_remove(s, pp, &freelist);
        goto miss;
    }
    bool stale = now_ms >= e->expire_ms;
    if (stale && !(allow_stale && c->cfg.serve_stale))
        goto miss;
    if (!entry_serve(c, e, query, now_ms, stale, out, &info->ttl))
        goto miss;

    if (stale) {
        s->stale_hits += counted;
        res = CACHE_STALE;
    } else {
        s->hits += counted;
        res = CACHE_HIT;
        unsigned pct = c->cfg.prefetch_percent;
        uint64_t age_ms = now_ms > e->stored_ms ? now_ms - e->stored_ms : 0;
        /* An entry served in the millisecond it was stored (the answer to the clients that
         * waited for it) never needs a refresh, whatever the percentage. */
        if (pct > 0 && !e->prefetch_sent && e->lifetime_s >= PREFETCH_MIN_LIFETIME && age_ms > 0 &&
            age_ms * 100 >= (uint64_t)e->lifetime_s * 1000 * (100 - pct)) {
            e->prefetch_sent = true;
            info->prefetch = true;
        }
    }
    if (s->lru.head != &e->lru) {
        lru_unlink(s, e);
        lru_push_front(s, e);
    }
    goto out;
miss:
    s->misses += counted;
out:
    pthread_mutex_unlock(&s->lock);
    free_list(freelist);
    return res;
}

/* ---- stats -------------------------------------------------------------------------------- */

void cache_get_stats(struct cache *c, struct cache_stats *out)
{
    memset(out, 0, sizeof(*out));
    if (!c)
        return;
    out->bytes = c->fixed_bytes;
    for (unsigned i = 0; i < c->nshards; i++) {
        struct shard *s = &c->shards[i];
        pthread_mutex_lock(&s->lock);
        out->hits += s->hits;
        out->stale_hits += s->stale_hits;
        out->misses += s->misses;
        out->inserts += s->inserts;
        out->evictions += s->evictions;
        out->entries += s->entries;
        out->bytes += s->bytes;
        pthread_mutex_unlock(&s->lock);
    }
}

void cache_set_policy(struct cache *c, const struct cache_config *cc)
{
    /* Each knob is one aligned word that readers load without a lock (a query racing the
     * reload sees the old or the new value of each); the shard locks order the stores against
     * inserts in progress. The size and the shard count stay: they shape the table. */
    for (unsigned i = 0; i < c->nshards; i++)
        pthread_mutex_lock(&c->shards[i].lock);
    c->cfg.min_ttl = cc->min_ttl;
    c->cfg.max_ttl = cc->max_ttl;
    c->cfg.max_negative_ttl = cc->max_negative_ttl;
    c->cfg.nosoa_negative_ttl = cc->nosoa_negative_ttl;
    c->cfg.servfail_ttl = cc->servfail_ttl;
    c->cfg.serve_stale = cc->serve_stale;
    c->cfg.stale_max_s = cc->stale_max_s;
    c->cfg.stale_answer_ttl = cc->stale_answer_ttl;
    c->cfg.prefetch_percent = cc->prefetch_percent > 100 ? 100 : cc->prefetch_percent;
    cache_ttl_policy(c); /* the lifetime rule reads this copy of the knobs */
    for (unsigned i = c->nshards; i > 0; i--)
        pthread_mutex_unlock(&c->shards[i - 1].lock);
}
