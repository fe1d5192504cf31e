/*
 * libFuzzer target: local data (localdata.h) built from the input, then asked one question.
 * The first byte: bits 0-2 the number K of text lines that follow, bit 3 the default zones,
 * bit 4 localhost's records. Each line is a local record in zone-file syntax, or
 * "zone s NAME" / "zone f NAME" (a static / forward zone), or "host ADDR NAME" (a hosts-file
 * entry, the canonical name). The rest of the input is the query, in wire form.
 *
 * Checks, beyond "no crash, no leak": building either works or fails with the documented codes;
 * a query that passes dns_query_check() gets LOCALDATA_NOT with the buffer untouched, or an
 * answer that walks (dns_wire_check()), matches the query (ID, question), says what the kind
 * says (rcode, answer count), has AA set, and that ldns parses; -EMSGSIZE only for an answer
 * whose records could not fit 65535 bytes.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <ldns/ldns.h>

#include "dohgate/dns.h"
#include "dohgate/dnswire.h"
#include "dohgate/localdata.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void add_line(struct localdata *ld, const char *line)
{
    char err[256];
    uint8_t w[DNSWIRE_MAX_NAME];
    if (strncmp(line, "zone ", 5) == 0 && (line[5] == 's' || line[5] == 'f') && line[6] == ' ') {
        size_t n = dnswire_name_from_text(line + 7, strlen(line + 7), w);
        if (n && localdata_add_zone(ld, w, n,
                                    line[5] == 's' ? LOCALDATA_STATIC : LOCALDATA_FORWARD) != 0)
            abort();
        return;
    }
    if (strncmp(line, "host ", 5) == 0) {
        char addr[64];
        const char *sp = strchr(line + 5, ' ');
        if (!sp || (size_t)(sp - line - 5) >= sizeof(addr))
            return;
        memcpy(addr, line + 5, (size_t)(sp - line - 5));
        addr[sp - line - 5] = 0;
        uint8_t a[16];
        int fam = strchr(addr, ':') ? AF_INET6 : AF_INET;
        size_t n = dnswire_name_from_text(sp + 1, strlen(sp + 1), w);
        if (n && inet_pton(fam, addr, a) == 1 && localdata_add_host(ld, fam, a, w, n, true) != 0)
            abort();
        return;
    }
    int rc = localdata_add_rr(ld, line, err, sizeof(err));
    if (rc != 0 && rc != -EINVAL)
        abort();
    if (rc != 0 && err[0] == 0)
        abort(); /* a refusal says why */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    unsigned k = data[0] & 7u;
    size_t pos = 1;
    struct localdata *ld = localdata_new();
    if (!ld)
        abort();
    for (unsigned i = 0; i < k && pos < size; i++) {
        const uint8_t *nl = memchr(data + pos, '\n', size - pos);
        size_t len = nl ? (size_t)(nl - (data + pos)) : size - pos;
        char *line = malloc(len + 1);
        if (!line)
            abort();
        memcpy(line, data + pos, len);
        line[len] = 0;
        if (strlen(line) == len) /* a NUL inside would hide the rest from ldns */
            add_line(ld, line);
        free(line);
        pos += len + (nl ? 1 : 0);
    }
    if (data[0] & 8u) {
        for (const char *const *z = localdata_default_zones; *z; z++) {
            uint8_t w[DNSWIRE_MAX_NAME];
            size_t n = dnswire_name_from_text(*z, strlen(*z), w);
            if (!n || localdata_add_zone(ld, w, n, LOCALDATA_STATIC) != 0)
                abort();
        }
    }
    if ((data[0] & 16u) && localdata_add_localhost(ld) != 0)
        abort();
    if (localdata_finish(ld) != 0)
        abort();

    const uint8_t *q = data + pos;
    size_t qlen = size - pos;
    if (dns_query_check(q, qlen, NULL) != DNS_QUERY_OK) {
        localdata_free(ld);
        return 0;
    }
    struct dg_buf ans = {0};
    uint32_t ttl = 0;
    int kind = localdata_answer(ld, q, qlen, &ans, &ttl);
    if (kind == -EMSGSIZE || kind == LOCALDATA_NOT) {
        if (ans.len != 0)
            abort();
    } else {
        if (kind < 0)
            abort();
        if (!dns_wire_check(ans.data, ans.len) || !dns_answer_matches(q, qlen, ans.data, ans.len))
            abort();
        if (!(ans.data[2] & DNS_F2_AA))
            abort();
        uint16_t an = dg_get16(ans.data + 6);
        int rcode = dns_rcode(ans.data, ans.len);
        if ((kind == LOCALDATA_ANSWER) != (an > 0))
            abort();
        if (kind == LOCALDATA_NXDOMAIN && rcode != DNS_RCODE_NXDOMAIN)
            abort();
        if (kind == LOCALDATA_NODATA && rcode != DNS_RCODE_NOERROR)
            abort();
        if (kind != LOCALDATA_ANSWER && rcode == DNS_RCODE_NXDOMAIN && dg_get16(ans.data + 8) != 1)
            abort(); /* NXDOMAIN comes with its SOA */
        ldns_pkt *p = NULL;
        if (ldns_wire2pkt(&p, ans.data, ans.len) != LDNS_STATUS_OK)
            abort();
        if (ldns_pkt_ancount(p) != an)
            abort();
        ldns_pkt_free(p);
    }
    dg_buf_free(&ans);
    localdata_free(ld);
    return 0;
}
