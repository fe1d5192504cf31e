/*
 * libFuzzer target: bytes as they arrive from an upstream resolver (or a spoofer), through
 * everything the upstream and cache code asks of an answer: matching against a fixed query and
 * against a query rebuilt from the answer's own question, TTL for Cache-Control, TC, rcode.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dohgate/dns.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* www.example.com A IN, ID 0x2a2a, RD, with an EDNS OPT (DO set). */
static const uint8_t fixed_query[] = {
    0x2a, 0x2a, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x03, 'w',  'w',
    'w',  0x07, 'e',  'x',  'a',  'm',  'p',  'l',  'e',  0x03, 'c',  'o',  'm',  0x00, 0x00,
    0x01, 0x00, 0x01, 0x00, 0x00, 0x29, 0x04, 0xd0, 0x00, 0x00, 0x80, 0x00, 0x00, 0x00,
};

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

    long ttl = dns_answer_cache_ttl(data, size);
    if (ttl < -1 || ttl > 0x7fffffffL)
        abort();
    /* The wire walk that replaced ldns on the hot path accepts everything ldns parses (a TTL
     * needs a full ldns parse), and a message it accepts never matches when its question
     * does not parse. */
    bool sound = dns_wire_check(data, size);
    if (ttl >= 0 && !sound)
        abort();
    if (fixed && !sound)
        abort();
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
