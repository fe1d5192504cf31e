/*
 * ddr.c: DDR answers (RFC 9462), see ddr.h.
 *
 * The answer is dns_make_error_answer()'s NOERROR skeleton (ID, flags, question, OPT) with AA
 * set and the records inserted between the question and the OPT, as dns_make_any_answer()
 * does. Records are written by hand: a handful of fixed layouts, and an ldns packet per answer
 * would cost a dozen allocations for nothing. Owner names point at the question (offset 12);
 * SVCB TargetNames are never compressed (RFC 9460 §2.2), and the SOA's names are written out
 * (15 and 16 octets: not worth a pointer computation).
 */
#include "dohgate/ddr.h"

#include <arpa/inet.h>
#include <errno.h>
#include <string.h>
#include <sys/socket.h>

#include "dohgate/dns.h"
#include "dohgate/dnswire.h"

#define TYPE_SOA    6
#define CLASS_IN    1
#define KEY_ALPN    1
#define KEY_PORT    3
#define KEY_V4HINT  4
#define KEY_V6HINT  6
#define KEY_DOHPATH 7

/* "resolver.arpa." and "_dns" in wire form. */
static const uint8_t ZONE_WIRE[] = "\x08resolver\x04"
                                   "arpa";
#define ZONE_WIRE_LEN 15 /* with the root label (the array's NUL) */
static const uint8_t DNS_LABEL[] = "\x04_dns";
#define DNS_LABEL_LEN 5

/*
 * The SOA of the locally served zone, in RFC 6303 §3's layout (MNAME the zone, RNAME
 * nobody.invalid.), with TTL and MINIMUM DDR_TTL. The serial never changes: there is nothing to
 * transfer.
 */
static const uint8_t SOA_RNAME[] = "\x06nobody\x07invalid";
#define SOA_RNAME_LEN 16
#define SOA_SERIAL    1u
#define SOA_REFRESH   3600u
#define SOA_RETRY     1200u
#define SOA_EXPIRE    604800u

void ddr_endpoints_init(struct ddr_endpoints *ep)
{
    memset(ep, 0, sizeof(*ep));
}

/* Dotted name to wire form; 0 or -EINVAL. */
static int name_to_wire(const char *name, uint8_t *out, size_t *out_len)
{
    size_t n = 0;
    const char *p = name;
    if (!name || !*name || strcmp(name, ".") == 0)
        return -EINVAL;
    while (*p) {
        const char *start = p;
        while (*p && *p != '.') {
            if ((unsigned char)*p < 0x21 || (unsigned char)*p > 0x7e)
                return -EINVAL;
            p++;
        }
        size_t lab = (size_t)(p - start);
        if (lab == 0 || lab > 63 || n + 1 + lab + 1 > DDR_NAME_WIRE)
            return -EINVAL;
        out[n++] = (uint8_t)lab;
        memcpy(out + n, start, lab);
        n += lab;
        if (*p == '.')
            p++;
    }
    out[n++] = 0;
    *out_len = n;
    return 0;
}

int ddr_endpoints_set_target(struct ddr_endpoints *ep, const char *name)
{
    if (!ep)
        return -EINVAL;
    if (!name) {
        ep->target_len = 0;
        return 0;
    }
    uint8_t wire[DDR_NAME_WIRE];
    size_t n;
    if (name_to_wire(name, wire, &n) != 0)
        return -EINVAL;
    memcpy(ep->target, wire, n);
    ep->target_len = n;
    return 0;
}

int ddr_endpoints_set_doh(struct ddr_endpoints *ep, uint16_t port, const char *path_template)
{
    if (!ep)
        return -EINVAL;
    if (port == 0) {
        ep->doh_port = 0;
        ep->doh_path[0] = '\0';
        return 0;
    }
    if (!path_template || path_template[0] != '/' || !strstr(path_template, "{?dns}"))
        return -EINVAL;
    size_t n = strlen(path_template);
    if (n > DDR_DOHPATH_MAX)
        return -EINVAL;
    for (size_t i = 0; i < n; i++) {
        if ((unsigned char)path_template[i] < 0x21 || (unsigned char)path_template[i] > 0x7e)
            return -EINVAL;
    }
    memcpy(ep->doh_path, path_template, n + 1);
    ep->doh_port = port;
    return 0;
}

void ddr_endpoints_set_dot(struct ddr_endpoints *ep, uint16_t port)
{
    ep->dot_port = port;
}

int ddr_endpoints_add_hint_raw(struct ddr_endpoints *ep, int af, const void *addr)
{
    static const uint8_t zero[16];
    if (!ep || !addr)
        return -EINVAL;
    uint8_t *list; /* the family's array, DDR_MAX_HINTS addresses of alen bytes back to back */
    unsigned *count;
    size_t alen;
    if (af == AF_INET) {
        list = (uint8_t *)ep->v4;
        count = &ep->n_v4;
        alen = 4;
    } else if (af == AF_INET6) {
        list = (uint8_t *)ep->v6;
        count = &ep->n_v6;
        alen = 16;
    } else {
        return -EINVAL;
    }
    if (memcmp(addr, zero, alen) == 0)
        return -EINVAL;
    for (unsigned i = 0; i < *count; i++) {
        if (memcmp(list + i * alen, addr, alen) == 0)
            return 0;
    }
    if (*count >= DDR_MAX_HINTS)
        return -ENOSPC;
    memcpy(list + *count * alen, addr, alen);
    (*count)++;
    return 0;
}

int ddr_endpoints_add_hint(struct ddr_endpoints *ep, const char *addr)
{
    uint8_t buf[16];
    if (!ep || !addr)
        return -EINVAL;
    if (inet_pton(AF_INET, addr, buf) == 1)
        return ddr_endpoints_add_hint_raw(ep, AF_INET, buf);
    if (inet_pton(AF_INET6, addr, buf) == 1)
        return ddr_endpoints_add_hint_raw(ep, AF_INET6, buf);
    return -EINVAL;
}

static uint8_t lower(uint8_t c)
{
    return (c >= 'A' && c <= 'Z') ? (uint8_t)(c + ('a' - 'A')) : c;
}

/*
 * Case-insensitive comparison of two wire names of @p n octets at the same layout. Label length
 * octets are at most 63, below 'A', so comparing every octet through lower() compares lengths
 * exactly and letters without case.
 */
static bool wire_eq(const uint8_t *a, const uint8_t *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (lower(a[i]) != lower(b[i]))
            return false;
    }
    return true;
}

/* What the question of a DDR query is. */
struct ddr_q {
    enum ddr_match match;
    size_t qend; /* just past the question */
    uint16_t qtype;
    uint16_t qclass;
    bool svcb_name; /* the name is _dns.resolver.arpa or _dns.<target> */
    bool apex;      /* the name is resolver.arpa */
};

/*
 * Classify against the own name @p own (wire form, @p own_len octets, 0: none). The question
 * name sits at [12, qend - 4) without compression (dns_question_end() refuses pointers), so
 * every label boundary can be tried as the start of the "resolver.arpa." suffix.
 */
static void classify(const uint8_t *q, size_t len, const uint8_t *own, size_t own_len,
                     struct ddr_q *d)
{
    memset(d, 0, sizeof(*d));
    d->qend = dns_question_end(q, len);
    /* Only standard queries: a NOTIFY or UPDATE naming resolver.arpa, or a response, is not a
     * question DDR answers (the pipeline answers NOTIMP or drops it). */
    if (d->qend == 0 || (q[2] & (DNS_F2_QR | DNS_F2_OPCODE)) != 0)
        return;
    const uint8_t *name = q + DNS_HEADER_LEN;
    size_t nlen = d->qend - 4 - DNS_HEADER_LEN;
    d->qtype = dg_get16(q + d->qend - 4);
    d->qclass = dg_get16(q + d->qend - 2);

    /* Walk the labels: at most 127 steps, each within the question. */
    for (size_t off = 0; off < nlen && nlen - off >= ZONE_WIRE_LEN; off += (size_t)name[off] + 1) {
        if (nlen - off == ZONE_WIRE_LEN && wire_eq(name + off, ZONE_WIRE, ZONE_WIRE_LEN)) {
            d->match = DDR_RESOLVER_ARPA;
            d->apex = off == 0;
            d->svcb_name = off == DNS_LABEL_LEN && wire_eq(name, DNS_LABEL, DNS_LABEL_LEN);
            return;
        }
    }
    if (own_len && nlen == DNS_LABEL_LEN + own_len && wire_eq(name, DNS_LABEL, DNS_LABEL_LEN) &&
        wire_eq(name + DNS_LABEL_LEN, own, own_len) && d->qtype == DDR_TYPE_SVCB &&
        d->qclass == CLASS_IN) {
        d->match = DDR_OWN_NAME;
        d->svcb_name = true;
    }
}

enum ddr_match ddr_classify(const uint8_t *q, size_t len, const char *own_name)
{
    uint8_t own[DDR_NAME_WIRE];
    size_t own_len = 0;
    /* Every query comes through here: the own name is converted only when the question's
     * name (at least _dns and the root, 6 octets, to be one of ours) starts with _dns. */
    if (own_name && dns_question_end(q, len) >= DNS_HEADER_LEN + DNS_LABEL_LEN + 1 + 4 &&
        wire_eq(q + DNS_HEADER_LEN, DNS_LABEL, DNS_LABEL_LEN) &&
        name_to_wire(own_name, own, &own_len) != 0)
        own_len = 0;
    struct ddr_q d;
    classify(q, len, own, own_len, &d);
    return d.match;
}

/* Fixed-size writers into a local record buffer; the callers size it for the worst case. */
struct rrbuf {
    uint8_t b[2 * 1024 + 64];
    size_t n;
};

static void put8(struct rrbuf *r, uint8_t v)
{
    r->b[r->n++] = v;
}

static void put16(struct rrbuf *r, uint16_t v)
{
    dg_put16(r->b + r->n, v);
    r->n += 2;
}

static void put32(struct rrbuf *r, uint32_t v)
{
    put16(r, (uint16_t)(v >> 16));
    put16(r, (uint16_t)v);
}

static void put_bytes(struct rrbuf *r, const void *p, size_t n)
{
    memcpy(r->b + r->n, p, n);
    r->n += n;
}

/* Record header owned by the question's name; returns where RDLENGTH goes. */
static size_t put_rr_head(struct rrbuf *r, uint16_t type, uint32_t ttl)
{
    put8(r, 0xc0);
    put8(r, DNS_HEADER_LEN);
    put16(r, type);
    put16(r, CLASS_IN);
    put32(r, ttl);
    size_t at = r->n;
    put16(r, 0);
    return at;
}

static void end_rr(struct rrbuf *r, size_t rdlen_at)
{
    dg_put16(r->b + rdlen_at, (uint16_t)(r->n - rdlen_at - 2));
}

static void put_hints(struct rrbuf *r, const struct ddr_endpoints *ep)
{
    if (ep->n_v4) {
        put16(r, KEY_V4HINT);
        put16(r, (uint16_t)(4 * ep->n_v4));
        for (unsigned i = 0; i < ep->n_v4; i++)
            put_bytes(r, ep->v4[i], 4);
    }
    if (ep->n_v6) {
        put16(r, KEY_V6HINT);
        put16(r, (uint16_t)(16 * ep->n_v6));
        for (unsigned i = 0; i < ep->n_v6; i++)
            put_bytes(r, ep->v6[i], 16);
    }
}

/*
 * One SVCB record (RFC 9460 §2.2: priority, uncompressed TargetName, SvcParams in increasing
 * key order). @p alpn is the alpn value (length-prefixed protocol ids), @p port omitted when it
 * is the transport's default (RFC 9461 §4.2: a client assumes it), @p dohpath NULL for DoT.
 */
static void put_svcb(struct rrbuf *r, const struct ddr_endpoints *ep, uint16_t prio,
                     const char *alpn, size_t alpn_len, uint16_t port, uint16_t default_port,
                     const char *dohpath)
{
    size_t at = put_rr_head(r, DDR_TYPE_SVCB, DDR_TTL);
    put16(r, prio);
    put_bytes(r, ep->target, ep->target_len);
    put16(r, KEY_ALPN);
    put16(r, (uint16_t)alpn_len);
    put_bytes(r, alpn, alpn_len);
    if (port != default_port) {
        put16(r, KEY_PORT);
        put16(r, 2);
        put16(r, port);
    }
    put_hints(r, ep);
    if (dohpath) {
        size_t n = strlen(dohpath);
        put16(r, KEY_DOHPATH);
        put16(r, (uint16_t)n);
        put_bytes(r, dohpath, n);
    }
    end_rr(r, at);
}

/* The SOA of resolver.arpa, its names written out. */
static void put_soa(struct rrbuf *r)
{
    put_bytes(r, ZONE_WIRE, ZONE_WIRE_LEN);
    put16(r, TYPE_SOA);
    put16(r, CLASS_IN);
    put32(r, DDR_TTL);
    size_t at = r->n;
    put16(r, 0);
    put_bytes(r, ZONE_WIRE, ZONE_WIRE_LEN);
    put_bytes(r, SOA_RNAME, SOA_RNAME_LEN);
    put32(r, SOA_SERIAL);
    put32(r, SOA_REFRESH);
    put32(r, SOA_RETRY);
    put32(r, SOA_EXPIRE);
    put32(r, DDR_TTL);
    end_rr(r, at);
}

/*
 * Worst case of the records: two SVCB records of 12 (head) + 2 + 255 (target) + 16 (alpn) +
 * 6 (port) + 4 + 32 + 4 + 128 (hints) + 4 + DDR_DOHPATH_MAX (dohpath) octets, or one SOA of
 * 12 + 15 + 10 + 15 + 16 + 20. struct rrbuf is sized above both.
 */
_Static_assert(2 * (12 + 2 + DDR_NAME_WIRE + 16 + 6 + 4 + 4 * DDR_MAX_HINTS + 4 +
                    16 * DDR_MAX_HINTS + 4 + DDR_DOHPATH_MAX) <=
                   sizeof(((struct rrbuf *)0)->b),
               "rrbuf too small");

int ddr_answer(const uint8_t *q, size_t len, const struct ddr_endpoints *ep, struct dg_buf *out)
{
    if (!q || !ep || !out)
        return -EINVAL;
    /* The fields are public: endpoints filled by hand past the setters' limits would overrun
     * the record buffer. */
    if (ep->n_v4 > DDR_MAX_HINTS || ep->n_v6 > DDR_MAX_HINTS || ep->target_len > DDR_NAME_WIRE ||
        (ep->doh_port && strnlen(ep->doh_path, sizeof(ep->doh_path)) > DDR_DOHPATH_MAX))
        return -EINVAL;
    struct ddr_q d;
    classify(q, len, ep->target, ep->target_len, &d);
    if (d.match == DDR_NOT_DDR)
        return -EINVAL;

    struct rrbuf r;
    r.n = 0;
    uint16_t an = 0, ns = 0;
    bool svcb = d.svcb_name && d.qtype == DDR_TYPE_SVCB && d.qclass == CLASS_IN;
    if (svcb && ep->target_len && (ep->doh_port || ep->dot_port)) {
        if (ep->doh_port) {
            put_svcb(&r, ep, DDR_PRIO_DOH, "\x02h2\x08http/1.1", 12, ep->doh_port, DDR_DEFAULT_DOH,
                     ep->doh_path);
            an++;
        }
        if (ep->dot_port) {
            put_svcb(&r, ep, DDR_PRIO_DOT,
                     "\x03"
                     "dot",
                     4, ep->dot_port, DDR_DEFAULT_DOT, NULL);
            an++;
        }
    } else if (d.match == DDR_RESOLVER_ARPA && d.qclass == CLASS_IN) {
        /* The apex's own SOA is data; everywhere else it marks the NODATA (RFC 2308 §3). The
         * zone is class IN: another class gets a bare NODATA. */
        put_soa(&r);
        if (d.apex && d.qtype == TYPE_SOA && d.qclass == CLASS_IN)
            an++;
        else
            ns++;
    }
    /* else: _dns.<target> SVCB with no endpoint (no SOA for a zone not ours), or a class other
     * than IN under resolver.arpa: NODATA without SOA. */

    size_t start = out->len;
    int rc = dns_make_error_answer(q, len, DNS_RCODE_NOERROR, out);
    if (rc != 0)
        return rc;
    if (dg_buf_reserve(out, r.n) != 0) {
        out->len = start;
        return -ENOMEM;
    }
    uint8_t *m = out->data + start;
    size_t mlen = out->len - start;
    /* The skeleton copies the question at the same offset as the query; the OPT (if any)
     * follows it and moves up past the records. */
    memmove(m + d.qend + r.n, m + d.qend, mlen - d.qend);
    memcpy(m + d.qend, r.b, r.n);
    out->len += r.n;
    /* AA: resolver.arpa is a zone served here (RFC 6303 §3), and _dns.<target> is data about
     * this server that it states itself. */
    m[2] |= DNS_F2_AA;
    dg_put16(m + 6, an);
    dg_put16(m + 8, ns);
    return 0;
}

enum ddr_match ddr_classify_ep(const uint8_t *q, size_t len, const struct ddr_endpoints *ep)
{
    /* The target is kept in wire form: no name conversion per query (this runs for every
     * query of every transport while ddr is on). */
    struct ddr_q d;
    classify(q, len, ep->target, ep->target_len, &d);
    return d.match;
}
