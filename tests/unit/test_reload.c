/*
 * Unit tests of the reload: config and snapshot reference counts, validate-then-swap
 * (reload_prepare leaves the running snapshot untouched and names FILE:LINE when it refuses;
 * reload_commit applies), the cache kept or replaced by cache-size, restart-only options kept,
 * and a worker switching to a new snapshot and dropping the old one.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <event2/thread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dohgate/config.h"
#include "dohgate/log.h"
#include "dohgate/nameset.h"
#include "dohgate/reload.h"
#include "dohgate/rrl.h"
#include "dohgate/tls.h"
#include "dohgate/worker.h"

#define ERRLEN 1200

static char conf_path[256];

static void write_conf(const char *text)
{
    FILE *f = fopen(conf_path, "w");
    assert_non_null(f);
    assert_true(fputs(text, f) >= 0);
    assert_int_equal(fclose(f), 0);
}

static int setup(void **state)
{
    const char *dir = getenv("TMPDIR");
    snprintf(conf_path, sizeof(conf_path), "%s/dg_test_reload_XXXXXX", dir ? dir : "/tmp");
    int fd = mkstemp(conf_path);
    if (fd < 0)
        return -1;
    close(fd);
    return 0;
}

static int teardown(void **state)
{
    unlink(conf_path);
    return 0;
}

/* The running configuration: conf_path's content now, a self-signed TLS store, a snapshot. */
struct running {
    struct config *cfg;
    struct tls_store *tls;
    struct snapshot *snap;
};

static void start(struct running *r, const char *text)
{
    char err[ERRLEN];
    write_conf(text);
    r->cfg = config_new();
    assert_non_null(r->cfg);
    assert_int_equal(config_load_file(r->cfg, conf_path, err, ERRLEN), 0);
    assert_int_equal(config_finish(r->cfg, err, ERRLEN), 0);
    char fp[128];
    r->tls = tls_store_new(r->cfg, fp, err, ERRLEN);
    assert_non_null(r->tls);
    r->snap = snapshot_new();
    assert_non_null(r->snap);
    r->snap->tls = r->tls;
    assert_null(snapshot_fill(r->snap, r->cfg, NULL, 1, err, ERRLEN));
    config_unref(r->cfg); /* the snapshot holds it from here */
}

static void stop(struct running *r)
{
    snapshot_unref(r->snap);
    tls_store_free(r->tls);
}

static unsigned refs(_Atomic unsigned *p)
{
    return atomic_load(p);
}

static void test_config_refcount(void **state)
{
    struct config *cfg = config_new();
    assert_non_null(cfg);
    assert_int_equal(refs(&cfg->refs), 1);
    assert_ptr_equal(config_ref(cfg), cfg);
    assert_ptr_equal(config_ref(cfg), cfg);
    assert_int_equal(refs(&cfg->refs), 3);
    config_unref(cfg);
    config_unref(cfg);
    assert_int_equal(refs(&cfg->refs), 1);
    config_unref(cfg); /* the last one frees (ASan/valgrind: no leak, no double free) */
    config_unref(NULL);

    struct snapshot *s = snapshot_new();
    assert_non_null(s);
    s->cfg = config_new();
    assert_non_null(s->cfg);
    snapshot_ref(s);
    assert_int_equal(refs(&s->refs), 2);
    snapshot_unref(s);
    assert_int_equal(refs(&s->refs), 1);
    snapshot_unref(s);
    snapshot_unref(NULL);
}

static const char base_conf[] = "upstream 127.0.0.1:5300\n"
                                "header \"X-Test: 1\"\n"
                                "cache-min-ttl 5\n"
                                "workers 2\n";

/* A refused reload: one message with FILE:LINE, the running snapshot exactly as it was. */
static void test_prepare_refuses(void **state)
{
    struct running r;
    start(&r, base_conf);
    struct config *old = r.snap->cfg;
    unsigned old_refs = refs(&old->refs), snap_refs = refs(&r.snap->refs);
    unsigned cache_refs = refs(&r.snap->cache->refs);
    char err[ERRLEN], want[ERRLEN];
    struct reload_plan plan;

    write_conf("upstream 127.0.0.1:5300\nheader \"X-Test: 2\"\ncache-min-ttl soon\n");
    assert_int_equal(reload_prepare(r.snap, conf_path, 0, NULL, 1, &plan, err, ERRLEN), -EINVAL);
    snprintf(want, sizeof(want), "%s:3: 'cache-min-ttl': 'soon' is not a decimal number",
             conf_path);
    assert_string_equal(err, want);
    assert_null(plan.snap);

    /* parses, but the site root does not exist: refused after parsing, still FILE:LINE */
    write_conf("upstream 127.0.0.1:5300\nheader \"X-Test: 2\"\nsite-root /nonexistent/dg\n");
    assert_int_equal(reload_prepare(r.snap, conf_path, 0, NULL, 1, &plan, err, ERRLEN), -EINVAL);
    snprintf(want, sizeof(want), "%s:3: site-root: ", conf_path);
    assert_memory_equal(err, want, strlen(want));

    /* a cross-option rule: the file is named */
    write_conf("upstream 127.0.0.1:5300\ncert /x.pem\n");
    assert_int_equal(reload_prepare(r.snap, conf_path, 0, NULL, 1, &plan, err, ERRLEN), -EINVAL);
    snprintf(want, sizeof(want), "%s: cert is given without key: give both or neither", conf_path);
    assert_string_equal(err, want);

    /* a certificate that cannot be read: FILE:LINE of the cert option */
    write_conf("upstream 127.0.0.1:5300\n\ncert /nonexistent/c.pem\nkey /nonexistent/k.pem\n");
    assert_int_equal(reload_prepare(r.snap, conf_path, 0, NULL, 1, &plan, err, ERRLEN), -EINVAL);
    snprintf(want, sizeof(want), "%s:3: certificate reload failed", conf_path);
    assert_memory_equal(err, want, strlen(want));

    /* nothing of the running configuration moved */
    assert_ptr_equal(r.snap->cfg, old);
    assert_int_equal(refs(&old->refs), old_refs);
    assert_int_equal(refs(&r.snap->refs), snap_refs);
    assert_int_equal(refs(&r.snap->cache->refs), cache_refs);
    assert_string_equal(old->header_value[0], "1");
    assert_int_equal(old->cache_min_ttl, 5);
    stop(&r);
}

/* A valid reload: the new values in the plan, the cache shared (same cache-size), workers kept
 * and named; a new cache-size gives a new cache. */
static void test_prepare_and_commit(void **state)
{
    struct running r;
    start(&r, base_conf);
    char err[ERRLEN];
    struct reload_plan plan;

    write_conf("upstream 127.0.0.1:5301\nheader \"X-Test: 2\"\ncache-min-ttl 7\nworkers 3\n"
               "deny-client 127.0.0.0/8\nlog-level debug\nticket-key-rotation 0\n");
    assert_int_equal(reload_prepare(r.snap, conf_path, 0, NULL, 1, &plan, err, ERRLEN), 0);
    const struct config *nc = plan.snap->cfg;
    assert_ptr_not_equal(nc, r.snap->cfg);
    assert_string_equal(nc->upstream[0].text, "127.0.0.1:5301");
    assert_string_equal(nc->header_value[0], "2");
    assert_int_equal(nc->cache_min_ttl, 7);
    assert_int_equal(nc->workers, 2); /* restart-only: the running value stays */
    assert_int_equal(plan.nrestart, 1);
    assert_string_equal(plan.restart, "workers");
    assert_true(plan.cache_shared);
    assert_ptr_equal(plan.snap->cache, r.snap->cache);
    assert_int_equal(refs(&r.snap->cache->refs), 2);
    assert_true(acl_active(&plan.snap->acl));
    assert_false(acl_active(&r.snap->acl));
    assert_int_equal(refs(&plan.snap->cfg->refs), 1); /* the snapshot's alone */
    assert_int_equal(plan.snap->cache_cfg.min_ttl, 7);

    assert_true(tls_store_needs_tick(r.tls)); /* rotating random ticket keys */
    reload_commit(r.snap, &plan);
    assert_null(plan.tls);
    assert_false(tls_store_needs_tick(r.tls)); /* the store reads the new config: no rotation */
    assert_int_equal(dg_log_get_level(), DG_LOG_DEBUG);
    dg_log_set_level(DG_LOG_ERR);
    /* swap as main does: the new snapshot becomes the running one */
    struct snapshot *next = snapshot_ref(plan.snap);
    reload_plan_free(&plan);
    snapshot_unref(r.snap);
    r.snap = next;
    assert_int_equal(refs(&r.snap->cache->refs), 1); /* the old snapshot let go of it */

    /* cache-size changes: a new cache */
    write_conf("upstream 127.0.0.1:5301\ncache-size 2M\nworkers 2\n");
    assert_int_equal(reload_prepare(r.snap, conf_path, 0, NULL, 1, &plan, err, ERRLEN), 0);
    assert_false(plan.cache_shared);
    assert_ptr_not_equal(plan.snap->cache, r.snap->cache);
    assert_int_equal(plan.nrestart, 0);
    reload_plan_free(&plan); /* never committed: nothing leaks, the running one is whole */
    assert_int_equal(refs(&r.snap->cache->refs), 1);
    stop(&r);
}

/* The command-line flags of the start are applied again, over the file. */
static void test_prepare_reapplies_flags(void **state)
{
    struct running r;
    start(&r, base_conf);
    char err[ERRLEN];
    struct reload_plan plan;
    char *argv[] = {"dohgate", "-c", conf_path, "--header", "X-Flag: yes", NULL};
    write_conf("upstream 127.0.0.1:5300\nheader \"X-Test: 3\"\n");
    assert_int_equal(reload_prepare(r.snap, conf_path, 5, argv, 1, &plan, err, ERRLEN), 0);
    assert_int_equal(plan.snap->cfg->n_header, 1);
    assert_string_equal(plan.snap->cfg->header_value[0], "yes");
    reload_plan_free(&plan);
    stop(&r);
}

/* dns-rate-limit: a table only when on, kept across reloads while rate and slip stay (so a
 * reload hands no limited network a fresh bucket), a new one when they change. */
static void test_rrl_shared(void **state)
{
    struct running r;
    start(&r, "upstream 127.0.0.1:5300\n");
    assert_null(r.snap->rrl); /* off by default */
    char err[ERRLEN];
    struct reload_plan plan;
    write_conf("upstream 127.0.0.1:5300\ndns-rate-limit 5\n");
    assert_int_equal(reload_prepare(r.snap, conf_path, 0, NULL, 1, &plan, err, ERRLEN), 0);
    assert_non_null(plan.snap->rrl);
    reload_commit(r.snap, &plan); /* as main does: the TLS store reads the new config */
    dg_log_set_level(DG_LOG_ERR);
    struct snapshot *next = snapshot_ref(plan.snap);
    reload_plan_free(&plan);
    snapshot_unref(r.snap);
    r.snap = next;
    /* use up one network's bucket */
    struct client_id id;
    assert_int_equal(client_id_from_string(&id, "192.0.2.1"), 0);
    for (int i = 0; i < 5; i++)
        assert_int_equal(rrl_check(r.snap->rrl->p, &id, 1000), RRL_PASS);
    assert_int_equal(rrl_check(r.snap->rrl->p, &id, 1000),
                     RRL_DROP); /* the 1st limited: dropped (slip 2) */
    /* same parameters (another option changed): the same table, the bucket still empty */
    write_conf("upstream 127.0.0.1:5300\ndns-rate-limit 5\ncache-min-ttl 3\n");
    assert_int_equal(reload_prepare(r.snap, conf_path, 0, NULL, 1, &plan, err, ERRLEN), 0);
    assert_ptr_equal(plan.snap->rrl, r.snap->rrl);
    assert_int_equal(refs(&r.snap->rrl->refs), 2);
    assert_int_equal(rrl_check(plan.snap->rrl->p, &id, 1000), RRL_SLIP);
    reload_plan_free(&plan);
    assert_int_equal(refs(&r.snap->rrl->refs), 1);
    /* another slip: a new table */
    write_conf("upstream 127.0.0.1:5300\ndns-rate-limit 5\ndns-rate-slip 3\n");
    assert_int_equal(reload_prepare(r.snap, conf_path, 0, NULL, 1, &plan, err, ERRLEN), 0);
    assert_non_null(plan.snap->rrl);
    assert_ptr_not_equal(plan.snap->rrl, r.snap->rrl);
    assert_int_equal(rrl_check(plan.snap->rrl->p, &id, 1000), RRL_PASS);
    reload_plan_free(&plan);
    /* off again: none */
    write_conf("upstream 127.0.0.1:5300\n");
    assert_int_equal(reload_prepare(r.snap, conf_path, 0, NULL, 1, &plan, err, ERRLEN), 0);
    assert_null(plan.snap->rrl);
    reload_plan_free(&plan);
    stop(&r);
}

/* A worker (no listeners) switches to a new snapshot between events and drops the old one. */
static void test_worker_swap(void **state)
{
    struct running r;
    start(&r, base_conf);
    struct worker *w = worker_new(0, r.snap, NULL, 0);
    assert_non_null(w);
    assert_int_equal(refs(&r.snap->refs), 2); /* ours + the worker's view */
    assert_int_equal(worker_views(w), 1);

    struct snapshot *next = snapshot_new();
    assert_non_null(next);
    next->tls = r.tls;
    char err[ERRLEN];
    assert_null(snapshot_fill(next, r.snap->cfg, r.snap, 1, err, ERRLEN));
    assert_int_equal(worker_start(w), 0);
    worker_set_snapshot(w, next);
    /* the swap runs before the stop: both are event_active()s on the worker's base, in order */
    worker_stop(w, 0);
    worker_join(w);
    assert_int_equal(worker_views(w), 1);
    assert_int_equal(refs(&r.snap->refs), 1); /* the old view had no connection: freed */
    assert_int_equal(refs(&next->refs), 2);   /* ours + the worker's new view */
    worker_free(w);
    assert_int_equal(refs(&next->refs), 1);
    snapshot_unref(next);
    stop(&r);
}

/* Forward zones: the snapshot holds their nameset (value zone + 1) and a TLS client context when
 * only a zone has a tls:// server; the cache is shared across a reload only while the zones stay
 * the same (answers from old routes must not be served), and none of it when they are gone. */
static void test_forward_zones(void **state)
{
    /* wire names */
    static const uint8_t corp[] = {4, 'h', 'o', 's', 't', 4,   'c', 'o', 'r', 'p',
                                   7, 'e', 'x', 'a', 'm', 'p', 'l', 'e', 0};
    static const uint8_t lab[] = {1,   'x', 3,   'l', 'a', 'b', 4,   'c', 'o', 'r',
                                  'p', 7,   'e', 'x', 'a', 'm', 'p', 'l', 'e', 0};
    static const uint8_t other[] = {3, 'w', 'w', 'w', 7, 'e', 'x', 'a', 'm', 'p', 'l', 'e', 0};
    struct running r;
    start(&r, "upstream 127.0.0.1:5300\n"
              "forward-zone corp.example 127.0.0.1:5301\n"
              "forward-zone lab.corp.example tls://127.0.0.1:8853#dns.lab.example\n");
    char err[ERRLEN];
    struct reload_plan plan;
    assert_non_null(r.snap->fwd_zones);
    assert_non_null(r.snap->uptls); /* the default upstream is plain DNS: for the zone alone */
    uint32_t v = 0;
    assert_int_equal(nameset_match(r.snap->fwd_zones, corp, sizeof(corp), UINT32_MAX, &v), 5);
    assert_int_equal(v, 1);
    assert_int_equal(nameset_match(r.snap->fwd_zones, lab, sizeof(lab), UINT32_MAX, &v), 2);
    assert_int_equal(v, 2);
    assert_int_equal(nameset_match(r.snap->fwd_zones, other, sizeof(other), UINT32_MAX, &v), -1);

    /* the same zones (another option changed): the cache goes on */
    write_conf("upstream 127.0.0.1:5300\ncache-min-ttl 9\n"
               "forward-zone corp.example 127.0.0.1:5301\n"
               "forward-zone lab.corp.example tls://127.0.0.1:8853#dns.lab.example\n");
    assert_int_equal(reload_prepare(r.snap, conf_path, 0, NULL, 1, &plan, err, ERRLEN), 0);
    assert_true(plan.cache_shared);
    assert_non_null(plan.snap->fwd_zones);
    assert_ptr_not_equal(plan.snap->fwd_zones, r.snap->fwd_zones); /* one per snapshot */
    reload_plan_free(&plan);

    /* a zone's server changes: a new cache */
    write_conf("upstream 127.0.0.1:5300\n"
               "forward-zone corp.example 127.0.0.1:5302\n"
               "forward-zone lab.corp.example tls://127.0.0.1:8853#dns.lab.example\n");
    assert_int_equal(reload_prepare(r.snap, conf_path, 0, NULL, 1, &plan, err, ERRLEN), 0);
    assert_false(plan.cache_shared);
    reload_plan_free(&plan);

    /* the zones removed: no nameset, no TLS context, a new cache */
    write_conf("upstream 127.0.0.1:5300\n");
    assert_int_equal(reload_prepare(r.snap, conf_path, 0, NULL, 1, &plan, err, ERRLEN), 0);
    assert_false(plan.cache_shared);
    assert_null(plan.snap->fwd_zones);
    assert_null(plan.snap->uptls);
    reload_plan_free(&plan);
    stop(&r);
}

int main(void)
{
    dg_log_set_level(DG_LOG_ERR);
    evthread_use_pthreads();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_refcount),    cmocka_unit_test(test_prepare_refuses),
        cmocka_unit_test(test_prepare_and_commit), cmocka_unit_test(test_prepare_reapplies_flags),
        cmocka_unit_test(test_worker_swap),        cmocka_unit_test(test_rrl_shared),
        cmocka_unit_test(test_forward_zones),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
