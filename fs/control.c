/* control.c — the control/ directory: x.job files that start jobs when
 * closed, x.status files generated at open, rm to cancel or forget.
 *
 *  - create/open for writing of x.job: refused with EBUSY while job x
 *    runs; otherwise the text is (re)written in memory;
 *  - flush (close) of a handle that wrote: the job starts on the loop
 *    thread; the flush answers 0, or the errno of the refusal (the reason
 *    goes to x.status); a handle that created or truncated x.job counts
 *    as one that wrote, and a job file with nothing but blank lines and
 *    comments fails at once (EINVAL, "empty job file: ...");
 *  - x.status: `key: value` text built at open (direct_io: no size is
 *    cached, `cat` and `watch` see fresh content on every open);
 *  - x.json: the same status as one JSON line (copier/status-json.h);
 *  - x.rate: reads the job's own rate limit ("50M", "0": none); a write
 *    of one whole value (rate_parse: "50M", "50M/s", "0") changes the
 *    running job's limit at once, a queued job's when it starts
 *    (EINVAL/ERANGE: a bad value, ESRCH: the job is neither running nor
 *    queued); rm of either fails with EPERM;
 *  - rm x.job: cancels a running job (answered once it stopped; x.status
 *    stays) or forgets a finished one; rm x.status forgets a stopped job;
 *    forgetting a job removes its state file (jobs.c);
 *  - touch x.job (setattr of times only) on an interrupted job — one the
 *    previous mount left running, found in the state directory — resumes
 *    it at its watermark (job_resume); the touch fails with the errno of
 *    a refusal;
 *  - whoever creates, writes or truncates x.job becomes its writer
 *    (j->writer: uid, gid, groups of the request); the job starts only if
 *    that writer may read its source and write its target (access.c).
 *    Owner, group and modes of control/ files come from -o uid/gid/umask.
 */
#include "fs.h"
#include "job-queue.h"

#include "copier/rate.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define JOB_TEXT_MAX (1024 * 1024)

/* "x.job" -> "x" with kind; returns false when `name` is neither. */
bool control_parse_name(const char *name, char *base, size_t cap,
                        enum node_kind *kind)
{
    size_t l = strlen(name);
    const char *suffix = NULL;
    if (l > 4 && !strcmp(name + l - 4, ".job")) {
        suffix = name + l - 4;
        *kind = NODE_JOBFILE;
    } else if (l > 7 && !strcmp(name + l - 7, ".status")) {
        suffix = name + l - 7;
        *kind = NODE_STATUSFILE;
    } else if (l > 5 && !strcmp(name + l - 5, ".rate")) {
        suffix = name + l - 5;
        *kind = NODE_RATEFILE;
    } else if (l > 5 && !strcmp(name + l - 5, ".json")) {
        suffix = name + l - 5;
        *kind = NODE_JSONFILE;
    }
    if (!suffix || (size_t)(suffix - name) >= cap)
        return false;
    memcpy(base, name, (size_t)(suffix - name));
    base[suffix - name] = '\0';
    return true;
}

static void job_attr_locked(struct node *n, struct stat *st)
{
    memset(st, 0, sizeof *st);
    st->st_ino = n->ino;
    st->st_uid = fs_global->uid;
    st->st_gid = fs_global->gid;
    st->st_nlink = 1;
    st->st_blksize = 4096;
    struct job *j = n->job;
    /* Modes from -o umask: with default_permissions they decide who may
     * write jobs and read their status. */
    if (n->kind == NODE_JOBFILE) {
        st->st_mode = S_IFREG | (0666 & ~fs_global->umask);
        st->st_size = j ? (off_t)j->len : 0;
    } else if (n->kind == NODE_RATEFILE) {
        st->st_mode = S_IFREG | (0666 & ~fs_global->umask);
        st->st_size = 0;
    } else {
        st->st_mode = S_IFREG | (0444 & ~fs_global->umask);
        st->st_size = 0;
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    st->st_atim = st->st_mtim = st->st_ctim = ts;
}

/* The text of a generated file (x.status, x.json, x.rate) of job `j`,
 * made now (malloc'd; jobs_lock held). */
static char *generated_text_locked(struct node *n, struct job *j)
{
    switch (n->kind) {
    case NODE_STATUSFILE: return job_status_text_locked(j);
    case NODE_JSONFILE: return job_json_text_locked(j);
    case NODE_RATEFILE: return job_rate_text_locked(j);
    default: return NULL;
    }
}

/* Job `j`'s control node of `kind`. */
static struct node *job_node(struct job *j, enum node_kind kind)
{
    switch (kind) {
    case NODE_JOBFILE: return j->jobnode;
    case NODE_RATEFILE: return j->ratenode;
    case NODE_JSONFILE: return j->jsonnode;
    default: return j->statusnode;
    }
}

/* Fill the entry for a control node (jobs_lock held). */
static void entry_locked(struct node *n, struct fuse_entry_param *e)
{
    memset(e, 0, sizeof *e);
    e->ino = n->ino;
    job_attr_locked(n, &e->attr);
    if (n->kind != NODE_JOBFILE) {
        char *s = generated_text_locked(n, n->job);
        e->attr.st_size = s ? (off_t)strlen(s) : 0;
        free(s);
    }
    e->attr_timeout = 0;
    e->entry_timeout = 0;
}

void control_op_lookup(fuse_req_t req, const char *name)
{
    char base[256];
    enum node_kind kind;
    if (!control_parse_name(name, base, sizeof base, &kind)) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    struct fuse_entry_param e;
    pthread_mutex_lock(&fs_global->jobs_lock);
    struct job *j = job_find_locked(base);
    if (!j || (kind == NODE_JOBFILE && !j->job_visible)) {
        pthread_mutex_unlock(&fs_global->jobs_lock);
        fuse_reply_err(req, ENOENT);
        return;
    }
    entry_locked(job_node(j, kind), &e);
    pthread_mutex_unlock(&fs_global->jobs_lock);
    fuse_reply_entry(req, &e);
}

int control_list(struct dirlist *l)
{
    int r = 0;
    pthread_mutex_lock(&fs_global->jobs_lock);
    for (size_t i = 0; i < fs_global->njobs && r == 0; i++) {
        struct job *j = fs_global->jobs[i];
        if (j->job_visible)
            r = dirlist_add(l, j->jobnode->name, S_IFREG | 0644,
                            j->jobnode->ino);
        if (r == 0)
            r = dirlist_add(l, j->statusnode->name, S_IFREG | 0444,
                            j->statusnode->ino);
        if (r == 0)
            r = dirlist_add(l, j->ratenode->name, S_IFREG | 0644,
                            j->ratenode->ino);
        if (r == 0)
            r = dirlist_add(l, j->jsonnode->name, S_IFREG | 0444,
                            j->jsonnode->ino);
    }
    pthread_mutex_unlock(&fs_global->jobs_lock);
    return r;
}

static bool job_active(const struct job *j)
{
    return j->state == JOB_STARTING || j->state == JOB_RUNNING;
}

/* Reset job text for a new writer (jobs_lock held). */
static void reset_text_locked(struct job *j)
{
    j->len = 0;
    j->dirty = true;
}

/* True if `s` holds a control character (0x01-0x1f, 0x7f): job names
 * reach status files, `imgfs wait` output and the system log, where a
 * newline or an escape sequence would forge or hide lines. */
static bool has_control_char(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return true;
    return false;
}

bool control_name_creatable(const char *name, char *base, size_t cap)
{
    enum node_kind kind;
    /* only x.job can be created, x without control characters */
    return control_parse_name(name, base, cap, &kind) && base[0] &&
           kind == NODE_JOBFILE && !has_control_char(base);
}

bool control_touch_resumes(const struct job *j, enum node_kind kind,
                           int to_set)
{
    const int times = FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME |
                      FUSE_SET_ATTR_ATIME_NOW | FUSE_SET_ATTR_MTIME_NOW;
    return j && kind == NODE_JOBFILE && (to_set & times) &&
           !(to_set & FUSE_SET_ATTR_SIZE) && j->state == JOB_INTERRUPTED;
}

void control_op_create(fuse_req_t req, const char *name,
                       struct fuse_file_info *fi)
{
    char base[256];
    if (!control_name_creatable(name, base, sizeof base)) {
        fuse_reply_err(req, EINVAL);
        return;
    }
    struct handle *h = calloc(1, sizeof *h);
    if (!h) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    struct access_cred cred;
    access_cred_from_req(req, &cred);
    pthread_mutex_lock(&fs_global->jobs_lock);
    struct job *j = job_find_locked(base);
    if (j && job_active(j)) {
        pthread_mutex_unlock(&fs_global->jobs_lock);
        free(h);
        fuse_reply_err(req, EBUSY);
        return;
    }
    if (!j)
        j = job_create_locked(base);
    if (!j) {
        pthread_mutex_unlock(&fs_global->jobs_lock);
        free(h);
        fuse_reply_err(req, ENOMEM);
        return;
    }
    if (!j->job_visible || (fi->flags & O_TRUNC) || j->state != JOB_NEW)
        reset_text_locked(j);
    j->writer = cred;           /* a job never runs with no one's rights */
    if (j->state != JOB_NEW) {
        /* Keep the old outcome for resume until the new text starts. */
        j->state = j->state == JOB_DONE ? JOB_NEW : j->state;
    }
    j->job_visible = true;
    h->node = j->jobnode;
    h->write = true;
    h->wrote = true;            /* a created file is a job, even if empty */
    struct fuse_entry_param e;
    entry_locked(j->jobnode, &e);
    pthread_mutex_unlock(&fs_global->jobs_lock);
    fi->fh = (uint64_t)(uintptr_t)h;
    fi->direct_io = 1;
    if (fuse_reply_create(req, &e, fi) != 0)
        free(h);
}

void control_op_getattr(fuse_req_t req, struct node *n)
{
    struct fuse_entry_param e;
    pthread_mutex_lock(&fs_global->jobs_lock);
    if (!n->job) {
        pthread_mutex_unlock(&fs_global->jobs_lock);
        fuse_reply_err(req, ENOENT);
        return;
    }
    entry_locked(n, &e);
    pthread_mutex_unlock(&fs_global->jobs_lock);
    fuse_reply_attr(req, &e.attr, 0);
}

struct start_ctx {
    fuse_req_t req;
    struct job *job;
};

static void resume_on_loop(void *opaque)
{
    struct start_ctx *c = opaque;
    job_resume(c->job, c->req);
    free(c);
}

void control_op_setattr(fuse_req_t req, struct node *n, struct stat *attr,
                        int to_set)
{
    struct access_cred cred;
    access_cred_from_req(req, &cred);
    pthread_mutex_lock(&fs_global->jobs_lock);
    struct job *j = n->job;
    int err = 0;
    if (control_touch_resumes(j, n->kind, to_set)) {
        /* touch x.job resumes an interrupted job at its watermark. */
        j->state = JOB_STARTING;
        j->writer = cred;
        pthread_mutex_unlock(&fs_global->jobs_lock);
        struct start_ctx *c = malloc(sizeof *c);
        if (c) {
            c->req = req;
            c->job = j;
        }
        if (!c || fs_post(resume_on_loop, c) < 0) {
            free(c);
            pthread_mutex_lock(&fs_global->jobs_lock);
            j->state = JOB_INTERRUPTED;
            pthread_mutex_unlock(&fs_global->jobs_lock);
            fuse_reply_err(req, ENOMEM);
        }
        return;
    }
    if (!j) {
        err = ENOENT;
    } else if ((to_set & FUSE_SET_ATTR_SIZE) && n->kind == NODE_RATEFILE) {
        /* `echo 50M > x.rate` truncates first: nothing to do */
    } else if (to_set & FUSE_SET_ATTR_SIZE) {
        if (n->kind != NODE_JOBFILE)
            err = EACCES;
        else if (job_active(j))
            err = EBUSY;
        else if ((uint64_t)attr->st_size > j->len)
            err = EINVAL;
        else {
            j->len = (size_t)attr->st_size;
            j->dirty = true;
            j->writer = cred;
        }
    }
    pthread_mutex_unlock(&fs_global->jobs_lock);
    if (err)
        fuse_reply_err(req, err);
    else
        control_op_getattr(req, n);
}

void control_op_open(fuse_req_t req, struct node *n,
                     struct fuse_file_info *fi)
{
    bool write = (fi->flags & O_ACCMODE) != O_RDONLY;
    struct handle *h = calloc(1, sizeof *h);
    if (!h) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    h->node = n;
    h->write = write;
    int err = 0;
    struct access_cred cred;
    if (write)
        access_cred_from_req(req, &cred);
    pthread_mutex_lock(&fs_global->jobs_lock);
    struct job *j = n->job;
    if (!j) {
        err = ENOENT;
    } else if (n->kind == NODE_RATEFILE && write) {
        /* written values are checked and applied as they come
         * (control_op_write) */
    } else if (n->kind != NODE_JOBFILE) {
        if (write)
            err = EACCES;
        else {
            h->text = generated_text_locked(n, j);
            h->len = h->text ? strlen(h->text) : 0;
            if (!h->text)
                err = ENOMEM;
        }
    } else if (write) {
        if (job_active(j))
            err = EBUSY;
        else if (fi->flags & O_TRUNC) {
            reset_text_locked(j);
            j->writer = cred;
            h->wrote = true;    /* emptied: checked at close like a write */
        }
    }
    pthread_mutex_unlock(&fs_global->jobs_lock);
    if (err) {
        free(h->text);
        free(h);
        fuse_reply_err(req, err);
        return;
    }
    fi->fh = (uint64_t)(uintptr_t)h;
    fi->direct_io = 1;
    if (fuse_reply_open(req, fi) != 0) {
        free(h->text);
        free(h);
    }
}

void control_op_read(fuse_req_t req, struct node *n, size_t size, off_t off,
                     struct fuse_file_info *fi)
{
    struct handle *h = (struct handle *)(uintptr_t)fi->fh;
    if (n->kind != NODE_JOBFILE) {
        size_t o = (size_t)off < h->len ? (size_t)off : h->len;
        size_t l = h->len - o < size ? h->len - o : size;
        /* Reply from a copy: once the reader has its data it may close,
         * and the release (another thread) frees h->text. */
        char *copy = malloc(l ? l : 1);
        if (!copy) {
            fuse_reply_err(req, ENOMEM);
            return;
        }
        if (l)
            memcpy(copy, h->text + o, l);
        fuse_reply_buf(req, copy, l);
        free(copy);
        return;
    }
    pthread_mutex_lock(&fs_global->jobs_lock);
    struct job *j = n->job;
    if (!j) {
        pthread_mutex_unlock(&fs_global->jobs_lock);
        fuse_reply_err(req, ENOENT);
        return;
    }
    size_t o = (size_t)off < j->len ? (size_t)off : j->len;
    size_t l = j->len - o < size ? j->len - o : size;
    char *copy = malloc(l ? l : 1);
    if (copy)
        memcpy(copy, j->text + o, l);
    pthread_mutex_unlock(&fs_global->jobs_lock);
    if (!copy)
        fuse_reply_err(req, ENOMEM);
    else
        fuse_reply_buf(req, copy, l);
    free(copy);
}

struct rate_ctx {
    fuse_req_t req;
    size_t size;
    uint64_t rate;
    char name[256];
};

static void rate_on_loop(void *opaque)
{
    struct rate_ctx *c = opaque;
    int r = job_set_rate(c->name, c->rate);
    if (r < 0)
        fuse_reply_err(c->req, -r);
    else
        fuse_reply_write(c->req, c->size);
    free(c);
}

/* A write to x.rate: one whole value ("50M", "50M/s", "0"; rate_parse)
 * at offset 0, applied to the running job at once (to a queued one when
 * it starts).  EINVAL: not a rate; ERANGE: outside 0 or
 * RATE_MIN..RATE_MAX; ESRCH: the job is neither running nor queued. */
static void rate_write(fuse_req_t req, struct node *n, const char *buf,
                       size_t size, off_t off)
{
    char text[64];
    uint64_t rate;
    if (off != 0 || size >= sizeof text) {
        fuse_reply_err(req, EINVAL);
        return;
    }
    memcpy(text, buf, size);
    text[size] = '\0';
    int r = rate_parse(text, &rate);
    if (r < 0) {
        fuse_reply_err(req, -r);
        return;
    }
    struct rate_ctx *c = calloc(1, sizeof *c);
    if (!c) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    c->req = req;
    c->size = size;
    c->rate = rate;
    pthread_mutex_lock(&fs_global->jobs_lock);
    if (n->job)
        snprintf(c->name, sizeof c->name, "%s", n->job->name);
    pthread_mutex_unlock(&fs_global->jobs_lock);
    if (!c->name[0] || fs_post(rate_on_loop, c) < 0) {
        fuse_reply_err(req, c->name[0] ? ENOMEM : ENOENT);
        free(c);
    }
}

void control_op_write(fuse_req_t req, struct node *n, const char *buf,
                      size_t size, off_t off, struct fuse_file_info *fi)
{
    if (n->kind == NODE_RATEFILE) {
        rate_write(req, n, buf, size, off);
        return;
    }
    struct handle *h = (struct handle *)(uintptr_t)fi->fh;
    int err = 0;
    struct access_cred cred;
    access_cred_from_req(req, &cred);
    pthread_mutex_lock(&fs_global->jobs_lock);
    struct job *j = n->job;
    if (!j || n->kind != NODE_JOBFILE)
        err = j ? EACCES : ENOENT;
    else if (job_active(j))
        err = EBUSY;
    else if ((uint64_t)off + size > JOB_TEXT_MAX)
        err = EFBIG;
    else {
        size_t end = (size_t)off + size;
        if (end > j->cap) {
            size_t cap = end < 4096 ? 4096 : end * 2;
            char *t = realloc(j->text, cap);
            if (!t)
                err = ENOMEM;
            else {
                j->text = t;
                j->cap = cap;
            }
        }
        if (!err) {
            if ((size_t)off > j->len)
                memset(j->text + j->len, 0, (size_t)off - j->len);
            memcpy(j->text + off, buf, size);
            if (end > j->len)
                j->len = end;
            j->dirty = true;
            j->writer = cred;   /* the job runs with the last writer's rights */
            h->wrote = true;
        }
    }
    pthread_mutex_unlock(&fs_global->jobs_lock);
    if (err)
        fuse_reply_err(req, err);
    else
        fuse_reply_write(req, size);
}

/* True if `text` has a line with something besides blanks and a
 * comment: a job file without one would never name an image. */
static bool has_key_line(const char *text, size_t len)
{
    bool comment = false;
    for (size_t i = 0; i < len; i++) {
        char c = text[i];
        if (c == '\n')
            comment = false;
        else if (c == '#')
            comment = true;
        else if (!comment && c != ' ' && c != '\t' && c != '\r')
            return true;
    }
    return false;
}

enum control_flush control_flush_decide(const struct job *j)
{
    if (!j)
        return CONTROL_FLUSH_ENOENT;
    if (!j->dirty || job_active(j))
        return CONTROL_FLUSH_NOTHING;
    if (!has_key_line(j->text, j->len))
        return CONTROL_FLUSH_EMPTY;
    return CONTROL_FLUSH_START;
}

enum control_unlink control_unlink_decide(const struct job *j,
                                          enum node_kind kind)
{
    if (!j || (kind == NODE_JOBFILE && !j->job_visible))
        return CONTROL_UNLINK_ENOENT;
    if (kind == NODE_RATEFILE || kind == NODE_JSONFILE)
        return CONTROL_UNLINK_EPERM;    /* they come and go with the job */
    if (j->state == JOB_STARTING)
        return CONTROL_UNLINK_STARTING;
    if (j->state == JOB_RUNNING)
        return kind == NODE_STATUSFILE ? CONTROL_UNLINK_EBUSY
                                       : CONTROL_UNLINK_CANCEL;
    return CONTROL_UNLINK_FORGET;
}

/* An empty job file (0 bytes, blank lines, comments) fails at once with
 * what a job needs, instead of staying queued (jobs_lock held). */
static void fail_empty_locked(struct job *j)
{
    j->state = j->final_state = JOB_FAILED;
    j->err = -EINVAL;
    j->dirty = false;
    snprintf(j->error, sizeof j->error, "empty job file: a job needs "
             "'source = IMAGE' and 'target = IMAGE' lines");
    j->start_ns = j->end_ns = 0;    /* as a refused job: never ran */
}

static void start_on_loop(void *opaque)
{
    struct start_ctx *c = opaque;
    job_start(c->job, c->req);
    free(c);
}

void control_op_flush(fuse_req_t req, struct node *n,
                      struct fuse_file_info *fi)
{
    struct handle *h = (struct handle *)(uintptr_t)fi->fh;
    if (n->kind != NODE_JOBFILE || !h->write || !h->wrote) {
        fuse_reply_err(req, 0);
        return;
    }
    h->wrote = false;
    pthread_mutex_lock(&fs_global->jobs_lock);
    struct job *j = n->job;
    enum control_flush d = control_flush_decide(j);
    bool start = d == CONTROL_FLUSH_START;
    if (d == CONTROL_FLUSH_EMPTY) {
        fail_empty_locked(j);
        pthread_mutex_unlock(&fs_global->jobs_lock);
        fuse_reply_err(req, EINVAL);
        return;
    }
    if (start)
        j->state = JOB_STARTING;    /* no second start, no more writes */
    pthread_mutex_unlock(&fs_global->jobs_lock);
    if (!start) {
        fuse_reply_err(req, j ? 0 : ENOENT);
        return;
    }
    struct start_ctx *c = malloc(sizeof *c);
    if (c) {
        c->req = req;
        c->job = j;
    }
    if (!c || fs_post(start_on_loop, c) < 0) {
        free(c);
        pthread_mutex_lock(&fs_global->jobs_lock);
        j->state = JOB_FAILED;
        pthread_mutex_unlock(&fs_global->jobs_lock);
        fuse_reply_err(req, ENOMEM);
    }
}

void control_op_release(fuse_req_t req, struct node *n,
                        struct fuse_file_info *fi)
{
    (void)n;
    struct handle *h = (struct handle *)(uintptr_t)fi->fh;
    if (h) {
        free(h->text);
        free(h);
    }
    fuse_reply_err(req, 0);
}

struct cancel_ctx {
    fuse_req_t req;
    struct job *job;
};

static void cancel_on_loop(void *opaque)
{
    struct cancel_ctx *c = opaque;
    job_cancel(c->job, c->req);
    free(c);
}

void control_op_unlink(fuse_req_t req, const char *name)
{
    char base[256];
    enum node_kind kind;
    if (!control_parse_name(name, base, sizeof base, &kind)) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    pthread_mutex_lock(&fs_global->jobs_lock);
    struct job *j = job_find_locked(base);
    enum control_unlink d = control_unlink_decide(j, kind);
    /* A job queued for memory (job-queue.h) is forgotten like a new one. */
    if (d == CONTROL_UNLINK_STARTING)
        d = job_queue_drop_locked(j) ? CONTROL_UNLINK_FORGET
                                     : CONTROL_UNLINK_EBUSY;
    if (d == CONTROL_UNLINK_ENOENT || d == CONTROL_UNLINK_EPERM ||
        d == CONTROL_UNLINK_EBUSY) {
        pthread_mutex_unlock(&fs_global->jobs_lock);
        fuse_reply_err(req, d == CONTROL_UNLINK_ENOENT ? ENOENT
                            : d == CONTROL_UNLINK_EPERM ? EPERM : EBUSY);
        return;
    }
    if (d == CONTROL_UNLINK_CANCEL) {
        j->job_visible = false;
        pthread_mutex_unlock(&fs_global->jobs_lock);
        struct cancel_ctx *c = malloc(sizeof *c);
        if (!c) {
            fuse_reply_err(req, ENOMEM);
            return;
        }
        c->req = req;
        c->job = j;
        if (fs_post(cancel_on_loop, c) < 0) {
            free(c);
            fuse_reply_err(req, ENOMEM);
        }
        return;
    }
    job_forget_locked(j);
    pthread_mutex_unlock(&fs_global->jobs_lock);
    fuse_reply_err(req, 0);
}
