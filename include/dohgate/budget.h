/**
 * @file budget.h
 * What clients can make the server hold, counted at three scopes: the connection, the client
 * (its address, clients.h: an IPv4 address or an IPv6 /64, across every worker) and the process.
 * Resources:
 * - BUDGET_SOURCES: open response sources that cost a descriptor (an open file, a backend
 *   connection), for as long as the response streams;
 * - BUDGET_BODY: request-body bytes buffered by the server.
 * and a descriptor reserve: site work that would take a descriptor when fewer than
 * `descriptor-reserve` remain is refused, so that accepting and answering DoH go on when the
 * table is nearly full (as HAProxy and nginx keep a reserve).
 *
 * A holder takes units with budget_take() and gives exactly the same number back with
 * budget_put() when it lets the resource go (close, free); a refusal takes nothing. The
 * limits come from the configuration (max-sources-per-connection, max-sources-per-client,
 * max-body-buffer-per-connection, -per-client, max-body-buffer); 0 means no limit at that scope.
 * Refusals are reported to the observer (DG_EV_BUDGET_REFUSED) by the caller-facing functions.
 *
 * Ownership: a struct budget_scope is embedded in its connection (conn.c) and lives as long as
 * it; the sessions and requests on it hold a pointer (http_request.budget). A connection must
 * have given everything back before it is freed (debug builds assert it in budget_scope_fini()).
 * Threads: the process counters are atomic and the client counters live in the shared clients
 * table (its shard lock); a scope is used by its connection's worker only.
 */
#ifndef DOHGATE_BUDGET_H
#define DOHGATE_BUDGET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct clients;
struct client_id;
struct config;
struct dg_observer;

enum budget_kind { BUDGET_SOURCES, BUDGET_BODY, BUDGET_NKIND };

/** Where a refusal came from (also the idx of DG_EV_BUDGET_REFUSED, with the kind). */
enum budget_scope_level {
    BUDGET_OK = 0,
    BUDGET_AT_CONN,
    BUDGET_AT_CLIENT,
    BUDGET_AT_PROCESS,
    BUDGET_AT_DESCRIPTORS, /**< the descriptor reserve (BUDGET_SOURCES only) */
    BUDGET_NLEVEL
};

/** DG_EV_BUDGET_REFUSED's idx: kind * BUDGET_NLEVEL + level. */
#define BUDGET_EVENT_IDX(kind, level) ((unsigned)(kind)*BUDGET_NLEVEL + (unsigned)(level))

struct budget_scope {
    struct clients *clients;        /**< the worker's view of the shared table; may be NULL */
    const struct client_id *client; /**< the connection's; NULL or unknown: no client scope */
    const struct dg_observer *obs;  /**< refusals are counted here; may be NULL */
    size_t used[BUDGET_NKIND];      /**< held by this connection now */
    /** of used, the units counted in the client's entry (a per-client limit was set) */
    size_t at_client[BUDGET_NKIND];
};

/** Make @p s an empty scope for a connection from @p client. */
void budget_scope_init(struct budget_scope *s, struct clients *clients,
                       const struct client_id *client, const struct dg_observer *obs);

/** The connection closes: everything must have been given back (asserted in debug builds). */
void budget_scope_fini(struct budget_scope *s);

/**
 * Take @p n units of @p kind under the limits of @p cfg at every scope (connection, client,
 * process). @p s may be NULL (tests, fuzzers): then only the process counts.
 * @return BUDGET_OK (taken: give it back with budget_put()), or the scope that refused (nothing
 *         taken; the refusal was reported to the observer).
 */
enum budget_scope_level budget_take(struct budget_scope *s, const struct config *cfg,
                                    enum budget_kind kind, size_t n);

/** Give back @p n units taken with budget_take() on the same scope. */
void budget_put(struct budget_scope *s, enum budget_kind kind, size_t n);

/**
 * Whether a freshly opened descriptor @p fd leaves the reserve intact: false when @p fd is
 * within `descriptor-reserve` of the open-file limit. The kernel hands out the lowest free
 * number, so a high @p fd means the numbers below it are all taken. Callers close @p fd and
 * refuse (503) when this is false; the refusal is reported (BUDGET_AT_DESCRIPTORS).
 */
bool budget_fd_ok(struct budget_scope *s, const struct config *cfg, int fd);

/** What to tell a client whose response source @p why refused (one line, for a 503 body or a
 * log): the limit by its option name. */
const char *budget_source_refusal_text(enum budget_scope_level why);

/** Units of @p kind held in the whole process now (metrics, tests). */
size_t budget_process_used(enum budget_kind kind);

/** The open-file limit budget_fd_ok() measures against (RLIMIT_NOFILE's soft limit, read at
 * the first call and again after budget_refresh_fd_limit()). */
void budget_refresh_fd_limit(void);

#endif
