/* Routing by exact path: DoH endpoints go to the DNS pipeline, everything else to the site. */
#include "dohgate/config.h"
#include "dohgate/doh.h"
#include "dohgate/doh_handler.h"
#include "dohgate/http.h"
#include "dohgate/metrics.h"
#include "dohgate/router.h"
#include "dohgate/site.h"

#include <errno.h>
#include <string.h>

size_t router_max_body(const struct handler_ctx *ctx, const char *path)
{
    const struct config *cfg = ctx->cfg;
    if (doh_path_match(path, cfg->doh_path, cfg->n_doh_path))
        return DOH_MAX_BODY;
    return cfg->site_max_body;
}

void router_dispatch(struct http_exchange *ex)
{
    const struct config *cfg = ex->ctx->cfg;
    if (ex->req.metrics) {
        metrics_handle(ex);
        return;
    }
    if (!ex->req.https) {
        /* The plain-HTTP listener never answers DNS: queries in clear text are what DoH is
         * for avoiding, so /dns-query redirects like everything else. */
        site_handle_plain(ex);
        return;
    }
    if (doh_path_match(ex->req.path, cfg->doh_path, cfg->n_doh_path)) {
        doh_handle(ex);
        return;
    }
    site_handle(ex);
}
