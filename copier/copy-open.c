/* copy-open.c — copy_open: job spec + endpoints → opened images and a
 * prepared engine job.  See copy-open.h. */
#include "copy-open.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sys/stat.h>

#include "../backends/image-id.h"
#include "../backends/image-open.h"
#include "../backends/image-rename.h"
#include "../backends/keep-backing.h"

#define PARTIAL_SUFFIX ".imgfs-partial"

/* Prefix `err` with the side's label, when the caller gave one. */
static void label_error(struct errmsg *err, const char *side,
                        const char *label)
{
    if (label)
        errmsg_prefix(err, "%s '%s'", side, label);
}

/* Steps 2-3: the source, and the resume offset against it. */
static int open_source(struct loop *loop, const struct job_spec *spec,
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

void copy_publish_abandon(struct copy_publish *p)
{
    if (p->partial_url && p->restart) {
        struct errmsg ignored;
        image_remove_created(p->partial_url, &ignored);
    }
    free(p->partial_url);
    free(p->final_url);
    free(p->final_name);
    *p = (struct copy_publish){ 0 };
}

int copy_publish_commit(struct copy_publish *p, struct errmsg *err)
{
    int r = 0;
    if (p->partial_url)
        r = image_rename_created(p->partial_url, p->final_name, p->replace,
                                 err);
    p->restart = false;             /* a failed rename keeps the file */
    copy_publish_abandon(p);
    return r;
}

/* Fill `p` with the names for publishing the created target `url`:
 * ".NAME.imgfs-partial" next to NAME.  Leaves `p` empty when the target
 * is written in place: not a file URL, no last component, or a local
 * name that exists and is not a regular file (a block device).  Returns 0
 * or -ENOMEM. */
static int partial_names(const char *url, bool overwrite,
                         struct copy_publish *p, struct errmsg *err)
{
    *p = (struct copy_publish){ 0 };
    if (!image_url_is_file(url))
        return 0;
    bool nfs = strncmp(url, "nfs://", 6) == 0;
    struct stat st;
    if (!nfs && stat(url, &st) == 0 && !S_ISREG(st.st_mode))
        return 0;
    size_t len = nfs ? strcspn(url, "?") : strlen(url);
    const char *slash = memrchr(url, '/', len);
    const char *name = slash ? slash + 1 : url;
    size_t namelen = len - (size_t)(name - url);
    if (namelen == 0 || (nfs && !slash))
        return 0;
    char *partial_name = NULL;
    if (asprintf(&partial_name, ".%.*s" PARTIAL_SUFFIX, (int)namelen,
                 name) < 0)
        partial_name = NULL;
    p->final_name = strndup(name, namelen);
    p->final_url = strdup(url);
    p->partial_url = partial_name ? image_resolve_relative(url, partial_name)
                                  : NULL;
    free(partial_name);
    p->replace = overwrite;
    if (!p->final_name || !p->final_url || !p->partial_url) {
        copy_publish_abandon(p);
        errmsg_set(err, "%s: out of memory", url);
        return -ENOMEM;
    }
    return 0;
}

/* The final name of a target to be published: refused as the target
 * itself would be (the source or its backing file; not empty without
 * overwrite).  A missing name is fine. */
static int check_final(struct loop *loop, const struct copy_endpoints *ep,
                       const struct image *src, struct errmsg *err)
{
    struct image_open_opts ro = { 0 };
    struct image *img;
    int r = image_open_protocol(loop, ep->target_url, &ro, &img, err);
    if (r == -ENOENT) {
        errmsg_set(err, "%s", "");
        return 0;
    }
    if (r < 0)
        return r;
    r = image_id_check_distinct(&img->id, ep->target_url, src, err);
    if (r == 0 && img->size > 0 && !ep->overwrite) {
        errmsg_set(err, "%s: exists and is not empty; use --overwrite to "
                   "replace it", ep->target_url);
        r = -EEXIST;
    }
    image_close(img);
    return r;
}

/* Step 5 for a target published when complete: open the partial file
 * `p->partial_url` (continued on resume, else created afresh). */
static int open_partial(struct loop *loop, const struct job_spec *spec,
                        const struct copy_endpoints *ep,
                        struct image_open_opts *to, struct copy_session *s,
                        struct errmsg *err)
{
    struct copy_publish *p = &s->publish;
    uint64_t start = spec->copy.start_offset;
    if (start > 0 && spec->target_format == IMAGE_FORMAT_QCOW2) {
        errmsg_set(err, "a created qcow2 target cannot be resumed (qcow2 "
                   "targets restart from 0): rerun without the resume "
                   "offset");
        return -EINVAL;
    }
    int r = check_final(loop, ep, s->src, err);
    if (r < 0)
        return r;
    if (start > 0) {
        struct image_open_opts o = *to;
        o.create = false;
        o.overwrite = true;         /* our own partial file */
        r = image_open(loop, p->partial_url, &o, &s->dst, err);
        if (r == -ENOENT)
            errmsg_set(err, "no partial file %s to resume (a created "
                       "target is kept there until it is complete); rerun "
                       "without the resume offset", p->partial_url);
        if (r < 0)
            return r;
        if (s->dst->size != s->src->size) {
            errmsg_set(err, "%s has %" PRIu64 " bytes, not the source's %"
                       PRIu64 ": not the partial file of this copy; rerun "
                       "without the resume offset", p->partial_url,
                       s->dst->size, s->src->size);
            return -EINVAL;
        }
        return 0;
    }
    /* A leftover of an earlier run is never reused: removed (a symbolic
     * link planted there is not followed) and created again. */
    r = image_remove_created(p->partial_url, err);
    if (r < 0)
        return r;
    struct image_open_opts o = *to;
    o.overwrite = false;
    p->restart = true;              /* until copy_open succeeds */
    return image_open(loop, p->partial_url, &o, &s->dst, err);
}

/* Is there no file named `url`?  (Any other outcome, even an error, is
 * left to the open that follows.) */
static bool file_missing(struct loop *loop, const char *url)
{
    struct image_open_opts ro = { 0 };
    struct image *img;
    struct errmsg ignored;
    int r = image_open_protocol(loop, url, &ro, &img, &ignored);
    if (r == 0)
        image_close(img);
    return r == -ENOENT;
}

int copy_open(struct loop *loop, const struct job_spec *spec_in,
              const struct copy_endpoints *ep, struct copy_session *out,
              struct errmsg *err)
{
    *out = (struct copy_session){ 0 };
    struct job_spec spec = *spec_in;
    int r = job_spec_check(&spec, JOB_SPEC_FILE, err);
    if (r < 0)
        return r;
    const char *allow[JOB_MAX_ALLOW_BACKING + 1] = { NULL };
    for (unsigned i = 0; i < spec.n_allow_backing; i++)
        allow[i] = spec.allow_backing[i];

    char *backing = NULL;
    r = open_source(loop, &spec, ep, allow, &out->src, err);
    if (r < 0)
        goto fail;

    /* Resuming onto a file name that does not exist: the target was
     * created and never published, its partial file is continued. */
    bool create = ep->create ||
                  (spec.copy.start_offset > 0 &&
                   image_url_is_file(ep->target_url) &&
                   file_missing(loop, ep->target_url));
    struct image_open_opts to = {
        .write = true,
        .create = create,
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
        to.backing = create ? backing : NULL;
        if (!create)
            to.backing_format = NULL;
    }
    if (create) {
        r = partial_names(ep->target_url, ep->overwrite, &out->publish, err);
        if (r < 0)
            goto fail;
    }
    if (out->publish.partial_url)
        r = open_partial(loop, &spec, ep, &to, out, err);
    else
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
    /* From here an unpublished raw partial file is worth resuming. */
    out->publish.restart = spec.target_format == IMAGE_FORMAT_QCOW2;
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
    copy_publish_abandon(&s->publish);
    if (s->src)
        image_close(s->src);
    *s = (struct copy_session){ 0 };
    return r;
}

int copy_session_publish(struct copy_session *s, struct errmsg *err)
{
    struct copy_publish p = s->publish;
    s->publish = (struct copy_publish){ 0 };
    int r = copy_session_close(s, err);
    if (r < 0) {
        copy_publish_abandon(&p);   /* not published (raw: resumable) */
        return r;
    }
    return copy_publish_commit(&p, err);
}
