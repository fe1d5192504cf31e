/**
 * @file worker.h
 * A worker is one thread with its own event_base, its own SO_REUSEPORT listening sockets (the
 * kernel spreads connections between workers), its own connections and its own upstream
 * sockets. Nothing on its hot path is shared with other workers.
 *
 * Lifetime: worker_new() (main thread) → worker_start() → ... → worker_stop() (any thread) →
 * worker_join() → worker_free(). The TLS store and the metrics must outlive the worker; the
 * configuration comes in reference-counted snapshots (struct snapshot).
 */
#ifndef DOHGATE_WORKER_H
#define DOHGATE_WORKER_H

#include <stdbool.h>
#include <stddef.h>

#include "dohgate/acl.h"
#include "dohgate/cache.h"
#include "dohgate/clients.h"
#include "dohgate/ddr.h"
#include "dohgate/observer.h"
#include "dohgate/rrl.h"
#include "dohgate/site.h"

struct tls_store;
struct metrics;
struct nameset;
struct config;
struct dg_addr;
struct worker;
struct policy_slot;

/**
 * Open a listening socket (SO_REUSEPORT, non-blocking, dual-stack for "[::]") for @p addr.
 * @return the fd, or -1 with a message that says why and what to do in @p err.
 */
int worker_listen_socket(const struct dg_addr *addr, char *err, size_t errlen);

/**
 * Open a plain-DNS UDP socket (SO_REUSEPORT: one per worker, the kernel spreads sources between
 * them; non-blocking; dual-stack for "[::]"; packet info on, so that answers leave from the
 * address each query was sent to; a 4 MiB receive buffer when the system allows it) for @p addr.
 * @return the fd, or -1 with a message that says why and what to do in @p err.
 */
int worker_udp_socket(const struct dg_addr *addr, char *err, size_t errlen);

/**
 * A value shared by snapshots (the cache, the per-client table): freed with the last snapshot
 * that holds it. Reference counts are atomic: snapshots die on any thread.
 */
struct shared_obj {
    _Atomic unsigned refs;
    void *p;
    void (*free_fn)(void *p);
};
/** @return a holder with one reference, or NULL on OOM (then @p p is not freed). */
struct shared_obj *shared_obj_new(void *p, void (*free_fn)(void *p));
struct shared_obj *shared_obj_ref(struct shared_obj *o);
/** Drop a reference; the last one calls free_fn. NULL is ignored. */
void shared_obj_unref(struct shared_obj *o);

/**
 * One configuration and what is built from it, shared by all workers: immutable once
 * published, reference counted (snapshot_ref/unref, thread-safe). main builds and validates a
 * snapshot, then hands it to each worker (worker_set_snapshot()). A worker makes its own view of
 * it (upstream set, resolver, backend pool, handler context) that every new connection uses;
 * a connection keeps the view it was accepted on, so the view, and with it the snapshot, lives
 * until its last connection closed. The last snapshot_unref() (any thread) frees the site, the
 * ACL and the config, and drops the cache and client table.
 */
struct snapshot {
    _Atomic unsigned refs;
    struct config *cfg;                /**< a reference */
    struct tls_store *tls;             /**< not owned: one store, reloaded in place (tls.h) */
    struct metrics *metrics;           /**< not owned; may be NULL */
    struct shared_obj *cache;          /**< struct cache; shared while cache-size stays the same */
    struct shared_obj *clients;        /**< struct clients, or NULL (no per-client limits) */
    struct shared_obj *rrl;            /**< struct rrl (dns-rate-limit), or NULL (off) */
    struct rrl_config rrl_cfg;         /**< what it was made with (shared while the same) */
    struct cache_config cache_cfg;     /**< what the cache was made or re-tuned with */
    struct clients_config clients_cfg; /**< what the client table was made with */
    struct site site;
    bool site_open;
    struct acl acl;
    struct acl dns_acl;       /**< dns-allow, or the private networks when it is not set */
    struct acl trusted_proxy; /**< trusted-proxy: peers whose forwarding headers name the client */
    struct acl pp_acl;        /**< proxy-protocol-from (empty: no PROXY protocol) */
    struct ddr_endpoints ddr; /**< what DDR answers announce (RFC 9462); used when cfg->ddr */
    struct uptls_ctx *uptls;  /**< owned: TLS client context of DoT/DoH upstreams, or NULL */
    /** not owned: the process's current policy (main's, outlives the workers); NULL: no
     * policy step */
    struct policy_slot *policy_slot;
    /** owned: the forward zones' names (value: index in cfg->fwd + 1), or NULL (none); read
     * by every worker's resolver (resolver_set_zones()) */
    struct nameset *fwd_zones;
};

/** @return a zeroed snapshot with one reference, or NULL on OOM. */
struct snapshot *snapshot_new(void);
struct snapshot *snapshot_ref(struct snapshot *s);
/** Drop a reference; the last one frees (see struct snapshot). NULL is ignored. */
void snapshot_unref(struct snapshot *s);

/** A listening socket handed to a worker, and what it serves. */
struct worker_socket {
    int fd;
    enum dg_listener kind; /**< for TCP listeners: which protocol an accepted connection speaks */
    bool udp;              /**< a plain-DNS UDP socket (dns-listen); kind is then unused */
    /** from systemd (socket activation): its queue outlives us and is the next instance's,
     * so a stop leaves what waits there */
    bool inherited;
};

/**
 * Create a worker on snapshot @p snap (a reference is taken). Takes ownership of the @p n
 * sockets in @p socks (closed by worker_free(), or here on failure).
 * @return NULL on failure (logged).
 */
struct worker *worker_new(unsigned id, struct snapshot *snap, const struct worker_socket *socks,
                          size_t n);
/**
 * Use @p snap for the connections accepted from now on (thread-safe, returns at once; a
 * reference is taken). The worker switches between two events; open connections finish on the
 * view they started with. Worker 0 also points the metrics at the new config and cache, from
 * its own thread, where scrapes run. If the worker cannot build its view (out of memory) it
 * logs that and keeps the previous one.
 */
void worker_set_snapshot(struct worker *w, struct snapshot *snap);
/** Views (configurations) the worker still holds: the current one + retired ones with open
 * connections. For tests and logs; only exact on the worker's thread or after worker_join(). */
size_t worker_views(const struct worker *w);
/** Log this worker's counters from its own thread (thread-safe request, returns at once). */
void worker_log_stats(struct worker *w);
/** Start the thread. @return 0 or -errno. */
int worker_start(struct worker *w);
/**
 * Ask the worker to stop gracefully: close its listeners, GOAWAY its connections, let open
 * streams finish for up to @p grace_ms, then exit the loop. Thread-safe, returns at once.
 */
void worker_stop(struct worker *w, unsigned grace_ms);
/** Wait for the thread to end. */
void worker_join(struct worker *w);
/** Free a worker that was never started or has been joined. */
void worker_free(struct worker *w);

#endif
