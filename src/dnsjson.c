/*
 * dnsjson.c: the JSON API's query parameters and answer text (see dnsjson.h).
 *
 * What ldns does here: parsing the name (ldns_str2rdf_dname: escapes, label and name limits,
 * empty labels), the type mnemonics (ldns_get_rr_type_by_name) and the presentation form of
 * every rdata type but the six common ones. What is written by hand, and why:
 *  - query string splitting and percent-decoding (ldns has none);
 *  - numeric types and TYPEnnn: ldns_get_rr_type_by_name() reads "TYPE70000" as 70000 and
 *    "TYPE1x" as 1 (atoi), so both forms are parsed and range-checked here;
 *  - the query's wire form (a fixed 12-byte header, the name ldns made, 4 + 11 bytes: building
 *    an ldns_pkt to serialise it would cost a dozen allocations);
 *  - the answer walk (the bounded iterator of dnswire.h, as everywhere in dohgate: no
 *    ldns_wire2pkt, see dns.c), owner names in ldns's presentation form, and the rdata of A,
 *    AAAA, NS, CNAME, PTR and MX: an ldns parse costs several allocations per record, and the
 *    JSON form of a cached answer has to stay within twice the cost of the wire form. The fuzz
 *    target checks that these renderers produce ldns's text byte for byte
 *    (DNSJSON_LDNS_ONLY);
 *  - JSON string escaping.
 */
#include "dohgate/dnsjson.h"
#include "dnsjson_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <ldns/ldns.h>

#include "dohgate/dnswire.h"

/* ---------------------------------------------------------------- query parameters */

/*
 * A name of at most 255 wire octets has at most 4 characters of text per octet (\DDD), so text
 * longer than this is too long whatever it holds; the bound keeps the name on the stack.
 */
#define NAME_TEXT_MAX  1100
#define VALUE_TEXT_MAX 64 /* type, do, cd, ct: the longest valid value is 24 characters */
#define KEY_TEXT_MAX   24 /* the longest parameter name we know is 18 */

#define TYPE_A   1
#define CLASS_IN 1
#define EDNS_DO  0x80u /* in the high byte of the OPT TTL's flags */

#define WHY_DO "do: not 0, 1, false or true"
#define WHY_CD "cd: not 0, 1, false or true"
#define WHY_CT "ct: not application/dns-json, application/x-javascript or application/dns-message"

enum param { P_NAME = 0, P_TYPE, P_DO, P_CD, P_CT, P_IGNORED, P_UNKNOWN };

static const struct {
    const char *key;
    enum param p;
} params[] = {
    {"name", P_NAME},
    {"type", P_TYPE},
    {"do", P_DO},
    {"cd", P_CD},
    {"ct", P_CT},
    {"edns_client_subnet", P_IGNORED},
    {"random_padding", P_IGNORED},
};

static const char *const why_twice[] = {
    [P_NAME] = "name: given twice", [P_TYPE] = "type: given twice", [P_DO] = "do: given twice",
    [P_CD] = "cd: given twice",     [P_CT] = "ct: given twice",
};
static const char *const why_pct[] = {
    [P_NAME] = "name: bad percent-encoding", [P_TYPE] = "type: bad percent-encoding",
    [P_DO] = "do: bad percent-encoding",     [P_CD] = "cd: bad percent-encoding",
    [P_CT] = "ct: bad percent-encoding",
};

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/*
 * Percent-decode [s, s+n) into @p out (@p cap bytes, NUL-terminated), '+' as a space.
 * @return the decoded length, -1 (a '%' not followed by two hex digits), -2 (too long).
 */
static long pct_decode(const char *s, size_t n, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '%') {
            int hi = n - i >= 3 ? hexval((unsigned char)s[i + 1]) : -1;
            int lo = n - i >= 3 ? hexval((unsigned char)s[i + 2]) : -1;
            if (hi < 0 || lo < 0)
                return -1;
            c = (unsigned char)(hi << 4 | lo);
            i += 2;
        } else if (c == '+') {
            c = ' ';
        }
        if (o + 1 >= cap)
            return -2;
        out[o++] = (char)c;
    }
    out[o] = '\0';
    return (long)o;
}

/* ASCII case-insensitive equality of [s, s+n) and the literal @p lit (no locale). */
static bool ieq(const char *s, size_t n, const char *lit)
{
    size_t i = 0;
    for (; i < n && lit[i]; i++) {
        unsigned char a = (unsigned char)s[i], b = (unsigned char)lit[i];
        if (a >= 'A' && a <= 'Z')
            a = (unsigned char)(a + 32);
        if (b >= 'A' && b <= 'Z')
            b = (unsigned char)(b + 32);
        if (a != b)
            return false;
    }
    return i == n && lit[i] == '\0';
}

static enum param param_lookup(const char *key, size_t n)
{
    for (size_t i = 0; i < sizeof(params) / sizeof(params[0]); i++)
        if (strlen(params[i].key) == n && memcmp(params[i].key, key, n) == 0)
            return params[i].p;
    return P_UNKNOWN;
}

/*
 * "type: unknown type 'FOO'", the value quoted as printable ASCII, at most 24 characters ("..."
 * after it when it was longer, or when @p cut says it was cut before).
 */
static const char *why_unknown_type(struct dnsjson_opts *o, const char *v, size_t n, bool cut)
{
    char q[32];
    size_t k = 0;
    for (size_t i = 0; i < n && k < 24; i++) {
        unsigned char c = (unsigned char)v[i];
        q[k++] = (c >= 0x20 && c < 0x7f && c != '\'') ? (char)c : '?';
    }
    q[k] = '\0';
    snprintf(o->why_buf, sizeof(o->why_buf), "type: unknown type '%s%s'", q,
             (cut || n > k) ? "..." : "");
    return o->why_buf;
}

/* Decimal digits only, 1-65535 (leading zeros allowed). @return 0, or -1 out of range. */
static int parse_type_number(const char *v, size_t n, uint16_t *out)
{
    unsigned long x = 0;
    for (size_t i = 0; i < n; i++) {
        x = x * 10 + (unsigned long)(v[i] - '0');
        if (x > 65535)
            return -1;
    }
    if (x == 0)
        return -1;
    *out = (uint16_t)x;
    return 0;
}

static bool all_digits(const char *v, size_t n)
{
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++)
        if (v[i] < '0' || v[i] > '9')
            return false;
    return true;
}

/* @p v is NUL-terminated at n (no NUL inside: checked by the caller). */
static const char *parse_type(struct dnsjson_opts *o, const char *v, size_t n)
{
    if (n == 0)
        return "type: empty";
    if (all_digits(v, n))
        return parse_type_number(v, n, &o->qtype) ? "type: out of range (1-65535)" : NULL;
    /* RFC 3597 TYPEnnn: ldns's own parse of it is atoi() without a range check */
    if (n > 4 && ieq(v, 4, "TYPE")) {
        if (!all_digits(v + 4, n - 4))
            return why_unknown_type(o, v, n, false);
        return parse_type_number(v + 4, n - 4, &o->qtype) ? "type: out of range (1-65535)" : NULL;
    }
    ldns_rr_type t = ldns_get_rr_type_by_name(v);
    if ((unsigned)t == 0 || (unsigned)t > 65535)
        return why_unknown_type(o, v, n, false);
    o->qtype = (uint16_t)t;
    return NULL;
}

static const char *parse_bool(const char *v, size_t n, bool *out, const char *why)
{
    if (n == 0 || ieq(v, n, "1") || ieq(v, n, "true"))
        *out = true;
    else if (ieq(v, n, "0") || ieq(v, n, "false"))
        *out = false;
    else
        return why;
    return NULL;
}

static const char *parse_ct(struct dnsjson_opts *o, const char *v, size_t n)
{
    if (n == 0 || ieq(v, n, DNSJSON_CT_JSON)) {
        o->content_type = DNSJSON_CT_JSON;
        o->wire_answer = false;
    } else if (ieq(v, n, DNSJSON_CT_JS)) {
        o->content_type = DNSJSON_CT_JS;
        o->wire_answer = false;
    } else if (ieq(v, n, DNSJSON_CT_MESSAGE)) {
        o->content_type = DNSJSON_CT_MESSAGE;
        o->wire_answer = true;
    } else {
        return WHY_CT;
    }
    return NULL;
}

/* The name in wire form (ldns), or a reason. *rdf is set only on success. */
static int parse_name(const char *text, ldns_rdf **rdf, const char **why)
{
    ldns_status st = ldns_str2rdf_dname(rdf, text);
    switch (st) {
    case LDNS_STATUS_OK:
        return 0;
    case LDNS_STATUS_MEM_ERR:
        return -ENOMEM;
    case LDNS_STATUS_DOMAINNAME_UNDERFLOW:
        *why = "name: empty";
        break;
    case LDNS_STATUS_LABEL_OVERFLOW:
        *why = "name: label longer than 63 bytes";
        break;
    case LDNS_STATUS_DOMAINNAME_OVERFLOW:
        *why = "name: longer than 255 bytes";
        break;
    case LDNS_STATUS_EMPTY_LABEL:
        *why = "name: empty label";
        break;
    case LDNS_STATUS_SYNTAX_BAD_ESCAPE:
        *why = "name: bad escape (\\X or \\DDD with DDD at most 255)";
        break;
    default:
        *why = "name: not a domain name";
        break;
    }
    return 400;
}

int dnsjson_query_from_params(const char *qs, size_t qslen, struct dg_buf *wire,
                              struct dnsjson_opts *o, const char **why)
{
    const char *ignored;
    if (!why)
        why = &ignored;
    *why = NULL;
    o->qtype = TYPE_A;
    o->dnssec_ok = false;
    o->checking_disabled = false;
    o->wire_answer = false;
    o->content_type = DNSJSON_CT_JSON;
    o->why_buf[0] = '\0';

    char name[NAME_TEXT_MAX + 1];
    bool have_name = false;
    unsigned seen = 0;
    const char *p = qs, *end = qs + qslen;
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *pe = amp ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(pe - p));
        const char *ke = eq ? eq : pe;
        const char *v = eq ? eq + 1 : pe;
        const char *k = p;
        p = amp ? amp + 1 : end;
        if (ke == k)
            continue; /* "&&", "&=x": no name, nothing of ours */
        char key[KEY_TEXT_MAX + 1];
        long kl = pct_decode(k, (size_t)(ke - k), key, sizeof(key));
        if (kl == -1) {
            *why = "bad percent-encoding in a parameter name";
            return 400;
        }
        enum param prm = kl < 0 ? P_UNKNOWN : param_lookup(key, (size_t)kl);
        if (prm == P_UNKNOWN || prm == P_IGNORED)
            continue;
        if (seen & (1u << prm)) {
            *why = why_twice[prm];
            return 400;
        }
        seen |= 1u << prm;
        size_t vn = (size_t)(pe - v);
        if (prm == P_NAME) {
            long n = pct_decode(v, vn, name, sizeof(name));
            if (n == -1) {
                *why = why_pct[prm];
                return 400;
            }
            if (n == -2) {
                *why = "name: longer than 255 bytes";
                return 400;
            }
            if (strlen(name) != (size_t)n) {
                *why = "name: NUL byte (write it as \\000)";
                return 400;
            }
            have_name = true;
            continue;
        }
        char val[VALUE_TEXT_MAX + 1];
        long n = pct_decode(v, vn, val, sizeof(val));
        if (n == -1) {
            *why = why_pct[prm];
            return 400;
        }
        /* too long (then not NUL-terminated) or with a NUL inside: no valid value is either */
        bool bad = n < 0 || strlen(val) != (size_t)n;
        size_t len = n < 0 ? VALUE_TEXT_MAX : (size_t)n;
        const char *w = NULL;
        switch (prm) {
        case P_TYPE:
            w = bad ? why_unknown_type(o, val, len, n < 0) : parse_type(o, val, len);
            break;
        case P_DO:
            w = bad ? WHY_DO : parse_bool(val, len, &o->dnssec_ok, WHY_DO);
            break;
        case P_CD:
            w = bad ? WHY_CD : parse_bool(val, len, &o->checking_disabled, WHY_CD);
            break;
        case P_CT:
            w = bad ? WHY_CT : parse_ct(o, val, len);
            break;
        default:
            break;
        }
        if (w) {
            *why = w;
            return 400;
        }
    }
    if (!have_name) {
        *why = "name: missing";
        return 400;
    }

    ldns_rdf *rdf = NULL;
    int rc = parse_name(name, &rdf, why);
    if (rc)
        return rc;
    size_t nlen = ldns_rdf_size(rdf);
    size_t total = DNSWIRE_HEADER_LEN + nlen + 4 + 11;
    if (dg_buf_reserve(wire, total)) {
        ldns_rdf_deep_free(rdf);
        return -ENOMEM;
    }
    uint8_t *q = wire->data + wire->len;
    memset(q, 0, DNSWIRE_HEADER_LEN);
    q[2] = DNS_F2_RD;
    q[3] = o->checking_disabled ? DNS_F3_CD : 0;
    q[5] = 1;  /* QDCOUNT */
    q[11] = 1; /* ARCOUNT: the OPT */
    memcpy(q + DNSWIRE_HEADER_LEN, ldns_rdf_data(rdf), nlen);
    uint8_t *t = q + DNSWIRE_HEADER_LEN + nlen;
    dg_put16(t, o->qtype);
    dg_put16(t + 2, CLASS_IN);
    t += 4;
    t[0] = 0; /* root owner */
    dg_put16(t + 1, DNSWIRE_TYPE_OPT);
    dg_put16(t + 3, DNSJSON_UDP_SIZE);
    t[5] = 0; /* extended rcode */
    t[6] = 0; /* version */
    t[7] = o->dnssec_ok ? EDNS_DO : 0;
    t[8] = 0;
    dg_put16(t + 9, 0); /* RDLENGTH */
    wire->len += total;
    ldns_rdf_deep_free(rdf);
    return 0;
}

/* ---------------------------------------------------------------- answer text */

/*
 * Room for one name as a JSON string: 255 octets, each at most 5 characters ("\\DDD" with its
 * backslash escaped), a dot per label, the quotes.
 */
#define NAME_JSON_MAX (255 * 5 + 128 + 2)
/* Room for one record without its ldns-rendered rdata: two names and the fixed parts. */
#define RR_JSON_MAX (2 * NAME_JSON_MAX + 128)

struct fmt {
    const uint8_t *msg;
    size_t len;
    struct dg_buf *out;
    unsigned flags;
    ldns_buffer *lb; /* created on the first record ldns renders */
};

static inline int room(struct dg_buf *b, size_t n)
{
    return b->cap - b->len >= n ? 0 : dg_buf_reserve(b, n);
}

/* Unchecked: room() was called. */
static inline void put(struct dg_buf *b, const char *s, size_t n)
{
    memcpy(b->data + b->len, s, n);
    b->len += n;
}
#define PUT_LIT(b, s) put(b, s, sizeof(s) - 1)

static inline void put_u64(struct dg_buf *b, uint64_t v)
{
    char tmp[24];
    put(b, tmp, dg_fmt_u64(tmp, v));
}

static inline void put_bool(struct dg_buf *b, bool v)
{
    if (v)
        PUT_LIT(b, "true");
    else
        PUT_LIT(b, "false");
}

static inline char *put_ddd(char *o, unsigned c)
{
    o[0] = (char)('0' + c / 100);
    o[1] = (char)('0' + c / 10 % 10);
    o[2] = (char)('0' + c % 10);
    return o + 3;
}

/*
 * The name at @p off (already checked: dnswire_name_check()) in ldns's presentation form
 * (ldns_rdf2buffer_str_dname(): '.', ';', '(', ')' and '\' escaped with a backslash, bytes
 * outside 0x21-0x7e as \DDD, a trailing dot, "." for the root) with the JSON escaping of '"'
 * and '\' on top, without quotes. The bounds are checked again all the same: it follows
 * pointers, by ldns_wire2dname()'s rules (a pointer to offset 0 is refused) so that names fail
 * or pass here as ldns's in rdata do. Needs NAME_JSON_MAX bytes of room. @return false if the
 * name is malformed.
 */
static bool put_name_text(struct dg_buf *b, const uint8_t *msg, size_t len, size_t off)
{
    char *start = (char *)b->data + b->len;
    char *o = start;
    unsigned hops = 0;
    size_t total = 0;
    for (;;) {
        if (off >= len)
            return false;
        uint8_t lab = msg[off];
        if ((lab & 0xc0u) == 0xc0u) {
            if (len - off < 2 || ++hops > DNSWIRE_MAX_PTR_HOPS)
                return false;
            off = ((size_t)(lab & 0x3fu) << 8) | msg[off + 1];
            if (off == 0)
                return false; /* ldns refuses it (the header is no name); so do we */
            continue;
        }
        if (lab & 0xc0u)
            return false;
        total += (size_t)lab + 1;
        if (total > DNSWIRE_MAX_NAME)
            return false;
        if (lab == 0)
            break;
        if (len - off - 1 < lab)
            return false;
        const uint8_t *p = msg + off + 1;
        for (unsigned i = 0; i < lab; i++) {
            unsigned c = p[i];
            if (c == '.' || c == ';' || c == '(' || c == ')') {
                *o++ = '\\';
                *o++ = '\\';
                *o++ = (char)c;
            } else if (c == '\\') {
                memcpy(o, "\\\\\\\\", 4);
                o += 4;
            } else if (c == '"') {
                *o++ = '\\';
                *o++ = '"';
            } else if (c < 0x21 || c > 0x7e) {
                *o++ = '\\';
                *o++ = '\\';
                o = put_ddd(o, c);
            } else {
                *o++ = (char)c;
            }
        }
        *o++ = '.';
        off += (size_t)lab + 1;
    }
    if (o == start)
        *o++ = '.';
    b->len += (size_t)(o - start);
    return true;
}

/* The same as a JSON string. */
static bool put_name(struct dg_buf *b, const uint8_t *msg, size_t len, size_t off)
{
    PUT_LIT(b, "\"");
    if (!put_name_text(b, msg, len, off))
        return false;
    PUT_LIT(b, "\"");
    return true;
}

/*
 * @p s (ldns's presentation text) as a JSON string: '"' and '\' escaped, control characters
 * and DEL as \u00XX, a byte above 0x7f as the DNS escape \DDD (JSON text must be UTF-8; ldns
 * escapes such bytes itself, this is the belt to its braces).
 */
int dnsjson_json_string(struct dg_buf *b, const uint8_t *s, size_t n)
{
    /* the exact size first: a 64 KiB TXT must not reserve six times its text */
    size_t need = 2;
    for (size_t i = 0; i < n; i++) {
        unsigned c = s[i];
        need += (c == '"' || c == '\\') ? 2 : (c < 0x20 || c == 0x7f) ? 6 : c > 0x7f ? 5 : 1;
    }
    if (room(b, need))
        return -ENOMEM;
    static const char hex[] = "0123456789abcdef";
    char *o = (char *)b->data + b->len;
    *o++ = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned c = s[i];
        if (c == '"' || c == '\\') {
            *o++ = '\\';
            *o++ = (char)c;
        } else if (c < 0x20 || c == 0x7f) {
            memcpy(o, "\\u00", 4);
            o[4] = hex[c >> 4];
            o[5] = hex[c & 15];
            o += 6;
        } else if (c > 0x7f) {
            *o++ = '\\';
            *o++ = '\\';
            o = put_ddd(o, c);
        } else {
            *o++ = (char)c;
        }
    }
    *o++ = '"';
    b->len = (size_t)((uint8_t *)o - b->data);
    return 0;
}

/* The rdata through ldns, whatever its type. */
static int put_rdata_ldns(struct fmt *f, const struct dnswire_rr *rr)
{
    if (!f->lb) {
        f->lb = ldns_buffer_new(256);
        if (!f->lb)
            return -ENOMEM;
    }
    ldns_buffer_clear(f->lb);
    ldns_rr *r = ldns_rr_new();
    if (!r)
        return -ENOMEM;
    ldns_rr_set_type(r, (ldns_rr_type)rr->type);
    size_t pos = rr->rdata_off - 2; /* ldns_wire2rdf() reads RDLENGTH */
    ldns_status st = ldns_wire2rdf(r, f->msg, f->len, &pos);
    int rc = 0;
    if (st == LDNS_STATUS_MEM_ERR) {
        rc = -ENOMEM;
    } else if (st != LDNS_STATUS_OK || pos != rr->rdata_off + rr->rdlen) {
        /* ldns stops after the last field it knows: bytes left over mean the rdata is not
           what its type says (an A of 5 bytes), and ldns would silently drop them */
        rc = -EINVAL;
    } else if ((rr->type == 64 || rr->type == 65) &&
               !ldns_buffer_reserve(f->lb, 4 * (size_t)rr->rdlen + 1024)) {
        /* SVCB/HTTPS: ldns 1.8.3's SvcParams printer writes without growing its buffer and
         * asserts (aborts) when it runs out (fuzz_json_format): room for every byte as \DDD */
        rc = -ENOMEM;
    } else {
        for (size_t i = 0; i < ldns_rr_rd_count(r) && rc == 0; i++) {
            if (i) {
                if (!ldns_buffer_reserve(f->lb, 1)) {
                    rc = -ENOMEM;
                    break;
                }
                ldns_buffer_write_u8(f->lb, ' ');
            }
            st = ldns_rdf2buffer_str(f->lb, ldns_rr_rdf(r, i));
            if (st == LDNS_STATUS_MEM_ERR || !ldns_buffer_status_ok(f->lb))
                rc = -ENOMEM;
            else if (st != LDNS_STATUS_OK)
                rc = -EINVAL;
        }
    }
    ldns_rr_free(r);
    if (rc)
        return rc;
    return dnsjson_json_string(f->out, ldns_buffer_begin(f->lb), ldns_buffer_position(f->lb));
}

/* The rdata of the common types by hand; -EAGAIN when it is for ldns to render. */
static int put_rdata_fast(struct fmt *f, const struct dnswire_rr *rr)
{
    struct dg_buf *b = f->out;
    const uint8_t *d = f->msg + rr->rdata_off;
    size_t rdend = rr->rdata_off + rr->rdlen;
    switch (rr->type) {
    case 1: /* A */
        if (rr->rdlen != 4)
            return -EAGAIN;
        *(b->data + b->len++) = '"';
        for (int i = 0; i < 4; i++) {
            if (i)
                *(b->data + b->len++) = '.';
            put_u64(b, d[i]);
        }
        *(b->data + b->len++) = '"';
        return 0;
    case 28: { /* AAAA: ldns uses inet_ntop() too */
        if (rr->rdlen != 16)
            return -EAGAIN;
        char tmp[INET6_ADDRSTRLEN];
        if (!inet_ntop(AF_INET6, d, tmp, sizeof(tmp)))
            return -EAGAIN;
        *(b->data + b->len++) = '"';
        put(b, tmp, strlen(tmp));
        *(b->data + b->len++) = '"';
        return 0;
    }
    case 2:  /* NS */
    case 5:  /* CNAME */
    case 12: /* PTR */
        if (rr->rdlen == 0 || dnswire_name_skip(f->msg, rdend, rr->rdata_off) != rdend)
            return -EAGAIN;
        return put_name(b, f->msg, f->len, rr->rdata_off) ? 0 : -EINVAL;
    case 15: { /* MX */
        if (rr->rdlen < 3 || dnswire_name_skip(f->msg, rdend, rr->rdata_off + 2) != rdend)
            return -EAGAIN;
        PUT_LIT(b, "\"");
        put_u64(b, dg_get16(d));
        PUT_LIT(b, " ");
        if (!put_name_text(b, f->msg, f->len, rr->rdata_off + 2))
            return -EINVAL;
        PUT_LIT(b, "\"");
        return 0;
    }
    default:
        return -EAGAIN;
    }
}

static int put_record(struct fmt *f, const struct dnswire_rr *rr)
{
    struct dg_buf *b = f->out;
    if (room(b, RR_JSON_MAX))
        return -ENOMEM;
    PUT_LIT(b, "{\"name\":");
    if (!put_name(b, f->msg, f->len, rr->name_off))
        return -EINVAL;
    PUT_LIT(b, ",\"type\":");
    put_u64(b, rr->type);
    if (rr->sec == DNSWIRE_QD) {
        PUT_LIT(b, "}");
        return 0;
    }
    PUT_LIT(b, ",\"TTL\":");
    put_u64(b, dg_get32(f->msg + rr->ttl_off));
    PUT_LIT(b, ",\"data\":");
    int rc = (f->flags & DNSJSON_LDNS_ONLY) ? -EAGAIN : put_rdata_fast(f, rr);
    if (rc == -EAGAIN)
        rc = put_rdata_ldns(f, rr);
    if (rc)
        return rc;
    if (room(b, 1))
        return -ENOMEM;
    PUT_LIT(b, "}");
    return 0;
}

/* Each opens a section's array and closes the one before ("Question" opens in the header). */
static const char *const section_key[] = {
    [DNSWIRE_AN] = "],\"Answer\":[",
    [DNSWIRE_NS] = "],\"Authority\":[",
    [DNSWIRE_AR] = "],\"Additional\":[",
};

static int format(struct fmt *f)
{
    const uint8_t *msg = f->msg;
    struct dg_buf *b = f->out;
    /* Pass 1: the message is well formed (names followed, names in rdata checked), the
       extended RCODE of its OPT. */
    struct dnswire_iter it;
    struct dnswire_rr rr;
    unsigned status = 0;
    int r;
    dnswire_iter_init(&it, msg, f->len, DNSWIRE_CHECK);
    while ((r = dnswire_iter_next(&it, &rr)) == 1) {
        if (rr.type == DNSWIRE_TYPE_OPT && rr.sec != DNSWIRE_QD) {
            if (rr.sec == DNSWIRE_AR)
                status = (unsigned)msg[rr.ttl_off] << 4;
            continue;
        }
    }
    if (r < 0)
        return -EINVAL;
    status |= msg[3] & 0x0fu;

    if (room(b, 160))
        return -ENOMEM;
    PUT_LIT(b, "{\"Status\":");
    put_u64(b, status);
    PUT_LIT(b, ",\"TC\":");
    put_bool(b, msg[2] & DNS_F2_TC);
    PUT_LIT(b, ",\"RD\":");
    put_bool(b, msg[2] & DNS_F2_RD);
    PUT_LIT(b, ",\"RA\":");
    put_bool(b, msg[3] & DNS_F3_RA);
    PUT_LIT(b, ",\"AD\":");
    put_bool(b, msg[3] & DNS_F3_AD);
    PUT_LIT(b, ",\"CD\":");
    put_bool(b, msg[3] & DNS_F3_CD);
    PUT_LIT(b, ",\"Question\":[");

    /* Pass 2: render. Names were checked in pass 1, so the plain walk is enough. */
    int sec = DNSWIRE_QD;
    bool first = true;
    dnswire_iter_init(&it, msg, f->len, 0);
    while ((r = dnswire_iter_next(&it, &rr)) == 1) {
        if (rr.type == DNSWIRE_TYPE_OPT && rr.sec != DNSWIRE_QD)
            continue;
        if ((int)rr.sec != sec) {
            sec = (int)rr.sec;
            const char *k = section_key[sec];
            if (room(b, 32))
                return -ENOMEM;
            put(b, k, strlen(k));
            first = true;
        }
        if (!first) {
            if (room(b, 1))
                return -ENOMEM;
            PUT_LIT(b, ",");
        }
        first = false;
        int rc = put_record(f, &rr);
        if (rc)
            return rc;
    }
    if (r < 0)
        return -EINVAL;
    if (room(b, 2))
        return -ENOMEM;
    PUT_LIT(b, "]}");
    return 0;
}

int dnsjson_format_flags(const uint8_t *ans, size_t len, struct dg_buf *out, unsigned flags)
{
    struct fmt f = {.msg = ans, .len = len, .out = out, .flags = flags, .lb = NULL};
    size_t len0 = out->len;
    int rc = format(&f);
    if (f.lb)
        ldns_buffer_free(f.lb);
    if (rc)
        out->len = len0;
    return rc;
}

int dnsjson_format(const uint8_t *ans, size_t len, struct dg_buf *out)
{
    return dnsjson_format_flags(ans, len, out, 0);
}
