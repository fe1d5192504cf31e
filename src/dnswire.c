/*
 * dnswire.c: the record iterator and the RFC 2308 lifetime rule (see dnswire.h).
 *
 * Two ways to walk a name. dnswire_name_skip() reads a name as it sits and stops at a compression
 * pointer without following it: linear in the message, enough to find where a record's fixed
 * fields are, and what every walk that does not judge names uses (cache keys, TTL offsets,
 * lifetimes). dnswire_name_check() follows the pointers, bounded by hops and by the 255-octet
 * name length, the way a decoder (ldns, a stub resolver) will read the name: the checks of what
 * we forward or answer from use it (DNSWIRE_CHECK), so that nothing downstream meets a name
 * that loops or points outside the message.
 *
 * Names inside rdata are found with ldns's rdata descriptors: record data formats are many and
 * subtle, ldns knows them, we do not want a second copy of that table.
 */
#include "dohgate/dnswire.h"

#include <errno.h>
#include <string.h>

#include <ldns/ldns.h>

#include "dohgate/util.h"

#define RCODE_NOERROR  0
#define RCODE_SERVFAIL 2
#define RCODE_NXDOMAIN 3

static unsigned hdr_count(const uint8_t *msg, unsigned sec)
{
    return dg_get16(msg + 4 + 2 * sec);
}

bool dnswire_name_check(const uint8_t *msg, size_t len, size_t off, size_t *end)
{
    size_t after = 0;
    size_t wire_len = 0;
    unsigned hops = 0;
    for (;;) {
        if (off >= len)
            return false;
        uint8_t lab = msg[off];
        if ((lab & 0xc0u) == 0xc0u) {
            if (len - off < 2 || ++hops > DNSWIRE_MAX_PTR_HOPS)
                return false;
            if (!after)
                after = off + 2;
            off = ((size_t)(lab & 0x3fu) << 8) | msg[off + 1];
            continue;
        }
        if (lab & 0xc0u)
            return false;
        wire_len += (size_t)lab + 1;
        if (wire_len > DNSWIRE_MAX_NAME)
            return false;
        if (lab == 0) {
            if (end)
                *end = after ? after : off + 1;
            return true;
        }
        off += (size_t)lab + 1;
    }
}

/* As dnswire_rdata_each_name(); @p strict: a name that does not end within the rdata makes
 * the record malformed (false) instead of ending the walk. */
static bool rdata_each_name(const uint8_t *msg, size_t len, uint16_t type, size_t pos, size_t end,
                            dnswire_name_cb cb, void *arg, bool strict)
{
    const ldns_rr_descriptor *d = ldns_rr_descript(type);
    if (!d)
        return true;
    size_t nfields = ldns_rr_descriptor_maximum(d);
    for (size_t i = 0; pos < end && i < nfields; i++) {
        size_t flen;
        switch (ldns_rr_descriptor_field_type(d, i)) {
        case LDNS_RDF_TYPE_DNAME: {
            size_t after = dnswire_name_skip(msg, end, pos);
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

bool dnswire_rdata_each_name(const uint8_t *msg, size_t len, const struct dnswire_rr *rr,
                             dnswire_name_cb cb, void *arg)
{
    if (rr->sec == DNSWIRE_QD)
        return true;
    return rdata_each_name(msg, len, rr->type, rr->rdata_off, rr->rdata_off + rr->rdlen, cb, arg,
                           false);
}

static bool name_ok(const uint8_t *msg, size_t len, size_t off, void *arg)
{
    (void)arg;
    return dnswire_name_check(msg, len, off, NULL);
}

bool dnswire_rdata_check(const uint8_t *msg, size_t len, const struct dnswire_rr *rr)
{
    return rdata_each_name(msg, len, rr->type, rr->rdata_off, rr->rdata_off + rr->rdlen, name_ok,
                           NULL, true);
}

/* ---- lifetimes ---------------------------------------------------------------------------- */

static uint32_t sane_ttl(uint32_t t)
{
    return t > DNSWIRE_TTL_MAX ? 0 : t;
}

static uint32_t clamp_u32(uint32_t v, uint32_t lo, uint32_t hi)
{
    if (v < lo)
        v = lo;
    return v > hi ? hi : v;
}

/* SOA MINIMUM, the last of the five numbers after MNAME and RNAME. @return false when the
 * rdata does not hold them. */
static bool soa_minimum(const uint8_t *msg, const struct dnswire_rr *rr, uint32_t *out)
{
    size_t end = rr->rdata_off + rr->rdlen;
    size_t p = dnswire_name_skip(msg, end, rr->rdata_off);
    if (p)
        p = dnswire_name_skip(msg, end, p);
    if (p == 0 || end - p < 20)
        return false;
    *out = sane_ttl(dg_get32(msg + p + 16));
    return true;
}

uint32_t dnswire_record_ttl(const uint8_t *msg, const struct dnswire_rr *rr,
                            enum dnswire_answer_kind kind, const struct dnswire_ttl_policy *p)
{
    uint32_t t = sane_ttl(dg_get32(msg + rr->ttl_off));
    uint32_t soamin;
    switch (kind) {
    case DNSWIRE_POSITIVE:
        return clamp_u32(t, p->min_ttl, p->max_ttl);
    case DNSWIRE_NEGATIVE:
        /* Nothing in a negative answer outlives max_negative_ttl; the SOA says how long the
         * negative answer itself lives (RFC 2308 §3). */
        if (rr->sec == DNSWIRE_NS && rr->type == DNSWIRE_TYPE_SOA &&
            soa_minimum(msg, rr, &soamin) && soamin < t)
            t = soamin;
        return clamp_u32(t, p->min_ttl, p->max_negative_ttl);
    default:
        return t;
    }
}

uint32_t dnswire_answer_lifetime(const uint8_t *ans, size_t len, unsigned flags,
                                 const struct dnswire_ttl_policy *p,
                                 struct dnswire_answer_info *info)
{
    struct dnswire_answer_info dummy;
    if (!info)
        info = &dummy;
    memset(info, 0, sizeof(*info));
    if (!ans || len < DNSWIRE_HEADER_LEN || len > DNSWIRE_MAX_MSG)
        return 0;
    if (!(ans[2] & DNS_F2_QR) || (ans[2] & DNS_F2_OPCODE) || (ans[2] & DNS_F2_TC))
        return 0;

    enum dnswire_answer_kind kind;
    unsigned rcode = ans[3] & DNS_F3_RCODE;
    if (rcode == RCODE_SERVFAIL)
        kind = DNSWIRE_SERVFAIL;
    else if (rcode == RCODE_NXDOMAIN || (rcode == RCODE_NOERROR && hdr_count(ans, DNSWIRE_AN) == 0))
        kind = DNSWIRE_NEGATIVE;
    else if (rcode == RCODE_NOERROR)
        kind = DNSWIRE_POSITIVE;
    else
        return 0;

    uint32_t min_count = UINT32_MAX; /* smallest TTL of answer + authority */
    uint32_t soa = UINT32_MAX;       /* negative: smallest min(SOA TTL, MINIMUM) */
    size_t nttl = 0, ncount = 0, nopt = 0;
    struct dnswire_iter it;
    struct dnswire_rr rr;
    int r;
    dnswire_iter_init(&it, ans, len, flags);
    while ((r = dnswire_iter_next(&it, &rr)) == 1) {
        if (rr.sec == DNSWIRE_QD)
            continue;
        if (rr.type == DNSWIRE_TYPE_OPT) {
            /* OPT only in the additional section, at most once (RFC 6891 §6.1.1); an
             * extended rcode (BADVERS, BADCOOKIE...) is not an answer to keep. */
            if (rr.sec != DNSWIRE_AR || ++nopt > 1 || (dg_get32(ans + rr.ttl_off) >> 24) != 0)
                return 0;
            continue;
        }
        nttl++;
        if (rr.sec == DNSWIRE_AR)
            continue;
        ncount++;
        uint32_t t = sane_ttl(dg_get32(ans + rr.ttl_off));
        if (t < min_count)
            min_count = t;
        if (kind == DNSWIRE_NEGATIVE && rr.sec == DNSWIRE_NS && rr.type == DNSWIRE_TYPE_SOA) {
            uint32_t m;
            if (!soa_minimum(ans, &rr, &m))
                return 0;
            if (m < t)
                t = m;
            if (t < soa)
                soa = t;
        }
    }
    if (r < 0)
        return 0;

    uint32_t life;
    switch (kind) {
    case DNSWIRE_POSITIVE:
        if (ncount == 0)
            return 0;
        life = clamp_u32(min_count, p->min_ttl, p->max_ttl);
        break;
    case DNSWIRE_NEGATIVE:
        life = soa != UINT32_MAX ? soa : p->nosoa_negative_ttl;
        if (min_count < life)
            life = min_count;
        life = clamp_u32(life, p->min_ttl, p->max_negative_ttl);
        break;
    default:
        life =
            p->servfail_ttl < DNSWIRE_SERVFAIL_TTL_MAX ? p->servfail_ttl : DNSWIRE_SERVFAIL_TTL_MAX;
        break;
    }
    info->kind = kind;
    info->nttl = nttl;
    info->ncount = ncount;
    info->end = dnswire_iter_offset(&it);
    return life;
}

size_t dnswire_split_stream(uint8_t *buf, size_t len,
                            void (*frame)(void *arg, uint8_t *msg, size_t mlen), void *arg)
{
    size_t off = 0;
    while (len - off >= 2) {
        size_t flen = ((size_t)buf[off] << 8) | buf[off + 1];
        if (len - off - 2 < flen)
            break;
        frame(arg, buf + off + 2, flen);
        off += 2 + flen;
    }
    return off;
}

bool dnswire_edns_option(const uint8_t *msg, size_t len, uint16_t code, size_t *val_off,
                         size_t *val_len)
{
    struct dnswire_iter it;
    struct dnswire_rr rr;
    dnswire_iter_init(&it, msg, len, 0);
    int r;
    while ((r = dnswire_iter_next(&it, &rr)) > 0) {
        if (rr.sec != DNSWIRE_AR || rr.type != DNSWIRE_TYPE_OPT)
            continue;
        size_t p = rr.rdata_off, end = rr.rdata_off + rr.rdlen;
        while (end - p >= 4) {
            uint16_t oc = (uint16_t)((msg[p] << 8) | msg[p + 1]);
            size_t ol = ((size_t)msg[p + 2] << 8) | msg[p + 3];
            if (end - p - 4 < ol)
                return false;
            if (oc == code) {
                *val_off = p + 4;
                *val_len = ol;
                return true;
            }
            p += 4 + ol;
        }
        return false;
    }
    return false;
}

size_t dnswire_name_from_text(const char *text, size_t n, uint8_t out[DNSWIRE_MAX_NAME])
{
    if (n == 1 && text[0] == '.') {
        out[0] = 0;
        return 1;
    }
    if (n > 0 && text[n - 1] == '.')
        n--; /* absolute and relative spellings are the same name here */
    if (n == 0)
        return 0;
    size_t o = 0, label = 0; /* label: where its length octet sits */
    out[o++] = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)text[i];
        if (c == '.') {
            size_t l = o - label - 1;
            if (l == 0)
                return 0;
            out[label] = (uint8_t)l;
            label = o;
            if (o + 1 >= DNSWIRE_MAX_NAME)
                return 0;
            out[o++] = 0;
            continue;
        }
        if (c <= 0x20 || c >= 0x7f || c == '\\')
            return 0;
        if (o - label > 63 || o + 1 >= DNSWIRE_MAX_NAME)
            return 0;
        out[o++] = (uint8_t)(c >= 'A' && c <= 'Z' ? c + 32 : c);
    }
    size_t l = o - label - 1;
    if (l == 0 || l > 63)
        return 0;
    out[label] = (uint8_t)l;
    out[o++] = 0; /* the root label */
    return o;
}

void dnswire_name_lower(uint8_t *name, size_t len)
{
    size_t i = 0;
    while (i < len && name[i] != 0 && name[i] <= 63) {
        size_t end = i + 1 + name[i];
        for (size_t k = i + 1; k < end && k < len; k++) {
            if (name[k] >= 'A' && name[k] <= 'Z')
                name[k] = (uint8_t)(name[k] + 32);
        }
        i = end;
    }
}

size_t dnswire_name_to_text(const uint8_t *name, size_t len, char *out, size_t outlen)
{
    if (outlen == 0)
        return 0;
    size_t o = 0, i = 0;
    while (i < len && name[i] != 0 && name[i] <= 63) {
        size_t end = i + 1 + name[i];
        if (o > 0 && o + 1 < outlen)
            out[o++] = '.';
        for (size_t k = i + 1; k < end && k < len && o + 1 < outlen; k++) {
            unsigned char c = name[k];
            out[o++] = (char)(c <= 0x20 || c >= 0x7f || c == '.' ? '?' : c);
        }
        i = end;
    }
    if (o == 0 && outlen > 1)
        out[o++] = '.';
    out[o] = '\0';
    return o;
}
