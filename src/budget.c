/* Budgets for what clients make the server hold (see budget.h). */
#include "dohgate/budget.h"

#include <assert.h>
#include <stdatomic.h>
#include <sys/resource.h>

#include "dohgate/client.h"
#include "dohgate/clients.h"
#include "dohgate/config.h"
#include "dohgate/observer.h"

/* Process-wide: every worker adds and subtracts here. Relaxed order is enough: the counters
 * guard no other memory, and a limit crossed by a few units under a race costs nothing. */
static atomic_size_t process_used[BUDGET_NKIND];
static atomic_long fd_limit; /* 0: not read yet */

void budget_scope_init(struct budget_scope *s, struct clients *clients,
                       const struct client_id *client, const struct dg_observer *obs)
{
    *s = (struct budget_scope){
        .clients = clients, .client = client_id_known(client) ? client : NULL, .obs = obs};
}

void budget_scope_fini(struct budget_scope *s)
{
    for (int k = 0; k < BUDGET_NKIND; k++)
        assert(s->used[k] == 0);
    (void)s;
}

static size_t conn_limit(const struct config *cfg, enum budget_kind kind)
{
    return kind == BUDGET_SOURCES ? cfg->max_sources_per_conn : cfg->body_buffer_per_conn;
}

static size_t client_limit(const struct config *cfg, enum budget_kind kind)
{
    return kind == BUDGET_SOURCES ? cfg->max_sources_per_client : cfg->body_buffer_per_client;
}

static size_t process_limit(const struct config *cfg, enum budget_kind kind)
{
    return kind == BUDGET_SOURCES ? 0 : cfg->body_buffer_total;
}

static enum budget_scope_level refuse(struct budget_scope *s, enum budget_kind kind,
                                      enum budget_scope_level at)
{
    dg_observe(s ? s->obs : NULL, DG_EV_BUDGET_REFUSED, BUDGET_EVENT_IDX(kind, at), 1);
    return at;
}

enum budget_scope_level budget_take(struct budget_scope *s, const struct config *cfg,
                                    enum budget_kind kind, size_t n)
{
    size_t lim = conn_limit(cfg, kind);
    if (s && lim && s->used[kind] + n > lim)
        return refuse(s, kind, BUDGET_AT_CONN);
    lim = process_limit(cfg, kind);
    size_t before = atomic_fetch_add_explicit(&process_used[kind], n, memory_order_relaxed);
    if (lim && before + n > lim) {
        atomic_fetch_sub_explicit(&process_used[kind], n, memory_order_relaxed);
        return refuse(s, kind, BUDGET_AT_PROCESS);
    }
    lim = client_limit(cfg, kind);
    bool at_client = s && s->clients && s->client && lim;
    if (at_client && !clients_hold(s->clients, &s->client->key, kind, n, lim)) {
        atomic_fetch_sub_explicit(&process_used[kind], n, memory_order_relaxed);
        return refuse(s, kind, BUDGET_AT_CLIENT);
    }
    if (s) {
        s->used[kind] += n;
        if (at_client)
            s->at_client[kind] += n;
    }
    return BUDGET_OK;
}

void budget_put(struct budget_scope *s, enum budget_kind kind, size_t n)
{
    if (!n)
        return;
    atomic_fetch_sub_explicit(&process_used[kind], n, memory_order_relaxed);
    if (!s)
        return;
    assert(s->used[kind] >= n);
    s->used[kind] -= n;
    /* Only what the client's entry was given: units taken while no per-client limit was set
     * (a reload may set one later) never reached it, and must not be taken from the others. */
    size_t c = n < s->at_client[kind] ? n : s->at_client[kind];
    s->at_client[kind] -= c;
    if (c && s->clients && s->client)
        clients_unhold(s->clients, &s->client->key, kind, c);
}

void budget_refresh_fd_limit(void)
{
    struct rlimit rl;
    long lim = 1024;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
        lim = rl.rlim_cur > (rlim_t)1 << 30 ? 1L << 30 : (long)rl.rlim_cur;
    else if (rl.rlim_cur == RLIM_INFINITY)
        lim = 1L << 30;
    atomic_store(&fd_limit, lim);
}

bool budget_fd_ok(struct budget_scope *s, const struct config *cfg, int fd)
{
    long lim = atomic_load(&fd_limit);
    if (!lim) {
        budget_refresh_fd_limit();
        lim = atomic_load(&fd_limit);
    }
    if ((long)fd + (long)cfg->fd_reserve < lim)
        return true;
    refuse(s, BUDGET_SOURCES, BUDGET_AT_DESCRIPTORS);
    return false;
}

const char *budget_source_refusal_text(enum budget_scope_level why)
{
    static const char *const text[BUDGET_NLEVEL] = {
        [BUDGET_AT_CONN] = "too many open responses on this connection "
                           "(max-sources-per-connection)",
        [BUDGET_AT_CLIENT] = "too many open responses for this client (max-sources-per-client)",
        [BUDGET_AT_PROCESS] = "too many open responses on this server",
        [BUDGET_AT_DESCRIPTORS] = "the server is short of descriptors (descriptor-reserve)",
    };
    return why < BUDGET_NLEVEL && text[why] ? text[why] : "service unavailable";
}

size_t budget_process_used(enum budget_kind kind)
{
    return atomic_load_explicit(&process_used[kind], memory_order_relaxed);
}
