/*
 * Unit tests for cache.h: keys, lifetimes (positive, negative with and without SOA, SERVFAIL),
 * clamps, TTL aging on every record, ID and question-name restoration, stale data, prefetch,
 * the byte bound under LRU eviction, replacement, and concurrent use from several threads.
 * Queries are built byte by byte; answers with ldns (an independent encoder, which compresses
 * names) and parsed back with ldns to check what a client would see. Time is passed in, so
 * nothing here sleeps except the thread test.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ldns/ldns.h>

#include "dohgate/cache.h"
#include "dohgate/dns.h"

#define T0    1000000000ull /* an arbitrary monotonic "now" in ms */
#define SEC   1000ull
#define QBUF  512
#define F3_CD 0x10
#define DO    0x8000

/* ---- builders ----------------------------------------------------------------------------- */

static size_t put16(uint8_t *buf, size_t n, uint16_t v)
{
    buf[n] = (uint8_t)(v >> 8);
    buf[n + 1] = (uint8_t)v;
    return n + 2;
}

static size_t put_name(uint8_t *buf, size_t n, const char *name)
{
    const char *p = name;
    while (*p && strcmp(p, ".") != 0) {
        const char *dot = strchr(p, '.');
        size_t lab = dot ? (size_t)(dot - p) : strlen(p);
        buf[n++] = (uint8_t)lab;
        memcpy(buf + n, p, lab);
        n += lab;
        p += lab;
        if (*p == '.')
            p++;
    }
    buf[n++] = 0;
    return n;
}

/* A query as a DoH client sends it; opt_flags < 0: no OPT record. */
static size_t make_query(uint8_t *q, uint16_t id, uint8_t f3, const char *name, uint16_t qtype,
                         int opt_flags)
{
    size_t n = put16(q, 0, id);
    q[n++] = 0x01; /* RD */
    q[n++] = f3;
    n = put16(q, n, 1);
    n = put16(q, n, 0);
    n = put16(q, n, 0);
    n = put16(q, n, opt_flags < 0 ? 0 : 1);
    n = put_name(q, n, name);
    n = put16(q, n, qtype);
    n = put16(q, n, 1);
    if (opt_flags >= 0) {
        q[n++] = 0;
        n = put16(q, n, 41);
        n = put16(q, n, 1232);
        n = put16(q, n, 0);
        n = put16(q, n, (uint16_t)opt_flags);
        n = put16(q, n, 0);
    }
    assert_int_equal(dns_query_check(q, n, NULL), DNS_QUERY_OK);
    return n;
}

struct answer_spec {
    ldns_pkt_rcode rcode;
    const char *qname;
    ldns_rr_type qtype;
    const char *const *an; /* NULL-terminated zone-file lines */
    const char *const *ns;
    const char *const *ar;
    bool edns;
    bool edns_do;
};

static void push_records(ldns_pkt *p, ldns_pkt_section sec, const char *const *lines)
{
    for (size_t i = 0; lines && lines[i]; i++) {
        ldns_rr *rr = NULL;
        assert_int_equal(ldns_rr_new_frm_str(&rr, lines[i], 0, NULL, NULL), LDNS_STATUS_OK);
        assert_true(ldns_pkt_push_rr(p, sec, rr));
    }
}

/* Upstream answers carry a random ID of their own; the cache must not leak it. */
static uint8_t *build_answer(const struct answer_spec *s, size_t *len)
{
    ldns_pkt *p = ldns_pkt_new();
    assert_non_null(p);
    ldns_pkt_set_id(p, 0x5151);
    ldns_pkt_set_qr(p, true);
    ldns_pkt_set_rd(p, true);
    ldns_pkt_set_ra(p, true);
    ldns_pkt_set_rcode(p, (uint8_t)s->rcode);
    ldns_rr *q = ldns_rr_new();
    ldns_rdf *owner = ldns_dname_new_frm_str(s->qname);
    assert_non_null(q);
    assert_non_null(owner);
    ldns_rr_set_owner(q, owner);
    ldns_rr_set_type(q, s->qtype);
    ldns_rr_set_class(q, LDNS_RR_CLASS_IN);
    ldns_rr_set_question(q, true);
    assert_true(ldns_pkt_push_rr(p, LDNS_SECTION_QUESTION, q));
    push_records(p, LDNS_SECTION_ANSWER, s->an);
    push_records(p, LDNS_SECTION_AUTHORITY, s->ns);
    push_records(p, LDNS_SECTION_ADDITIONAL, s->ar);
    if (s->edns) {
        ldns_pkt_set_edns_udp_size(p, 1232);
        ldns_pkt_set_edns_do(p, s->edns_do);
    }
    uint8_t *wire = NULL;
    assert_int_equal(ldns_pkt2wire(&wire, p, len), LDNS_STATUS_OK);
    ldns_pkt_free(p);
    return wire;
}

static struct cache *new_cache(void (*tweak)(struct cache_config *))
{
    struct cache_config cc;
    cache_config_defaults(&cc);
    if (tweak)
        tweak(&cc);
    struct cache *c = cache_new(&cc);
    assert_non_null(c);
    return c;
}

/* A test case's fixture: one query, its key, one answer. */
struct fx {
    struct cache *c;
    uint8_t q[QBUF];
    size_t qlen;
    struct cache_key k;
    uint8_t *ans;
    size_t alen;
};

static void fx_init(struct fx *f, struct cache *c, const char *qname_as_sent, int opt_flags,
                    const struct answer_spec *s)
{
    memset(f, 0, sizeof(*f));
    f->c = c;
    f->qlen = make_query(f->q, 0xbeef, 0, qname_as_sent, (uint16_t)s->qtype, opt_flags);
    assert_int_equal(cache_key_make(c, f->q, f->qlen, &f->k), 0);
    f->ans = build_answer(s, &f->alen);
}

static void fx_deinit(struct fx *f)
{
    free(f->ans);
    cache_free(f->c);
}

static int fx_insert(struct fx *f, uint64_t now)
{
    return cache_insert(f->c, &f->k, f->ans, f->alen, now);
}

/* Look up; on HIT/STALE parse the result with ldns into *pkt (caller frees). */
static enum cache_result fx_lookup(struct fx *f, uint64_t now, bool stale, ldns_pkt **pkt,
                                   struct cache_hit_info *info)
{
    struct dg_buf out = {0};
    struct cache_hit_info dummy;
    enum cache_result r =
        cache_lookup(f->c, &f->k, f->q, f->qlen, now, stale, &out, info ? info : &dummy);
    if (r == CACHE_MISS) {
        assert_int_equal(out.len, 0);
    } else {
        /* what was stored is served: same length, client's ID and question bytes */
        assert_int_equal(out.len, f->alen);
        assert_memory_equal(out.data, f->q, 2);
        size_t qend = dns_question_end(f->q, f->qlen);
        assert_memory_equal(out.data + DNS_HEADER_LEN, f->q + DNS_HEADER_LEN,
                            qend - DNS_HEADER_LEN);
        assert_true(dns_answer_matches(f->q, f->qlen, out.data, out.len));
        if (pkt)
            assert_int_equal(ldns_wire2pkt(pkt, out.data, out.len), LDNS_STATUS_OK);
    }
    dg_buf_free(&out);
    return r;
}

static uint32_t rr_ttl_at(const ldns_pkt *p, ldns_pkt_section sec, size_t i)
{
    ldns_rr_list *l = ldns_pkt_get_section_clone(p, sec);
    assert_non_null(l);
    assert_true(i < ldns_rr_list_rr_count(l));
    uint32_t t = ldns_rr_ttl(ldns_rr_list_rr(l, i));
    ldns_rr_list_deep_free(l);
    return t;
}

static void check_ttls(const ldns_pkt *p, ldns_pkt_section sec, const uint32_t *want, size_t n)
{
    ldns_rr_list *l = ldns_pkt_get_section_clone(p, sec);
    assert_non_null(l);
    assert_int_equal(ldns_rr_list_rr_count(l), n);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(ldns_rr_ttl(ldns_rr_list_rr(l, i)), want[i]);
    ldns_rr_list_deep_free(l);
}

static int insert_spec(struct cache *c, const struct cache_key *k, const struct answer_spec *s,
                       uint64_t now)
{
    size_t len = 0;
    uint8_t *w = build_answer(s, &len);
    int rc = cache_insert(c, k, w, len, now);
    free(w);
    return rc;
}

/* ---- keys --------------------------------------------------------------------------------- */

static void test_key_case_and_separation(void **state)
{
    struct cache *c = new_cache(NULL);
    uint8_t q[QBUF];
    struct cache_key base, k;
    size_t n = make_query(q, 1, 0, "www.example.com", 1, -1);
    assert_int_equal(cache_key_make(c, q, n, &base), 0);

    /* 0x20 randomisation and a different ID: the same key */
    n = make_query(q, 2, 0, "wWw.ExAmPlE.CoM", 1, -1);
    assert_int_equal(cache_key_make(c, q, n, &k), 0);
    assert_int_equal(k.len, base.len);
    assert_memory_equal(k.data, base.data, k.len);
    assert_true(k.hash == base.hash);

    /* qtype, CD, EDNS without DO, DO, CD + DO: all different keys */
    struct {
        uint8_t f3;
        uint16_t qtype;
        int opt;
    } v[] = {
        {0, 28, -1}, {F3_CD, 1, -1}, {0, 1, 0}, {0, 1, DO}, {F3_CD, 1, DO},
    };
    struct cache_key seen[5];
    for (size_t i = 0; i < 5; i++) {
        n = make_query(q, 1, v[i].f3, "www.example.com", v[i].qtype, v[i].opt);
        assert_int_equal(cache_key_make(c, q, n, &seen[i]), 0);
        assert_false(seen[i].len == base.len && memcmp(seen[i].data, base.data, base.len) == 0);
        for (size_t j = 0; j < i; j++)
            assert_false(seen[i].len == seen[j].len &&
                         memcmp(seen[i].data, seen[j].data, seen[j].len) == 0);
    }

    /* an answer stored under one key is not served for the others */
    const char *an[] = {"www.example.com. 300 IN A 192.0.2.1", NULL};
    struct answer_spec s = {.qname = "www.example.com.", .qtype = LDNS_RR_TYPE_A, .an = an};
    assert_int_equal(insert_spec(c, &base, &s, T0), 0);
    struct dg_buf out = {0};
    for (size_t i = 0; i < 5; i++) {
        if (v[i].qtype != 1)
            continue;
        n = make_query(q, 1, v[i].f3, "www.example.com", 1, v[i].opt);
        assert_int_equal(cache_lookup(c, &seen[i], q, n, T0, true, &out, NULL), CACHE_MISS);
    }
    n = make_query(q, 7, 0, "WWW.EXAMPLE.COM", 1, -1);
    assert_int_equal(cache_key_make(c, q, n, &k), 0);
    assert_int_equal(cache_lookup(c, &k, q, n, T0, false, &out, NULL), CACHE_HIT);
    dg_buf_free(&out);

    /* a key from another query is not served for this one (its name would be overwritten) */
    uint8_t q2[QBUF];
    size_t n2 = make_query(q2, 7, 0, "www.example.net", 1, -1);
    assert_int_equal(cache_lookup(c, &k, q2, n2, T0, false, &out, NULL), CACHE_MISS);
    assert_int_equal(out.len, 0);
    cache_free(c);
}

static void test_key_invalid(void **state)
{
    struct cache *c = new_cache(NULL);
    uint8_t q[QBUF];
    struct cache_key k;
    size_t n = make_query(q, 1, 0, "example.com", 1, 0);
    assert_int_equal(cache_key_make(c, q, 11, &k), -EINVAL);
    assert_int_equal(cache_key_make(c, NULL, 0, &k), -EINVAL);
    /* question cut short */
    assert_int_equal(cache_key_make(c, q, DNS_HEADER_LEN + 5, &k), -EINVAL);
    /* OPT RDLENGTH beyond the end */
    q[n - 1] = 9;
    assert_int_equal(cache_key_make(c, q, n, &k), -EINVAL);
    /* qname compressed */
    n = put16(q, 0, 1);
    n = put16(q, n, 0x0100);
    n = put16(q, n, 1);
    n = put16(q, n, 0);
    n = put16(q, n, 0);
    n = put16(q, n, 0);
    n = put16(q, n, 0xc00c);
    n = put16(q, n, 1);
    n = put16(q, n, 1);
    assert_int_equal(cache_key_make(c, q, n, &k), -EINVAL);

    /* two caches hash the same key differently (per-cache random secret) */
    struct cache *c2 = new_cache(NULL);
    struct cache_key k1, k2;
    n = make_query(q, 1, 0, "example.com", 1, -1);
    assert_int_equal(cache_key_make(c, q, n, &k1), 0);
    assert_int_equal(cache_key_make(c2, q, n, &k2), 0);
    assert_memory_equal(k1.data, k2.data, k1.len);
    assert_true(k1.hash != k2.hash);
    cache_free(c2);
    cache_free(c);
}

/* ---- positive answers: aging ------------------------------------------------------------- */

static void test_hit_ages_every_ttl(void **state)
{
    const char *an[] = {"www.example.com. 300 IN CNAME web.example.com.",
                        "web.example.com. 200 IN A 192.0.2.1",
                        "web.example.com. 250 IN A 192.0.2.2", NULL};
    const char *ns[] = {"example.com. 3600 IN NS ns1.example.com.",
                        "example.com. 3600 IN NS ns2.example.com.", NULL};
    const char *ar[] = {"ns1.example.com. 100 IN A 192.0.2.53",
                        "ns2.example.com. 7200 IN AAAA 2001:db8::53", NULL};
    struct answer_spec s = {.qname = "www.example.com.",
                            .qtype = LDNS_RR_TYPE_A,
                            .an = an,
                            .ns = ns,
                            .ar = ar,
                            .edns = true,
                            .edns_do = true};
    struct fx f;
    fx_init(&f, new_cache(NULL), "wWw.eXample.COM", DO, &s);
    /* ldns compressed the owner names: the walker must cope with pointers */
    bool compressed = false;
    for (size_t i = DNS_HEADER_LEN; i + 1 < f.alen; i++)
        compressed |= f.ans[i] == 0xc0 && f.ans[i + 1] == 0x0c;
    assert_true(compressed);
    assert_int_equal(fx_insert(&f, T0), 0);

    /* age 0: the bytes come back as stored, apart from ID and question-name case */
    struct dg_buf out = {0};
    struct cache_hit_info info;
    assert_int_equal(cache_lookup(f.c, &f.k, f.q, f.qlen, T0, false, &out, &info), CACHE_HIT);
    assert_int_equal(out.len, f.alen);
    assert_int_equal(out.data[0], 0xbe);
    assert_int_equal(out.data[1], 0xef);
    assert_memory_equal(out.data + 2, f.ans + 2, DNS_HEADER_LEN - 2);
    assert_memory_equal(out.data + DNS_HEADER_LEN, "\3wWw\7eXample\3COM", 17);
    size_t qend = dns_question_end(f.ans, f.alen);
    assert_memory_equal(out.data + qend, f.ans + qend, f.alen - qend);
    assert_int_equal(info.ttl, 200);
    dg_buf_free(&out);

    /* 42.7 s later every TTL is 42 lower; the cache-control TTL is the smallest of answer +
     * authority (158), not the additional glue's (58) */
    ldns_pkt *p = NULL;
    assert_int_equal(fx_lookup(&f, T0 + 42700, false, &p, &info), CACHE_HIT);
    assert_int_equal(info.ttl, 158);
    assert_false(info.prefetch);
    assert_int_equal(ldns_pkt_id(p), 0xbeef);
    const uint32_t want_an[] = {258, 158, 208}, want_ns[] = {3558, 3558}, want_ar[] = {58, 7158};
    check_ttls(p, LDNS_SECTION_ANSWER, want_an, 3);
    check_ttls(p, LDNS_SECTION_AUTHORITY, want_ns, 2);
    check_ttls(p, LDNS_SECTION_ADDITIONAL, want_ar, 2);
    /* OPT's "TTL" carries EDNS flags: untouched */
    assert_true(ldns_pkt_edns(p));
    assert_true(ldns_pkt_edns_do(p));
    assert_int_equal(ldns_pkt_edns_udp_size(p), 1232);
    ldns_pkt_free(p);

    /* glue past its TTL stays at 0 while the answer is fresh */
    assert_int_equal(fx_lookup(&f, T0 + 150 * SEC, false, &p, &info), CACHE_HIT);
    assert_int_equal(info.ttl, 50);
    const uint32_t want_ar2[] = {0, 7050};
    check_ttls(p, LDNS_SECTION_ADDITIONAL, want_ar2, 2);
    ldns_pkt_free(p);

    /* fresh until the smallest answer/authority TTL, then gone without stale */
    assert_int_equal(fx_lookup(&f, T0 + 200 * SEC - 1, false, NULL, &info), CACHE_HIT);
    assert_int_equal(info.ttl, 1);
    assert_int_equal(fx_lookup(&f, T0 + 200 * SEC, false, NULL, &info), CACHE_MISS);
    fx_deinit(&f);
}

/* ---- negative answers --------------------------------------------------------------------- */

static void neg_case(ldns_pkt_rcode rcode, const char *const *an, const char *soa,
                     uint32_t want_life, uint32_t want_soa_ttl)
{
    const char *ns[] = {soa, NULL};
    struct answer_spec s = {
        .rcode = rcode, .qname = "nx.example.com.", .qtype = LDNS_RR_TYPE_A, .an = an, .ns = ns};
    struct fx f;
    fx_init(&f, new_cache(NULL), "nx.example.com", -1, &s);
    assert_int_equal(fx_insert(&f, T0), 0);
    struct cache_hit_info info;
    ldns_pkt *p = NULL;
    assert_int_equal(fx_lookup(&f, T0, false, &p, &info), CACHE_HIT);
    assert_int_equal(info.ttl, want_life);
    size_t soa_at = 0;
    assert_int_equal(rr_ttl_at(p, LDNS_SECTION_AUTHORITY, soa_at), want_soa_ttl);
    assert_int_equal(ldns_pkt_get_rcode(p), rcode);
    ldns_pkt_free(p);

    /* 10.5 s later: the SOA is aged like everything else, and Cache-Control follows the
     * remaining lifetime */
    assert_int_equal(fx_lookup(&f, T0 + 10500, false, &p, &info), CACHE_HIT);
    assert_int_equal(info.ttl, want_life - 10);
    assert_int_equal(rr_ttl_at(p, LDNS_SECTION_AUTHORITY, soa_at), want_soa_ttl - 10);
    ldns_pkt_free(p);

    assert_int_equal(fx_lookup(&f, T0 + want_life * SEC - 1, false, NULL, &info), CACHE_HIT);
    assert_int_equal(info.ttl, 1);
    assert_int_equal(fx_lookup(&f, T0 + want_life * SEC, false, NULL, NULL), CACHE_MISS);
    fx_deinit(&f);
}

static void test_negative_soa(void **state)
{
    /* NXDOMAIN, SOA TTL 3600 > MINIMUM 300: 300, and the SOA is served with 300 (RFC 2308 §3) */
    neg_case(LDNS_RCODE_NXDOMAIN, NULL,
             "example.com. 3600 IN SOA ns.example.com. h.example.com. 1 7200 900 1209600 300", 300,
             300);
    /* NXDOMAIN, SOA TTL 60 < MINIMUM 900: 60 */
    neg_case(LDNS_RCODE_NXDOMAIN, NULL,
             "example.com. 60 IN SOA ns.example.com. h.example.com. 1 7200 900 1209600 900", 60,
             60);
    /* NODATA (NOERROR, empty answer) */
    neg_case(LDNS_RCODE_NOERROR, NULL,
             "example.com. 600 IN SOA ns.example.com. h.example.com. 1 7200 900 1209600 120", 120,
             120);
    /* NXDOMAIN at the end of a CNAME chain: the CNAME (50) bounds the lifetime */
    const char *an[] = {"nx.example.com. 50 IN CNAME gone.example.com.", NULL};
    neg_case(LDNS_RCODE_NXDOMAIN, an,
             "example.com. 3600 IN SOA ns.example.com. h.example.com. 1 7200 900 1209600 300", 50,
             300);
}

static void set_nosoa_0(struct cache_config *cc)
{
    cc->nosoa_negative_ttl = 0;
}

static void test_negative_no_soa(void **state)
{
    struct answer_spec s = {
        .rcode = LDNS_RCODE_NXDOMAIN, .qname = "nx.example.com.", .qtype = LDNS_RR_TYPE_A};
    struct fx f;
    fx_init(&f, new_cache(NULL), "nx.example.com", -1, &s);
    assert_int_equal(fx_insert(&f, T0), 0);
    struct cache_hit_info info;
    assert_int_equal(fx_lookup(&f, T0 + 5 * SEC, false, NULL, &info), CACHE_HIT);
    assert_int_equal(info.ttl, 25); /* nosoa_negative_ttl 30 − 5 */
    assert_int_equal(fx_lookup(&f, T0 + 30 * SEC - 1, false, NULL, NULL), CACHE_HIT);
    assert_int_equal(fx_lookup(&f, T0 + 30 * SEC, false, NULL, NULL), CACHE_MISS);
    fx_deinit(&f);

    fx_init(&f, new_cache(set_nosoa_0), "nx.example.com", -1, &s);
    assert_int_equal(fx_insert(&f, T0), 1);
    assert_int_equal(fx_lookup(&f, T0, true, NULL, NULL), CACHE_MISS);
    fx_deinit(&f);
}

/* ---- SERVFAIL and what is never cached ---------------------------------------------------- */

static void set_servfail_0(struct cache_config *cc)
{
    cc->servfail_ttl = 0;
}
static void set_servfail_300(struct cache_config *cc)
{
    cc->servfail_ttl = 300;
}

static void test_servfail(void **state)
{
    struct answer_spec s = {
        .rcode = LDNS_RCODE_SERVFAIL, .qname = "sf.example.com.", .qtype = LDNS_RR_TYPE_A};
    struct fx f;
    struct cache_hit_info info;
    fx_init(&f, new_cache(NULL), "sf.example.com", -1, &s);
    assert_int_equal(fx_insert(&f, T0), 0);
    assert_int_equal(fx_lookup(&f, T0, false, NULL, &info), CACHE_HIT);
    assert_int_equal(info.ttl, 5);
    assert_int_equal(fx_lookup(&f, T0 + 5 * SEC - 1, false, NULL, &info), CACHE_HIT);
    assert_int_equal(info.ttl, 1);
    assert_int_equal(fx_lookup(&f, T0 + 5 * SEC, false, NULL, NULL), CACHE_MISS);
    fx_deinit(&f);

    fx_init(&f, new_cache(set_servfail_0), "sf.example.com", -1, &s);
    assert_int_equal(fx_insert(&f, T0), 1);
    fx_deinit(&f);

    /* capped at 30 s */
    fx_init(&f, new_cache(set_servfail_300), "sf.example.com", -1, &s);
    assert_int_equal(fx_insert(&f, T0), 0);
    assert_int_equal(fx_lookup(&f, T0, false, NULL, &info), CACHE_HIT);
    assert_int_equal(info.ttl, 30);
    assert_int_equal(fx_lookup(&f, T0 + 30 * SEC, false, NULL, NULL), CACHE_MISS);
    fx_deinit(&f);
}

static void test_servfail_keeps_servable_data(void **state)
{
    const char *an[] = {"www.example.com. 60 IN A 192.0.2.1", NULL};
    struct answer_spec good = {.qname = "www.example.com.", .qtype = LDNS_RR_TYPE_A, .an = an};
    struct answer_spec bad = {
        .rcode = LDNS_RCODE_SERVFAIL, .qname = "www.example.com.", .qtype = LDNS_RR_TYPE_A};
    struct fx f;
    fx_init(&f, new_cache(NULL), "www.example.com", -1, &good);
    assert_int_equal(fx_insert(&f, T0), 0);
    /* fresh, then stale: the SERVFAIL of a failed refresh does not push it out */
    assert_int_equal(insert_spec(f.c, &f.k, &bad, T0 + 10 * SEC), 1);
    assert_int_equal(insert_spec(f.c, &f.k, &bad, T0 + 100 * SEC), 1);
    ldns_pkt *p = NULL;
    assert_int_equal(fx_lookup(&f, T0 + 100 * SEC, true, &p, NULL), CACHE_STALE);
    assert_int_equal(ldns_pkt_get_rcode(p), LDNS_RCODE_NOERROR);
    ldns_pkt_free(p);
    /* once the old entry is past serving, the SERVFAIL is stored */
    uint64_t dead = T0 + (60 + 86400) * SEC;
    assert_int_equal(insert_spec(f.c, &f.k, &bad, dead), 0);
    struct cache_stats st;
    cache_get_stats(f.c, &st);
    assert_int_equal(st.entries, 1);
    /* and a good answer replaces a SERVFAIL */
    assert_int_equal(insert_spec(f.c, &f.k, &good, dead + SEC), 0);
    assert_int_equal(fx_lookup(&f, dead + SEC, false, &p, NULL), CACHE_HIT);
    assert_int_equal(ldns_pkt_get_rcode(p), LDNS_RCODE_NOERROR);
    ldns_pkt_free(p);
    fx_deinit(&f);
}

static void test_never_cached(void **state)
{
    const char *an[] = {"www.example.com. 300 IN A 192.0.2.1", NULL};
    struct answer_spec s = {
        .qname = "www.example.com.", .qtype = LDNS_RR_TYPE_A, .an = an, .edns = true};
    struct fx f;
    fx_init(&f, new_cache(NULL), "www.example.com", 0, &s);
    uint8_t *w = malloc(f.alen + 16);
    assert_non_null(w);
    struct cache_stats st;

#define REFUSED_WITH(mutation)                                                                     \
    do {                                                                                           \
        memcpy(w, f.ans, f.alen);                                                                  \
        size_t wl = f.alen;                                                                        \
        mutation;                                                                                  \
        assert_int_equal(cache_insert(f.c, &f.k, w, wl, T0), 1);                                   \
    } while (0)

    REFUSED_WITH(w[2] |= 0x02);                             /* TC */
    REFUSED_WITH(w[2] &= 0x7f);                             /* QR clear */
    REFUSED_WITH(w[2] |= 4 << 3);                           /* opcode NOTIFY */
    REFUSED_WITH(w[3] = (uint8_t)((w[3] & 0xf0) | 1));      /* FORMERR */
    REFUSED_WITH(w[3] = (uint8_t)((w[3] & 0xf0) | 4));      /* NOTIMP */
    REFUSED_WITH(w[3] = (uint8_t)((w[3] & 0xf0) | 5));      /* REFUSED */
    REFUSED_WITH(w[3] = (uint8_t)((w[3] & 0xf0) | 6));      /* YXDOMAIN */
    REFUSED_WITH(w[13] = 'x');                              /* question name differs */
    REFUSED_WITH(w[DNS_HEADER_LEN + 17 + 1] = 28);          /* question type differs */
    REFUSED_WITH(w[DNS_HEADER_LEN + 17 + 3] = 3);           /* question class differs */
    REFUSED_WITH(w[5] = 0);                                 /* QDCOUNT 0 */
    REFUSED_WITH(w[5] = 2);                                 /* QDCOUNT 2 */
    REFUSED_WITH(w[7] = 2);                                 /* ANCOUNT larger than the records */
    REFUSED_WITH(w[DNS_HEADER_LEN + 21 + 2 + 8 + 1] = 200); /* A RDLENGTH past the end */
    REFUSED_WITH(w[DNS_HEADER_LEN + 21] = 0x40);            /* extended label type as owner */
    REFUSED_WITH(w[wl - 11 + 5] = 1);                       /* OPT extended rcode (BADVERS) */
    REFUSED_WITH(memcpy(w + wl, w + wl - 11, 11); wl += 11; w[11] = 2); /* two OPT */
    /* every truncation */
    for (size_t cut = 0; cut < f.alen; cut++)
        assert_int_equal(cache_insert(f.c, &f.k, f.ans, cut, T0), 1);
    cache_get_stats(f.c, &st);
    assert_int_equal(st.entries, 0);
    assert_int_equal(st.inserts, 0);

    /* OPT outside the additional section */
    memcpy(w, f.ans, f.alen);
    w[7] = 0;
    w[9] = 1; /* the A record becomes authority: NODATA-shaped, still cacheable */
    assert_int_equal(cache_insert(f.c, &f.k, w, f.alen, T0), 0);
    w[9] = 2;
    w[11] = 0; /* OPT counted in authority */
    assert_int_equal(cache_insert(f.c, &f.k, w, f.alen, T0), 1);

    /* trailing bytes after the last record are not stored */
    memcpy(w, f.ans, f.alen);
    memset(w + f.alen, 0xee, 16);
    assert_int_equal(cache_insert(f.c, &f.k, w, f.alen + 16, T0), 0);
    assert_int_equal(fx_lookup(&f, T0, false, NULL, NULL), CACHE_HIT); /* checks the length */
#undef REFUSED_WITH
    free(w);
    fx_deinit(&f);
}

/* A name pointing into bytes that hits rewrite would change with the entry's age. */
static void test_pointer_into_rewritten_bytes(void **state)
{
    struct cache *c = new_cache(NULL);
    uint8_t q[QBUF], a[QBUF];
    struct cache_key k;
    size_t qn = make_query(q, 0x5151, 0, "www.example.com", 5, -1);
    assert_int_equal(cache_key_make(c, q, qn, &k), 0);
    /* www.example.com CNAME <rdata: one compression pointer> */
    size_t n = put16(a, 0, 0x5151);
    n = put16(a, n, 0x8180);
    n = put16(a, n, 1);
    n = put16(a, n, 1);
    n = put16(a, n, 0);
    n = put16(a, n, 0);
    n = put_name(a, n, "www.example.com");
    n = put16(a, n, 5);
    n = put16(a, n, 1);
    n = put16(a, n, 0xc00c);
    n = put16(a, n, 5);
    n = put16(a, n, 1);
    size_t ttl_at = n;
    n = put16(a, n, 0);
    n = put16(a, n, 3600); /* first TTL byte 0: read as a name, the root */
    n = put16(a, n, 2);
    size_t ptr_at = n;
    n = put16(a, n, 0xc00c);

    /* to the question name: fine */
    assert_int_equal(cache_insert(c, &k, a, n, T0), 0);
    /* to the TTL field: ldns accepts it (CNAME to the root) but the cache does not */
    put16(a, ptr_at, (uint16_t)(0xc000 | ttl_at));
    assert_true(dns_answer_matches(q, qn, a, n));
    assert_int_equal(cache_insert(c, &k, a, n, T0), 1);
    /* to the header (the ID bytes are rewritten on hits) */
    a[0] = 0;
    put16(a, ptr_at, 0xc000);
    assert_int_equal(cache_insert(c, &k, a, n, T0), 1);
    /* a pointer loop */
    put16(a, ptr_at, (uint16_t)(0xc000 | ptr_at));
    assert_int_equal(cache_insert(c, &k, a, n, T0), 1);
    /* the owner name pointing into the TTL of the record itself */
    put16(a, ptr_at, 0xc00c);
    a[0] = 0x51;
    assert_int_equal(cache_insert(c, &k, a, n, T0), 0);
    put16(a, ttl_at - 6, (uint16_t)(0xc000 | ttl_at)); /* owner */
    assert_int_equal(cache_insert(c, &k, a, n, T0), 1);
    cache_free(c);
}

/* Names that reach the question's name at one of its labels are taken as stable from there
 * (name_stable()'s short cut); a pointer into the middle of a label is walked as it reads. */
static void test_pointer_into_question_labels(void **state)
{
    (void)state;
    struct cache *c = new_cache(NULL);
    uint8_t q[QBUF], a[QBUF];
    struct cache_key k;
    /* "a1": the byte '1' (49) reads as a label length when pointed at */
    size_t qn = make_query(q, 0x5252, 0, "a1.example.com", 5, -1);
    assert_int_equal(cache_key_make(c, q, qn, &k), 0);
    size_t n = put16(a, 0, 0x5252);
    n = put16(a, n, 0x8180);
    n = put16(a, n, 1);
    n = put16(a, n, 1);
    n = put16(a, n, 0);
    n = put16(a, n, 0);
    n = put_name(a, n, "a1.example.com");
    n = put16(a, n, 5);
    n = put16(a, n, 1);
    n = put16(a, n, 0xc00c);
    n = put16(a, n, 5);
    n = put16(a, n, 1);
    n = put16(a, n, 0);
    n = put16(a, n, 3600);
    n = put16(a, n, 2);
    size_t ptr_at = n;
    n = put16(a, n, 0xc00c + 3); /* "example.com": a label of the question */
    assert_int_equal(cache_insert(c, &k, a, n, T0), 0);
    put16(a, ptr_at, 0xc00c + 11); /* "com" */
    assert_int_equal(cache_insert(c, &k, a, n, T0), 0);
    put16(a, ptr_at, 0xc00c + 2); /* '1': a 49-byte label running past the message */
    assert_int_equal(cache_insert(c, &k, a, n, T0), 1);
    cache_free(c);
}

/* ---- clamps ------------------------------------------------------------------------------- */

static void set_min_60(struct cache_config *cc)
{
    cc->min_ttl = 60;
}
static void set_max_1000(struct cache_config *cc)
{
    cc->max_ttl = 1000;
}
static void set_maxneg_100(struct cache_config *cc)
{
    cc->max_negative_ttl = 100;
}

/* A reload re-tunes a surviving cache (cache_set_policy): the next insert and the lifetime of
 * an uncached answer follow the new knobs, entries already stored keep theirs. */
static void test_set_policy(void **state)
{
    struct fx f;
    struct cache_hit_info info;
    const char *an5[] = {"www.example.com. 5 IN A 192.0.2.1", NULL};
    struct answer_spec s = {.qname = "www.example.com.", .qtype = LDNS_RR_TYPE_A, .an = an5};
    fx_init(&f, new_cache(NULL), "www.example.com", -1, &s);
    assert_int_equal(cache_answer_lifetime(f.c, f.ans, f.alen), 5);
    assert_int_equal(fx_insert(&f, T0), 0);
    struct cache_config cc;
    cache_config_defaults(&cc);
    set_min_60(&cc);
    cache_set_policy(f.c, &cc);
    assert_int_equal(cache_answer_lifetime(f.c, f.ans, f.alen), 60);
    assert_int_equal(fx_lookup(&f, T0 + 1 * SEC, false, NULL, &info), CACHE_HIT);
    assert_int_equal(info.ttl, 4); /* stored before the change: its own lifetime */
    assert_int_equal(fx_insert(&f, T0 + 10 * SEC), 0);
    assert_int_equal(fx_lookup(&f, T0 + 20 * SEC, false, NULL, &info), CACHE_HIT);
    assert_int_equal(info.ttl, 50);
    fx_deinit(&f);
}

static void test_clamps(void **state)
{
    struct fx f;
    struct cache_hit_info info;
    ldns_pkt *p = NULL;

    /* min_ttl raises the lifetime and the TTLs served */
    const char *an5[] = {"www.example.com. 5 IN A 192.0.2.1", NULL};
    struct answer_spec s = {.qname = "www.example.com.", .qtype = LDNS_RR_TYPE_A, .an = an5};
    fx_init(&f, new_cache(set_min_60), "www.example.com", -1, &s);
    assert_int_equal(fx_insert(&f, T0), 0);
    assert_int_equal(fx_lookup(&f, T0 + 10 * SEC, false, &p, &info), CACHE_HIT);
    assert_int_equal(info.ttl, 50);
    assert_int_equal(rr_ttl_at(p, LDNS_SECTION_ANSWER, 0), 50);
    ldns_pkt_free(p);
    assert_int_equal(fx_lookup(&f, T0 + 60 * SEC, false, NULL, NULL), CACHE_MISS);
    fx_deinit(&f);

    /* TTL 0 is not cached by default, but is with min_ttl */
    const char *an0[] = {"www.example.com. 0 IN A 192.0.2.1", NULL};
    s.an = an0;
    fx_init(&f, new_cache(NULL), "www.example.com", -1, &s);
    assert_int_equal(fx_insert(&f, T0), 1);
    fx_deinit(&f);
    fx_init(&f, new_cache(set_min_60), "www.example.com", -1, &s);
    assert_int_equal(fx_insert(&f, T0), 0);
    fx_deinit(&f);

    /* a TTL with the top bit set means 0 (RFC 2181 §8) */
    s.an = an5;
    fx_init(&f, new_cache(NULL), "www.example.com", -1, &s);
    size_t ttl_at = f.alen - 4 - 2 - 4;
    assert_int_equal(f.ans[ttl_at + 3], 5);
    f.ans[ttl_at] = 0x80;
    assert_int_equal(fx_insert(&f, T0), 1);
    fx_deinit(&f);

    /* max_ttl lowers lifetime and TTLs */
    const char *anbig[] = {"www.example.com. 100000 IN A 192.0.2.1", NULL};
    s.an = anbig;
    fx_init(&f, new_cache(set_max_1000), "www.example.com", -1, &s);
    assert_int_equal(fx_insert(&f, T0), 0);
    assert_int_equal(fx_lookup(&f, T0, false, &p, &info), CACHE_HIT);
    assert_int_equal(info.ttl, 1000);
    assert_int_equal(rr_ttl_at(p, LDNS_SECTION_ANSWER, 0), 1000);
    ldns_pkt_free(p);
    assert_int_equal(fx_lookup(&f, T0 + 1000 * SEC, false, NULL, NULL), CACHE_MISS);
    fx_deinit(&f);

    /* max_negative_ttl */
    const char *ns[] = {
        "example.com. 3600 IN SOA ns.example.com. h.example.com. 1 7200 900 1209600 900", NULL};
    struct answer_spec neg = {.rcode = LDNS_RCODE_NXDOMAIN,
                              .qname = "nx.example.com.",
                              .qtype = LDNS_RR_TYPE_A,
                              .ns = ns};
    fx_init(&f, new_cache(set_maxneg_100), "nx.example.com", -1, &neg);
    assert_int_equal(fx_insert(&f, T0), 0);
    assert_int_equal(fx_lookup(&f, T0, false, &p, &info), CACHE_HIT);
    assert_int_equal(info.ttl, 100);
    assert_int_equal(rr_ttl_at(p, LDNS_SECTION_AUTHORITY, 0), 100);
    ldns_pkt_free(p);
    assert_int_equal(fx_lookup(&f, T0 + 100 * SEC, false, NULL, NULL), CACHE_MISS);
    fx_deinit(&f);
}

/* ---- stale -------------------------------------------------------------------------------- */

static void set_no_stale(struct cache_config *cc)
{
    cc->serve_stale = false;
}

static void test_stale(void **state)
{
    const char *an[] = {"www.example.com. 300 IN A 192.0.2.1", NULL};
    const char *ns[] = {"example.com. 600 IN NS ns.example.com.", NULL};
    struct answer_spec s = {
        .qname = "www.example.com.", .qtype = LDNS_RR_TYPE_A, .an = an, .ns = ns, .edns = true};
    struct fx f;
    struct cache_hit_info info;
    struct cache_stats st;
    ldns_pkt *p = NULL;
    fx_init(&f, new_cache(NULL), "WWW.example.com", 0, &s);
    assert_int_equal(fx_insert(&f, T0), 0);

    uint64_t exp = T0 + 300 * SEC;
    assert_int_equal(fx_lookup(&f, exp, false, NULL, NULL), CACHE_MISS);
    assert_int_equal(fx_lookup(&f, exp, true, &p, &info), CACHE_STALE);
    assert_int_equal(info.ttl, 30);
    assert_false(info.prefetch);
    const uint32_t thirty[] = {30};
    check_ttls(p, LDNS_SECTION_ANSWER, thirty, 1);
    check_ttls(p, LDNS_SECTION_AUTHORITY, thirty, 1);
    assert_int_equal(ldns_pkt_id(p), 0xbeef);
    ldns_pkt_free(p);
    assert_int_equal(fx_lookup(&f, exp + 86400 * SEC - 1, true, NULL, NULL), CACHE_STALE);
    cache_get_stats(f.c, &st);
    assert_int_equal(st.entries, 1);
    assert_int_equal(st.stale_hits, 2);
    assert_int_equal(st.misses, 1);
    /* past stale_max_s: deleted on lookup */
    assert_int_equal(fx_lookup(&f, exp + 86400 * SEC, true, NULL, NULL), CACHE_MISS);
    cache_get_stats(f.c, &st);
    assert_int_equal(st.entries, 0);
    assert_int_equal(st.misses, 2);
    fx_deinit(&f);

    /* serve_stale off: expired means gone, whatever the caller asks */
    fx_init(&f, new_cache(set_no_stale), "www.example.com", 0, &s);
    assert_int_equal(fx_insert(&f, T0), 0);
    assert_int_equal(fx_lookup(&f, exp, true, NULL, NULL), CACHE_MISS);
    cache_get_stats(f.c, &st);
    assert_int_equal(st.entries, 0);
    fx_deinit(&f);
}

/* ---- prefetch ----------------------------------------------------------------------------- */

static void set_prefetch_50(struct cache_config *cc)
{
    cc->prefetch_percent = 50;
}
static void set_prefetch_0(struct cache_config *cc)
{
    cc->prefetch_percent = 0;
}

static void test_prefetch_once(void **state)
{
    const char *an[] = {"www.example.com. 100 IN A 192.0.2.1", NULL};
    struct answer_spec s = {.qname = "www.example.com.", .qtype = LDNS_RR_TYPE_A, .an = an};
    struct fx f;
    struct cache_hit_info info;
    fx_init(&f, new_cache(NULL), "www.example.com", -1, &s);
    assert_int_equal(fx_insert(&f, T0), 0);
    assert_int_equal(fx_lookup(&f, T0 + 90 * SEC - 1, false, NULL, &info), CACHE_HIT);
    assert_false(info.prefetch);
    assert_int_equal(fx_lookup(&f, T0 + 90 * SEC, false, NULL, &info), CACHE_HIT);
    assert_true(info.prefetch);
    assert_int_equal(fx_lookup(&f, T0 + 90 * SEC, false, NULL, &info), CACHE_HIT);
    assert_false(info.prefetch);
    assert_int_equal(fx_lookup(&f, T0 + 99 * SEC, false, NULL, &info), CACHE_HIT);
    assert_false(info.prefetch);
    /* not for stale answers either */
    assert_int_equal(fx_lookup(&f, T0 + 100 * SEC, true, NULL, &info), CACHE_STALE);
    assert_false(info.prefetch);

    /* the refreshed answer is a new entry: signalled again in its own last 10% */
    uint64_t t1 = T0 + 95 * SEC;
    assert_int_equal(fx_insert(&f, t1), 0);
    assert_int_equal(fx_lookup(&f, t1 + 89 * SEC, false, NULL, &info), CACHE_HIT);
    assert_false(info.prefetch);
    assert_int_equal(fx_lookup(&f, t1 + 91 * SEC, false, NULL, &info), CACHE_HIT);
    assert_true(info.prefetch);
    fx_deinit(&f);

    /* lifetimes under 10 s are never prefetched */
    const char *an9[] = {"www.example.com. 9 IN A 192.0.2.1", NULL};
    s.an = an9;
    fx_init(&f, new_cache(set_prefetch_50), "www.example.com", -1, &s);
    assert_int_equal(fx_insert(&f, T0), 0);
    for (uint64_t t = 0; t < 9 * SEC; t += 250) {
        assert_int_equal(fx_lookup(&f, T0 + t, false, NULL, &info), CACHE_HIT);
        assert_false(info.prefetch);
    }
    fx_deinit(&f);

    /* prefetch_percent 0: off */
    s.an = an;
    fx_init(&f, new_cache(set_prefetch_0), "www.example.com", -1, &s);
    assert_int_equal(fx_insert(&f, T0), 0);
    assert_int_equal(fx_lookup(&f, T0 + 99 * SEC, false, NULL, &info), CACHE_HIT);
    assert_false(info.prefetch);
    fx_deinit(&f);
}

/* ---- bound, LRU, replacement -------------------------------------------------------------- */

#define SMALL_BYTES (32 * 1024)
static void set_small(struct cache_config *cc)
{
    cc->nshards = 1;
    cc->max_bytes = SMALL_BYTES;
}

/* Query and answer for name number i: "h<i>.example.com" → 10.x.y.z encoding i. */
static size_t numbered_query(uint8_t *q, unsigned i, uint16_t id)
{
    char name[64];
    snprintf(name, sizeof(name), "h%u.example.com", i);
    return make_query(q, id, 0, name, 1, -1);
}

static uint8_t *numbered_answer(unsigned i, size_t *len)
{
    char name[64], rr[128];
    snprintf(name, sizeof(name), "h%u.example.com.", i);
    snprintf(rr, sizeof(rr), "%s 3600 IN A 10.%u.%u.%u", name, (i >> 16) & 255, (i >> 8) & 255,
             i & 255);
    const char *an[] = {rr, NULL};
    struct answer_spec s = {.qname = name, .qtype = LDNS_RR_TYPE_A, .an = an};
    return build_answer(&s, len);
}

static void insert_numbered(struct cache *c, unsigned i, uint64_t now)
{
    uint8_t q[QBUF];
    size_t n = numbered_query(q, i, 0);
    struct cache_key k;
    assert_int_equal(cache_key_make(c, q, n, &k), 0);
    size_t len = 0;
    uint8_t *a = numbered_answer(i, &len);
    assert_int_equal(cache_insert(c, &k, a, len, now), 0);
    free(a);
}

static enum cache_result lookup_numbered(struct cache *c, unsigned i, uint64_t now)
{
    uint8_t q[QBUF];
    size_t n = numbered_query(q, i, (uint16_t)i);
    struct cache_key k;
    assert_int_equal(cache_key_make(c, q, n, &k), 0);
    struct dg_buf out = {0};
    enum cache_result r = cache_lookup(c, &k, q, n, now, false, &out, NULL);
    if (r != CACHE_MISS) {
        /* the right answer: its address encodes i */
        assert_true(out.len > 4);
        const uint8_t *ip = out.data + out.len - 4;
        assert_int_equal(ip[0], 10);
        assert_int_equal(((unsigned)ip[1] << 16) | ((unsigned)ip[2] << 8) | ip[3], i);
    }
    dg_buf_free(&out);
    return r;
}

static void test_eviction_bound_and_lru(void **state)
{
    struct cache *c = new_cache(set_small);
    struct cache_stats st;
    const unsigned hot = 8;
    for (unsigned i = 0; i < hot; i++)
        insert_numbered(c, i, T0);

    /* how many fit (the hot set is used all along) */
    unsigned i = hot;
    do {
        insert_numbered(c, i++, T0);
        cache_get_stats(c, &st);
        assert_true(st.bytes <= SMALL_BYTES);
        if (i % 10 == 0) {
            for (unsigned h = 0; h < hot; h++)
                assert_int_equal(lookup_numbered(c, h, T0), CACHE_HIT);
        }
    } while (st.evictions == 0);
    uint64_t fit = st.entries;
    assert_true(fit > 50);

    /* 100 times more, touching the hot set every 10 inserts */
    for (unsigned n = 0; n < 100 * fit; n++) {
        insert_numbered(c, i++, T0 + n);
        cache_get_stats(c, &st);
        assert_true(st.bytes <= SMALL_BYTES);
        assert_true(st.entries <= fit + 1);
        if (n % 10 == 0) {
            for (unsigned h = 0; h < hot; h++)
                assert_int_equal(lookup_numbered(c, h, T0 + n), CACHE_HIT);
        }
    }
    cache_get_stats(c, &st);
    assert_int_equal(st.inserts, i);
    assert_int_equal(st.evictions, st.inserts - st.entries);
    /* the most recent cold entries are there, the early ones gone */
    assert_int_equal(lookup_numbered(c, i - 1, T0 + i), CACHE_HIT);
    assert_int_equal(lookup_numbered(c, hot, T0 + i), CACHE_MISS);
    assert_int_equal(lookup_numbered(c, i - 100 * (unsigned)fit / 2, T0 + i), CACHE_MISS);
    cache_free(c);
}

static void test_replace(void **state)
{
    const char *an1[] = {"www.example.com. 300 IN A 192.0.2.1", NULL};
    const char *an2[] = {"www.example.com. 600 IN A 192.0.2.2", NULL};
    struct answer_spec s1 = {.qname = "www.example.com.", .qtype = LDNS_RR_TYPE_A, .an = an1};
    struct answer_spec s2 = {.qname = "www.example.com.", .qtype = LDNS_RR_TYPE_A, .an = an2};
    struct fx f;
    struct cache_stats st1, st2;
    struct cache_hit_info info;
    ldns_pkt *p = NULL;
    fx_init(&f, new_cache(NULL), "www.example.com", -1, &s1);
    assert_int_equal(fx_insert(&f, T0), 0);
    cache_get_stats(f.c, &st1);
    assert_int_equal(insert_spec(f.c, &f.k, &s2, T0 + 100 * SEC), 0);
    cache_get_stats(f.c, &st2);
    assert_int_equal(st2.entries, 1);
    assert_int_equal(st2.inserts, 2);
    assert_int_equal(st2.evictions, 0);
    assert_int_equal(st2.bytes, st1.bytes); /* same size: the old one was freed */

    /* the lookup serves the new one, aged from its own insertion */
    struct dg_buf out = {0};
    assert_int_equal(cache_lookup(f.c, &f.k, f.q, f.qlen, T0 + 110 * SEC, false, &out, &info),
                     CACHE_HIT);
    assert_int_equal(info.ttl, 590);
    assert_int_equal(ldns_wire2pkt(&p, out.data, out.len), LDNS_STATUS_OK);
    ldns_rr_list *l = ldns_pkt_answer(p);
    assert_int_equal(ldns_rr_list_rr_count(l), 1);
    assert_memory_equal(ldns_rdf_data(ldns_rr_rdf(ldns_rr_list_rr(l, 0), 0)), "\xc0\x00\x02\x02",
                        4);
    ldns_pkt_free(p);
    dg_buf_free(&out);
    fx_deinit(&f);
}

static void set_tiny(struct cache_config *cc)
{
    cc->nshards = 1;
    cc->max_bytes = 8192;
}

static void test_too_big_and_config(void **state)
{
    struct cache *c = new_cache(set_tiny);
    insert_numbered(c, 1, T0);

    /* 40 TXT records of 200 bytes: larger than the shard */
    char txt[40][256];
    const char *an[41];
    for (int i = 0; i < 40; i++) {
        char s[201];
        memset(s, 'a' + i % 26, 200);
        s[200] = 0;
        snprintf(txt[i], sizeof(txt[i]), "big.example.com. 300 IN TXT \"%s\"", s);
        an[i] = txt[i];
    }
    an[40] = NULL;
    struct answer_spec s = {.qname = "big.example.com.", .qtype = LDNS_RR_TYPE_TXT, .an = an};
    uint8_t q[QBUF];
    struct cache_key k;
    size_t n = make_query(q, 1, 0, "big.example.com", 16, -1);
    assert_int_equal(cache_key_make(c, q, n, &k), 0);
    assert_int_equal(insert_spec(c, &k, &s, T0), -E2BIG);
    /* nothing was evicted for it */
    assert_int_equal(lookup_numbered(c, 1, T0), CACHE_HIT);
    cache_free(c);

    struct cache_config cc;
    cache_config_defaults(&cc);
    assert_null(cache_new(NULL));
    cc.nshards = 3;
    assert_null(cache_new(&cc));
    cc.nshards = 1u << 20;
    assert_null(cache_new(&cc));
    cc.nshards = 64;
    cc.max_bytes = 64 * 1024; /* 1 KiB a shard: too small */
    assert_null(cache_new(&cc));
    cc.nshards = 0; /* 0 → 64 */
    cc.max_bytes = 64u << 20;
    c = cache_new(&cc);
    assert_non_null(c);
    struct cache_stats st;
    cache_get_stats(c, &st);
    assert_true(st.bytes > 64 * 64 && st.bytes <= cc.max_bytes);
    assert_int_equal(st.entries, 0);
    cache_free(c);
}

static void set_off(struct cache_config *cc)
{
    cc->max_bytes = 0;
}

/* max_bytes 0 (caching off, keys still made), the client's RD bit, SERVFAIL never stale. */
static void test_off_rd_servfail_not_stale(void **state)
{
    const char *an[] = {"www.example.com. 300 IN A 192.0.2.1", NULL};
    struct answer_spec s = {.qname = "www.example.com.", .qtype = LDNS_RR_TYPE_A, .an = an};
    struct fx f;
    struct cache_stats st;
    fx_init(&f, new_cache(set_off), "www.example.com", -1, &s);
    assert_true(f.k.len > 0);
    assert_int_equal(fx_insert(&f, T0), 1);
    assert_int_equal(fx_lookup(&f, T0, true, NULL, NULL), CACHE_MISS);
    cache_get_stats(f.c, &st);
    assert_int_equal(st.entries, 0);
    assert_int_equal(st.bytes, 0);
    fx_deinit(&f);

    /* stored with RD set (build_answer), served with the client's RD clear */
    fx_init(&f, new_cache(NULL), "www.example.com", -1, &s);
    assert_int_equal(fx_insert(&f, T0), 0);
    f.q[2] &= (uint8_t)~0x01;
    struct dg_buf out = {0};
    assert_int_equal(cache_lookup(f.c, &f.k, f.q, f.qlen, T0, false, &out, NULL), CACHE_HIT);
    assert_int_equal(out.data[2] & 0x01, 0);
    assert_int_equal(out.data[2] & ~0x01, f.ans[2] & ~0x01);
    dg_buf_free(&out);
    fx_deinit(&f);

    /* a SERVFAIL dies at expiry even with serve_stale on */
    struct answer_spec sf = {
        .rcode = LDNS_RCODE_SERVFAIL, .qname = "sf.example.com.", .qtype = LDNS_RR_TYPE_A};
    fx_init(&f, new_cache(NULL), "sf.example.com", -1, &sf);
    assert_int_equal(fx_insert(&f, T0), 0);
    assert_int_equal(fx_lookup(&f, T0 + 5 * SEC, true, NULL, NULL), CACHE_MISS);
    cache_get_stats(f.c, &st);
    assert_int_equal(st.entries, 0);
    fx_deinit(&f);
}

/* ---- threads ------------------------------------------------------------------------------ */

#define TH_KEYS    512
#define TH_THREADS 4
#define TH_BYTES   (48 * 1024)

struct th_shared {
    struct cache *c;
    uint8_t *ans[TH_KEYS];
    size_t alen[TH_KEYS];
    uint64_t deadline_ms;
    atomic_uint errors;
    atomic_ulong ops, hits;
};

struct th_arg {
    struct th_shared *sh;
    unsigned seed;
};

/* One max-age rule: for every kind of answer and every clamp, the first hit's TTL (what the
 * client's Cache-Control says when the cache served it) equals cache_answer_lifetime() of the
 * answer, and a cache of size 0 with the same knobs (caching off) gives the same number. */
static void set_off_min_60(struct cache_config *cc)
{
    set_off(cc);
    set_min_60(cc);
}

static void set_off_max_1000(struct cache_config *cc)
{
    set_off(cc);
    set_max_1000(cc);
}

static void set_off_maxneg_100(struct cache_config *cc)
{
    set_off(cc);
    set_maxneg_100(cc);
}

static void test_lifetime_cached_uncached_agree(void **state)
{
    static const char *const a300[] = {"www.example.com. 300 IN A 192.0.2.1", NULL};
    static const char *const a5[] = {"www.example.com. 5 IN A 192.0.2.1", NULL};
    static const char *const a_day[] = {"www.example.com. 86400 IN A 192.0.2.1", NULL};
    static const char *const soa[] = {
        "example.com. 3600 IN SOA ns.example.com. h.example.com. 1 7200 900 1209600 300", NULL};
    static const char *const ns[] = {"example.com. 20 IN NS ns.example.com.", NULL};
    const struct answer_spec specs[] = {
        {.qname = "www.example.com.", .qtype = LDNS_RR_TYPE_A, .an = a300},
        {.qname = "www.example.com.", .qtype = LDNS_RR_TYPE_A, .an = a5},
        {.qname = "www.example.com.", .qtype = LDNS_RR_TYPE_A, .an = a_day},
        {.rcode = LDNS_RCODE_NXDOMAIN,
         .qname = "www.example.com.",
         .qtype = LDNS_RR_TYPE_A,
         .ns = soa},
        {.rcode = LDNS_RCODE_NOERROR,
         .qname = "www.example.com.",
         .qtype = LDNS_RR_TYPE_A,
         .ns = soa},
        {.rcode = LDNS_RCODE_NXDOMAIN, .qname = "www.example.com.", .qtype = LDNS_RR_TYPE_A},
        {.rcode = LDNS_RCODE_NOERROR,
         .qname = "www.example.com.",
         .qtype = LDNS_RR_TYPE_A,
         .ns = ns},
        {.rcode = LDNS_RCODE_SERVFAIL, .qname = "www.example.com.", .qtype = LDNS_RR_TYPE_A},
        {.rcode = LDNS_RCODE_REFUSED, .qname = "www.example.com.", .qtype = LDNS_RR_TYPE_A},
    };
    void (*on[])(struct cache_config *) = {NULL, set_min_60, set_max_1000, set_maxneg_100};
    void (*off[])(struct cache_config *) = {set_off, set_off_min_60, set_off_max_1000,
                                            set_off_maxneg_100};
    unsigned cached = 0;
    for (size_t k = 0; k < sizeof(on) / sizeof(on[0]); k++) {
        for (size_t i = 0; i < sizeof(specs) / sizeof(specs[0]); i++) {
            struct fx f;
            fx_init(&f, new_cache(on[k]), "www.example.com", -1, &specs[i]);
            struct cache *c_off = new_cache(off[k]);
            uint32_t life = cache_answer_lifetime(f.c, f.ans, f.alen);
            assert_int_equal(cache_answer_lifetime(c_off, f.ans, f.alen), life);
            int rc = fx_insert(&f, T0);
            struct cache_hit_info info;
            if (life == 0) {
                assert_int_equal(rc, 1);
                assert_int_equal(fx_lookup(&f, T0, false, NULL, NULL), CACHE_MISS);
            } else {
                assert_int_equal(rc, 0);
                assert_int_equal(fx_lookup(&f, T0, false, NULL, &info), CACHE_HIT);
                assert_int_equal(info.ttl, life);
                cached++;
            }
            /* the cache that is off stores nothing, but knows the number */
            assert_int_equal(cache_insert(c_off, &f.k, f.ans, f.alen, T0), 1);
            cache_free(c_off);
            fx_deinit(&f);
        }
    }
    assert_int_equal(cached, 4 * 8); /* all but REFUSED */
    assert_int_equal(cache_answer_lifetime(NULL, NULL, 0), 0);

    /* the numbers themselves, defaults: nosoa 30 (bounded by the NS's 20), SERVFAIL 5 */
    struct cache *c = new_cache(set_off);
    uint32_t want[] = {300, 5, 86400, 300, 300, 30, 20, 5, 0};
    for (size_t i = 0; i < sizeof(specs) / sizeof(specs[0]); i++) {
        size_t len = 0;
        uint8_t *w = build_answer(&specs[i], &len);
        assert_int_equal(cache_answer_lifetime(c, w, len), want[i]);
        free(w);
    }
    cache_free(c);
}

static void *th_main(void *p)
{
    struct th_arg *a = p;
    struct th_shared *sh = a->sh;
    unsigned seed = a->seed;
    struct dg_buf out = {0};
    uint8_t q[QBUF];
    unsigned long ops = 0, hits = 0;
    while (dg_now_ms() < sh->deadline_ms) {
        for (int burst = 0; burst < 64; burst++, ops++) {
            unsigned i = (unsigned)rand_r(&seed) % TH_KEYS;
            uint16_t id = (uint16_t)rand_r(&seed);
            char name[64];
            snprintf(name, sizeof(name), "h%u.ExAmple.com", i);
            size_t n = put16(q, 0, id);
            q[n++] = 1;
            q[n++] = 0;
            n = put16(q, n, 1);
            n = put16(q, n, 0);
            n = put16(q, n, 0);
            n = put16(q, n, 0);
            n = put_name(q, n, name);
            n = put16(q, n, 1);
            n = put16(q, n, 1);
            struct cache_key k;
            if (cache_key_make(sh->c, q, n, &k) != 0) {
                atomic_fetch_add(&sh->errors, 1);
                continue;
            }
            uint64_t now = T0 + (ops % 4096) * 10;
            if (rand_r(&seed) % 2) {
                int rc = cache_insert(sh->c, &k, sh->ans[i], sh->alen[i], now);
                if (rc != 0)
                    atomic_fetch_add(&sh->errors, 1);
                continue;
            }
            out.len = 0;
            struct cache_hit_info info;
            enum cache_result r = cache_lookup(sh->c, &k, q, n, now, true, &out, &info);
            if (r == CACHE_MISS)
                continue;
            hits++;
            const uint8_t *ip = out.data + out.len - 4;
            if (out.len != sh->alen[i] || dg_get16(out.data) != id ||
                memcmp(out.data + DNS_HEADER_LEN, q + DNS_HEADER_LEN, n - DNS_HEADER_LEN) != 0 ||
                ip[0] != 10 || (((unsigned)ip[2] << 8) | ip[3]) != i)
                atomic_fetch_add(&sh->errors, 1);
        }
        struct cache_stats st;
        cache_get_stats(sh->c, &st);
        if (st.bytes > TH_BYTES)
            atomic_fetch_add(&sh->errors, 1);
    }
    dg_buf_free(&out);
    atomic_fetch_add(&sh->ops, ops);
    atomic_fetch_add(&sh->hits, hits);
    return NULL;
}

static void set_threads(struct cache_config *cc)
{
    cc->nshards = 4;
    cc->max_bytes = TH_BYTES;
}

static void test_threads(void **state)
{
    static struct th_shared sh;
    memset(&sh, 0, sizeof(sh));
    sh.c = new_cache(set_threads);
    for (unsigned i = 0; i < TH_KEYS; i++)
        sh.ans[i] = numbered_answer(i, &sh.alen[i]);
    sh.deadline_ms = dg_now_ms() + 1000;
    pthread_t t[TH_THREADS];
    struct th_arg args[TH_THREADS];
    for (unsigned i = 0; i < TH_THREADS; i++) {
        args[i].sh = &sh;
        args[i].seed = 12345u + i;
        assert_int_equal(pthread_create(&t[i], NULL, th_main, &args[i]), 0);
    }
    for (unsigned i = 0; i < TH_THREADS; i++)
        assert_int_equal(pthread_join(t[i], NULL), 0);

    assert_int_equal(atomic_load(&sh.errors), 0);
    struct cache_stats st;
    cache_get_stats(sh.c, &st);
    assert_true(st.bytes <= TH_BYTES);
    assert_true(st.evictions > 0); /* the keys do not all fit: eviction ran concurrently */
    assert_true(atomic_load(&sh.hits) > 0);
    assert_int_equal(st.hits + st.stale_hits, atomic_load(&sh.hits));
    print_message("threads: %lu ops, %lu hits, %llu evictions\n", atomic_load(&sh.ops),
                  atomic_load(&sh.hits), (unsigned long long)st.evictions);
    for (unsigned i = 0; i < TH_KEYS; i++)
        free(sh.ans[i]);
    cache_free(sh.c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_key_case_and_separation),
        cmocka_unit_test(test_key_invalid),
        cmocka_unit_test(test_hit_ages_every_ttl),
        cmocka_unit_test(test_negative_soa),
        cmocka_unit_test(test_negative_no_soa),
        cmocka_unit_test(test_servfail),
        cmocka_unit_test(test_servfail_keeps_servable_data),
        cmocka_unit_test(test_never_cached),
        cmocka_unit_test(test_pointer_into_rewritten_bytes),
        cmocka_unit_test(test_pointer_into_question_labels),
        cmocka_unit_test(test_clamps),
        cmocka_unit_test(test_set_policy),
        cmocka_unit_test(test_stale),
        cmocka_unit_test(test_prefetch_once),
        cmocka_unit_test(test_eviction_bound_and_lru),
        cmocka_unit_test(test_replace),
        cmocka_unit_test(test_too_big_and_config),
        cmocka_unit_test(test_off_rd_servfail_not_stale),
        cmocka_unit_test(test_lifetime_cached_uncached_agree),
        cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
