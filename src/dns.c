/*
 * dns.c: DNS wire-format checks on top of ldns (see dns.h).
 *
 * Two kinds of parsing live here:
 *  - A hand-written walk of the first question (dns_question_end(), question comparison). It is
 *    short, bounds-checked on every byte, allocation-free and runs for every query and every
 *    upstream answer, so it is worth having without ldns's per-record allocations.
 *  - Full-message parsing through ldns (ldns_wire2rr() for every record). Record data formats
 *    are many and subtle; ldns knows them, we do not want a second copy of that knowledge.
 *
 * Why ldns_wire2rr() in our own loop instead of ldns_wire2pkt(): ldns 1.8.3's ldns_wire2pkt()
 * leaks a record when the additional section holds more than one TSIG (ldns_pkt_set_tsig()
 * overwrites the previous one) and, because it shrinks ARCOUNT while looping over it, silently
 * skips the records after a TSIG. Upstream answers and client queries are attacker-controlled,
 * so that leak would be remotely triggerable. Our loop also finds each record's end from its
 * RDLENGTH (ldns stops early on some malformed rdata and would misalign the next record), caps
 * the compression pointer hops of every name before ldns follows them (DNS_MAX_PTR_HOPS), and
 * keeps OPT as an ordinary record so we can see how many there are.
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

#define DNS_MAX_NAME      255 /* wire octets, root label included (RFC 1035 §2.3.4) */
#define DNS_TYPE_OPT      41
#define DNS_TYPE_SOA      6
#define DNS_TYPE_IXFR     251
#define DNS_TYPE_AXFR     252
#define DNS_OPCODE_QUERY  0
#define DNS_EDNS_UDP_SIZE 1232 /* DNS flag day 2020 */
#define DNS_EDNS_DO       0x8000u
#define DNS_TTL_MAX       0x7fffffffu /* RFC 2181 §8: a TTL with the top bit set means 0 */
/*
 * Compression pointer hops allowed while following one name. A name has at most 127 labels and
 * a sane encoder never points at another pointer, so 128 is generous. ldns allows 65535: one
 * 64 KiB query holding a long pointer chain and thousands of names pointing into it kept ldns
 * busy for 40 ms, a cheap CPU attack. Checked before each record goes to ldns.
 */
#define DNS_MAX_PTR_HOPS 128

/* Header flag bits (byte 2 and byte 3 of the header). */
#define DNS_F2_QR     0x80u
#define DNS_F2_OPCODE 0x78u
#define DNS_F2_TC     0x02u
#define DNS_F2_RD     0x01u
#define DNS_F3_RA     0x80u
#define DNS_F3_CD     0x10u
#define DNS_F3_RCODE  0x0fu

enum { DNS_SEC_QD = 0, DNS_SEC_AN, DNS_SEC_NS, DNS_SEC_AR, DNS_SEC_COUNT };

/* A fully parsed message: the records of each section as on the wire (OPT stays in AR). */
struct dns_msg {
    ldns_rr_list *sec[DNS_SEC_COUNT];
};

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

/*
 * Walk a possibly compressed name at @p off the way ldns_wire2dname() will, counting pointer
 * hops. *end receives the offset just past the name where it sits (a pointer ends it).
 * @return 1 well formed, 0 malformed (ldns rejects it too), -1 more than DNS_MAX_PTR_HOPS hops.
 */
static int name_walk(const uint8_t *msg, size_t len, size_t off, size_t *end)
{
    size_t after = 0;
    size_t wire_len = 0;
    unsigned hops = 0;
    for (;;) {
        if (off >= len)
            return 0;
        uint8_t lab = msg[off];
        if ((lab & 0xc0u) == 0xc0u) {
            if (len - off < 2)
                return 0;
            if (!after)
                after = off + 2;
            if (++hops > DNS_MAX_PTR_HOPS)
                return -1;
            off = ((size_t)(lab & 0x3fu) << 8) | msg[off + 1];
            continue;
        }
        if (lab & 0xc0u)
            return 0;
        wire_len += (size_t)lab + 1;
        if (wire_len > DNS_MAX_NAME)
            return 0;
        if (lab == 0) {
            *end = after ? after : off + 1;
            return 1;
        }
        off += (size_t)lab + 1;
    }
}

/* Offset just past a name in rdata as it sits there (a pointer ends it), or 0. */
static size_t rdata_name_end(const uint8_t *msg, size_t end, size_t off)
{
    size_t wire_len = 0;
    for (;;) {
        if (off >= end)
            return 0;
        uint8_t lab = msg[off];
        if ((lab & 0xc0u) == 0xc0u)
            return end - off < 2 ? 0 : off + 2;
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

/* As dns_rdata_each_name(); @p strict: a name that does not end within the rdata makes the
 * record malformed (false) instead of ending the walk. */
static bool rdata_each_name(const uint8_t *msg, size_t len, uint16_t type, size_t pos, size_t end,
                            dns_name_cb cb, void *arg, bool strict)
{
    const ldns_rr_descriptor *d = ldns_rr_descript(type);
    if (!d)
        return true;
    size_t nfields = ldns_rr_descriptor_maximum(d);
    for (size_t i = 0; pos < end && i < nfields; i++) {
        size_t flen;
        switch (ldns_rr_descriptor_field_type(d, i)) {
        case LDNS_RDF_TYPE_DNAME: {
            size_t after = rdata_name_end(msg, end, pos);
            if (after == 0)
                return !strict;
            if (!cb(msg, len, pos, arg))
                return false;
            flen = after - pos;
            break;
        }
        case LDNS_RDF_TYPE_CLASS:
        case LDNS_RDF_TYPE_ALG:
        case LDNS_RDF_TYPE_CERTIFICATE_USAGE:
        case LDNS_RDF_TYPE_SELECTOR:
        case LDNS_RDF_TYPE_MATCHING_TYPE:
        case LDNS_RDF_TYPE_INT8:
            flen = 1;
            break;
        case LDNS_RDF_TYPE_TYPE:
        case LDNS_RDF_TYPE_INT16:
        case LDNS_RDF_TYPE_CERT_ALG:
            flen = 2;
            break;
        case LDNS_RDF_TYPE_TIME:
        case LDNS_RDF_TYPE_INT32:
        case LDNS_RDF_TYPE_A:
        case LDNS_RDF_TYPE_PERIOD:
            flen = 4;
            break;
        case LDNS_RDF_TYPE_TSIGTIME:
        case LDNS_RDF_TYPE_EUI48:
            flen = 6;
            break;
        case LDNS_RDF_TYPE_ILNP64:
        case LDNS_RDF_TYPE_EUI64:
            flen = 8;
            break;
        case LDNS_RDF_TYPE_AAAA:
            flen = 16;
            break;
        case LDNS_RDF_TYPE_STR:
        case LDNS_RDF_TYPE_NSEC3_SALT:
        case LDNS_RDF_TYPE_TAG:
        case LDNS_RDF_TYPE_B32_EXT:
        case LDNS_RDF_TYPE_NSEC3_NEXT_OWNER:
            flen = (size_t)msg[pos] + 1;
            break;
        case LDNS_RDF_TYPE_INT16_DATA:
            if (end - pos < 2)
                return true;
            flen = (size_t)dg_get16(msg + pos) + 2;
            break;
        case LDNS_RDF_TYPE_HIP:
            if (end - pos < 4)
                return true;
            flen = (size_t)msg[pos] + dg_get16(msg + pos + 2) + 4;
            break;
        default:
            /* ldns reads the rest of the rdata as one opaque field: no more names. */
            return true;
        }
        if (flen > end - pos)
            return true;
        pos += flen;
    }
    return true;
}

bool dns_rdata_each_name(const uint8_t *msg, size_t len, uint16_t type, size_t pos, size_t end,
                         dns_name_cb cb, void *arg)
{
    return rdata_each_name(msg, len, type, pos, end, cb, arg, false);
}

/* Only an excess of pointer hops fails: a malformed name is left to ldns's verdict. */
static bool name_hops_ok(const uint8_t *msg, size_t len, size_t off, void *arg)
{
    size_t after;
    return name_walk(msg, len, off, &after) >= 0;
}

/* Every name in rdata well formed, as dns_wire_check() wants. */
static bool name_ok(const uint8_t *msg, size_t len, size_t off, void *arg)
{
    size_t after;
    return name_walk(msg, len, off, &after) == 1;
}

/*
 * Where the record of section @p s starting at @p pos must end, from its own length fields, or
 * 0 when it cannot: owner name malformed, fixed fields or RDLENGTH past the end, or a name in
 * rdata that @p name_cb refuses (or, when @p strict, that runs past RDLENGTH).
 */
static size_t record_end(const uint8_t *wire, size_t len, int s, size_t pos, dns_name_cb name_cb,
                         bool strict)
{
    size_t end = 0;
    if (name_walk(wire, len, pos, &end) != 1)
        return 0;
    if (s == DNS_SEC_QD) {
        end += 4;
    } else {
        if (len - end < 10)
            return 0;
        uint16_t type = dg_get16(wire + end);
        size_t rdstart = end + 10;
        end = rdstart + dg_get16(wire + end + 8);
        if (end <= len && !rdata_each_name(wire, len, type, rdstart, end, name_cb, NULL, strict))
            return 0;
    }
    return end > len ? 0 : end;
}

/* dns_wire_check(), counting the OPT records of the additional section in *n_opt if given. */
static bool wire_check(const uint8_t *wire, size_t len, unsigned *n_opt)
{
    if (!wire || len < DNS_HEADER_LEN || len > DNS_MAX_MSG)
        return false;
    size_t pos = DNS_HEADER_LEN;
    for (int s = 0; s < DNS_SEC_COUNT; s++) {
        unsigned count = hdr_count(wire, s);
        for (unsigned i = 0; i < count; i++) {
            size_t end = record_end(wire, len, s, pos, name_ok, true);
            if (!end)
                return false;
            if (n_opt && s == DNS_SEC_AR) {
                size_t after = 0;
                (void)name_walk(wire, len, pos, &after); /* well formed: record_end said so */
                if (dg_get16(wire + after) == LDNS_RR_TYPE_OPT)
                    (*n_opt)++;
            }
            pos = end;
        }
    }
    return true;
}

bool dns_wire_check(const uint8_t *wire, size_t len)
{
    return wire_check(wire, len, NULL);
}

static int map_ldns_status(ldns_status st)
{
    switch (st) {
    case LDNS_STATUS_OK:
        return 0;
    case LDNS_STATUS_MEM_ERR:
        return -ENOMEM;
    default:
        return -EBADMSG;
    }
}

static void dns_msg_deinit(struct dns_msg *m)
{
    for (int s = 0; s < DNS_SEC_COUNT; s++) {
        ldns_rr_list_deep_free(m->sec[s]);
        m->sec[s] = NULL;
    }
}

/*
 * ldns_wire2rr() as ldns 1.8.3 has it, except that the record's allocation is checked: ldns
 * writes into the NULL ldns_rr_new() returns when memory runs out (a crash on any query or
 * answer under memory pressure; found by tests/unit/test_failmalloc.c). The record end was
 * bounds-checked by record_end() before this runs.
 */
static ldns_status wire2rr(ldns_rr **out, const uint8_t *wire, size_t max, size_t *pos, int sec)
{
    ldns_rdf *owner = NULL;
    ldns_rr *rr = ldns_rr_new();
    if (!rr)
        return LDNS_STATUS_MEM_ERR;
    ldns_status st = ldns_wire2dname(&owner, wire, max, pos);
    if (st != LDNS_STATUS_OK)
        goto fail;
    ldns_rr_set_owner(rr, owner);
    if (*pos + 4 > max) {
        st = LDNS_STATUS_PACKET_OVERFLOW;
        goto fail;
    }
    ldns_rr_set_type(rr, (ldns_rr_type)dg_get16(wire + *pos));
    ldns_rr_set_class(rr, (ldns_rr_class)dg_get16(wire + *pos + 2));
    *pos += 4;
    if (sec != DNS_SEC_QD) {
        if (*pos + 4 > max) {
            st = LDNS_STATUS_PACKET_OVERFLOW;
            goto fail;
        }
        ldns_rr_set_ttl(rr, ldns_read_uint32(wire + *pos));
        *pos += 4;
        st = ldns_wire2rdf(rr, wire, max, pos);
        if (st != LDNS_STATUS_OK)
            goto fail;
    }
    ldns_rr_set_question(rr, sec == DNS_SEC_QD);
    *out = rr;
    return LDNS_STATUS_OK;
fail:
    ldns_rr_free(rr);
    return st;
}

/*
 * Parse every record of @p wire with ldns. Trailing bytes after the last counted record are
 * ignored, as ldns_wire2pkt() and most resolvers do.
 * @return 0, -EBADMSG (does not parse), -ENOMEM. On error nothing is left allocated.
 */
static int dns_msg_parse(struct dns_msg *m, const uint8_t *wire, size_t len)
{
    int rc = 0;
    memset(m, 0, sizeof(*m));
    if (len < DNS_HEADER_LEN || len > DNS_MAX_MSG)
        return -EBADMSG;
    size_t pos = DNS_HEADER_LEN;
    for (int s = 0; s < DNS_SEC_COUNT; s++) {
        m->sec[s] = ldns_rr_list_new();
        if (!m->sec[s]) {
            rc = -ENOMEM;
            goto fail;
        }
        unsigned count = hdr_count(wire, s);
        for (unsigned i = 0; i < count; i++) {
            size_t end = record_end(wire, len, s, pos, name_hops_ok, false);
            if (!end) {
                rc = -EBADMSG;
                goto fail;
            }
            ldns_rr *rr = NULL;
            rc = map_ldns_status(wire2rr(&rr, wire, len, &pos, s));
            if (rc)
                goto fail;
            if (!ldns_rr_list_push_rr(m->sec[s], rr)) {
                ldns_rr_free(rr);
                rc = -ENOMEM;
                goto fail;
            }
            /* Rdata that runs past RDLENGTH (a name in rdata reaching into the next record)
             * is malformed. Rdata that ldns stops reading early (more bytes than the type's
             * fields) would misalign the next record: resynchronise on RDLENGTH, as every
             * DNS implementation walks records. */
            if (pos > end) {
                rc = -EBADMSG;
                goto fail;
            }
            pos = end;
        }
    }
    return 0;
fail:
    dns_msg_deinit(m);
    return rc;
}

static size_t section_size(const struct dns_msg *m, int s)
{
    return ldns_rr_list_rr_count(m->sec[s]);
}

static const ldns_rr *section_rr(const struct dns_msg *m, int s, size_t i)
{
    return ldns_rr_list_rr(m->sec[s], i);
}

/* The OPT record of the additional section, NULL when none; *count receives how many. */
static const ldns_rr *find_opt(const struct dns_msg *m, size_t *count)
{
    const ldns_rr *opt = NULL;
    size_t n = 0;
    for (size_t i = 0; i < section_size(m, DNS_SEC_AR); i++) {
        const ldns_rr *rr = section_rr(m, DNS_SEC_AR, i);
        if (ldns_rr_get_type(rr) == DNS_TYPE_OPT) {
            if (!opt)
                opt = rr;
            n++;
        }
    }
    if (count)
        *count = n;
    return opt;
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

int dns_make_error_answer(const uint8_t *q, size_t qlen, int rcode, struct dg_buf *out)
{
    /* header + largest question + empty OPT (root, type, class, ttl, rdlength) */
    uint8_t ans[DNS_HEADER_LEN + DNS_MAX_NAME + 4 + 11];
    if (!q || !out || qlen < DNS_HEADER_LEN || rcode < 0 || rcode > 15)
        return -EINVAL;

    size_t qend = dns_question_end(q, qlen);
    bool opt = false;
    bool dnssec_ok = false;
    if (qend) {
        /* Only a query that parses completely has an OPT record we can trust. */
        struct dns_msg m;
        int rc = dns_msg_parse(&m, q, qlen);
        if (rc == -ENOMEM)
            return rc;
        if (rc == 0) {
            const ldns_rr *o = find_opt(&m, NULL);
            if (o) {
                opt = true;
                dnssec_ok = (ldns_rr_ttl(o) & DNS_EDNS_DO) != 0;
            }
            dns_msg_deinit(&m);
        }
    }

    memset(ans, 0, sizeof(ans));
    memcpy(ans, q, 2); /* ID */
    /* Opcode is echoed (RFC 1035 §4.1.1), RD and CD are copied (RFC 1035, RFC 4035 §3.2.2);
     * AA, TC, Z and AD stay clear: there is no data here, let alone authoritative or
     * validated data. */
    ans[2] = (uint8_t)(DNS_F2_QR | (q[2] & (DNS_F2_OPCODE | DNS_F2_RD)));
    ans[3] = (uint8_t)(DNS_F3_RA | (q[3] & DNS_F3_CD) | ((unsigned)rcode & DNS_F3_RCODE));
    size_t n = DNS_HEADER_LEN;
    if (qend) {
        dg_put16(ans + 4, 1);
        memcpy(ans + n, q + DNS_HEADER_LEN, qend - DNS_HEADER_LEN);
        n += qend - DNS_HEADER_LEN;
    }
    if (opt) {
        /* RFC 6891 §7: a responder includes OPT when the request had one. RFC 3225 §3: the
         * DO bit is copied from the query. */
        dg_put16(ans + 10, 1);
        ans[n++] = 0; /* root owner */
        dg_put16(ans + n, DNS_TYPE_OPT);
        dg_put16(ans + n + 2, DNS_EDNS_UDP_SIZE);
        /* TTL: extended rcode 0, version 0, flags */
        dg_put16(ans + n + 6, dnssec_ok ? DNS_EDNS_DO : 0);
        n += 10; /* type, class, ttl, rdlength 0 */
    }
    return dg_buf_append(out, ans, n);
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

static uint32_t rr_ttl(const ldns_rr *rr)
{
    uint32_t ttl = ldns_rr_ttl(rr);
    return ttl > DNS_TTL_MAX ? 0 : ttl;
}

/* SOA MINIMUM (RFC 2308 §4), or false when the SOA rdata is not the expected 7 fields. */
static bool soa_minimum(const ldns_rr *soa, uint32_t *out)
{
    if (ldns_rr_rd_count(soa) != 7)
        return false;
    const ldns_rdf *f = ldns_rr_rdf(soa, 6);
    if (!f || ldns_rdf_size(f) != 4)
        return false;
    uint32_t v = ldns_rdf2native_int32(f);
    *out = v > DNS_TTL_MAX ? DNS_TTL_MAX : v;
    return true;
}

long dns_answer_cache_ttl(const uint8_t *ans, size_t len)
{
    struct dns_msg m;
    if (!ans || dns_msg_parse(&m, ans, len) != 0)
        return -1;

    long result = -1;
    int rcode = ans[3] & DNS_F3_RCODE;
    const ldns_rr *opt = find_opt(&m, NULL);
    /* An extended rcode (BADVERS, BADCOOKIE...) is not a NOERROR/NXDOMAIN answer. */
    if (opt && (ldns_rr_ttl(opt) >> 24) != 0)
        goto out;
    bool negative = rcode == DNS_RCODE_NXDOMAIN ||
                    (rcode == DNS_RCODE_NOERROR && section_size(&m, DNS_SEC_AN) == 0);
    if (rcode != DNS_RCODE_NOERROR && rcode != DNS_RCODE_NXDOMAIN)
        goto out;

    /* Every record the client will cache bounds the lifetime, in negative answers too: an
     * NXDOMAIN at the end of a CNAME chain must not outlive the CNAMEs. */
    uint32_t min = UINT32_MAX;
    bool have_soa = false;
    for (int s = DNS_SEC_AN; s <= DNS_SEC_NS; s++) {
        for (size_t i = 0; i < section_size(&m, s); i++) {
            const ldns_rr *rr = section_rr(&m, s, i);
            if (ldns_rr_get_type(rr) == DNS_TYPE_OPT)
                continue;
            uint32_t ttl = rr_ttl(rr);
            if (ttl < min)
                min = ttl;
            uint32_t soamin;
            if (negative && s == DNS_SEC_NS && ldns_rr_get_type(rr) == DNS_TYPE_SOA &&
                soa_minimum(rr, &soamin)) {
                have_soa = true;
                if (soamin < min)
                    min = soamin;
            }
        }
    }
    /* RFC 2308 §5: a negative answer without SOA must not be cached. */
    if (min == UINT32_MAX || (negative && !have_soa))
        goto out;
    result = (long)min;
out:
    dns_msg_deinit(&m);
    return result;
}

int dns_query_strip_ecs(uint8_t *msg, size_t *len)
{
    size_t n = *len;
    if (n < DNS_HEADER_LEN)
        return -EINVAL;
    size_t off = DNS_HEADER_LEN;
    unsigned total = 0;
    for (int s = DNS_SEC_QD; s < DNS_SEC_COUNT; s++)
        total += hdr_count(msg, s);
    unsigned qd = hdr_count(msg, DNS_SEC_QD), ar_first = total - hdr_count(msg, DNS_SEC_AR);
    int stripped = 0;
    for (unsigned i = 0; i < total; i++) {
        size_t end;
        if (name_walk(msg, n, off, &end) != 1)
            return -EINVAL;
        off = end;
        if (i < qd) {
            if (n - off < 4)
                return -EINVAL;
            off += 4;
            continue;
        }
        if (n - off < 10)
            return -EINVAL;
        uint16_t type = dg_get16(msg + off);
        size_t rdlen = dg_get16(msg + off + 8);
        size_t rd = off + 10;
        if (n - rd < rdlen)
            return -EINVAL;
        if (type == 41 && i >= ar_first) {
            /* EDNS options: code, length, data. Drop every CLIENT-SUBNET (8) option so the
             * client's address never reaches the upstream nor splits the cache. */
            size_t p = rd, rend = rd + rdlen;
            while (p < rend) {
                if (rend - p < 4)
                    return -EINVAL;
                size_t olen = dg_get16(msg + p + 2);
                if (rend - p - 4 < olen)
                    return -EINVAL;
                if (dg_get16(msg + p) == 8) {
                    size_t cut = 4 + olen;
                    memmove(msg + p, msg + p + cut, n - p - cut);
                    n -= cut;
                    rend -= cut;
                    rdlen -= cut;
                    dg_put16(msg + off + 8, (uint16_t)rdlen);
                    stripped = 1;
                    continue;
                }
                p += 4 + olen;
            }
        }
        off = rd + rdlen;
    }
    *len = n;
    return stripped;
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
    size_t start = out->len;
    int rc = dns_make_error_answer(q, qlen, DNS_RCODE_NOERROR, out);
    if (rc != 0)
        return rc;
    /* The record goes between the question and the OPT (if any): name = pointer to the
     * question's name, HINFO, the question's class, TTL, rdata "RFC8482" and "". */
    uint8_t rr[12 + 9];
    size_t n = 0;
    rr[n++] = 0xc0;
    rr[n++] = DNS_HEADER_LEN;
    dg_put16(rr + n, 13); /* HINFO */
    n += 2;
    memcpy(rr + n, q + qend - 2, 2); /* class */
    n += 2;
    dg_put16(rr + n, (uint16_t)(ttl >> 16));
    dg_put16(rr + n + 2, (uint16_t)ttl);
    n += 4;
    dg_put16(rr + n, 9);
    n += 2;
    memcpy(rr + n, "\x07RFC8482\x00", 9);
    n += 9;
    if (dg_buf_reserve(out, n) != 0) {
        out->len = start;
        return -ENOMEM;
    }
    uint8_t *m = out->data + start;
    size_t at = qend; /* the answer copies the question at the same offset */
    size_t len = out->len - start;
    memmove(m + at + n, m + at, len - at);
    memcpy(m + at, rr, n);
    out->len += n;
    dg_put16(m + 6, 1); /* ANCOUNT */
    return 0;
}
