/**
 * @file sysd.h
 * systemd integration through libsystemd: listening sockets passed by socket activation
 * (LISTEN_FDS), and readiness/reload/stop notifications (Type=notify). Both do nothing when
 * dohgate was not started by systemd.
 */
#ifndef DOHGATE_SYSD_H
#define DOHGATE_SYSD_H

#include <stdbool.h>
#include <stddef.h>

#include "dohgate/config.h"
#include "dohgate/observer.h"

/** Sockets from systemd, each with what it serves (by its FileDescriptorName=). */
struct sysd_sockets {
    int fd[4 * DG_CONFIG_MAX_LIST];
    enum dg_listener kind[4 * DG_CONFIG_MAX_LIST];
    bool udp[4 * DG_CONFIG_MAX_LIST];      /**< a datagram socket (name "dns") */
    char text[4 * DG_CONFIG_MAX_LIST][64]; /**< local address, for the log */
    size_t n, ntls;                        /**< ntls: how many serve DoH (DG_LISTENER_TLS) */
};

/**
 * Take the sockets systemd passed. By FileDescriptorName=: "http" serves plain HTTP (the port-80
 * listener), "dns" is a plain-DNS UDP socket (ListenDatagram=), "dns-tcp" plain DNS over TCP,
 * "dot" DNS over TLS, "plain" the clear-text listener (plain-listen); any other name serves DoH
 * over TLS. Sockets are made non-blocking and close-on-exec. @return the number of sockets (0: not
 * socket-activated), or -1 with @p err (a socket of the wrong type for its name, too many).
 */
int sysd_listen_fds(struct sysd_sockets *out, char *err, size_t errlen);

/** sd_notify(): "READY=1", "RELOADING=1", "STOPPING=1", "STATUS=..." */
void sysd_notify(const char *state);

#endif
