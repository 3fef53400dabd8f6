/* jobs.c — the job table: start (from control/x.job text), cancel,
 * forget, status text, shutdown.
 *
 * A job opens its own source and target images by URL (the source with
 * format detection, the target created inside NFS directories as the job
 * file asks) and runs on the loop thread through the copy engine.  While
 * it runs, its target refuses other writers and its source refuses
 * writers (node->job_writers / job_readers).  Nothing is opened for
 * writing before the job text parsed and both ends were found free.
 *
 * backing = keep: as imgfs copy --keep-backing, the source is opened with
 * no_backing, the engine skips what its top layer inherits, and the qcow2
 * target (created by the job) records the backing name from
 * keep_backing_name().
 *
 * Kept jobs (fs_global->state_dir, job-state.h): a running job's state file
 * is written when it starts, every copy_checkpoint_interval_ms() after a
 * checkpoint made its watermark durable (copy_job_checkpoint), and when it
 * ends: removed when done or cancelled by rm; "failed" or, cancelled by
 * the unmount, "interrupted" with the final watermark once a target flush
 * completed (else the last durable one).  A state file still saying "running" at the
 * next mount means that mount was killed.  A job the memory budget queues
 * (job-queue.h) is kept as "queued" when accepted; the next mount queues
 * it again (jobs_requeue_kept); a queued job that is cancelled goes, one
 * refused when it leaves the queue goes back to what it was.  The files
 * are written on the loop thread (small, two fsyncs each). */
#include "fs.h"
#include "job-queue.h"
#include "job-state.h"
#include "mem-budget.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>

#include "copier/copy-open.h"
#include "copier/jobspec.h"
#include "copier/rate.h"
#include "copier/status-json.h"

/* How often a running job's durable watermark is saved. */

/* Set once the unmount cancels the jobs: they become "interrupted". */
static bool shutting_down;

char *job_state_path(const char *name)
{
    char *p = NULL;
    if (!fs_global->state_dir ||
        asprintf(&p, "%s/%s" JOB_STATE_SUFFIX, fs_global->state_dir, name) < 0)
        return NULL;
    return p;
}

/* Save job `j` as `state` with durable watermark `wm` (loop thread, or a
 * FUSE thread for a job that is not running).  A failure is logged: the
 * job goes on without it. */
static void persist_write(struct job *j, const char *state, uint64_t wm,
                          const char *error)
{
    char *path = job_state_path(j->name);
    if (!path)
        return;
    struct kept_job *st = calloc(1, sizeof *st);
    if (!st) {
        free(path);
        return;
    }
    snprintf(st->state, sizeof st->state, "%s", state);
    st->watermark = wm;
    snprintf(st->error, sizeof st->error, "%s", error ? error : "");
    pthread_mutex_lock(&fs_global->jobs_lock);
    st->total = j->total;
    snprintf(st->source, sizeof st->source, "%s", j->source);
    snprintf(st->target, sizeof st->target, "%s", j->target);
    st->uid = j->writer.uid;
    st->gid = j->writer.gid;
    st->text = j->len ? malloc(j->len) : NULL;
    if (st->text) {
        memcpy(st->text, j->text, j->len);
        st->len = j->len;
    }
    pthread_mutex_unlock(&fs_global->jobs_lock);
    struct errmsg em = { "" };
    if (job_state_write(path, st, &em) < 0)
        syslog(LOG_ERR, "imgfs: job %s: %s", j->name, em.text);
    job_state_free(st);
    free(st);
    free(path);
}

static void persist_remove(struct job *j)
{
    char *path = job_state_path(j->name);
    if (!path)
        return;
    int r = job_state_remove(path);
    if (r < 0)
        syslog(LOG_ERR, "imgfs: job %s: removing %s: %s", j->name, path,
               strerror(-r));
    free(path);
}

static void ckpt_arm(struct job *j);

/* A checkpoint's flush completed: save its watermark if durable. */
static void ckpt_done(void *opaque, uint64_t watermark, int err)
{
    struct job *j = opaque;
    j->ckpt_inflight = false;
    if (err == 0 && watermark > j->durable) {
        j->durable = watermark;
        persist_write(j, "running", j->durable, NULL);
    }
    ckpt_arm(j);
}

static void ckpt_tick(void *opaque)
{
    struct job *j = opaque;
    j->ckpt_timer = 0;
    if (!j->cj || j->ckpt_inflight)
        return;
    if (copy_job_checkpoint(j->cj, ckpt_done, j) == 0)
        j->ckpt_inflight = true;
}

/* Arm the next checkpoint of a running, kept job. */
static void ckpt_arm(struct job *j)
{
    if (!j->persist || j->ckpt_timer || !j->cj)
        return;
    int64_t t = loop_add_timer(fs_global->loop, copy_checkpoint_interval_ms(),
                               ckpt_tick, j);
    j->ckpt_timer = t > 0 ? t : 0;
}

struct job *job_find_locked(const char *name)
{
    for (size_t i = 0; i < fs_global->njobs; i++)
        if (!strcmp(fs_global->jobs[i]->name, name))
            return fs_global->jobs[i];
    return NULL;
}

struct job *job_create_locked(const char *name)
{
    struct job *j = calloc(1, sizeof *j);
    if (!j)
        return NULL;
    j->name = strdup(name);
    char *jn = NULL, *sn = NULL;
    if (!j->name || asprintf(&jn, "%s.job", name) < 0 ||
        asprintf(&sn, "%s.status", name) < 0)
        goto fail;
    if (fs_global->njobs % 16 == 0) {
        struct job **v = realloc(fs_global->jobs,
                                 (fs_global->njobs + 16) * sizeof *v);
        if (!v)
            goto fail;
        fs_global->jobs = v;
    }
    j->jobnode = node_new(NODE_JOBFILE, fs_global->control, jn);
    j->statusnode = node_new(NODE_STATUSFILE, fs_global->control, sn);
    if (!j->jobnode || !j->statusnode)
        goto fail;
    free(jn);
    free(sn);
    jn = sn = NULL;
    if (asprintf(&jn, "%s.rate", name) < 0 ||
        asprintf(&sn, "%s.json", name) < 0)
        goto fail;
    j->ratenode = node_new(NODE_RATEFILE, fs_global->control, jn);
    j->jsonnode = node_new(NODE_JSONFILE, fs_global->control, sn);
    if (!j->ratenode || !j->jsonnode)
        goto fail;
    j->jobnode->job = j;
    j->statusnode->job = j;
    j->ratenode->job = j;
    j->jsonnode->job = j;
    free(jn);
    free(sn);
    fs_global->jobs[fs_global->njobs++] = j;
    return j;
fail:
    /* Nodes already made stay in the table, unlinked. */
    if (j->jobnode)
        j->jobnode->unlinked = true;
    if (j->statusnode)
        j->statusnode->unlinked = true;
    if (j->ratenode)
        j->ratenode->unlinked = true;
    if (j->jsonnode)
        j->jsonnode->unlinked = true;
    free(jn);
    free(sn);
    free(j->name);
    free(j);
    return NULL;
}

void job_forget_locked(struct job *j)
{
    job_queue_drop_locked(j);
    for (size_t i = 0; i < fs_global->njobs; i++) {
        if (fs_global->jobs[i] == j) {
            fs_global->jobs[i] = fs_global->jobs[--fs_global->njobs];
            break;
        }
    }
    pthread_mutex_lock(&fs_global->tree_lock);
    j->jobnode->unlinked = true;
    j->statusnode->unlinked = true;
    j->jobnode->job = NULL;
    j->statusnode->job = NULL;
    j->ratenode->unlinked = true;
    j->jsonnode->unlinked = true;
    j->ratenode->job = NULL;
    j->jsonnode->job = NULL;
    pthread_mutex_unlock(&fs_global->tree_lock);
    persist_remove(j);
    free(j->text);
    free(j->unlink_reqs);
    free(j->name);
    free(j);
}

bool node_busy_for_write(struct node *n)
{
    return atomic_load(&n->job_writers) || atomic_load(&n->job_readers);
}

/* ---- start ------------------------------------------------------------- */

static void job_fail(struct job *j, int err, const char *msg)
{
    pthread_mutex_lock(&fs_global->jobs_lock);
    j->state = JOB_FAILED;
    j->final_state = JOB_FAILED;
    j->err = err;
    snprintf(j->error, sizeof j->error, "%s", msg);
    j->end_ns = loop_now_ns();
    pthread_mutex_unlock(&fs_global->jobs_lock);
}

static void release_nodes(struct job *j)
{
    if (j->src_node) {
        atomic_fetch_sub(&j->src_node->job_readers, 1);
        node_reap_later(j->src_node);   /* a node only the job used goes */
    }
    if (j->dst_node) {
        atomic_fetch_sub(&j->dst_node->job_writers, 1);
        node_reap_later(j->dst_node);
    }
    j->src_node = j->dst_node = NULL;
}

/* Close both images; a created target is then published (renamed from
 * its partial file, copy-open.h) if the job is DONE: a failed close or
 * rename fails the job.  A job that did not finish keeps a raw partial
 * file for a resume (a qcow2 one is removed: it restarts). */
static void close_images(struct job *j)
{
    if (j->src)
        image_close(j->src);
    int r = 0;
    if (j->dst) {
        r = image_close(j->dst);
        if (r < 0)
            syslog(LOG_ERR, "imgfs: job %s: closing target: %s", j->name,
                   strerror(-r));
    }
    if (j->publish) {
        pthread_mutex_lock(&fs_global->jobs_lock);
        bool done = j->final_state == JOB_DONE;
        pthread_mutex_unlock(&fs_global->jobs_lock);
        struct errmsg pem = { "" };
        if (done && r < 0)
            errmsg_set(&pem, "closing the target: %s", strerror(-r));
        else if (done)
            r = copy_publish_commit(j->publish, &pem);
        if (done && r < 0) {
            syslog(LOG_ERR, "imgfs: job %s: %s", j->name, pem.text);
            pthread_mutex_lock(&fs_global->jobs_lock);
            j->final_state = JOB_FAILED;
            j->err = r;
            snprintf(j->error, sizeof j->error, "%s", pem.text);
            pthread_mutex_unlock(&fs_global->jobs_lock);
        }
        copy_publish_abandon(j->publish);
        free(j->publish);
        j->publish = NULL;
    }
    j->src = j->dst = NULL;
}

static void *inval_thread(void *opaque)
{
    fuse_ino_t ino = (fuse_ino_t)(uintptr_t)opaque;
    if (fs_global->se)
        fuse_lowlevel_notify_inval_inode(fs_global->se, ino, 0, 0);
    return NULL;
}

/* Drop the kernel's cached pages of `n` (from another thread: the kernel
 * may wait for reads that the loop thread answers). */
static void invalidate_cache(struct node *n)
{
    pthread_t t;
    if (pthread_create(&t, NULL, inval_thread,
                       (void *)(uintptr_t)n->ino) == 0)
        pthread_detach(t);
}

static void job_cleanup(void *opaque)
{
    struct job *j = opaque;
    struct node *dst_node = j->dst_node;
    pthread_mutex_lock(&fs_global->jobs_lock);
    struct copy_job *cj = j->cj;
    j->cj = NULL;
    fuse_req_t *reqs = j->unlink_reqs;
    size_t nreqs = j->n_unlink_reqs;
    j->unlink_reqs = NULL;
    j->n_unlink_reqs = 0;
    pthread_mutex_unlock(&fs_global->jobs_lock);
    copy_job_free(cj);
    close_images(j);
    release_nodes(j);
    if (dst_node)
        invalidate_cache(dst_node);
    fs_global->active_jobs--;
    job_queue_release(j);
    pthread_mutex_lock(&fs_global->jobs_lock);
    j->state = j->final_state;      /* j may be freed from now on */
    pthread_mutex_unlock(&fs_global->jobs_lock);
    jobs_share_rate();
    for (size_t i = 0; i < nreqs; i++)
        fuse_reply_err(reqs[i], 0);
    free(reqs);
}

/* What became of a created target of a job that did not finish
 * (copy-open.h): "" when it is written in place. */
static void partial_note(const struct job *j, char *buf, size_t n)
{
    buf[0] = '\0';
    const struct copy_publish *p = j->publish;
    if (!p || !p->partial_url)
        return;
    int k;
    if (p->restart)
        k = snprintf(buf, n, "; '%s' was not created: qcow2 targets restart "
                     "from 0", j->target);
    else
        k = snprintf(buf, n, "; '%s' is not published yet: the partial file "
                     ".%s.imgfs-partial next to it keeps the bytes copied, "
                     "and resume = yes continues it", j->target,
                     p->final_name);
    if (k < 0 || (size_t)k >= n)
        buf[0] = '\0';             /* too long to say: left out */
}

/* The end of a kept job that did not finish: its target flushed (or not),
 * save where it can resume. */
static void end_flushed(void *opaque, int err)
{
    struct job *j = opaque;
    uint64_t wm = err ? j->durable : j->watermark;
    char why[600], note[400];
    partial_note(j, note, sizeof note);
    if (j->final_state == JOB_FAILED)
        snprintf(why, sizeof why, "%s", j->error);
    else
        if (snprintf(why, sizeof why, "the mount was unmounted while the "
                     "job ran%s", note) < 0)
            why[0] = '\0';
    persist_write(j, j->final_state == JOB_FAILED ? "failed" : "interrupted",
                  wm, why);
    if (loop_defer(fs_global->loop, job_cleanup, j) < 0)
        job_cleanup(j);
}

static void job_done(void *opaque, const struct copy_progress *final)
{
    struct job *j = opaque;
    if (j->ckpt_timer) {
        loop_cancel_timer(fs_global->loop, j->ckpt_timer);
        j->ckpt_timer = 0;
    }
    pthread_mutex_lock(&fs_global->jobs_lock);
    j->total = final->total;
    j->done = final->done;
    j->watermark = final->watermark;
    j->end_ns = loop_now_ns();
    j->err = final->err;
    if (final->state == COPY_FAILED) {
        char note[400];
        partial_note(j, note, sizeof note);
        if (snprintf(j->error, sizeof j->error, "%s%s", final->error,
                     note) < 0)
            j->error[0] = '\0';
    } else {
        snprintf(j->error, sizeof j->error, "%s", final->error);
    }
    /* j->state changes in job_cleanup, once nothing refers to the job any
     * more: from then on a FUSE thread may forget (free) it. */
    j->final_state = final->state == COPY_DONE ? JOB_DONE
                   : final->state == COPY_CANCELLED ? JOB_CANCELLED
                                                    : JOB_FAILED;
    pthread_mutex_unlock(&fs_global->jobs_lock);
    if (final->state != COPY_DONE)
        syslog(LOG_NOTICE, "imgfs: job %s %s at watermark %llu%s%s", j->name,
               j->state == JOB_CANCELLED ? "cancelled" : "failed",
               (unsigned long long)final->watermark,
               final->error[0] ? ": " : "", final->error);
    if (j->persist) {
        bool keep = final->state == COPY_FAILED ||
                    (final->state == COPY_CANCELLED && shutting_down);
        if (keep && j->dst) {
            /* The final watermark is durable once this flush completed. */
            image_flush(j->dst, end_flushed, j);
            return;
        }
        if (keep)
            persist_write(j, final->state == COPY_FAILED ? "failed"
                                                         : "interrupted",
                          j->durable, final->error);
        else
            persist_remove(j);
    }
    if (loop_defer(fs_global->loop, job_cleanup, j) < 0)
        job_cleanup(j);
}

static bool is_file_node(const struct node *n)
{
    return n && (n->kind == NODE_IMAGE || n->kind == NODE_NFSFILE);
}

/* What the job may do to its target: create it in an NFS directory
 * (copy_open writes a new file or a qcow2 target as a partial file and
 * publishes it when complete, and writes an existing raw file in place;
 * copy-open.h), replace it (overwrite = yes), or write it in place
 * (top-level images).  A resume continues the partial file or the file
 * written in place.  Returns 0 or -errno with `em` set. */
static int target_policy(const struct copy_spec *spec, struct node *dst,
                         bool resume, struct copy_endpoints *ep,
                         struct errmsg *em)
{
    if (dst->kind == NODE_IMAGE) {
        /* Top-level images are block-device-like: written in place. */
        ep->create = false;
        ep->overwrite = true;
        return 0;
    }
    struct stat st;
    bool exists = node_attr(dst, &st) == 0;
    uint64_t old_size = exists ? (uint64_t)st.st_size : 0;
    if (exists && old_size > 0 && !spec->overwrite && !resume) {
        errmsg_set(em, "target '%s' exists and is not empty (set "
                   "overwrite = yes to replace it)", spec->target);
        return -EEXIST;
    }
    ep->overwrite = spec->overwrite || resume;
    ep->create = true;
    return 0;
}

/* Open both images through copy_open (the path imgfs copy takes) and start
 * the engine.  `resume`: the previous run of this job stopped on the same
 * target at `prev_watermark`, and the spec asks to resume. */
static int open_and_start(struct job *j, struct copy_spec *spec,
                          struct node *dst,
                          const char *src_url, const char *dst_url,
                          bool prev_resumable, uint64_t prev_watermark,
                          struct errmsg *em)
{
    /* A created qcow2 target restarts from 0 (copy-open.h). */
    bool resume = spec->resume && prev_resumable &&
                  (dst->kind == NODE_IMAGE ||
                   spec->target_format != IMAGE_FORMAT_QCOW2);
    struct copy_endpoints ep = { .source_url = src_url,
                                 .target_url = dst_url,
                                 .source_label = spec->source,
                                 .target_label = spec->target };
    int r = target_policy(spec, dst, resume, &ep, em);
    if (r < 0)
        return r;
    spec->copy.start_offset = resume ? prev_watermark : 0;
    struct copy_session cs;
    r = copy_open(fs_global->loop, spec, &ep, &cs, em);
    if (r < 0)
        return r;
    j->src = cs.src;
    j->dst = cs.dst;
    if (cs.publish.partial_url) {
        j->publish = malloc(sizeof *j->publish);
        if (!j->publish) {
            copy_session_close(&cs, NULL);
            j->src = j->dst = NULL;
            errmsg_set(em, "out of memory");
            return -ENOMEM;
        }
        *j->publish = cs.publish;
    }
    pthread_mutex_lock(&fs_global->jobs_lock);
    j->cj = cs.job;
    j->state = JOB_RUNNING;
    j->total = j->src->size;
    j->done = spec->copy.start_offset;
    j->watermark = spec->copy.start_offset;
    j->resumed = resume;
    j->resumed_from = spec->copy.start_offset;
    j->start_ns = loop_now_ns();
    /* A rate written to x.rate while the job was queued wins over its
     * text's. */
    uint64_t own = j->rate_pending ? j->rate : spec->copy.rate;
    j->rate_pending = false;
    j->rate = j->rate_applied = own;
    pthread_mutex_unlock(&fs_global->jobs_lock);
    if (own != spec->copy.rate)
        copy_job_set_rate(cs.job, own);
    fs_global->active_jobs++;
    /* The resume point was durable: the previous run saved it so. */
    j->durable = spec->copy.start_offset;
    j->persist = fs_global->state_dir != NULL;
    if (j->persist)
        persist_write(j, "running", j->durable, NULL);
    copy_job_start(cs.job, job_done, j);
    jobs_share_rate();
    ckpt_arm(j);
    return 0;
}

static int job_start_run(struct job *j, bool force_resume);

/* Set while a job the queue held is started: its state file says
 * "queued" and must say what became of it if the start is refused. */
static bool starting_queued;

/* Start a job the memory budget queued (job-queue.h). */
static void start_queued(struct job *j, bool force_resume)
{
    starting_queued = true;
    job_start_run(j, force_resume);
    starting_queued = false;
}

/* Validate, open and start; returns 0, 1 when the job was queued for
 * memory (job-queue.h), or -errno with `em` set. */
static int job_try_start(struct job *j, const char *text, size_t len,
                         bool prev_stopped, uint64_t prev_watermark,
                         const char *prev_target, bool force_resume,
                         struct errmsg *em)
{
    struct copy_spec spec;
    int r = copy_spec_parse(text, len, &spec, em);
    if (r < 0)
        return r;
    if (force_resume)
        spec.resume = true;
    pthread_mutex_lock(&fs_global->jobs_lock);
    snprintf(j->source, sizeof j->source, "%s", spec.source);
    snprintf(j->target, sizeof j->target, "%s", spec.target);
    if (!j->rate_pending)
        j->rate = spec.copy.rate;     /* what x.rate reads while queued */
    pthread_mutex_unlock(&fs_global->jobs_lock);
    r = copy_spec_check(&spec, COPY_SPEC_FILE, em);
    if (r < 0)
        return r;
    r = job_queue_admit(j, &spec, force_resume, start_queued, em);
    if (r < 0)
        return r;
    if (r > 0) {
        /* Kept as queued: the next mount queues it again, resuming at the
         * previous run's watermark if this start would have. */
        bool resume = spec.resume && prev_stopped &&
                      !strcmp(prev_target, spec.target);
        persist_write(j, "queued", resume ? prev_watermark : 0, NULL);
        return 1;
    }
    struct node *src = node_resolve(spec.source, false);
    if (!is_file_node(src)) {
        errmsg_set(em, "source '%s': %s", spec.source,
                   src ? "not an image file" : "no such image");
        return src ? -EINVAL : -ENOENT;
    }
    struct node *dst = node_resolve(spec.target, true);
    if (!is_file_node(dst)) {
        errmsg_set(em, "target '%s': %s", spec.target,
                   dst ? "not an image file" : "no such image or directory");
        return dst ? -EINVAL : -ENOENT;
    }
    /* The job writer's rights, as the kernel checks them on opens. */
    r = job_check_access(j, src, dst, em);
    if (r < 0)
        return r;
    if (src == dst) {
        errmsg_set(em, "source and target are the same image '%s'",
                   spec.source);
        return -EINVAL;
    }
    if (dst->read_only || fs_global->read_only) {
        errmsg_set(em, "target '%s' is read-only", spec.target);
        return -EROFS;
    }
    if (node_busy_for_write(dst) || dst->writers) {
        errmsg_set(em, "target '%s' is busy (%s)", spec.target,
                   dst->writers ? "open for writing"
                                : "used by a running job");
        return -EBUSY;
    }
    if (atomic_load(&src->job_writers)) {
        errmsg_set(em, "source '%s' is busy (the target of a running job)",
                   spec.source);
        return -EBUSY;
    }
    /* Claim both ends before any image is opened: opening spins the loop,
     * and another job start may run meanwhile. */
    atomic_fetch_add(&src->job_readers, 1);
    atomic_fetch_add(&dst->job_writers, 1);
    node_cache_drop(dst);
    j->src_node = src;
    j->dst_node = dst;

    char *src_url = node_url(src), *dst_url = node_url(dst);
    if (!src_url || !dst_url) {
        free(src_url);
        free(dst_url);
        errmsg_set(em, "out of memory");
        return -ENOMEM;
    }
    r = open_and_start(j, &spec, dst, src_url, dst_url, prev_stopped &&
                       !strcmp(prev_target, spec.target), prev_watermark, em);
    free(src_url);
    free(dst_url);
    return r;
}

/* Start (or with force_resume, resume) the job; 0 or -errno. */
static int job_start_run(struct job *j, bool force_resume)
{
    pthread_mutex_lock(&fs_global->jobs_lock);
    /* The outcome of the previous run: j->state already says "starting"
     * (control_op_flush set it, so that nothing starts twice). */
    bool prev_stopped = j->final_state == JOB_FAILED ||
                        j->final_state == JOB_CANCELLED ||
                        j->final_state == JOB_INTERRUPTED;
    enum job_state prev_final = j->final_state;
    uint64_t prev_watermark = j->watermark;
    char prev_target[sizeof j->target];
    memcpy(prev_target, j->target, sizeof prev_target);
    size_t len = j->len;
    char *text = malloc(len + 1);
    if (text && len)
        memcpy(text, j->text, len);
    j->dirty = false;
    j->state = JOB_STARTING;
    j->err = 0;
    j->error[0] = '\0';
    j->source[0] = j->target[0] = '\0';
    j->total = j->done = j->watermark = 0;
    j->resumed = false;
    j->resumed_from = 0;
    j->start_ns = j->end_ns = 0;
    pthread_mutex_unlock(&fs_global->jobs_lock);

    struct errmsg em = { "" };
    int r = text ? job_try_start(j, text, len, prev_stopped, prev_watermark,
                                 prev_target, force_resume, &em)
                 : -ENOMEM;
    free(text);
    if (r > 0)
        return 0;               /* queued: it starts when memory frees */
    if (r < 0) {
        job_queue_release(j);
        close_images(j);
        release_nodes(j);
        job_fail(j, r, em.text[0] ? em.text : strerror(-r));
        syslog(LOG_NOTICE, "imgfs: job %s refused: %s", j->name, em.text);
        if (force_resume && prev_stopped) {
            /* Still resumable where it stopped (its state file too). */
            pthread_mutex_lock(&fs_global->jobs_lock);
            j->watermark = prev_watermark;
            j->final_state = j->state = prev_final;
            pthread_mutex_unlock(&fs_global->jobs_lock);
        }
        if (starting_queued) {
            /* Its "queued" state file: back to where it stopped, or gone
             * (a refused job is not kept). */
            if (force_resume && prev_stopped)
                persist_write(j, prev_final == JOB_FAILED ? "failed"
                                                          : "interrupted",
                              prev_watermark, em.text);
            else
                persist_remove(j);
        }
    }
    return r;
}

void job_start(struct job *j, fuse_req_t req)
{
    int r = job_start_run(j, false);
    fuse_reply_err(req, -r);
}

void job_resume(struct job *j, fuse_req_t req)
{
    int r = job_start_run(j, true);
    if (!req)
        return;
    if (r < 0)
        fuse_reply_err(req, -r);
    else
        control_op_getattr(req, j->jobnode);
}

static void resume_on_loop(void *opaque)
{
    job_resume(opaque, NULL);
}

void jobs_resume_all(void)
{
    pthread_mutex_lock(&fs_global->jobs_lock);
    for (size_t i = 0; i < fs_global->njobs; i++) {
        struct job *j = fs_global->jobs[i];
        if (j->state != JOB_INTERRUPTED)
            continue;
        j->state = JOB_STARTING;
        if (loop_post(fs_global->loop, resume_on_loop, j) < 0)
            j->state = JOB_INTERRUPTED;
    }
    pthread_mutex_unlock(&fs_global->jobs_lock);
}

static void start_kept_on_loop(void *opaque)
{
    struct job *j = opaque;
    pthread_mutex_lock(&fs_global->jobs_lock);
    bool resume = j->final_state == JOB_INTERRUPTED;
    pthread_mutex_unlock(&fs_global->jobs_lock);
    start_queued(j, resume);
}

struct kept_order {
    struct job *j;
    struct timespec when;       /* its state file's mtime: when queued */
};

static int by_when(const void *a, const void *b)
{
    const struct timespec *x = &((const struct kept_order *)a)->when;
    const struct timespec *y = &((const struct kept_order *)b)->when;
    if (x->tv_sec != y->tv_sec)
        return x->tv_sec < y->tv_sec ? -1 : 1;
    return (x->tv_nsec > y->tv_nsec) - (x->tv_nsec < y->tv_nsec);
}

void jobs_requeue_kept(void)
{
    pthread_mutex_lock(&fs_global->jobs_lock);
    size_t n = 0;
    struct kept_order *v = calloc(fs_global->njobs ? fs_global->njobs : 1,
                                  sizeof *v);
    for (size_t i = 0; v && i < fs_global->njobs; i++) {
        struct job *j = fs_global->jobs[i];
        if (j->state != JOB_STARTING || j->cj)
            continue;
        char *path = job_state_path(j->name);
        struct stat sb;
        v[n].j = j;
        if (path && stat(path, &sb) == 0)
            v[n].when = sb.st_mtim;
        free(path);
        n++;
    }
    if (v)
        qsort(v, n, sizeof *v, by_when);
    for (size_t i = 0; i < n; i++) {
        if (loop_post(fs_global->loop, start_kept_on_loop, v[i].j) < 0) {
            v[i].j->state = JOB_FAILED;
            snprintf(v[i].j->error, sizeof v[i].j->error, "out of memory "
                     "queueing the job again at mount");
        }
    }
    pthread_mutex_unlock(&fs_global->jobs_lock);
    free(v);
}

/* ---- kept jobs at mount ------------------------------------------------ */

static bool has_control_char(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return true;
    return false;
}

/* Add the job kept in state file `file` (jobs_lock held). */
static bool load_one(const char *file, void (*warn)(const char *msg))
{
    size_t fl = strlen(file), sl = strlen(JOB_STATE_SUFFIX);
    if (fl <= sl || strcmp(file + fl - sl, JOB_STATE_SUFFIX) != 0)
        return false;
    char name[256];
    if (fl - sl >= sizeof name)
        return false;
    memcpy(name, file, fl - sl);
    name[fl - sl] = '\0';
    if (has_control_char(name) || job_find_locked(name))
        return false;
    char *path = job_state_path(name);
    if (!path)
        return false;
    struct kept_job st;
    struct errmsg em = { "" };
    int r = job_state_read(path, &st, &em);
    free(path);
    if (r < 0) {
        if (!em.text[0])
            errmsg_set(&em, "state file of job %s: %s", name, strerror(-r));
        warn(em.text);
        return false;
    }
    bool failed = !strcmp(st.state, "failed");
    bool queued = !strcmp(st.state, "queued");
    struct job *j = job_create_locked(name);
    if (!j || (st.len && !(j->text = malloc(st.len)))) {
        job_state_free(&st);
        return false;
    }
    if (st.len)
        memcpy(j->text, st.text, st.len);
    j->len = j->cap = st.len;
    j->job_visible = true;
    j->state = j->final_state = failed ? JOB_FAILED : JOB_INTERRUPTED;
    j->watermark = j->done = st.watermark;
    j->total = st.total;
    snprintf(j->source, sizeof j->source, "%s", st.source);
    snprintf(j->target, sizeof j->target, "%s", st.target);
    if (!strcmp(st.state, "running"))
        snprintf(j->error, sizeof j->error, "the mount ended while the job "
                 "ran (killed, or the machine stopped)");
    else
        snprintf(j->error, sizeof j->error, "%s",
                 st.error[0] ? st.error : "-");
    j->err = failed ? -EIO : -EINTR;
    if (queued) {
        /* Waiting for memory when the mount ended: queued again by
         * jobs_requeue_kept, resuming at its watermark if one is kept. */
        j->state = JOB_STARTING;
        j->final_state = st.watermark ? JOB_INTERRUPTED : JOB_NEW;
        j->err = 0;
        j->error[0] = '\0';
    }
    j->writer.uid = st.uid;
    j->writer.gid = st.gid;
    j->writer.groups_incomplete = true;
    job_state_free(&st);
    return true;
}

size_t jobs_load_state(void (*warn)(const char *msg))
{
    if (!fs_global->state_dir)
        return 0;
    DIR *d = opendir(fs_global->state_dir);
    if (!d)
        return 0;
    size_t n = 0;
    struct dirent *e;
    pthread_mutex_lock(&fs_global->jobs_lock);
    while ((e = readdir(d))) {
        size_t l = strlen(e->d_name);
        if (l > 4 && !strcmp(e->d_name + l - 4, ".tmp")) {
            /* A write that never reached its rename. */
            unlinkat(dirfd(d), e->d_name, 0);
            continue;
        }
        n += load_one(e->d_name, warn);
    }
    pthread_mutex_unlock(&fs_global->jobs_lock);
    closedir(d);
    return n;
}

/* ---- cancel / shutdown ------------------------------------------------- */

void job_cancel(struct job *j, fuse_req_t req)
{
    pthread_mutex_lock(&fs_global->jobs_lock);
    bool running = j->cj != NULL;
    bool was_queued = !running && job_queue_drop_locked(j);
    if (was_queued) {
        j->state = j->final_state = JOB_CANCELLED;
        snprintf(j->error, sizeof j->error, "cancelled while queued");
    }
    if (running && req) {
        fuse_req_t *v = realloc(j->unlink_reqs,
                                (j->n_unlink_reqs + 1) * sizeof *v);
        if (v) {
            j->unlink_reqs = v;
            v[j->n_unlink_reqs++] = req;
            req = NULL;
        }
    }
    struct copy_job *cj = j->cj;
    pthread_mutex_unlock(&fs_global->jobs_lock);
    if (was_queued)
        persist_remove(j);
    if (cj)
        copy_job_cancel(cj);
    if (req)
        fuse_reply_err(req, 0);
}

void jobs_cancel_all(void)
{
    shutting_down = true;
    job_queue_clear();
    pthread_mutex_lock(&fs_global->jobs_lock);
    size_t n = fs_global->njobs;
    struct copy_job **v = calloc(n ? n : 1, sizeof *v);
    for (size_t i = 0; v && i < n; i++)
        v[i] = fs_global->jobs[i]->cj;
    pthread_mutex_unlock(&fs_global->jobs_lock);
    for (size_t i = 0; v && i < n; i++)
        if (v[i])
            copy_job_cancel(v[i]);
    free(v);
}

void jobs_report_stopped(void)
{
    /* The status files go away with the mount: say where each stopped
     * job left its target (stderr with -f; syslog from job_done). */
    pthread_mutex_lock(&fs_global->jobs_lock);
    for (size_t i = 0; i < fs_global->njobs; i++) {
        struct job *j = fs_global->jobs[i];
        if (j->state == JOB_CANCELLED || j->state == JOB_FAILED)
            fprintf(stderr, "imgfs: job %s (%s -> %s) %s at watermark "
                    "%llu\n", j->name, j->source, j->target,
                    j->state == JOB_CANCELLED ? "cancelled" : "failed",
                    (unsigned long long)j->watermark);
    }
    pthread_mutex_unlock(&fs_global->jobs_lock);
}

/* ---- status ------------------------------------------------------------ */

static const char *state_name(enum job_state s)
{
    switch (s) {
    case JOB_NEW:
    case JOB_STARTING: return "queued";
    case JOB_RUNNING: return "running";
    case JOB_DONE: return "done";
    case JOB_FAILED: return "failed";
    case JOB_CANCELLED: return "cancelled";
    case JOB_INTERRUPTED: return "interrupted";
    }
    return "?";
}

static double mib(uint64_t b)
{
    return (double)b / (1024.0 * 1024.0);
}

/* What the status files show of job `j` (jobs_lock held). */
struct job_view {
    uint64_t total, done, wm, verified;
    const char *phase;          /* "flushing", "verifying" or NULL */
    double elapsed;             /* seconds of this run */
    double rate;                /* bytes/s over the run */
    uint64_t limit;             /* bytes/s in force, 0: none */
};

static void job_view_locked(struct job *j, struct job_view *v)
{
    *v = (struct job_view){ .total = j->total, .done = j->done,
                            .wm = j->watermark };
    uint64_t now = loop_now_ns();
    uint64_t end = j->end_ns ? j->end_ns : now;
    if (j->cj && j->state == JOB_RUNNING && !j->end_ns) {
        struct copy_progress p;
        copy_job_progress(j->cj, &p);
        v->total = p.total;
        v->done = p.done;
        v->wm = p.watermark;
        v->verified = p.verified;
        if (p.state == COPY_FLUSHING)
            v->phase = "flushing";
        else if (p.state == COPY_VERIFYING)
            v->phase = "verifying";
    }
    v->elapsed = j->start_ns && end > j->start_ns
               ? (double)(end - j->start_ns) / 1e9 : 0.0;
    v->rate = v->elapsed > 0 ? (double)v->done / v->elapsed : 0.0;
    v->limit = j->cj ? j->rate_applied : j->rate;
}

char *job_status_text_locked(struct job *j)
{
    char *s = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&s, &len);
    if (!f)
        return NULL;
    struct job_view v;
    job_view_locked(j, &v);
    uint64_t total = v.total, done = v.done, wm = v.wm;
    uint64_t verified = v.verified;
    const char *phase = v.phase;
    double elapsed = v.elapsed, rate = v.rate;
    fprintf(f, "state: %s\n", state_name(j->state));
    char why[200];
    if (job_queue_why_locked(j, why, sizeof why))
        fprintf(f, "queued: waiting for %s\n", why);
    if (phase)
        fprintf(f, "phase: %s\n", phase);
    fprintf(f, "source: %s\n", j->source);
    fprintf(f, "target: %s\n", j->target);
    fprintf(f, "bytes-total: %llu\n", (unsigned long long)total);
    fprintf(f, "bytes-done: %llu\n", (unsigned long long)done);
    fprintf(f, "watermark: %llu\n", (unsigned long long)wm);
    if (j->resumed)
        fprintf(f, "resumed-from: %llu\n",
                (unsigned long long)j->resumed_from);
    if (phase && !strcmp(phase, "verifying"))
        fprintf(f, "bytes-verified: %llu\n", (unsigned long long)verified);
    fprintf(f, "rate: %.1f MiB/s\n", rate / (1024.0 * 1024.0));
    char lim[32], own[32], all[32];
    fprintf(f, "rate-limit: %s", v.limit ? strcat(rate_format(lim, 24,
                                                  v.limit), "/s")
                                         : "unlimited");
    if (fs_global->rate)
        fprintf(f, " (job: %s, mount: %s/s shared by the running jobs)",
                j->rate ? strcat(rate_format(own, 24, j->rate), "/s")
                        : "unlimited",
                rate_format(all, 24, fs_global->rate));
    fputc('\n', f);
    fprintf(f, "elapsed: %.1f s\n", elapsed);
    if (j->state == JOB_RUNNING && rate > 0 && total >= done)
        fprintf(f, "eta: %.0f s\n", (double)(total - done) / rate);
    else
        fprintf(f, "eta: -\n");
    struct mem_budget_usage mu;
    mem_budget_usage(&mu);
    fprintf(f, "mount-memory: %.1f of %.1f MiB in use (jobs %.1f, "
            "copy_file_range %.1f, read-ahead %.1f), peak %.1f MiB\n",
            mib(mu.jobs + mu.ranges + mu.readahead), mib(mu.total),
            mib(mu.jobs), mib(mu.ranges), mib(mu.readahead), mib(mu.peak));
    fprintf(f, "error: %s\n", j->error[0] ? j->error : "-");
    fclose(f);
    return s;
}

char *job_json_text_locked(struct job *j)
{
    struct job_view v;
    job_view_locked(j, &v);
    const char *state = v.phase ? v.phase : state_name(j->state);
    double rate = v.elapsed > 0 && v.done >= j->resumed_from
                ? (double)(v.done - j->resumed_from) / v.elapsed : 0.0;
    double eta = -1;
    if (j->state == JOB_DONE)
        eta = 0;
    else if (j->state == JOB_RUNNING && rate > 0 && v.total >= v.done)
        eta = (double)(v.total - v.done) / rate;
    struct status_json sj = {
        .job = j->name, .state = state, .bytes_done = v.done,
        .bytes_total = v.total, .watermark = v.wm, .rate = rate,
        .rate_limit = v.limit, .eta_s = eta, .error = j->error,
    };
    return status_json_format(&sj);
}

char *job_rate_text_locked(struct job *j)
{
    char buf[32], *s = NULL;
    if (asprintf(&s, "%s\n", rate_format(buf, sizeof buf, j->rate)) < 0)
        return NULL;
    return s;
}

/* ---- rate limits (copier/rate.h) --------------------------------------- */

void jobs_share_rate(void)
{
    pthread_mutex_lock(&fs_global->jobs_lock);
    size_t n = 0;
    for (size_t i = 0; i < fs_global->njobs; i++)
        n += fs_global->jobs[i]->cj != NULL;
    uint64_t *own = n ? calloc(2 * n, sizeof *own) : NULL;
    size_t k = 0;
    for (size_t i = 0; own && i < fs_global->njobs; i++)
        if (fs_global->jobs[i]->cj)
            own[k++] = fs_global->jobs[i]->rate;
    if (own)
        rate_fair_share(fs_global->rate, own, n, own + n);
    k = 0;
    for (size_t i = 0; i < fs_global->njobs; i++) {
        struct job *j = fs_global->jobs[i];
        if (!j->cj)
            continue;
        /* Without memory for the shares, each job keeps its own limit
         * (and the mount's whole limit when it has none). */
        uint64_t r = own ? own[n + k++]
                   : j->rate ? j->rate : fs_global->rate;
        if (copy_job_set_rate(j->cj, r) == 0)
            j->rate_applied = r;
    }
    pthread_mutex_unlock(&fs_global->jobs_lock);
    free(own);
}

int job_set_rate(const char *name, uint64_t rate)
{
    pthread_mutex_lock(&fs_global->jobs_lock);
    struct job *j = job_find_locked(name);
    bool running = j && j->cj && j->state == JOB_RUNNING;
    char why[8];
    bool queued = j && !j->cj && job_queue_why_locked(j, why, sizeof why);
    if (running || queued)
        j->rate = rate;
    if (queued)
        j->rate_pending = true;
    pthread_mutex_unlock(&fs_global->jobs_lock);
    if (!running && !queued)
        return -ESRCH;
    if (running)
        jobs_share_rate();
    return 0;
}
