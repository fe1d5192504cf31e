#include "dohgate/acl.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include "dohgate/client.h"

/* A numeric address into 4 or 16 bytes; IPv4-mapped IPv6 becomes IPv4. @return the length or 0 */
static size_t addr_bytes(const char *s, uint8_t out[16])
{
    if (inet_pton(AF_INET, s, out) == 1)
        return 4;
    if (inet_pton(AF_INET6, s, out) != 1)
        return 0;
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (memcmp(out, mapped, 12) == 0) {
        memmove(out, out + 12, 4);
        return 4;
    }
    return 16;
}

static bool prefix_eq(const uint8_t *a, const uint8_t *b, unsigned bits)
{
    unsigned full = bits / 8, rest = bits % 8;
    if (memcmp(a, b, full) != 0)
        return false;
    if (!rest)
        return true;
    uint8_t mask = (uint8_t)(0xff << (8 - rest));
    return (a[full] & mask) == (b[full] & mask);
}

int acl_parse(const char *s, bool allow, struct acl_entry *out)
{
    char buf[64];
    const char *slash = strchr(s, '/');
    size_t alen = slash ? (size_t)(slash - s) : strlen(s);
    if (alen == 0 || alen >= sizeof(buf))
        return -1;
    memcpy(buf, s, alen);
    buf[alen] = '\0';
    memset(out, 0, sizeof(*out));
    out->len = (uint8_t)addr_bytes(buf, out->addr);
    if (!out->len)
        return -1;
    /* "::ffff:10.0.0.0/104" is written in IPv6 bits, and matched as IPv4 */
    bool mapped = out->len == 4 && strchr(buf, ':') != NULL;
    unsigned bits = out->len * 8u;
    if (slash) {
        char *end;
        unsigned long b = strtoul(slash + 1, &end, 10);
        if (slash[1] < '0' || slash[1] > '9' || *end || b > (mapped ? 128u : bits) ||
            (mapped && b < 96))
            return -1;
        bits = (unsigned)b - (mapped ? 96u : 0u);
    }
    out->bits = (uint8_t)bits;
    out->allow = allow;
    /* clear host bits, so that "10.1.2.3/8" means 10.0.0.0/8 */
    for (unsigned i = 0; i < out->len; i++) {
        unsigned keep = bits > i * 8 ? bits - i * 8 : 0;
        if (keep < 8)
            out->addr[i] &= (uint8_t)(0xff << (8 - keep));
    }
    return 0;
}

int acl_build(struct acl *acl, char *const *allow, size_t n_allow, char *const *deny, size_t n_deny)
{
    memset(acl, 0, sizeof(*acl));
    if (n_allow + n_deny > ACL_MAX)
        return -1;
    for (size_t i = 0; i < n_allow + n_deny; i++) {
        bool is_allow = i < n_allow;
        if (acl_parse(is_allow ? allow[i] : deny[i - n_allow], is_allow, &acl->e[acl->n]) != 0)
            return -1;
        acl->n++;
        acl->n_allow += is_allow;
    }
    return 0;
}

static bool allows_bytes(const struct acl *acl, const uint8_t *a, size_t len)
{
    const struct acl_entry *best = NULL;
    for (size_t i = 0; i < acl->n; i++) {
        const struct acl_entry *e = &acl->e[i];
        if (e->len != len || !prefix_eq(a, e->addr, e->bits))
            continue;
        if (!best || e->bits > best->bits || (e->bits == best->bits && !e->allow))
            best = e;
    }
    if (best)
        return best->allow;
    return acl->n_allow == 0;
}

bool acl_allows_client(const struct acl *acl, const struct client_id *id)
{
    if (!acl_active(acl))
        return true;
    /* not an address we can judge: no */
    return client_id_known(id) && allows_bytes(acl, id->addr, id->len);
}

bool acl_entry_holds(const struct acl_entry *e, const struct client_id *id)
{
    return client_id_known(id) && e->len == id->len && prefix_eq(id->addr, e->addr, e->bits);
}

char *const acl_private_nets[ACL_N_PRIVATE_NETS] = {
    "127.0.0.0/8",   "::1/128",        "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",
    "100.64.0.0/10", "169.254.0.0/16", "fc00::/7",   "fe80::/10"};

bool acl_cidr_is_private(const char *cidr)
{
    struct acl_entry e, p;
    if (acl_parse(cidr, true, &e) != 0)
        return false;
    for (size_t i = 0; i < ACL_N_PRIVATE_NETS; i++) {
        if (acl_parse(acl_private_nets[i], true, &p) != 0 || p.len != e.len || p.bits > e.bits)
            continue;
        /* inside when the entry's network agrees with the private one on its prefix bits */
        unsigned full = p.bits / 8u, rest = p.bits % 8u;
        if (memcmp(e.addr, p.addr, full) != 0)
            continue;
        if (rest && ((e.addr[full] ^ p.addr[full]) & (uint8_t)(0xffu << (8u - rest))))
            continue;
        return true;
    }
    return false;
}
