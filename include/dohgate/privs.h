/**
 * @file privs.h
 * Dropping root after the ports are bound: the process (all threads: glibc applies set*id to
 * every thread) switches to the configured user and group, with that user's supplementary
 * groups, and keeps no capabilities. Called by main before the workers start.
 */
#ifndef DOHGATE_PRIVS_H
#define DOHGATE_PRIVS_H

#include <stddef.h>

/**
 * Become @p user (with @p group, or the user's primary group when NULL).
 * @return 0 switched (or already that user), -1 with a message in @p err: unknown user or
 *         group, not root, or a set*id call failed (the process must not go on then).
 */
int privs_drop(const char *user, const char *group, char *err, size_t errlen);

/**
 * Once the ports are bound, give up every capability (permitted, effective, inheritable and
 * ambient): a process started unprivileged with CAP_NET_BIND_SERVICE (systemd's
 * AmbientCapabilities, setcap) needs it no more. Does nothing for root, whose rights are its
 * uid (set "user" to leave root). @return 0 or -1 with @p err.
 */
int privs_drop_caps(char *err, size_t errlen);

#endif
