/*
 * libFuzzer target for the list parsers (lists.h). The first input byte chooses the parser
 * (even: lists_parse_domains(), odd: lists_parse_hosts()); the rest is the file.
 *
 * Beyond "no crash, no leak": every domain reported is inserted into a name set and must then
 * be found, exactly and as the longest suffix of a subdomain of it; every name is lower-cased
 * wire form that parses back from its text; an error message names its line.
 */
#include "dohgate/dnswire.h"
#include "dohgate/lists.h"
#include "dohgate/nameset.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The name is lower-cased, well-formed wire form, and its text form parses back to it. */
static void check_name(const uint8_t *name, size_t len)
{
    if (len == 0 || len > DNSWIRE_MAX_NAME)
        abort();
    for (size_t i = 0; i < len; i++) {
        if (name[i] >= 'A' && name[i] <= 'Z')
            abort();
    }
    char text[DNSWIRE_MAX_NAME * 4 + 2];
    uint8_t back[DNSWIRE_MAX_NAME];
    dnswire_name_to_text(name, len, text, sizeof(text));
    size_t bl = dnswire_name_from_text(text, strlen(text), back);
    if (bl != len || memcmp(back, name, len) != 0)
        abort();
}

static int on_domain(void *arg, const uint8_t *name, size_t len, bool allow)
{
    struct nameset *set = arg;
    check_name(name, len);
    if (len <= 1)
        abort(); /* the root is no domain of a list */
    uint32_t bit = allow ? 2 : 1, v = 0;
    int rc = nameset_add(set, name, len, bit);
    if (rc == -ENOMEM)
        return rc;
    if (rc != 0)
        abort(); /* the parser reported a name the set calls malformed */
    if (!nameset_get(set, name, len, &v) || !(v & bit))
        abort();
    if (nameset_match(set, name, len, bit, &v) != 0)
        abort();
    if (len + 2 <= DNSWIRE_MAX_NAME) {
        uint8_t sub[DNSWIRE_MAX_NAME];
        sub[0] = 1;
        sub[1] = 'Q'; /* a different case than anything stored */
        memcpy(sub + 2, name, len);
        int off = nameset_match(set, sub, len + 2, bit, &v);
        if (off != 0 && off != 2)
            abort(); /* "q.NAME" itself may be in the set, from an earlier line */
    }
    return 0;
}

static int on_host(void *arg, int family, const uint8_t *addr, const uint8_t *name, size_t len,
                   bool first)
{
    (void)arg;
    (void)first;
    if (family != AF_INET && family != AF_INET6)
        abort();
    char a[INET6_ADDRSTRLEN];
    if (!inet_ntop(family, addr, a, sizeof(a)))
        abort();
    check_name(name, len);
    if (len <= 1)
        abort();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    const char *buf = (const char *)data + 1;
    size_t len = size - 1;
    char err[256] = "";
    int rc;
    if (data[0] % 2 == 0) {
        struct nameset *set = nameset_new(16);
        if (!set)
            return 0;
        struct list_stats st;
        rc = lists_parse_domains(buf, len, on_domain, set, &st, err, sizeof(err));
        if (rc == 0 && nameset_count(set) > st.domains)
            abort();
        nameset_free(set);
    } else {
        rc = lists_parse_hosts(buf, len, on_host, NULL, err, sizeof(err));
    }
    if (rc == -EINVAL && strncmp(err, "line ", 5) != 0)
        abort();
    if (rc != 0 && rc != -EINVAL && rc != -ENOMEM)
        abort();
    return 0;
}
