/* fs.h — internal interfaces of the FUSE mount (fs/ only).
 *
 * Threads:
 *  - FUSE worker threads (fuse_session_loop_mt) receive requests.  They
 *    answer pure metadata requests themselves (tree, control/ text) and
 *    hand everything that touches an image or an NFS server to the loop
 *    thread with loop_post().
 *  - The loop thread (backends/loop.h) owns every struct image, the I/O
 *    state of nodes (image-io.c), the copy jobs (jobs.c) and each export's
 *    nfs_dir (backends/nfs-dir.h: NFS metadata, asynchronous, with the
 *    nfs backend's request timeout and reconnects).  It replies to FUSE
 *    from completion callbacks.  An NFS directory request (nfs_call) also
 *    answers FUSE_INTERRUPT with EINTR at once; its completion then only
 *    frees its state.
 *
 * Locks: tree_lock guards the node table and node names/paths; jobs_lock
 * guards the job table and job fields read by FUSE threads.  Lock order:
 * jobs_lock, then tree_lock (never the other way round).
 *
 * Loop-thread callbacks must not spin the loop waiting for a completion
 * that may already be queued behind them (loop.c runs a batch of posted or
 * deferred calls in order); opening and closing images is fine (their
 * completions come through new pollers or new posts).
 */
#ifndef IMGFS_FS_H
#define IMGFS_FS_H

#define FUSE_USE_VERSION 34
#include <fuse_lowlevel.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <time.h>

#include "backends/image-open.h"
#include "backends/loop.h"
#include "copier/engine.h"

struct nfs_context;
struct io_op;
struct job;

enum node_kind {
    NODE_ROOT,
    NODE_CONTROL,       /* the control/ directory */
    NODE_IMAGE,         /* a top-level NAME=URL image (not nfs) */
    NODE_NFSDIR,        /* a directory inside (or the root of) an NFS dir spec */
    NODE_NFSFILE,       /* a file inside an NFS dir, or a top-level NFS file */
    NODE_JOBFILE,       /* control/x.job */
    NODE_STATUSFILE,    /* control/x.status */
    NODE_RATEFILE,      /* control/x.rate: the job's rate limit, writable */
    NODE_JSONFILE,      /* control/x.json: the status as one JSON object */
};

/* One mounted NFS location (a NAME=nfs://... spec) and its nfs_dir
 * (backends/nfs-dir.h), used on the loop thread. */
struct nfs_export {
    struct nfs_dir *dir;
    char *url_prefix;   /* "nfs://server/path" (no trailing '/', no query) */
    char *query;        /* "" or "?nfsport=...&..." */
    char server_addr[64]; /* numeric server address (nfs-id.h), for st_ino */
};

struct node {
    fuse_ino_t ino;
    enum node_kind kind;
    struct node *parent;
    char *name;                 /* entry name in the parent */
    /* images and NFS entries */
    struct nfs_export *exp;     /* NFS nodes only */
    char *relpath;              /* NFS nodes: "/a/b" inside the export, ""
                                 * for the root of a dir spec */
    char *url;                  /* NODE_IMAGE: URL or absolute path */
    uint64_t fixed_size;        /* NODE_IMAGE: size (fixed) */
    uint64_t id_ino;            /* NODE_IMAGE: st_ino from the image's
                                 * identity (node_id_ino), 0: ino */
    bool read_only;             /* never opened for writing */
    bool lun;                   /* block-device semantics (no truncate) */
    bool unlinked;
    atomic_ullong pending_end;  /* end of the highest write accepted */

    /* Loop-thread state (image-io.c, jobs.c). */
    struct image *img;
    unsigned opens;             /* open FUSE handles (+ internal users) */
    unsigned writers;           /* of which opened for writing */
    bool opening;
    bool close_pending;         /* a close is deferred to the loop */
    struct io_op *open_waiters;
    struct io_op *inflight;     /* issued writes (list) */
    struct io_op *parked_head, *parked_tail;
    uint64_t inflight_bytes;
    unsigned reads_inflight;
    /* Sequential read-ahead while the image is open: set before the first
     * open is answered, freed only when no handle is open, so a FUSE
     * thread serving a read on an open handle may use it (io_read_fast). */
    struct readahead *_Atomic ra;
    int werr;                   /* sticky write error (negative errno) */
    atomic_uint job_writers;    /* running jobs/copies writing this node */
    atomic_uint job_readers;    /* running jobs/copies reading this node */

    /* control/ nodes */
    struct job *job;

    /* Lifecycle (tree.c; guarded by tree_lock).  See "Node lifecycle". */
    bool fixed;                 /* part of the mount: never freed */
    bool reap_posted;           /* a node_reap is queued on the loop */
    uint64_t nlookup;           /* entry replies the kernel has not forgotten */
    unsigned holds;             /* node_hold()s not yet node_put() */
};

struct imgfs {
    struct loop *loop;
    pthread_t loop_thread;
    struct fuse_session *se;
    bool read_only;             /* -o ro */
    bool page_cache;            /* -o page_cache: images not direct I/O */
    atomic_bool bdi_tuned;
    uid_t uid;                  /* -o uid=: owner of root, images, control/ */
    gid_t gid;                  /* -o gid=: their group */
    mode_t umask;               /* -o umask=: their modes (default 077) */
    char *mountpoint;
    struct timespec mount_time;

    pthread_mutex_t tree_lock;
    struct node **nodes;        /* index = ino - 1; a freed node's slot
                                 * holds a placeholder (unlinked, no parent,
                                 * no export) until the ino is reused */
    size_t nnodes, cap;
    size_t nlive;               /* nodes not freed (user.imgfs.nodes) */
    size_t *free_slots;         /* freed inos, oldest first, from free_head */
    size_t nfree, free_head, free_cap;
    struct node *root, *control;

    struct nfs_export **exports;
    size_t nexports;

    pthread_mutex_t jobs_lock;
    struct job **jobs;
    size_t njobs;
    unsigned active_jobs;       /* loop thread: jobs and copies running */
    /* -o state=DIR: where jobs are kept (fs/job-state.h), this mount's
     * subdirectory; NULL: jobs are not kept (-o nostate). */
    char *state_dir;
    bool resume_jobs;           /* -o resume_jobs */
    /* -o rate=: bytes/s shared fairly by the running jobs (loop thread;
     * 0: none; jobs.c, jobs_share_rate) */
    uint64_t rate;
};

extern struct imgfs *fs_global;

/* ---- tree.c: the node table ------------------------------------------ */

/* Node lifecycle.  The root, control/, its job and status files and the
 * top-level NAME=URL nodes are fixed: never freed while mounted.  Every
 * other node (an entry inside an NFS directory) is freed once nothing can
 * reach it any more:
 *  - the kernel: `nlookup`, one per entry reply that carried its ino
 *    (lookup, create, mkdir: counted by node_nfs_child), less what FORGET
 *    and BATCH_FORGET returned (node_forget), as libfuse's passthrough_ll
 *    keeps it;
 *  - FUSE threads: `holds`, one per request being handled (ops.c takes it
 *    before dispatching and drops it after the handler returned, even if
 *    the handler replied early);
 *  - its children: a directory with a child in the table stays;
 *  - the loop thread: an open image, open references (`opens`: handles,
 *    flushes, truncates, copy_file_range), an open in progress, a deferred
 *    close, issued or parked I/O, read-ahead, running jobs (job_readers,
 *    job_writers).
 * Whenever the first three reach zero, node_reap_later() queues a check on
 * the loop thread, which frees the node only if the loop side is idle too;
 * the loop side calls node_reap_later() again when it becomes idle
 * (node_close, the deferred close).  Only the loop thread frees, so a node
 * pointer is valid on the loop thread as long as one of the above holds,
 * and on a FUSE thread for the request that holds it.
 * Inode numbers: a freed node's ino is reused (oldest freed first), never
 * while the kernel may know it: the node was freed only after the kernel
 * had forgotten every entry that carried that ino (FUSE never sends a
 * request for a nodeid whose lookups it has all forgotten). */

/* Create a node (tree_lock taken inside).  Returns NULL on ENOMEM.  Its
 * ino is a fresh slot or the oldest freed one. */
struct node *node_new(enum node_kind kind, struct node *parent,
                      const char *name);
/* Node for `ino` or NULL. */
struct node *node_get(fuse_ino_t ino);
/* Node for `ino` with a hold taken, or NULL; node_put() drops it. */
struct node *node_hold(fuse_ino_t ino);
/* Drop a hold (any thread). */
void node_put(struct node *n);
/* FORGET: the kernel dropped `nlookup` of the node's lookups (any
 * thread; unknown inos and fixed nodes are ignored). */
void node_forget(fuse_ino_t ino, uint64_t nlookup);
/* If nothing on the FUSE side keeps `n` (no lookups, holds or children)
 * and it is not fixed, queue a check on the loop thread that frees it
 * once its loop-side state is idle as well (any thread; tree_lock not
 * held by the caller). */
void node_reap_later(struct node *n);
/* Number of nodes not freed (mount root included). */
size_t node_count(void);
/* Child of `parent` named `name` that is not unlinked, or NULL. */
struct node *node_child(struct node *parent, const char *name);
/* Find or create the NFS child node `name` of NFS dir `dir` with `kind`,
 * and count one kernel lookup on it (under tree_lock, so a concurrent
 * FORGET cannot free it first): call it only to build an entry reply.  If
 * no entry reaches the kernel, the count stays (the node is kept: a leak,
 * never a use after free). */
struct node *node_nfs_child(struct node *dir, const char *name,
                            enum node_kind kind);
/* Resolve "NAME" or "NAME/sub/file" from the mount root.  Returns the node
 * or NULL (ENOENT).  With `create_ok`, a missing last component inside an
 * NFS dir yields a new (not yet existing on the server) NFS file node.
 * Loop thread only.  The nodes on the way are held while the path is
 * walked; the node returned stays valid until the loop next runs other
 * callbacks (the current one returns or waits), and longer while the
 * caller makes it busy (job_readers, job_writers, an open); when it stops
 * being busy, call node_reap_later(). */
struct node *node_resolve(const char *path, bool create_ok);
/* Fill `st` for root/control/image nodes (not NFS ones). */
void node_static_attr(const struct node *n, struct stat *st);
/* st_ino for a top-level image from its identity (image-id.h): two mount
 * names for one LUN or local file show one st_ino, so `cp a b` stops at
 * "are the same file" before its O_TRUNC open.  NFS_INO_FLAG set; 0 for
 * images without identity (null:, zero:). */
uint64_t node_id_ino(const struct image *img);
/* The image URL of an image or NFS file node (malloc'd) or NULL. */
char *node_url(const struct node *n);
/* "NAME/sub/file" path of a node from the root (malloc'd). */
char *node_path(const struct node *n);

/* ---- nfsdir-ops.c: NFS exports and requests on the loop -------------- */

/* Open an export for `url` (file or directory URL: with `is_dir` the
 * whole path is the directory; otherwise the last component is returned
 * in *file as "/name") and stat what it names into *st (st_ino from
 * nfs_export_ino).  Synchronous, at mount time (no loop needed). */
int nfs_export_open(const char *url, bool is_dir, struct nfs_export **out,
                    char **file, struct stat *st, struct errmsg *err);
/* Close: on the loop thread, or after it stopped and before the loop is
 * freed.  NULL: no-op. */
void nfs_export_close(struct nfs_export *e);
/* Close every export of the mount and empty the list: after the loop
 * thread stopped, before the loop is freed (their nfs_dirs are attached
 * to it). */
void nfs_exports_close(void);
/* Loop thread: the export's nfs_dir, attached to fs_global->loop. */
struct nfs_dir *nfs_export_dir(struct nfs_export *e);
/* st_ino (and readdir d_ino) of an NFS entry: NFS_INO_FLAG set, the
 * rest the server's fileid mixed with a key of (server address, fsid), so
 * two names for one server file (two mount names of one export, a hard
 * link) show one st_ino and `cp` sees "the same file", while the small
 * node numbers of root, control/ and top-level images never collide. */
#define NFS_INO_FLAG (1ull << 63)
uint64_t nfs_export_ino(const struct nfs_export *e, uint64_t fsid,
                        uint64_t fileid);
struct nfs_dir_attr;
/* `st` from the server's attributes `a` of an entry of `e`. */
void nfs_export_attr(const struct nfs_export *e, const struct nfs_dir_attr *a,
                     struct stat *st);
/* Stat `rel` and wait for the answer (nfs_dir_stat_wait: from a FUSE
 * thread it is posted to the loop; on the loop thread the loop runs
 * meanwhile, so never from an nfs_dir callback).  For callers that need
 * the answer at once (jobs, access checks, node_resolve). */
int nfs_export_stat_wait(struct nfs_export *e, const char *rel,
                         struct stat *st);

/* A FUSE request answered on the loop thread from NFS completions.
 * Embed it first in the request's state (allocated with malloc).  The
 * request registers an interrupt handler: FUSE_INTERRUPT answers EINTR at
 * once, and the loop side, which then finds the request claimed, only
 * frees its state.  Exactly one reply either way.  The nodes the request
 * concerns stay valid until its state is freed: the call keeps a hold on
 * each (the kernel's own reference ends with the reply, and an interrupt
 * replies before the NFS answer arrives). */
struct nfs_call {
    fuse_req_t req;
    atomic_bool replied;        /* the one reply is taken */
    struct node *kept[2];       /* held until nfs_call_end (or NULL) */
};
/* FUSE thread: take a hold on `a` and `b` (either may be NULL) for the
 * life of the call, register the interrupt and post run(c) to the loop.
 * If the request was interrupted already or cannot be posted, it is
 * answered and `c` freed here. */
void nfs_call_start(struct nfs_call *c, fuse_req_t req, loop_fn run,
                    struct node *a, struct node *b);
/* Loop thread: true if this side answers c->req (then exactly once);
 * false when the interrupt answered it.  Claim before anything that
 * must match a reply (node_nfs_child counts a lookup). */
bool nfs_call_claim(struct nfs_call *c);
/* Loop thread: the request is still waited for (not interrupted). */
bool nfs_call_live(struct nfs_call *c);
/* Loop thread: drop the call's node holds and free c. */
void nfs_call_end(struct nfs_call *c);
/* Loop thread: answer err (0: success without data) unless interrupted,
 * then nfs_call_end. */
void nfs_call_reply_err(struct nfs_call *c, int err);

/* st_blksize of image files: the "preferred I/O size" that cmp, cat, cp and
 * stdio size their buffers by.  Image files are direct I/O (every read(2)
 * is a FUSE round trip, answered from read-ahead), so 4 KiB buffers would
 * cost a round trip per 4 KiB: cmp of a 1 GiB image took 14 s instead of
 * about 1 s. */
#define IMAGE_BLKSIZE (1024 * 1024)

/* ---- image-io.c: per-node I/O on the loop thread ---------------------- */

/* Everything here is called on the loop thread. */

typedef void (*node_open_cb)(void *opaque, int err);
/* Take an open reference on `n`'s image, opening it if needed (trunc:
 * then node_truncate to 0 before answering: an NFS file becomes empty, a
 * LUN reads as zeroes; if that fails, no reference is kept and the
 * error is the result).  cb(opaque, 0 or -errno) runs on the
 * loop thread, possibly before node_open returns. */
void node_open(struct node *n, bool write, bool trunc, node_open_cb cb,
               void *opaque);
/* Drop a reference taken by node_open; the image is closed when the last
 * one goes and no I/O is pending. */
void node_close(struct node *n, bool write);
/* Run cb(opaque, 0) once every write accepted so far has completed. */
void node_drain(struct node *n, node_open_cb cb, void *opaque);
/* Take and clear the sticky write error. */
int node_take_error(struct node *n);
/* Forget what the mount has read ahead of `n` (its contents may change
 * other than through the mount's own writes: a job or a copy writes it). */
void node_cache_drop(struct node *n);
/* Truncate `n` to `size` once every write accepted so far has completed,
 * then cb(opaque, 0 or -errno).  An NFS file gets that size through its
 * image (image_truncate; opened for writing if needed).  A fixed-size
 * image (LUN) keeps its size: [size, end)
 * is made to read as zeroes (write_zeroes, may unmap; the image is opened
 * for it if needed); a size beyond the end is -EFBIG.  Read-ahead of `n`
 * is dropped. */
void node_truncate(struct node *n, uint64_t size, node_open_cb cb,
                   void *opaque);

/* How image-io.c answers FUSE requests: fuse_reply_err, fuse_reply_write,
 * fuse_reply_buf, fuse_reply_iov and reply_buf_async (which frees `buf`)
 * unless replaced.  The seam lets unit tests run image-io.c on fake images
 * and fake requests without a FUSE session; the mount never changes it. */
struct io_replies {
    int (*err)(fuse_req_t req, int err);
    int (*write)(fuse_req_t req, size_t count);
    int (*buf)(fuse_req_t req, const char *buf, size_t size);
    int (*iov)(fuse_req_t req, const struct iovec *iov, int count);
    void (*buf_async)(fuse_req_t req, void *buf, const char *data,
                      size_t len);
};
extern const struct io_replies *io_replies;

/* Any thread: answer a read from read-ahead chunks that are already
 * there; false if it cannot (then post io_read to the loop). */
bool io_read_fast(fuse_req_t req, struct node *n, size_t size, off_t off);

/* FUSE request entry points (loop thread). */
void io_read(fuse_req_t req, struct node *n, size_t size, off_t off);
void io_write(fuse_req_t req, struct node *n, void *data, size_t size,
              off_t off);               /* takes ownership of data */
void io_flush(fuse_req_t req, struct node *n, bool fsync);

/* ---- image-ops.c / nfsdir-ops.c / control.c: FUSE handlers ------------ */

/* fi->fh of open files. */
struct handle {
    struct node *node;
    bool write;
    bool wrote;                 /* control/x.job: written through this fd */
    char *text;                 /* control/x.status: snapshot */
    size_t len;
};

#define ATTR_TIMEOUT 1.0

void image_op_getattr(fuse_req_t req, struct node *n);
/* Attributes of `n`; NFS nodes ask the server and wait for the answer
 * (nfs_export_stat_wait: never from an nfs_dir callback).  0 or -errno. */
int node_attr(struct node *n, struct stat *st);
/* `st` of the NFS node `n` from the server's attributes `a`, with what
 * the mount adds (write-behind size, full allocation, read-only). */
void nfs_node_stat(struct node *n, const struct nfs_dir_attr *a,
                   struct stat *st);
void image_op_setattr(fuse_req_t req, struct node *n, struct stat *attr,
                      int to_set);
void image_op_open(fuse_req_t req, struct node *n, struct fuse_file_info *fi);

/* Finish an open (e == NULL: fuse_reply_open) or a create (fuse_reply_create
 * with *e) of `n`, which node_open has just opened with result `err`: on
 * success allocate the handle into fi->fh and reply; on failure (err, no
 * memory) reply the error.  Whenever no handle reaches the kernel (error,
 * or the opener went away) the node reference is dropped.  Loop thread. */
void handle_reply_opened(fuse_req_t req, struct node *n, bool write, int err,
                         struct fuse_file_info *fi,
                         const struct fuse_entry_param *e);
void image_op_read(fuse_req_t req, struct node *n, size_t size, off_t off);
void image_op_write(fuse_req_t req, struct node *n, const char *buf,
                    size_t size, off_t off);
void image_op_flush(fuse_req_t req, struct node *n, bool fsync);
void image_op_release(fuse_req_t req, struct node *n,
                      struct fuse_file_info *fi);

void nfsdir_op_lookup(fuse_req_t req, struct node *dir, const char *name);
/* Lookup of a top-level NFS entry `n` (fixed: no lookup count). */
void nfsdir_op_lookup_fixed(fuse_req_t req, struct node *n);
/* A directory listing snapshot, taken at opendir. */
struct dirlist {
    struct dirlist_entry {
        char *name;
        mode_t mode;
        uint64_t ino;
    } *v;
    size_t n, cap;
};
int dirlist_add(struct dirlist *l, const char *name, mode_t mode,
                uint64_t ino);
void dirlist_free(struct dirlist *l);
/* opendir of an NFS directory: list it on the loop, add the entries to
 * `l` (which then belongs to this call) and answer with fi->fh = l. */
void nfsdir_op_opendir(fuse_req_t req, struct node *dir, struct dirlist *l,
                       struct fuse_file_info *fi);
/* statfs answered from the export of `n` (or the first export). */
void nfsdir_op_statfs(fuse_req_t req, struct node *n);
void nfsdir_op_create(fuse_req_t req, struct node *dir, const char *name,
                      mode_t mode, struct fuse_file_info *fi);
void nfsdir_op_mkdir(fuse_req_t req, struct node *dir, const char *name,
                     mode_t mode);
void nfsdir_op_unlink(fuse_req_t req, struct node *dir, const char *name,
                      bool is_dir);
void nfsdir_op_rename(fuse_req_t req, struct node *dir, const char *name,
                      struct node *newdir, const char *newname);

void control_op_lookup(fuse_req_t req, const char *name);
int control_list(struct dirlist *l);
void control_op_create(fuse_req_t req, const char *name,
                       struct fuse_file_info *fi);
void control_op_getattr(fuse_req_t req, struct node *n);
void control_op_setattr(fuse_req_t req, struct node *n, struct stat *attr,
                        int to_set);
void control_op_open(fuse_req_t req, struct node *n,
                     struct fuse_file_info *fi);
void control_op_read(fuse_req_t req, struct node *n, size_t size, off_t off,
                     struct fuse_file_info *fi);
void control_op_write(fuse_req_t req, struct node *n, const char *buf,
                      size_t size, off_t off, struct fuse_file_info *fi);
void control_op_flush(fuse_req_t req, struct node *n,
                      struct fuse_file_info *fi);
void control_op_release(fuse_req_t req, struct node *n,
                        struct fuse_file_info *fi);
void control_op_unlink(fuse_req_t req, const char *name);

/* What control.c decides, as pure functions (no FUSE, no locks taken;
 * the caller holds jobs_lock where a job is passed). */
/* "x.job", "x.status", "x.rate", "x.json" -> "x" in `base` (of `cap`
 * bytes) and the node kind; false for any other name or an x that does
 * not fit. */
bool control_parse_name(const char *name, char *base, size_t cap,
                        enum node_kind *kind);
/* Whether create may make `name` in control/: only x.job, x not empty
 * and without control characters (x in `base` when true). */
bool control_name_creatable(const char *name, char *base, size_t cap);
/* Whether a setattr of `to_set` on a control file of `kind` resumes job
 * `j` (touch x.job: times only, on an interrupted job). */
bool control_touch_resumes(const struct job *j, enum node_kind kind,
                           int to_set);
/* The close (FUSE flush) of a handle that wrote x.job of job `j`. */
enum control_flush {
    CONTROL_FLUSH_NOTHING,      /* not written since the last start, or
                                 * running: answer 0 */
    CONTROL_FLUSH_ENOENT,       /* the job is gone */
    CONTROL_FLUSH_EMPTY,        /* no key line: fail the job, EINVAL */
    CONTROL_FLUSH_START,        /* start it */
};
enum control_flush control_flush_decide(const struct job *j);
/* rm of a control file of `kind` of job `j` (NULL: none). */
enum control_unlink {
    CONTROL_UNLINK_ENOENT,      /* no such job or file */
    CONTROL_UNLINK_EPERM,       /* x.rate, x.json: they go with the job */
    CONTROL_UNLINK_STARTING,    /* starting: forgotten if only queued
                                 * (job_queue_drop_locked), else EBUSY */
    CONTROL_UNLINK_EBUSY,       /* x.status of a running job */
    CONTROL_UNLINK_CANCEL,      /* x.job of a running job: cancel it */
    CONTROL_UNLINK_FORGET,      /* a stopped job: forget it */
};
enum control_unlink control_unlink_decide(const struct job *j,
                                          enum node_kind kind);

/* ---- access.c: whose rights a job uses -------------------------------- */

#define ACCESS_MAX_GROUPS 64

/* The credentials of the process that wrote a job file. */
struct access_cred {
    uid_t uid;
    gid_t gid;
    gid_t groups[ACCESS_MAX_GROUPS];    /* supplementary groups */
    unsigned ngroups;
    bool groups_incomplete;     /* more groups than kept, or unknown */
};

/* Fill `c` from the FUSE request `req` (uid, gid, supplementary groups
 * read from /proc by libfuse).  Never fails: groups it cannot learn make
 * `groups_incomplete`, which access_permitted treats strictly. */
void access_cred_from_req(fuse_req_t req, struct access_cred *c);
/* Whether `c` may access an object with `st` for `mask` (R_OK, W_OK, X_OK
 * bits) as the kernel's generic check would: owner bits if the uid owns
 * it, else group bits if the gid or a supplementary group matches, else
 * other bits; uid 0 may read, write and search anything.  0 or -EACCES. */
int access_permitted(const struct access_cred *c, const struct stat *st,
                     int mask);
/* Loop thread: whether the writer of job `j` (j->writer) may read `src`
 * and write `dst` (a `dst` that does not exist yet: write and search on
 * its directory), with search on every directory above them.  0, or
 * -EACCES with `em` "permission denied: uid N may not write target 'x'",
 * or another -errno from the server with `em` set. */
int job_check_access(struct job *j, struct node *src, struct node *dst,
                     struct errmsg *em);

/* ---- jobs.c: the job table -------------------------------------------- */

enum job_state {
    JOB_NEW,            /* job file being written */
    JOB_STARTING,       /* validating / opening images */
    JOB_RUNNING,
    JOB_DONE,
    JOB_FAILED,
    JOB_CANCELLED,
    JOB_INTERRUPTED,    /* found in the state directory at mount: the
                         * previous mount ended while it ran */
};

struct job {
    char *name;                 /* "x" for control/x.job */
    struct node *jobnode, *statusnode;
    struct node *ratenode, *jsonnode;   /* control/x.rate, control/x.json */
    /* guarded by jobs_lock */
    char *text;
    size_t len, cap;
    bool dirty;                 /* written since the last start */
    bool job_visible;           /* control/x.job listed */
    enum job_state state;
    enum job_state final_state; /* set at the end, applied at cleanup */
    int err;                    /* negative errno when FAILED */
    char error[512];
    char source[1024], target[1024];
    uint64_t total, done, watermark;
    bool resumed;               /* this run resumed the previous one ... */
    uint64_t resumed_from;      /* ... at this offset (its watermark) */
    uint64_t start_ns, end_ns;
    struct copy_job *cj;        /* while RUNNING */
    /* loop thread */
    struct image *src, *dst;
    /* a created target's partial file, renamed onto the target when the
     * job is DONE (copier/copy-open.h); NULL: written in place */
    struct copy_publish *publish;
    struct node *src_node, *dst_node;
    fuse_req_t flush_req;       /* answered when the start is decided */
    fuse_req_t *unlink_reqs;    /* answered when the job stopped */
    size_t n_unlink_reqs;
    /* guarded by jobs_lock: who last changed the text (control.c) */
    struct access_cred writer;
    /* loop thread: persistence (job-state.h) */
    uint64_t durable;           /* watermark known durable */
    int64_t ckpt_timer;         /* periodic checkpoint, 0 if none */
    bool ckpt_inflight;
    bool persist;               /* this run keeps a state file */
    /* guarded by jobs_lock: the job's own rate limit (its `rate` key, or
     * the last write to x.rate; 0: none) and the limit in force (its
     * share of -o rate=, jobs_share_rate) */
    uint64_t rate, rate_applied;
    bool rate_pending;          /* `rate` was written while queued: it
                                 * replaces the job text's when it starts */
};

/* Find or create the job `name` (jobs_lock held by the caller). */
struct job *job_find_locked(const char *name);
struct job *job_create_locked(const char *name);
/* Remove a finished/new job from the table and free it (jobs_lock held). */
void job_forget_locked(struct job *j);
/* Start the job from its text (loop thread); answers `req` (the flush). */
void job_start(struct job *j, fuse_req_t req);
/* Cancel a running job (loop thread); answers `req` when it stopped, or
 * at once when it is not running. */
void job_cancel(struct job *j, fuse_req_t req);
/* Resume an interrupted (or stopped) job at its watermark from its kept
 * text (loop thread), as `resume = yes` would; `req` (a setattr, may be
 * NULL) is answered with the job file's attributes, or the errno of the
 * refusal (the reason goes to x.status). */
void job_resume(struct job *j, fuse_req_t req);
/* -o resume_jobs: post job_resume for every interrupted job (any thread,
 * once the loop runs). */
void jobs_resume_all(void);
/* Post the start of every job the previous mount left queued (state
 * "queued" in the state directory), in the order they were queued; each
 * queues again or starts as the memory budget allows (any thread, once
 * the loop runs, before FUSE does). */
void jobs_requeue_kept(void);
/* At mount, before FUSE runs: list the jobs kept in fs_global->state_dir —
 * those that were running or interrupted as JOB_INTERRUPTED, failed ones
 * as JOB_FAILED, queued ones as JOB_STARTING (shown "queued", started by
 * jobs_requeue_kept) — with their text, watermark and error.  Returns how
 * many were found; unreadable files are skipped with a message in `warn`. */
size_t jobs_load_state(void (*warn)(const char *msg));
/* The state file path of job `name` (malloc'd), NULL when jobs are not
 * kept. */
char *job_state_path(const char *name);
/* Status text of a job (malloc'd), generated now (jobs_lock held). */
char *job_status_text_locked(struct job *j);
/* The same status as one JSON line (copier/status-json.h, with "job";
 * malloc'd; jobs_lock held). */
char *job_json_text_locked(struct job *j);
/* control/x.rate's text: the job's own limit, "50M\n" or "0\n" (malloc'd;
 * jobs_lock held). */
char *job_rate_text_locked(struct job *j);
/* Set the own rate limit of the running job `name` (loop thread) and
 * share the mount's -o rate= again, or of the queued job `name` (it
 * applies when the job starts, instead of its text's `rate`); 0, or
 * -ESRCH when no job of that name is running or queued. */
int job_set_rate(const char *name, uint64_t rate);
/* Give every running job its limit: its own, or its fair share of
 * -o rate= (rate_fair_share) when the mount has one (loop thread; after
 * a job starts or stops and when a limit changes). */
void jobs_share_rate(void);
/* Ask every running job to stop (loop thread, at shutdown); they are
 * gone when fs_global->active_jobs is 0. */
void jobs_cancel_all(void);
/* Print where each stopped job left its target (at shutdown). */
void jobs_report_stopped(void);
/* True if writers must be refused on `n` (a running job's target). */
bool node_busy_for_write(struct node *n);

/* ---- slice.c / copy-range.c ------------------------------------------- */

/* An image presenting [offset, offset+length) of `base`.  Closing it does
 * not close `base`. */
struct image *slice_image_new(struct image *base, uint64_t offset,
                              uint64_t length, struct errmsg *err);

void fs_copy_range(fuse_req_t req, struct node *in, off_t off_in,
                   struct node *out, off_t off_out, size_t len);

/* ---- reply-pool.c ------------------------------------------------------ */

/* Start/stop the threads that send read replies (reply_pool_stop after the
 * FUSE session ended; pending replies are sent first). */
int reply_pool_start(unsigned nthreads);
void reply_pool_stop(void);
/* Send `len` bytes at `data` as the reply to `req` from a pool thread, then
 * free(buf).  Any thread. */
void reply_buf_async(fuse_req_t req, void *buf, const char *data, size_t len);

/* ---- helpers ---------------------------------------------------------- */

/* loop_post a call; on failure reply ENOMEM to req. */
int fs_post(loop_fn fn, void *opaque);

#endif
