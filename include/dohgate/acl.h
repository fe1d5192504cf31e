/**
 * @file acl.h
 * Client access lists: allowed and denied networks (CIDR). The longest matching prefix decides
 * (a deny wins a tie); an address no entry matches is allowed only when there is no allow entry
 * (so "allow-client 10.0.0.0/8" alone means "only 10/8", and "deny-client" alone means
 * "everybody but"). IPv4-mapped IPv6 addresses are matched as IPv4 (entries here, clients in
 * client_id_from_sockaddr()). Read-only once built, so
 * shared by all workers without locks.
 */
#ifndef DOHGATE_ACL_H
#define DOHGATE_ACL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct acl_entry {
    uint8_t addr[16]; /**< network, host bits cleared */
    uint8_t len;      /**< 4 or 16 bytes */
    uint8_t bits;     /**< prefix length */
    bool allow;
};

#define ACL_MAX 64

struct acl {
    struct acl_entry e[ACL_MAX];
    size_t n, n_allow;
};

/** Parse "192.0.2.0/24", "2001:db8::/32" or a single address. @return 0 or -1. */
int acl_parse(const char *s, bool allow, struct acl_entry *out);

/** Build from the two lists (already validated with acl_parse). @return 0 or -1 (too many). */
int acl_build(struct acl *acl, char *const *allow, size_t n_allow, char *const *deny,
              size_t n_deny);

struct client_id;
/**
 * Whether client @p id may use what the list guards. Reads the binary address filled at accept
 * (client.h): no parsing per call. An unknown client (not IPv4 or IPv6, or NULL) is refused by
 * any list with entries. A NULL or empty list allows everybody.
 */
bool acl_allows_client(const struct acl *acl, const struct client_id *id);

/** Is client @p id inside network @p e (same family, prefix equal)? An unknown client: no. */
bool acl_entry_holds(const struct acl_entry *e, const struct client_id *id);

/** Networks no answer can be reflected from the Internet to: loopback, RFC 1918, CGNAT
 * (100.64.0.0/10), link-local, RFC 4193 (fc00::/7). The default of dns-allow. */
#define ACL_N_PRIVATE_NETS 9
extern char *const acl_private_nets[ACL_N_PRIVATE_NETS];

/** Whether CIDR @p cidr (validated with acl_parse()) lies wholly inside acl_private_nets. */
bool acl_cidr_is_private(const char *cidr);

/** Whether the list has any entry at all (no list: everybody). */
static inline bool acl_active(const struct acl *acl)
{
    return acl && acl->n > 0;
}

#endif
