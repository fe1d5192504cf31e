/**
 * @file reload.h
 * Building a configuration snapshot (struct snapshot, worker.h) and the full reload: read the
 * file and the start-up flags again, validate everything a start would (parse, cross-option
 * rules, ACL, site directories, cache, certificates and ticket keys) into a plan, and only then
 * commit it. Validation touches nothing that is running; commit cannot fail. main publishes the
 * committed snapshot to the workers (worker_set_snapshot()).
 *
 * Threads: everything here runs on the main thread (the TLS store and the cache are thread-safe
 * where the workers use them).
 */
#ifndef DOHGATE_RELOAD_H
#define DOHGATE_RELOAD_H

#include <stdbool.h>
#include <stddef.h>

struct config;
struct snapshot;
struct tls_staged;
struct policy;

/**
 * Fill @p s from @p cfg (a reference is taken): ACL, site directories, cache, per-client table.
 * With @p prev (a reload), the cache is shared when cache-size and the forward zones are unchanged,
 * and the client table when its limits are. @p s->tls and @p s->metrics are the caller's to set.
 * @return NULL, or the name of the option to blame with the reason in @p err (what was built
 *         is freed by the snapshot's last snapshot_unref()).
 */
const char *snapshot_fill(struct snapshot *s, struct config *cfg, const struct snapshot *prev,
                          unsigned nworkers, char *err, size_t errlen);

/** A validated reload, waiting for reload_commit() or reload_plan_free(). */
struct reload_plan {
    struct snapshot *snap;  /**< the new snapshot (one reference) */
    struct tls_staged *tls; /**< certificates and ticket keys, read */
    struct policy *policy;  /**< local data and lists, read (one reference); NULL without a
                                 policy slot */
    char restart[256];      /**< restart-only options that differ, comma-separated */
    int nrestart;           /**< how many (their old values were kept) */
    bool cache_shared;      /**< same cache-size and forward zones: the running cache goes on */
    char fingerprint[128];  /**< a new self-signed certificate's fingerprint, or "" */
};

/**
 * Read @p conf_file (may be NULL) and the flags in @p argv into a new configuration and check
 * all of it against the running snapshot @p cur. Nothing running is touched.
 * @return 0 with @p plan filled, or -EINVAL / -ENOMEM with "WHERE: message" in @p err, WHERE
 *         being "FILE:LINE" of the option at fault when there is one, else the file name.
 */
int reload_prepare(const struct snapshot *cur, const char *conf_file, int argc, char **argv,
                   unsigned nworkers, struct reload_plan *plan, char *err, size_t errlen);

/**
 * Install what only the main thread owns: the TLS store's new generation and file list, the
 * cache's new TTL knobs (when shared), the log level. Cannot fail. @p plan->snap stays the
 * caller's reference; plan->tls is consumed.
 */
void reload_commit(struct snapshot *cur, struct reload_plan *plan);

/** Drop a plan that was not (or was) committed: its snapshot reference and staged TLS state. */
void reload_plan_free(struct reload_plan *plan);

#endif
