/* budget: take/put at the connection, client and process scopes, limits, a NULL scope, the
 * client scope shared by two connections of one client, refusals reported to the observer, and
 * the descriptor reserve against a lowered RLIMIT_NOFILE. */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cmocka.h>

#include "dohgate/budget.h"
#include "dohgate/client.h"
#include "dohgate/clients.h"
#include "dohgate/config.h"
#include "dohgate/observer.h"

/* Refusals seen, by DG_EV_BUDGET_REFUSED idx. */
struct seen {
    uint64_t refused[BUDGET_NKIND * BUDGET_NLEVEL];
    uint64_t other;
};

static void on_event(void *arg, enum dg_event ev, unsigned idx, uint64_t value)
{
    struct seen *s = arg;
    if (ev == DG_EV_BUDGET_REFUSED && idx < BUDGET_NKIND * BUDGET_NLEVEL)
        s->refused[idx] += value;
    else
        s->other += value;
}

static struct config *cfg_new(void)
{
    struct config *cfg = config_new();
    assert_non_null(cfg);
    cfg->max_sources_per_conn = 0;
    cfg->max_sources_per_client = 0;
    cfg->body_buffer_per_conn = 0;
    cfg->body_buffer_per_client = 0;
    cfg->body_buffer_total = 0;
    return cfg;
}

static void test_connection_scope(void **state)
{
    (void)state;
    struct config *cfg = cfg_new();
    cfg->max_sources_per_conn = 2;
    cfg->body_buffer_per_conn = 1000;
    struct seen seen = {0};
    const struct dg_observer obs = {on_event, &seen};
    struct budget_scope s;
    budget_scope_init(&s, NULL, NULL, &obs);
    size_t p0 = budget_process_used(BUDGET_SOURCES), b0 = budget_process_used(BUDGET_BODY);

    assert_int_equal(budget_take(&s, cfg, BUDGET_SOURCES, 1), BUDGET_OK);
    assert_int_equal(budget_take(&s, cfg, BUDGET_SOURCES, 1), BUDGET_OK);
    assert_int_equal(budget_take(&s, cfg, BUDGET_SOURCES, 1), BUDGET_AT_CONN);
    assert_int_equal(s.used[BUDGET_SOURCES], 2);
    assert_int_equal(budget_process_used(BUDGET_SOURCES), p0 + 2); /* the refusal took nothing */
    assert_int_equal(seen.refused[BUDGET_EVENT_IDX(BUDGET_SOURCES, BUDGET_AT_CONN)], 1);

    /* the kinds are counted apart: bodies are not limited by the sources held */
    assert_int_equal(budget_take(&s, cfg, BUDGET_BODY, 999), BUDGET_OK);
    assert_int_equal(budget_take(&s, cfg, BUDGET_BODY, 2), BUDGET_AT_CONN);
    assert_int_equal(budget_take(&s, cfg, BUDGET_BODY, 1), BUDGET_OK); /* exactly at the limit */
    assert_int_equal(budget_process_used(BUDGET_BODY), b0 + 1000);
    assert_int_equal(seen.refused[BUDGET_EVENT_IDX(BUDGET_BODY, BUDGET_AT_CONN)], 1);

    /* what goes back can be taken again */
    budget_put(&s, BUDGET_SOURCES, 1);
    assert_int_equal(budget_take(&s, cfg, BUDGET_SOURCES, 1), BUDGET_OK);
    budget_put(&s, BUDGET_SOURCES, 2);
    budget_put(&s, BUDGET_BODY, 1000);
    budget_put(&s, BUDGET_BODY, 0); /* nothing: allowed */
    assert_int_equal(s.used[BUDGET_SOURCES], 0);
    assert_int_equal(s.used[BUDGET_BODY], 0);
    assert_int_equal(budget_process_used(BUDGET_SOURCES), p0);
    assert_int_equal(budget_process_used(BUDGET_BODY), b0);
    budget_scope_fini(&s); /* asserts (debug builds) that everything came back */
    assert_int_equal(seen.other, 0);

    /* 0 = no limit at that scope */
    cfg->max_sources_per_conn = 0;
    budget_scope_init(&s, NULL, NULL, NULL);
    assert_int_equal(budget_take(&s, cfg, BUDGET_SOURCES, 100000), BUDGET_OK);
    budget_put(&s, BUDGET_SOURCES, 100000);
    budget_scope_fini(&s);
    config_free(cfg);
}

static void test_null_scope_and_process(void **state)
{
    (void)state;
    struct config *cfg = cfg_new();
    cfg->max_sources_per_conn = 1; /* no connection: never applies */
    size_t p0 = budget_process_used(BUDGET_SOURCES), b0 = budget_process_used(BUDGET_BODY);
    assert_int_equal(budget_take(NULL, cfg, BUDGET_SOURCES, 5), BUDGET_OK);
    assert_int_equal(budget_process_used(BUDGET_SOURCES), p0 + 5);
    budget_put(NULL, BUDGET_SOURCES, 5);
    assert_int_equal(budget_process_used(BUDGET_SOURCES), p0);

    /* the process limit (max-body-buffer) holds with and without a connection scope */
    cfg->body_buffer_total = b0 + 100;
    struct budget_scope s;
    budget_scope_init(&s, NULL, NULL, NULL);
    assert_int_equal(budget_take(NULL, cfg, BUDGET_BODY, 60), BUDGET_OK);
    assert_int_equal(budget_take(&s, cfg, BUDGET_BODY, 50), BUDGET_AT_PROCESS);
    assert_int_equal(budget_take(NULL, cfg, BUDGET_BODY, 41), BUDGET_AT_PROCESS);
    assert_int_equal(s.used[BUDGET_BODY], 0);
    assert_int_equal(budget_take(&s, cfg, BUDGET_BODY, 40), BUDGET_OK);
    assert_int_equal(budget_process_used(BUDGET_BODY), b0 + 100);
    budget_put(NULL, BUDGET_BODY, 60);
    assert_int_equal(budget_take(&s, cfg, BUDGET_BODY, 60), BUDGET_OK);
    budget_put(&s, BUDGET_BODY, 100);
    assert_int_equal(budget_process_used(BUDGET_BODY), b0);
    budget_scope_fini(&s);
    config_free(cfg);
}

static void test_client_scope_shared(void **state)
{
    (void)state;
    struct config *cfg = cfg_new();
    cfg->max_sources_per_conn = 10;
    cfg->max_sources_per_client = 3;
    const struct clients_config ccfg = {.max_entries = 100};
    struct clients *cl = clients_new(&ccfg);
    assert_non_null(cl);
    struct client_id id, id2, other;
    assert_int_equal(client_id_from_string(&id, "192.0.2.7"), 0);
    assert_int_equal(client_id_from_string(&id2, "192.0.2.7"), 0);
    assert_int_equal(client_id_from_string(&other, "192.0.2.8"), 0);
    struct seen seen = {0};
    const struct dg_observer obs = {on_event, &seen};
    struct budget_scope a, b, c;
    budget_scope_init(&a, cl, &id, &obs);
    budget_scope_init(&b, cl, &id2, &obs); /* a second connection of the same client */
    budget_scope_init(&c, cl, &other, &obs);
    size_t p0 = budget_process_used(BUDGET_SOURCES);

    assert_int_equal(budget_take(&a, cfg, BUDGET_SOURCES, 2), BUDGET_OK);
    assert_int_equal(budget_take(&b, cfg, BUDGET_SOURCES, 1), BUDGET_OK);
    /* the client holds 3: either connection is refused, at the client scope */
    assert_int_equal(budget_take(&b, cfg, BUDGET_SOURCES, 1), BUDGET_AT_CLIENT);
    assert_int_equal(budget_take(&a, cfg, BUDGET_SOURCES, 1), BUDGET_AT_CLIENT);
    assert_int_equal(seen.refused[BUDGET_EVENT_IDX(BUDGET_SOURCES, BUDGET_AT_CLIENT)], 2);
    assert_int_equal(a.used[BUDGET_SOURCES], 2);
    assert_int_equal(b.used[BUDGET_SOURCES], 1);
    assert_int_equal(budget_process_used(BUDGET_SOURCES), p0 + 3); /* refusals undid theirs */
    /* another client is not affected */
    assert_int_equal(budget_take(&c, cfg, BUDGET_SOURCES, 3), BUDGET_OK);
    assert_int_equal(budget_take(&c, cfg, BUDGET_SOURCES, 1), BUDGET_AT_CLIENT);

    /* what one connection gives back, the other can take */
    budget_put(&a, BUDGET_SOURCES, 1);
    assert_int_equal(budget_take(&b, cfg, BUDGET_SOURCES, 1), BUDGET_OK);
    assert_int_equal(budget_take(&b, cfg, BUDGET_SOURCES, 1), BUDGET_AT_CLIENT);
    /* the connection limit is checked too, before the client's */
    cfg->max_sources_per_conn = 2;
    assert_int_equal(budget_take(&b, cfg, BUDGET_SOURCES, 1), BUDGET_AT_CONN);

    budget_put(&a, BUDGET_SOURCES, 1);
    budget_put(&b, BUDGET_SOURCES, 2);
    budget_put(&c, BUDGET_SOURCES, 3);
    budget_scope_fini(&a);
    budget_scope_fini(&b);
    budget_scope_fini(&c);
    assert_int_equal(budget_process_used(BUDGET_SOURCES), p0);
    /* all given back: the client can take its whole allowance again */
    budget_scope_init(&a, cl, &id, &obs);
    assert_int_equal(budget_take(&a, cfg, BUDGET_SOURCES, 2), BUDGET_OK);
    budget_scope_init(&b, cl, &id2, &obs);
    assert_int_equal(budget_take(&b, cfg, BUDGET_SOURCES, 1), BUDGET_OK);
    budget_put(&a, BUDGET_SOURCES, 2);
    budget_put(&b, BUDGET_SOURCES, 1);
    budget_scope_fini(&a);
    budget_scope_fini(&b);

    /* an unknown client (no address): only the connection and process scopes count */
    struct client_id unknown;
    memset(&unknown, 0, sizeof(unknown));
    budget_scope_init(&a, cl, &unknown, &obs);
    assert_int_equal(budget_take(&a, cfg, BUDGET_SOURCES, 2), BUDGET_OK);
    budget_put(&a, BUDGET_SOURCES, 2);
    budget_scope_fini(&a);
    clients_free(cl);
    config_free(cfg);
}

/* Units taken while no per-client limit was set never reached the client's entry: giving them
 * back after a limit appeared (a reload) must not lower what the client's other connections
 * hold, or the client could pass its limit. */
static void test_client_limit_set_later(void **state)
{
    (void)state;
    struct config *cfg = cfg_new();
    const struct clients_config ccfg = {.max_entries = 100};
    struct clients *cl = clients_new(&ccfg);
    assert_non_null(cl);
    struct client_id id;
    assert_int_equal(client_id_from_string(&id, "192.0.2.9"), 0);
    struct budget_scope a, b;
    budget_scope_init(&a, cl, &id, NULL);
    budget_scope_init(&b, cl, &id, NULL);
    assert_int_equal(budget_take(&a, cfg, BUDGET_SOURCES, 3), BUDGET_OK); /* no client limit */
    cfg->max_sources_per_client = 5;
    assert_int_equal(budget_take(&b, cfg, BUDGET_SOURCES, 5), BUDGET_OK);
    budget_put(&a, BUDGET_SOURCES, 3);
    /* the client still holds 5 through b: nothing more */
    assert_int_equal(budget_take(&b, cfg, BUDGET_SOURCES, 1), BUDGET_AT_CLIENT);
    budget_put(&b, BUDGET_SOURCES, 5);
    assert_int_equal(budget_take(&b, cfg, BUDGET_SOURCES, 5), BUDGET_OK);
    budget_put(&b, BUDGET_SOURCES, 5);
    budget_scope_fini(&a);
    budget_scope_fini(&b);
    clients_free(cl);
    config_free(cfg);
}

static void test_fd_reserve(void **state)
{
    (void)state;
    struct rlimit old, low;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
    low = old;
    low.rlim_cur = 64;
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
    budget_refresh_fd_limit();
    struct config *cfg = cfg_new();
    cfg->fd_reserve = 16;
    struct seen seen = {0};
    const struct dg_observer obs = {on_event, &seen};
    struct budget_scope s;
    budget_scope_init(&s, NULL, NULL, &obs);

    int fds[64];
    int n = 0, first_refused = -1;
    while (n < 64) {
        int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            break; /* EMFILE: the table is full */
        fds[n++] = fd;
        bool ok = budget_fd_ok(&s, cfg, fd);
        if (fd + 16 < 64)
            assert_true(ok); /* below the reserve: fine */
        else
            assert_false(ok); /* within the last 16 of the limit: refused */
        if (!ok && first_refused < 0)
            first_refused = fd;
    }
    /* refusals start exactly 16 descriptors before the limit, while opening still works: the
     * reserve is what is left for accepting and answering */
    assert_int_equal(first_refused, 64 - 16);
    assert_true(n > 0 && fds[n - 1] == 63);
    assert_int_equal(seen.refused[BUDGET_EVENT_IDX(BUDGET_SOURCES, BUDGET_AT_DESCRIPTORS)],
                     (uint64_t)(64 - first_refused));
    for (int i = 0; i < n; i++)
        close(fds[i]);

    /* a reserve of 0: every descriptor the kernel gives is fine */
    cfg->fd_reserve = 0;
    assert_true(budget_fd_ok(&s, cfg, 63));
    /* a NULL scope is accepted (refusal not reported anywhere) */
    cfg->fd_reserve = 16;
    assert_false(budget_fd_ok(NULL, cfg, 60));
    assert_true(budget_fd_ok(NULL, cfg, 3));

    assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);
    budget_refresh_fd_limit();
    budget_scope_fini(&s);
    config_free(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_connection_scope),    cmocka_unit_test(test_null_scope_and_process),
        cmocka_unit_test(test_client_scope_shared), cmocka_unit_test(test_client_limit_set_later),
        cmocka_unit_test(test_fd_reserve),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
