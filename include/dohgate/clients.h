/**
 * @file clients.h
 * Per-client state shared by all workers: open connections, a token bucket for new
 * connections (handshakes cost the most CPU) and one for DoH queries. A client is an IPv4
 * address, or an IPv6 /64 (one host usually holds a whole /64, so counting single IPv6
 * addresses would limit nothing); IPv4-mapped IPv6 addresses count as IPv4.
 *
 * The table is sharded (a mutex per shard, taken for a few hundred nanoseconds per connection
 * or query) and bounded: at most max_entries clients; a new client replaces the least recently
 * seen one that has no open connection. If every entry has connections (more clients than the
 * bound allows), the newcomer is not tracked: it is let through and its connection not counted,
 * so a full table never locks anybody out and never grows.
 *
 * Threads: every function is thread-safe.
 */
#ifndef DOHGATE_CLIENTS_H
#define DOHGATE_CLIENTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dohgate/client.h" /* struct client_key: filled once per connection, in its client_id */

struct clients_config {
    unsigned max_conns;   /**< open connections per client; 0 = no limit */
    unsigned conn_rate;   /**< new connections per second per client; 0 = no limit */
    unsigned conn_burst;  /**< bucket size for conn_rate */
    unsigned query_rate;  /**< DoH queries per second per client; 0 = no limit */
    unsigned query_burst; /**< bucket size for query_rate */
    size_t max_entries;   /**< clients tracked at once */
};

struct clients;

/** @return NULL on OOM. */
struct clients *clients_new(const struct clients_config *cfg);
void clients_free(struct clients *c);

enum client_verdict {
    CLIENT_OK = 0,
    CLIENT_UNTRACKED,      /**< let through, not counted (table full): no clients_conn_close() */
    CLIENT_TOO_MANY_CONNS, /**< refuse: max_conns open already */
    CLIENT_CONN_RATE,      /**< refuse: new connections too fast */
};

/** A connection from @p k wants in. On CLIENT_OK it is counted: call clients_conn_close(). */
enum client_verdict clients_conn_open(struct clients *c, const struct client_key *k,
                                      uint64_t now_ms);
void clients_conn_close(struct clients *c, const struct client_key *k);

/**
 * A DoH query from @p k. @return 0 when allowed, else the whole seconds until a query would
 * be (for Retry-After, at least 1).
 */
unsigned clients_query(struct clients *c, const struct client_key *k, uint64_t now_ms);

/** Kinds of units a client can hold (budget.h's enum budget_kind, by value). */
#define CLIENTS_NHOLD 2

/**
 * Count @p n more units of @p kind held by @p k's requests, unless that would pass @p limit
 * (0: no limit). An entry holding units is not evicted. A client the table cannot track is let
 * through uncounted. @return whether the units were granted.
 */
bool clients_hold(struct clients *c, const struct client_key *k, unsigned kind, size_t n,
                  size_t limit);

/** Give back units granted by clients_hold() (never below zero). */
void clients_unhold(struct clients *c, const struct client_key *k, unsigned kind, size_t n);

/** Whether clients_query() limits anything (a query rate is configured); NULL: no. Lets callers
 * skip the clock read when it does not. */
bool clients_limit_queries(const struct clients *c);

/** Clients tracked now (tests, metrics). */
size_t clients_count(struct clients *c);

#endif
