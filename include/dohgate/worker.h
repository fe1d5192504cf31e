/**
 * @file worker.h
 * A worker is one thread with its own event_base, its own SO_REUSEPORT listening sockets (the
 * kernel spreads connections between workers), its own connections and its own upstream
 * sockets. Nothing on its hot path is shared with other workers.
 *
 * Lifetime: worker_new() (main thread) → worker_start() → ... → worker_stop() (any thread) →
 * worker_join() → worker_free(). The config and the TLS store must outlive the worker.
 */
#ifndef DOHGATE_WORKER_H
#define DOHGATE_WORKER_H

#include <stddef.h>

struct cache;
struct tls_store;
struct metrics;
struct clients;
struct acl;
struct site;
struct config;
struct dg_addr;
struct worker;

/**
 * Open a listening socket (SO_REUSEPORT, non-blocking, dual-stack for "[::]") for @p addr.
 * @return the fd, or -1 with a message that says why and what to do in @p err.
 */
int worker_listen_socket(const struct dg_addr *addr, char *err, size_t errlen);

/** What all workers share; made by main, outlives the workers. Members may be NULL but tls. */
struct worker_shared {
    struct tls_store *tls;
    struct cache *cache;
    const struct site *site;
    struct metrics *metrics; /**< the worker writes metrics->w[id] */
    struct clients *clients; /**< per-client limits */
    const struct acl *acl;   /**< allow-client / deny-client */
};

/**
 * Create a worker. Takes ownership of the @p nfds listening sockets in @p fds (closed by
 * worker_free(), or here on failure): the first @p ntls serve TLS, the last @p nmetrics are
 * metrics listeners, the others plain HTTP. @p sh is copied.
 * @return NULL on failure (logged).
 */
struct worker *worker_new(unsigned id, const struct config *cfg, const struct worker_shared *sh,
                          const int *fds, size_t nfds, size_t ntls, size_t nmetrics);
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
