/* copy-open.c — copy_open: job spec + endpoints → opened images and a
 * prepared engine job.  See copy-open.h. */
#include "copy-open.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "../backends/image-open.h"
#include "../backends/keep-backing.h"

/* Prefix `err` with the side's label, when the caller gave one. */
static void label_error(struct errmsg *err, const char *side,
                        const char *label)
{
    if (label)
        errmsg_prefix(err, "%s '%s'", side, label);
}

/* Steps 2-3: the source, and the resume offset against it. */
static int open_source(struct loop *loop, const struct copy_spec *spec,
                       const struct copy_endpoints *ep,
                       const char *const *allow, struct image **src,
                       struct errmsg *err)
{
    struct image_open_opts so = { .format = spec->source_format,
                                  .no_backing = spec->keep_backing,
                                  .allow_backing = allow };
    int r = image_open(loop, ep->source_url, &so, src, err);
    if (r < 0) {
        label_error(err, "source", ep->source_label);
        return r;
    }
    const struct image *s = *src;
    uint64_t start = spec->copy.start_offset;
    uint32_t bs = s->block_size ? s->block_size : 1;
    if (start > s->size) {
        errmsg_set(err, "--resume-from %" PRIu64 " is past the end of %s "
                   "(%" PRIu64 " bytes)", start, s->name, s->size);
        return -EINVAL;
    }
    if (start % bs || spec->copy.request_size % bs) {
        errmsg_set(err, "%s has %" PRIu32 "-byte blocks: --request-size and "
                   "--resume-from must be multiples of it", s->name, bs);
        return -EINVAL;
    }
    return 0;
}

int copy_open(struct loop *loop, const struct copy_spec *spec_in,
              const struct copy_endpoints *ep, struct copy_session *out,
              struct errmsg *err)
{
    *out = (struct copy_session){ 0 };
    struct copy_spec spec = *spec_in;
    int r = copy_spec_check(&spec, JOB_SPEC_FILE, err);
    if (r < 0)
        return r;
    const char *allow[JOB_MAX_ALLOW_BACKING + 1] = { NULL };
    for (unsigned i = 0; i < spec.n_allow_backing; i++)
        allow[i] = spec.allow_backing[i];

    char *backing = NULL;
    r = open_source(loop, &spec, ep, allow, &out->src, err);
    if (r < 0)
        goto fail;

    struct image_open_opts to = {
        .write = true,
        .create = ep->create,
        .overwrite = ep->overwrite,
        .create_size = out->src->size,
        .format = spec.target_format,
        .cluster_size = spec.cluster_size,
        .compress = spec.compress,
        .distinct_from = out->src,
        /* a keep-backing target opens the backing name recorded from the
         * source, under the same policy */
        .allow_backing = allow,
    };
    if (spec.keep_backing) {
        r = keep_backing_name(ep->source_url, ep->target_url, out->src,
                              &backing, &to.backing_format, err);
        if (r < 0) {
            errmsg_prefix(err, "keep-backing");
            goto fail;
        }
        /* Only a target created now records the name; a resumed one
         * already has it. */
        to.backing = ep->create ? backing : NULL;
        if (!ep->create)
            to.backing_format = NULL;
    }
    r = image_open(loop, ep->target_url, &to, &out->dst, err);
    if (r < 0) {
        label_error(err, "target", ep->target_label);
        goto fail;
    }
    errno = 0;
    out->job = copy_job_new(out->src, out->dst, &spec.copy, err);
    if (!out->job) {
        r = errno ? -errno : -EINVAL;     /* e.g. -ENOSPC: too small */
        goto fail;
    }
    free(backing);
    return 0;
fail:
    free(backing);
    copy_session_close(out, NULL);
    return r;
}

int copy_session_close(struct copy_session *s, struct errmsg *err)
{
    int r = 0;
    if (s->job)
        copy_job_free(s->job);
    if (s->dst) {
        char *name = strdup(s->dst->name);
        r = image_close(s->dst);
        if (r < 0 && err)
            errmsg_set(err, "closing %s: %s", name ? name : "the target",
                       strerror(-r));
        free(name);
    }
    if (s->src)
        image_close(s->src);
    *s = (struct copy_session){ 0 };
    return r;
}
