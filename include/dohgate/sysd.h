/**
 * @file sysd.h
 * systemd integration through libsystemd: listening sockets passed by socket activation
 * (LISTEN_FDS), and readiness/reload/stop notifications (Type=notify). Both do nothing when
 * dohgate was not started by systemd.
 */
#ifndef DOHGATE_SYSD_H
#define DOHGATE_SYSD_H

#include <stddef.h>

#include "dohgate/config.h"

/** Sockets from systemd: TLS ones first (fd[0..ntls)), then plain HTTP ones. */
struct sysd_sockets {
    int fd[2 * DG_CONFIG_MAX_LIST];
    char text[2 * DG_CONFIG_MAX_LIST][64]; /**< local address, for the log */
    size_t n, ntls;
};

/**
 * Take the sockets systemd passed. A socket whose FileDescriptorName= is "http" serves plain
 * HTTP (the port-80 listener); any other name serves TLS. Sockets are made non-blocking and
 * close-on-exec. @return the number of sockets (0: not socket-activated), or -1 with @p err
 * (not a listening stream socket, too many).
 */
int sysd_listen_fds(struct sysd_sockets *out, char *err, size_t errlen);

/** sd_notify(): "READY=1", "RELOADING=1", "STOPPING=1", "STATUS=..." */
void sysd_notify(const char *state);

#endif
