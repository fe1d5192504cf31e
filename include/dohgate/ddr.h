/**
 * @file ddr.h
 * Discovery of Designated Resolvers (RFC 9462): the answers dohgate gives about itself.
 *
 * A client that knows only the address of its resolver asks it for `_dns.resolver.arpa` SVCB
 * (RFC 9462 §4) and learns the encrypted endpoints (DoH, DoT) of the same service, in the SVCB
 * form for DNS servers (RFC 9461, wire format RFC 9460). A client that knows the server's name
 * asks for `_dns.<name>` SVCB (RFC 9462 §5). This module recognises those queries
 * (ddr_classify()) and builds the whole answer (ddr_answer()); the caller (the query service)
 * sends it instead of forwarding the query.
 *
 * `resolver.arpa` is a special-use name that only the resolver being asked can answer: RFC 9462
 * §6.1 says a forwarder does not send it upstream (the upstream's designation would name an
 * endpoint whose certificate does not cover our address), and §6.4 makes the resolver serve
 * `resolver.arpa` as a locally served zone (RFC 6303): every other type at
 * `_dns.resolver.arpa` and every other name under `resolver.arpa` gets NODATA (NOERROR, no
 * answer records), with a made-up SOA for `resolver.arpa` in the authority section so that the
 * negative answer has a lifetime (RFC 2308 §3). §4: a resolver with no designated resolver
 * answers NODATA too, which is what happens here without a server name or without an encrypted
 * listener.
 *
 * No I/O, no allocation except in the output buffer, no global state: safe from any thread.
 * struct ddr_endpoints holds copies of everything it is given (no pointers into the config),
 * so it can live in a snapshot and be read by every worker.
 */
#ifndef DOHGATE_DDR_H
#define DOHGATE_DDR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dohgate/util.h"

#define DDR_MAX_HINTS   8   /**< per address family */
#define DDR_NAME_WIRE   255 /**< octets of a wire-format name, root label included */
#define DDR_DOHPATH_MAX 256 /**< bytes of the DoH path template, NUL excluded */
#define DDR_TYPE_SVCB   64
#define DDR_PRIO_DOH    1 /**< SvcPriority of the DoH record: preferred (RFC 9460 §2.4.1) */
#define DDR_PRIO_DOT    2
#define DDR_DEFAULT_DOH 443 /**< the port a client assumes without a "port" key */
#define DDR_DEFAULT_DOT 853
/**
 * TTL of the SVCB records, and of the SOA of the negative answers (TTL and MINIMUM, so that a
 * NODATA lives as long as a positive answer would). RFC 9462's examples use 7200; shorter here
 * because the TTL is how long a client sticks to what it learned: after a successful discovery
 * it does not fall back to unencrypted DNS before the record expires (RFC 9462 §7), and after a
 * failed certificate check it does not ask again for the TTL (§4.2). An operator who changes a
 * port, an address or the certificate wants both windows short, and the cost is one small
 * answer, made locally, per client every five minutes.
 */
#define DDR_TTL 300u

/** This instance's encrypted endpoints. Zero-initialised (or ddr_endpoints_init()): none. */
struct ddr_endpoints {
    uint8_t target[DDR_NAME_WIRE]; /**< wire form of the server name; target_len 0: none */
    size_t target_len;
    uint16_t doh_port;                  /**< 0: no DoH listener */
    char doh_path[DDR_DOHPATH_MAX + 1]; /**< URI template, e.g. "/dns-query{?dns}" */
    uint16_t dot_port;                  /**< 0: no DoT listener */
    uint8_t v4[DDR_MAX_HINTS][4];
    unsigned n_v4;
    uint8_t v6[DDR_MAX_HINTS][16];
    unsigned n_v6;
};

/** Reset @p ep to no name, no endpoint, no hint. */
void ddr_endpoints_init(struct ddr_endpoints *ep);

/**
 * Set the SVCB TargetName: the name clients connect to and check the certificate against (the
 * first `server-name`, a name the certificate covers). RFC 9462 §4 forbids "." (the target of
 * `_dns.resolver.arpa` must be a real name), so without one no record is answered.
 * @param name  dotted, a trailing dot optional; printable ASCII, no escapes; NULL clears it.
 * @return 0, -EINVAL (empty, root, a label empty or over 63 octets, over 255 octets in wire
 *         form, a character outside 0x21..0x7e): @p ep unchanged.
 */
int ddr_endpoints_set_target(struct ddr_endpoints *ep, const char *name);

/**
 * Announce a DoH endpoint on @p port with the URI template @p path_template (RFC 9461 §5:
 * "dohpath", relative, with the "dns" variable; dohgate's is "<path>{?dns}").
 * @param port  0 removes the DoH endpoint (@p path_template is then ignored).
 * @return 0, -EINVAL (template not starting with '/', without "{?dns}", longer than
 *         DDR_DOHPATH_MAX, with a byte outside 0x21..0x7e): @p ep unchanged.
 */
int ddr_endpoints_set_doh(struct ddr_endpoints *ep, uint16_t port, const char *path_template);

/** Announce a DoT endpoint on @p port (0: none). */
void ddr_endpoints_set_dot(struct ddr_endpoints *ep, uint16_t port);

/**
 * Add an address of this server to the ipv4hint/ipv6hint of both records (RFC 9460 §7.3). A
 * client that got the record from `_dns.resolver.arpa` may connect to an address it did not
 * get from the hints only after the same certificate check (RFC 9462 §4.2), so they matter.
 * An address already there is not added twice.
 * @param addr  "192.0.2.1" or "2001:db8::1".
 * @return 0, -EINVAL (not an address, or the unspecified one: a listener bound to 0.0.0.0 or
 *         :: has no address to announce), -ENOSPC (DDR_MAX_HINTS of that family already).
 */
int ddr_endpoints_add_hint(struct ddr_endpoints *ep, const char *addr);

/**
 * ddr_endpoints_add_hint() for an address in network byte order.
 * @param af  AF_INET (4 bytes at @p addr) or AF_INET6 (16 bytes).
 */
int ddr_endpoints_add_hint_raw(struct ddr_endpoints *ep, int af, const void *addr);

/** What a query is to DDR. */
enum ddr_match {
    DDR_NOT_DDR = 0,   /**< not ours: forward it as usual */
    DDR_RESOLVER_ARPA, /**< any type and class at or under resolver.arpa: answer it here */
    DDR_OWN_NAME,      /**< `_dns.<own_name>` SVCB IN: answer it here */
};

/**
 * Classify query @p q (the caller has run dns_query_check(): one uncompressed question).
 * Names compare case-insensitively. `_dns.<own_name>` of another type or class is NOT_DDR (the
 * public DNS may hold other data there); a name that merely contains `resolver.arpa` elsewhere
 * (`_dns.resolver.arpa.example`) is NOT_DDR. The walk is bounded by the question.
 * @param own_name  the server name (as given to ddr_endpoints_set_target()), or NULL. An
 *                  invalid one is treated as NULL.
 * @return NOT_DDR as well for a message whose question does not parse, a response (QR set) or
 *         an opcode other than QUERY.
 */
enum ddr_match ddr_classify(const uint8_t *q, size_t len, const char *own_name);

/** ddr_classify() with @p ep's target as the own name, without converting it per call. */
enum ddr_match ddr_classify_ep(const uint8_t *q, size_t len, const struct ddr_endpoints *ep);

/**
 * Append the answer to DDR query @p q to @p out: ID, opcode, RD and CD copied, QR, AA and RA
 * set, question copied, NOERROR; an OPT (UDP size 1232, DO copied) when the query had one. The
 * records:
 *  - SVCB IN at `_dns.resolver.arpa` or at `_dns.<target>`, with a target name: one SVCB record
 *    per endpoint, TTL DDR_TTL, target = the server name. DoH, priority 1: alpn "h2" and
 *    "http/1.1", port (left out when 443), ipv4hint, ipv6hint, dohpath. DoT, priority 2: alpn
 *    "dot", port (left out when 853), the hints. Keys in increasing order (RFC 9460 §2.2).
 *    Without a target name or without any endpoint: NODATA (RFC 9462 §4).
 *  - SOA IN at `resolver.arpa` itself: the zone's SOA (the locally served zone's apex).
 *  - anything else at or under resolver.arpa: NODATA with the SOA of resolver.arpa in the
 *    authority section (RFC 9462 §6.4); for a class other than IN, without the SOA (the zone
 *    is IN).
 *  - `_dns.<target>` without endpoints: NODATA without SOA (that zone is not ours to describe).
 * The answer can exceed 512 octets (16 IPv6 hints, long names): truncating for a UDP client
 * without EDNS is the transport's job, as for any answer.
 * @param ep  the endpoints; its target is the own name ddr_classify() was given.
 * @return 0; -EINVAL (NULL argument, a question that does not parse, a query that is not DDR
 *         for @p ep's target), -ENOMEM. On error @p out is as it was.
 */
int ddr_answer(const uint8_t *q, size_t len, const struct ddr_endpoints *ep, struct dg_buf *out);

#endif
