/**
 * @file lists.h
 * Parsers for the files of the policy step (policy.h), pure: bytes in, entries out through a
 * callback, errors as "line N: message" (the caller prefixes the file name). No I/O except
 * lists_read_file().
 *
 * Domain lists (blocklist, allowlist), the three formats users have, recognized line by line:
 *  - hosts lines: "0.0.0.0 ads.example [more names]" (any address; names like "localhost",
 *    "0.0.0.0", "broadcasthost", "local", "ip6-localhost"... are skipped, as hosts-file
 *    blocklists carry them for the machine's own sake);
 *  - one domain per line: "ads.example" (a leading "*." is the same rule);
 *  - the adblock subset: "||ads.example^" (blocks the name and its subdomains), "@@||x^"
 *    (an exception: reported with allow = true), "!" comments and "[Adblock Plus]" headers;
 *    other adblock rules (paths, options after '$' other than "$important", regexes,
 *    cosmetic "##") cannot apply to DNS and are counted as skipped, not errors.
 *  '#' starts a comment (whole line, or after whitespace); empty lines and CRLF are fine.
 *  A line of another shape or a name that is not a domain (dnswire_name_from_text()) is
 *  skipped and counted (st->invalid; the first one described in @p err even on success), as
 *  lists from elsewhere carry a stray line now and then; when such lines are at least as many
 *  as the names, the file is no list and is refused. A NUL byte or a line over 4096 octets
 *  refuses the file at once. A UTF-8 byte-order mark at the start is skipped.
 *  IPv6 addresses may carry a zone ("fe80::1%lo0", as macOS /etc/hosts and the StevenBlack
 *  list do): it is dropped.
 *
 * Hosts files (hosts-file): "ADDRESS NAME [ALIAS…]" with IPv4 or IPv6 addresses (no scope),
 * '#' comments. Every name maps to the address; a bad address or name is an error.
 */
#ifndef DOHGATE_LISTS_H
#define DOHGATE_LISTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/** What a domain list held. */
struct list_stats {
    size_t lines;   /**< lines read */
    size_t domains; /**< names reported (allow and block) */
    size_t skipped; /**< adblock rules that cannot apply to DNS */
    size_t invalid; /**< lines that are no list line (skipped; the first one in err) */
};

/** One name of a domain list (lower-cased wire form). @return 0 to go on, or a negative errno
 * to stop the parse with it (e.g. -ENOMEM). */
typedef int (*list_domain_cb)(void *arg, const uint8_t *name, size_t len, bool allow);

/**
 * Parse a domain list (@p len bytes, no NUL needed).
 * @return 0, -EINVAL ("line N: message" in @p err), or the callback's error.
 */
int lists_parse_domains(const char *buf, size_t len, list_domain_cb cb, void *arg,
                        struct list_stats *st, char *err, size_t errlen);

/** One hosts-file entry: @p family AF_INET (4 bytes at @p addr) or AF_INET6 (16), and one name
 * (lower-cased wire form) that maps to it; @p first: the line's first name (the canonical one,
 * which the PTR answer names). @return 0 or a negative errno to stop. */
typedef int (*hosts_entry_cb)(void *arg, int family, const uint8_t *addr, const uint8_t *name,
                              size_t len, bool first);

/** Parse a hosts file. @return 0, -EINVAL ("line N: message"), or the callback's error. */
int lists_parse_hosts(const char *buf, size_t len, hosts_entry_cb cb, void *arg, char *err,
                      size_t errlen);

/**
 * Read the whole of @p path (at most @p max bytes) into a new buffer (*@p buf, freed by the
 * caller; NUL-terminated, the NUL not counted in *@p len).
 * @return 0, or a negative errno with "PATH: message" in @p err (-EFBIG past @p max).
 */
int lists_read_file(const char *path, size_t max, char **buf, size_t *len, char *err,
                    size_t errlen);

#endif
