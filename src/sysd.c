#include "dohgate/sysd.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <systemd/sd-daemon.h>

static void describe(int fd, char *out, size_t outlen)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    char host[INET6_ADDRSTRLEN] = "?";
    unsigned port = 0;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0) {
        if (ss.ss_family == AF_INET6) {
            const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&ss;
            inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
            port = ntohs(a->sin6_port);
            snprintf(out, outlen, "[%s]:%u", host, port);
            return;
        }
        if (ss.ss_family == AF_INET) {
            const struct sockaddr_in *a = (const struct sockaddr_in *)&ss;
            inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
            port = ntohs(a->sin_port);
        }
    }
    snprintf(out, outlen, "%s:%u", host, port);
}

static void free_names(char **names)
{
    for (char **p = names; p && *p; p++)
        free(*p);
    free(names);
}

/* Take socket @p i; @return 0 or -1 with @p err. */
static int take(struct sysd_sockets *out, int i, const char *name, char *err, size_t errlen)
{
    int fd = SD_LISTEN_FDS_START + i;
    bool udp = strcmp(name, "dns") == 0;
    enum dg_listener kind = strcmp(name, "http") == 0      ? DG_LISTENER_PLAIN
                            : strcmp(name, "dns-tcp") == 0 ? DG_LISTENER_DNS_TCP
                            : strcmp(name, "dot") == 0     ? DG_LISTENER_DOT
                            : strcmp(name, "plain") == 0   ? DG_LISTENER_CLEARTEXT
                                                           : DG_LISTENER_TLS;
    if (udp ? sd_is_socket_inet(fd, AF_UNSPEC, SOCK_DGRAM, -1, 0) <= 0
            : sd_is_socket_inet(fd, AF_UNSPEC, SOCK_STREAM, 1, 0) <= 0) {
        snprintf(err, errlen, "systemd socket %d (%s) is not a %s: use %s=", i, name,
                 udp ? "UDP socket" : "listening TCP socket",
                 udp ? "ListenDatagram" : "ListenStream");
        return -1;
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 || fcntl(fd, F_SETFD, FD_CLOEXEC) < 0) {
        snprintf(err, errlen, "systemd socket %d: fcntl: %s", i, strerror(errno));
        return -1;
    }
    describe(fd, out->text[out->n], sizeof(out->text[0]));
    out->kind[out->n] = kind;
    out->udp[out->n] = udp;
    out->fd[out->n++] = fd;
    if (kind == DG_LISTENER_TLS && !udp)
        out->ntls++;
    return 0;
}

int sysd_listen_fds(struct sysd_sockets *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    char **names = NULL;
    /* unset_environment=1: nothing spawned later inherits them */
    int n = sd_listen_fds_with_names(1, &names);
    if (n < 0) {
        snprintf(err, errlen, "LISTEN_FDS: %s", strerror(-n));
    } else if ((size_t)n > sizeof(out->fd) / sizeof(out->fd[0])) {
        snprintf(err, errlen, "systemd passed %d sockets; at most %zu are supported", n,
                 sizeof(out->fd) / sizeof(out->fd[0]));
        n = -1;
    }
    for (int i = 0; i < n; i++) {
        if (take(out, i, names && names[i] ? names[i] : "unknown", err, errlen) != 0) {
            n = -1;
            break;
        }
    }
    free_names(names);
    return n;
}

void sysd_notify(const char *state)
{
    sd_notify(0, state);
}
