/*
 * localdata.c: local records and local zones (see localdata.h).
 *
 * Building: every record is appended to one array as it comes (owner and rdata in two byte
 * arenas, by offset, since the arenas grow); zones likewise. localdata_finish() sorts once and
 * freezes: records sorted by (owner, type, class, rdata) to drop duplicates, hosts-made PTRs
 * thinned to the first line's, then sorted again by (owner, type, class, order of addition) so
 * that an RRset answers in the order it was written; one node per owner name, plus one empty
 * node per empty non-terminal (every ancestor of an owner, the root excepted), in a nameset
 * whose value is the node's index + 1 (a nameset match needs a non-zero value); zones in a
 * second nameset, a name given twice keeping the last type given.
 *
 * Answering reads the frozen arrays only, so any number of threads may answer at once. The
 * path of a name that is not local (nearly every query) is one nameset_match() for the zone,
 * one nameset_get() for the name, and no allocation; a local answer allocates only when it has
 * more records than fit in a small array on the stack.
 */
#include "dohgate/localdata.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <ldns/ldns.h>

#include "dohgate/dns.h"
#include "dohgate/dnswire.h"
#include "dohgate/nameset.h"

#define TYPE_A     1
#define TYPE_CNAME 5
#define TYPE_SOA   DNSWIRE_TYPE_SOA
#define TYPE_PTR   12
#define TYPE_AAAA  28
#define TYPE_ANY   255
#define CLASS_IN   1

#define MAX_CNAME_LINKS 8 /* localdata.h rule 1 */
#define STACK_RRS       16

/* RFC 6303 §4, RFC 7793, RFC 6761 §6, RFC 8375, RFC 9476, RFC 7686. */
const char *const localdata_default_zones[] = {
    /* RFC 6303 §4.1: RFC 1918 reverse zones */
    "10.in-addr.arpa",
    "16.172.in-addr.arpa",
    "17.172.in-addr.arpa",
    "18.172.in-addr.arpa",
    "19.172.in-addr.arpa",
    "20.172.in-addr.arpa",
    "21.172.in-addr.arpa",
    "22.172.in-addr.arpa",
    "23.172.in-addr.arpa",
    "24.172.in-addr.arpa",
    "25.172.in-addr.arpa",
    "26.172.in-addr.arpa",
    "27.172.in-addr.arpa",
    "28.172.in-addr.arpa",
    "29.172.in-addr.arpa",
    "30.172.in-addr.arpa",
    "31.172.in-addr.arpa",
    "168.192.in-addr.arpa",
    /* RFC 6303 §4.2-4.5: this network, loopback, link local, documentation, broadcast */
    "0.in-addr.arpa",
    "127.in-addr.arpa",
    "254.169.in-addr.arpa",
    "2.0.192.in-addr.arpa",
    "100.51.198.in-addr.arpa",
    "113.0.203.in-addr.arpa",
    "255.255.255.255.in-addr.arpa",
    /* RFC 6303 §4.6-4.8: the IPv6 unspecified and loopback addresses, ULA, link local,
     * the deprecated site local, documentation */
    "0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa",
    "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa",
    "d.f.ip6.arpa",
    "8.e.f.ip6.arpa",
    "9.e.f.ip6.arpa",
    "a.e.f.ip6.arpa",
    "b.e.f.ip6.arpa",
    "8.b.d.0.1.0.0.2.ip6.arpa",
    /* RFC 7793: the shared address space 100.64.0.0/10 */
    "64.100.in-addr.arpa",
    "65.100.in-addr.arpa",
    "66.100.in-addr.arpa",
    "67.100.in-addr.arpa",
    "68.100.in-addr.arpa",
    "69.100.in-addr.arpa",
    "70.100.in-addr.arpa",
    "71.100.in-addr.arpa",
    "72.100.in-addr.arpa",
    "73.100.in-addr.arpa",
    "74.100.in-addr.arpa",
    "75.100.in-addr.arpa",
    "76.100.in-addr.arpa",
    "77.100.in-addr.arpa",
    "78.100.in-addr.arpa",
    "79.100.in-addr.arpa",
    "80.100.in-addr.arpa",
    "81.100.in-addr.arpa",
    "82.100.in-addr.arpa",
    "83.100.in-addr.arpa",
    "84.100.in-addr.arpa",
    "85.100.in-addr.arpa",
    "86.100.in-addr.arpa",
    "87.100.in-addr.arpa",
    "88.100.in-addr.arpa",
    "89.100.in-addr.arpa",
    "90.100.in-addr.arpa",
    "91.100.in-addr.arpa",
    "92.100.in-addr.arpa",
    "93.100.in-addr.arpa",
    "94.100.in-addr.arpa",
    "95.100.in-addr.arpa",
    "96.100.in-addr.arpa",
    "97.100.in-addr.arpa",
    "98.100.in-addr.arpa",
    "99.100.in-addr.arpa",
    "100.100.in-addr.arpa",
    "101.100.in-addr.arpa",
    "102.100.in-addr.arpa",
    "103.100.in-addr.arpa",
    "104.100.in-addr.arpa",
    "105.100.in-addr.arpa",
    "106.100.in-addr.arpa",
    "107.100.in-addr.arpa",
    "108.100.in-addr.arpa",
    "109.100.in-addr.arpa",
    "110.100.in-addr.arpa",
    "111.100.in-addr.arpa",
    "112.100.in-addr.arpa",
    "113.100.in-addr.arpa",
    "114.100.in-addr.arpa",
    "115.100.in-addr.arpa",
    "116.100.in-addr.arpa",
    "117.100.in-addr.arpa",
    "118.100.in-addr.arpa",
    "119.100.in-addr.arpa",
    "120.100.in-addr.arpa",
    "121.100.in-addr.arpa",
    "122.100.in-addr.arpa",
    "123.100.in-addr.arpa",
    "124.100.in-addr.arpa",
    "125.100.in-addr.arpa",
    "126.100.in-addr.arpa",
    "127.100.in-addr.arpa",
    /* RFC 6761 §6.3-6.4. Not "test" (§6.2): test zones are what labs and CI serve from their
     * own servers behind the resolver (dohgate's own tests do: dohgate.test on NSD), and a
     * resolver that swallowed them would break those setups for nothing; a local-zone test
     * makes it local. */
    "localhost",
    "invalid",
    /* RFC 8375 */
    "home.arpa",
    /* RFC 9476 */
    "alt",
    /* RFC 7686 §2: resolvers and their APIs answer NXDOMAIN for .onion */
    "onion",
    NULL,
};

/* One record. Offsets until localdata_finish() (the arenas move as they grow), pointers after. */
struct ld_rr {
    size_t owner_off, rdata_off;
    const uint8_t *owner, *rdata;
    uint32_t ttl;
    uint32_t seq; /* order of addition */
    uint16_t type, rclass, rdlen;
    uint8_t owner_len;
    bool hosts_ptr; /* a PTR made from a hosts-file line (first line wins) */
};

/* The records of one owner name, rrs[first .. first + n): sorted by type, class. No records:
 * an empty non-terminal. */
struct ld_node {
    size_t first, n;
};

struct ld_zone {
    size_t name_off;
    const uint8_t *name;
    uint8_t name_len;
    enum localdata_zone_type type;
    uint32_t seq;
    const struct ld_rr *soa; /* local-record's SOA at the apex, or NULL: synthesized */
};

#define LD_MAX_TLDS 32

struct localdata {
    struct dg_buf names; /* owner and zone names, lower-cased wire */
    struct dg_buf rdata;
    struct ld_rr *rrs;
    size_t n_rrs, cap_rrs;
    struct ld_zone *zones;
    size_t n_zones, cap_zones;
    uint32_t seq;
    /* built by localdata_finish() */
    bool finished;
    struct ld_node *nodes;
    size_t n_nodes, cap_nodes;
    struct nameset *node_set; /* owner names and empty non-terminals, value: node index + 1 */
    struct nameset *zone_set; /* value: zone index + 1 */
    /* The last labels (top-level domains) of every zone and owner name: a query under none of
     * them (nearly all: not arpa, localhost, invalid, onion, alt...) is not local, decided
     * without the two lookups. tld_any: too many, or the root: always look. */
    uint8_t tld[LD_MAX_TLDS][64];
    size_t n_tld;
    bool tld_any;
};

/* "ZONE. 300 IN SOA localhost. nobody.invalid. 1 3600 1200 604800 300" (localdata.h) */
static const uint8_t synth_soa[] = {
    9,   'l',  'o',  'c', 'a', 'l',  'h',  'o', 's',  't',  0,    6, 'n', 'o',  'b',  'o',
    'd', 'y',  7,    'i', 'n', 'v',  'a',  'l', 'i',  'd',  0,    0, 0,   0,    1,    0,
    0,   0x0e, 0x10, 0,   0,   0x04, 0xb0, 0,   0x09, 0x3a, 0x80, 0, 0,   0x01, 0x2c,
};
#define SYNTH_SOA_TTL 300u

/* The offset of the last label of a wire name: -1 for the root, -2 when malformed. */
static int last_label(const uint8_t *name, size_t len)
{
    size_t i = 0;
    int last = -1;
    while (i < len && name[i] != 0) {
        if (name[i] > 63 || i + 1 + name[i] >= len)
            return -2;
        last = (int)i;
        i += 1u + name[i];
    }
    return i < len ? last : -2;
}

static uint8_t lower(uint8_t c)
{
    return c >= 'A' && c <= 'Z' ? (uint8_t)(c + 32) : c;
}

/* Is the label at @p l one of ld->tld (case-insensitive)? */
static bool tld_has(const struct localdata *ld, const uint8_t *l)
{
    for (size_t k = 0; k < ld->n_tld; k++) {
        const uint8_t *t = ld->tld[k];
        if (t[0] != l[0])
            continue;
        size_t i = 1;
        while (i <= l[0] && t[i] == lower(l[i]))
            i++;
        if (i > l[0])
            return true;
    }
    return false;
}

static void tld_add(struct localdata *ld, const uint8_t *name, size_t len)
{
    if (ld->tld_any)
        return;
    int o = last_label(name, len);
    if (o < 0 || ld->n_tld == LD_MAX_TLDS) {
        ld->tld_any = true; /* the root (or a name the sets refused anyway), or too many */
        return;
    }
    if (tld_has(ld, name + o))
        return;
    for (size_t i = 0; i <= name[o]; i++)
        ld->tld[ld->n_tld][i] = lower(name[o + i]);
    ld->n_tld++;
}

/* Could anything local be at or under @p name? false: certainly not. */
static bool tld_maybe(const struct localdata *ld, const uint8_t *name, size_t len)
{
    if (ld->tld_any)
        return true;
    int o = last_label(name, len);
    if (o == -1)
        return false; /* the root: only a root zone is local there (tld_any) */
    return o < 0 || tld_has(ld, name + o);
}

struct localdata *localdata_new(void)
{
    return calloc(1, sizeof(struct localdata));
}

void localdata_free(struct localdata *ld)
{
    if (!ld)
        return;
    dg_buf_free(&ld->names);
    dg_buf_free(&ld->rdata);
    free(ld->rrs);
    free(ld->zones);
    free(ld->nodes);
    nameset_free(ld->node_set);
    nameset_free(ld->zone_set);
    free(ld);
}

size_t localdata_records(const struct localdata *ld)
{
    return ld ? ld->n_rrs : 0;
}

/* Length of the uncompressed wire name @p name if it is exactly @p len octets long, else 0. */
static size_t wire_name_len(const uint8_t *name, size_t len)
{
    if (!name || len == 0 || len > DNSWIRE_MAX_NAME)
        return 0;
    size_t off = 0;
    for (;;) {
        if (off >= len)
            return 0;
        uint8_t lab = name[off];
        if (lab & 0xc0u)
            return 0;
        off += (size_t)lab + 1;
        if (lab == 0)
            return off == len ? len : 0;
    }
}

static int grow(void **arr, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return 0;
    size_t ncap = *cap ? *cap * 2 : 16;
    while (ncap < need)
        ncap *= 2;
    void *p = realloc(*arr, ncap * elem);
    if (!p)
        return -ENOMEM;
    *arr = p;
    *cap = ncap;
    return 0;
}

/* Append a record; the arenas and the array are left as they were on -ENOMEM. */
static int add_record(struct localdata *ld, const uint8_t *owner, size_t owner_len, uint16_t type,
                      uint16_t rclass, uint32_t ttl, const uint8_t *rdata, size_t rdlen,
                      bool hosts_ptr)
{
    if (ld->finished || rdlen > 0xffff || ld->seq == UINT32_MAX)
        return -EINVAL;
    if (grow((void **)&ld->rrs, &ld->cap_rrs, ld->n_rrs + 1, sizeof(*ld->rrs)) != 0)
        return -ENOMEM;
    size_t names_len = ld->names.len;
    if (dg_buf_append(&ld->names, owner, owner_len) != 0)
        return -ENOMEM;
    /* dg_buf_append(p, 0) would append nothing anyway; skip it for rdata NULL */
    if (rdlen && dg_buf_append(&ld->rdata, rdata, rdlen) != 0) {
        ld->names.len = names_len;
        return -ENOMEM;
    }
    dnswire_name_lower(ld->names.data + names_len, owner_len);
    ld->rrs[ld->n_rrs++] = (struct ld_rr){
        .owner_off = names_len,
        .rdata_off = ld->rdata.len - rdlen,
        .ttl = ttl,
        .seq = ld->seq++,
        .type = type,
        .rclass = rclass,
        .rdlen = (uint16_t)rdlen,
        .owner_len = (uint8_t)owner_len,
        .hosts_ptr = hosts_ptr,
    };
    return 0;
}

static void set_err(char *err, size_t errlen, const char *msg)
{
    if (err && errlen)
        snprintf(err, errlen, "%s", msg);
}

int localdata_add_rr(struct localdata *ld, const char *text, char *err, size_t errlen)
{
    if (!ld || !text || ld->finished) {
        set_err(err, errlen, "invalid argument");
        return -EINVAL;
    }
    ldns_rdf *origin = ldns_dname_new_frm_str(".");
    ldns_buffer *buf = ldns_buffer_new(256);
    ldns_rr *rr = NULL;
    int rc = -ENOMEM;
    if (!origin || !buf) {
        set_err(err, errlen, "out of memory");
        goto out;
    }
    ldns_status st = ldns_rr_new_frm_str(&rr, text, 3600, origin, NULL);
    if (st != LDNS_STATUS_OK) {
        rr = NULL;
        set_err(err, errlen, ldns_get_errorstr_by_id(st));
        rc = st == LDNS_STATUS_MEM_ERR ? -ENOMEM : -EINVAL;
        goto out;
    }
    rc = -EINVAL;
    uint16_t type = (uint16_t)ldns_rr_get_type(rr);
    uint16_t rclass = (uint16_t)ldns_rr_get_class(rr);
    /* Data only: OPT and the query-only types (RFC 6895 §3.1: 128-255 are meta and question
     * types, ANY among them) and classes (NONE, ANY) are never records of a zone. */
    if (type == DNSWIRE_TYPE_OPT || (type >= 128 && type <= 255)) {
        set_err(err, errlen, "not a data record type");
        goto out;
    }
    if (rclass == 254 || rclass == 255) {
        set_err(err, errlen, "not a data record class");
        goto out;
    }
    if (ldns_rr_ttl(rr) > DNSWIRE_TTL_MAX) {
        /* RFC 2181 §8: a resolver would read it as 0; say so now rather than serve that */
        set_err(err, errlen, "TTL over 2147483647");
        goto out;
    }
    if (ldns_rr_rd_count(rr) == 0) {
        set_err(err, errlen, "no rdata");
        goto out;
    }
    const ldns_rdf *owner = ldns_rr_owner(rr);
    if (!owner || ldns_rdf_get_type(owner) != LDNS_RDF_TYPE_DNAME ||
        !wire_name_len(ldns_rdf_data(owner), ldns_rdf_size(owner))) {
        set_err(err, errlen, "bad owner name");
        goto out;
    }
    st = ldns_rr_rdata2buffer_wire(buf, rr);
    if (st != LDNS_STATUS_OK || ldns_buffer_position(buf) > 0xffff) {
        set_err(err, errlen, st == LDNS_STATUS_OK ? "rdata too long" : ldns_get_errorstr_by_id(st));
        rc = st == LDNS_STATUS_MEM_ERR ? -ENOMEM : -EINVAL;
        goto out;
    }
    rc = add_record(ld, ldns_rdf_data(owner), ldns_rdf_size(owner), type, rclass, ldns_rr_ttl(rr),
                    ldns_buffer_begin(buf), ldns_buffer_position(buf), false);
    if (rc != 0)
        set_err(err, errlen, rc == -ENOMEM ? "out of memory" : "invalid argument");
out:
    ldns_rr_free(rr);
    ldns_buffer_free(buf);
    ldns_rdf_deep_free(origin);
    return rc;
}

/* The reverse name of an address: "d.c.b.a.in-addr.arpa." or 32 nibbles ".ip6.arpa.". */
static size_t reverse_name(int family, const uint8_t *addr, uint8_t out[DNSWIRE_MAX_NAME])
{
    static const char hex[] = "0123456789abcdef";
    size_t n = 0;
    if (family == AF_INET) {
        for (int i = 3; i >= 0; i--) {
            char dec[4];
            int l = snprintf(dec, sizeof(dec), "%u", addr[i]);
            out[n++] = (uint8_t)l;
            memcpy(out + n, dec, (size_t)l);
            n += (size_t)l;
        }
        memcpy(out + n,
               "\x07in-addr\x04"
               "arpa",
               14);
        return n + 14;
    }
    for (int i = 15; i >= 0; i--) {
        out[n++] = 1;
        out[n++] = (uint8_t)hex[addr[i] & 0xf];
        out[n++] = 1;
        out[n++] = (uint8_t)hex[addr[i] >> 4];
    }
    memcpy(out + n,
           "\x03ip6\x04"
           "arpa",
           10);
    return n + 10;
}

int localdata_add_host(struct localdata *ld, int family, const uint8_t *addr, const uint8_t *name,
                       size_t len, bool first)
{
    if (!ld || !addr || ld->finished || (family != AF_INET && family != AF_INET6) ||
        !wire_name_len(name, len))
        return -EINVAL;
    size_t alen = family == AF_INET ? 4 : 16;
    size_t mark = ld->n_rrs, names = ld->names.len, rdata = ld->rdata.len;
    int rc = add_record(ld, name, len, family == AF_INET ? TYPE_A : TYPE_AAAA, CLASS_IN,
                        LOCALDATA_HOSTS_TTL, addr, alen, false);
    if (rc != 0 || !first)
        return rc;
    uint8_t rev[DNSWIRE_MAX_NAME];
    size_t rlen = reverse_name(family, addr, rev);
    /* The PTR's target is the name as written (lower-cased, as every name here). */
    uint8_t target[DNSWIRE_MAX_NAME];
    memcpy(target, name, len);
    dnswire_name_lower(target, len);
    rc = add_record(ld, rev, rlen, TYPE_PTR, CLASS_IN, LOCALDATA_HOSTS_TTL, target, len, true);
    if (rc != 0) {
        /* a failing call took nothing: drop the address record too */
        ld->n_rrs = mark;
        ld->names.len = names;
        ld->rdata.len = rdata;
    }
    return rc;
}

int localdata_add_localhost(struct localdata *ld)
{
    static const uint8_t name[] = {9, 'l', 'o', 'c', 'a', 'l', 'h', 'o', 's', 't', 0};
    static const uint8_t v4[4] = {127, 0, 0, 1};
    static const uint8_t v6[16] = {[15] = 1};
    if (!ld)
        return -EINVAL;
    size_t mark = ld->n_rrs, names = ld->names.len, rdata = ld->rdata.len;
    int rc = localdata_add_host(ld, AF_INET, v4, name, sizeof(name), true);
    if (rc == 0)
        rc = localdata_add_host(ld, AF_INET6, v6, name, sizeof(name), true);
    if (rc != 0) {
        ld->n_rrs = mark;
        ld->names.len = names;
        ld->rdata.len = rdata;
    }
    return rc;
}

int localdata_add_zone(struct localdata *ld, const uint8_t *name, size_t len,
                       enum localdata_zone_type type)
{
    if (!ld || ld->finished || !wire_name_len(name, len) ||
        (type != LOCALDATA_STATIC && type != LOCALDATA_FORWARD) || ld->seq == UINT32_MAX)
        return -EINVAL;
    if (grow((void **)&ld->zones, &ld->cap_zones, ld->n_zones + 1, sizeof(*ld->zones)) != 0)
        return -ENOMEM;
    size_t off = ld->names.len;
    if (dg_buf_append(&ld->names, name, len) != 0)
        return -ENOMEM;
    dnswire_name_lower(ld->names.data + off, len);
    ld->zones[ld->n_zones++] = (struct ld_zone){
        .name_off = off,
        .name_len = (uint8_t)len,
        .type = type,
        .seq = ld->seq++,
    };
    return 0;
}

/* ---- localdata_finish --------------------------------------------------------------------- */

static int cmp_bytes(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
    int c = memcmp(a, b, alen < blen ? alen : blen);
    if (c)
        return c;
    return alen < blen ? -1 : alen > blen;
}

static int cmp_rrset(const struct ld_rr *a, const struct ld_rr *b)
{
    int c = cmp_bytes(a->owner, a->owner_len, b->owner, b->owner_len);
    if (c)
        return c;
    if (a->type != b->type)
        return a->type < b->type ? -1 : 1;
    if (a->rclass != b->rclass)
        return a->rclass < b->rclass ? -1 : 1;
    return 0;
}

/* (owner, type, class, rdata, order): duplicates side by side, the first added first */
static int cmp_rr_data(const void *pa, const void *pb)
{
    const struct ld_rr *a = pa, *b = pb;
    int c = cmp_rrset(a, b);
    if (!c)
        c = cmp_bytes(a->rdata, a->rdlen, b->rdata, b->rdlen);
    if (!c && a->seq != b->seq)
        c = a->seq < b->seq ? -1 : 1;
    return c;
}

/* (owner, type, class, order): an RRset in the order it was written */
static int cmp_rr_order(const void *pa, const void *pb)
{
    const struct ld_rr *a = pa, *b = pb;
    int c = cmp_rrset(a, b);
    if (!c && a->seq != b->seq)
        c = a->seq < b->seq ? -1 : 1;
    return c;
}

static int cmp_zone(const void *pa, const void *pb)
{
    const struct ld_zone *a = pa, *b = pb;
    int c = cmp_bytes(a->name, a->name_len, b->name, b->name_len);
    if (!c && a->seq != b->seq)
        c = a->seq < b->seq ? -1 : 1;
    return c;
}

/*
 * Drop duplicate records (the first added stays, with its TTL) and the hosts-made PTRs that lose:
 * an address named by several hosts lines keeps the PTR of the first (glibc answers it), and a
 * local-record PTR for the address, written on purpose, beats them all.
 */
static void dedupe(struct localdata *ld)
{
    struct ld_rr *r = ld->rrs;
    size_t n = ld->n_rrs, out = 0;
    if (n == 0)
        return; /* qsort(NULL, 0) is undefined */
    qsort(r, n, sizeof(*r), cmp_rr_data);
    for (size_t i = 0; i < n;) {
        size_t j = i + 1;
        while (j < n && cmp_rrset(&r[i], &r[j]) == 0)
            j++;
        /* r[i..j): one RRset, by rdata */
        bool ptr_set = r[i].type == TYPE_PTR;
        bool explicit_ptr = false;
        uint32_t first_hosts = UINT32_MAX;
        for (size_t k = i; ptr_set && k < j; k++) {
            if (!r[k].hosts_ptr)
                explicit_ptr = true;
            else if (r[k].seq < first_hosts)
                first_hosts = r[k].seq;
        }
        size_t set_start = out;
        for (size_t k = i; k < j; k++) {
            if (out > set_start && r[out - 1].rdlen == r[k].rdlen &&
                memcmp(r[out - 1].rdata, r[k].rdata, r[k].rdlen) == 0)
                continue; /* the same record as the one kept before it */
            if (r[k].hosts_ptr && (explicit_ptr || r[k].seq != first_hosts))
                continue;
            r[out++] = r[k];
        }
        i = j;
    }
    ld->n_rrs = out;
    qsort(r, out, sizeof(*r), cmp_rr_order);
}

static int node_add(struct localdata *ld, const uint8_t *name, size_t len, size_t first, size_t n)
{
    if (grow((void **)&ld->nodes, &ld->cap_nodes, ld->n_nodes + 1, sizeof(*ld->nodes)) != 0)
        return -ENOMEM;
    if (ld->n_nodes >= UINT32_MAX - 1)
        return -ENOMEM;
    int rc = nameset_add(ld->node_set, name, len, (uint32_t)(ld->n_nodes + 1));
    if (rc != 0)
        return rc;
    ld->nodes[ld->n_nodes++] = (struct ld_node){.first = first, .n = n};
    return 0;
}

/* The node a nameset value names, or NULL. The set keeps fingerprints, not names (nameset.h):
 * two names with the same 64-bit fingerprint would share a value OR-ed from both indexes, so
 * a value is checked against the array before it is used (a wrong answer at odds of 2^-63,
 * never a read out of bounds). */
static const struct ld_node *node_of(const struct localdata *ld, uint32_t v)
{
    return v >= 1 && v <= ld->n_nodes ? &ld->nodes[v - 1] : NULL;
}

static const struct ld_zone *zone_of(const struct localdata *ld, uint32_t v)
{
    return v >= 1 && v <= ld->n_zones ? &ld->zones[v - 1] : NULL;
}

/* Empty non-terminals: every ancestor of @p name below the root that holds nothing itself. */
static int add_ancestors(struct localdata *ld, const uint8_t *name, size_t len)
{
    size_t off = 0;
    while (name[off] != 0) {
        off += (size_t)name[off] + 1;
        if (name[off] == 0)
            break; /* the root is never a local name */
        uint32_t v;
        if (nameset_get(ld->node_set, name + off, len - off, &v))
            break; /* there already, and so are its own ancestors (or they will be) */
        int rc = node_add(ld, name + off, len - off, 0, 0);
        if (rc != 0)
            return rc;
    }
    return 0;
}

int localdata_finish(struct localdata *ld)
{
    if (!ld || ld->finished)
        return -EINVAL;
    for (size_t i = 0; i < ld->n_rrs; i++) {
        ld->rrs[i].owner = ld->names.data + ld->rrs[i].owner_off;
        /* no rdata arena at all when every record is empty: a pointer to nothing */
        ld->rrs[i].rdata = ld->rdata.data ? ld->rdata.data + ld->rrs[i].rdata_off : synth_soa;
    }
    for (size_t i = 0; i < ld->n_zones; i++)
        ld->zones[i].name = ld->names.data + ld->zones[i].name_off;
    dedupe(ld);

    ld->node_set = nameset_new(ld->n_rrs + 1);
    ld->zone_set = nameset_new(ld->n_zones + 1);
    if (!ld->node_set || !ld->zone_set)
        return -ENOMEM;
    int rc;
    for (size_t i = 0; i < ld->n_rrs;) {
        size_t j = i + 1;
        while (j < ld->n_rrs && cmp_bytes(ld->rrs[i].owner, ld->rrs[i].owner_len, ld->rrs[j].owner,
                                          ld->rrs[j].owner_len) == 0)
            j++;
        if ((rc = node_add(ld, ld->rrs[i].owner, ld->rrs[i].owner_len, i, j - i)) != 0)
            return rc;
        i = j;
    }
    for (size_t i = 0, n = ld->n_nodes; i < n; i++) {
        const struct ld_rr *r = &ld->rrs[ld->nodes[i].first];
        if ((rc = add_ancestors(ld, r->owner, r->owner_len)) != 0)
            return rc;
    }

    /* Zones: the last type given for a name wins. */
    if (ld->n_zones)
        qsort(ld->zones, ld->n_zones, sizeof(*ld->zones), cmp_zone);
    size_t nz = 0;
    for (size_t i = 0; i < ld->n_zones; i++) {
        if (i + 1 < ld->n_zones && cmp_bytes(ld->zones[i].name, ld->zones[i].name_len,
                                             ld->zones[i + 1].name, ld->zones[i + 1].name_len) == 0)
            continue;
        ld->zones[nz++] = ld->zones[i];
    }
    ld->n_zones = nz;
    for (size_t i = 0; i < ld->n_rrs; i++)
        tld_add(ld, ld->rrs[i].owner, ld->rrs[i].owner_len);
    for (size_t i = 0; i < nz; i++)
        tld_add(ld, ld->zones[i].name, ld->zones[i].name_len);
    for (size_t i = 0; i < nz; i++) {
        struct ld_zone *z = &ld->zones[i];
        if ((rc = nameset_add(ld->zone_set, z->name, z->name_len, (uint32_t)(i + 1))) != 0)
            return rc;
        /* local-record's SOA at the apex is the zone's own (its first, if several) */
        uint32_t v;
        z->soa = NULL;
        const struct ld_node *nd =
            nameset_get(ld->node_set, z->name, z->name_len, &v) ? node_of(ld, v) : NULL;
        if (nd) {
            for (size_t k = nd->first; k < nd->first + nd->n && !z->soa; k++) {
                if (ld->rrs[k].type == TYPE_SOA && ld->rrs[k].rclass == CLASS_IN)
                    z->soa = &ld->rrs[k];
            }
        }
    }
    ld->finished = true;
    return 0;
}

/* ---- localdata_answer --------------------------------------------------------------------- */

struct rr_list {
    struct dns_rr_out *v;
    size_t n, cap;
    struct dns_rr_out stack[STACK_RRS];
    uint32_t min_ttl;
};

static int list_add(struct rr_list *l, const struct dns_rr_out *rr)
{
    if (l->n == l->cap) {
        if (l->cap >= 0xffff)
            return -EMSGSIZE; /* more records than a message can count */
        size_t ncap = l->cap * 4;
        struct dns_rr_out *p = malloc(ncap * sizeof(*p));
        if (!p)
            return -ENOMEM;
        memcpy(p, l->v, l->n * sizeof(*p));
        if (l->v != l->stack)
            free(l->v);
        l->v = p;
        l->cap = ncap;
    }
    l->v[l->n++] = *rr;
    if (rr->ttl < l->min_ttl)
        l->min_ttl = rr->ttl;
    return 0;
}

/* Add the records of @p nd of @p rclass and @p type (TYPE_ANY: every type); the owner is the
 * question's name (a pointer) when @p owner is NULL. @return records added, or < 0. */
static long add_rrs(const struct localdata *ld, const struct ld_node *nd, uint16_t type,
                    uint16_t rclass, const uint8_t *owner, size_t owner_len, struct rr_list *l)
{
    long n = 0;
    for (size_t k = nd->first; k < nd->first + nd->n; k++) {
        const struct ld_rr *r = &ld->rrs[k];
        if (r->rclass != rclass || (type != TYPE_ANY && r->type != type))
            continue;
        struct dns_rr_out o = {
            .owner = owner,
            .owner_len = owner_len,
            .type = r->type,
            .rclass = r->rclass,
            .ttl = r->ttl,
            .rdata = r->rdata,
            .rdlen = r->rdlen,
        };
        int rc = list_add(l, &o);
        if (rc != 0)
            return rc;
        n++;
    }
    return n;
}

static const struct ld_rr *find_rr(const struct localdata *ld, const struct ld_node *nd,
                                   uint16_t type, uint16_t rclass)
{
    for (size_t k = nd->first; k < nd->first + nd->n; k++) {
        if (ld->rrs[k].type == type && ld->rrs[k].rclass == rclass)
            return &ld->rrs[k];
    }
    return NULL;
}

/* The SOA record of static zone @p z for a negative answer (owner: the zone's name). */
static struct dns_rr_out zone_soa(const struct ld_zone *z)
{
    struct dns_rr_out o = {
        .owner = z->name, .owner_len = z->name_len, .type = TYPE_SOA, .rclass = CLASS_IN};
    if (z->soa) {
        o.ttl = z->soa->ttl;
        o.rdata = z->soa->rdata;
        o.rdlen = z->soa->rdlen;
    } else {
        o.ttl = SYNTH_SOA_TTL;
        o.rdata = synth_soa;
        o.rdlen = sizeof(synth_soa);
    }
    return o;
}

/* RFC 2308 §5: a negative answer lives min(SOA TTL, SOA MINIMUM). */
static uint32_t soa_negative_ttl(const struct dns_rr_out *soa)
{
    uint32_t min = soa->rdlen >= 4 ? dg_get32(soa->rdata + soa->rdlen - 4) : 0;
    return min < soa->ttl ? min : soa->ttl;
}

int localdata_answer(const struct localdata *ld, const uint8_t *q, size_t qlen, struct dg_buf *ans,
                     uint32_t *ttl)
{
    if (!ld || !ld->finished || !ans)
        return LOCALDATA_NOT;
    size_t qend = dns_question_end(q, qlen);
    if (!qend)
        return LOCALDATA_NOT;
    const uint8_t *name = q + DNS_HEADER_LEN;
    size_t nlen = qend - 4 - DNS_HEADER_LEN;
    uint16_t qtype = dg_get16(q + qend - 4);
    uint16_t qclass = dg_get16(q + qend - 2);
    if (!tld_maybe(ld, name, nlen))
        return LOCALDATA_NOT; /* the commonest path: a name under no local top-level label */

    /* Zones are of class IN: a query of another class (CH "version.bind") is local only where
     * records of its class are. */
    const struct ld_zone *zone = NULL;
    bool apex = false;
    uint32_t v;
    if (qclass == CLASS_IN) {
        int off = nameset_match(ld->zone_set, name, nlen, UINT32_MAX, &v);
        if (off >= 0 && (zone = zone_of(ld, v)))
            apex = off == 0;
    }
    const struct ld_node *nd = nameset_get(ld->node_set, name, nlen, &v) ? node_of(ld, v) : NULL;
    if (!nd && (!zone || zone->type != LOCALDATA_STATIC))
        return LOCALDATA_NOT; /* the common path: nothing local */

    struct rr_list l = {.n = 0, .cap = STACK_RRS, .min_ttl = UINT32_MAX};
    l.v = l.stack;
    struct dns_rr_out soa = {0};
    bool with_soa = false;
    int rcode = DNS_RCODE_NOERROR;
    int rc = 0;
    const uint8_t *owner = NULL; /* the question's name: a pointer */
    size_t owner_len = 0;
    const struct ld_node *seen[MAX_CNAME_LINKS + 1];
    size_t links = 0;
    for (;;) {
        const struct ld_rr *cname;
        if (nd && find_rr(ld, nd, qtype, qclass)) {
            rc = (int)add_rrs(ld, nd, qtype, qclass, owner, owner_len, &l); /* rule 1 */
            break;
        }
        if (nd && qtype == TYPE_ANY) {
            /* ANY on a local name: all its records (RFC 8482 is for not disclosing a zone's
             * data cheaply; this data is our own and small). None of this class: on. */
            long n = add_rrs(ld, nd, TYPE_ANY, qclass, owner, owner_len, &l);
            if (n != 0) {
                rc = n < 0 ? (int)n : 0;
                break;
            }
        }
        if (nd && qtype != TYPE_CNAME && (cname = find_rr(ld, nd, TYPE_CNAME, qclass))) {
            /* rule 1: a CNAME for another type, followed within the local data */
            if (links == MAX_CNAME_LINKS)
                break; /* the chain so far is the answer */
            seen[links++] = nd;
            rc = (int)add_rrs(ld, nd, TYPE_CNAME, qclass, owner, owner_len, &l);
            if (rc < 0)
                break;
            name = owner = cname->rdata;
            nlen = owner_len = cname->rdlen;
            zone = NULL;
            apex = false;
            if (qclass == CLASS_IN) {
                int off = nameset_match(ld->zone_set, name, nlen, UINT32_MAX, &v);
                if (off >= 0 && (zone = zone_of(ld, v)))
                    apex = off == 0;
            }
            nd = nameset_get(ld->node_set, name, nlen, &v) ? node_of(ld, v) : NULL;
            bool loop = false;
            for (size_t i = 0; nd && i < links; i++)
                loop = loop || seen[i] == nd;
            if (loop)
                break; /* the chain so far is the answer: the client sees the loop */
            continue;
        }
        bool is_static = zone && zone->type == LOCALDATA_STATIC;
        if (is_static && apex && !zone->soa && qtype == TYPE_SOA) {
            /* the synthesized SOA is the apex's data too */
            struct dns_rr_out a = zone_soa(zone);
            a.owner = owner;
            a.owner_len = owner_len;
            rc = list_add(&l, &a);
            break;
        }
        bool has_class = false;
        for (size_t k = 0; nd && k < nd->n && !has_class; k++)
            has_class = ld->rrs[nd->first + k].rclass == qclass;
        if (has_class) {
            /* rule 2: NODATA, with the SOA of a static zone around it */
            if (is_static) {
                soa = zone_soa(zone);
                with_soa = true;
            }
            break;
        }
        if (is_static) {
            soa = zone_soa(zone);
            /* rule 3: an existing name (the apex, an empty non-terminal, records of another
             * class) has no data of the type; any other name does not exist */
            with_soa = true;
            if (!nd && !apex)
                rcode = DNS_RCODE_NXDOMAIN;
            break;
        }
        if (links == 0)
            return LOCALDATA_NOT; /* rule 4 (records of another class only, no static zone) */
        break;                    /* a CNAME out of the local data: the client follows it */
    }
    if (rc < 0)
        goto out;

    uint32_t t = l.min_ttl;
    if (with_soa) {
        uint32_t neg = soa_negative_ttl(&soa);
        if (neg < t)
            t = neg;
    }
    if (t == UINT32_MAX)
        t = 0; /* NODATA without SOA (not in a static zone): nothing says how long */
    rc = dns_make_answer(q, qlen, rcode, true, l.v, l.n, with_soa ? &soa : NULL, with_soa ? 1 : 0,
                         -1, NULL, ans);
    if (rc == -EINVAL)
        rc = -EMSGSIZE; /* the query passed dns_query_check(): only the size can be wrong */
    if (rc == 0) {
        if (ttl)
            *ttl = t;
        rc = l.n ? LOCALDATA_ANSWER
                 : (rcode == DNS_RCODE_NXDOMAIN ? LOCALDATA_NXDOMAIN : LOCALDATA_NODATA);
    }
out:
    if (l.v != l.stack)
        free(l.v);
    return rc;
}
