/**
 * @file localdata.h
 * Local data and local zones (the policy step's first part, policy.h): records answered by
 * dohgate itself (local-record in zone-file syntax through ldns, hosts-file entries as A/AAAA and
 * PTR), zones whose other names get NXDOMAIN or NODATA with a SOA and are never forwarded
 * (local-zone, and the RFC 6303 / RFC 6761 / RFC 8375 defaults), and forward zones (whose
 * names only get what local data has: the rest goes to the zone's upstreams).
 *
 * Which zone applies to a name: the longest zone name that is a suffix of it (static or
 * forward). Answers, in order:
 *  1. the name has records of the query's type (or a CNAME, for another type): they are the
 *     answer (AA set; a CNAME's target is followed within the local data only, up to 8 links);
 *  2. the name has local records of other types only: NODATA (with the zone's SOA when a
 *     static zone encloses it, else without SOA);
 *  3. the longest enclosing zone is static: NXDOMAIN with its SOA, or NODATA with it when the
 *     name is an empty non-terminal (a name below it has data);
 *  4. otherwise: not local (forwarded).
 * The SOA of a static zone is synthesized: "ZONE. 300 IN SOA localhost. nobody.invalid. 1 3600
 * 1200 604800 300" (RFC 6303 §3's shape, short negative TTL so that a name added at home
 * appears soon), unless local-record gave the zone a SOA of its own.
 *
 * Built on one thread (localdata_add_*(), then localdata_finish()), read-only afterwards: any
 * thread may answer from it concurrently.
 */
#ifndef DOHGATE_LOCALDATA_H
#define DOHGATE_LOCALDATA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dohgate/util.h"

struct localdata;

/** The TTL of hosts-file answers (as Unbound's local-data default). */
#define LOCALDATA_HOSTS_TTL 3600

enum localdata_zone_type {
    LOCALDATA_STATIC,  /**< NXDOMAIN / NODATA for names without data: never forwarded */
    LOCALDATA_FORWARD, /**< a forward zone: exact local data only, never a negative answer */
};

/** The zones served locally by default (RFC 6303 with RFC 7793's 100.64/10 reverse zones,
 * RFC 6761 localhost and invalid (not test: labs serve it), RFC 8375 home.arpa, RFC 9476 alt): text
 * names, ending in NULL. policy.c leaves out those at or below a configured local-zone or
 * forward-zone. */
extern const char *const localdata_default_zones[];

/** @return NULL on OOM. */
struct localdata *localdata_new(void);
void localdata_free(struct localdata *ld);

/**
 * A record in zone-file syntax ("nas.home.arpa. 3600 IN A 192.168.1.10"; a relative owner is
 * taken as absolute, the TTL defaults to 3600 and the class to IN), parsed by ldns.
 * @return 0, -EINVAL (@p err says why, ldns's words), -ENOMEM.
 */
int localdata_add_rr(struct localdata *ld, const char *text, char *err, size_t errlen);

/**
 * A hosts-file entry: A (AF_INET, 4 bytes) or AAAA (AF_INET6, 16 bytes) for @p name, TTL
 * LOCALDATA_HOSTS_TTL; when @p first (the line's canonical name) also the PTR of the address
 * to it, unless that address already has a PTR (the first line that names it wins, as glibc
 * answers). The same record twice is kept once. @return 0, -EINVAL, -ENOMEM.
 */
int localdata_add_host(struct localdata *ld, int family, const uint8_t *addr, const uint8_t *name,
                       size_t len, bool first);

/** localhost's own: localhost. A 127.0.0.1 and AAAA ::1, and their PTRs. @return 0, -ENOMEM. */
int localdata_add_localhost(struct localdata *ld);

/** A zone (uncompressed wire name). The same name again replaces its type. @return 0, -EINVAL,
 * -ENOMEM. */
int localdata_add_zone(struct localdata *ld, const uint8_t *name, size_t len,
                       enum localdata_zone_type type);

/** Done adding: build the lookup tables. @return 0 or -ENOMEM (then only free it). */
int localdata_finish(struct localdata *ld);

/** Records held (hosts entries and local-record, PTRs included), for the log line. */
size_t localdata_records(const struct localdata *ld);

enum localdata_kind {
    LOCALDATA_NOT = 0,  /**< not local: forward it */
    LOCALDATA_ANSWER,   /**< records */
    LOCALDATA_NODATA,   /**< NOERROR, no records of the type */
    LOCALDATA_NXDOMAIN, /**< no such name in a static zone */
};

/**
 * Answer @p q (a query that passed dns_query_check()) from the local data.
 * @param ans  receives the answer (appended; dns_make_answer(): the query's ID, RD, CD, its
 *             OPT echoed as our own) unless LOCALDATA_NOT.
 * @param ttl  the smallest TTL in it (negative answers: the SOA's), for cache-control.
 * @return enum localdata_kind, or -ENOMEM, or -EMSGSIZE (the local records for the question do
 *         not fit one 65535-byte message): nothing appended on error.
 * Cost when not local: one nameset lookup of the name and one of its zones.
 */
int localdata_answer(const struct localdata *ld, const uint8_t *q, size_t qlen, struct dg_buf *ans,
                     uint32_t *ttl);

#endif
