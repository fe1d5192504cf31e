/**
 * @file client.h
 * Who is asking: the client address of a connection, parsed once when the connection is
 * accepted and then only read. A struct client_id holds the address in binary (IPv4-mapped IPv6
 * addresses, as a dual-stack listener reports IPv4 clients, are stored as IPv4), the key that
 * per-client limits count by (clients.h: the IPv4 address, or the IPv6 /64) and the numeric
 * text (for logs and X-Forwarded-For). ACLs, limits and the query log read the binary forms, so
 * no request parses an address string.
 *
 * Lifetime: a plain value without pointers. The connection embeds its client_id (the accepted
 * peer, or the address a PROXY protocol header named); its protocol sessions and every request
 * on it hold a const pointer to that one copy, valid as long as the connection (which outlives
 * its sessions and requests). A request from a trusted proxy whose X-Forwarded-For names
 * another client points to a copy embedded in its exchange instead (http.h `fwd_client`),
 * valid until the exchange ends. The UDP listener fills one per datagram.
 *
 * Layer: util level. No I/O, no event loop, no other dohgate module.
 */
#ifndef DOHGATE_CLIENT_H
#define DOHGATE_CLIENT_H

#include <stddef.h>
#include <stdint.h>

struct sockaddr;

/** A client as per-client limits count it: the address (IPv4), or the /64 prefix (IPv6). */
struct client_key {
    uint8_t b[16];
    uint8_t len; /**< 4 or 8 bytes used */
};

/** Room for the longest numeric address inet_ntop() writes (INET6_ADDRSTRLEN), NUL included. */
#define CLIENT_TEXT_MAX 46

struct client_id {
    uint8_t addr[16];           /**< the address, network order; IPv4 in the first 4 bytes */
    uint8_t len;                /**< 4 (IPv4, mapped IPv6 too), 16 (IPv6), 0 (unknown) */
    struct client_key key;      /**< valid when len != 0 */
    char text[CLIENT_TEXT_MAX]; /**< "192.0.2.1", "2001:db8::1"; "" when unknown */
};

/**
 * Fill @p id from a socket address (as accept() returns it). Any other family than AF_INET and
 * AF_INET6 leaves @p id unknown (len 0, text "", which every ACL with entries refuses).
 * @return 0, or -EAFNOSUPPORT (then @p id is the unknown client).
 */
int client_id_from_sockaddr(struct client_id *id, const struct sockaddr *sa);

/**
 * Fill @p id from a numeric address ("192.0.2.1", "::ffff:192.0.2.1", "2001:db8::1"): for tests
 * and tools; the server fills ids from sockaddrs only.
 * @return 0, or -EINVAL (then @p id is the unknown client).
 */
int client_id_from_string(struct client_id *id, const char *s);

/** Whether the address is known (a connection over IPv4 or IPv6). NULL: no. */
static inline int client_id_known(const struct client_id *id)
{
    return id && id->len != 0;
}

/**
 * The address with the host part cleared, as anonymizing query logs show it (IPv4 /24, IPv6
 * /48, as Unbound's and PowerDNS's options do), into @p out. Unknown clients give "".
 */
void client_id_text_truncated(const struct client_id *id, char *out, size_t outlen);

/**
 * client_id_from_sockaddr() without the text (text ""): for a front end that makes one
 * client_id per datagram (plain DNS over UDP), where formatting every address is a measurable
 * share of the work; read the address as text with client_id_text() when it is needed.
 */
int client_id_from_sockaddr_notext(struct client_id *id, const struct sockaddr *sa);

/** The address as text into @p out: id->text, or formatted now when it was not filled. */
void client_id_text(const struct client_id *id, char *out, size_t outlen);

/** Fill @p k from a numeric address string ("192.0.2.1", "2001:db8::1"), for tests.
 * @return 0 or -1. */
int client_key_from_string(const char *s, struct client_key *k);

#endif
