/*
 * libFuzzer target: bytes as an upstream answer, through the cache. A query is rebuilt from the
 * answer's own question (with EDNS / DO / CD chosen by bits of the answer's ID, which the cache
 * ignores), the answer is stored under it and under its flag variants in a small cache (so
 * eviction runs), then looked up at several times with and without stale data. Invariants:
 * the byte bound, a just-stored entry is a hit, every hit has the stored length, the client's
 * ID and question bytes, TTLs within the configured bounds, and what ldns accepted as an answer
 * before caching it still accepts after TTL rewriting, the first hit's max-age equal to
 * cache_answer_lifetime() (the max-age with caching off); a SERVFAIL does not replace it. Copies
 * with other qtypes fill the cache further (table growth, eviction). The input is also tried as
 * a query key.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dohgate/cache.h"
#include "dohgate/dns.h"
#include "dohgate/dnswire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define T0        1000000000ull
#define MAX_BYTES (12 * 1024) /* two shards of ~6 KiB: eviction and -E2BIG are reachable */
#define NRETYPED  40
#define QMAX      (DNS_HEADER_LEN + 255 + 4 + 11)

/* www.example.com A IN, no EDNS */
static const uint8_t fixed_query[] = {
    0x00, 0x01, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x03, 'w',  'w',  'w',  0x07, 'e',  'x',  'a',  'm',  'p',
    'l',  'e',  0x03, 'c',  'o',  'm',  0x00, 0x00, 0x01, 0x00, 0x01,
};

static void check_bound(struct cache *c)
{
    struct cache_stats st;
    cache_get_stats(c, &st);
    if (st.bytes > MAX_BYTES)
        abort();
}

/* The question of @p data as a query; variant bits: 1 EDNS, 2 DO, 4 CD. */
static size_t make_query(const uint8_t *data, size_t qend, unsigned variant, uint8_t *q)
{
    memcpy(q, data, qend);
    q[0] = 0xab;
    q[1] = (uint8_t)variant;
    q[2] = 0x01; /* RD */
    q[3] = (variant & 4) ? 0x10 : 0;
    memset(q + 6, 0, 6);
    size_t n = qend;
    if (variant & 1) {
        static const uint8_t opt[] = {0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0};
        memcpy(q + n, opt, sizeof(opt));
        if (variant & 2)
            q[n + 7] = 0x80;
        n += sizeof(opt);
        q[11] = 1;
    }
    return n;
}

static void check_rc(int rc)
{
    if (rc != 0 && rc != 1 && rc != -E2BIG && rc != -ENOMEM)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct cache_config cc;
    cache_config_defaults(&cc);
    cc.nshards = 2;
    cc.max_bytes = MAX_BYTES;
    struct cache *c = cache_new(&cc);
    if (!c)
        abort();
    const uint32_t ttl_bound = cc.max_ttl > cc.max_negative_ttl ? cc.max_ttl : cc.max_negative_ttl;

    /* the input as a client query */
    struct cache_key k;
    if (cache_key_make(c, data, size, &k) == 0 && (k.len < 6 || k.len > CACHE_KEY_MAX))
        abort();

    size_t qend = dns_question_end(data, size);
    if (qend == 0) {
        /* no question of its own: it cannot answer www.example.com */
        if (cache_key_make(c, fixed_query, sizeof(fixed_query), &k) != 0)
            abort();
        if (cache_insert(c, &k, data, size, T0) != 1)
            abort();
        cache_free(c);
        return 0;
    }

    uint8_t q[QMAX];
    /* the same answer retyped, under keys of its own: more entries than buckets, eviction */
    uint8_t *copy = malloc(size);
    if (!copy)
        abort();
    memcpy(copy, data, size);
    struct cache_key rkeys[NRETYPED + 1];
    for (unsigned i = 1; i <= NRETYPED; i++) {
        struct cache_key *rk = &rkeys[i];
        size_t n = make_query(data, qend, data[0] & 7u, q);
        uint16_t qtype = (uint16_t)(dg_get16(data + qend - 4) ^ i);
        q[qend - 4] = copy[qend - 4] = (uint8_t)(qtype >> 8);
        q[qend - 3] = copy[qend - 3] = (uint8_t)qtype;
        if (cache_key_make(c, q, n, rk) != 0)
            abort();
        check_rc(cache_insert(c, rk, copy, size, T0));
        check_bound(c);
    }
    memcpy(copy, data, size);

    struct cache_key keys[8];
    size_t qlens[8];
    unsigned first = data[0] & 7u; /* the variant inserted last, then looked up at once */
    int rc_first = 1;
    for (unsigned i = 0; i < 8; i++) {
        unsigned v = (first + 1 + i) & 7u; /* ends with `first` */
        qlens[v] = make_query(data, qend, v, q);
        if (dns_query_check(q, qlens[v], NULL) == DNS_QUERY_MALFORMED)
            abort();
        if (cache_key_make(c, q, qlens[v], &keys[v]) != 0)
            abort();
        int rc = cache_insert(c, &keys[v], data, size, T0);
        check_rc(rc);
        check_bound(c);
        if (v == first)
            rc_first = rc;
    }
    if (rc_first == 0 && (!(data[2] & 0x80) || dns_is_truncated(data, size) ||
                          (dns_rcode(data, size) != DNS_RCODE_NOERROR &&
                           dns_rcode(data, size) != DNS_RCODE_NXDOMAIN &&
                           dns_rcode(data, size) != DNS_RCODE_SERVFAIL)))
        abort();

    static const uint64_t times[] = {
        0, 1, 999, 1000, 4999, 10000, 29999, 300000, 3600000, 86400000, 90000000, 200000000,
    };
    struct dg_buf out = {0};
    size_t stored_len = 0;
    uint32_t last_ttl = UINT32_MAX;
    for (size_t t = 0; t < sizeof(times) / sizeof(times[0]); t++) {
        if (t == 2 && rc_first == 0 && dns_rcode(data, size) != DNS_RCODE_SERVFAIL) {
            /* a failed refresh: a SERVFAIL does not replace servable data */
            copy[3] = (uint8_t)((copy[3] & 0xf0) | DNS_RCODE_SERVFAIL);
            if (cache_insert(c, &keys[first], copy, size, T0 + times[t]) != 1)
                abort();
        }
        for (unsigned j = 0; j < 2; j++) {
            unsigned v = j == 0 ? first : (first ^ (unsigned)(t + 1)) & 7u;
            make_query(data, qend, v, q);
            bool allow_stale = (t + j) & 1;
            struct cache_hit_info info;
            out.len = 0;
            enum cache_result r =
                cache_lookup(c, &keys[v], q, qlens[v], T0 + times[t], allow_stale, &out, &info);
            check_bound(c);
            if (r == CACHE_MISS) {
                if (out.len != 0)
                    abort();
                if (v == first && t == 0 && rc_first == 0)
                    abort(); /* just stored */
                continue;
            }
            if (r == CACHE_STALE && (!allow_stale || info.ttl != cc.stale_answer_ttl))
                abort();
            if (r == CACHE_HIT && (info.ttl > ttl_bound || info.ttl == 0))
                abort();
            /* one stored length, whatever key variant and time */
            if (stored_len == 0)
                stored_len = out.len;
            if (out.len != stored_len || out.len > size || out.len < qend)
                abort();
            if (memcmp(out.data, q, 2) != 0 ||
                memcmp(out.data + DNS_HEADER_LEN, q + DNS_HEADER_LEN, qend - DNS_HEADER_LEN) != 0)
                abort();
            if (dns_answer_matches(q, qlens[v], data, size) &&
                !dns_answer_matches(q, qlens[v], out.data, out.len))
                abort();
            if (v == first && (out.data[3] & 0x0f) != (data[3] & 0x0f))
                abort(); /* still the original, not the SERVFAIL */
            if (v == first && r == CACHE_HIT) {
                if (info.ttl > last_ttl)
                    abort(); /* TTLs only go down */
                last_ttl = info.ttl;
                /* for a positive answer the smallest TTL of the served records (no clamps:
                 * the stored TTLs are clamped already) is what we report */
                static const struct dnswire_ttl_policy raw = {0, 0x7fffffffu, 0x7fffffffu, 0, 0};
                struct dnswire_answer_info ai;
                uint32_t lt = dnswire_answer_lifetime(out.data, out.len, DNSWIRE_CHECK, &raw, &ai);
                if (ai.kind == DNSWIRE_POSITIVE && lt != info.ttl)
                    abort();
                /* one max-age rule: the first hit on a fresh entry reports the lifetime the
                 * cache gives the answer when it does not store it (caching off) */
                if (t == 0 && j == 0 && info.ttl != cache_answer_lifetime(c, data, size))
                    abort();
            }
        }
    }
    /* past every lifetime and stale window */
    struct cache_stats st;
    for (unsigned v = 0; v < 8; v++) {
        make_query(data, qend, v, q);
        if (cache_lookup(c, &keys[v], q, qlens[v], T0 + 200000000ull, true, &out, NULL) !=
            CACHE_MISS)
            abort();
    }
    for (unsigned i = 1; i <= NRETYPED; i++) {
        size_t n = make_query(data, qend, data[0] & 7u, q);
        uint16_t qtype = (uint16_t)(dg_get16(data + qend - 4) ^ i);
        q[qend - 4] = (uint8_t)(qtype >> 8);
        q[qend - 3] = (uint8_t)qtype;
        if (cache_lookup(c, &rkeys[i], q, n, T0 + 200000000ull, true, &out, NULL) != CACHE_MISS)
            abort();
    }
    cache_get_stats(c, &st);
    if (st.entries != 0)
        abort(); /* dead entries are deleted when met */
    free(copy);
    dg_buf_free(&out);
    cache_free(c);
    return 0;
}
