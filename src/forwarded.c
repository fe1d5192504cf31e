/* X-Forwarded-For and Forwarded (RFC 7239): the right-to-left walk over trusted hops. See
 * forwarded.h for the rules. */
#include "dohgate/forwarded.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

#include "dohgate/client.h"
#include "dohgate/util.h"

/* Room for the longest element text worth parsing: "[" IPv6 (45) "]:" port. Longer is bad. */
#define ELEM_TEXT 64

struct elem {
    bool bad;
    char text[ELEM_TEXT]; /* the node as written (Forwarded: unquoted) */
};

/* The last FORWARDED_MAX_HOPS elements, oldest first from (start + total - kept). */
struct ring {
    struct elem e[FORWARDED_MAX_HOPS];
    size_t total;
};

static struct elem *ring_push(struct ring *r)
{
    struct elem *e = &r->e[r->total++ % FORWARDED_MAX_HOPS];
    e->bad = false;
    e->text[0] = '\0';
    return e;
}

static void push_bad(struct ring *r)
{
    ring_push(r)->bad = true;
}

static void push_text(struct ring *r, const char *s, size_t len)
{
    struct elem *e = ring_push(r);
    if (len >= ELEM_TEXT) {
        e->bad = true;
        return;
    }
    memcpy(e->text, s, len);
    e->text[len] = '\0';
}

static bool ows(char c)
{
    return c == ' ' || c == '\t';
}

static void split_xff(struct ring *r, const char *p)
{
    while (*p) {
        while (ows(*p) || *p == ',')
            p++; /* empty elements are skipped */
        if (!*p)
            break;
        const char *b = p;
        while (*p && *p != ',')
            p++;
        const char *e = p;
        while (e > b && ows(e[-1]))
            e--;
        push_text(r, b, (size_t)(e - b));
    }
}

/* One Forwarded line. A syntax error pushes one bad element and drops the rest of the line. */
static void split_rfc7239(struct ring *r, const char *p)
{
    for (;;) {
        while (ows(*p) || *p == ',')
            p++;
        if (!*p)
            return;
        char forv[ELEM_TEXT];
        size_t forlen = 0;
        int nfor = 0;
        bool toolong = false;
        /* the pairs of one element */
        for (;;) {
            while (ows(*p) || *p == ';')
                p++;
            if (!*p || *p == ',')
                break;
            const char *name = p;
            while (dg_tchar((unsigned char)*p))
                p++;
            size_t nlen = (size_t)(p - name);
            if (nlen == 0 || *p != '=')
                goto syntax;
            p++;
            bool is_for = nlen == 3 && strncasecmp(name, "for", 3) == 0;
            char val[ELEM_TEXT];
            size_t vlen = 0;
            bool vlong = false;
            if (*p == '"') {
                p++;
                for (;;) {
                    char c = *p;
                    if (!c)
                        goto syntax; /* unterminated */
                    if (c == '"') {
                        p++;
                        break;
                    }
                    if (c == '\\') {
                        p++;
                        if (!*p)
                            goto syntax;
                        c = *p;
                    }
                    p++;
                    if (vlen + 1 < sizeof(val))
                        val[vlen++] = c;
                    else
                        vlong = true;
                }
            } else {
                const char *v = p;
                while (dg_tchar((unsigned char)*p))
                    p++;
                if (p == v)
                    goto syntax;
                size_t n = (size_t)(p - v);
                if (n + 1 > sizeof(val)) {
                    vlong = true;
                    n = 0;
                }
                memcpy(val, v, n);
                vlen = n;
            }
            if (is_for) {
                nfor++;
                toolong = vlong;
                memcpy(forv, val, vlen);
                forlen = vlen;
            }
            while (ows(*p))
                p++;
            if (*p == ';') {
                p++;
                continue;
            }
            if (*p && *p != ',')
                goto syntax;
        }
        if (nfor != 1 || toolong)
            push_bad(r);
        else
            push_text(r, forv, forlen);
        if (*p == ',')
            p++;
    }
syntax:
    push_bad(r);
}

/* A port after the address: 1-5 digits up to 65535, or (Forwarded) an obfuscated one. */
static bool port_ok(const char *s, bool rfc7239)
{
    if (rfc7239 && s[0] == '_') {
        for (const char *p = s + 1; *p; p++)
            if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'z') ||
                  (*p >= 'A' && *p <= 'Z') || *p == '.' || *p == '_' || *p == '-'))
                return false;
        return s[1] != '\0';
    }
    size_t n = 0;
    unsigned long v = 0;
    for (; s[n]; n++) {
        if (s[n] < '0' || s[n] > '9' || n >= 5)
            return false;
        v = v * 10 + (unsigned long)(s[n] - '0');
    }
    return n > 0 && v <= 65535;
}

/* Read one node into @p out. @return whether it names an address. The form decides the
 * family (brackets or a bare IPv6: AF_INET6; a dotted quad, with a port or not: AF_INET), and
 * the address text is parsed once, straight into the socket address the client comes from. */
static bool node_parse(const struct elem *e, bool rfc7239, struct client_id *out)
{
    if (e->bad)
        return false;
    char addr[ELEM_TEXT];
    const char *t = e->text;
    const char *colon = strchr(t, ':');
    const char *a = t; /* the address text: t itself, or its part copied into addr */
    int af = AF_INET;
    if (t[0] == '[') {
        const char *close = strchr(t, ']');
        if (!close || (close[1] && (close[1] != ':' || !port_ok(close + 2, rfc7239))))
            return false;
        size_t n = (size_t)(close - t - 1);
        memcpy(addr, t + 1, n);
        addr[n] = '\0';
        a = addr;
        af = AF_INET6;
    } else if (colon && !strchr(colon + 1, ':')) { /* IPv4:port */
        size_t n = (size_t)(colon - t);
        memcpy(addr, t, n);
        addr[n] = '\0';
        if (!port_ok(colon + 1, rfc7239))
            return false;
        a = addr;
    } else if (colon) { /* a bare IPv6 address: X-Forwarded-For only (RFC 7239 wants []) */
        if (rfc7239)
            return false;
        af = AF_INET6;
    }
    /* else IPv4; "unknown" and "_obfuscated" do not parse and stop the walk */
    struct sockaddr_storage ss = {.ss_family = (sa_family_t)af};
    void *bin = af == AF_INET ? (void *)&((struct sockaddr_in *)&ss)->sin_addr
                              : (void *)&((struct sockaddr_in6 *)&ss)->sin6_addr;
    return inet_pton(af, a, bin) == 1 &&
           client_id_from_sockaddr(out, (const struct sockaddr *)&ss) == 0;
}

enum forwarded_outcome forwarded_client(enum forwarded_kind kind, const char *const *values,
                                        size_t n, bool more_before, forwarded_trust_fn trusted,
                                        void *arg, struct client_id *out)
{
    struct ring r;
    r.total = 0;
    bool rfc = kind == FORWARDED_RFC7239;
    for (size_t i = 0; i < n; i++) {
        if (!values[i])
            continue;
        if (rfc)
            split_rfc7239(&r, values[i]);
        else
            split_xff(&r, values[i]);
    }
    size_t kept = r.total < FORWARDED_MAX_HOPS ? r.total : FORWARDED_MAX_HOPS;
    bool found = false;
    for (size_t k = 0; k < kept; k++) {
        const struct elem *e = &r.e[(r.total - 1 - k) % FORWARDED_MAX_HOPS];
        struct client_id id;
        if (!node_parse(e, rfc, &id))
            return found ? FORWARDED_STOPPED : FORWARDED_NONE;
        *out = id;
        found = true;
        if (!trusted(&id, arg))
            return FORWARDED_CLIENT;
    }
    if (!found)
        return FORWARDED_NONE;
    return r.total > kept || more_before ? FORWARDED_STOPPED : FORWARDED_ALL_TRUSTED;
}

const char *forwarded_outcome_name(enum forwarded_outcome o)
{
    switch (o) {
    case FORWARDED_NONE:
        return "none";
    case FORWARDED_CLIENT:
        return "client";
    case FORWARDED_ALL_TRUSTED:
        return "all-trusted";
    case FORWARDED_STOPPED:
        return "stopped";
    }
    return "?";
}
