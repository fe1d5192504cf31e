/**
 * @file landing.h
 * The built-in landing page: an HTML page that tells visitors the server's DoH URL and how to
 * set it up in Firefox, Chrome/Edge, iOS/macOS, Windows 11, curl and kdig (and, when those
 * listeners exist, Android's Private DNS over DoT and the plain-DNS address for a router's
 * DHCP settings), and the Apple
 * configuration profile (.mobileconfig, an XML property list with one
 * com.apple.dnsSettings.managed payload) that the page links to. The router serves both; this
 * module only produces the bytes, so it does no I/O and keeps no state.
 *
 * Content. The page is self-contained: inline CSS, no script, no image, no font, no link to any
 * other origin; the only URLs in it are the server's own DoH URL (as text), the relative link
 * to the profile, and the example target of the curl command line. Every value taken from
 * struct landing_info is HTML-escaped (& < > " ') in the page and XML-escaped in the profile.
 *
 * Profile identity. The two PayloadUUIDs are RFC 4122 version-5 UUIDs (SHA-1, URL namespace)
 * of the DoH URL with a different prefix each, so the same server name, port and path always
 * give the same profile: installing it again replaces the old one instead of adding a second
 * one. PayloadIdentifiers are derived from the outer UUID. The profile is not signed (Apple
 * devices show it as "Unverified").
 *
 * Input rules. server_name is a DNS name (A-labels: IDNs must be given in punycode) or an IP
 * literal; an IPv6 literal may be given with or without brackets and is bracketed in URLs.
 * server_name and both paths must consist of visible ASCII (0x21-0x7e): anything else could
 * not be written into a well-formed XML profile or a URL. Both paths must start with "/";
 * profile_path must not start with "//" or "/\" (a browser would read that as a link to another
 * host). Inputs that break these rules give -EINVAL.
 *
 * Ownership: the functions only read @p li during the call and keep no pointer into it; the
 * output buffer stays the caller's. Thread-safety: no state, safe to call concurrently.
 */
#ifndef DOHGATE_LANDING_H
#define DOHGATE_LANDING_H

#include <stddef.h>

#include "dohgate/util.h"

/** content-type of landing_html() output. */
#define LANDING_HTML_CONTENT_TYPE "text/html; charset=utf-8"
/** content-type that makes Safari offer to install a landing_mobileconfig() profile. */
#define LANDING_MOBILECONFIG_CONTENT_TYPE "application/x-apple-aspen-config"

/** What the page and the profile describe. All strings NUL-terminated, none may be NULL. */
struct landing_info {
    const char *server_name;  /**< e.g. "doh.example.net" (DNS name or IP literal) */
    unsigned port;            /**< HTTPS port (1-65535); omitted from URLs when 443 */
    const char *doh_path;     /**< e.g. "/dns-query" */
    const char *profile_path; /**< URL path of the profile, e.g. "/dohgate.mobileconfig" */
    unsigned dot_port;        /**< DoT listener's port (Android Private DNS), 0: none */
    const char *dns_addr;     /**< plain-DNS address for the network (dns-listen), or NULL */
};

/**
 * Append the HTML landing page (UTF-8) to @p out.
 * @param li   the server; only read during the call
 * @param out  buffer to append to (may already hold data); stays owned by the caller
 * @return 0; -ENOMEM when out of memory; -EINVAL when @p li breaks the input rules (see
 *         above). On failure out->len is what it was before the call (the capacity may have
 *         grown) and nothing is left half-written.
 */
int landing_html(const struct landing_info *li, struct dg_buf *out);

/**
 * Append the .mobileconfig XML property list to @p out.
 * The outer dict is a Configuration payload (PayloadVersion 1) whose PayloadContent holds one
 * com.apple.dnsSettings.managed dict with DNSSettings { DNSProtocol = HTTPS, ServerURL = the
 * DoH URL, and ServerAddresses = [the address] when server_name is an IP literal }.
 * @param li   the server; only read during the call
 * @param out  buffer to append to; stays owned by the caller
 * @return 0; -ENOMEM when out of memory (this includes a failure of the SHA-1 digest, which in
 *         OpenSSL 3 fails only when it cannot allocate); -EINVAL when @p li breaks the input
 *         rules. On failure out->len is unchanged, as for landing_html().
 */
int landing_mobileconfig(const struct landing_info *li, struct dg_buf *out);

/**
 * Format the DoH URL "https://NAME[:PORT]/path" into @p buf (NUL-terminated). The port is left
 * out when it is 443; an IPv6 literal is put in brackets. Nothing is escaped or
 * percent-encoded: the result is for the caller to embed with its own escaping.
 * @param buf  receives the URL; on -ENOSPC it holds "" (when @p len > 0)
 * @param len  size of @p buf including the terminating NUL
 * @return 0; -ENOSPC when the URL and its NUL do not fit in @p len bytes; -EINVAL when @p li
 *         breaks the input rules.
 */
int landing_doh_url(const struct landing_info *li, char *buf, size_t len);

#endif
