/*
 * libFuzzer target: bytes as they arrive from an upstream resolver (or a spoofer), through
 * everything the upstream and cache code asks of an answer: matching against a fixed query and
 * against a query rebuilt from the answer's own question, the dnswire record iterator (plain and
 * checked walks side by side), the lifetime rule (Cache-Control and cache), ECS removal, TC,
 * rcode, and EDNS padding: the strip every upstream answer goes through before the cache, and
 * the block padding of client answers and upstream queries (raw wire bytes reach both here,
 * which the DoH decoder in front of fuzz_doh_request would only let through encoded).
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

/* walks to the end without error (a plain walk) */
static bool walks(const uint8_t *m, size_t len)
{
    struct dnswire_iter it;
    struct dnswire_rr rr;
    int r;
    dnswire_iter_init(&it, m, len, 0);
    while ((r = dnswire_iter_next(&it, &rr)) == 1)
        ;
    return r == 0;
}

/*
 * dns_strip_padding(), dns_has_padding(), dns_pad() on copies of @p data: an error leaves the
 * bytes alone; a strip removes what has_padding saw and nothing else; padding lands on a block
 * multiple within the cap (or short of it, within the cap), stays walkable, keeps a sound
 * message sound and an accepted query accepted, and strip(pad(m)) == strip(m): the padding
 * option is the only thing dns_pad() changes.
 */
static void check_padding(const uint8_t *data, size_t size)
{
    if (size == 0 || size > 8192)
        return;
    bool has = dns_has_padding(data, size);
    uint8_t *s = malloc(size);
    if (!s)
        abort();
    memcpy(s, data, size);
    size_t slen = size;
    int sr = dns_strip_padding(s, &slen);
    if (sr != 0 && sr != 1 && sr != -EBADMSG)
        abort();
    /* has_padding does not follow names: a strip may still refuse an unsafe edit */
    if ((sr == 1 && !has) || (sr == 0 && has))
        abort();
    if (sr != 1 ? (slen != size || memcmp(s, data, size) != 0)
                : (slen >= size || dns_has_padding(s, slen) || !walks(s, slen)))
        abort();

    /* block 468 (answers) or 128 (queries); a cap of the whole block, or a tight one */
    unsigned block = (data[0] & 1) ? DNS_PAD_BLOCK_RESPONSE : DNS_PAD_BLOCK_QUERY;
    size_t cap = (data[0] & 2) ? size + 4 + block : size + (data[1 % size] & 7u);
    uint8_t *m = malloc(cap);
    if (!m)
        abort();
    memcpy(m, data, size);
    size_t mlen = size;
    int pr = dns_pad(m, &mlen, cap, block);
    if (pr == -ENOENT || pr == -EBADMSG) {
        if (mlen != size || memcmp(m, data, size) != 0)
            abort();
    } else if (pr == 0 || pr == 1) {
        if (mlen > cap || mlen > DNS_MAX_MSG || (pr == 0 && mlen % block != 0))
            abort();
        if (!walks(m, mlen) || sr < 0)
            abort(); /* the scan that padded is the one that strips */
        if (mlen != size && !dns_has_padding(m, mlen))
            abort();
        if (dns_wire_check(data, size) && !dns_wire_check(m, mlen))
            abort();
        if (dns_query_check(data, size, NULL) == DNS_QUERY_OK &&
            dns_query_check(m, mlen, NULL) != DNS_QUERY_OK)
            abort();
        size_t plen = mlen;
        if (dns_strip_padding(m, &plen) < 0 || plen != slen || memcmp(m, s, slen) != 0)
            abort();
    } else {
        abort();
    }
    free(m);
    free(s);
}

/* dns_add_opt() then dns_remove_opt() gives the input back; dns_add_option() keeps the message
 * walkable; each refusal leaves the bytes alone. */
static void check_opt_edits(const uint8_t *data, size_t size)
{
    if (size == 0 || size > 8192)
        return;
    size_t cap = size + 32;
    uint8_t *m = malloc(cap);
    if (!m)
        abort();
    memcpy(m, data, size);
    size_t len = size;
    int r = dns_add_opt(m, &len, cap, 1232);
    if (r == 0) {
        if (len != size + 11 || !walks(m, len))
            abort();
        size_t l2 = len;
        if (dns_add_option(m, &l2, cap, 11, NULL, 0) == 0 && (l2 != len + 4 || !walks(m, l2)))
            abort();
        /* appending is always safe; taking out may be refused (a name in rdata that points
         * at or past the OPT, or is malformed): then nothing moved */
        size_t l3 = l2;
        int rr = dns_remove_opt(m, &l3);
        if (rr == 1 ? (l3 != size || memcmp(m, data, size) != 0) : (rr != -EBADMSG || l3 != l2))
            abort();
    } else if (len != size || memcmp(m, data, size) != 0) {
        abort();
    }
    memcpy(m, data, size);
    len = size;
    r = dns_remove_opt(m, &len);
    if (r == 1 ? (len >= size || !walks(m, len)) : (len != size || memcmp(m, data, size) != 0))
        abort();
    free(m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check_padding(data, size);
    check_opt_edits(data, size);

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
        int sr = dns_query_strip_hop_options(m, &mlen);
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
