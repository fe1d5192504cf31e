/**
 * @file dnswire.h
 * The one place that walks DNS messages record by record, and the one place that decides how
 * long an answer lives (RFC 2308). No I/O, no allocation, no global state: safe from any thread.
 *
 * The iterator. dnswire_iter_next() returns the records of a wire-format message in order: the
 * question section, then answer, authority and additional, with where each field sits (owner
 * name, type, class, TTL, rdata). It is bounded by construction: every offset is checked against
 * the message before it is read, a header count larger than the records present (a count that
 * lies, a truncated message) ends the walk in an error, and without DNSWIRE_CHECK compression
 * pointers are never followed (a name ends at its first pointer, so the walk is linear). With
 * DNSWIRE_CHECK it also follows every owner name and every domain name inside rdata through its
 * pointers (at most DNSWIRE_MAX_PTR_HOPS hops, 255 octets): a pointer loop, a pointer out of the
 * message or a name in rdata running past RDLENGTH is an error. An error is sticky. Trailing
 * bytes after the last counted record are not looked at. Users: the query and answer checks,
 * ECS removal and OPT lookup (dns.c), cache keys, the cache's TTL rewrite at insert (cache.c).
 *
 * The lifetime rule (dnswire_answer_lifetime()), the same for the cache and for the
 * Cache-Control max-age of an answer the cache does not keep (cache-size 0, too large, ...):
 *  - QR clear, opcode other than QUERY, TC set, malformed, an OPT outside the additional section
 *    or more than one, an extended rcode, an rcode other than NOERROR/NXDOMAIN/SERVFAIL:
 *    uncacheable, lifetime 0;
 *  - positive (NOERROR with answer records): smallest TTL of answer + authority, clamped to
 *    [min_ttl, max_ttl];
 *  - negative (NXDOMAIN, or NOERROR without answer records): min(SOA TTL, SOA MINIMUM) of the
 *    authority's SOA (RFC 2308 §3, §5), or nosoa_negative_ttl when there is no SOA (RFC 2308 §5
 *    says "should not be cached"; a short fixed lifetime is what resolvers do, and it is the same
 *    number whether or not we cache), never more than the smallest TTL of answer + authority (an
 *    NXDOMAIN after a CNAME does not outlive the CNAME), clamped to [min_ttl, max_negative_ttl];
 *  - SERVFAIL: servfail_ttl, at most DNSWIRE_SERVFAIL_TTL_MAX (RFC 2308 §7.1);
 *  - a TTL with the top bit set counts as 0 (RFC 2181 §8).
 * dnswire_record_ttl() is the matching per-record rule: the TTL a record is served with at age 0,
 * so that the TTLs a client sees agree with the lifetime.
 */
#ifndef DOHGATE_DNSWIRE_H
#define DOHGATE_DNSWIRE_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dohgate/util.h"

#define DNSWIRE_HEADER_LEN       12
#define DNSWIRE_MAX_MSG          65535
#define DNSWIRE_MAX_NAME         255 /**< wire octets, root label included (RFC 1035 §2.3.4) */
#define DNSWIRE_TTL_MAX          0x7fffffffu /**< RFC 2181 §8: above this a TTL means 0 */
#define DNSWIRE_SERVFAIL_TTL_MAX 30u
/**
 * Compression pointer hops allowed while following one name. A name has at most 127 labels and
 * a sane encoder never points at another pointer, so 128 is generous. ldns allows 65535: one
 * 64 KiB message holding a long pointer chain and thousands of names pointing into it is a cheap
 * CPU attack.
 */
#define DNSWIRE_MAX_PTR_HOPS 128

#define DNSWIRE_TYPE_SOA 6
#define DNSWIRE_TYPE_OPT 41

/* Header flags (RFC 1035 §4.1.1), bytes 2 and 3 of a message: one set for every module. */
#define DNS_F2_QR     0x80u
#define DNS_F2_OPCODE 0x78u
#define DNS_F2_AA     0x04u
#define DNS_F2_TC     0x02u
#define DNS_F2_RD     0x01u
#define DNS_F3_RA     0x80u
#define DNS_F3_AD     0x20u
#define DNS_F3_CD     0x10u
#define DNS_F3_RCODE  0x0fu

enum dnswire_section {
    DNSWIRE_QD = 0, /**< question: no TTL, no rdata */
    DNSWIRE_AN,
    DNSWIRE_NS,
    DNSWIRE_AR,
};

/** One record as it sits in the message; offsets are from the start of the message. */
struct dnswire_rr {
    enum dnswire_section sec;
    size_t name_off; /**< owner name */
    size_t name_len; /**< its octets as they sit (a compression pointer ends it) */
    uint16_t type;
    uint16_t rclass;  /**< for OPT: the UDP payload size */
    size_t ttl_off;   /**< the 4-byte TTL field (for OPT: extended rcode, version, flags); 0 in
                           the question section */
    size_t rdata_off; /**< 0 in the question section */
    size_t rdlen;     /**< 0 in the question section */
};

/** Iterator state: fields are private, read them only through the functions below. */
struct dnswire_iter {
    const uint8_t *msg;
    size_t len;
    size_t pos;    /* where the next record starts */
    unsigned left; /* records left in section sec */
    uint8_t sec;
    uint8_t flags;
    bool failed;
};

/** Follow names through their compression pointers, and check the names inside rdata. */
#define DNSWIRE_CHECK 1u

/**
 * Walk a possibly compressed name at @p off through its pointers (at most DNSWIRE_MAX_PTR_HOPS,
 * 255 octets in all, obsolete label types refused).
 * @param end  receives the offset just past the name where it sits (a pointer ends it); may be
 *             NULL.
 * @return true when the name is well formed.
 */
bool dnswire_name_check(const uint8_t *msg, size_t len, size_t off, size_t *end);

/**
 * Are the domain names inside the rdata of @p rr well formed (dnswire_name_check()) and within
 * its RDLENGTH? The DNSWIRE_CHECK part of dnswire_iter_next().
 */
bool dnswire_rdata_check(const uint8_t *msg, size_t len, const struct dnswire_rr *rr);

/*
 * The iterator is inline, forced: it runs several times for every query, cache hits included,
 * and a call per record (with the flags unknown to the compiler) cost a sixth of the hit path.
 */
#define DNSWIRE_INLINE static inline __attribute__((always_inline))

/**
 * Offset just past the name at @p off as it sits (a compression pointer ends it and is not
 * followed, so the walk is linear), or 0 if it is malformed or does not end before @p end.
 */
DNSWIRE_INLINE size_t dnswire_name_skip(const uint8_t *msg, size_t end, size_t off)
{
    size_t wire_len = 0;
    for (;;) {
        if (off >= end)
            return 0;
        uint8_t lab = msg[off];
        if ((lab & 0xc0u) == 0xc0u)
            return end - off < 2 ? 0 : off + 2;
        if (lab & 0xc0u)
            return 0; /* obsolete extended label types */
        wire_len += (size_t)lab + 1;
        if (wire_len > DNSWIRE_MAX_NAME)
            return 0;
        off += (size_t)lab + 1;
        if (lab == 0)
            return off;
    }
}

/**
 * Start a walk of @p msg at its question section. A message shorter than a header or longer
 * than DNSWIRE_MAX_MSG makes the first dnswire_iter_next() fail.
 * @param flags  0 or DNSWIRE_CHECK.
 */
DNSWIRE_INLINE void dnswire_iter_init(struct dnswire_iter *it, const uint8_t *msg, size_t len,
                                      unsigned flags)
{
    it->msg = msg;
    it->len = len;
    it->pos = DNSWIRE_HEADER_LEN;
    it->sec = DNSWIRE_QD;
    it->flags = (uint8_t)flags;
    it->failed = !msg || len < DNSWIRE_HEADER_LEN || len > DNSWIRE_MAX_MSG;
    it->left = it->failed ? 0 : dg_get16(msg + 4);
}

/**
 * Start a walk at the answer section, the caller having walked the question section already
 * (@p qend: the offset just past it, e.g. from dns_question_end()).
 */
DNSWIRE_INLINE void dnswire_iter_init_answer(struct dnswire_iter *it, const uint8_t *msg,
                                             size_t len, unsigned flags, size_t qend)
{
    dnswire_iter_init(it, msg, len, flags);
    if (it->failed)
        return;
    if (qend < DNSWIRE_HEADER_LEN || qend > len) {
        it->failed = true;
        return;
    }
    it->pos = qend;
    it->sec = DNSWIRE_AN;
    it->left = dg_get16(msg + 6);
}

/**
 * The next record.
 * @return 1 (a record in @p rr), 0 (no more records: every counted record was there), or
 *         -EBADMSG (malformed; every later call returns it too).
 */
DNSWIRE_INLINE int dnswire_iter_next(struct dnswire_iter *it, struct dnswire_rr *rr)
{
    if (it->failed)
        return -EBADMSG;
    while (it->left == 0) {
        if (it->sec >= DNSWIRE_AR)
            return 0;
        it->sec++;
        it->left = dg_get16(it->msg + 4 + 2 * it->sec);
    }
    const uint8_t *msg = it->msg;
    size_t len = it->len;
    size_t pos = it->pos;
    size_t p;
    if (it->flags & DNSWIRE_CHECK) {
        if (!dnswire_name_check(msg, len, pos, &p))
            goto fail;
    } else {
        p = dnswire_name_skip(msg, len, pos);
        if (p == 0)
            goto fail;
    }
    rr->sec = (enum dnswire_section)it->sec;
    rr->name_off = pos;
    rr->name_len = p - pos;
    if (it->sec == DNSWIRE_QD) {
        if (len - p < 4)
            goto fail;
        rr->type = dg_get16(msg + p);
        rr->rclass = dg_get16(msg + p + 2);
        rr->ttl_off = 0;
        rr->rdata_off = 0;
        rr->rdlen = 0;
        it->pos = p + 4;
    } else {
        if (len - p < 10)
            goto fail;
        rr->type = dg_get16(msg + p);
        rr->rclass = dg_get16(msg + p + 2);
        rr->ttl_off = p + 4;
        rr->rdlen = dg_get16(msg + p + 8);
        rr->rdata_off = p + 10;
        if (rr->rdlen > len - rr->rdata_off)
            goto fail;
        if ((it->flags & DNSWIRE_CHECK) && !dnswire_rdata_check(msg, len, rr))
            goto fail;
        it->pos = rr->rdata_off + rr->rdlen;
    }
    it->left--;
    return 1;
fail:
    it->failed = true;
    return -EBADMSG;
}

/** Offset just past the last record returned (the header's end before the first). */
DNSWIRE_INLINE size_t dnswire_iter_offset(const struct dnswire_iter *it)
{
    return it->pos;
}

/**
 * The caller removed @p n bytes from the rdata of the record last returned (moved the rest of
 * the message down, fixed the RDLENGTH): the walk goes on after it, in a message @p n bytes
 * shorter; @p rr's rdlen is updated. @p n must not exceed that rdata's length.
 */
DNSWIRE_INLINE void dnswire_iter_rdata_shrunk(struct dnswire_iter *it, struct dnswire_rr *rr,
                                              size_t n)
{
    it->len -= n;
    it->pos -= n;
    rr->rdlen -= n;
}

/** Called for a domain-name field of rdata at offset @p off; return false to stop and fail. */
typedef bool (*dnswire_name_cb)(const uint8_t *msg, size_t len, size_t off, void *arg);

/**
 * Call @p cb for every domain-name field in the rdata of @p rr, found with ldns's rdata
 * descriptor and the field sizes ldns_wire2rdf() uses. Anything odd (unknown type, a field
 * running past the rdata) ends the walk successfully: this walk only finds names.
 * @return false as soon as @p cb returns false, else true.
 */
bool dnswire_rdata_each_name(const uint8_t *msg, size_t len, const struct dnswire_rr *rr,
                             dnswire_name_cb cb, void *arg);

/** The TTL knobs of the lifetime rule (the cache-* options). */
struct dnswire_ttl_policy {
    uint32_t min_ttl;
    uint32_t max_ttl;
    uint32_t max_negative_ttl;
    uint32_t nosoa_negative_ttl;
    uint32_t servfail_ttl;
};

enum dnswire_answer_kind {
    DNSWIRE_UNCACHEABLE = 0,
    DNSWIRE_POSITIVE,
    DNSWIRE_NEGATIVE, /**< NXDOMAIN or NODATA */
    DNSWIRE_SERVFAIL,
};

/** What dnswire_answer_lifetime() found besides the lifetime. */
struct dnswire_answer_info {
    enum dnswire_answer_kind kind;
    size_t nttl;   /**< records with a TTL (all but OPT), questions excluded */
    size_t ncount; /**< of them, in the answer and authority sections */
    size_t end;    /**< offset just past the last record */
};

/**
 * The lifetime of answer @p ans under policy @p p, by the rule in the file comment.
 * @param flags  for the walk: DNSWIRE_CHECK for a message that did not pass dns_wire_check();
 *               0 for one that did (answers from upstream pass dns_answer_matches() first): the
 *               walk is bounded either way, the check only makes a malformed name uncacheable.
 * @param info   may be NULL; kind DNSWIRE_UNCACHEABLE goes with lifetime 0, and a kind with
 *               lifetime 0 is not to be kept either.
 * @return the lifetime in seconds; 0: not to be kept (max-age=0).
 */
uint32_t dnswire_answer_lifetime(const uint8_t *ans, size_t len, unsigned flags,
                                 const struct dnswire_ttl_policy *p,
                                 struct dnswire_answer_info *info);

/**
 * The TTL record @p rr of an answer of kind @p kind is served with at age 0: clamped as the
 * lifetime is; the SOA of a negative answer at min(SOA TTL, SOA MINIMUM); SERVFAIL records as
 * they are.
 */
uint32_t dnswire_record_ttl(const uint8_t *msg, const struct dnswire_rr *rr,
                            enum dnswire_answer_kind kind, const struct dnswire_ttl_policy *p);

/**
 * Split @p buf into 2-byte length-prefixed DNS messages (the TCP and TLS framing of RFC 1035
 * §4.2.2, RFC 7766, RFC 7858): @p frame gets each whole one, in order (a zero-length frame
 * too: the caller decides what it is worth). @return the bytes used; a partial message at the
 * end is left for more input.
 */
size_t dnswire_split_stream(uint8_t *buf, size_t len,
                            void (*frame)(void *arg, uint8_t *msg, size_t mlen), void *arg);

/**
 * Find EDNS option @p code in the OPT record of @p msg (the first OPT of the additional
 * section; options walked within its RDLENGTH). @return true with the option's value at
 * @p val_off (offset in @p msg) and its length in @p val_len; false when there is none or the
 * message or the OPT record is malformed.
 */
bool dnswire_edns_option(const uint8_t *msg, size_t len, uint16_t code, size_t *val_off,
                         size_t *val_len);

/**
 * A domain name in text ("ads.example", "ads.example.", "." for the root; @p n bytes, no NUL
 * needed) to lower-cased uncompressed wire form in @p out (at most DNSWIRE_MAX_NAME octets).
 * Labels are 1..63 octets of visible ASCII other than '.' and '\\' (no escapes: the names of
 * configuration and list files are host names, underscores allowed); an empty label (two
 * dots, a leading dot) is refused.
 * @return the wire length (>= 1), or 0 when the text is no such name.
 */
size_t dnswire_name_from_text(const char *text, size_t n, uint8_t out[DNSWIRE_MAX_NAME]);

/** Lower-case ASCII letters of an uncompressed wire name in place (labels walked, bounded). */
void dnswire_name_lower(uint8_t *name, size_t len);

/**
 * The text form of an uncompressed wire name ("nas.home.arpa", "." for the root), for messages
 * and labels; bytes outside visible ASCII and '.' inside a label are written as '?'.
 * @return the length written (always NUL-terminated when @p outlen > 0).
 */
size_t dnswire_name_to_text(const uint8_t *name, size_t len, char *out, size_t outlen);

#endif
