/*
 * libFuzzer target: bytes as they arrive from an upstream resolver (or a spoofer), through
 * everything the upstream and cache code asks of an answer: matching against a fixed query and
 * against a query rebuilt from the answer's own question, the dnswire record iterator (plain and
 * checked walks side by side), the lifetime rule (Cache-Control and cache), ECS removal, TC,
 * rcode.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dohgate/dns.h"
#include "dohgate/dnswire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* www.example.com A IN, ID 0x2a2a, RD, with an EDNS OPT (DO set). */
static const uint8_t fixed_query[] = {
    0x2a, 0x2a, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x03, 'w',  'w',
    'w',  0x07, 'e',  'x',  'a',  'm',  'p',  'l',  'e',  0x03, 'c',  'o',  'm',  0x00, 0x00,
    0x01, 0x00, 0x01, 0x00, 0x00, 0x29, 0x04, 0xd0, 0x00, 0x00, 0x80, 0x00, 0x00, 0x00,
};

static bool same_rr(const struct dnswire_rr *a, const struct dnswire_rr *b)
{
    return a->sec == b->sec && a->name_off == b->name_off && a->name_len == b->name_len &&
           a->type == b->type && a->rclass == b->rclass && a->ttl_off == b->ttl_off &&
           a->rdata_off == b->rdata_off && a->rdlen == b->rdlen;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* the query log's summary of any answer: a string, never a crash or overrun */
    char summary[64];
    if (dns_summary(data, size, summary, sizeof(summary)) == 0 && !memchr(summary, '\0', 64))
        abort();

    bool fixed = dns_answer_matches(fixed_query, sizeof(fixed_query), data, size);
    if (fixed && (size < sizeof(fixed_query) - 11 || dns_question_end(data, size) != 33))
        abort();

    /* a query made of the answer's own header ID and question */
    size_t qend = dns_question_end(data, size);
    if (qend) {
        if (qend > size || qend < DNS_HEADER_LEN + 5)
            abort();
        uint8_t *q = malloc(qend);
        if (!q)
            abort();
        memcpy(q, data, qend);
        q[2] = 0x01; /* RD */
        q[3] = 0;
        memset(q + 6, 0, 6); /* AN, NS, AR counts */
        bool own = dns_answer_matches(q, qend, data, size);
        /* a match needs QR and an ID the query had */
        if (own && !(data[2] & 0x80))
            abort();
        if (dns_query_check(q, qend, NULL) == DNS_QUERY_MALFORMED)
            abort(); /* a question dns_question_end() accepts is a well-formed query */
        free(q);
    } else if (fixed) {
        abort();
    }

    /* The record iterator, both ways: bounded offsets, a sticky end; a checked walk that
     * succeeds sees the records a plain walk sees; dns_wire_check() is the checked walk. */
    struct dnswire_iter it[2];
    struct dnswire_rr rr[2];
    int r[2];
    size_t nrec = 0;
    dnswire_iter_init(&it[0], data, size, 0);
    dnswire_iter_init(&it[1], data, size, DNSWIRE_CHECK);
    for (;;) {
        for (int i = 0; i < 2; i++) {
            r[i] = dnswire_iter_next(&it[i], &rr[i]);
            if (r[i] == 1 &&
                (rr[i].name_off + rr[i].name_len > size || rr[i].rdata_off + rr[i].rdlen > size ||
                 dnswire_iter_offset(&it[i]) > size || rr[i].name_len == 0))
                abort();
            if (r[i] != 1 && r[i] != 0 && r[i] != -EBADMSG)
                abort();
        }
        if (r[1] == 1 && (r[0] != 1 || !same_rr(&rr[0], &rr[1])))
            abort();
        if (r[1] == 0 && r[0] != 0)
            abort();
        if (r[0] != 1 || r[1] != 1 || ++nrec > 4u * 65535u)
            break;
    }
    for (int i = 0; i < 2; i++) {
        if (r[i] == 1) {
            while ((r[i] = dnswire_iter_next(&it[i], &rr[i])) == 1)
                if (++nrec > 8u * 65535u)
                    abort();
        }
        struct dnswire_rr again;
        if (dnswire_iter_next(&it[i], &again) != r[i])
            abort();
    }
    bool sound = dns_wire_check(data, size);
    if (sound != (r[1] == 0))
        abort();

    /* The lifetime rule: bounded by the knobs; with DNSWIRE_CHECK cacheable only when sound;
     * on a sound message both ways agree. */
    static const struct dnswire_ttl_policy pol = {0, 86400, 3600, 30, 5};
    struct dnswire_answer_info info[2];
    uint32_t life = dnswire_answer_lifetime(data, size, 0, &pol, &info[0]);
    uint32_t life_checked = dnswire_answer_lifetime(data, size, DNSWIRE_CHECK, &pol, &info[1]);
    if (life > 86400 || (info[0].kind == DNSWIRE_UNCACHEABLE && life != 0))
        abort();
    if (info[1].kind != DNSWIRE_UNCACHEABLE && !sound)
        abort();
    if (sound && (life != life_checked || info[0].kind != info[1].kind))
        abort();
    if (info[0].kind != DNSWIRE_UNCACHEABLE && (r[0] != 0 || info[0].end > size))
        abort();
    if (fixed && !sound)
        abort();

    /* ECS removal on a copy never grows the message, and leaves it walkable */
    if (size <= 4096) {
        uint8_t *m = malloc(size ? size : 1);
        if (!m)
            abort();
        if (size)
            memcpy(m, data, size);
        size_t mlen = size;
        int sr = dns_query_strip_ecs(m, &mlen);
        if (sr < -EINVAL || sr > 1 || mlen > size || (sr == 0 && mlen != size))
            abort();
        if (sr >= 0) {
            struct dnswire_iter e;
            struct dnswire_rr er;
            int x;
            dnswire_iter_init(&e, m, mlen, 0);
            while ((x = dnswire_iter_next(&e, &er)) == 1)
                ;
            if (x != 0)
                abort();
        }
        free(m);
    }
    bool tc = dns_is_truncated(data, size);
    int rcode = dns_rcode(data, size);
    if (size < DNS_HEADER_LEN ? (tc || rcode != -1) : (rcode < 0 || rcode > 15))
        abort();

    /* the upstream code answers SERVFAIL to the client with what it has */
    struct dg_buf out = {0};
    int rc = dns_make_error_answer(data, size, DNS_RCODE_SERVFAIL, &out);
    if (rc != (size < DNS_HEADER_LEN ? -EINVAL : 0))
        abort();
    dg_buf_free(&out);
    return 0;
}
