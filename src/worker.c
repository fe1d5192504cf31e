/* accept4() */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "dohgate/worker.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <fcntl.h>
#include <malloc.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "dohgate/acl.h"
#include "dohgate/client.h"
#include "dohgate/clients.h"
#include "dohgate/config.h"
#include "dohgate/conn.h"
#include "dohgate/dnsudp.h"
#include "dohgate/http.h"
#include "dohgate/l2cache.h"
#include "dohgate/list.h"
#include "dohgate/h2.h"
#include "dohgate/log.h"
#include "dohgate/metrics.h"
#include "dohgate/nameset.h"
#include "dohgate/observer.h"
#include "dohgate/pagepool.h"
#include "dohgate/policy.h"
#include "dohgate/proxy.h"
#include "dohgate/resolver.h"
#include "dohgate/upstream.h"
#include "dohgate/uptls.h"

#define ACCEPTS_PER_EV 64
/* Accepting paused for lack of descriptors: retried after this long at the latest. */
#define ACCEPT_PAUSE_MS 250

/*
 * A worker's view of one snapshot: what its connections use. The current view takes the new
 * connections; a retired view (after a reload) stays on w->retired until its last connection
 * closed, then on_reap frees it. Every pointer a connection, a stream or an exchange holds into
 * the configuration (set->cfg, hctx, the resolver, the proxy) points into its own view, which
 * therefore outlives them all; views are only freed from on_swap, on_reap and worker_free,
 * never from inside a connection callback.
 */
struct worker_view {
    struct worker *w;
    struct dg_lnode node; /* on w->retired */
    struct snapshot *snap;
    struct upstream *upstream;
    struct upstream **zone_up; /* one set per forward zone (cfg->fwd order), n_zone_up */
    size_t n_zone_up;
    struct resolver *resolver;
    struct l2cache *l2; /* cache-redis: this view's connection, or NULL */
    struct proxy *proxy;
    bool acl_all; /* acl-scope all: refused clients' connections are closed at accept */
    struct handler_ctx hctx;
    struct conn_set conns;
    struct dnsudp_set udp;     /* its plain-DNS UDP queries still pending */
    struct policy_view policy; /* its hold on the process's current policy (policy.h) */
};

/* One listening socket of the worker: a TCP one with its accept event, or a UDP one with its
 * reader. The fd is the worker's (closed at stop or free: -1 then). */
struct listener {
    struct worker *w;
    struct worker_socket s;
    struct event *lev;     /* TCP: accept events */
    struct dnsudp *reader; /* UDP: the plain-DNS front end */
};

struct worker {
    unsigned id;
    pthread_t thread;
    bool started;
    struct event_base *base;
    struct listener *ls; /* the listening sockets, nls of them */
    size_t nls;
    struct event *stop_ev, *deadline_ev, *resume_ev, *stats_ev, *trim_ev, *swap_ev, *reap_ev;
    size_t conn_peak;       /* most connections open since the last trim check */
    bool accept_paused;     /* out of descriptors: listeners off until one closes or the timer */
    uint64_t emfile_log_ms; /* last "out of descriptors" warning (one per 10 s at most) */
    unsigned grace_ms;
    bool stopping;
    struct metrics *metrics;
    struct dg_observer obs;       /* counts this worker's events in its metrics (when enabled) */
    const struct dg_observer *op; /* &obs, or NULL without metrics */
    struct pagepool *h2_pool;     /* HTTP/2 frame buffers, for every view's sessions */
    struct pagepool *h2_pages;    /* nghttp2's one-page tables (its stream map), same */
    struct worker_view *cur;      /* new connections go here */
    struct dg_list retired;       /* older views with connections still open */
    pthread_mutex_t mu;           /* guards pending, set by worker_set_snapshot() */
    struct snapshot *pending;
};

/* ---- snapshots --------------------------------------------------------------------------- */

struct shared_obj *shared_obj_new(void *p, void (*free_fn)(void *p))
{
    struct shared_obj *o = calloc(1, sizeof(*o));
    if (!o)
        return NULL;
    atomic_init(&o->refs, 1);
    o->p = p;
    o->free_fn = free_fn;
    return o;
}

struct shared_obj *shared_obj_ref(struct shared_obj *o)
{
    atomic_fetch_add_explicit(&o->refs, 1, memory_order_relaxed);
    return o;
}

void shared_obj_unref(struct shared_obj *o)
{
    if (!o || atomic_fetch_sub_explicit(&o->refs, 1, memory_order_acq_rel) != 1)
        return;
    o->free_fn(o->p);
    free(o);
}

struct snapshot *snapshot_new(void)
{
    struct snapshot *s = calloc(1, sizeof(*s));
    if (s)
        atomic_init(&s->refs, 1);
    return s;
}

struct snapshot *snapshot_ref(struct snapshot *s)
{
    atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
    return s;
}

void snapshot_unref(struct snapshot *s)
{
    if (!s || atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1)
        return;
    if (s->site_open)
        site_close(&s->site);
    shared_obj_unref(s->clients);
    shared_obj_unref(s->rrl);
    shared_obj_unref(s->cache);
    uptls_ctx_free(s->uptls);
    nameset_free(s->fwd_zones);
    config_unref(s->cfg);
    free(s);
}

/* Why bind() failed, and what to do about it, in one line for the log. */
static void bind_error(const struct dg_addr *addr, int e, bool udp, char *err, size_t errlen)
{
    const char *proto = udp ? " (UDP)" : "";
    const char *opt = udp ? "--dns-listen 127.0.0.1:5353" : "--listen 127.0.0.1:8443";
    if (e == EADDRINUSE)
        snprintf(err, errlen,
                 "cannot listen on %s%s: address already in use: another server (%s) holds this "
                 "port; stop it or choose another address, e.g. %s",
                 addr->text, proto,
                 udp ? "systemd-resolved, dnsmasq, unbound, another dohgate"
                     : "a web server, another dohgate",
                 opt);
    else if (e == EACCES)
        snprintf(err, errlen,
                 "cannot listen on %s%s: permission denied: ports below 1024 need root or the "
                 "capability: run as root, or `setcap cap_net_bind_service=+ep` on the dohgate "
                 "binary, or use %s",
                 addr->text, proto, opt);
    else if (e == EADDRNOTAVAIL)
        snprintf(err, errlen, "cannot listen on %s%s: no such local address", addr->text, proto);
    else
        snprintf(err, errlen, "cannot listen on %s%s: %s", addr->text, proto, strerror(e));
}

/* The part both kinds of listening socket share: SO_REUSEPORT (a socket per worker, the kernel
 * spreads the traffic), dual-stack for "[::]" (the default needs one listener only), options
 * set before bind() by @p before (may be NULL), bind() with a message that says what to do.
 * @return the fd, or -1 with @p err. */
static int bound_socket(const struct dg_addr *addr, bool udp, void (*before)(int fd), char *err,
                        size_t errlen)
{
    const char *proto = udp ? " (UDP)" : "";
    int fd = socket(addr->ss.ss_family,
                    (udp ? SOCK_DGRAM : SOCK_STREAM) | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "cannot listen on %s%s: socket: %s", addr->text, proto,
                 strerror(errno));
        return -1;
    }
    int one = 1, zero = 0;
    if (!udp)
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0) {
        snprintf(err, errlen, "cannot listen on %s%s: SO_REUSEPORT: %s", addr->text, proto,
                 strerror(errno));
        close(fd);
        return -1;
    }
    if (addr->ss.ss_family == AF_INET6) {
        int v6only = config_addr_is_any(addr) ? 0 : 1;
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, v6only ? &one : &zero, sizeof(int));
    }
    if (before)
        before(fd);
    if (bind(fd, (const struct sockaddr *)&addr->ss, addr->len) != 0) {
        int e = errno;
        bind_error(addr, e, udp, err, errlen);
        close(fd);
        return -1;
    }
    return fd;
}

/* Wake us only when the client has sent its first bytes (ClientHello, a DNS query). */
static void tcp_options(int fd)
{
    int defer = 5;
    setsockopt(fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &defer, sizeof(defer));
}

/* Room for bursts: a default 208 KiB buffer holds about 2,000 queries, a few ms of a flood.
 * Capped by net.core.rmem_max; best effort. (Packet info, where a query was sent, is
 * dnsudp_new()'s to turn on: wildcard sockets only, the systemd ones included.) */
static void udp_options(int fd)
{
    int rcvbuf = 4 << 20;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
}

int worker_listen_socket(const struct dg_addr *addr, char *err, size_t errlen)
{
    int fd = bound_socket(addr, false, tcp_options, err, errlen);
    if (fd >= 0 && listen(fd, 4096) != 0) {
        snprintf(err, errlen, "cannot listen on %s: %s", addr->text, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

int worker_udp_socket(const struct dg_addr *addr, char *err, size_t errlen)
{
    return bound_socket(addr, true, udp_options, err, errlen);
}

static void listeners_enable(struct worker *w, bool on)
{
    for (size_t i = 0; i < w->nls; i++) {
        if (!w->ls[i].lev)
            continue;
        if (on)
            event_add(w->ls[i].lev, NULL);
        else
            event_del(w->ls[i].lev);
    }
}

static void on_resume(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    w->accept_paused = false;
    if (!w->stopping)
        listeners_enable(w, true);
}

/* Open connections over all views. */
static size_t worker_conns(const struct worker *w)
{
    size_t n = w->cur ? w->cur->conns.count : 0;
    for (const struct dg_lnode *l = w->retired.head; l; l = l->next)
        n += dg_list_entry(l, const struct worker_view, node)->conns.count;
    return n;
}

/* The connection-time checks on a client, cheapest first: the ACL with acl-scope all, then
 * the per-client open connections and connection rate (*tracked: counted in the table). A
 * trusted-proxy peer speaks for many clients (nginx opens a backend connection per request in
 * flight beyond its keep-alive pool): counting them as one would refuse everybody behind it
 * once a few hundred requests are in flight, so its connections are not counted; its requests
 * are judged by the client it names (http.c). */
static enum dg_refusal client_checks(struct worker_view *v, const struct client_id *id,
                                     bool *tracked)
{
    if (v->acl_all && !acl_allows_client(v->hctx.acl, id))
        return DG_REFUSE_ACL;
    if (!v->conns.clients || !client_id_known(id))
        return DG_NREFUSE;
    if (acl_active(v->hctx.trusted_proxy) && acl_allows_client(v->hctx.trusted_proxy, id))
        return DG_NREFUSE;
    enum client_verdict cv = clients_conn_open(v->conns.clients, &id->key, dg_now_ms());
    *tracked = cv == CLIENT_OK;
    return cv == CLIENT_TOO_MANY_CONNS ? DG_REFUSE_PER_CLIENT
           : cv == CLIENT_CONN_RATE    ? DG_REFUSE_RATE
                                       : DG_NREFUSE;
}

/* conn_set.admit: the checks at accept, and on the client a PROXY header named, on the
 * connection's own view (a retired one keeps its configuration's ACL and client table). */
static int view_admit(struct conn_set *set, const struct client_id *id, bool *tracked)
{
    struct worker_view *v =
        (struct worker_view *)(void *)((char *)set - offsetof(struct worker_view, conns));
    return (int)client_checks(v, id, tracked);
}

static void on_accept(evutil_socket_t lfd, short what, void *arg)
{
    const struct listener *lsn = arg;
    struct worker *w = lsn->w;
    enum dg_listener kind = lsn->s.kind;
    for (int i = 0; i < ACCEPTS_PER_EV; i++) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        int fd = accept4(lfd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR || errno == ECONNABORTED)
                return;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                /* Out of descriptors (or memory): a level-triggered listener would fire again
                 * at once, so stop watching it, as nginx and HAProxy do, and come back when
                 * one of our connections closes (a descriptor is free again: see
                 * on_conn_closed) or after ACCEPT_PAUSE_MS, whichever is first; the waiting
                 * clients stay in the listen backlog meanwhile. The descriptor reserve
                 * (budget.h) keeps website work from taking the last descriptors, so this
                 * is for connections themselves outgrowing the limit. */
                uint64_t now = dg_now_ms();
                if (!w->emfile_log_ms || now - w->emfile_log_ms >= 10000) {
                    w->emfile_log_ms = now;
                    log_warn("accept: %s; pausing new connections until a descriptor is free",
                             strerror(errno));
                }
                listeners_enable(w, false);
                w->accept_paused = true;
                struct timeval tv = {0, ACCEPT_PAUSE_MS * 1000};
                event_add(w->resume_ev, &tv);
                return;
            }
            log_warn("accept: %s", strerror(errno));
            return;
        }
        /* Refusals close at once, before any TLS work: the cheapest answer to a flood. The
         * worker's own limit here; the client checks in conn_accept() (view_admit). */
        struct worker_view *v = w->cur; /* read per connection: a swap cannot run meanwhile */
        if (worker_conns(w) >= v->snap->cfg->max_connections) {
            dg_observe(w->op, DG_EV_CONN_REFUSED, DG_REFUSE_MAX_CONNS, 1);
            close(fd);
            continue;
        }
        /* Who it is, once for the connection's life: the checks and every request's
         * admission, limits and log read this (client.h), unless a PROXY header replaces it. */
        struct client_id id;
        client_id_from_sockaddr(&id, (struct sockaddr *)&ss);
        conn_accept(&v->conns, fd, kind, &id);
        if (worker_conns(w) > w->conn_peak)
            w->conn_peak = worker_conns(w);
    }
}

/*
 * After a wave of connections has gone, hand the heap's free pages back to the kernel. glibc
 * keeps them otherwise: 1,000 connections opened at once and closed left the process at 46 MB
 * instead of 14 MB (malloc_trim measured by hand). Checked every TRIM_CHECK_S; trims only when
 * at least TRIM_CONNS connections closed since the peak, so a steady load never pays for it
 * (malloc_trim walks every arena's free chunks under that arena's lock).
 */
#define TRIM_CHECK_S 10
#define TRIM_CONNS   512

#define H2_POOL_KEEP 128

static void on_trim(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    size_t nconns = worker_conns(w);
    if (w->conn_peak >= nconns + TRIM_CONNS) {
        uint64_t t0 = dg_now_us();
        malloc_trim(0);
        log_debug("worker %u: %zu connections closed since the peak: heap trimmed in %llu us",
                  w->id, w->conn_peak - nconns, (unsigned long long)(dg_now_us() - t0));
    }
    w->conn_peak = nconns;
}

static void maybe_finish(struct worker *w)
{
    if (w->stopping && worker_conns(w) == 0)
        event_base_loopbreak(w->base);
}

/* Runs inside conn_free(): frees nothing itself (the caller may still walk its set), it only
 * wakes on_reap for a retired view that has just emptied. */
static void on_conn_closed(struct conn_set *set, void *arg)
{
    struct worker_view *v = arg;
    struct worker *w = v->w;
    if (v != w->cur && set->count == 0)
        event_active(w->reap_ev, EV_TIMEOUT, 0);
    if (w->accept_paused) {
        /* its descriptor is free again: accept at once rather than at the timer */
        event_del(w->resume_ev);
        event_active(w->resume_ev, EV_TIMEOUT, 0);
    }
    maybe_finish(w);
}

/* Apply @p fn to every view's connections, the current view's first. It may close
 * connections; views are freed only by on_reap, on_swap and worker_free, never meanwhile. */
static void for_each_set(struct worker *w, void (*fn)(struct conn_set *set))
{
    if (w->cur)
        fn(&w->cur->conns);
    for (struct dg_lnode *l = w->retired.head; l; l = l->next)
        fn(&dg_list_entry(l, struct worker_view, node)->conns);
}

/* A view's last pending UDP query ended (inside a resolver callback: free nothing here). */
static void on_udp_empty(struct dnsudp_set *set, void *arg)
{
    struct worker_view *v = arg;
    if (v != v->w->cur && v->conns.count == 0)
        event_active(v->w->reap_ev, EV_TIMEOUT, 0);
}

/* Stop serving UDP: nothing left to wait for (a UDP client retries on its own, and the
 * socket closes now), so every pending query is cancelled and the readers go. */
static void udp_stop(struct worker *w)
{
    if (w->cur)
        dnsudp_set_cancel_all(&w->cur->udp);
    for (struct dg_lnode *l = w->retired.head; l; l = l->next)
        dnsudp_set_cancel_all(&dg_list_entry(l, struct worker_view, node)->udp);
    for (size_t i = 0; i < w->nls; i++) {
        dnsudp_free(w->ls[i].reader);
        w->ls[i].reader = NULL;
    }
    /* retired views kept only for UDP queries can go now */
    if (w->retired.head && w->reap_ev)
        event_active(w->reap_ev, EV_TIMEOUT, 0);
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    if (worker_conns(w))
        log_info("worker %u: stop deadline reached, closing %zu connections", w->id,
                 worker_conns(w));
    for_each_set(w, conn_set_close_all);
    event_base_loopbreak(w->base);
}

static void on_stop(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    if (w->stopping)
        return;
    w->stopping = true;
    udp_stop(w);
    for (size_t i = 0; i < w->nls; i++) {
        if (w->ls[i].lev) {
            /* Connections the kernel completed that are still in this socket's backlog would
             * be reset when it closes (each worker's SO_REUSEPORT socket has its own backlog):
             * a load balancer that already sent on such a connection cannot retry it
             * elsewhere. Take them (up to the listen backlog: on_accept() takes up to
             * ACCEPTS_PER_EV per call and returns at once on an empty queue) and let them end
             * like the others below: their sessions start in the stop's mode (conn.c: one
             * request, the two-step GOAWAY). A socket from systemd is left alone: its queue
             * survives our close and the next instance serves it. Connections that sent
             * nothing yet (TCP_DEFER_ACCEPT) are not in accept's reach and are reset. */
            for (int k = 0; k < 4096 / ACCEPTS_PER_EV && !w->ls[i].s.inherited; k++)
                on_accept(w->ls[i].s.fd, EV_READ, &w->ls[i]);
            event_free(w->ls[i].lev);
            w->ls[i].lev = NULL;
        }
        close(w->ls[i].s.fd);
        w->ls[i].s.fd = -1;
    }
    for_each_set(w, conn_set_shutdown);
    struct timeval tv = {.tv_sec = w->grace_ms / 1000, .tv_usec = (w->grace_ms % 1000) * 1000};
    event_add(w->deadline_ev, &tv);
    maybe_finish(w);
}

/* Runs in the worker's thread: its counters are only ever touched there. */
static void on_stats(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    /* this configuration's (the metrics page has the totals since start) */
    const struct resolver_stats *rs = resolver_get_stats(w->cur->resolver);
    const struct upstream_stats *us = upstream_get_stats(w->cur->upstream);
    log_info("worker %u: %zu connections; queries %llu: cache hits %llu, stale %llu, misses %llu, "
             "coalesced %llu, prefetches %llu, servfail %llu, rejected %llu; upstream queries "
             "%llu, answers %llu, try timeouts %llu, errors %llu, tcp fallbacks %llu, dropped "
             "%llu",
             w->id, worker_conns(w), (unsigned long long)rs->queries, (unsigned long long)rs->hits,
             (unsigned long long)rs->stale_hits, (unsigned long long)rs->misses,
             (unsigned long long)rs->coalesced, (unsigned long long)rs->prefetches,
             (unsigned long long)rs->servfails, (unsigned long long)rs->rejected,
             (unsigned long long)us->queries, (unsigned long long)us->answers,
             (unsigned long long)us->timeouts, (unsigned long long)us->errors,
             (unsigned long long)us->tcp_fallbacks, (unsigned long long)us->dropped_mismatch);
    struct dnsudp_stats ds = {0};
    bool have_udp = false;
    for (size_t i = 0; i < w->nls; i++) {
        if (!w->ls[i].reader)
            continue;
        const struct dnsudp_stats *d = dnsudp_get_stats(w->ls[i].reader);
        ds.received += d->received;
        ds.sent += d->sent;
        ds.send_dropped += d->send_dropped;
        have_udp = true;
    }
    if (have_udp)
        log_info("worker %u: plain DNS over UDP: %llu datagrams received, %llu answers sent, "
                 "%llu answers dropped (send buffer full or send error)",
                 w->id, (unsigned long long)ds.received, (unsigned long long)ds.sent,
                 (unsigned long long)ds.send_dropped);
}

static void view_free(struct worker_view *v)
{
    if (!v)
        return;
    /* Connections first: their streams cancel their resolver waiters; then the resolver
     * cancels its upstream queries; then the upstream set goes. */
    conn_set_close_all(&v->conns);
    dnsudp_set_cancel_all(&v->udp);
    proxy_free(v->proxy);
    resolver_free(v->resolver);
    l2_free(v->l2); /* after the resolver, which cancelled its lookups on it */
    upstream_free(v->upstream);
    for (size_t i = 0; i < v->n_zone_up; i++)
        upstream_free(v->zone_up[i]);
    free(v->zone_up);
    policy_view_release(&v->policy);
    snapshot_unref(v->snap);
    free(v);
}

/* This worker's view of @p snap. NULL on OOM. */
static struct worker_view *view_new(struct worker *w, struct snapshot *snap)
{
    const struct config *cfg = snap->cfg;
    struct worker_view *v = calloc(1, sizeof(*v));
    if (!v)
        return NULL;
    v->w = w;
    v->snap = snapshot_ref(snap);
    /* A new upstream set per configuration: queries in flight finish on the old set, which
     * goes with the old view; server health starts afresh. */
    if (!(v->upstream = upstream_new(w->base, cfg)))
        goto fail;
    upstream_set_observer(v->upstream, w->op);
    upstream_set_tls(v->upstream, snap->uptls);
    /* Split horizon: a set per forward zone, with the same timers, health and TLS context. */
    if (cfg->n_forward_zone) {
        if (!(v->zone_up = calloc(cfg->n_forward_zone, sizeof(*v->zone_up))))
            goto fail;
        v->n_zone_up = cfg->n_forward_zone;
        for (size_t i = 0; i < cfg->n_forward_zone; i++) {
            const struct dg_fwd_zone *z = &cfg->fwd[i];
            if (!(v->zone_up[i] = upstream_new_servers(w->base, cfg, z->up, z->n_up,
                                                       upstream_obs_base(cfg, i))))
                goto fail;
            upstream_set_observer(v->zone_up[i], w->op);
            upstream_set_tls(v->zone_up[i], snap->uptls);
        }
    }
    if (!(v->resolver = resolver_new(v->upstream, snap->cache->p, cfg)))
        goto fail;
    resolver_set_observer(v->resolver, w->op);
    if (snap->fwd_zones)
        resolver_set_zones(v->resolver, snap->fwd_zones, v->zone_up, v->n_zone_up);
    /* One Redis connection per view, like the upstream sets: a reload reconnects. It connects
     * at the first lookup, so idle views cost nothing. */
    if (cfg->cache_redis) {
        if (!(v->l2 = l2_new(w->base, cfg->cache_redis, cfg->cache_redis_timeout_ms)))
            goto fail;
        l2_set_observer(v->l2, w->op);
        resolver_set_l2(v->resolver, v->l2);
    }
    if (cfg->site_backend && !(v->proxy = proxy_new(w->base, cfg)))
        goto fail;
    struct clients *clients = snap->clients ? snap->clients->p : NULL;
    v->acl_all = acl_active(&snap->acl) && cfg->acl_scope == ACL_SCOPE_ALL;
    v->policy = (struct policy_view){.slot = snap->policy_slot, .cfg = cfg};
    /* now, not at the first query: the slot holds this configuration's policy (published
     * before the snapshot reached the workers), and a later one may be for other zones */
    (void)policy_view_get(&v->policy);
    v->hctx = (struct handler_ctx){.cfg = cfg,
                                   .h2_pool = w->h2_pool,
                                   .h2_pages = w->h2_pages,
                                   .resolver = v->resolver,
                                   .site = &snap->site,
                                   .clients = clients,
                                   .acl = &snap->acl,
                                   .dns_acl = &snap->dns_acl,
                                   .trusted_proxy = &snap->trusted_proxy,
                                   .ddr = cfg->ddr ? &snap->ddr : NULL,
                                   .policy = &v->policy,
                                   .proxy = v->proxy,
                                   .obs = w->op,
                                   .metrics = snap->metrics};
    v->conns = (struct conn_set){
        .base = w->base,
        .tls = snap->tls,
        .clients = clients,
        .obs = w->op,
        .cfg = cfg,
        .hctx = &v->hctx,
        .pp_from = &snap->pp_acl,
        .admit = view_admit,
        .on_closed = on_conn_closed,
        .on_closed_arg = v,
    };
    v->udp = (struct dnsudp_set){.hctx = &v->hctx,
                                 .rrl = snap->rrl ? snap->rrl->p : NULL,
                                 .on_empty = on_udp_empty,
                                 .on_empty_arg = v};
    return v;
fail:
    view_free(v);
    return NULL;
}

/* Retired views whose last connection closed. */
static void on_reap(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    struct dg_lnode *l = w->retired.head;
    while (l) {
        struct worker_view *v = dg_list_entry(l, struct worker_view, node);
        l = l->next;
        if (v->conns.count == 0 && v->udp.count == 0) {
            dg_list_unlink(&w->retired, &v->node);
            view_free(v);
        }
    }
    maybe_finish(w);
}

/* A new snapshot from worker_set_snapshot(): between events, so no connection callback is on
 * the stack and new connections from here on get the new view. */
/* Do two configurations number the same upstream servers the same way (the default list,
 * then each forward zone's)? */
static bool same_servers(const struct config *a, const struct config *b)
{
    if (a->n_upstream != b->n_upstream || a->n_forward_zone != b->n_forward_zone)
        return false;
    for (size_t i = 0; i < a->n_upstream; i++) {
        if (strcmp(a->upstream[i].spec, b->upstream[i].spec) != 0)
            return false;
    }
    for (size_t z = 0; z < a->n_forward_zone; z++) {
        const struct dg_fwd_zone *x = &a->fwd[z], *y = &b->fwd[z];
        if (x->n_up != y->n_up || strcmp(x->text, y->text) != 0)
            return false;
        for (size_t i = 0; i < x->n_up; i++) {
            if (strcmp(x->up[i].spec, y->up[i].spec) != 0)
                return false;
        }
    }
    return true;
}

static void on_swap(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    pthread_mutex_lock(&w->mu);
    struct snapshot *snap = w->pending;
    w->pending = NULL;
    pthread_mutex_unlock(&w->mu);
    if (!snap)
        return;
    struct worker_view *nv = w->stopping ? NULL : view_new(w, snap);
    snapshot_unref(snap); /* the view holds its own */
    if (!nv) {
        if (!w->stopping)
            log_err("worker %u: out of memory for the new configuration; this worker keeps "
                    "the previous one",
                    w->id);
        return;
    }
    struct worker_view *old = w->cur;
    w->cur = nv;
    if (!same_servers(old->snap->cfg, nv->snap->cfg)) {
        /* The upstream series are numbered by position (upstream_obs_base()): once the
         * servers moved, the old sets' last tries would count under another server's labels. */
        upstream_set_observer(old->upstream, NULL);
        for (size_t i = 0; i < old->n_zone_up; i++)
            upstream_set_observer(old->zone_up[i], NULL);
    }
    if (w->metrics && w->id == 0) {
        /* Scrapes run on worker 0's thread (it alone has the metrics listeners). */
        w->metrics->cfg = nv->snap->cfg;
        w->metrics->cache = nv->snap->cache->p;
    }
    for (size_t i = 0; i < w->nls; i++)
        if (w->ls[i].reader)
            dnsudp_use(w->ls[i].reader, &nv->udp);
    if (old->conns.count == 0 && old->udp.count == 0)
        view_free(old);
    else
        dg_list_push_front(&w->retired, &old->node);
}

void worker_set_snapshot(struct worker *w, struct snapshot *snap)
{
    snapshot_ref(snap);
    pthread_mutex_lock(&w->mu);
    struct snapshot *skipped = w->pending; /* two reloads before one swap: the newer wins */
    w->pending = snap;
    pthread_mutex_unlock(&w->mu);
    snapshot_unref(skipped);
    event_active(w->swap_ev, EV_TIMEOUT, 0);
}

size_t worker_views(const struct worker *w)
{
    size_t n = w->cur != NULL;
    for (const struct dg_lnode *l = w->retired.head; l; l = l->next)
        n++;
    return n;
}

struct worker *worker_new(unsigned id, struct snapshot *snap, const struct worker_socket *socks,
                          size_t nfds)
{
    const struct config *cfg = snap->cfg;
    struct metrics *metrics = snap->metrics;
    struct worker *w = calloc(1, sizeof(*w));
    if (!w)
        goto fail_fds;
    w->id = id;
    if (pthread_mutex_init(&w->mu, NULL) != 0) {
        free(w);
        goto fail_fds;
    }
    w->ls = calloc(nfds + 1, sizeof(*w->ls));
    if (!w->ls) {
        free(w);
        goto fail_fds;
    }
    /* Owned by w from here: worker_free() closes them. */
    for (size_t i = 0; i < nfds; i++)
        w->ls[i] = (struct listener){.w = w, .s = socks[i]};
    w->nls = nfds;
    struct event_config *ec = event_config_new();
    if (!ec)
        goto fail;
    /* Only this thread touches the base; stop requests use event_active(), which is the one
     * cross-thread call and is made safe by evthread_use_pthreads() in main. */
    w->base = event_base_new_with_config(ec);
    event_config_free(ec);
    if (!w->base || event_base_priority_init(w->base, CONN_PRIORITIES) != 0)
        goto fail;
    w->stop_ev = event_new(w->base, -1, 0, on_stop, w);
    w->deadline_ev = evtimer_new(w->base, on_deadline, w);
    w->resume_ev = evtimer_new(w->base, on_resume, w);
    w->stats_ev = event_new(w->base, -1, 0, on_stats, w);
    w->trim_ev = event_new(w->base, -1, EV_PERSIST, on_trim, w);
    w->swap_ev = event_new(w->base, -1, 0, on_swap, w);
    w->reap_ev = event_new(w->base, -1, 0, on_reap, w);
    struct timeval trim_tv = {TRIM_CHECK_S, 0};
    if (!w->stop_ev || !w->deadline_ev || !w->resume_ev || !w->stats_ev || !w->trim_ev ||
        !w->swap_ev || !w->reap_ev || event_add(w->trim_ev, &trim_tv) != 0)
        goto fail;
    for (size_t i = 0; i < w->nls; i++) {
        struct listener *l = &w->ls[i];
        if (l->s.udp)
            continue; /* no accept(): served by the UDP front end */
        if (!(l->lev = event_new(w->base, l->s.fd, EV_READ | EV_PERSIST, on_accept, l)))
            goto fail;
    }
    w->metrics = metrics;
    /* The modules report events; this worker's counters in the metrics count them. */
    if (metrics) {
        metrics_observer_init(&w->obs, &metrics->w[id]);
        w->op = &w->obs;
    }
    /* HTTP/2 frame buffers, two per session (nghttp2's outbound frame buffer and its inbound
     * one), at most one session per connection; when the pool is out of blocks or cannot be
     * reserved, h2.c uses malloc. Address space: 2 x 20 KiB x max-connections (400 MB for
     * 10,000), memory only for the pages written. Sized at start: a reload that raises
     * max-connections gets malloc for the difference. The one-page blocks take nghttp2's stream
     * map (4 KiB per session, all zeroes once the session is idle: h2_session_trim()), 4 KiB
     * of address space per connection. */
    w->h2_pool = pagepool_new(H2_FRAMEBUF_BYTES, 2 * ((size_t)cfg->max_connections + 32));
    /* only with 4 KiB pages: the map is 4096 bytes, and a larger page would hold other data */
    if (sysconf(_SC_PAGESIZE) == 4096)
        w->h2_pages = pagepool_new(4096, (size_t)cfg->max_connections + 32);
    /* Closing connections leave up to H2_POOL_KEEP blocks of each pool with their pages for
     * the next ones: no madvise (and its TLB shootdown across the threads' CPUs, 6.7% of the
     * CPU of a handshake + GET + close, perf) per connection that comes and goes; at most
     * 128 x (the pages a session wrote, usually 1) resident in each pool. */
    if (w->h2_pool)
        (void)pagepool_set_keep(w->h2_pool, H2_POOL_KEEP);
    if (w->h2_pages)
        (void)pagepool_set_keep(w->h2_pages, H2_POOL_KEEP);
    if (!(w->cur = view_new(w, snap)))
        goto fail;
    for (size_t i = 0; i < w->nls; i++) {
        struct listener *l = &w->ls[i];
        if (!l->s.udp)
            continue;
        /* Not paused with the TCP listeners when descriptors run out: UDP takes none. */
        if (!(l->reader = dnsudp_new(w->base, l->s.fd, CONN_FLUSH_PRIORITY, w->op)))
            goto fail;
        dnsudp_use(l->reader, &w->cur->udp);
        if (dnsudp_enable(l->reader, true) != 0)
            goto fail;
    }
    listeners_enable(w, true);
    return w;
fail:
    log_err("worker %u: out of memory at start-up", id);
    worker_free(w);
    return NULL;
fail_fds:
    log_err("worker %u: out of memory at start-up", id);
    for (size_t i = 0; i < nfds; i++)
        close(socks[i].fd);
    return NULL;
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    event_base_dispatch(w->base);
    return NULL;
}

int worker_start(struct worker *w)
{
    int rc = pthread_create(&w->thread, NULL, worker_main, w);
    if (rc != 0)
        return -rc;
    w->started = true;
    return 0;
}

void worker_stop(struct worker *w, unsigned grace_ms)
{
    w->grace_ms = grace_ms;
    event_active(w->stop_ev, EV_TIMEOUT, 0);
}

void worker_log_stats(struct worker *w)
{
    event_active(w->stats_ev, EV_TIMEOUT, 0);
}

void worker_join(struct worker *w)
{
    if (w->started)
        pthread_join(w->thread, NULL);
    w->started = false;
}

void worker_free(struct worker *w)
{
    if (!w)
        return;
    /* Each view leaves the worker before it is freed: closing its connections calls
     * on_conn_closed, which walks the views still there. */
    udp_stop(w); /* before the views: a pending query holds its view and its reader */
    struct worker_view *cur = w->cur;
    w->cur = NULL;
    view_free(cur);
    while (w->retired.head) {
        struct worker_view *v = dg_list_entry(w->retired.head, struct worker_view, node);
        dg_list_unlink(&w->retired, &v->node);
        view_free(v);
    }
    snapshot_unref(w->pending);
    pagepool_free(w->h2_pool); /* after the connections: their sessions hold blocks */
    pagepool_free(w->h2_pages);
    for (size_t i = 0; i < w->nls; i++) {
        if (w->ls[i].lev)
            event_free(w->ls[i].lev);
        if (w->ls[i].s.fd >= 0)
            close(w->ls[i].s.fd);
    }
    struct event *evs[] = {w->stop_ev, w->deadline_ev, w->resume_ev, w->stats_ev,
                           w->trim_ev, w->swap_ev,     w->reap_ev};
    for (size_t i = 0; i < sizeof(evs) / sizeof(evs[0]); i++)
        if (evs[i])
            event_free(evs[i]);
    if (w->base)
        event_base_free(w->base);
    pthread_mutex_destroy(&w->mu);
    free(w->ls);
    free(w);
}
