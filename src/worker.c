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
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "dohgate/acl.h"
#include "dohgate/clients.h"
#include "dohgate/config.h"
#include "dohgate/conn.h"
#include "dohgate/http.h"
#include "dohgate/h2.h"
#include "dohgate/log.h"
#include "dohgate/metrics.h"
#include "dohgate/pagepool.h"
#include "dohgate/proxy.h"
#include "dohgate/resolver.h"
#include "dohgate/upstream.h"

#define ACCEPTS_PER_EV 64

struct worker {
    unsigned id;
    const struct config *cfg;
    pthread_t thread;
    bool started;
    struct event_base *base;
    int *fds;
    struct event **lev;
    size_t nfds;
    size_t ntls;     /* fds[0..ntls) are TLS listeners, then plain HTTP ones, */
    size_t nmetrics; /* and the last nmetrics are metrics listeners */
    bool acl_all;    /* acl-scope all: refused clients' connections are closed at accept */
    struct event *stop_ev, *deadline_ev, *resume_ev, *stats_ev, *trim_ev;
    size_t conn_peak; /* most connections open since the last trim check */
    unsigned grace_ms;
    bool stopping;
    struct upstream *upstream;
    struct resolver *resolver;
    struct proxy *proxy;
    struct handler_ctx hctx; /* owns hctx.h2_pool */
    struct conn_set conns;
};

int worker_listen_socket(const struct dg_addr *addr, char *err, size_t errlen)
{
    int family = addr->ss.ss_family;
    int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "cannot listen on %s: socket: %s", addr->text, strerror(errno));
        return -1;
    }
    int one = 1, zero = 0;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0) {
        snprintf(err, errlen, "cannot listen on %s: SO_REUSEPORT: %s", addr->text, strerror(errno));
        close(fd);
        return -1;
    }
    if (family == AF_INET6) {
        /* "[::]" serves IPv4 too, so the default needs one listener only. */
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)&addr->ss;
        int v6only = IN6_IS_ADDR_UNSPECIFIED(&s6->sin6_addr) ? 0 : 1;
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, v6only ? &one : &zero, sizeof(int));
    }
    /* Wake us only when the client has sent its ClientHello. */
    int defer = 5;
    setsockopt(fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &defer, sizeof(defer));
    if (bind(fd, (const struct sockaddr *)&addr->ss, addr->len) != 0) {
        int e = errno;
        if (e == EADDRINUSE)
            snprintf(err, errlen,
                     "cannot listen on %s: address already in use: another server (a web server, "
                     "another dohgate) holds this port; stop it or choose another address with "
                     "--listen, e.g. --listen 127.0.0.1:8443",
                     addr->text);
        else if (e == EACCES)
            snprintf(err, errlen,
                     "cannot listen on %s: permission denied: ports below 1024 need root or the "
                     "capability: run as root, or `setcap cap_net_bind_service=+ep` on the "
                     "dohgate binary, or use --listen 127.0.0.1:8443",
                     addr->text);
        else if (e == EADDRNOTAVAIL)
            snprintf(err, errlen, "cannot listen on %s: no such local address", addr->text);
        else
            snprintf(err, errlen, "cannot listen on %s: %s", addr->text, strerror(e));
        close(fd);
        return -1;
    }
    if (listen(fd, 4096) != 0) {
        snprintf(err, errlen, "cannot listen on %s: %s", addr->text, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

static void listeners_enable(struct worker *w, bool on)
{
    for (size_t i = 0; i < w->nfds; i++) {
        if (!w->lev[i])
            continue;
        if (on)
            event_add(w->lev[i], NULL);
        else
            event_del(w->lev[i]);
    }
}

static void on_resume(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    if (!w->stopping)
        listeners_enable(w, true);
}

static void on_accept(evutil_socket_t lfd, short what, void *arg)
{
    struct worker *w = arg;
    enum met_conn_kind kind = MET_CONN_PLAIN;
    for (size_t k = 0; k < w->nfds; k++)
        if (w->fds[k] == lfd)
            kind = k < w->ntls                  ? MET_CONN_TLS
                   : k >= w->nfds - w->nmetrics ? MET_CONN_METRICS
                                                : MET_CONN_PLAIN;
    struct worker_metrics *wm = w->conns.wm;
    for (int i = 0; i < ACCEPTS_PER_EV; i++) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        int fd = accept4(lfd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR || errno == ECONNABORTED)
                return;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                /* Out of descriptors: pause accepting for a moment instead of spinning. */
                log_warn("accept: %s; pausing new connections for 1 s", strerror(errno));
                listeners_enable(w, false);
                struct timeval tv = {1, 0};
                event_add(w->resume_ev, &tv);
                return;
            }
            log_warn("accept: %s", strerror(errno));
            return;
        }
        /* Refusals close at once, before any TLS work: the cheapest answer to a flood. */
        enum met_refusal why = MET_NREFUSE;
        struct client_key key;
        bool tracked = false;
        if (w->conns.count >= w->cfg->max_connections) {
            why = MET_REFUSE_MAX_CONNS;
        } else if (kind != MET_CONN_METRICS) {
            if (w->acl_all && !acl_allows_sockaddr(w->hctx.acl, (struct sockaddr *)&ss)) {
                why = MET_REFUSE_ACL;
            } else if (w->conns.clients &&
                       client_key_from_sockaddr((struct sockaddr *)&ss, &key) == 0) {
                enum client_verdict v = clients_conn_open(w->conns.clients, &key, dg_now_ms());
                why = v == CLIENT_TOO_MANY_CONNS ? MET_REFUSE_PER_CLIENT
                      : v == CLIENT_CONN_RATE    ? MET_REFUSE_RATE
                                                 : MET_NREFUSE;
                tracked = v == CLIENT_OK;
            }
        }
        if (why != MET_NREFUSE) {
            if (wm)
                ctr_add(&wm->conn_refused[why], 1);
            close(fd);
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        conn_accept(&w->conns, fd, kind, tracked ? &key : NULL);
        if (w->conns.count > w->conn_peak)
            w->conn_peak = w->conns.count;
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

static void on_trim(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    if (w->conn_peak >= w->conns.count + TRIM_CONNS) {
        uint64_t t0 = metrics_now_us();
        malloc_trim(0);
        log_debug("worker %u: %zu connections closed since the peak: heap trimmed in %llu us",
                  w->id, w->conn_peak - w->conns.count,
                  (unsigned long long)(metrics_now_us() - t0));
    }
    w->conn_peak = w->conns.count;
}

static void maybe_finish(struct worker *w)
{
    if (w->stopping && w->conns.count == 0)
        event_base_loopbreak(w->base);
}

static void on_conn_closed(struct conn_set *set, void *arg)
{
    maybe_finish(arg);
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    if (w->conns.count)
        log_info("worker %u: stop deadline reached, closing %zu connections", w->id,
                 w->conns.count);
    conn_set_close_all(&w->conns);
    event_base_loopbreak(w->base);
}

static void on_stop(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    if (w->stopping)
        return;
    w->stopping = true;
    for (size_t i = 0; i < w->nfds; i++) {
        if (w->lev[i]) {
            event_free(w->lev[i]);
            w->lev[i] = NULL;
        }
        close(w->fds[i]);
        w->fds[i] = -1;
    }
    conn_set_shutdown(&w->conns);
    struct timeval tv = {.tv_sec = w->grace_ms / 1000, .tv_usec = (w->grace_ms % 1000) * 1000};
    event_add(w->deadline_ev, &tv);
    maybe_finish(w);
}

/* Runs in the worker's thread: its counters are only ever touched there. */
static void on_stats(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    const struct resolver_stats *rs = resolver_get_stats(w->resolver);
    const struct upstream_stats *us = upstream_get_stats(w->upstream);
    log_info("worker %u: %zu connections; queries %llu: cache hits %llu, stale %llu, misses %llu, "
             "coalesced %llu, prefetches %llu, servfail %llu, rejected %llu; upstream queries "
             "%llu, answers %llu, try timeouts %llu, errors %llu, tcp fallbacks %llu, dropped "
             "%llu",
             w->id, w->conns.count, (unsigned long long)rs->queries, (unsigned long long)rs->hits,
             (unsigned long long)rs->stale_hits, (unsigned long long)rs->misses,
             (unsigned long long)rs->coalesced, (unsigned long long)rs->prefetches,
             (unsigned long long)rs->servfails, (unsigned long long)rs->rejected,
             (unsigned long long)us->queries, (unsigned long long)us->answers,
             (unsigned long long)us->timeouts, (unsigned long long)us->errors,
             (unsigned long long)us->tcp_fallbacks, (unsigned long long)us->dropped_mismatch);
}

struct worker *worker_new(unsigned id, const struct config *cfg, const struct worker_shared *sh,
                          const int *fds, size_t nfds, size_t ntls, size_t nmetrics)
{
    struct metrics *metrics = sh->metrics;
    struct worker *w = calloc(1, sizeof(*w));
    if (!w)
        goto fail_fds;
    w->id = id;
    w->cfg = cfg;
    w->fds = calloc(nfds, sizeof(int));
    w->lev = calloc(nfds, sizeof(struct event *));
    if (!w->fds || !w->lev)
        goto fail;
    w->nfds = nfds;
    w->ntls = ntls;
    w->nmetrics = nmetrics;
    w->acl_all = acl_active(sh->acl) && cfg->acl_scope == ACL_SCOPE_ALL;
    for (size_t i = 0; i < nfds; i++)
        w->fds[i] = fds[i];
    nfds = 0; /* owned by w from here */
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
    struct timeval trim_tv = {TRIM_CHECK_S, 0};
    if (!w->stop_ev || !w->deadline_ev || !w->resume_ev || !w->stats_ev || !w->trim_ev ||
        event_add(w->trim_ev, &trim_tv) != 0)
        goto fail;
    for (size_t i = 0; i < w->nfds; i++) {
        w->lev[i] = event_new(w->base, w->fds[i], EV_READ | EV_PERSIST, on_accept, w);
        if (!w->lev[i])
            goto fail;
    }
    struct worker_metrics *wm = metrics ? &metrics->w[id] : NULL;
    w->upstream = upstream_new(w->base, cfg);
    if (!w->upstream)
        goto fail;
    upstream_set_metrics(w->upstream, wm);
    w->resolver = resolver_new(w->upstream, sh->cache, cfg);
    if (!w->resolver)
        goto fail;
    if (metrics)
        metrics->rs[id] = resolver_get_stats(w->resolver);
    if (cfg->site_backend) {
        w->proxy = proxy_new(w->base, cfg);
        if (!w->proxy)
            goto fail;
    }
    /* HTTP/2 frame buffers, two per session (nghttp2's outbound frame buffer and its inbound
     * one), at most one session per connection; when the pool is out of blocks or cannot be
     * reserved, h2.c uses malloc. Address space: 2 x 20 KiB x max-connections (400 MB for
     * 10,000), memory only for the pages written. */
    w->hctx = (struct handler_ctx){
        .cfg = cfg,
        .h2_pool = pagepool_new(H2_FRAMEBUF_BYTES, 2 * ((size_t)cfg->max_connections + 32)),
        .resolver = w->resolver,
        .site = sh->site,
        .clients = sh->clients,
        .acl = sh->acl,
        .proxy = w->proxy,
        .wm = wm,
        .metrics = metrics};
    w->conns = (struct conn_set){
        .base = w->base,
        .tls = sh->tls,
        .clients = sh->clients,
        .wm = wm,
        .cfg = cfg,
        .hctx = &w->hctx,
        .on_closed = on_conn_closed,
        .on_closed_arg = w,
    };
    listeners_enable(w, true);
    return w;
fail:
    log_err("worker %u: out of memory at start-up", id);
    worker_free(w);
    return NULL;
fail_fds:
    for (size_t i = 0; i < nfds; i++)
        close(fds[i]);
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
    /* Connections first: their streams cancel their resolver waiters; then the resolver
     * cancels its upstream queries; then the upstream module goes. */
    conn_set_close_all(&w->conns);
    proxy_free(w->proxy);
    resolver_free(w->resolver);
    upstream_free(w->upstream);
    pagepool_free(w->hctx.h2_pool); /* after the connections: their sessions hold blocks */
    for (size_t i = 0; i < w->nfds; i++) {
        if (w->lev && w->lev[i])
            event_free(w->lev[i]);
        if (w->fds && w->fds[i] >= 0)
            close(w->fds[i]);
    }
    if (w->stop_ev)
        event_free(w->stop_ev);
    if (w->deadline_ev)
        event_free(w->deadline_ev);
    if (w->resume_ev)
        event_free(w->resume_ev);
    if (w->stats_ev)
        event_free(w->stats_ev);
    if (w->trim_ev)
        event_free(w->trim_ev);
    if (w->base)
        event_base_free(w->base);
    free(w->fds);
    free(w->lev);
    free(w);
}
