/*
 * nameset_bench N [FILE]: the cost of a blocklist. Without FILE, N distinct random names of
 * 2 to 4 labels ("x7k2m9.ads-net.example.com") are written into an in-memory hosts-format
 * list ("0.0.0.0 name\n" lines); with FILE, that file is read (any lists.h domain-list format).
 * Then, on stdout, "key value" lines for the benchmark scripts:
 *   names               names in the set
 *   lines               lines of the list
 *   parse_ms            lists_parse_domains() alone (a callback that does nothing)
 *   load_ms             parse + nameset_add() of every name (the set sized by the line count)
 *   nameset_bytes       nameset_memory()
 *   bytes_per_name      nameset_memory() / names
 *   rss_growth_bytes    resident memory grown by the load (/proc/self/statm)
 *   rss_bytes_per_name
 *   skipped             adblock rules that cannot apply to DNS
 *   hit_lookups, miss_lookups  lookups timed in each of the two runs below (>= 5,000,000)
 *   hit_ns              ns per nameset_match() of a subdomain of a listed name ("www." + name)
 *   miss_ns             ns per nameset_match() of a name not listed (3 to 5 labels)
 * The queries are precomputed wire names in a random order, so a run measures the set, not
 * the generator. Exit status 1 if a listed name's subdomain is not found.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "dohgate/dnswire.h"
#include "dohgate/lists.h"
#include "dohgate/nameset.h"

#define MIN_LOOKUPS 5000000u
#define MAX_QUERIES (1u << 20) /* distinct precomputed queries of each kind */

static uint64_t rng = 0x9E3779B97F4A7C15ULL;

static uint64_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static size_t rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long size = 0, res = 0;
    if (!f)
        return 0;
    if (fscanf(f, "%lu %lu", &size, &res) != 2)
        res = 0;
    fclose(f);
    return res * (size_t)sysconf(_SC_PAGESIZE);
}

static const char alnum[] = "abcdefghijklmnopqrstuvwxyz0123456789";
static const char *const words[] = {"ads",    "track",  "metrics", "pixel",  "cdn",
                                    "stats",  "banner", "click",   "adserv", "tag",
                                    "beacon", "promo",  "media",   "static", "analytics"};
static const char *const tlds[] = {"com", "net", "org", "io", "de", "info", "example"};
#define NWORDS (sizeof(words) / sizeof(words[0]))
#define NTLDS  (sizeof(tlds) / sizeof(tlds[0]))

/* The i-th generated name into @p out (NUL-terminated), distinct for distinct i < 2^32: the
 * first label is a bijection of i in base 36 (looks random, 1 to 7 characters), then maybe
 * '-' and 1 to 4 random characters. */
static size_t gen_name(uint32_t i, const char *salt, char *out)
{
    uint32_t v = i * 2654435761u; /* odd multiplier: a bijection modulo 2^32 */
    char *p = out;
    do {
        *p++ = alnum[v % 36];
        v /= 36;
    } while (v);
    unsigned k = (unsigned)(rnd() % 5);
    if (k)
        *p++ = '-'; /* ends the bijective part: "ab" + "c" differs from "a" + "bc" */
    for (; k > 0; k--)
        *p++ = alnum[rnd() % 36];
    if (salt)
        p += sprintf(p, "%s", salt);
    unsigned labels = 2 + (unsigned)(rnd() % 3);
    if (labels >= 4)
        p += sprintf(p, ".%s-%s", words[rnd() % NWORDS], words[rnd() % NWORDS]);
    if (labels >= 3)
        p += sprintf(p, ".%s%u", words[rnd() % NWORDS], (unsigned)(rnd() % 100));
    p += sprintf(p, ".%s", tlds[rnd() % NTLDS]);
    *p = 0;
    return (size_t)(p - out);
}

struct query {
    uint32_t off;
    uint8_t len;
};

struct queries {
    uint8_t *buf;
    size_t used, cap;
    struct query *q;
    size_t n, max;
};

static int query_add(struct queries *qs, const uint8_t *name, size_t len)
{
    if (qs->n == qs->max)
        return 0;
    if (qs->used + len > qs->cap) {
        size_t cap = qs->cap ? qs->cap * 2 : 1 << 20;
        uint8_t *b = realloc(qs->buf, cap);
        if (!b)
            return -ENOMEM;
        qs->buf = b;
        qs->cap = cap;
    }
    memcpy(qs->buf + qs->used, name, len);
    qs->q[qs->n++] = (struct query){(uint32_t)qs->used, (uint8_t)len};
    qs->used += len;
    return 0;
}

static void shuffle(struct query *q, size_t n)
{
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)(rnd() % i);
        struct query t = q[i - 1];
        q[i - 1] = q[j];
        q[j] = t;
    }
}

static int on_nothing(void *arg, const uint8_t *name, size_t len, bool allow)
{
    return 0;
}

static int on_add(void *arg, const uint8_t *name, size_t len, bool allow)
{
    return nameset_add(arg, name, len, allow ? 2 : 1);
}

/* The hit queries: "www." + a listed name, for a sample of the listed names (every k-th). */
struct sample {
    struct queries *qs;
    size_t every, seen;
};

static int on_sample(void *arg, const uint8_t *name, size_t len, bool allow)
{
    struct sample *s = arg;
    if (allow || s->seen++ % s->every != 0 || len + 4 > DNSWIRE_MAX_NAME)
        return 0;
    uint8_t w[DNSWIRE_MAX_NAME];
    memcpy(w, "\3www", 4);
    memcpy(w + 4, name, len);
    return query_add(s->qs, w, len + 4);
}

/* ns per lookup over at least MIN_LOOKUPS lookups; *found: how many matched. */
static double time_lookups(const struct nameset *set, const struct queries *qs, size_t *found)
{
    size_t rounds = (MIN_LOOKUPS + qs->n - 1) / qs->n;
    size_t hits = 0, total = rounds * qs->n;
    double t0 = now_ms();
    for (size_t r = 0; r < rounds; r++) {
        for (size_t i = 0; i < qs->n; i++) {
            uint32_t v;
            hits += nameset_match(set, qs->buf + qs->q[i].off, qs->q[i].len, ~0u, &v) >= 0;
        }
    }
    double t1 = now_ms();
    *found = hits / rounds;
    return (t1 - t0) * 1e6 / (double)total;
}

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: %s N [FILE]\n", argv[0]);
        return 2;
    }
    char *end;
    unsigned long n = strtoul(argv[1], &end, 10);
    if (*end || n == 0 || n > 100000000ul) {
        fprintf(stderr, "%s: N must be 1..100000000\n", argv[0]);
        return 2;
    }
    char err[512];
    char *buf = NULL;
    size_t len = 0;
    if (argc == 3) {
        if (lists_read_file(argv[2], (size_t)1 << 32, &buf, &len, err, sizeof(err)) < 0) {
            fprintf(stderr, "%s\n", err);
            return 2;
        }
    } else {
        size_t cap = n * 64 + 1;
        buf = malloc(cap);
        if (!buf) {
            fprintf(stderr, "out of memory\n");
            return 2;
        }
        char name[128];
        for (unsigned long i = 0; i < n; i++) {
            memcpy(buf + len, "0.0.0.0 ", 8);
            len += 8;
            size_t l = gen_name((uint32_t)i, NULL, name);
            memcpy(buf + len, name, l);
            len += l;
            buf[len++] = '\n';
        }
    }
    size_t lines = 0;
    for (const char *p = buf; (p = memchr(p, '\n', len - (size_t)(p - buf))); p++)
        lines++;

    struct list_stats st;
    double t0 = now_ms();
    if (lists_parse_domains(buf, len, on_nothing, NULL, &st, err, sizeof(err)) < 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    double parse_ms = now_ms() - t0;

    size_t rss0 = rss_bytes();
    t0 = now_ms();
    struct nameset *set = nameset_new(lines);
    if (!set || lists_parse_domains(buf, len, on_add, set, &st, err, sizeof(err)) < 0) {
        fprintf(stderr, "load failed: %s\n", set ? err : "out of memory");
        return 1;
    }
    double load_ms = now_ms() - t0;
    size_t rss1 = rss_bytes();
    size_t names = nameset_count(set);
    if (names == 0) {
        fprintf(stderr, "no names in the list\n");
        return 1;
    }

    /* The queries (after the RSS reading: their memory is not the set's). */
    size_t nq = names < MAX_QUERIES ? names : MAX_QUERIES;
    struct queries hit = {.max = nq}, miss = {.max = nq};
    hit.q = calloc(nq, sizeof(*hit.q));
    miss.q = calloc(nq, sizeof(*miss.q));
    if (!hit.q || !miss.q) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    struct sample smp = {&hit, names / nq ? names / nq : 1, 0};
    if (lists_parse_domains(buf, len, on_sample, &smp, &st, err, sizeof(err)) < 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    char name[160];
    for (uint32_t i = 0; miss.n < nq && i < 4 * nq + 100; i++) {
        /* a different salt: other first labels, so the name and all its suffixes above the
         * registrable part are unlisted; checked all the same */
        gen_name(i, "q", name);
        uint8_t w[DNSWIRE_MAX_NAME];
        size_t wl = dnswire_name_from_text(name, strlen(name), w);
        uint32_t v;
        if (wl && nameset_match(set, w, wl, ~0u, &v) < 0 && query_add(&miss, w, wl) < 0)
            return 1;
    }
    if (hit.n == 0 || miss.n == 0) {
        fprintf(stderr, "no queries\n");
        return 1;
    }
    shuffle(hit.q, hit.n);
    shuffle(miss.q, miss.n);
    size_t found_hit, found_miss;
    double hit_ns = time_lookups(set, &hit, &found_hit);
    double miss_ns = time_lookups(set, &miss, &found_miss);

    size_t mem = nameset_memory(set);
    printf("names %zu\n", names);
    printf("lines %zu\n", lines);
    printf("skipped %zu\n", st.skipped);
    printf("parse_ms %.1f\n", parse_ms);
    printf("load_ms %.1f\n", load_ms);
    printf("nameset_bytes %zu\n", mem);
    printf("bytes_per_name %.1f\n", (double)mem / (double)names);
    printf("rss_growth_bytes %zu\n", rss1 > rss0 ? rss1 - rss0 : 0);
    printf("rss_bytes_per_name %.1f\n", rss1 > rss0 ? (double)(rss1 - rss0) / (double)names : 0.0);
    printf("hit_lookups %zu\n", ((MIN_LOOKUPS + hit.n - 1) / hit.n) * hit.n);
    printf("miss_lookups %zu\n", ((MIN_LOOKUPS + miss.n - 1) / miss.n) * miss.n);
    printf("hit_ns %.1f\n", hit_ns);
    printf("miss_ns %.1f\n", miss_ns);
    if (found_hit != hit.n || found_miss != 0) {
        fprintf(stderr, "wrong answers: %zu of %zu hits found, %zu misses found\n", found_hit,
                hit.n, found_miss);
        return 1;
    }
    nameset_free(set);
    free(hit.q);
    free(hit.buf);
    free(miss.q);
    free(miss.buf);
    free(buf);
    return 0;
}
