/* Prometheus text exposition of dohgate's counters; see metrics.h for the threading rules. */
#include "dohgate/metrics.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dohgate/acme.h"
#include "dohgate/cache.h"
#include "dohgate/http.h"
#include "dohgate/tls.h"
#include "dohgate/upstream.h"
#include "dohgate/util.h"

static const int status_codes[MET_NSTATUS - 1] = {200, 204, 206, 301, 304, 400, 403, 404,
                                                  405, 408, 411, 413, 414, 415, 416, 417,
                                                  421, 429, 431, 500, 502, 503, 504};
static const char *const version_names[MET_NVER] = {"1.0", "1.1", "2"};
static const char *const method_names[MET_NMETHOD] = {"GET", "POST", "HEAD", "other"};
static const char *const conn_names[DG_NLISTENER] = {"https",   "http", "metrics",
                                                     "dns-tcp", "dot",  "cleartext"};
static const char *const transport_names[DG_NTRANSPORT] = {"doh", "json", "dns-udp", "dns-tcp",
                                                           "dot"};
static const char *const drop_names[DG_NDROP] = {"source", "rate-limit", "malformed", "send"};
static const char *const rcode_names[16] = {
    "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP",  "REFUSED", "YXDOMAIN", "YXRRSET",
    "NXRRSET", "NOTAUTH", "NOTZONE",  "RCODE11",  "RCODE12", "RCODE13", "RCODE14",  "RCODE15"};
_Static_assert(MET_MAX_UPSTREAMS >= DG_CONFIG_MAX_LIST, "every default upstream has its series");

/* upper bounds in microseconds; the last bucket is +Inf */
static const uint64_t lat_bounds_us[MET_LAT_BUCKETS] = {
    500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000, 1000000, 2500000};

struct metrics *metrics_new(unsigned nworkers, const struct config *cfg, struct cache *cache,
                            struct tls_store *tls)
{
    struct metrics *m = calloc(1, sizeof(*m));
    if (!m)
        return NULL;
    m->w = calloc(nworkers ? nworkers : 1, sizeof(*m->w));
    if (!m->w) {
        free(m);
        return NULL;
    }
    m->nworkers = nworkers;
    m->cfg = cfg;
    m->cache = cache;
    m->tls = tls;
    m->start_time = (uint64_t)time(NULL);
    return m;
}

void metrics_free(struct metrics *m)
{
    if (!m)
        return;
    free(m->w);
    free(m);
}

/* ---- counting: the observer of one worker ---------------------------------------------- */

static void count_http(struct worker_metrics *wm, unsigned status, uint64_t key)
{
    unsigned v = DG_HTTP_KEY_VERSION(key);
    int ver = v >= 20 ? MET_V2 : v == 10 ? MET_V10 : MET_V11;
    int method;
    switch ((enum http_method_kind)DG_HTTP_KEY_METHOD(key)) {
    case HTTP_M_GET:
        method = MET_GET;
        break;
    case HTTP_M_POST:
        method = MET_POST;
        break;
    case HTTP_M_HEAD:
        method = MET_HEAD;
        break;
    default:
        method = MET_OTHER;
        break;
    }
    int s = MET_NSTATUS - 1;
    for (int i = 0; i < MET_NSTATUS - 1; i++)
        if (status_codes[i] == (int)status)
            s = i;
    ctr_add(&wm->http[ver][method][s], 1);
}

static void count_upstream(struct worker_metrics *wm, enum dg_event ev, unsigned idx,
                           uint64_t value)
{
    if (idx >= MET_MAX_UPSTREAMS)
        return; /* a server past the bound is not counted (metrics.h) */
    struct upstream_metrics *u = &wm->up[idx];
    switch (ev) {
    case DG_EV_UP_QUERY:
        ctr_add(&u->queries, 1);
        break;
    case DG_EV_UP_ANSWER: {
        ctr_add(&u->answers, 1);
        size_t b = 0;
        while (b < MET_LAT_BUCKETS && value > lat_bounds_us[b])
            b++;
        ctr_add(&u->lat[b], 1);
        ctr_add(&u->lat_sum_us, value);
        break;
    }
    case DG_EV_UP_TIMEOUT:
        ctr_add(&u->timeouts, 1);
        break;
    case DG_EV_UP_ERROR:
        ctr_add(&u->errors, 1);
        break;
    case DG_EV_UP_MARKED_DOWN:
        ctr_add(&u->marked_down, 1);
        break;
    case DG_EV_UP_CONNECT:
        ctr_add(&u->connections, 1);
        break;
    case DG_EV_UP_HANDSHAKE:
        ctr_add(&u->handshakes, 1);
        if (value)
            ctr_add(&u->resumed, 1);
        break;
    case DG_EV_UP_CONN_FAILED:
        ctr_add(&u->conn_failures, 1);
        if (value)
            ctr_add(&u->verify_failures, 1);
        break;
    case DG_EV_UP_REUSED:
        ctr_add(&u->reused, 1);
        break;
    case DG_EV_UP_HEALTH:
        /* gauges: this worker's view, replaced */
        atomic_store_explicit(&u->srtt_us, DG_UP_HEALTH_SRTT(value), memory_order_relaxed);
        atomic_store_explicit(&u->down, DG_UP_HEALTH_DOWN(value), memory_order_relaxed);
        break;
    default:
        break;
    }
}

static void on_event(void *arg, enum dg_event ev, unsigned idx, uint64_t value)
{
    struct worker_metrics *wm = arg;
    if (!wm)
        return;
    switch (ev) {
    case DG_EV_CONN_ACCEPTED:
        if (idx < DG_NLISTENER)
            ctr_add(&wm->conn_accepted[idx], 1);
        break;
    case DG_EV_CONN_CLOSED:
        if (idx < DG_NLISTENER)
            ctr_add(&wm->conn_closed[idx], 1);
        break;
    case DG_EV_CONN_REFUSED:
        if (idx < DG_NREFUSE)
            ctr_add(&wm->conn_refused[idx], 1);
        break;
    case DG_EV_TLS_HANDSHAKE:
        ctr_add(&wm->tls_handshakes[(idx & DG_TLS_13) != 0][(idx & DG_TLS_RESUMED) != 0], 1);
        break;
    case DG_EV_TLS_FAILED:
        ctr_add(&wm->tls_failed, 1);
        break;
    case DG_EV_BUDGET_REFUSED:
        if (idx < BUDGET_NKIND * BUDGET_NLEVEL)
            ctr_add(&wm->budget_refused[idx], 1);
        break;
    case DG_EV_STALLED:
        if (idx < DG_NSTALL)
            ctr_add(&wm->stalled[idx], 1);
        break;
    case DG_EV_PROXY_PROTOCOL:
        if (idx < DG_NPP)
            ctr_add(&wm->proxy_protocol[idx], 1);
        break;
    case DG_EV_BYTES_IN:
        ctr_add(&wm->bytes_in, value);
        break;
    case DG_EV_BYTES_OUT:
        ctr_add(&wm->bytes_out, value);
        break;
    case DG_EV_HTTP_RESPONSE:
        count_http(wm, idx, value);
        break;
    case DG_EV_DNS_ANSWER:
        if (DG_DNS_KEY_TRANSPORT(idx) < DG_NTRANSPORT)
            ctr_add(&wm->rcode[DG_DNS_KEY_TRANSPORT(idx)][DG_DNS_KEY_RCODE(idx)], 1);
        break;
    case DG_EV_DNS_TRUNCATED:
        ctr_add(&wm->dns_truncated, 1);
        break;
    case DG_EV_DNS_DROPPED:
        if (idx < DG_NDROP)
            ctr_add(&wm->dns_dropped[idx], value);
        break;
    case DG_EV_LOCAL_ANSWER:
        if (idx < 2)
            ctr_add(&wm->local_answers[idx], 1);
        break;
    case DG_EV_BLOCKED:
        if (idx < METRICS_MAX_LISTS)
            ctr_add(&wm->blocked[idx], 1);
        break;
    case DG_EV_RES_HIT:
        ctr_add(&wm->res_hits, 1);
        break;
    case DG_EV_RES_STALE_HIT:
        ctr_add(&wm->res_stale_hits, 1);
        break;
    case DG_EV_RES_MISS:
        ctr_add(&wm->res_misses, 1);
        break;
    case DG_EV_RES_COALESCED:
        ctr_add(&wm->res_coalesced, 1);
        break;
    case DG_EV_RES_PREFETCH:
        ctr_add(&wm->res_prefetches, 1);
        break;
    case DG_EV_RES_SERVFAIL:
        ctr_add(&wm->res_servfails, 1);
        break;
    case DG_EV_RES_REJECTED:
        ctr_add(&wm->res_rejected, 1);
        break;
    case DG_EV_REDIS_LOOKUP:
        if (idx < sizeof(wm->redis_lookups) / sizeof(wm->redis_lookups[0]))
            ctr_add(&wm->redis_lookups[idx], 1);
        break;
    case DG_EV_REDIS_STORE:
        ctr_add(&wm->redis_stores, 1);
        break;
    case DG_EV_REDIS_DOWN:
        if (value)
            ctr_add(&wm->redis_backoffs, 1);
        atomic_store_explicit(&wm->redis_down, value ? 1 : 0, memory_order_relaxed);
        break;
    case DG_EV_UP_QUERY:
    case DG_EV_UP_ANSWER:
    case DG_EV_UP_TIMEOUT:
    case DG_EV_UP_ERROR:
    case DG_EV_UP_MARKED_DOWN:
    case DG_EV_UP_HEALTH:
    case DG_EV_UP_CONNECT:
    case DG_EV_UP_HANDSHAKE:
    case DG_EV_UP_CONN_FAILED:
    case DG_EV_UP_REUSED:
        count_upstream(wm, ev, idx, value);
        break;
    }
}

void metrics_observer_init(struct dg_observer *obs, struct worker_metrics *wm)
{
    *obs = (struct dg_observer){.event = on_event, .arg = wm};
}

/* ---- rendering ----------------------------------------------------------------------------- */

struct out {
    struct dg_buf *b;
    int err;
};

__attribute__((format(printf, 2, 3))) static void put(struct out *o, const char *fmt, ...)
{
    if (o->err)
        return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(line) || dg_buf_append(o->b, line, (size_t)n) != 0)
        o->err = -ENOMEM; /* every line is far below 1 KiB: only OOM gets here */
}

static void head(struct out *o, const char *name, const char *type, const char *help)
{
    put(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A family of one unlabelled sample. */
static void scalar(struct out *o, const char *name, const char *type, const char *help, uint64_t v)
{
    head(o, name, type, help);
    put(o, "%s %llu\n", name, (unsigned long long)v);
}

/* A label value with \, " and newline escaped, cut to fit @p cap. */
static const char *esc(const char *s, char *buf, size_t cap)
{
    size_t j = 0;
    for (; *s && j + 3 < cap; s++) {
        if (*s == '\\' || *s == '"') {
            buf[j++] = '\\';
            buf[j++] = *s;
        } else if (*s == '\n') {
            buf[j++] = '\\';
            buf[j++] = 'n';
        } else {
            buf[j++] = *s;
        }
    }
    buf[j] = '\0';
    return buf;
}

/* A counter summed over the workers: @p first is the counter in worker 0's struct, the same
 * field of the others lies a struct's size further each. */
static uint64_t sum(const struct metrics *m, const dg_counter *first)
{
    size_t off = (size_t)((const char *)first - (const char *)&m->w[0]);
    uint64_t s = 0;
    for (unsigned i = 0; i < m->nworkers; i++)
        s += ctr_get((const dg_counter *)((const char *)&m->w[i] + off));
    return s;
}
#define SUM(field) sum(m, &m->w[0].field)

/* Upstream series, numbered as upstream_obs_base() numbers the servers of @p cfg. */
static size_t up_series(const struct config *cfg)
{
    size_t n = upstream_obs_base(cfg, cfg->n_forward_zone);
    return n < MET_MAX_UPSTREAMS ? n : MET_MAX_UPSTREAMS;
}

/* The labels of upstream series @p i: `upstream="TEXT"` for a default server (as before
 * forward zones existed: scrapers keep their queries), `upstream="TEXT",zone="NAME"` for a
 * forward zone's. */
static const char *up_labels(const struct config *cfg, size_t i, char *buf, size_t cap)
{
    char a[1100], z[600]; /* escaped label values */
    size_t base = upstream_obs_base(cfg, 0);
    if (i < base) {
        snprintf(buf, cap, "upstream=\"%s\"", esc(cfg->upstream[i].text, a, sizeof(a)));
        return buf;
    }
    for (size_t k = 0; k < cfg->n_forward_zone; k++) {
        size_t next = upstream_obs_base(cfg, k + 1);
        if (i < next) {
            snprintf(buf, cap, "upstream=\"%s\",zone=\"%s\"",
                     esc(cfg->fwd[k].up[i - base].text, a, sizeof(a)),
                     esc(cfg->fwd[k].text, z, sizeof(z)));
            return buf;
        }
        base = next;
    }
    snprintf(buf, cap, "upstream=\"?\"");
    return buf;
}

static void cert_line(const struct tls_cert_info *ci, void *arg)
{
    struct out *o = arg;
    char f[300], s[300], se[100];
    put(o,
        "dohgate_certificate_expiry_timestamp_seconds{file=\"%s\",subject=\"%s\",serial=\"%s\"} "
        "%lld\n",
        esc(ci->file, f, sizeof(f)), esc(ci->subject, s, sizeof(s)),
        esc(ci->serial, se, sizeof(se)), (long long)ci->not_after);
}

static void ocsp_line(const struct tls_cert_info *ci, void *arg)
{
    struct out *o = arg;
    char f[300];
    if (ci->ocsp_next_update)
        put(o, "dohgate_certificate_ocsp_next_update_timestamp_seconds{file=\"%s\"} %lld\n",
            esc(ci->file, f, sizeof(f)), (long long)ci->ocsp_next_update);
}

int metrics_render(const struct metrics *m, struct dg_buf *out)
{
    struct out o = {.b = out};
    const struct config *cfg = m->cfg;

    head(&o, "dohgate_build_info", "gauge", "Version of the running dohgate.");
    put(&o, "dohgate_build_info{version=\"%s\"} 1\n", DOHGATE_VERSION);
    scalar(&o, "dohgate_start_time_seconds", "gauge", "Start time, seconds since the epoch.",
           m->start_time);
    scalar(&o, "dohgate_workers", "gauge", "Worker threads.", m->nworkers);

    /* Client questions by outcome, as the resolvers report them: the cache's own lookup
     * counters also see internal lookups. */
    const uint64_t rq[7] = {SUM(res_hits),      SUM(res_stale_hits), SUM(res_misses),
                            SUM(res_coalesced), SUM(res_prefetches), SUM(res_servfails),
                            SUM(res_rejected)};
    head(&o, "dohgate_http_requests_total", "counter",
         "HTTP responses sent, by protocol version, method and status.");
    for (int v = 0; v < MET_NVER; v++)
        for (int me = 0; me < MET_NMETHOD; me++)
            for (int s = 0; s < MET_NSTATUS; s++) {
                uint64_t n = SUM(http[v][me][s]);
                if (!n)
                    continue; /* sparse: only what happened */
                char st[8];
                if (s < MET_NSTATUS - 1)
                    snprintf(st, sizeof(st), "%d", status_codes[s]);
                else
                    snprintf(st, sizeof(st), "other");
                put(&o,
                    "dohgate_http_requests_total{version=\"%s\",method=\"%s\",status=\"%s\"} "
                    "%llu\n",
                    version_names[v], method_names[me], st, (unsigned long long)n);
            }

    scalar(&o, "dohgate_coalesced_total", "counter",
           "Questions that waited for an identical question already sent upstream.", rq[3]);
    scalar(&o, "dohgate_prefetches_total", "counter",
           "Background refreshes of entries near the end of their TTL.", rq[4]);
    scalar(&o, "dohgate_rejected_total", "counter",
           "Questions refused with SERVFAIL because too many were in flight.", rq[6]);
    scalar(&o, "dohgate_upstream_failures_total", "counter",
           "Questions no upstream answered in time and no stale entry could serve (SERVFAIL).",
           rq[5]);
    if (cfg && cfg->cache_redis) {
        /* the order of enum l2_result (l2cache.h) */
        static const char *const l2_names[] = {"hit",   "miss",    "timeout",
                                               "error", "skipped", "invalid"};
        head(&o, "dohgate_redis_lookups_total", "counter",
             "Lookups in the shared cache (cache-redis) on a local miss, by result (invalid: a "
             "value that failed the checks; skipped: not asked, the server resting).");
        for (size_t i = 0; i < sizeof(l2_names) / sizeof(l2_names[0]); i++)
            put(&o, "dohgate_redis_lookups_total{result=\"%s\"} %llu\n", l2_names[i],
                (unsigned long long)SUM(redis_lookups[i]));
        scalar(&o, "dohgate_redis_stores_total", "counter",
               "Upstream answers sent to the shared cache.", SUM(redis_stores));
        scalar(&o, "dohgate_redis_backoffs_total", "counter",
               "Times a worker's Redis connection failed or timed out and was given a rest "
               "(backoff 1 s doubling to 30 s).",
               SUM(redis_backoffs));
        scalar(&o, "dohgate_redis_down", "gauge",
               "Workers whose Redis connection is resting after a failure.", SUM(redis_down));
    }
    head(&o, "dohgate_dns_answers_total", "counter",
         "DNS answers sent, by transport (doh, json, dns-udp, dns-tcp, dot) and DNS rcode.");
    for (int t = 0; t < DG_NTRANSPORT; t++) {
        for (int r = 0; r < 16; r++) {
            uint64_t n = SUM(rcode[t][r]);
            if (n || r <= 5)
                put(&o, "dohgate_dns_answers_total{transport=\"%s\",rcode=\"%s\"} %llu\n",
                    transport_names[t], rcode_names[r], (unsigned long long)n);
        }
    }
    scalar(&o, "dohgate_dns_truncated_total", "counter",
           "Plain-DNS UDP answers sent truncated (TC=1): too large for the client, or slipped "
           "by the rate limit.",
           SUM(dns_truncated));
    head(&o, "dohgate_dns_dropped_total", "counter",
         "Plain-DNS queries left unanswered, by reason (source: not in dns-allow, over UDP; "
         "rate-limit: over dns-rate-limit and not slipped; malformed; send: the UDP socket "
         "buffer was full).");
    for (int k = 0; k < DG_NDROP; k++)
        put(&o, "dohgate_dns_dropped_total{reason=\"%s\"} %llu\n", drop_names[k],
            (unsigned long long)SUM(dns_dropped[k]));
    head(&o, "dohgate_local_answers_total", "counter",
         "Queries answered from local data (hosts-file, local-record: kind=\"data\") or by a "
         "local zone's NXDOMAIN/NODATA (kind=\"zone\"), never forwarded.");
    put(&o, "dohgate_local_answers_total{kind=\"data\"} %llu\n",
        (unsigned long long)SUM(local_answers[0]));
    put(&o, "dohgate_local_answers_total{kind=\"zone\"} %llu\n",
        (unsigned long long)SUM(local_answers[1]));
    uint64_t blocked_all = 0;
    head(&o, "dohgate_blocked_total", "counter",
         "Queries answered with block-answer, by the blocklist that held the name.");
    for (size_t k = 0; k < cfg->n_blocklist && k < METRICS_MAX_LISTS; k++) {
        char ln[64], a[160];
        const char *file;
        config_list_name(cfg->blocklist[k], ln, sizeof(ln), &file);
        uint64_t n = SUM(blocked[k]);
        blocked_all += n;
        put(&o, "dohgate_blocked_total{list=\"%s\"} %llu\n", esc(ln, a, sizeof(a)),
            (unsigned long long)n);
    }
    scalar(&o, "dohgate_blocked_answers_total", "counter",
           "Queries answered with block-answer, all blocklists together.", blocked_all);

    if (m->cache && cfg->cache_size) {
        struct cache_stats cs;
        cache_get_stats(m->cache, &cs);
        const struct {
            const char *name, *type, *help;
            uint64_t v;
        } c[] = {
            {"dohgate_cache_hits_total", "counter", "Questions answered from the cache.", rq[0]},
            {"dohgate_cache_stale_hits_total", "counter",
             "Expired answers served because every upstream failed (RFC 8767).", rq[1]},
            {"dohgate_cache_misses_total", "counter", "Questions the cache could not answer.",
             rq[2]},

            {"dohgate_cache_inserts_total", "counter", "Answers stored.", cs.inserts},
            {"dohgate_cache_evictions_total", "counter", "Entries evicted to stay in bounds.",
             cs.evictions},
            {"dohgate_cache_entries", "gauge", "Entries in the cache.", cs.entries},
            {"dohgate_cache_bytes", "gauge", "Bytes the cache uses (bounded by cache-size).",
             cs.bytes},
            {"dohgate_cache_max_bytes", "gauge", "The cache-size bound.", cfg->cache_size},
        };
        for (size_t i = 0; i < sizeof(c) / sizeof(c[0]); i++)
            scalar(&o, c[i].name, c[i].type, c[i].help, c[i].v);
    }

    static const struct {
        const char *name, *help;
        size_t off;
    } upc[] = {
        {"dohgate_upstream_queries_total", "Tries sent to the upstream (UDP, or TCP after TC=1).",
         offsetof(struct upstream_metrics, queries)},
        {"dohgate_upstream_answers_total", "Answers accepted from the upstream.",
         offsetof(struct upstream_metrics, answers)},
        {"dohgate_upstream_timeouts_total", "Tries the upstream did not answer in time.",
         offsetof(struct upstream_metrics, timeouts)},
        {"dohgate_upstream_errors_total",
         "Tries that failed at once (refused, unreachable, connection reset).",
         offsetof(struct upstream_metrics, errors)},
        {"dohgate_upstream_marked_down_total",
         "Times a worker stopped using the upstream after failures in a row.",
         offsetof(struct upstream_metrics, marked_down)},
        {"dohgate_upstream_connections_total",
         "Connections opened to the upstream (TCP, TLS, HTTPS).",
         offsetof(struct upstream_metrics, connections)},
        {"dohgate_upstream_handshakes_total", "TLS handshakes completed with the upstream.",
         offsetof(struct upstream_metrics, handshakes)},
        {"dohgate_upstream_resumed_total", "TLS handshakes that resumed a session.",
         offsetof(struct upstream_metrics, resumed)},
        {"dohgate_upstream_connection_failures_total",
         "Connections that failed before their TLS handshake was done.",
         offsetof(struct upstream_metrics, conn_failures)},
        {"dohgate_upstream_verify_failures_total",
         "Connections refused for the upstream's certificate (verification or pin).",
         offsetof(struct upstream_metrics, verify_failures)},
        {"dohgate_upstream_reused_total", "Tries sent on a connection already open.",
         offsetof(struct upstream_metrics, reused)},
    };
    const size_t nup = up_series(cfg);
    for (size_t k = 0; k < sizeof(upc) / sizeof(upc[0]); k++) {
        head(&o, upc[k].name, "counter", upc[k].help);
        for (size_t u = 0; u < nup; u++) {
            char l[1800]; /* an upstream's labels, escaped */
            uint64_t n = sum(m, (const dg_counter *)((const char *)&m->w[0].up[u] + upc[k].off));
            put(&o, "%s{%s} %llu\n", upc[k].name, up_labels(cfg, u, l, sizeof(l)),
                (unsigned long long)n);
        }
    }
    /* health gauges: each worker has its own view */
    head(&o, "dohgate_upstream_up", "gauge",
         "1 when no worker has the upstream marked down, else 0.");
    for (size_t u = 0; u < nup; u++) {
        char l[1800]; /* an upstream's labels, escaped */
        uint64_t down = 0;
        for (unsigned i = 0; i < m->nworkers; i++)
            down += ctr_get(&m->w[i].up[u].down);
        put(&o, "dohgate_upstream_up{%s} %d\n", up_labels(cfg, u, l, sizeof(l)), down == 0);
    }
    head(&o, "dohgate_upstream_srtt_seconds", "gauge",
         "Smoothed answer time of the upstream, mean over the workers that measured it.");
    for (size_t u = 0; u < nup; u++) {
        char l[1800]; /* an upstream's labels, escaped */
        uint64_t sum_us = 0, n = 0;
        for (unsigned i = 0; i < m->nworkers; i++) {
            uint64_t v = ctr_get(&m->w[i].up[u].srtt_us);
            sum_us += v;
            n += v != 0;
        }
        put(&o, "dohgate_upstream_srtt_seconds{%s} %.6f\n", up_labels(cfg, u, l, sizeof(l)),
            n ? (double)sum_us / (double)n / 1e6 : 0.0);
    }
    head(&o, "dohgate_upstream_latency_seconds", "histogram",
         "Time from sending a try to accepting its answer.");
    for (size_t u = 0; u < nup; u++) {
        char a[1800]; /* an upstream's labels, escaped */
        up_labels(cfg, u, a, sizeof(a));
        uint64_t cum = 0;
        for (int b = 0; b <= MET_LAT_BUCKETS; b++) {
            cum += SUM(up[u].lat[b]);
            if (b < MET_LAT_BUCKETS)
                put(&o, "dohgate_upstream_latency_seconds_bucket{%s,le=\"%g\"} %llu\n", a,
                    (double)lat_bounds_us[b] / 1e6, (unsigned long long)cum);
            else
                put(&o, "dohgate_upstream_latency_seconds_bucket{%s,le=\"+Inf\"} %llu\n", a,
                    (unsigned long long)cum);
        }
        put(&o, "dohgate_upstream_latency_seconds_sum{%s} %.6f\n", a,
            (double)SUM(up[u].lat_sum_us) / 1e6);
        put(&o, "dohgate_upstream_latency_seconds_count{%s} %llu\n", a, (unsigned long long)cum);
    }

    head(&o, "dohgate_connections_accepted_total", "counter", "Connections accepted, by listener.");
    for (int k = 0; k < DG_NLISTENER; k++)
        put(&o, "dohgate_connections_accepted_total{listener=\"%s\"} %llu\n", conn_names[k],
            (unsigned long long)SUM(conn_accepted[k]));
    head(&o, "dohgate_connections_refused_total", "counter",
         "Connections closed at accept (or once their PROXY header named the client), by the limit "
         "that refused them.");
    static const char *const refusal_names[DG_NREFUSE] = {"max-connections", "per-client", "rate",
                                                          "acl"};
    for (int k = 0; k < DG_NREFUSE; k++)
        put(&o, "dohgate_connections_refused_total{reason=\"%s\"} %llu\n", refusal_names[k],
            (unsigned long long)SUM(conn_refused[k]));
    head(&o, "dohgate_budget_refused_total", "counter",
         "Work refused because a client, its connection or the process held too much, by "
         "resource and the scope whose budget was spent.");
    static const char *const budget_kinds[BUDGET_NKIND] = {"sources", "body"};
    static const char *const budget_levels[BUDGET_NLEVEL] = {"", "connection", "client", "process",
                                                             "descriptors"};
    for (int k = 0; k < BUDGET_NKIND; k++)
        for (int l = BUDGET_AT_CONN; l < BUDGET_NLEVEL; l++)
            if (k == BUDGET_SOURCES || l != BUDGET_AT_DESCRIPTORS)
                put(&o, "dohgate_budget_refused_total{resource=\"%s\",scope=\"%s\"} %llu\n",
                    budget_kinds[k], budget_levels[l],
                    (unsigned long long)SUM(budget_refused[BUDGET_EVENT_IDX(k, l)]));
    head(&o, "dohgate_budget_in_use", "gauge",
         "What clients make the process hold now: open response sources, buffered body bytes.");
    for (int k = 0; k < BUDGET_NKIND; k++)
        put(&o, "dohgate_budget_in_use{resource=\"%s\"} %llu\n", budget_kinds[k],
            (unsigned long long)budget_process_used((enum budget_kind)k));
    head(&o, "dohgate_stalled_total", "counter",
         "Connections closed and streams reset by send-timeout for making no progress.");
    static const char *const stall_names[DG_NSTALL] = {"connection", "stream"};
    for (int k = 0; k < DG_NSTALL; k++)
        put(&o, "dohgate_stalled_total{what=\"%s\"} %llu\n", stall_names[k],
            (unsigned long long)SUM(stalled[k]));
    head(&o, "dohgate_proxy_protocol_total", "counter",
         "PROXY protocol headers: taken (v1, v2, local: no client in it) or the connection closed "
         "(missing, invalid, oversized, untrusted peer, timeout).");
    static const char *const pp_names[DG_NPP] = {"v1",      "v2",        "local",     "missing",
                                                 "invalid", "oversized", "untrusted", "timeout"};
    for (int k = 0; k < DG_NPP; k++)
        put(&o, "dohgate_proxy_protocol_total{result=\"%s\"} %llu\n", pp_names[k],
            (unsigned long long)SUM(proxy_protocol[k]));
    head(&o, "dohgate_connections_open", "gauge", "Connections open now, by listener.");
    for (int k = 0; k < DG_NLISTENER; k++) {
        /* each worker's closed count never passes its accepted count; read closed first */
        uint64_t closed = SUM(conn_closed[k]), acc = SUM(conn_accepted[k]);
        put(&o, "dohgate_connections_open{listener=\"%s\"} %llu\n", conn_names[k],
            (unsigned long long)(acc >= closed ? acc - closed : 0));
    }
    head(&o, "dohgate_tls_handshakes_total", "counter",
         "Completed TLS handshakes, by version and session resumption.");
    for (int v = 0; v < 2; v++)
        for (int r = 0; r < 2; r++)
            put(&o, "dohgate_tls_handshakes_total{version=\"%s\",resumed=\"%s\"} %llu\n",
                v ? "TLSv1.3" : "TLSv1.2", r ? "true" : "false",
                (unsigned long long)SUM(tls_handshakes[v][r]));
    scalar(&o, "dohgate_tls_handshake_failures_total", "counter",
           "TLS handshakes that failed or timed out.", SUM(tls_failed));
    scalar(&o, "dohgate_received_bytes_total", "counter",
           "HTTP bytes read from client connections.", SUM(bytes_in));
    scalar(&o, "dohgate_sent_bytes_total", "counter", "HTTP bytes written to client connections.",
           SUM(bytes_out));

    if (m->tls) {
        head(&o, "dohgate_certificate_expiry_timestamp_seconds", "gauge",
             "notAfter of each certificate in use, seconds since the epoch.");
        tls_store_each_cert(m->tls, cert_line, &o);
        head(&o, "dohgate_certificate_ocsp_next_update_timestamp_seconds", "gauge",
             "nextUpdate of the stapled OCSP response, per certificate that has one.");
        tls_store_each_cert(m->tls, ocsp_line, &o);
    }
    struct acme *acme = atomic_load_explicit(&((struct metrics *)m)->acme, memory_order_acquire);
    if (acme) {
        struct acme_status st;
        acme_status_get(acme, &st);
        scalar(&o, "dohgate_acme_last_success_timestamp_seconds", "gauge",
               "When the ACME client last installed a certificate (0: not yet).",
               (unsigned long long)st.last_success);
        scalar(&o, "dohgate_acme_next_attempt_timestamp_seconds", "gauge",
               "When the ACME client will next order or retry (0: nothing planned).",
               (unsigned long long)st.next_attempt);
        scalar(&o, "dohgate_acme_certificate_expiry_timestamp_seconds", "gauge",
               "notAfter of the certificate the ACME client holds (0: none yet).",
               (unsigned long long)st.not_after);
        scalar(&o, "dohgate_acme_orders_total", "counter", "ACME orders placed since the start.",
               (unsigned long long)st.orders);
        head(&o, "dohgate_acme_failures_total", "counter",
             "Failed ACME attempts, by reason (each is retried with backoff).");
        for (int f = 0; f < ACME_FAIL__COUNT; f++)
            put(&o, "dohgate_acme_failures_total{reason=\"%s\"} %llu\n",
                acme_failure_name((enum acme_failure)f), (unsigned long long)st.failures[f]);
    }
    return o.err;
}

void metrics_handle(struct http_exchange *ex)
{
    const struct metrics *m = ex->ctx->metrics;
    const char *path = ex->req.path;
    size_t plen = strcspn(path, "?");
    bool is_metrics = plen == 8 && strncmp(path, "/metrics", 8) == 0;
    bool is_health = plen == 8 && strncmp(path, "/healthz", 8) == 0;
    if (!is_metrics && !is_health) {
        http_respond_text(ex, 404, "not found: try /metrics or /healthz", NULL, 0);
        return;
    }
    if (strcmp(ex->req.method, "GET") != 0 && strcmp(ex->req.method, "HEAD") != 0) {
        const struct http_header allow = {"allow", "GET, HEAD"};
        http_respond_status(ex, 405, &allow, 1);
        return;
    }
    if (is_health || !m) {
        http_respond_text(ex, 200, "ok", NULL, 0);
        return;
    }
    struct dg_buf body = {0};
    if (metrics_render(m, &body) != 0) {
        dg_buf_free(&body);
        http_respond_text(ex, 503, "out of memory", NULL, 0);
        return;
    }
    const struct http_header h[] = {{"content-type", "text/plain; version=0.0.4; charset=utf-8"},
                                    {"cache-control", "no-store"}};
    http_respond(ex, 200, h, 2, &body); /* on failure: 503 or reset (http.h) */
    dg_buf_free(&body);
}
