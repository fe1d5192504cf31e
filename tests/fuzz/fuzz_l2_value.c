/*
 * libFuzzer target: a value read back from the shared Redis cache (cache-redis), which anyone
 * with access to that Redis can write, through l2_value_decode() against a fixed query (the
 * value's question must match it) and against a query rebuilt from the value's own question
 * (so that the ageing and the checks behind the question match are reached too), at an "age"
 * taken from the input. Invariants: a value is either refused (out untouched) or appended whole
 * with the query's ID, still an acceptable answer to the query, with no TTL above the one
 * stored and a lifetime left within the one stored.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dohgate/dns.h"
#include "dohgate/dnswire.h"
#include "dohgate/l2cache.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* www.example.com A IN, ID 0x2a2a, RD */
static const uint8_t fixed_query[] = {0x2a, 0x2a, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00,
                                      0x00, 0x00, 0x00, 0x03, 'w',  'w',  'w',  0x07, 'e',
                                      'x',  'a',  'm',  'p',  'l',  'e',  0x03, 'c',  'o',
                                      'm',  0x00, 0x00, 0x01, 0x00, 0x01};

#define NOW 1700000000ull

static void check(const uint8_t *val, size_t vlen, const uint8_t *q, size_t qlen, uint64_t now)
{
    struct dg_buf out = {0};
    uint8_t pre[3] = {1, 2, 3};
    if (dg_buf_append(&out, pre, sizeof(pre)) != 0)
        return;
    uint32_t left = 0;
    int rc = l2_value_decode(val, vlen, q, qlen, now, &out, &left);
    if (rc != 0) {
        if (out.len != sizeof(pre))
            abort(); /* a refused value leaves nothing behind */
    } else {
        const uint8_t *a = out.data + sizeof(pre);
        size_t alen = out.len - sizeof(pre);
        if (alen != vlen - L2_HDR_LEN || memcmp(a, q, 2) != 0)
            abort();
        if (!dns_answer_matches(q, qlen, a, alen))
            abort();
        uint32_t stored =
            (uint32_t)val[12] << 24 | (uint32_t)val[13] << 16 | (uint32_t)val[14] << 8 | val[15];
        if (left == 0 || left > stored)
            abort();
        /* no TTL grew */
        struct dnswire_iter it, it0;
        struct dnswire_rr rr, rr0;
        dnswire_iter_init(&it, a, alen, 0);
        dnswire_iter_init(&it0, val + L2_HDR_LEN, alen, 0);
        while (dnswire_iter_next(&it, &rr) == 1 && dnswire_iter_next(&it0, &rr0) == 1) {
            if (rr.sec == DNSWIRE_QD || rr.type == DNSWIRE_TYPE_OPT)
                continue;
            uint32_t t = dg_get32(a + rr.ttl_off), t0 = dg_get32(val + L2_HDR_LEN + rr0.ttl_off);
            if (t0 > DNSWIRE_TTL_MAX)
                t0 = 0;
            if (t > t0)
                abort();
        }
    }
    dg_buf_free(&out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    /* the first byte: the age in seconds (up to 255, or the clock far behind: 255) */
    uint64_t now = NOW + (data[0] == 255 ? 0 : data[0]);
    if (data[0] == 255)
        now = NOW - 3600;
    const uint8_t *val = data + 1;
    size_t vlen = size - 1;
    check(val, vlen, fixed_query, sizeof(fixed_query), now);
    /* a query for the value's own question (QDCOUNT 1, the question as it sits) */
    if (vlen > L2_HDR_LEN + DNSWIRE_HEADER_LEN) {
        const uint8_t *w = val + L2_HDR_LEN;
        size_t wl = vlen - L2_HDR_LEN;
        size_t qe = dns_question_end(w, wl);
        if (qe > DNSWIRE_HEADER_LEN && qe <= 512) {
            uint8_t q[512];
            memcpy(q, w, qe);
            q[2] = 0x01;
            q[3] = 0;
            memset(q + 6, 0, 6);
            q[4] = 0;
            q[5] = 1;
            check(val, vlen, q, qe, now);
        }
    }
    return 0;
}
