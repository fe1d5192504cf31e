/**
 * @file dns.h
 * DNS message helpers: query validation, upstream answer checks, ECS removal, EDNS padding
 * (RFC 7830, RFC 8467), synthesized error answers, the query log's summary. Records are walked
 * with the iterator of dnswire.h; how long an answer lives (Cache-Control, cache) is
 * dnswire_answer_lifetime()'s rule, via cache_answer_lifetime(). No I/O, no HTTP, no global
 * state: safe from any thread.
 */
#ifndef DOHGATE_DNS_H
#define DOHGATE_DNS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dohgate/util.h"

#define DNS_HEADER_LEN 12
#define DNS_MAX_MSG    65535

#define DNS_RCODE_NOERROR  0
#define DNS_RCODE_FORMERR  1
#define DNS_RCODE_SERVFAIL 2
#define DNS_RCODE_NXDOMAIN 3
#define DNS_RCODE_NOTIMP   4
#define DNS_RCODE_REFUSED  5

/** Outcome of checking a client's query. */
enum dns_query_verdict {
    DNS_QUERY_OK = 0,    /**< forward it */
    DNS_QUERY_MALFORMED, /**< not a DNS query at all: HTTP 400 (short, QR=1, QDCOUNT!=1,
                              question or message does not parse) */
    DNS_QUERY_FORMERR,   /**< parses, but breaks a rule (records in answer/authority): answer
                              FORMERR */
    DNS_QUERY_NOTIMP,    /**< opcode other than QUERY: answer NOTIMP */
    DNS_QUERY_REFUSED,   /**< something we refuse to serve (AXFR, IXFR): answer REFUSED */
};

/**
 * Check a client query (already decoded from the DoH request).
 * @param why  receives a short static text for MALFORMED (for the HTTP 400 body); may be NULL.
 */
enum dns_query_verdict dns_query_check(const uint8_t *q, size_t len, const char **why);

/**
 * Build an answer to query @p q with rcode @p rcode: same ID, QR=1, RD copied, RA=1, question
 * echoed (if it parses), no records. Used for FORMERR/NOTIMP/REFUSED/SERVFAIL.
 * @return 0, -EINVAL (q shorter than a header), -ENOMEM. On error @p out is unchanged.
 */
int dns_make_error_answer(const uint8_t *q, size_t qlen, int rcode, struct dg_buf *out);

/**
 * Is @p ans an acceptable answer to @p query? QR=1, same ID, same question (name compared
 * case-insensitively, type and class equal), and the whole message is well formed
 * (dns_wire_check()).
 */
bool dns_answer_matches(const uint8_t *query, size_t qlen, const uint8_t *ans, size_t alen);

/**
 * Is @p wire structurally sound without parsing rdata fields? Every record the header counts
 * is there: names well formed (compression pointers within the message and at most
 * DNSWIRE_MAX_PTR_HOPS hops, names in rdata of the types that carry them included), fixed
 * fields and RDLENGTH within the message: a dnswire_iter walk with DNSWIRE_CHECK that ends
 * without error. Trailing bytes are allowed, as in ldns. No allocation.
 */
bool dns_wire_check(const uint8_t *wire, size_t len);

/** TC bit of a message of at least 12 bytes. */
bool dns_is_truncated(const uint8_t *msg, size_t len);
/** RCODE (low 4 bits; extended rcode ignored). */
int dns_rcode(const uint8_t *msg, size_t len);

#define DNS_EDNS_ECS       8  /**< RFC 7871 Client Subnet option code */
#define DNS_EDNS_KEEPALIVE 11 /**< RFC 7828 edns-tcp-keepalive option code */
#define DNS_EDNS_PADDING   12 /**< RFC 7830 option code */

/**
 * Remove the options of the client's own hop from the OPT record of a query, in place, before it
 * is forwarded: Client Subnet (RFC 7871: it reveals the client's network to the upstream and
 * would split the cache), Padding and edns-tcp-keepalive (about the client's connection; the
 * upstream leg sets its own). Refused, like dns_pad(), when a name points into the bytes that
 * would move (the forwarded question must be the one the cache is keyed by).
 * @return 1 if something was removed (*len updated), 0 if nothing was, -EINVAL if the message
 *         does not parse or cannot be edited safely (unchanged: do not forward it then).
 */
int dns_query_strip_hop_options(uint8_t *msg, size_t *len);

#define DNS_PAD_BLOCK_QUERY    128 /**< RFC 8467 §4.1: block length for queries */
#define DNS_PAD_BLOCK_RESPONSE 468 /**< RFC 8467 §4.1: block length for responses */

/**
 * Pad @p msg with one EDNS(0) Padding option (RFC 7830) in its OPT record so that its length is
 * a multiple of @p block (RFC 8467 §4.1 Block-Length Padding: 128 for queries, 468 for
 * responses). Padding options already there are replaced, not stacked; the new one goes last
 * in the OPT rdata, its bytes are zero. A message without an OPT record is left alone: EDNS is
 * not invented for a peer that did not use it. When the padded length would exceed @p cap or
 * DNS_MAX_MSG, the message is padded up to that limit instead (or, with no room for even an
 * empty option, left as it is): padding never costs the answer. The walk is bounded (the
 * dnswire.h iterator; header counts are not trusted); nothing is edited unless the whole
 * message and its OPT options parse and no compression pointer points into the OPT's rdata or
 * past it (moving those bytes would change the name such a pointer makes).
 * @param msg   the message, in a buffer of @p cap bytes.
 * @param len   in: its length (at most @p cap); out: the padded length.
 * @return 0 (length now a multiple of @p block), 1 (padded short of that, or not at all, for
 *         lack of room; *len updated), -ENOENT (no OPT record; unchanged), -EBADMSG (malformed
 *         message or OPT options, more than one OPT, a pointer at or past the OPT's rdata:
 *         unchanged), -EINVAL (@p block 0 or over
 *         DNS_MAX_MSG, *len over @p cap, NULL arguments).
 */
int dns_pad(uint8_t *msg, size_t *len, size_t cap, unsigned block);

/**
 * Give @p msg (a query without EDNS, in a buffer of @p cap bytes) an empty OPT record (version
 * 0, no DO, @p udp_size) at its end. @return 0, -EEXIST (it has one), -ENOTSUP (it is signed:
 * TSIG or SIG(0) must stay last), -EBADMSG (malformed, or bytes after its last record), -ENOSPC,
 * -EINVAL. (The answer's extended RCODE bits go with its OPT in dns_remove_opt(): a client
 * without EDNS cannot receive them anyway.)
 */
int dns_add_opt(uint8_t *msg, size_t *len, size_t cap, uint16_t udp_size);

/**
 * Remove the OPT record of @p msg (an answer to a query that got one from dns_add_opt()),
 * refusing, like dns_pad(), when a compression pointer reaches the bytes that would move.
 * @return 1 (removed), 0 (none there), -EBADMSG (malformed, several OPTs, such a pointer),
 *         -EINVAL.
 */
int dns_remove_opt(uint8_t *msg, size_t *len);

/**
 * Append EDNS option @p code with @p dlen bytes of @p data to the OPT record of @p msg (a
 * buffer of @p cap bytes), with the same checks as dns_pad().
 * @return 0, -ENOENT (no OPT), -EBADMSG (malformed, several OPTs, a pointer into the OPT),
 *         -ENOSPC (no room within @p cap / DNS_MAX_MSG), -EINVAL.
 */
int dns_add_option(uint8_t *msg, size_t *len, size_t cap, uint16_t code, const uint8_t *data,
                   size_t dlen);

/**
 * Does the OPT record of @p msg carry a Padding option (code 12)? false for a malformed
 * message or malformed OPT options. Cheaper than the editing functions (names are not
 * followed): a true here means dns_strip_padding() removes something unless it finds a
 * compression pointer it cannot move past. Bounded walk, no allocation.
 */
bool dns_has_padding(const uint8_t *msg, size_t len);

/**
 * Remove every Padding option from the OPT record(s) of @p msg, in place, leaving the other
 * options as they were. Answers from upstreams that pad are stored unpadded: padding is for the
 * wire, the cache never holds it.
 * @return 1 (something removed; *len updated), 0 (nothing to remove), -EBADMSG (malformed
 *         message or OPT options, or padding to remove behind a compression pointer that
 *         points at or past the first OPT's rdata: unchanged), -EINVAL (NULL arguments).
 */
int dns_strip_padding(uint8_t *msg, size_t *len);

/**
 * The UDP payload size the sender of @p q can receive (RFC 6891 §6.2.5): its OPT's value, at
 * least 512; 512 without an OPT (RFC 1035). For a query that passed dns_query_check().
 */
size_t dns_udp_payload_size(const uint8_t *q, size_t qlen);

/**
 * Make @p msg fit in @p max bytes for UDP (RFC 1035 §4.2.1, RFC 6891 §7): when it is longer,
 * keep the header and question, drop every record except the OPT (kept with its options when
 * they fit, else without them), set TC=1. The client retries over TCP.
 * @return 1 (truncated), 0 (it fitted), -EBADMSG (does not parse: unchanged), -EINVAL.
 */
int dns_truncate(uint8_t *msg, size_t *len, size_t max);

/**
 * An upstream answer's options that belong to the hop they came over, not to the answer:
 * Padding (RFC 8467) and edns-tcp-keepalive (RFC 7828: the upstream's idle timeout for our
 * connection; it must never reach a client, and never a UDP one). dns_answer_has_hop_options()
 * is the cheap check (no name followed); dns_answer_strip_hop_options() removes them in place
 * with dns_strip_padding()'s safety rules and results (1, 0, -EBADMSG, -EINVAL).
 */
bool dns_answer_has_hop_options(const uint8_t *msg, size_t len);
int dns_answer_strip_hop_options(uint8_t *msg, size_t *len);

/** Byte offset just past the question section (12 + qname + 4), or 0 if it does not parse. */
size_t dns_question_end(const uint8_t *msg, size_t len);

/** The question's name (uncompressed wire form, at offset 12) and its length in @p nlen, or
 * NULL when the question does not parse. */
const uint8_t *dns_question_name(const uint8_t *msg, size_t len, size_t *nlen);

/** The question's type of a query that passed dns_query_check() (0 if it has none). */
uint16_t dns_qtype(const uint8_t *q, size_t qlen);

/**
 * RFC 8482 §4.2: the answer to an ANY query without asking anybody: NOERROR with one synthesized
 * HINFO record ("RFC8482", "") for the name, TTL @p ttl; ID, RD, CD and OPT as in
 * dns_make_error_answer(). Appends to @p out. @return 0, -EINVAL, -ENOMEM.
 */
int dns_make_any_answer(const uint8_t *q, size_t qlen, uint32_t ttl, struct dg_buf *out);

/** One record of an answer dohgate makes itself (dns_make_answer()). */
struct dns_rr_out {
    const uint8_t *owner; /**< uncompressed wire name; NULL: the question's name (a pointer) */
    size_t owner_len;
    uint16_t type, rclass;
    uint32_t ttl;
    const uint8_t *rdata; /**< wire rdata, uncompressed */
    uint16_t rdlen;
};

/** Extended DNS Error codes dohgate sends (RFC 8914 §4). */
#define DNS_EDE_BLOCKED  15
#define DNS_EDE_FILTERED 17

/**
 * An answer of dohgate's own to @p q (a query that passed dns_query_check()): the query's ID,
 * RD and CD, QR and RA set, AA when @p aa, @p rcode; the question copied as asked; @p n_an
 * answer and @p n_ns authority records; an OPT when the query had one (as
 * dns_make_error_answer() does), carrying an Extended DNS Error option (RFC 8914) when
 * @p ede_code >= 0 (@p ede_text, UTF-8 without NUL, may be NULL). The one builder for every
 * synthesized answer (errors, RFC 8482 ANY, local data, blocked names).
 * @return 0, -EINVAL (q malformed, an answer over 65535 bytes), -ENOMEM; @p out unchanged on
 *         error.
 */
int dns_make_answer(const uint8_t *q, size_t qlen, int rcode, bool aa, const struct dns_rr_out *an,
                    size_t n_an, const struct dns_rr_out *ns, size_t n_ns, int ede_code,
                    const char *ede_text, struct dg_buf *out);

/**
 * "www.example.com. A NOERROR": the question and rcode of @p msg in presentation form (ldns),
 * for the query log. @return 0, or -1 (does not parse, or OOM) with "?" in @p out.
 */
int dns_summary(const uint8_t *msg, size_t len, char *out, size_t outlen);
#endif
