/* Routing by exact path: DoH endpoints go to the DNS pipeline, everything else is the site's
 * (404 until the site module exists). */
#include "dohgate/config.h"
#include "dohgate/doh.h"
#include "dohgate/doh_handler.h"
#include "dohgate/http.h"
#include "dohgate/router.h"

#include <errno.h>
#include <string.h>

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

void router_dispatch(struct http_exchange *ex)
{
    const struct config *cfg = ex->ctx->cfg;
    if (doh_path_match(ex->req.path, cfg->doh_path, cfg->n_doh_path)) {
        doh_handle(ex);
        return;
    }
    http_respond_text(ex, 404, "not found", NULL, 0);
}
