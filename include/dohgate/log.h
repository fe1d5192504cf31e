/**
 * @file log.h
 * Leveled logging to stderr (one line per call, written with one write(2) so lines from several
 * workers never interleave; journald reads it under systemd) or to syslog (log-target syslog).
 * Query data (names, types, client addresses) must never be passed here unless a query log was
 * asked for; callers are responsible for that rule.
 */
#ifndef DOHGATE_LOG_H
#define DOHGATE_LOG_H

#include <stddef.h>

enum dg_log_level { DG_LOG_ERR = 0, DG_LOG_WARN, DG_LOG_INFO, DG_LOG_DEBUG };

/** Set the threshold; messages above it are dropped. Call before starting workers. */
void dg_log_set_level(enum dg_log_level lvl);
enum dg_log_level dg_log_get_level(void);
/** Parse "error", "warn", "info", "debug". @return 0 or -EINVAL. */
int dg_log_level_parse(const char *s, enum dg_log_level *out);

void dg_log(enum dg_log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/** From now on, log through syslog(3) (facility daemon) instead of stderr. Call once at start. */
void dg_log_use_syslog(void);

/** A query-log line: written whatever the level (the query log has its own switch). */
void dg_log_query(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/** Log the OpenSSL error queue as one line prefixed by @p what, then clear it. */
void dg_log_ssl_errors(enum dg_log_level lvl, const char *what);
/** "@p what: <the first queued OpenSSL error>" (or @p what alone) into @p err, and the queue
 * cleared: for functions that report failures to their caller rather than to the log. */
void dg_ssl_err_to(char *err, size_t errlen, const char *what);

#define log_err(...)   dg_log(DG_LOG_ERR, __VA_ARGS__)
#define log_warn(...)  dg_log(DG_LOG_WARN, __VA_ARGS__)
#define log_info(...)  dg_log(DG_LOG_INFO, __VA_ARGS__)
#define log_debug(...) dg_log(DG_LOG_DEBUG, __VA_ARGS__)

#endif
