/*
 * dns.c: DNS message checks and synthesized answers (see dns.h).
 *
 * Every walk over the records of a message goes through the bounded iterator of dnswire.h: the
 * query and answer checks walk with DNSWIRE_CHECK (names followed through their compression
 * pointers, names inside rdata checked), ECS removal and the OPT lookup of error answers walk
 * what the checks accepted. No ldns parse of whole messages: it cost a dozen allocations per
 * message, and ldns 1.8.3's ldns_wire2pkt() leaks a record when the additional section holds
 * more than one TSIG. ldns still supplies the rdata layouts (through dnswire.c) and the
 * presentation form of the query log's summary.
 *
 * dns_question_end() and everything built on it require QDCOUNT == 1: dohgate never handles
 * messages with several questions, and "the" question of one is not defined.
 */
#include "dohgate/dns.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ldns/ldns.h>

#include "dohgate/dnswire.h"

#define DNS_MAX_NAME      DNSWIRE_MAX_NAME
#define DNS_TYPE_OPT      DNSWIRE_TYPE_OPT
#define DNS_TYPE_IXFR     251
#define DNS_TYPE_AXFR     252
#define DNS_OPCODE_QUERY  0
#define DNS_EDNS_UDP_SIZE 1232 /* DNS flag day 2020 */
#define DNS_EDNS_DO       0x8000u

/* Header flag bits (byte 2 and byte 3 of the header). */

enum { DNS_SEC_QD = 0, DNS_SEC_AN, DNS_SEC_NS, DNS_SEC_AR };

static uint16_t hdr_count(const uint8_t *msg, int sec)
{
    return dg_get16(msg + 4 + 2 * sec);
}

/*
 * Offset just past an uncompressed name starting at @p off, or 0. Compression pointers (top
 * bits 11) and the obsolete extended label types (01, 10) are refused: the first question never
 * needs them, and refusing them keeps the walk linear.
 */
static size_t name_end_plain(const uint8_t *msg, size_t len, size_t off)
{
    size_t wire_len = 0;
    for (;;) {
        if (off >= len)
            return 0;
        uint8_t lab = msg[off];
        if (lab & 0xc0u)
            return 0;
        wire_len += (size_t)lab + 1;
        if (wire_len > DNS_MAX_NAME)
            return 0;
        off += (size_t)lab + 1;
        if (lab == 0)
            return off;
    }
}

/* dns_wire_check(), counting the OPT records of the additional section in *n_opt if given. */
static bool wire_check(const uint8_t *wire, size_t len, unsigned *n_opt)
{
    struct dnswire_iter it;
    struct dnswire_rr rr;
    unsigned nopt = 0;
    int r;
    dnswire_iter_init(&it, wire, len, DNSWIRE_CHECK);
    while ((r = dnswire_iter_next(&it, &rr)) == 1)
        nopt += rr.sec == DNSWIRE_AR && rr.type == DNS_TYPE_OPT;
    if (n_opt)
        *n_opt = nopt;
    return r == 0;
}

bool dns_wire_check(const uint8_t *wire, size_t len)
{
    return wire_check(wire, len, NULL);
}

size_t dns_question_end(const uint8_t *msg, size_t len)
{
    if (!msg || len < DNS_HEADER_LEN || hdr_count(msg, DNS_SEC_QD) != 1)
        return 0;
    size_t off = name_end_plain(msg, len, DNS_HEADER_LEN);
    if (off == 0 || len - off < 4)
        return 0;
    return off + 4;
}

const uint8_t *dns_question_name(const uint8_t *msg, size_t len, size_t *nlen)
{
    size_t end = dns_question_end(msg, len);
    if (end < DNS_HEADER_LEN + 5)
        return NULL;
    *nlen = end - 4 - DNS_HEADER_LEN;
    return msg + DNS_HEADER_LEN;
}

static void set_why(const char **why, const char *text)
{
    if (why)
        *why = text;
}

enum dns_query_verdict dns_query_check(const uint8_t *q, size_t len, const char **why)
{
    if (!q || len < DNS_HEADER_LEN) {
        set_why(why, "DNS message too short");
        return DNS_QUERY_MALFORMED;
    }
    if (q[2] & DNS_F2_QR) {
        set_why(why, "QR bit set: not a query");
        return DNS_QUERY_MALFORMED;
    }
    if (hdr_count(q, DNS_SEC_QD) != 1) {
        set_why(why, "QDCOUNT is not 1");
        return DNS_QUERY_MALFORMED;
    }
    size_t qend = dns_question_end(q, len);
    if (qend == 0) {
        set_why(why, "malformed DNS message");
        return DNS_QUERY_MALFORMED;
    }
    /* A wire walk, not an ldns parse: this runs for every query, cache hits included, and a
     * parse cost a dozen allocations. What we forward or answer from is checked: every record
     * where its lengths say, names well formed. */
    unsigned nopt = 0;
    if (!wire_check(q, len, &nopt)) {
        set_why(why, "malformed DNS message");
        return DNS_QUERY_MALFORMED;
    }

    if (((q[2] & DNS_F2_OPCODE) >> 3) != DNS_OPCODE_QUERY)
        return DNS_QUERY_NOTIMP;
    /* Before the section-count rule: a well-formed IXFR query carries the client's SOA in the
     * authority section (RFC 1995 §3), and "we do not serve zone transfers" is the honest
     * answer to it, not FORMERR. */
    uint16_t qtype = dg_get16(q + qend - 4);
    if (qtype == DNS_TYPE_AXFR || qtype == DNS_TYPE_IXFR)
        return DNS_QUERY_REFUSED;
    if (hdr_count(q, DNS_SEC_AN) != 0 || hdr_count(q, DNS_SEC_NS) != 0)
        return DNS_QUERY_FORMERR;
    /* RFC 6891 §6.1.1: more than one OPT in a query MUST be answered with FORMERR. */
    if (nopt > 1)
        return DNS_QUERY_FORMERR;
    return DNS_QUERY_OK;
}

/* What the OPT of an answer of ours echoes from the query: whether there is one, its DO bit. */
struct query_edns {
    bool opt;
    bool dnssec_ok;
};

static struct query_edns query_edns(const uint8_t *q, size_t qlen)
{
    /* Only a query that is sound throughout has an OPT record we can trust. */
    struct query_edns e = {false, false};
    struct dnswire_iter it;
    struct dnswire_rr rr;
    size_t opt_ttl = 0;
    int r;
    dnswire_iter_init(&it, q, qlen, DNSWIRE_CHECK);
    while ((r = dnswire_iter_next(&it, &rr)) == 1) {
        if (rr.sec == DNSWIRE_AR && rr.type == DNS_TYPE_OPT && !opt_ttl)
            opt_ttl = rr.ttl_off;
    }
    if (r == 0 && opt_ttl) {
        e.opt = true;
        e.dnssec_ok = (dg_get32(q + opt_ttl) & DNS_EDNS_DO) != 0;
    }
    return e;
}

/* Bytes record @p rr takes in an answer, or 0 when it is not one we can write. */
static size_t rr_out_size(const struct dns_rr_out *rr, bool have_question)
{
    if (rr->rdlen && !rr->rdata)
        return 0;
    size_t owner = 2; /* the pointer to the question's name */
    if (rr->owner) {
        if (rr->owner_len == 0 || name_end_plain(rr->owner, rr->owner_len, 0) != rr->owner_len)
            return 0;
        owner = rr->owner_len;
    } else if (!have_question) {
        return 0;
    }
    return owner + 10 + rr->rdlen;
}

static uint8_t *rr_out_write(uint8_t *p, const struct dns_rr_out *rr)
{
    if (rr->owner) {
        memcpy(p, rr->owner, rr->owner_len);
        p += rr->owner_len;
    } else {
        *p++ = 0xc0; /* RFC 1035 §4.1.4: the question's name sits at offset 12 */
        *p++ = DNS_HEADER_LEN;
    }
    dg_put16(p, rr->type);
    dg_put16(p + 2, rr->rclass);
    dg_put16(p + 4, (uint16_t)(rr->ttl >> 16));
    dg_put16(p + 6, (uint16_t)rr->ttl);
    dg_put16(p + 8, rr->rdlen);
    p += 10;
    if (rr->rdlen)
        memcpy(p, rr->rdata, rr->rdlen);
    return p + rr->rdlen;
}

#define EDE_OPTION_CODE 15 /* RFC 8914 §2 */

/*
 * The one builder of dohgate's own answers (dns_make_answer(), error answers, RFC 8482, local
 * data, blocked names): header, question, records, OPT. Sizes everything first, so the message
 * is written in one reservation and @p out is untouched on any error. @p need_question: refuse a
 * query without a single parseable question (error answers go without one: a FORMERR to a
 * mangled question still tells the client its ID).
 */
static int build_answer(const uint8_t *q, size_t qlen, bool need_question, int rcode, bool aa,
                        const struct dns_rr_out *an, size_t n_an, const struct dns_rr_out *ns,
                        size_t n_ns, int ede_code, const char *ede_text, struct dg_buf *out)
{
    if (!q || !out || qlen < DNS_HEADER_LEN || rcode < 0 || rcode > 15 || ede_code > 0xffff ||
        (n_an && !an) || (n_ns && !ns) || n_an > 0xffff || n_ns > 0xffff)
        return -EINVAL;
    size_t qend = dns_question_end(q, qlen);
    if (!qend && need_question)
        return -EINVAL;
    struct query_edns edns = {false, false};
    if (qend)
        edns = query_edns(q, qlen);

    size_t total = qend ? qend : DNS_HEADER_LEN;
    /* n_an + n_ns <= 131070 records of at most 255 + 10 + 65535 bytes: no size_t overflow
     * before the check below. */
    for (size_t i = 0; i < n_an + n_ns; i++) {
        size_t sz = rr_out_size(i < n_an ? &an[i] : &ns[i - n_an], qend != 0);
        if (sz == 0)
            return -EINVAL;
        total += sz;
    }
    size_t ede_len = 0;
    if (edns.opt) {
        total += 11; /* root owner, type, class, TTL, RDLENGTH */
        if (ede_code >= 0) {
            ede_len = 2 + (ede_text ? strnlen(ede_text, DNS_MAX_MSG) : 0);
            total += 4 + ede_len;
        }
    }
    if (total > DNS_MAX_MSG)
        return -EINVAL;
    if (dg_buf_reserve(out, total) != 0)
        return -ENOMEM;

    uint8_t *ans = out->data + out->len;
    memset(ans, 0, DNS_HEADER_LEN);
    memcpy(ans, q, 2); /* ID */
    /* Opcode is echoed (RFC 1035 §4.1.1), RD and CD are copied (RFC 1035, RFC 4035 §3.2.2);
     * TC, Z and AD stay clear (nothing here is validated data), AA only for data that is our
     * own (local data). */
    ans[2] = (uint8_t)(DNS_F2_QR | (q[2] & (DNS_F2_OPCODE | DNS_F2_RD)) | (aa ? DNS_F2_AA : 0));
    ans[3] = (uint8_t)(DNS_F3_RA | (q[3] & DNS_F3_CD) | ((unsigned)rcode & DNS_F3_RCODE));
    uint8_t *p = ans + DNS_HEADER_LEN;
    if (qend) {
        dg_put16(ans + 4, 1);
        memcpy(p, q + DNS_HEADER_LEN, qend - DNS_HEADER_LEN);
        p += qend - DNS_HEADER_LEN;
    }
    dg_put16(ans + 6, (uint16_t)n_an);
    dg_put16(ans + 8, (uint16_t)n_ns);
    for (size_t i = 0; i < n_an; i++)
        p = rr_out_write(p, &an[i]);
    for (size_t i = 0; i < n_ns; i++)
        p = rr_out_write(p, &ns[i]);
    if (edns.opt) {
        /* RFC 6891 §7: a responder includes OPT when the request had one. RFC 3225 §3: the
         * DO bit is copied from the query. */
        dg_put16(ans + 10, 1);
        *p++ = 0; /* root owner */
        dg_put16(p, DNS_TYPE_OPT);
        dg_put16(p + 2, DNS_EDNS_UDP_SIZE);
        /* TTL: extended rcode 0, version 0, flags */
        dg_put16(p + 4, 0);
        dg_put16(p + 6, edns.dnssec_ok ? DNS_EDNS_DO : 0);
        dg_put16(p + 8, (uint16_t)(ede_len ? 4 + ede_len : 0));
        p += 10;
        if (ede_len) {
            /* RFC 8914 §2: INFO-CODE, then EXTRA-TEXT (UTF-8, no NUL) */
            dg_put16(p, EDE_OPTION_CODE);
            dg_put16(p + 2, (uint16_t)ede_len);
            dg_put16(p + 4, (uint16_t)ede_code);
            if (ede_len > 2)
                memcpy(p + 6, ede_text, ede_len - 2);
            p += 4 + ede_len;
        }
    }
    out->len += total;
    return 0;
}

int dns_make_answer(const uint8_t *q, size_t qlen, int rcode, bool aa, const struct dns_rr_out *an,
                    size_t n_an, const struct dns_rr_out *ns, size_t n_ns, int ede_code,
                    const char *ede_text, struct dg_buf *out)
{
    return build_answer(q, qlen, true, rcode, aa, an, n_an, ns, n_ns, ede_code, ede_text, out);
}

int dns_make_error_answer(const uint8_t *q, size_t qlen, int rcode, struct dg_buf *out)
{
    return build_answer(q, qlen, false, rcode, false, NULL, 0, NULL, 0, -1, NULL, out);
}

static uint8_t ascii_lower(uint8_t c)
{
    return (c >= 'A' && c <= 'Z') ? (uint8_t)(c + ('a' - 'A')) : c;
}

bool dns_answer_matches(const uint8_t *query, size_t qlen, const uint8_t *ans, size_t alen)
{
    size_t qe = dns_question_end(query, qlen);
    size_t ae = dns_question_end(ans, alen);
    if (qe == 0 || ae == 0 || qe != ae)
        return false;
    if (!(ans[2] & DNS_F2_QR) || memcmp(query, ans, 2) != 0)
        return false;
    /* Same layout: label lengths (< 64, never letters) compare equal under ascii_lower too,
     * so one pass compares the name case-insensitively (0x20 randomisation) and type/class
     * exactly. */
    size_t name_end = qe - 4;
    for (size_t i = DNS_HEADER_LEN; i < name_end; i++) {
        if (ascii_lower(query[i]) != ascii_lower(ans[i]))
            return false;
    }
    if (memcmp(query + name_end, ans + name_end, 4) != 0)
        return false;

    /* The structure only (every record's names and lengths within the message): a full ldns
     * parse here cost a third of a cache miss, and everything downstream (cache, TTL rewrite)
     * walks records by RDLENGTH and checks its own bounds. */
    return dns_wire_check(ans, alen);
}

size_t dns_udp_payload_size(const uint8_t *q, size_t qlen)
{
    uint16_t size = 0;
    struct dnswire_iter it;
    struct dnswire_rr rr;
    dnswire_iter_init(&it, q, qlen, 0);
    while (dnswire_iter_next(&it, &rr) == 1) {
        if (rr.sec == DNSWIRE_AR && rr.type == DNS_TYPE_OPT) {
            size = rr.rclass;
            break;
        }
    }
    return size > 512 ? size : 512;
}

int dns_truncate(uint8_t *msg, size_t *len, size_t max)
{
    if (!msg || !len || max < DNS_HEADER_LEN)
        return -EINVAL;
    if (*len <= max)
        return 0;
    size_t qend = dns_question_end(msg, *len);
    if (qend == 0 || qend > max)
        return -EBADMSG;
    struct dnswire_iter it;
    struct dnswire_rr rr, opt = {0};
    bool have_opt = false;
    int r;
    dnswire_iter_init(&it, msg, *len, 0);
    while ((r = dnswire_iter_next(&it, &rr)) == 1) {
        if (rr.sec == DNSWIRE_AR && rr.type == DNS_TYPE_OPT && !have_opt) {
            opt = rr;
            have_opt = true;
        }
    }
    if (r < 0)
        return -EBADMSG;
    size_t end = qend;
    if (have_opt && qend + 11 <= max) {
        /* The OPT moves down to just past the question: its name is the root, always one
         * byte here (a pointer would be malformed), and the rest is copied as it is. */
        uint8_t fixed[10];
        memcpy(fixed, msg + opt.rdata_off - 10, 10); /* type, class, TTL, rdlen */
        size_t rdlen = opt.rdlen;
        if (qend + 11 + rdlen > max) {
            rdlen = 0; /* the options do not fit: the OPT alone still says EDNS */
            dg_put16(fixed + 8, 0);
        }
        msg[end] = 0;
        memcpy(msg + end + 1, fixed, 10);
        memmove(msg + end + 11, msg + opt.rdata_off, rdlen);
        end += 11 + rdlen;
    } else {
        have_opt = false;
    }
    dg_put16(msg + 6, 0);
    dg_put16(msg + 8, 0);
    dg_put16(msg + 10, have_opt ? 1 : 0);
    msg[2] |= DNS_F2_TC;
    *len = end;
    return 1;
}

bool dns_is_truncated(const uint8_t *msg, size_t len)
{
    return msg && len >= DNS_HEADER_LEN && (msg[2] & DNS_F2_TC);
}

int dns_rcode(const uint8_t *msg, size_t len)
{
    if (!msg || len < DNS_HEADER_LEN)
        return -1;
    return msg[3] & DNS_F3_RCODE;
}

int dns_summary(const uint8_t *msg, size_t len, char *out, size_t outlen)
{
    snprintf(out, outlen, "?");
    size_t pos = 12;
    ldns_rdf *name = NULL;
    if (len < 12 || ldns_wire2dname(&name, msg, len, &pos) != LDNS_STATUS_OK)
        return -1;
    int rc = -1;
    char *text = ldns_rdf2str(name);
    if (text && pos + 4 <= len) {
        ldns_rr_type type = (ldns_rr_type)((msg[pos] << 8) | msg[pos + 1]);
        char *tname = ldns_rr_type2str(type);
        const ldns_lookup_table *rcode = ldns_lookup_by_id(ldns_rcodes, msg[3] & 0x0f);
        if (tname) {
            snprintf(out, outlen, "%s %s %s", text, tname, rcode ? rcode->name : "?");
            rc = 0;
        }
        free(tname);
    }
    free(text);
    ldns_rdf_deep_free(name);
    return rc;
}

uint16_t dns_qtype(const uint8_t *q, size_t qlen)
{
    size_t qend = dns_question_end(q, qlen);
    return qend ? dg_get16(q + qend - 4) : 0;
}

int dns_make_any_answer(const uint8_t *q, size_t qlen, uint32_t ttl, struct dg_buf *out)
{
    size_t qend = dns_question_end(q, qlen);
    if (!qend || !out)
        return -EINVAL;
    /* One HINFO "RFC8482" "" for the question's name and class (RFC 8482 §4.2). */
    const struct dns_rr_out hinfo = {
        .owner = NULL,
        .type = 13,
        .rclass = dg_get16(q + qend - 2),
        .ttl = ttl,
        .rdata = (const uint8_t *)"\x07RFC8482\x00",
        .rdlen = 9,
    };
    return build_answer(q, qlen, true, DNS_RCODE_NOERROR, false, &hinfo, 1, NULL, 0, -1, NULL, out);
}
/*
 * EDNS padding (RFC 7830, RFC 8467). The three functions share one scan: a walk of the whole
 * message with the bounded iterator (without DNSWIRE_CHECK: what they edit are lengths, and the
 * walk is bounded either way) that also checks the option list of every OPT record of the
 * additional section. Nothing is edited before the scan passed, so a malformed message comes
 * back as it went in.
 */
struct opt_scan {
    unsigned nopt;    /* OPT records in the additional section */
    size_t rdata_off; /* rdata of the first one */
    size_t rdlen;
    size_t hit_bytes; /* options with a code of the scan's set, headers included, in all */
};

/* Option codes as a set, one bit per code below 64 (all the ones edited here are). */
#define OPT_BIT(code) (1ull << (code))
#define OPT_PADDING   OPT_BIT(DNS_EDNS_PADDING)
/* The options of the client's own hop, never forwarded: ECS reveals its network and would
 * split the cache (RFC 7871), its padding and TCP keepalive (RFC 7828) are about its
 * connection; the upstream leg sets its own. */
#define OPT_HOP (OPT_BIT(DNS_EDNS_ECS) | OPT_BIT(DNS_EDNS_KEEPALIVE) | OPT_PADDING)

/* Every option (code, length, data) of the rdata at @p off within it; count those in @p codes. */
static int opt_options_check(const uint8_t *msg, size_t off, size_t rdlen, uint64_t codes,
                             size_t *hit_bytes)
{
    size_t p = off, end = off + rdlen;
    while (p < end) {
        if (end - p < 4)
            return -EBADMSG;
        size_t olen = dg_get16(msg + p + 2);
        if (end - p - 4 < olen)
            return -EBADMSG;
        uint16_t code = dg_get16(msg + p);
        if (code < 64 && (codes & OPT_BIT(code)))
            *hit_bytes += 4 + olen;
        p += 4 + olen;
    }
    return 0;
}

static int opt_scan(const uint8_t *msg, size_t len, uint64_t codes, struct opt_scan *s)
{
    struct dnswire_iter it;
    struct dnswire_rr rr;
    int r;
    memset(s, 0, sizeof(*s));
    dnswire_iter_init(&it, msg, len, 0);
    while ((r = dnswire_iter_next(&it, &rr)) == 1) {
        if (rr.sec != DNSWIRE_AR || rr.type != DNS_TYPE_OPT)
            continue;
        if (s->nopt++ == 0) {
            s->rdata_off = rr.rdata_off;
            s->rdlen = rr.rdlen;
        }
        if (opt_options_check(msg, rr.rdata_off, rr.rdlen, codes, &s->hit_bytes) != 0)
            return -EBADMSG;
    }
    return r < 0 ? -EBADMSG : 0;
}

/*
 * Does the name at @p off read no byte at or past @p limit that would not move with it? A name
 * that sits at or past @p limit (in a record after the OPT) moves as a whole, so its own labels
 * may be there; every byte reached through a compression pointer, and every byte of a name that
 * sits before @p limit, must lie wholly before it. Bounded as dnswire_name_check() is (hops,
 * 255 octets).
 */
static bool name_points_below(const uint8_t *msg, size_t len, size_t off, size_t limit)
{
    bool moves = off >= limit;
    size_t wire_len = 0;
    unsigned hops = 0;
    for (;;) {
        if (off >= len)
            return false;
        uint8_t lab = msg[off];
        bool ptr = (lab & 0xc0u) == 0xc0u;
        if (!moves && off + (ptr ? 2u : (size_t)lab + 1) > limit)
            return false;
        if (ptr) {
            if (len - off < 2 || ++hops > DNSWIRE_MAX_PTR_HOPS)
                return false;
            off = ((size_t)(lab & 0x3fu) << 8) | msg[off + 1];
            moves = false;
            continue;
        }
        if (lab & 0xc0u)
            return false;
        wire_len += (size_t)lab + 1;
        if (wire_len > DNS_MAX_NAME)
            return false;
        if (lab == 0)
            return true;
        off += (size_t)lab + 1;
    }
}

static bool rdata_name_below(const uint8_t *msg, size_t len, size_t off, void *arg)
{
    return name_points_below(msg, len, off, *(const size_t *)arg);
}

/*
 * May the bytes from @p edit on change (the first OPT's RDLENGTH, then its rdata) or move
 * without changing a name? Every name, owner names and the names inside rdata, must reach through
 * its compression pointers only bytes before it (name_points_below()): bytes that move would leave
 * a pointer naming something else, or nothing. A sane encoder never points into an OPT or forward
 * past it (RFC 1035 §4.1.4: pointers go to prior occurrences); a message that does is refused the
 * edit. Only the editing functions pay for this walk.
 */
static bool edit_safe(const uint8_t *msg, size_t len, size_t edit)
{
    struct dnswire_iter it;
    struct dnswire_rr rr;
    int r;
    dnswire_iter_init(&it, msg, len, 0);
    while ((r = dnswire_iter_next(&it, &rr)) == 1) {
        if (!name_points_below(msg, len, rr.name_off, edit))
            return false;
        if (rr.sec != DNSWIRE_QD &&
            !dnswire_rdata_each_name(msg, len, &rr, rdata_name_below, &edit))
            return false;
    }
    return r == 0;
}

/*
 * Remove the options with a code in @p codes from the OPT whose rdata (checked by opt_scan())
 * sits at @p off,
 * @p rdlen long: the rest of the message moves down, RDLENGTH is fixed. @return bytes removed.
 */
static size_t opt_remove(uint8_t *msg, size_t *len, size_t off, size_t rdlen, uint64_t codes)
{
    size_t p = off, end = off + rdlen, n = *len, removed = 0;
    while (p < end) {
        size_t cut = 4 + (size_t)dg_get16(msg + p + 2);
        uint16_t code = dg_get16(msg + p);
        if (code >= 64 || !(codes & OPT_BIT(code))) {
            p += cut;
            continue;
        }
        memmove(msg + p, msg + p + cut, n - p - cut);
        n -= cut;
        end -= cut;
        removed += cut;
    }
    dg_put16(msg + off - 2, (uint16_t)(rdlen - removed));
    *len = n;
    return removed;
}

bool dns_has_padding(const uint8_t *msg, size_t len)
{
    struct opt_scan s;
    return opt_scan(msg, len, OPT_PADDING, &s) == 0 && s.hit_bytes > 0;
}

/* Remove the options in @p codes from every OPT record, with the checks of dns_pad(): the whole
 * message and its options parse, no name points into what moves. 1 / 0 / -EBADMSG. */
static int opt_strip(uint8_t *msg, size_t *len, uint64_t codes)
{
    struct opt_scan s;
    if (opt_scan(msg, *len, codes, &s) != 0)
        return -EBADMSG;
    if (s.hit_bytes == 0)
        return 0;
    if (!edit_safe(msg, *len, s.rdata_off - 2))
        return -EBADMSG;
    /* Several OPT records are malformed (RFC 6891 §6.1.1), but an answer carrying them is still
     * delivered: none of them keeps its padding. */
    struct dnswire_iter it;
    struct dnswire_rr rr;
    size_t n = *len;
    dnswire_iter_init(&it, msg, n, 0);
    while (dnswire_iter_next(&it, &rr) == 1) {
        if (rr.sec != DNSWIRE_AR || rr.type != DNS_TYPE_OPT)
            continue;
        size_t removed = opt_remove(msg, &n, rr.rdata_off, rr.rdlen, codes);
        if (removed)
            dnswire_iter_rdata_shrunk(&it, &rr, removed);
    }
    *len = n;
    return 1;
}

int dns_strip_padding(uint8_t *msg, size_t *len)
{
    if (!msg || !len)
        return -EINVAL;
    return opt_strip(msg, len, OPT_PADDING);
}

/* What an upstream's answer may carry that is about its hop only: padding (RFC 8467) and the
 * keepalive timeout it grants our connection (RFC 7828). */
#define OPT_ANSWER_HOP (OPT_PADDING | OPT_BIT(DNS_EDNS_KEEPALIVE))

bool dns_answer_has_hop_options(const uint8_t *msg, size_t len)
{
    struct opt_scan s;
    return opt_scan(msg, len, OPT_ANSWER_HOP, &s) == 0 && s.hit_bytes > 0;
}

int dns_answer_strip_hop_options(uint8_t *msg, size_t *len)
{
    if (!msg || !len)
        return -EINVAL;
    return opt_strip(msg, len, OPT_ANSWER_HOP);
}

int dns_query_strip_hop_options(uint8_t *msg, size_t *len)
{
    /* -EINVAL for every refusal, as before: the resolver does not forward such a query */
    int r = msg && len ? opt_strip(msg, len, OPT_HOP) : -EINVAL;
    return r < 0 ? -EINVAL : r;
}

int dns_add_opt(uint8_t *msg, size_t *len, size_t cap, uint16_t udp_size)
{
    if (!msg || !len || *len > cap || *len < DNS_HEADER_LEN)
        return -EINVAL;
    struct dnswire_iter it;
    struct dnswire_rr rr;
    dnswire_iter_init(&it, msg, *len, 0);
    size_t end = DNS_HEADER_LEN;
    int r;
    while ((r = dnswire_iter_next(&it, &rr)) == 1) {
        if (rr.sec == DNSWIRE_AR && rr.type == DNS_TYPE_OPT)
            return -EEXIST;
        /* TSIG (250) and SIG(0) (24) must stay last: no OPT behind them */
        if (rr.sec == DNSWIRE_AR && (rr.type == 250 || rr.type == 24))
            return -ENOTSUP;
        end = rr.sec == DNSWIRE_QD ? rr.name_off + rr.name_len + 4 : rr.rdata_off + rr.rdlen;
    }
    /* the records must end the message: the OPT goes right after them */
    if (r < 0 || end != *len || dg_get16(msg + 10) == 0xffff)
        return -EBADMSG;
    size_t limit = cap < DNS_MAX_MSG ? cap : DNS_MAX_MSG;
    if (*len + 11 > limit)
        return -ENOSPC;
    uint8_t *p = msg + *len;
    p[0] = 0; /* root */
    dg_put16(p + 1, DNS_TYPE_OPT);
    dg_put16(p + 3, udp_size);
    memset(p + 5, 0, 4); /* extended rcode, version 0, no DO */
    dg_put16(p + 9, 0);
    dg_put16(msg + 10, (uint16_t)(dg_get16(msg + 10) + 1));
    *len += 11;
    return 0;
}

int dns_remove_opt(uint8_t *msg, size_t *len)
{
    if (!msg || !len)
        return -EINVAL;
    struct dnswire_iter it;
    struct dnswire_rr rr;
    dnswire_iter_init(&it, msg, *len, 0);
    int r;
    size_t start = 0, stop = 0;
    unsigned n = 0;
    while ((r = dnswire_iter_next(&it, &rr)) == 1) {
        if (rr.sec == DNSWIRE_AR && rr.type == DNS_TYPE_OPT && n++ == 0) {
            start = rr.name_off;
            stop = rr.rdata_off + rr.rdlen;
        }
    }
    if (r < 0 || n > 1)
        return -EBADMSG;
    if (n == 0)
        return 0;
    if (!edit_safe(msg, *len, start))
        return -EBADMSG;
    memmove(msg + start, msg + stop, *len - stop);
    *len -= stop - start;
    dg_put16(msg + 10, (uint16_t)(dg_get16(msg + 10) - 1));
    return 1;
}

int dns_add_option(uint8_t *msg, size_t *len, size_t cap, uint16_t code, const uint8_t *data,
                   size_t dlen)
{
    if (!msg || !len || *len > cap || (dlen && !data) || dlen > 0xffff)
        return -EINVAL;
    struct opt_scan s;
    if (opt_scan(msg, *len, OPT_PADDING, &s) != 0)
        return -EBADMSG;
    if (s.nopt == 0)
        return -ENOENT;
    if (s.nopt > 1 || !edit_safe(msg, *len, s.rdata_off - 2))
        return -EBADMSG;
    size_t add = 4 + dlen;
    size_t limit = cap < DNS_MAX_MSG ? cap : DNS_MAX_MSG;
    if (*len + add > limit || s.rdlen + add > 0xffff)
        return -ENOSPC;
    /* last in the OPT rdata; whatever follows the OPT moves up */
    size_t at = s.rdata_off + s.rdlen;
    memmove(msg + at + add, msg + at, *len - at);
    dg_put16(msg + at, code);
    dg_put16(msg + at + 2, (uint16_t)dlen);
    if (dlen)
        memcpy(msg + at + 4, data, dlen);
    dg_put16(msg + s.rdata_off - 2, (uint16_t)(s.rdlen + add));
    *len += add;
    return 0;
}

int dns_pad(uint8_t *msg, size_t *len, size_t cap, unsigned block)
{
    if (!msg || !len || block == 0 || block > DNS_MAX_MSG || *len > cap)
        return -EINVAL;
    struct opt_scan s;
    if (opt_scan(msg, *len, OPT_PADDING, &s) != 0)
        return -EBADMSG;
    if (s.nopt == 0)
        return -ENOENT;
    if (s.nopt > 1)
        return -EBADMSG; /* which one would the peer read? */
    if (!edit_safe(msg, *len, s.rdata_off - 2))
        return -EBADMSG;
    size_t limit = cap < DNS_MAX_MSG ? cap : DNS_MAX_MSG;
    size_t base = *len - s.hit_bytes; /* the message without any padding */
    /* Not even an empty option fits. Then no padding was there either: it took those bytes,
     * and the scan accepted *len (at most DNS_MAX_MSG, at most cap). */
    if (base + 4 > limit)
        return 1;
    int rc = 0;
    size_t target = (base + 4 + block - 1) / block * block;
    if (target > limit) {
        /* RFC 8467 §4.1 asks for block multiples; as close as the room allows beats an
         * answer that is not sent. */
        target = limit;
        rc = 1;
    }
    size_t n = *len;
    size_t rdlen = s.rdlen;
    if (s.hit_bytes)
        rdlen -= opt_remove(msg, &n, s.rdata_off, s.rdlen, OPT_PADDING);
    /* The new option goes last in the OPT rdata; whatever follows the OPT (records, trailing
     * bytes) moves up. target <= limit <= cap, so it fits; the RDLENGTH fits 16 bits as the
     * whole message does. */
    size_t add = target - n;
    size_t at = s.rdata_off + rdlen;
    memmove(msg + at + add, msg + at, n - at);
    memset(msg + at, 0, add);
    dg_put16(msg + at, DNS_EDNS_PADDING);
    dg_put16(msg + at + 2, (uint16_t)(add - 4));
    dg_put16(msg + s.rdata_off - 2, (uint16_t)(rdlen + add));
    *len = target;
    return rc;
}
