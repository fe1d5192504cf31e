/*
 * worker_new() owns the listening descriptors it is given in every outcome: closed by
 * worker_free() after a success, and closed before it returns NULL on any failure. Every
 * calloc() made by the core library during worker_new() is failed in turn (the Nth one for
 * N = 1, 2, ...) until worker_new() gets through with no failure; after each attempt every
 * descriptor must be closed. This test is linked with -Wl,--wrap=calloc (tests/CMakeLists.txt),
 * so the core library's calloc calls come here; libevent's own allocations are not failed.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include <cmocka.h>

#include "dohgate/config.h"
#include "dohgate/reload.h"
#include "dohgate/tls.h"
#include "dohgate/worker.h"

void *__real_calloc(size_t n, size_t size);
void *__wrap_calloc(size_t n, size_t size);

static unsigned long fail_at; /* 0: never fail */
static unsigned long calls;

void *__wrap_calloc(size_t n, size_t size)
{
    if (fail_at && ++calls == fail_at)
        return NULL;
    return __real_calloc(n, size);
}

#define NFDS 3

static bool fd_open(int fd)
{
    return fcntl(fd, F_GETFD) != -1 || errno != EBADF;
}

static void test_new_owns_fds_on_failure(void **state)
{
    (void)state;
    char err[256], fp[128];
    struct config *cfg = config_new();
    assert_non_null(cfg);
    assert_int_equal(config_set(cfg, "upstream", "127.0.0.1:53", "t", 0, err, sizeof(err)), 0);
    /* forward zones: the view's per-zone upstream sets fail in turn too */
    assert_int_equal(config_set(cfg, "forward-zone", "corp.example 127.0.0.1:5353 127.0.0.2", "t",
                                0, err, sizeof(err)),
                     0);
    assert_int_equal(
        config_set(cfg, "forward-zone", "lab.corp.example 127.0.0.3", "t", 0, err, sizeof(err)), 0);
    assert_int_equal(config_finish(cfg, err, sizeof(err)), 0);
    struct tls_store *tls = tls_store_new(cfg, fp, err, sizeof(err));
    assert_non_null(tls);
    struct snapshot *snap = snapshot_new();
    assert_non_null(snap);
    snap->tls = tls;
    assert_null(snapshot_fill(snap, cfg, NULL, 1, err, sizeof(err)));
    config_unref(cfg); /* the snapshot holds it from here */

    unsigned long failures = 0;
    for (unsigned long n = 1;; n++) {
        int fds[NFDS];
        struct worker_socket socks[NFDS];
        for (int i = 0; i < NFDS; i++) {
            int p[2];
            assert_int_equal(pipe(p), 0);
            close(p[1]);
            fds[i] = p[0];
            socks[i] = (struct worker_socket){
                .fd = p[0], .kind = i == 0 ? DG_LISTENER_TLS : DG_LISTENER_METRICS};
        }
        calls = 0;
        fail_at = n;
        struct worker *w = worker_new(0, snap, socks, NFDS);
        fail_at = 0;
        bool injected = calls >= n;
        if (w) {
            for (int i = 0; i < NFDS; i++)
                assert_true(fd_open(fds[i]));
            worker_free(w);
        } else {
            assert_true(injected); /* nothing else can fail here */
            failures++;
        }
        for (int i = 0; i < NFDS; i++)
            if (fd_open(fds[i]))
                fail_msg("calloc #%lu failed: listening fd %d (%d of %d) left open", n, fds[i],
                         i + 1, NFDS);
        if (!injected)
            break;
    }
    /* the worker itself, its descriptor array and its event array at least */
    assert_true(failures >= 3);
    snapshot_unref(snap);
    tls_store_free(tls);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new_owns_fds_on_failure),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
