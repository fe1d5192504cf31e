/* Transport-neutral helpers of the exchange API (see http.h). */
#include "dohgate/http.h"

#include <errno.h>
#include <string.h>

#include "dohgate/config.h"

const char *http_request_header(const struct http_request *r, const char *name)
{
    for (size_t i = 0; i < r->nheaders; i++) {
        if (strcmp(r->headers[i].name, name) == 0)
            return r->headers[i].value;
    }
    return NULL;
}

size_t http_common_headers(const struct config *cfg, bool https, struct http_header *hdrs, size_t n,
                           size_t cap)
{
    /* RFC 6797 §7.2: HSTS only over secure transport; a browser ignores it on plain HTTP. */
    if (https && cfg->hsts_value && n < cap)
        hdrs[n++] = (struct http_header){"strict-transport-security", cfg->hsts_value};
    if (cfg->server_header && n < cap)
        hdrs[n++] = (struct http_header){"server", cfg->server_header};
    for (size_t i = 0; i < cfg->n_header && n < cap; i++) {
        if (cfg->header_name[i])
            hdrs[n++] = (struct http_header){cfg->header_name[i], cfg->header_value[i]};
    }
    return n;
}

const char *http_reason(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 200:
        return "OK";
    case 204:
        return "No Content";
    case 206:
        return "Partial Content";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    case 304:
        return "Not Modified";
    case 400:
        return "Bad Request";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 411:
        return "Length Required";
    case 413:
        return "Content Too Large";
    case 414:
        return "URI Too Long";
    case 415:
        return "Unsupported Media Type";
    case 416:
        return "Range Not Satisfiable";
    case 417:
        return "Expectation Failed";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return "";
    }
}

int http_respond_text(struct http_exchange *ex, int status, const char *text,
                      const struct http_header *extra, size_t nextra)
{
    struct http_header hdrs[8];
    size_t n = 0;
    hdrs[n++] = (struct http_header){"content-type", "text/plain; charset=utf-8"};
    for (size_t i = 0; i < nextra && n < sizeof(hdrs) / sizeof(hdrs[0]); i++)
        hdrs[n++] = extra[i];
    struct dg_buf body = {0};
    if (dg_buf_append(&body, text, strlen(text)) || dg_buf_append(&body, "\n", 1)) {
        dg_buf_free(&body);
        return -ENOMEM;
    }
    int rc = http_respond(ex, status, hdrs, n, &body);
    dg_buf_free(&body);
    return rc;
}
