/* dohgate: start-up order, signals, shutdown. Everything else lives in the core library. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <fcntl.h>
#include <event2/thread.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/resource.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "dohgate/acl.h"
#include "dohgate/cache.h"
#include "dohgate/clients.h"
#include "dohgate/site.h"
#include "dohgate/config.h"
#include "dohgate/log.h"
#include "dohgate/acme.h"
#include "dohgate/metrics.h"
#include "dohgate/privs.h"
#include "dohgate/policy.h"
#include "dohgate/reload.h"
#include "dohgate/sysd.h"
#include "dohgate/tls.h"
#include "dohgate/worker.h"

#define EXIT_CONFIG 2

/* One line per upstream; a warning for each plain-DNS one that leaves the machine: its queries
 * travel in clear text, whatever the client-side leg hides. */
/*
 * DDR (RFC 9462 §4.2): a client that asked _dns.resolver.arpa over plain DNS uses the encrypted
 * endpoint only if its certificate covers the address it asked. Say so at start when it does
 * not, since nothing fails visibly: devices just stay on plain DNS.
 */
/* A plain-DNS listener open to public sources without a rate limit can be used to reflect
 * and amplify traffic at a forged source: say so once at start. */
static void warn_open_dns(const struct config *cfg)
{
    if (cfg->n_dns_listen == 0 || cfg->dns_rate_limit > 0)
        return;
    for (size_t i = 0; i < cfg->n_dns_allow; i++) {
        if (!acl_cidr_is_private(cfg->dns_allow[i])) {
            log_warn("dns-allow %s admits public addresses and dns-rate-limit is 0: forged "
                     "sources can use this server to reflect UDP answers; set dns-rate-limit "
                     "(e.g. 20)",
                     cfg->dns_allow[i]);
            return;
        }
    }
}

/* The clear-text listener carries DoH without encryption: meant for a proxy on the same machine
 * or a private network. Say so once at start when it is bound where anybody could reach it (a
 * wildcard or a public address). */
static void warn_open_cleartext(const struct config *cfg)
{
    for (size_t i = 0; i < cfg->n_plain_listen; i++) {
        const struct dg_addr *a = &cfg->plain_listen[i];
        char ip[INET6_ADDRSTRLEN];
        bool private = !config_addr_is_any(a) &&
                       inet_ntop(a->ss.ss_family, config_addr_bytes(a), ip, sizeof(ip)) &&
                       acl_cidr_is_private(ip);
        if (!private)
            log_warn("plain-listen %s: a clear-text DoH listener is exposed beyond loopback and "
                     "private networks (queries and answers travel unencrypted); bind it to "
                     "127.0.0.1 or a private address behind the TLS-terminating proxy",
                     a->text);
    }
}

static void warn_ddr_coverage(const struct config *cfg, struct tls_store *tls)
{
    if (!cfg->ddr || (cfg->n_listen == 0 && cfg->n_dot_listen == 0))
        return;
    for (size_t i = 0; i < cfg->n_dns_listen; i++) {
        const struct dg_addr *a = &cfg->dns_listen[i];
        char ip[INET6_ADDRSTRLEN];
        if (config_addr_is_any(a) || /* a wildcard: the addresses are not known here */
            !inet_ntop(a->ss.ss_family, config_addr_bytes(a), ip, sizeof(ip)))
            continue;
        if (!tls_store_covers_ip(tls, ip))
            log_warn("ddr: the certificate does not cover %s (no IP SAN): clients that ask "
                     "_dns.resolver.arpa at %s will not switch to DoH or DoT (RFC 9462 "
                     "verified discovery); add the address to the certificate",
                     ip, a->text);
    }
}

/* One line per listening address, saying what it serves. */
static void log_listener(const struct config *cfg, enum dg_listener kind, bool udp,
                         const char *where, const char *how, const char *site_desc)
{
    if (udp)
        log_info("listening on %s%s (plain DNS over UDP)", where, how);
    else if (kind == DG_LISTENER_PLAIN)
        log_info("listening on %s%s (plain HTTP: redirects to https%s)", where, how,
                 cfg->acme_webroot ? ", ACME challenges" : "");
    else if (kind == DG_LISTENER_DOT)
        log_info("listening on %s%s (DNS over TLS)", where, how);
    else if (kind == DG_LISTENER_CLEARTEXT)
        log_info("listening on %s%s (clear text for a TLS-terminating proxy; HTTP/1.1 and h2c), "
                 "DoH path %s; site: %s; X-Forwarded-For/Forwarded %s",
                 where, how, cfg->doh_path[0], site_desc,
                 cfg->n_trusted_proxy ? "read from trusted-proxy peers"
                                      : "ignored (no trusted-proxy)");
    else if (kind == DG_LISTENER_DNS_TCP)
        log_info("listening on %s%s (plain DNS over TCP%s)", where, how,
                 cfg->n_dns_allow ? "" : "; answering loopback and private networks only");
    else
        log_info("listening on %s%s (TLS; HTTP/2 and HTTP/1.1), DoH path %s; site: %s", where, how,
                 cfg->doh_path[0], site_desc);
}

static void log_upstreams(const struct config *cfg)
{
    for (size_t i = 0; i < cfg->n_upstream; i++) {
        const struct dg_upstream *up = &cfg->upstream[i];
        static const char *const how[] = {"plain DNS", "DNS over TLS", "DNS over HTTPS"};
        log_info("upstream %s (%s)", up->text, how[up->proto]);
        if (up->proto == DG_UP_DNS && !config_addr_is_loopback(&up->addr))
            log_warn("upstream %s is plain DNS to another machine: queries to it are not "
                     "encrypted (use tls:// or https:// for privacy)",
                     up->text);
    }
}

static void usage(FILE *out)
{
    fprintf(
        out,
        "usage: dohgate [-c FILE] [--check-config] [--NAME VALUE ...]\n"
        "       dohgate --version | --help\n\n"
        "DNS-over-HTTPS (RFC 8484) server. Without a config file and certificate it listens on\n"
        "[::]:443 with an ephemeral self-signed certificate and forwards to the nameservers\n"
        "of /etc/resolv.conf.\n\n"
        "  -c, --config FILE   read FILE (`name value` lines); flags override it\n"
        "  --check-config      validate the configuration, print it, and exit\n"
        "  --version           print the version and exit\n"
        "  --help, -h          this text\n\n"
        "Every configuration option is also a flag (--name value):\n");
    config_print_help(out);
}

static unsigned cpu_count(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (unsigned)n : 1;
}

static void log_cert(const struct tls_cert_info *ci, void *arg)
{
    time_t now = time(NULL);
    struct tm tm;
    char when[32] = "?";
    if (gmtime_r(&ci->not_after, &tm))
        strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S UTC", &tm);
    long days = (long)((ci->not_after - now) / 86400);
    bool expired = ci->not_after <= now;
    char staple[64] = "";
    if (ci->ocsp_next_update && gmtime_r(&ci->ocsp_next_update, &tm))
        strftime(staple, sizeof(staple), "; OCSP stapled, next update %Y-%m-%d %H:%M UTC", &tm);
    /* An expired certificate is served (clients decide), but said loudly. */
    dg_log(expired ? DG_LOG_ERR : DG_LOG_INFO,
           "%s %s: %s, names %s, %s, serial %s, expires %s (%s %ld days)%s", (const char *)arg,
           ci->file, ci->subject, ci->names, ci->key_type, ci->serial, when,
           expired ? "EXPIRED" : "in", expired ? -days : days, staple);
}

/* The ACME client's thread, a new pair in place: the main thread's sigwait takes it as
 * SIGUSR2 and reloads the certificates (signals are blocked in every other thread). */
static void acme_installed(void *arg)
{
    (void)arg;
    kill(getpid(), SIGUSR2);
}

static void report_reload(struct tls_store *tls, enum tls_reload r, const char *err)
{
    if (r == TLS_RELOAD_DONE) {
        log_info("certificates reloaded; new connections use them, open ones keep theirs");
        tls_store_each_cert(tls, log_cert, "certificate");
    } else if (r == TLS_RELOAD_FAILED) {
        log_err("certificate reload failed, still serving the previous certificates: %s", err);
    }
}

/* Each connection and each upstream try is a descriptor: Debian's soft limit of 1024 would
 * cap dohgate far below max-connections. Raise the soft limit up to the hard one, and say so
 * when even that is short (then accept() fails with EMFILE and new connections wait). */
static void raise_fd_limit(uint64_t fds)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    uint64_t want = fds + fds / 8 + 256;
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < want) {
        rlim_t old = rl.rlim_cur;
        rl.rlim_cur =
            rl.rlim_max == RLIM_INFINITY || rl.rlim_max > want ? (rlim_t)want : rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != old)
            log_info("open-file limit raised from %llu to %llu", (unsigned long long)old,
                     (unsigned long long)rl.rlim_cur);
    }
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < want)
        log_warn("the open-file limit (%llu) is below what workers x (max-connections + "
                 "max-upstream-queries) need (%llu): raise it (systemd: LimitNOFILE=; shell: "
                 "ulimit -Hn)",
                 (unsigned long long)rl.rlim_cur, (unsigned long long)want);
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/*
 * SIGHUP: the whole configuration is read and checked again (reload.h); a configuration that
 * fails any check is refused with one error line and the running one stays; a valid one goes
 * to every worker, which uses it for the connections it accepts from then on.
 * @return the snapshot now current (its reference replaces @p cur's).
 */
/* What the policy step holds, when the configuration asks for one. */
static void log_policy(const struct config *cfg, const struct policy *p)
{
    if (!p || !(cfg->n_hosts_file || cfg->n_local_record || cfg->n_local_zone || cfg->n_blocklist ||
                cfg->n_allowlist || cfg->n_forward_zone))
        return;
    char d[300];
    policy_describe(p, d, sizeof(d));
    log_info("policy: %s", d);
    for (size_t i = 0; i < cfg->n_forward_zone; i++)
        log_info("forward-zone %s: %zu upstream%s, first %s", cfg->fwd[i].text, cfg->fwd[i].n_up,
                 cfg->fwd[i].n_up == 1 ? "" : "s", cfg->fwd[i].up[0].text);
}

/* Does the policy have files to watch? */
static bool policy_watched(const struct config *cfg)
{
    return cfg->cert_check_interval_s &&
           (cfg->n_hosts_file || cfg->n_blocklist || cfg->n_allowlist);
}

/* The policy's files, every cert-check-interval (as the certificates): one line per reload. */
static void poll_policy(struct policy_slot *slot, const struct config *cfg, uint64_t *next)
{
    uint64_t now = now_ms();
    if (!slot || !policy_watched(cfg) || now < *next)
        return;
    *next = now + (uint64_t)cfg->cert_check_interval_s * 1000u;
    char msg[1200];
    int r = policy_slot_poll(slot, cfg, msg, sizeof(msg));
    if (r > 0)
        log_info("policy files reloaded: %s", msg);
    else if (r < 0)
        log_err("policy files not reloaded, the previous data stays: %s", msg);
}

static struct snapshot *reload_config(struct snapshot *cur, const char *conf_file, int argc,
                                      char **argv, struct worker **workers, unsigned nworkers)
{
    char err[1200];
    struct reload_plan plan;
    if (reload_prepare(cur, conf_file, argc, argv, nworkers, &plan, err, sizeof(err)) != 0) {
        log_err("reload refused: %s; the running configuration stays", err);
        return cur;
    }
    if (plan.nrestart > 0)
        log_warn("reload: %s cannot change without a restart; the running value%s stay%s",
                 plan.restart, plan.nrestart == 1 ? "" : "s", plan.nrestart == 1 ? "s" : "");
    bool cache_resized = plan.snap->cfg->cache_size != cur->cfg->cache_size;
    reload_commit(cur, &plan);
    struct snapshot *s = snapshot_ref(plan.snap);
    const struct config *cfg = s->cfg;
    for (unsigned w = 0; w < nworkers; w++)
        worker_set_snapshot(workers[w], s);
    log_info("configuration reloaded%s%s: new connections use it, open ones finish on the "
             "previous one%s",
             conf_file ? " from " : "", conf_file ? conf_file : "",
             plan.cache_shared ? ""
             : cache_resized   ? "; cache-size changed: a new, empty cache"
                               : "; the forward zones changed: a new, empty cache");
    warn_ddr_coverage(cfg, s->tls);
    log_upstreams(cfg);
    if (s->policy_slot)
        log_policy(cfg, policy_slot_peek(s->policy_slot));
    if (cfg->n_cert || cfg->n_ticket_key_file || cfg->n_acme_domain)
        report_reload(s->tls, TLS_RELOAD_DONE, NULL);
    else
        log_info("no certificate files to reload (self-signed certificate)");
    if (plan.fingerprint[0])
        log_warn("no certificate configured any more: EPHEMERAL SELF-SIGNED certificate, "
                 "SHA-256 fingerprint %s",
                 plan.fingerprint);
    reload_plan_free(&plan);
    snapshot_unref(cur);
    return s;
}

int main(int argc, char **argv)
{
    const char *conf_file = NULL;
    int check_only = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--version") == 0 || strcmp(argv[i], "-V") == 0) {
            printf("dohgate %s (%s, nghttp2, ldns, libevent)\n", DOHGATE_VERSION,
                   OpenSSL_version(OPENSSL_VERSION));
            return 0;
        }
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        }
        if (strcmp(argv[i], "--check-config") == 0)
            check_only = 1;
        if (strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0) {
            if (i + 1 >= argc) {
                fprintf(stderr, "dohgate: %s needs a file name\n", argv[i]);
                return EXIT_CONFIG;
            }
            conf_file = argv[++i];
        } else if (strncmp(argv[i], "--config=", 9) == 0 ||
                   (strncmp(argv[i], "-c", 2) == 0 && argv[i][2] != '\0')) {
            /* --config=FILE and -cFILE: config_load_args() skips them as this loop's */
            const char *f = argv[i][1] == 'c' ? argv[i] + 2 : argv[i] + 9;
            if (*f == '\0') {
                fprintf(stderr, "dohgate: %s needs a file name\n", argv[i]);
                return EXIT_CONFIG;
            }
            conf_file = f;
        }
    }

    char err[1024] = "";
    struct config *cfg = config_new();
    if (!cfg) {
        fprintf(stderr, "dohgate: out of memory\n");
        return 1;
    }
    if ((conf_file && config_load_file(cfg, conf_file, err, sizeof(err)) != 0) ||
        config_load_args(cfg, argc, argv, err, sizeof(err)) != 0 ||
        config_finish(cfg, err, sizeof(err)) != 0) {
        fprintf(stderr, "dohgate: %s\n", err);
        config_free(cfg);
        return EXIT_CONFIG;
    }
    if (check_only) {
        /* the files of the policy step are read too: a missing or broken list fails here */
        struct policy *pol = policy_build(cfg, err, sizeof(err));
        if (!pol) {
            fprintf(stderr, "dohgate: %s\n", err);
            config_free(cfg);
            return EXIT_CONFIG;
        }
        policy_unref(pol);
        config_dump(cfg, stdout);
        fprintf(stderr, "dohgate: configuration OK\n");
        config_free(cfg);
        return 0;
    }
    dg_log_set_level((enum dg_log_level)cfg->log_level);
    if (cfg->log_target == LOG_TARGET_SYSLOG)
        dg_log_use_syslog();

    /* Signals are taken by sigwait() in this thread only; workers never see them. A write to a
     * reset socket must be an error return, not a process kill. */
    signal(SIGPIPE, SIG_IGN);
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGHUP);
    sigaddset(&sigs, SIGUSR1);
    sigaddset(&sigs, SIGUSR2); /* certificates only (the ACME client's "installed") */
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    if (evthread_use_pthreads() != 0) {
        log_err("libevent threading support unavailable");
        config_free(cfg);
        return 1;
    }

    char fp[128];
    struct tls_store *tls = tls_store_new(cfg, fp, err, sizeof(err));
    if (!tls) {
        log_err("TLS: %s", err);
        config_free(cfg);
        return 1;
    }

    unsigned nworkers = cfg->workers ? cfg->workers : cpu_count();
    /* a descriptor per connection and per upstream try in flight (a UDP socket each) */
    raise_fd_limit((uint64_t)nworkers * (cfg->max_connections + cfg->max_upstream_queries));
    struct worker **workers = calloc(nworkers, sizeof(*workers));
    int rc = 1;
    unsigned started = 0;
    struct metrics *metrics = NULL;
    struct acme *acme = NULL;
    struct policy_slot *pslot = NULL;
    struct snapshot *snap = snapshot_new();
    if (!snap) {
        log_err("out of memory");
        goto out;
    }
    snap->tls = tls;
    if (snapshot_fill(snap, cfg, NULL, nworkers, err, sizeof(err)) != NULL) {
        log_err("%s", err);
        goto out;
    }
    struct policy *pol = policy_build(cfg, err, sizeof(err));
    if (!pol) {
        log_err("%s", err);
        goto out;
    }
    if (!(pslot = policy_slot_new(pol))) {
        policy_unref(pol);
        log_err("out of memory");
        goto out;
    }
    snap->policy_slot = pslot;
    log_policy(cfg, pol);
    struct site *site = &snap->site;
    struct sysd_sockets act;
    int nact = sysd_listen_fds(&act, err, sizeof(err));
    if (nact < 0) {
        log_err("%s", err);
        goto out;
    }
    if (!workers)
        goto out;
    for (size_t i = 0; nact > 0 && i < act.n; i++) {
        if (act.kind[i] == DG_LISTENER_TLS && !act.udp[i]) {
            site->https_port = (unsigned)atoi(strrchr(act.text[i], ':') + 1);
            break;
        }
    }
    /* Counters exist only when someone can read them: no cost otherwise. */
    if (cfg->n_metrics_listen > 0 && !(metrics = metrics_new(nworkers, cfg, snap->cache->p, tls))) {
        log_err("out of memory for the metrics");
        goto out;
    }
    snap->metrics = metrics;
    for (unsigned w = 0; w < nworkers; w++) {
        struct worker_socket socks[7 * DG_CONFIG_MAX_LIST];
        size_t n = 0;
        /* Socket activation: every worker gets its own descriptor of each socket (they share
         * the accept queue), and the listen options are not used. */
        for (size_t i = 0; nact > 0 && i < act.n; i++, n++) {
            socks[n] =
                (struct worker_socket){.kind = act.kind[i], .udp = act.udp[i], .inherited = true};
            if ((socks[n].fd = fcntl(act.fd[i], F_DUPFD_CLOEXEC, 3)) < 0) {
                log_err("dup of a systemd socket: %s", strerror(errno));
                goto fail_socks;
            }
        }
        /* Otherwise each worker binds its own SO_REUSEPORT sockets: the kernel spreads
         * connections between them. */
        const struct {
            const struct dg_addr *addrs;
            size_t n;
            enum dg_listener kind;
        } lists[] = {
            {cfg->listen, cfg->n_listen, DG_LISTENER_TLS},
            {cfg->http_listen, cfg->n_http_listen, DG_LISTENER_PLAIN},
            {cfg->dot_listen, cfg->n_dot_listen, DG_LISTENER_DOT},
            {cfg->dns_listen, cfg->n_dns_listen, DG_LISTENER_DNS_TCP},
            {cfg->plain_listen, cfg->n_plain_listen, DG_LISTENER_CLEARTEXT},
        };
        for (size_t l = 0; nact == 0 && l < sizeof(lists) / sizeof(lists[0]); l++) {
            for (size_t i = 0; i < lists[l].n; i++, n++) {
                socks[n] = (struct worker_socket){.kind = lists[l].kind};
                if ((socks[n].fd = worker_listen_socket(&lists[l].addrs[i], err, sizeof(err))) <
                    0) {
                    log_err("%s", err);
                    goto fail_socks;
                }
            }
        }
        /* The UDP side of dns-listen: one SO_REUSEPORT socket per worker too (the kernel
         * spreads sources between them). */
        for (size_t i = 0; nact == 0 && i < cfg->n_dns_listen; i++, n++) {
            socks[n] = (struct worker_socket){.kind = DG_LISTENER_DNS_TCP, .udp = true};
            if ((socks[n].fd = worker_udp_socket(&cfg->dns_listen[i], err, sizeof(err))) < 0) {
                log_err("%s", err);
                goto fail_socks;
            }
        }
        /* The metrics listeners belong to worker 0 alone: scrapes are rare and small. */
        for (size_t i = 0; w == 0 && i < cfg->n_metrics_listen; i++, n++) {
            socks[n] = (struct worker_socket){.kind = DG_LISTENER_METRICS};
            if ((socks[n].fd = worker_listen_socket(&cfg->metrics_listen[i], err, sizeof(err))) <
                0) {
                log_err("metrics-listen: %s", err);
                goto fail_socks;
            }
        }
        workers[w] = worker_new(w, snap, socks, n);
        if (!workers[w])
            goto out;
        continue;
    fail_socks:
        while (n > 0)
            close(socks[--n].fd);
        goto out;
    }
    /* Everything that needs root is done: ports bound, files opened. */
    if (cfg->user) {
        if (privs_drop(cfg->user, cfg->group, err, sizeof(err)) != 0) {
            log_err("%s", err);
            goto out;
        }
        log_info("running as user %s (uid %u, gid %u)", cfg->user, (unsigned)getuid(),
                 (unsigned)getgid());
        /* Reloads read the files as this user: say now, not at the first renewal. */
        for (size_t i = 0; i < 2 * cfg->n_cert + cfg->n_ticket_key_file; i++) {
            const char *f = i < cfg->n_cert       ? cfg->cert_file[i]
                            : i < 2 * cfg->n_cert ? cfg->key_file[i - cfg->n_cert]
                                                  : cfg->ticket_key_file[i - 2 * cfg->n_cert];
            if (access(f, R_OK) != 0)
                log_warn("%s is not readable by user %s (%s): reloads will fail; make it "
                         "readable by that user or group (see contrib/dohgate-cert-hook)",
                         f, cfg->user, strerror(errno));
        }
    } else if (geteuid() == 0) {
        log_warn("running as root: set 'user' (e.g. user dohgate) to drop privileges after "
                 "binding the ports");
    }
    if (privs_drop_caps(err, sizeof(err)) != 0) {
        log_err("%s", err);
        goto out;
    }
    for (; started < nworkers; started++) {
        if (worker_start(workers[started]) != 0) {
            log_err("cannot start worker thread %u", started);
            goto stop;
        }
    }
    /* After the privileges are dropped: the state dir and its files are the run user's. */
    if (cfg->n_acme_domain > 0) {
        if (!(acme = acme_start(cfg, acme_installed, NULL, err, sizeof(err)))) {
            log_err("ACME: %s", err);
            goto stop;
        }
        if (metrics)
            atomic_store_explicit(&metrics->acme, acme, memory_order_release);
    }

    const char *site_desc = cfg->site_root      ? cfg->site_root
                            : cfg->site_backend ? cfg->site_backend
                                                : "built-in landing page";
    if (nact > 0) {
        for (size_t i = 0; i < act.n; i++)
            log_listener(cfg, act.kind[i], act.udp[i], act.text[i], " from systemd", site_desc);
    } else {
        for (size_t i = 0; i < cfg->n_listen; i++)
            log_listener(cfg, DG_LISTENER_TLS, false, cfg->listen[i].text, "", site_desc);
        for (size_t i = 0; i < cfg->n_http_listen; i++)
            log_listener(cfg, DG_LISTENER_PLAIN, false, cfg->http_listen[i].text, "", site_desc);
        for (size_t i = 0; i < cfg->n_dot_listen; i++)
            log_listener(cfg, DG_LISTENER_DOT, false, cfg->dot_listen[i].text, "", site_desc);
        for (size_t i = 0; i < cfg->n_dns_listen; i++)
            log_listener(cfg, DG_LISTENER_DNS_TCP, false, cfg->dns_listen[i].text, "", site_desc);
        for (size_t i = 0; i < cfg->n_dns_listen; i++)
            log_listener(cfg, DG_LISTENER_DNS_TCP, true, cfg->dns_listen[i].text, "", site_desc);
        for (size_t i = 0; i < cfg->n_plain_listen; i++)
            log_listener(cfg, DG_LISTENER_CLEARTEXT, false, cfg->plain_listen[i].text, "",
                         site_desc);
    }
    if (nact > 0) {
        for (size_t i = 0; i < act.n; i++)
            close(act.fd[i]); /* the workers hold their own copies */
        log_info("socket activation: %zu socket%s from systemd; the listen options are not used",
                 act.n, act.n == 1 ? "" : "s");
    }
    for (size_t i = 0; i < cfg->n_metrics_listen; i++)
        log_info("listening on %s (plain HTTP: Prometheus /metrics, /healthz)",
                 cfg->metrics_listen[i].text);
    warn_ddr_coverage(cfg, tls);
    warn_open_dns(cfg);
    warn_open_cleartext(cfg);
    log_upstreams(cfg);
    log_info("%u worker%s", nworkers, nworkers == 1 ? "" : "s");
    tls_store_each_cert(tls, log_cert, "certificate");
    if (fp[0]) {
        unsigned port = site->https_port;
        char portpart[16] = "";
        if (port != 443)
            snprintf(portpart, sizeof(portpart), ":%u", port);
        log_warn("no certificate configured: using an EPHEMERAL SELF-SIGNED certificate for '%s'; "
                 "browsers will not trust it. Give --cert and --key for real use.",
                 cfg->server_name);
        log_warn("certificate SHA-256 fingerprint %s", fp);
        log_warn("DoH URL: https://%s%s%s", cfg->server_name, portpart, cfg->doh_path[0]);
    }

    sysd_notify("READY=1");

    /* The main thread waits for signals, and between them runs the TLS store's schedule (file
     * checks, ticket-key rotation), which is kept on absolute times: a stream of signals does
     * not postpone it. */
    uint64_t policy_next = 0;
    bool ticking = tls_store_needs_tick(tls) || policy_watched(snap->cfg);
    for (;;) {
        int sig;
        if (ticking) {
            report_reload(tls, tls_store_tick(tls, now_ms(), err, sizeof(err)), err);
            poll_policy(pslot, snap->cfg, &policy_next);
            struct timespec second = {.tv_sec = 1};
            sig = sigtimedwait(&sigs, NULL, &second);
        } else {
            sig = sigwaitinfo(&sigs, NULL);
        }
        if (sig < 0)
            continue; /* the second passed, or EINTR */
        if (sig == SIGTERM || sig == SIGINT) {
            sysd_notify("STOPPING=1");
            log_info("signal %d: stopping (up to %u s for open requests)", sig,
                     snap->cfg->shutdown_timeout_s);
            break;
        }
        if (sig == SIGHUP) {
            /* The whole configuration, certificates and ticket keys included. */
            sysd_notify("RELOADING=1");
            snap = reload_config(snap, conf_file, argc, argv, workers, started);
            ticking = tls_store_needs_tick(tls) || policy_watched(snap->cfg);
            sysd_notify("READY=1");
        }
        if (sig == SIGUSR2) {
            /* The certificate files only, now (the ACME client sends it when it has put a new
             * pair in place; an operator may too): the same load as the file check's. */
            report_reload(tls, tls_store_reload(tls, err, sizeof(err)), err);
            continue;
        }
        if (sig == SIGUSR1) {
            if (snap->cfg->cache_size) {
                struct cache_stats cs;
                cache_get_stats(snap->cache->p, &cs);
                log_info("cache: %llu entries, %llu bytes of %zu; hits %llu, stale hits %llu, "
                         "misses %llu, inserts %llu, evictions %llu",
                         (unsigned long long)cs.entries, (unsigned long long)cs.bytes,
                         snap->cfg->cache_size, (unsigned long long)cs.hits,
                         (unsigned long long)cs.stale_hits, (unsigned long long)cs.misses,
                         (unsigned long long)cs.inserts, (unsigned long long)cs.evictions);
            }
            for (unsigned w = 0; w < started; w++)
                worker_log_stats(workers[w]);
        }
    }
    rc = 0;
stop:
    for (unsigned w = 0; w < started; w++)
        worker_stop(workers[w], snap->cfg->shutdown_timeout_s * 1000u);
    for (unsigned w = 0; w < started; w++)
        worker_join(workers[w]);
out:
    /* After the workers: a scrape on worker 0 reads the client's status until its loop ends.
     * Meanwhile it may still install a certificate; its SIGUSR2 then stays pending, unread. */
    acme_stop(acme);
    if (workers) {
        for (unsigned w = 0; w < nworkers; w++)
            worker_free(workers[w]);
        free(workers);
    }
    metrics_free(metrics);
    snapshot_unref(snap);    /* the last reference: the workers have dropped theirs */
    policy_slot_free(pslot); /* after every view released its policy */
    tls_store_free(tls);
    config_free(cfg);
    if (rc == 0)
        log_info("stopped");
    return rc;
}
