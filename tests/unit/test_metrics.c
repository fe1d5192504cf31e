/*
 * Unit tests of the metrics module's upstream series: the observer counts DG_EV_UP_* events by
 * the index upstream_obs_base() gives each server (default servers, then every forward zone's),
 * and the page labels a zone server's series with its zone while the default servers' labels
 * stay as they always were.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "dohgate/config.h"
#include "dohgate/metrics.h"
#include "dohgate/observer.h"
#include "dohgate/upstream.h"
#include "dohgate/util.h"

static struct config *make_cfg(void)
{
    char err[256];
    struct config *cfg = config_new();
    assert_non_null(cfg);
    const char *opts[][2] = {
        {"upstream", "192.0.2.1:53"},
        {"upstream", "192.0.2.2:53"},
        {"forward-zone", "corp.example 198.51.100.1:53 198.51.100.2:5353"},
        {"forward-zone", "2.0.10.in-addr.arpa 198.51.100.3"},
    };
    for (size_t i = 0; i < sizeof(opts) / sizeof(opts[0]); i++)
        if (config_set(cfg, opts[i][0], opts[i][1], "test", 0, err, sizeof(err)) != 0)
            fail_msg("config_set %s: %s", opts[i][0], err);
    if (config_finish(cfg, err, sizeof(err)) != 0)
        fail_msg("config_finish: %s", err);
    assert_int_equal(cfg->n_forward_zone, 2);
    return cfg;
}

/* The page as a C string. */
static char *render(const struct metrics *m)
{
    struct dg_buf out = {0};
    assert_int_equal(metrics_render(m, &out), 0);
    assert_int_equal(dg_buf_append(&out, (const uint8_t *)"", 1), 0);
    return (char *)out.data;
}

static void assert_line(const char *page, const char *line)
{
    if (!strstr(page, line))
        fail_msg("missing line: %s", line);
}

static void test_zone_series(void **state)
{
    (void)state;
    struct config *cfg = make_cfg();
    struct metrics *m = metrics_new(2, cfg, NULL, NULL);
    assert_non_null(m);
    struct dg_observer o0, o1;
    metrics_observer_init(&o0, &m->w[0]);
    metrics_observer_init(&o1, &m->w[1]);

    /* default 0..1, corp.example 2..3, 2.0.10.in-addr.arpa 4 */
    assert_int_equal(upstream_obs_base(cfg, 0), 2);
    assert_int_equal(upstream_obs_base(cfg, 1), 4);
    dg_observe(&o0, DG_EV_UP_QUERY, 1, 1);
    dg_observe(&o0, DG_EV_UP_QUERY, 3, 1);
    dg_observe(&o1, DG_EV_UP_QUERY, 3, 1);
    dg_observe(&o1, DG_EV_UP_ANSWER, 3, 2000);
    dg_observe(&o0, DG_EV_UP_QUERY, 4, 1);
    dg_observe(&o0, DG_EV_UP_HEALTH, 4, DG_UP_HEALTH(0, 1));
    dg_observe(&o1, DG_EV_UP_HEALTH, 2, DG_UP_HEALTH(4000, 0));
    /* past the bound: not counted, no crash */
    dg_observe(&o0, DG_EV_UP_QUERY, MET_MAX_UPSTREAMS, 1);

    char *page = render(m);
    /* default servers: labels as before */
    assert_line(page, "dohgate_upstream_queries_total{upstream=\"192.0.2.1:53\"} 0\n");
    assert_line(page, "dohgate_upstream_queries_total{upstream=\"192.0.2.2:53\"} 1\n");
    assert_line(page, "dohgate_upstream_up{upstream=\"192.0.2.1:53\"} 1\n");
    /* zone servers, summed over the workers */
    assert_line(page, "dohgate_upstream_queries_total{upstream=\"198.51.100.1:53\","
                      "zone=\"corp.example\"} 0\n");
    assert_line(page, "dohgate_upstream_queries_total{upstream=\"198.51.100.2:5353\","
                      "zone=\"corp.example\"} 2\n");
    assert_line(page, "dohgate_upstream_answers_total{upstream=\"198.51.100.2:5353\","
                      "zone=\"corp.example\"} 1\n");
    assert_line(page, "dohgate_upstream_latency_seconds_bucket{upstream=\"198.51.100.2:5353\","
                      "zone=\"corp.example\",le=\"0.0025\"} 1\n");
    assert_line(page, "dohgate_upstream_latency_seconds_count{upstream=\"198.51.100.2:5353\","
                      "zone=\"corp.example\"} 1\n");
    assert_line(page, "dohgate_upstream_srtt_seconds{upstream=\"198.51.100.1:53\","
                      "zone=\"corp.example\"} 0.004000\n");
    assert_line(page, "dohgate_upstream_queries_total{upstream=\"198.51.100.3:53\","
                      "zone=\"2.0.10.in-addr.arpa\"} 1\n");
    assert_line(page, "dohgate_upstream_up{upstream=\"198.51.100.3:53\","
                      "zone=\"2.0.10.in-addr.arpa\"} 0\n");
    assert_line(page, "dohgate_upstream_up{upstream=\"198.51.100.1:53\","
                      "zone=\"corp.example\"} 1\n");
    /* five servers, five series of each name */
    size_t n = 0;
    for (const char *p = page; (p = strstr(p, "\ndohgate_upstream_queries_total{")); p++)
        n++;
    assert_int_equal(n, 5);
    free(page);
    metrics_free(m);
    config_free(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_zone_series),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
