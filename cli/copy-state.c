/* copy-state.c — `imgfs copy --state FILE`.  See copy-state.h. */
#include "copy-state.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "fs/job-state.h"

/* Files and NFS files refuse a non-empty target without --overwrite. */
static bool target_is_file(const char *target)
{
    return strncmp(target, "iscsi://", 8) != 0 &&
           strncmp(target, "null:", 5) != 0;
}

int copy_keeper_prepare(struct copy_keeper *s, struct copy_args *a,
                        struct errmsg *err)
{
    memset(s, 0, sizeof *s);
    s->path = a->state_path;
    s->args = a;
    if (!s->path)
        return 0;
    struct kept_job st;
    struct errmsg em = { "" };
    int r = job_state_read(s->path, &st, &em);
    if (r == -ENOENT)
        return 0;
    if (r < 0) {
        errmsg_set(err, "--state: %s", em.text[0] ? em.text
                                                  : strerror(-r));
        return r;
    }
    job_state_free(&st);
    if (strcmp(st.source, a->spec.source) || strcmp(st.target, a->spec.target)) {
        errmsg_set(err, "--state %s belongs to another copy (%s -> %s); "
                   "remove it or name another file", s->path, st.source,
                   st.target);
        return -EEXIST;
    }
    if (a->spec.copy.start_offset && a->spec.copy.start_offset != st.watermark) {
        errmsg_set(err, "--resume-from %" PRIu64 " contradicts --state %s "
                   "(durable watermark %" PRIu64 ")",
                   a->spec.copy.start_offset, s->path, st.watermark);
        return -EINVAL;
    }
    if (st.watermark && a->create &&
        a->spec.target_format == IMAGE_FORMAT_QCOW2) {
        /* A created qcow2 target is a new file each time (copy-open.h). */
        fprintf(stderr, "imgfs copy: restarting from 0: %s stopped at %"
                PRIu64 ", but qcow2 targets restart (%s)\n", a->spec.target,
                st.watermark, s->path);
        return 0;
    }
    a->spec.copy.start_offset = st.watermark;
    s->durable = st.watermark;
    if (st.watermark && !a->create && target_is_file(a->spec.target))
        a->spec.overwrite = true;
    fprintf(stderr, "imgfs copy: resuming at %" PRIu64 " (%s)\n",
            st.watermark, s->path);
    return 0;
}

static void save(struct copy_keeper *s, const char *state, uint64_t wm,
                 const char *error)
{
    struct kept_job st;
    memset(&st, 0, sizeof st);
    snprintf(st.state, sizeof st.state, "%s", state);
    st.watermark = wm;
    snprintf(st.source, sizeof st.source, "%s", s->args->spec.source);
    snprintf(st.target, sizeof st.target, "%s", s->args->spec.target);
    snprintf(st.error, sizeof st.error, "%s", error ? error : "");
    struct errmsg em = { "" };
    if (job_state_write(s->path, &st, &em) < 0)
        fprintf(stderr, "imgfs copy: warning: %s\n", em.text);
}

static void arm(struct copy_keeper *s);

static void checkpointed(void *opaque, uint64_t watermark, int err)
{
    struct copy_keeper *s = opaque;
    s->inflight = false;
    if (!err && watermark > s->durable) {
        s->durable = watermark;
        save(s, "running", s->durable, NULL);
    }
    arm(s);
}

static void tick(void *opaque)
{
    struct copy_keeper *s = opaque;
    s->timer = 0;
    if (s->stopped || s->inflight)
        return;
    if (copy_job_checkpoint(s->job, checkpointed, s) == 0)
        s->inflight = true;
}

static void arm(struct copy_keeper *s)
{
    if (s->stopped || s->timer)
        return;
    int64_t t = loop_add_timer(s->loop, copy_checkpoint_interval_ms(), tick,
                               s);
    s->timer = t > 0 ? t : 0;
}

void copy_keeper_start(struct copy_keeper *s, struct loop *loop,
                       struct copy_job *job, struct image *dst)
{
    if (!s->path)
        return;
    s->loop = loop;
    s->job = job;
    s->dst = dst;
    save(s, "running", s->durable, NULL);
    arm(s);
}

void copy_keeper_stop(struct copy_keeper *s, const struct copy_progress *final)
{
    if (!s->path || s->stopped)
        return;
    s->stopped = true;
    if (s->timer)
        loop_cancel_timer(s->loop, s->timer);
    s->timer = 0;
    if (final->state == COPY_DONE)
        return;
    /* The final watermark is durable once a flush completed after it. */
    uint64_t wm = image_flush_sync(s->dst) == 0 ? final->watermark
                                                : s->durable;
    save(s, final->state == COPY_CANCELLED ? "interrupted" : "failed", wm,
         final->error);
}

void copy_keeper_done(struct copy_keeper *s)
{
    if (!s->path)
        return;
    int r = job_state_remove(s->path);
    if (r < 0)
        fprintf(stderr, "imgfs copy: warning: removing %s: %s\n", s->path,
                strerror(-r));
}
