/* Configuration snapshots and the full reload: see reload.h. */
#include "dohgate/reload.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <stdio.h>

#include "dohgate/acl.h"
#include "dohgate/cache.h"
#include "dohgate/clients.h"
#include "dohgate/config.h"
#include "dohgate/uptls.h"
#include "dohgate/log.h"
#include "dohgate/nameset.h"
#include "dohgate/policy.h"
#include "dohgate/rrl.h"
#include "dohgate/site.h"
#include "dohgate/tls.h"
#include "dohgate/worker.h"

static void cache_free_cb(void *p)
{
    cache_free(p);
}

static void clients_free_cb(void *p)
{
    clients_free(p);
}

static void add_hint(struct ddr_endpoints *ep, const struct dg_addr *a)
{
    /* a wildcard (-EINVAL) or a full list (-ENOSPC) adds nothing: hints are optional */
    (void)ddr_endpoints_add_hint_raw(ep, a->ss.ss_family, config_addr_bytes(a));
}

/*
 * What DDR answers announce (RFC 9462): the server name as the target (the name clients check
 * the certificate against), the first DoH and DoT listeners' ports, and the specific addresses
 * of the listeners as hints (the plain-DNS ones first: those are what a client that asks
 * _dns.resolver.arpa already talks to, and what the certificate must cover). Wildcard listeners
 * give no hint. With socket activation the ports are those of the listen options still (the
 * configuration should say the same).
 */
static void ddr_fill(struct ddr_endpoints *ep, const struct config *cfg)
{
    ddr_endpoints_init(ep);
    if (cfg->server_name)
        (void)ddr_endpoints_set_target(ep, cfg->server_name);
    if (cfg->n_listen && cfg->n_doh_path) {
        char tmpl[DDR_DOHPATH_MAX + 1];
        snprintf(tmpl, sizeof(tmpl), "%s{?dns}", cfg->doh_path[0]);
        (void)ddr_endpoints_set_doh(ep, (uint16_t)config_addr_port(&cfg->listen[0]), tmpl);
    }
    if (cfg->n_dot_listen)
        ddr_endpoints_set_dot(ep, (uint16_t)config_addr_port(&cfg->dot_listen[0]));
    for (size_t i = 0; i < cfg->n_dns_listen; i++)
        add_hint(ep, &cfg->dns_listen[i]);
    for (size_t i = 0; i < cfg->n_listen; i++)
        add_hint(ep, &cfg->listen[i]);
    for (size_t i = 0; i < cfg->n_dot_listen; i++)
        add_hint(ep, &cfg->dot_listen[i]);
}

static void rrl_free_cb(void *p)
{
    rrl_free(p);
}

/* Whether @p a and @p b forward the same zones to the same servers. When they do not, the
 * cache holds answers from the old routes (a split-horizon name answered by the default
 * upstreams, or the other way round) that would be served until they expire: not shared. */
static bool same_forward_zones(const struct config *a, const struct config *b)
{
    if (a->n_forward_zone != b->n_forward_zone)
        return false;
    for (size_t i = 0; i < a->n_forward_zone; i++)
        if (strcmp(a->forward_zone[i], b->forward_zone[i]) != 0)
            return false;
    return true;
}

/* See reload.h. A shared cache gets its new TTL knobs at commit, not here: validation must
 * leave the running configuration untouched. */
const char *snapshot_fill(struct snapshot *s, struct config *cfg, const struct snapshot *prev,
                          unsigned nworkers, char *err, size_t errlen)
{
    s->cfg = config_ref(cfg);
    if (acl_build(&s->acl, cfg->allow_client, cfg->n_allow_client, cfg->deny_client,
                  cfg->n_deny_client) != 0) {
        snprintf(err, errlen, "allow-client and deny-client: at most %d entries together", ACL_MAX);
        return cfg->n_deny_client ? "deny-client" : "allow-client";
    }
    /* Plain DNS is not an open resolver unless dns-allow says so: by default loopback and the
     * networks no reply can be reflected from the Internet to (private, CGNAT, link-local). */
    bool dflt = cfg->n_dns_allow == 0;
    if (acl_build(&s->dns_acl, dflt ? acl_private_nets : cfg->dns_allow,
                  dflt ? ACL_N_PRIVATE_NETS : cfg->n_dns_allow, NULL, 0) != 0) {
        snprintf(err, errlen, "dns-allow: at most %d entries", ACL_MAX);
        return "dns-allow";
    }
    /* Proxies whose X-Forwarded-For / Forwarded name the client (http.c): an allow-only list,
     * empty when none is set (then no header is read). */
    if (acl_build(&s->trusted_proxy, cfg->trusted_proxy, cfg->n_trusted_proxy, NULL, 0) != 0) {
        snprintf(err, errlen, "trusted-proxy: at most %d entries", ACL_MAX);
        return "trusted-proxy";
    }
    /* The load balancers whose connections start with a PROXY header (conn.h). */
    if (acl_build(&s->pp_acl, cfg->proxy_protocol_from, cfg->n_proxy_protocol_from, NULL, 0) != 0) {
        snprintf(err, errlen, "proxy-protocol-from: at most %d entries", ACL_MAX);
        return "proxy-protocol-from";
    }
    ddr_fill(&s->ddr, cfg);
    bool tls_up = false;
    for (size_t i = 0; i < cfg->n_upstream; i++)
        tls_up = tls_up || cfg->upstream[i].proto != DG_UP_DNS;
    for (size_t z = 0; z < cfg->n_forward_zone; z++)
        for (size_t i = 0; i < cfg->fwd[z].n_up; i++)
            tls_up = tls_up || cfg->fwd[z].up[i].proto != DG_UP_DNS;
    /* one context for every worker: the CA store is read once per configuration */
    if (tls_up && !(s->uptls = uptls_ctx_new(cfg, err, errlen)))
        return cfg->upstream_ca ? "upstream-ca" : "upstream";
    /* The forward zones' names, once per configuration, read by every worker's resolver. */
    if (cfg->n_forward_zone) {
        if (!(s->fwd_zones = nameset_new(cfg->n_forward_zone))) {
            snprintf(err, errlen, "out of memory");
            return "forward-zone";
        }
        for (size_t z = 0; z < cfg->n_forward_zone; z++) {
            int rc =
                nameset_add(s->fwd_zones, cfg->fwd[z].name, cfg->fwd[z].name_len, (uint32_t)z + 1);
            if (rc != 0) {
                snprintf(err, errlen, "forward-zone %s: %s", cfg->fwd[z].text,
                         rc == -ENOMEM ? "out of memory" : "not a valid name");
                return "forward-zone";
            }
        }
    }
    if (site_open(&s->site, cfg, err, errlen) != 0)
        return strncmp(err, "site-root", 9) == 0 ? "site-root" : "acme-webroot";
    s->site_open = true;
    if (prev)
        s->site.https_port = prev->site.https_port; /* listen cannot change; systemd's port */

    struct cache_config *cc = &s->cache_cfg;
    cache_config_defaults(cc);
    cc->max_bytes = cfg->cache_size;
    cc->min_ttl = cfg->cache_min_ttl;
    cc->max_ttl = cfg->cache_max_ttl;
    cc->max_negative_ttl = cfg->cache_max_negative_ttl;
    cc->nosoa_negative_ttl = cfg->cache_nosoa_ttl;
    cc->servfail_ttl = cfg->cache_servfail_ttl;
    cc->serve_stale = cfg->serve_stale;
    cc->stale_max_s = cfg->stale_max_age;
    cc->stale_answer_ttl = cfg->stale_answer_ttl;
    cc->prefetch_percent = cfg->prefetch;
    if (prev && prev->cfg->cache_size == cfg->cache_size && same_forward_zones(prev->cfg, cfg)) {
        s->cache = shared_obj_ref(prev->cache);
    } else {
        /* Always made: with cache-size 0 it stores nothing but still keys the in-flight
         * table. */
        struct cache *c = cache_new(cc);
        if (!c || !(s->cache = shared_obj_new(c, cache_free_cb))) {
            cache_free(c);
            snprintf(err, errlen,
                     "cannot create a cache of %zu bytes (too small for its shards, or out of "
                     "memory); raise cache-size or set it to 0",
                     cfg->cache_size);
            return "cache-size";
        }
    }

    if (cfg->max_conns_per_client || cfg->conn_rate || cfg->query_rate ||
        cfg->max_sources_per_client || cfg->body_buffer_per_client) {
        /* every open connection can keep its client's entry: room for all of them, and more */
        size_t total = (size_t)nworkers * cfg->max_connections;
        struct clients_config *kc = &s->clients_cfg; /* zeroed by snapshot_new: memcmp-able */
        kc->max_conns = cfg->max_conns_per_client;
        kc->conn_rate = cfg->conn_rate;
        kc->conn_burst = cfg->conn_burst ? cfg->conn_burst : 2 * cfg->conn_rate;
        kc->query_rate = cfg->query_rate;
        kc->query_burst = cfg->query_burst ? cfg->query_burst : 2 * cfg->query_rate;
        kc->max_entries = total > 32768 ? 2 * total : 65536;
        if (prev && prev->clients && memcmp(&prev->clients_cfg, kc, sizeof(*kc)) == 0) {
            s->clients = shared_obj_ref(prev->clients);
        } else {
            /* New limits, a new table; open connections stay counted in the old one. */
            struct clients *t = clients_new(kc);
            if (!t || !(s->clients = shared_obj_new(t, clients_free_cb))) {
                clients_free(t);
                snprintf(err, errlen, "out of memory for the per-client table");
                return "max-connections-per-client";
            }
        }
    }

    if (cfg->dns_rate_limit > 0) {
        /* One table for all workers (rrl.h). Bounded: a flood of spoofed sources only
         * recycles entries. Kept across reloads while its parameters stay, so that a reload
         * does not hand every limited network a fresh bucket. */
        struct rrl_config *rc = &s->rrl_cfg; /* zeroed by snapshot_new: memcmp-able */
        rc->rate = cfg->dns_rate_limit;
        rc->slip = cfg->dns_rate_slip;
        rc->max_entries = 65536;
        if (prev && prev->rrl && memcmp(&prev->rrl_cfg, rc, sizeof(*rc)) == 0) {
            s->rrl = shared_obj_ref(prev->rrl);
        } else {
            struct rrl *t = rrl_new(rc);
            if (!t || !(s->rrl = shared_obj_new(t, rrl_free_cb))) {
                rrl_free(t);
                snprintf(err, errlen, "out of memory for the rate-limit table");
                return "dns-rate-limit";
            }
        }
    }
    return NULL;
}

int reload_prepare(const struct snapshot *cur, const char *conf_file, int argc, char **argv,
                   unsigned nworkers, struct reload_plan *plan, char *err, size_t errlen)
{
    char why[1024] = "";
    const char *opt = NULL;
    int rc = -EINVAL;
    memset(plan, 0, sizeof(*plan));
    struct config *cfg = config_new();
    if (!cfg) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    if ((conf_file && config_load_file(cfg, conf_file, err, errlen) != 0) ||
        config_load_args(cfg, argc, argv, err, errlen) != 0)
        goto out; /* the message has its FILE:LINE already */
    if (config_finish(cfg, why, sizeof(why)) != 0)
        goto refuse; /* a cross-option rule: no one line to blame, the file is named */
    plan->nrestart =
        config_keep_restart_options(cfg, cur->cfg, plan->restart, sizeof(plan->restart));
    if (plan->nrestart < 0 || !(plan->snap = snapshot_new())) {
        snprintf(why, sizeof(why), "out of memory");
        rc = -ENOMEM;
        goto refuse;
    }
    plan->snap->tls = cur->tls;
    plan->snap->metrics = cur->metrics;
    if ((opt = snapshot_fill(plan->snap, cfg, cur, nworkers, why, sizeof(why))) != NULL)
        goto refuse;
    plan->cache_shared = plan->snap->cache == cur->cache;
    /* Local data and the lists, read again whole: their errors name the file and line at
     * fault (a list file, or the configuration's local-record). */
    plan->snap->policy_slot = cur->policy_slot;
    if (cur->policy_slot && !(plan->policy = policy_build(cfg, err, errlen))) {
        rc = -EINVAL;
        goto out;
    }
    char tls_err[900];
    plan->tls = tls_store_prepare(cur->tls, cfg, plan->fingerprint, tls_err, sizeof(tls_err));
    if (!plan->tls) {
        opt = strstr(tls_err, "ticket-key-file") ? "ticket-key-file" : "cert";
        snprintf(why, sizeof(why),
                 "certificate reload failed, still serving the previous certificates: %s", tls_err);
        goto refuse;
    }
    config_unref(cfg); /* the snapshot holds it */
    return 0;
refuse:;
    char where[700];
    if (opt)
        config_origin(cfg, opt, where, sizeof(where));
    else
        snprintf(where, sizeof(where), "%s", conf_file ? conf_file : "command line");
    if (!opt && (strncmp(why, where, strlen(where)) == 0 || strncmp(why, "command line", 12) == 0))
        snprintf(err, errlen, "%s", why); /* a cross-option rule that named its own line */
    else
        snprintf(err, errlen, "%s: %s", where, why);
out:
    reload_plan_free(plan);
    config_unref(cfg);
    return rc;
}

void reload_commit(struct snapshot *cur, struct reload_plan *plan)
{
    tls_store_commit(cur->tls, plan->tls);
    plan->tls = NULL;
    if (plan->policy) {
        /* the views pick it up at their next query, the old and the new ones alike */
        policy_slot_publish(cur->policy_slot, plan->policy);
        plan->policy = NULL;
    }
    if (plan->cache_shared)
        cache_set_policy(plan->snap->cache->p, &plan->snap->cache_cfg);
    dg_log_set_level((enum dg_log_level)plan->snap->cfg->log_level);
}

void reload_plan_free(struct reload_plan *plan)
{
    tls_staged_free(plan->tls);
    plan->tls = NULL;
    policy_unref(plan->policy);
    plan->policy = NULL;
    snapshot_unref(plan->snap);
    plan->snap = NULL;
}
