/* The policy step: local data, blocklists, per-client policies, and their reloads (policy.h). */
#include "dohgate/policy.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include "dohgate/acl.h"
#include "dohgate/client.h"
#include "dohgate/config.h"
#include "dohgate/dns.h"
#include "dohgate/dnswire.h"
#include "dohgate/lists.h"
#include "dohgate/localdata.h"
#include "dohgate/nameset.h"
#include "dohgate/observer.h"

#define MAX_POLICIES 64
#define NAME_MAX_LEN 33 /* list and policy names: 32 characters and the NUL */

/* What a file looked like when it was read: a change in any of these is a new file (an
 * editor's rename, a copy over it, an append). */
struct file_sig {
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime;
    int err; /* stat()'s errno, 0 when it worked: a vanished file is a change too */
};

struct watched {
    char *path;
    struct file_sig sig;
};

struct client_rule {
    struct acl_entry net;
    int pol;
};

struct id_rule {
    char id[64];
    int pol;
};

struct policy {
    _Atomic unsigned refs;
    struct config *cfg; /* what it was built from (a reference): its forward zones, above all */
    struct localdata *local;
    struct nameset *block; /* value: the mask of the lists that hold the name */
    struct nameset *allow; /* value: 1 */
    size_t n_lists;
    char list_name[POLICY_MAX_LISTS][NAME_MAX_LEN];
    size_t list_names[POLICY_MAX_LISTS]; /* names read from each list */
    size_t skipped;                      /* adblock rules that cannot apply to DNS */
    size_t invalid;                      /* stray lines skipped in the lists */
    char first_invalid[200];             /* "FILE:LINE: why" of the first of them */
    size_t n_pol;
    char pol_name[MAX_POLICIES][NAME_MAX_LEN];
    uint32_t pol_mask[MAX_POLICIES];
    uint32_t default_mask; /* clients no rule names: "default", else every list */
    struct client_rule *nets;
    size_t n_nets;
    struct id_rule *ids;
    size_t n_ids;
    int block_answer;
    uint32_t block_ttl;
    struct watched *files;
    size_t n_files;
};

/* ---- building ------------------------------------------------------------------------------ */

static void sig_of(const char *path, struct file_sig *s)
{
    struct stat st;
    memset(s, 0, sizeof(*s));
    if (stat(path, &st) != 0) {
        s->err = errno ? errno : EIO;
        return;
    }
    s->dev = st.st_dev;
    s->ino = st.st_ino;
    s->size = st.st_size;
    s->mtime = st.st_mtim;
}

static bool sig_equal(const struct file_sig *a, const struct file_sig *b)
{
    return a->err == b->err && a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
           a->mtime.tv_sec == b->mtime.tv_sec && a->mtime.tv_nsec == b->mtime.tv_nsec;
}

/* Remember @p path for the file watch, as it is now (before it is read: a change while it is
 * read is seen by the next poll). */
static int watch(struct policy *p, const char *path)
{
    struct watched *w = realloc(p->files, (p->n_files + 1) * sizeof(*w));
    if (!w)
        return -ENOMEM;
    p->files = w;
    if (!(w[p->n_files].path = strdup(path)))
        return -ENOMEM;
    sig_of(path, &w[p->n_files].sig);
    p->n_files++;
    return 0;
}

/* "line N: message" from lists.c → "FILE:N: message". */
static void file_error(const char *file, const char *lerr, char *err, size_t errlen)
{
    /* cut to fit: the return values are looked at so that the compiler knows it is meant */
    int n = strncmp(lerr, "line ", 5) == 0 ? snprintf(err, errlen, "%s:%s", file, lerr + 5)
                                           : snprintf(err, errlen, "%s: %s", file, lerr);
    if (n < 0 && errlen)
        err[0] = '\0';
}

/* Read @p path whole, watching it. @return 0 or -1 (err set). */
static int read_watched(struct policy *p, const char *path, char **buf, size_t *len, char *err,
                        size_t errlen)
{
    if (watch(p, path) != 0) {
        snprintf(err, errlen, "%s: out of memory", path);
        return -1;
    }
    return lists_read_file(path, POLICY_MAX_FILE, buf, len, err, errlen) == 0 ? 0 : -1;
}

static int on_host(void *arg, int family, const uint8_t *addr, const uint8_t *name, size_t len,
                   bool first)
{
    return localdata_add_host(arg, family, addr, name, len, first);
}

struct list_ctx {
    struct policy *p;
    uint32_t bit; /* 0: an allowlist */
};

static int on_domain(void *arg, const uint8_t *name, size_t len, bool allow)
{
    struct list_ctx *c = arg;
    if (allow || c->bit == 0)
        return nameset_add(c->p->allow, name, len, 1);
    return nameset_add(c->p->block, name, len, c->bit);
}

/* Is @p a (wire) at or below @p b? */
static bool name_under(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
    if (blen > alen)
        return false;
    if (memcmp(a + alen - blen, b, blen) != 0)
        return false;
    if (blen == alen)
        return true;
    /* b must start at a label boundary of a */
    for (size_t i = 0; i < alen - blen; i += (size_t)a[i] + 1) {
        if (a[i] == 0 || a[i] > 63)
            return false;
        if (i + a[i] + 1 == alen - blen)
            return true;
    }
    return false;
}

/* Is a default zone overridden: at or below an explicit local-zone or forward-zone? */
static bool default_overridden(const struct config *cfg, const uint8_t *d, size_t dlen)
{
    for (size_t i = 0; i < cfg->n_forward_zone; i++) {
        if (name_under(d, dlen, cfg->fwd[i].name, cfg->fwd[i].name_len))
            return true;
    }
    for (size_t i = 0; i < cfg->n_local_zone; i++) {
        uint8_t z[DNSWIRE_MAX_NAME];
        size_t zl = dnswire_name_from_text(cfg->local_zone[i], strlen(cfg->local_zone[i]), z);
        if (zl && name_under(d, dlen, z, zl))
            return true;
    }
    return false;
}

static int build_local(struct policy *p, const struct config *cfg, char *err, size_t errlen)
{
    if (!(p->local = localdata_new()))
        goto oom;
    for (size_t i = 0; i < cfg->n_local_record; i++) {
        char why[256] = "";
        int r = localdata_add_rr(p->local, cfg->local_record[i], why, sizeof(why));
        if (r == -ENOMEM)
            goto oom;
        if (r != 0) {
            char where[300];
            config_list_origin(cfg, "local-record", i, where, sizeof(where));
            snprintf(err, errlen, "%s: local-record '%s': %s", where, cfg->local_record[i], why);
            return -1;
        }
    }
    for (size_t i = 0; i < cfg->n_hosts_file; i++) {
        char *buf = NULL, lerr[256] = "";
        size_t len = 0;
        if (read_watched(p, cfg->hosts_file[i], &buf, &len, err, errlen) != 0)
            return -1;
        int r = lists_parse_hosts(buf, len, on_host, p->local, lerr, sizeof(lerr));
        free(buf);
        if (r == -ENOMEM)
            goto oom;
        if (r != 0) {
            file_error(cfg->hosts_file[i], lerr, err, errlen);
            return -1;
        }
    }
    /* Zones: the defaults first, so that an explicit one of the same name replaces it. */
    bool localhost = true;
    for (size_t i = 0; localdata_default_zones[i]; i++) {
        uint8_t d[DNSWIRE_MAX_NAME];
        const char *t = localdata_default_zones[i];
        size_t dl = dnswire_name_from_text(t, strlen(t), d);
        if (!dl)
            continue;
        if (default_overridden(cfg, d, dl)) {
            if (strcmp(t, "localhost") == 0)
                localhost = false;
            continue;
        }
        if (localdata_add_zone(p->local, d, dl, LOCALDATA_STATIC) != 0)
            goto oom;
    }
    if (localhost && localdata_add_localhost(p->local) != 0)
        goto oom;
    for (size_t i = 0; i < cfg->n_local_zone; i++) {
        uint8_t z[DNSWIRE_MAX_NAME];
        size_t zl = dnswire_name_from_text(cfg->local_zone[i], strlen(cfg->local_zone[i]), z);
        if (zl && localdata_add_zone(p->local, z, zl, LOCALDATA_STATIC) != 0)
            goto oom;
    }
    for (size_t i = 0; i < cfg->n_forward_zone; i++) {
        if (localdata_add_zone(p->local, cfg->fwd[i].name, cfg->fwd[i].name_len,
                               LOCALDATA_FORWARD) != 0)
            goto oom;
    }
    if (localdata_finish(p->local) != 0)
        goto oom;
    return 0;
oom:
    snprintf(err, errlen, "local data: out of memory");
    return -1;
}

/* One domain list into the block set (@p bit) or, with bit 0, the allow set. */
static int load_list(struct policy *p, const char *file, uint32_t bit, size_t *names, char *err,
                     size_t errlen)
{
    char *buf = NULL, lerr[256] = "";
    size_t len = 0;
    if (read_watched(p, file, &buf, &len, err, errlen) != 0)
        return -1;
    struct list_ctx c = {p, bit};
    struct list_stats st = {0};
    int r = lists_parse_domains(buf, len, on_domain, &c, &st, lerr, sizeof(lerr));
    free(buf);
    if (r == -ENOMEM) {
        snprintf(err, errlen, "%s: out of memory", file);
        return -1;
    }
    if (r != 0) {
        file_error(file, lerr, err, errlen);
        return -1;
    }
    *names = st.domains;
    p->skipped += st.skipped;
    if (st.invalid && !p->invalid)
        file_error(file, lerr, p->first_invalid, sizeof(p->first_invalid));
    p->invalid += st.invalid;
    return 0;
}

static int build_lists(struct policy *p, const struct config *cfg, char *err, size_t errlen)
{
    /* Sized for the files (a name per ~20 bytes): one table allocation instead of doublings. */
    size_t guess = 0;
    for (size_t i = 0; i < cfg->n_blocklist; i++) {
        char name[NAME_MAX_LEN];
        const char *file;
        config_list_name(cfg->blocklist[i], name, sizeof(name), &file);
        struct stat st;
        if (stat(file, &st) == 0 && st.st_size > 0)
            guess += (size_t)st.st_size / 20;
    }
    p->block = nameset_new(guess ? guess : 16);
    p->allow = nameset_new(16);
    if (!p->block || !p->allow) {
        snprintf(err, errlen, "blocklists: out of memory");
        return -1;
    }
    p->n_lists = cfg->n_blocklist < POLICY_MAX_LISTS ? cfg->n_blocklist : POLICY_MAX_LISTS;
    for (size_t i = 0; i < p->n_lists; i++) {
        const char *file;
        config_list_name(cfg->blocklist[i], p->list_name[i], sizeof(p->list_name[i]), &file);
        if (load_list(p, file, 1u << i, &p->list_names[i], err, errlen) != 0)
            return -1;
    }
    for (size_t i = 0; i < cfg->n_allowlist; i++) {
        size_t n;
        if (load_list(p, cfg->allowlist[i], 0, &n, err, errlen) != 0)
            return -1;
    }
    return 0;
}

static int list_index(const struct policy *p, const char *name, size_t n)
{
    for (size_t i = 0; i < p->n_lists; i++) {
        if (strlen(p->list_name[i]) == n && memcmp(p->list_name[i], name, n) == 0)
            return (int)i;
    }
    return -1;
}

static int policy_index(const struct policy *p, const char *name, size_t n)
{
    for (size_t i = 0; i < p->n_pol; i++) {
        if (strlen(p->pol_name[i]) == n && memcmp(p->pol_name[i], name, n) == 0)
            return (int)i;
    }
    return -1;
}

/* The named policies and who gets them (the names were checked by config_finish()). */
static int build_policies(struct policy *p, const struct config *cfg, char *err, size_t errlen)
{
    p->default_mask = p->n_lists >= 32 ? UINT32_MAX : (1u << p->n_lists) - 1;
    for (size_t i = 0; i < cfg->n_policy && p->n_pol < MAX_POLICIES; i++) {
        const char *s = cfg->policy[i];
        size_t n = strcspn(s, " \t");
        snprintf(p->pol_name[p->n_pol], NAME_MAX_LEN, "%.*s", (int)n, s);
        uint32_t mask = 0;
        for (const char *q = s + n; *q;) {
            q += strspn(q, " \t");
            size_t k = strcspn(q, " \t");
            int li = k ? list_index(p, q, k) : -1;
            if (li >= 0)
                mask |= 1u << li;
            q += k;
        }
        p->pol_mask[p->n_pol] = mask;
        if (strcmp(p->pol_name[p->n_pol], "default") == 0)
            p->default_mask = mask;
        p->n_pol++;
    }
    if (cfg->n_policy_client) {
        p->nets = calloc(cfg->n_policy_client, sizeof(*p->nets));
        p->ids = calloc(cfg->n_policy_client, sizeof(*p->ids));
        if (!p->nets || !p->ids) {
            snprintf(err, errlen, "policy-client: out of memory");
            return -1;
        }
    }
    for (size_t i = 0; i < cfg->n_policy_client; i++) {
        const char *s = cfg->policy_client[i];
        size_t n = strcspn(s, " \t");
        const char *pn = s + n + strspn(s + n, " \t");
        int pol = policy_index(p, pn, strcspn(pn, " \t"));
        char who[128];
        snprintf(who, sizeof(who), "%.*s", (int)n, s);
        if (pol < 0)
            continue; /* config_finish() refused that already */
        if (acl_parse(who, true, &p->nets[p->n_nets].net) == 0) {
            p->nets[p->n_nets++].pol = pol;
        } else {
            /* an ID: at most 63 characters (validated) */
            snprintf(p->ids[p->n_ids].id, sizeof(p->ids[p->n_ids].id), "%.63s", who);
            p->ids[p->n_ids++].pol = pol;
        }
    }
    return 0;
}

struct policy *policy_build(const struct config *cfg, char *err, size_t errlen)
{
    struct policy *p = calloc(1, sizeof(*p));
    if (!p) {
        snprintf(err, errlen, "policy: out of memory");
        return NULL;
    }
    atomic_init(&p->refs, 1);
    /* the configuration is immutable and reference counted: holding it costs nothing */
    p->cfg = config_ref((struct config *)cfg);
    p->block_answer = cfg->block_answer;
    p->block_ttl = cfg->block_ttl;
    if (build_local(p, cfg, err, errlen) != 0 || build_lists(p, cfg, err, errlen) != 0 ||
        build_policies(p, cfg, err, errlen) != 0) {
        policy_unref(p);
        return NULL;
    }
    return p;
}

struct policy *policy_ref(struct policy *p)
{
    atomic_fetch_add_explicit(&p->refs, 1, memory_order_relaxed);
    return p;
}

void policy_unref(struct policy *p)
{
    if (!p || atomic_fetch_sub_explicit(&p->refs, 1, memory_order_acq_rel) != 1)
        return;
    config_unref(p->cfg);
    localdata_free(p->local);
    nameset_free(p->block);
    nameset_free(p->allow);
    free(p->nets);
    free(p->ids);
    for (size_t i = 0; i < p->n_files; i++)
        free(p->files[i].path);
    free(p->files);
    free(p);
}

void policy_describe(const struct policy *p, char *out, size_t outlen)
{
    size_t mem = nameset_memory(p->block) + nameset_memory(p->allow);
    int n = snprintf(out, outlen,
                     "%zu local records; %zu blocked names in %zu list%s (%.1f MiB), %zu allowed, "
                     "%zu adblock rules skipped",
                     localdata_records(p->local), nameset_count(p->block), p->n_lists,
                     p->n_lists == 1 ? "" : "s", (double)mem / (1024.0 * 1024.0),
                     nameset_count(p->allow), p->skipped);
    if (p->invalid && n > 0 && (size_t)n < outlen)
        snprintf(out + n, outlen - (size_t)n, "; %zu stray line%s skipped, the first %s",
                 p->invalid, p->invalid == 1 ? "" : "s", p->first_invalid);
}

/* ---- answering ----------------------------------------------------------------------------- */

int policy_find_id(const struct policy *p, const char *id, size_t len)
{
    for (size_t i = 0; i < p->n_ids; i++) {
        if (strlen(p->ids[i].id) == len && memcmp(p->ids[i].id, id, len) == 0)
            return p->ids[i].pol;
    }
    return -1;
}

/* The lists that apply to this client: its ID's policy, else its network's (the longest), else
 * the default. */
static uint32_t client_mask(const struct policy *p, const struct client_id *client, const char *id,
                            size_t id_len)
{
    if (id && id_len) {
        int pol = policy_find_id(p, id, id_len);
        if (pol >= 0)
            return p->pol_mask[pol];
    }
    if (client && client->len && p->n_nets) {
        int best = -1, bits = -1;
        for (size_t i = 0; i < p->n_nets; i++) {
            if (p->nets[i].net.bits > bits && acl_entry_holds(&p->nets[i].net, client)) {
                best = p->nets[i].pol;
                bits = p->nets[i].net.bits;
            }
        }
        if (best >= 0)
            return p->pol_mask[best];
    }
    return p->default_mask;
}

/* The answer for a name blocked by list @p li (its match at @p off in the question name). */
static int block_answer(const struct policy *p, const uint8_t *q, size_t qlen, size_t off,
                        size_t nlen, int li, struct dg_buf *ans, uint32_t *ttl)
{
    char text[80];
    snprintf(text, sizeof(text), "blocked by list %s", li >= 0 ? p->list_name[li] : "?");
    uint16_t qtype = dns_qtype(q, qlen);
    *ttl = p->block_ttl;
    static const uint8_t zero[16] = {0};
    struct dns_rr_out rr = {.rclass = 1, .ttl = p->block_ttl, .rdata = zero};
    switch (p->block_answer) {
    case BLOCK_ANSWER_REFUSED:
        *ttl = 0;
        return dns_make_answer(q, qlen, DNS_RCODE_REFUSED, false, NULL, 0, NULL, 0, DNS_EDE_BLOCKED,
                               text, ans);
    case BLOCK_ANSWER_NXDOMAIN: {
        /* A SOA at the listed name, so that the client caches the NXDOMAIN for block-ttl
         * (RFC 2308): "localhost. nobody.invalid. 1 3600 1200 604800 <block-ttl>". */
        static const uint8_t mname[] = {9, 'l', 'o', 'c', 'a', 'l', 'h', 'o', 's', 't', 0};
        static const uint8_t rname[] = {6,   'n', 'o', 'b', 'o', 'd', 'y', 7,
                                        'i', 'n', 'v', 'a', 'l', 'i', 'd', 0};
        uint8_t soa[sizeof(mname) + sizeof(rname) + 20];
        size_t o = 0;
        memcpy(soa + o, mname, sizeof(mname));
        o += sizeof(mname);
        memcpy(soa + o, rname, sizeof(rname));
        o += sizeof(rname);
        const uint32_t v[5] = {1, 3600, 1200, 604800, p->block_ttl};
        for (int k = 0; k < 5; k++) {
            soa[o++] = (uint8_t)(v[k] >> 24);
            soa[o++] = (uint8_t)(v[k] >> 16);
            soa[o++] = (uint8_t)(v[k] >> 8);
            soa[o++] = (uint8_t)v[k];
        }
        struct dns_rr_out ns = {.owner = q + DNSWIRE_HEADER_LEN + off,
                                .owner_len = nlen - off,
                                .type = DNSWIRE_TYPE_SOA,
                                .rclass = 1,
                                .ttl = p->block_ttl,
                                .rdata = soa,
                                .rdlen = (uint16_t)o};
        return dns_make_answer(q, qlen, DNS_RCODE_NXDOMAIN, false, NULL, 0, &ns, 1, DNS_EDE_BLOCKED,
                               text, ans);
    }
    default: /* null: the unspecified address, NODATA for the other types */
        if (qtype == 1 || qtype == 28) {
            rr.type = qtype;
            rr.rdlen = qtype == 1 ? 4 : 16;
            return dns_make_answer(q, qlen, DNS_RCODE_NOERROR, false, &rr, 1, NULL, 0,
                                   DNS_EDE_BLOCKED, text, ans);
        }
        return dns_make_answer(q, qlen, DNS_RCODE_NOERROR, false, NULL, 0, NULL, 0, DNS_EDE_BLOCKED,
                               text, ans);
    }
}

/* The lowest list of @p mask (the one a blocked answer names and counts). */
static int lowest_bit(uint32_t mask)
{
    return mask ? __builtin_ctz(mask) : -1;
}

int policy_apply(const struct policy *p, const uint8_t *q, size_t qlen,
                 const struct client_id *client, const char *id, size_t id_len, struct dg_buf *ans,
                 uint32_t *ttl, const struct dg_observer *obs)
{
    int k = localdata_answer(p->local, q, qlen, ans, ttl);
    if (k == -EMSGSIZE) {
        /* local records too many for one message: a failure of ours, said as DNS says it */
        *ttl = 0;
        return dns_make_error_answer(q, qlen, DNS_RCODE_SERVFAIL, ans) == 0 ? POLICY_LOCAL
                                                                            : -ENOMEM;
    }
    if (k < 0)
        return -ENOMEM;
    if (k != LOCALDATA_NOT) {
        dg_observe(obs, DG_EV_LOCAL_ANSWER, k == LOCALDATA_ANSWER ? 0 : 1, 1);
        return POLICY_LOCAL;
    }
    if (nameset_count(p->block) == 0)
        return POLICY_PASS;
    /* Blocklists name Internet hosts: class IN (or ANY), not CH "version.bind" and the like,
     * which the null answer's IN records would not even answer. */
    size_t nlen;
    const uint8_t *name = dns_question_name(q, qlen, &nlen);
    if (!name)
        return POLICY_PASS;
    uint16_t qclass = (uint16_t)(name[nlen + 2] << 8 | name[nlen + 3]);
    if (qclass != 1 && qclass != 255)
        return POLICY_PASS;
    uint32_t mask = client_mask(p, client, id, id_len);
    if (!mask)
        return POLICY_PASS;
    uint32_t lists = 0;
    int off = nameset_match(p->block, name, nlen, mask, &lists);
    if (off < 0)
        return POLICY_PASS;
    uint32_t allowed;
    if (nameset_count(p->allow) && nameset_match(p->allow, name, nlen, 1, &allowed) >= 0)
        return POLICY_PASS;
    int li = lowest_bit(lists & mask);
    if (block_answer(p, q, qlen, (size_t)off, nlen, li, ans, ttl) != 0)
        return -ENOMEM;
    dg_observe(obs, DG_EV_BLOCKED, (unsigned)li, 1);
    return POLICY_BLOCKED;
}

/* ---- the slot and the views ---------------------------------------------------------------- */

struct policy_slot {
    pthread_mutex_t mu;
    _Atomic uint64_t gen;
    struct policy *cur; /* guarded by mu (written on main, taken by the views) */
    /* the file watch, main thread only */
    struct file_sig *seen; /* what each file of cur looked like at the last poll */
    size_t n_seen;
    bool failed; /* the rebuild for the files as `seen` failed: wait for another change */
};

struct policy_slot *policy_slot_new(struct policy *p)
{
    struct policy_slot *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    pthread_mutex_init(&s->mu, NULL);
    s->cur = p;
    atomic_init(&s->gen, 1);
    return s;
}

void policy_slot_free(struct policy_slot *s)
{
    if (!s)
        return;
    policy_unref(s->cur);
    free(s->seen);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

const struct policy *policy_slot_peek(const struct policy_slot *s)
{
    return s->cur; /* only the main thread writes it, and only it calls this */
}

void policy_slot_publish(struct policy_slot *s, struct policy *p)
{
    pthread_mutex_lock(&s->mu);
    struct policy *old = s->cur;
    s->cur = p;
    atomic_fetch_add_explicit(&s->gen, 1, memory_order_release);
    pthread_mutex_unlock(&s->mu);
    free(s->seen);
    s->seen = NULL;
    s->n_seen = 0;
    s->failed = false;
    policy_unref(old);
}

static int poll_files(struct policy_slot *s, const struct policy *p, struct file_sig *now,
                      const struct config *cfg, char *err, size_t errlen);

int policy_slot_poll(struct policy_slot *s, const struct config *cfg, char *err, size_t errlen)
{
    /* cur is only replaced on this thread: reading it without the lock is safe here */
    const struct policy *p = s->cur;
    if (!p || p->n_files == 0)
        return 0;
    struct file_sig *now = calloc(p->n_files, sizeof(*now));
    if (!now)
        return 0; /* tried again at the next poll */
    int rc = poll_files(s, p, now, cfg, err, errlen);
    free(now);
    return rc;
}

/* policy_slot_poll() with @p now, room for the current signatures. */
static int poll_files(struct policy_slot *s, const struct policy *p, struct file_sig *now,
                      const struct config *cfg, char *err, size_t errlen)
{
    bool changed = false;
    for (size_t i = 0; i < p->n_files; i++) {
        sig_of(p->files[i].path, &now[i]);
        changed |= !sig_equal(&now[i], &p->files[i].sig);
    }
    if (!changed) {
        free(s->seen);
        s->seen = NULL;
        s->n_seen = 0;
        s->failed = false;
        return 0;
    }
    /* Settled: the same on two polls in a row (a file written in several steps is read once,
     * whole), and not a state that already failed. */
    bool settled = s->seen && s->n_seen == p->n_files;
    for (size_t i = 0; settled && i < p->n_files; i++)
        settled = sig_equal(&now[i], &s->seen[i]);
    if (!settled) {
        struct file_sig *copy = malloc(p->n_files * sizeof(*now));
        if (!copy)
            return 0;
        memcpy(copy, now, p->n_files * sizeof(*now));
        free(s->seen);
        s->seen = copy;
        s->n_seen = p->n_files;
        s->failed = false;
        return 0;
    }
    if (s->failed)
        return 0;
    struct policy *fresh = policy_build(cfg, err, errlen);
    if (!fresh) {
        s->failed = true;
        return -1;
    }
    policy_slot_publish(s, fresh);
    policy_describe(fresh, err, errlen);
    return 1;
}

/* Do @p p's local zones fit a view of @p cfg? Which RFC 6303 defaults are local, and which
 * zones are transparent, follows the forward zones; a view routes by its own configuration's
 * zones, so a policy made for other zones would answer (or forward) private names the view
 * sends elsewhere: a reverse lookup of a private address could leave for the public upstream. */
static bool zones_fit(const struct policy *p, const struct config *cfg)
{
    if (!cfg || p->cfg == cfg)
        return true;
    if (p->cfg->n_forward_zone != cfg->n_forward_zone)
        return false;
    for (size_t i = 0; i < cfg->n_forward_zone; i++) {
        if (p->cfg->fwd[i].name_len != cfg->fwd[i].name_len ||
            memcmp(p->cfg->fwd[i].name, cfg->fwd[i].name, cfg->fwd[i].name_len) != 0)
            return false;
    }
    return true;
}

const struct policy *policy_view_get(struct policy_view *v)
{
    if (!v->slot)
        return NULL;
    uint64_t g = atomic_load_explicit(&v->slot->gen, memory_order_acquire);
    if (g != v->gen || !v->p) {
        pthread_mutex_lock(&v->slot->mu);
        struct policy *cur = v->slot->cur;
        /* a new policy whose zones do not fit this view (a reload changed the forward zones:
         * the view goes on with the routes it had) is not taken: the view keeps its own until
         * it is retired */
        struct policy *p = cur && (!v->p || zones_fit(cur, v->cfg)) ? policy_ref(cur) : NULL;
        g = atomic_load_explicit(&v->slot->gen, memory_order_relaxed);
        pthread_mutex_unlock(&v->slot->mu);
        if (p || !v->p) {
            policy_unref(v->p);
            v->p = p;
        }
        v->gen = g;
    }
    return v->p;
}

void policy_view_release(struct policy_view *v)
{
    policy_unref(v->p);
    v->p = NULL;
    v->gen = 0;
}
