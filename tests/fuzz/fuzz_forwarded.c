/*
 * libFuzzer target: forwarded_client() on header lines. The first byte picks the kind ('f':
 * Forwarded, else X-Forwarded-For) and the trusted networks' prefix length; the rest is split
 * into lines at '\n'. Invariants: an outcome other than NONE gives a known address whose text
 * reads back as the same address; CLIENT gives an untrusted one, ALL_TRUSTED and STOPPED a
 * trusted one; the same input gives the same result twice (no state).
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dohgate/acl.h"
#include "dohgate/client.h"
#include "dohgate/forwarded.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool trusted(const struct client_id *hop, void *arg)
{
    return acl_allows_client(arg, hop);
}

#define MAX_LINES 16

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 8192)
        return 0;
    enum forwarded_kind kind = data[0] == 'f' || data[0] == 'F' ? FORWARDED_RFC7239 : FORWARDED_XFF;
    struct acl acl;
    char *const nets[] = {data[0] & 2 ? "0.0.0.0/1" : "127.0.0.0/8", "2001:db8::/33"};
    if (acl_build(&acl, nets, 2, NULL, 0) != 0)
        abort();
    char *buf = malloc(size);
    if (!buf)
        return 0;
    memcpy(buf, data + 1, size - 1);
    buf[size - 1] = '\0';
    const char *lines[MAX_LINES];
    size_t n = 0;
    char *p = buf;
    while (n < MAX_LINES) {
        lines[n++] = p;
        char *nl = strchr(p, '\n');
        if (!nl)
            break;
        *nl = '\0';
        p = nl + 1;
    }
    struct client_id a, b;
    enum forwarded_outcome o = forwarded_client(kind, lines, n, false, trusted, &acl, &a);
    enum forwarded_outcome o2 = forwarded_client(kind, lines, n, false, trusted, &acl, &b);
    if (o != o2)
        abort();
    if (o != FORWARDED_NONE) {
        if (!client_id_known(&a) || memcmp(a.addr, b.addr, sizeof(a.addr)) != 0)
            abort();
        struct client_id back;
        if (client_id_from_string(&back, a.text) != 0 || back.len != a.len ||
            memcmp(back.addr, a.addr, a.len) != 0)
            abort();
        bool t = trusted(&a, &acl);
        if (o == FORWARDED_CLIENT ? t : !t)
            abort();
    }
    free(buf);
    return 0;
}
