#include "dohgate/log.h"

#include <errno.h>
#include <openssl/err.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdbool.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

static _Atomic int log_level = DG_LOG_INFO;
static bool to_syslog; /* set once before the workers start */

void dg_log_set_level(enum dg_log_level lvl)
{
    atomic_store(&log_level, (int)lvl);
}

enum dg_log_level dg_log_get_level(void)
{
    return (enum dg_log_level)atomic_load(&log_level);
}

int dg_log_level_parse(const char *s, enum dg_log_level *out)
{
    static const char *const names[] = {"error", "warn", "info", "debug"};
    for (int i = 0; i < 4; i++) {
        if (strcmp(s, names[i]) == 0) {
            *out = (enum dg_log_level)i;
            return 0;
        }
    }
    return -EINVAL;
}

void dg_log_use_syslog(void)
{
    /* LOG_NDELAY: connect now, while the files of a chroot or sandbox are still reachable. */
    openlog("dohgate", LOG_PID | LOG_NDELAY, LOG_DAEMON);
    to_syslog = true;
}

__attribute__((format(printf, 2, 0))) static void log_vwrite(enum dg_log_level lvl, const char *fmt,
                                                             va_list ap)
{
    static const char *const tags[] = {"error", "warn", "info", "debug"};
    char line[1024];
    if (to_syslog) {
        static const int prio[] = {LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG};
        vsnprintf(line, sizeof(line), fmt, ap);
        syslog(prio[lvl], "%s", line); /* syslog adds the time, name and pid */
        return;
    }
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof(line),
                     "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ dohgate[%d] %s: ", tm.tm_year + 1900,
                     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     ts.tv_nsec / 1000000L, (int)getpid(), tags[lvl]);
    if (n < 0)
        return;
    int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof(line) - 2)
        len = sizeof(line) - 2;
    line[len++] = '\n';
    /* One write per line: lines from several threads never interleave. */
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}

void dg_log_query(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_vwrite(DG_LOG_INFO, fmt, ap);
    va_end(ap);
}

void dg_log(enum dg_log_level lvl, const char *fmt, ...)
{
    if ((int)lvl > atomic_load(&log_level))
        return;
    va_list ap;
    va_start(ap, fmt);
    log_vwrite(lvl, fmt, ap);
    va_end(ap);
}

void dg_ssl_err_to(char *err, size_t errlen, const char *what)
{
    unsigned long e = ERR_get_error();
    char buf[256] = "";
    if (e)
        ERR_error_string_n(e, buf, sizeof(buf));
    snprintf(err, errlen, "%s%s%s", what, e ? ": " : "", buf);
    ERR_clear_error();
}

void dg_log_ssl_errors(enum dg_log_level lvl, const char *what)
{
    char buf[512];
    size_t off = 0;
    unsigned long e;
    buf[0] = '\0';
    while ((e = ERR_get_error()) != 0) {
        if (off < sizeof(buf) - 4) {
            if (off)
                buf[off++] = ';', buf[off++] = ' ';
            ERR_error_string_n(e, buf + off, sizeof(buf) - off);
            off += strlen(buf + off);
        }
    }
    dg_log(lvl, "%s: %s", what, off ? buf : "(no OpenSSL error)");
}
