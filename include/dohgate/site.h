/**
 * @file site.h
 * The website served on the DoH port for every path that is not a DoH path, in one of three
 * modes chosen by the configuration: static files (site-root, see static.h), a reverse proxy
 * (site-backend, see proxy.h), or the built-in landing page (neither; see landing.h). Also the
 * plain-HTTP listener's answers: ACME HTTP-01 challenges from acme-webroot, 301 to https for
 * everything else.
 *
 * Ownership: main opens one struct site before the workers start and frees it after they
 * stopped; workers only read it (the directory fds are shared read-only). Handlers answer
 * synchronously, except proxied requests (proxy.h) and streamed file bodies, whose source the
 * transport owns (http.h).
 */
#ifndef DOHGATE_SITE_H
#define DOHGATE_SITE_H

#include <stddef.h>

#include "dohgate/static.h"

struct config;
struct http_exchange;

struct site {
    struct static_root root; /**< site-root, fd -1 when not configured */
    struct static_root acme; /**< acme-webroot, fd -1 when not configured */
    unsigned https_port;     /**< port-80 redirects go here: the first TLS listener's port */
};

/** The URL path of the landing page's Apple DNS profile. */
#define SITE_PROFILE_PATH "/dohgate.mobileconfig"

/**
 * Open the directories named by @p cfg. @return 0, or negative errno with a one-line reason
 * naming the option in @p err.
 */
int site_open(struct site *site, const struct config *cfg, char *err, size_t errlen);
void site_close(struct site *site);

/** Answer a request for the website over HTTPS (any mode). */
void site_handle(struct http_exchange *ex);

/** Answer a request on the plain-HTTP listener: ACME challenge file, or 301 to https. */
void site_handle_plain(struct http_exchange *ex);

#endif
