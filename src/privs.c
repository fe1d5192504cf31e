#include "dohgate/privs.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <sys/capability.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <unistd.h>

/* getpwnam/getgrnam found nothing: errno says whether the lookup itself failed. */
static int not_found(char *err, size_t errlen, const char *what, const char *name)
{
    snprintf(err, errlen, "%s '%s' does not exist%s%s", what, name, errno ? ": " : "",
             errno ? strerror(errno) : "");
    return -1;
}

int privs_drop(const char *user, const char *group, char *err, size_t errlen)
{
    errno = 0;
    struct passwd *pw = getpwnam(user);
    if (!pw)
        return not_found(err, errlen, "user", user);
    uid_t uid = pw->pw_uid;
    gid_t gid = pw->pw_gid;
    if (group) {
        errno = 0;
        struct group *gr = getgrnam(group);
        if (!gr)
            return not_found(err, errlen, "group", group);
        gid = gr->gr_gid;
    }
    if (geteuid() == uid && getegid() == gid)
        return 0; /* started as that user already (e.g. systemd User= with capabilities) */
    if (geteuid() != 0) {
        snprintf(err, errlen,
                 "user %s: only root can switch users (started as uid %u); start as root or "
                 "drop the user option",
                 user, (unsigned)geteuid());
        return -1;
    }
    /* Groups first: after setuid there is no right left to change them. */
    if (initgroups(user, gid) != 0 || setgid(gid) != 0 || setuid(uid) != 0) {
        snprintf(err, errlen, "switching to user %s: %s", user, strerror(errno));
        return -1;
    }
    /* The way back must be closed (CERT POS37-C). */
    if (uid != 0 && (setuid(0) == 0 || seteuid(0) == 0)) {
        snprintf(err, errlen, "switching to user %s: root could be regained", user);
        return -1;
    }
    return 0;
}

int privs_drop_caps(char *err, size_t errlen)
{
    if (geteuid() == 0)
        return 0;
    /* Ambient first (it would survive in the permitted set otherwise), then everything. */
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 && errno != EINVAL) {
        snprintf(err, errlen, "clearing ambient capabilities: %s", strerror(errno));
        return -1;
    }
    cap_t none = cap_init(); /* an empty set */
    int rc = none ? cap_set_proc(none) : -1;
    int e = errno;
    cap_free(none);
    if (rc != 0) {
        snprintf(err, errlen, "dropping capabilities: %s", strerror(e));
        return -1;
    }
    return 0;
}
