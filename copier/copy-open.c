/* copy-open.c — copy_open: job spec + endpoints → opened images and a
 * prepared engine job.  See copy-open.h. */
#include "copy-open.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sys/stat.h>

#include "backends/image-id.h"
#include "backends/image-open.h"
#include "backends/image-rename.h"
#include "backends/keep-backing.h"
#include "target-opener.h"

#define PARTIAL_SUFFIX ".imgfs-partial"

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

/* The name `url` of a target that may be created, looked at before
 * anything is: *missing when there is no such file, else its size in
 * *size.  An existing file must not be the source or one of its backing
 * files (the rule of image_open_opts.distinct_from).  Returns 0, or
 * -errno with `err` set. */
static int look_at_name(struct loop *loop, const char *url,
                        const struct image *src, bool *missing,
                        uint64_t *size, struct errmsg *err)
{
    struct image_open_opts ro = { 0 };
    struct image *img;
    *missing = false;
    *size = 0;
    int r = image_open_protocol(loop, url, &ro, &img, err);
    if (r == -ENOENT) {
        errmsg_set(err, "%s", "");
        *missing = true;
        return 0;
    }
    if (r < 0)
        return r;
    *size = img->size;
    r = image_id_check_distinct(&img->id, url, src, err);
    image_close(img);
    return r;
}

/* Continue the existing partial file of `p` in place (nothing created or
 * truncated).  It must be a file of the source's size; a local one must
 * not be a symbolic link.  Returns 0 with *dst open, or -errno with `err`
 * set (-ENOENT: there is none). */
static int open_existing_partial(struct loop *loop,
                                 const struct copy_publish *p,
                                 const struct image_open_opts *to,
                                 bool overwrite, const struct image *src,
                                 struct image **dst, struct errmsg *err)
{
    struct stat st;
    if (strncmp(p->partial_url, "nfs://", 6) != 0 &&
        lstat(p->partial_url, &st) == 0 && !S_ISREG(st.st_mode)) {
        errmsg_set(err, "%s is not a regular file: not a partial file of "
                   "imgfs", p->partial_url);
        return -EINVAL;
    }
    struct image_open_opts o = *to;
    o.create = false;
    o.overwrite = overwrite;
    o.backing = o.backing_format = NULL;
    int r = image_open(loop, p->partial_url, &o, dst, err);
    if (r < 0)
        return r;
    if ((*dst)->size != src->size) {
        errmsg_set(err, "%s has %" PRIu64 " bytes, not the source's %" PRIu64
                   ": not the partial file of this copy; remove it and "
                   "copy again from the start", p->partial_url,
                   (*dst)->size, src->size);
        image_close(*dst);
        *dst = NULL;
        return -EINVAL;
    }
    return 0;
}

/* Step 5 for a target that is created (ep->create), see copy-open.h: a
 * partial file (NAME missing, or a qcow2 target), or NAME in place (an
 * existing raw file, or not a regular file). */
static int open_created(struct loop *loop, const struct copy_spec *spec,
                        const struct copy_endpoints *ep,
                        const struct image_open_opts *to,
                        struct copy_session *s, struct errmsg *err)
{
    struct copy_publish *p = &s->publish;
    uint64_t start = spec->copy.start_offset;
    bool qcow2 = spec->target_format == IMAGE_FORMAT_QCOW2;
    int r = partial_names(ep->target_url, ep->overwrite, p, err);
    if (r < 0)
        return r;
    bool missing = false;
    uint64_t size = 0;
    if (p->partial_url)
        r = look_at_name(loop, ep->target_url, s->src, &missing, &size, err);
    if (r < 0)
        return r;
    if (!p->partial_url || (!missing && !qcow2)) {
        /* In place: an existing raw file keeps its identity (file handle,
         * hard links, open descriptors); a resume truncates nothing. */
        copy_publish_abandon(p);
        struct image_open_opts o = *to;
        if (start > 0) {
            o.create = false;       /* overwrite still as asked */
            o.backing = o.backing_format = NULL;
        }
        return image_open(loop, ep->target_url, &o, &s->dst, err);
    }
    if (start > 0 && qcow2) {
        errmsg_set(err, "a created qcow2 target cannot be resumed: qcow2 "
                   "targets restart from 0 (rerun the command without "
                   "--resume-from)");
        return -EINVAL;
    }
    if (!missing && size > 0 && !ep->overwrite) {
        errmsg_set(err, "%s: exists and is not empty; use --overwrite to "
                   "replace it", ep->target_url);
        return -EEXIST;
    }
    p->replace = !missing;          /* checked just now: ours to replace */
    if (start > 0) {
        r = open_existing_partial(loop, p, to, true, s->src, &s->dst, err);
        if (r == -ENOENT)
            errmsg_set(err, "no partial file %s to resume (a created target "
                       "is kept there until it is complete); copy again "
                       "without --resume-from", p->partial_url);
        return r;
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

/* Step 5 for a target that is not created: NAME in place.  A raw file
 * NAME that does not exist but has a partial file is a created target
 * never published: its partial file is continued (and published). */
static int open_existing(struct loop *loop, const struct copy_spec *spec,
                         const struct copy_endpoints *ep,
                         const struct image_open_opts *to,
                         struct copy_session *s, struct errmsg *err)
{
    int r = image_open(loop, ep->target_url, to, &s->dst, err);
    if (r != -ENOENT || spec->target_format == IMAGE_FORMAT_QCOW2 ||
        !image_url_is_file(ep->target_url))
        return r;
    struct errmsg missing = *err;
    r = partial_names(ep->target_url, false, &s->publish, err);
    if (r < 0)
        return r;
    if (s->publish.partial_url) {
        r = open_existing_partial(loop, &s->publish, to,
                                  ep->overwrite ||
                                  spec->copy.start_offset > 0,
                                  s->src, &s->dst, err);
        if (r != -ENOENT)
            return r;
    }
    copy_publish_abandon(&s->publish);
    *err = missing;
    return -ENOENT;
}

/* May the target be opened while the source opens (copy-open.h)?  Only
 * when opening it writes nothing and needs nothing of the source: an
 * existing raw LUN or NFS file (not created, no keep-backing name to
 * record), whose image can move between loops. */
static bool target_opens_alongside(const struct copy_spec *spec,
                                   const struct copy_endpoints *ep)
{
    if (spec->keep_backing || spec->target_format != IMAGE_FORMAT_RAW)
        return false;
    if (strncmp(ep->target_url, "iscsi://", 8) == 0)
        return true;                /* LUNs ignore create/overwrite */
    return strncmp(ep->target_url, "nfs://", 6) == 0 && !ep->create;
}

/* Step 5 for a target opened alongside the source by `early`: join it,
 * then refuse the source itself or a backing file of it, as
 * image_open_opts.distinct_from would have.  Returns 0 with s->dst set,
 * or -errno with `err` set; 1 when the NFS file is missing (open_existing
 * then looks for a partial file). */
static int join_early_target(struct target_opener *early, struct loop *loop,
                             const struct copy_endpoints *ep,
                             struct copy_session *s, struct errmsg *err)
{
    struct image *dst;
    int r = target_opener_join(early, loop, &dst, err);
    if (r == -ENOENT && image_url_is_file(ep->target_url))
        return 1;
    if (r < 0)
        return r;
    s->dst = dst;
    if (s->src)
        r = image_id_check_distinct(&dst->id, ep->target_url, s->src, err);
    return r;
}

int copy_open(struct loop *loop, const struct copy_spec *spec_in,
              const struct copy_endpoints *ep, struct copy_session *out,
              struct errmsg *err)
{
    *out = (struct copy_session){ 0 };
    struct copy_spec spec = *spec_in;
    int r = copy_spec_check(&spec, COPY_SPEC_FILE, err);
    if (r < 0)
        return r;
    const char *allow[JOB_MAX_ALLOW_BACKING + 1] = { NULL };
    for (unsigned i = 0; i < spec.n_allow_backing; i++)
        allow[i] = spec.allow_backing[i];

    char *backing = NULL;
    /* An existing target opens while the source does (its round trips
     * hidden behind the source's); it is checked against the source once
     * both are open, before a byte is written. */
    struct target_opener *early = NULL;
    if (target_opens_alongside(&spec, ep)) {
        struct image_open_opts eo = { .write = true,
                                      .create = ep->create,
                                      .overwrite = ep->overwrite,
                                      .format = spec.target_format };
        early = target_opener_start(ep->target_url, &eo);
    }
    r = open_source(loop, &spec, ep, allow, &out->src, err);
    if (r < 0) {
        if (early) {
            struct errmsg ignored;
            struct image *dst;
            if (target_opener_join(early, loop, &dst, &ignored) == 0)
                image_close(dst);
        }
        goto fail;
    }
    /* Joined at once: no thread outlives copy_open, whatever fails. */
    int early_r = early ? join_early_target(early, loop, ep, out, err) : 1;

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
    r = early_r;                    /* 1: not opened yet */
    if (r == 1 && ep->create && image_url_is_file(ep->target_url))
        r = open_created(loop, &spec, ep, &to, out, err);
    else if (r == 1)
        r = open_existing(loop, &spec, ep, &to, out, err);
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
