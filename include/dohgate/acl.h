/**
 * @file acl.h
 * Client access lists: allowed and denied networks (CIDR). The longest matching prefix decides
 * (a deny wins a tie); an address no entry matches is allowed only when there is no allow entry
 * (so "allow-client 10.0.0.0/8" alone means "only 10/8", and "deny-client" alone means
 * "everybody but"). IPv4-mapped IPv6 addresses are matched as IPv4. Read-only once built, so
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

/** Whether the client at @p addr (numeric string) may use what the list guards. */
bool acl_allows(const struct acl *acl, const char *addr);

struct sockaddr;
/** The same for a connection's peer address (AF_INET or AF_INET6; others are refused). */
bool acl_allows_sockaddr(const struct acl *acl, const struct sockaddr *sa);

/** Whether the list has any entry at all (no list: everybody). */
static inline bool acl_active(const struct acl *acl)
{
    return acl && acl->n > 0;
}

#endif
