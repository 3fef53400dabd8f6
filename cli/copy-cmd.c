/* copy-cmd.c — `imgfs copy [options] SOURCE TARGET`.
 *
 * Parse and validate the options (copy-args.c) into a job spec, open
 * both images and prepare the job through copy_open() — the path mount
 * jobs take too, which refuses bad input before any target byte is
 * touched — run the job, close both images.
 *
 * Output: on failure exactly one line on stderr, "imgfs copy: MESSAGE";
 * on success a summary line on stdout unless -q.  SIGINT/SIGTERM cancel
 * the job cleanly (a self-pipe watched by the loop) and the message names
 * the byte offset to resume from.
 *
 * A new target made with --create (or a qcow2 one) is published under
 * its name only when the copy is complete (copy_session_publish); an
 * existing raw file is written in place (copy-open.h).  A stopped copy
 * leaves a raw target's partial file, and the message gives the whole
 * command that continues it; a qcow2 target restarts from 0 (the same
 * command again).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "commands.h"
#include "copier/copy-open.h"
#include "copier/engine.h"
#include "copy-args.h"
#include "copy-state.h"
#include "progress.h"

#define PREFIX "imgfs copy"
/* How long a cancelled job may take to drain before the command leaves
 * anyway. */
#define CANCEL_GRACE_MS 30000
#define CANCEL_GRACE_TEXT "30 s"

/* Print "imgfs copy: MESSAGE" as exactly one line on stderr.  Messages
 * from libraries may carry newlines or tabs; they become "; " and spaces,
 * so scripts can rely on one line per failure. */
static void report(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void report(const char *fmt, ...)
{
    char msg[1536];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    char line[sizeof msg + 512];
    size_t n = 0;
    for (const char *c = msg; *c && n + 3 < sizeof line; c++) {
        if (*c == '\n' || *c == '\r') {
            while (n > 0 && line[n - 1] == ' ')
                n--;
            if (c[1] && c[1] != '\n' && c[1] != '\r' && n > 0 &&
                line[n - 1] != ';') {
                line[n++] = ';';
                line[n++] = ' ';
            }
        } else if ((unsigned char)*c < ' ') {
            line[n++] = ' ';
        } else {
            line[n++] = *c;
        }
    }
    while (n > 0 && (line[n - 1] == ' ' || line[n - 1] == ';'))
        n--;
    line[n] = '\0';
    fprintf(stderr, PREFIX ": %s\n", line);
}

/* ---- signals: a self-pipe read by a loop poller ---------------------- */

static int signal_pipe[2] = { -1, -1 };

static void on_signal(int signo)
{
    int saved = errno;
    unsigned char b = (unsigned char)signo;
    ssize_t w = write(signal_pipe[1], &b, 1);
    (void)w;    /* pipe full: a signal is already pending */
    errno = saved;
}

struct run_state {
    struct copy_job *job;
    struct loop *loop;
    bool finished;
    struct copy_progress final;
    int signo;                  /* first signal received, 0 if none */
    struct progress bar;
    bool show_progress;
    int64_t timer;              /* progress tick, 0 if none */
    int64_t grace_timer;        /* cancel deadline, 0 if none */
    unsigned tick_ms;
    struct loop_poller signal_poller;
    struct progress_json *json;     /* --progress=json|fd:N, or NULL */
    unsigned json_ms;
    int64_t json_timer;             /* JSON tick, 0 if none */
    uint64_t rate_limit;
    /* for the advice on how to continue a stopped copy */
    int argc;
    char **argv;
    const struct copy_publish *publish;
    bool in_place_file;         /* an existing file written in place */
    const char *state_path;     /* --state FILE, or NULL */
};

/* Append `arg` to `buf` (size n) quoted for a POSIX shell when needed. */
static void append_shell_word(char *buf, size_t n, const char *arg)
{
    size_t len = strlen(buf);
    bool plain = *arg != '\0';
    for (const char *c = arg; *c; c++)
        if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                    "0123456789_-./:=@%+,", *c))
            plain = false;
    if (plain) {
        snprintf(buf + len, n - len, " %s", arg);
        return;
    }
    if (len + 2 < n)
        buf[len++] = ' ';
    if (len + 1 < n)
        buf[len++] = '\'';
    for (const char *c = arg; *c && len + 5 < n; c++) {
        if (*c == '\'') {
            memcpy(buf + len, "'\\''", 4);
            len += 4;
        } else {
            buf[len++] = *c;
        }
    }
    if (len + 1 < n)
        buf[len++] = '\'';
    buf[len] = '\0';
}

/* How to continue a copy that stopped with every byte before `w` written.
 * A raw partial file: the whole command with --resume-from W (with
 * --create it continues the partial file, copy-open.h); a qcow2 partial
 * file: the same command again (qcow2 targets restart from 0); in place:
 * --resume-from W (and --overwrite for files).  With --state FILE the same
 * command resumes where FILE says (copy-state.h), so no offset is given. */
static void resume_advice(const struct run_state *rs, uint64_t w, char *buf,
                          size_t n)
{
    const struct copy_publish *pub = rs->publish;
    bool partial = pub && pub->partial_url;
    if (partial && pub->restart) {
        snprintf(buf, n, "%s was not %s; qcow2 targets restart from 0: "
                 "rerun the same command", pub->final_url,
                 pub->replace ? "replaced (it holds the old file)"
                              : "created");
        return;
    }
    int k;
    if (rs->state_path)
        k = snprintf(buf, n, "%s%s%sresume with the same command (--state %s "
                     "holds where it resumes):", partial ? "the partial file "
                     : "", partial ? pub->partial_url : "",
                     partial ? " holds the bytes copied; " : "",
                     rs->state_path);
    else if (partial)
        k = snprintf(buf, n, "the partial file %s holds the bytes before %"
                     PRIu64 "; resume with: imgfs copy --resume-from %"
                     PRIu64, pub->partial_url, w, w);
    else {
        snprintf(buf, n, "resume with --resume-from %" PRIu64 "%s", w,
                 rs->in_place_file ? " --overwrite" : "");
        return;
    }
    if (k < 0 || (size_t)k >= n)
        return;
    if (rs->state_path)
        snprintf(buf + k, n - (size_t)k, " imgfs copy");
    bool options_done = false;
    for (int i = 1; i < rs->argc; i++) {
        const char *arg = rs->argv[i];
        if (!options_done && strcmp(arg, "--") == 0)
            options_done = true;
        if (!options_done && strcmp(arg, "--resume-from") == 0) {
            i++;                /* and its value */
            continue;
        }
        if (!options_done && strncmp(arg, "--resume-from=", 14) == 0)
            continue;
        append_shell_word(buf, n, arg);
    }
}

/* Leave at once, without waiting for in-flight requests: the watermark
 * still names a safe resume point (every write below it completed). */
static void exit_undrained(struct run_state *rs, const char *why, int signo)
{
    struct copy_progress p;
    copy_job_progress(rs->job, &p);
    if (rs->show_progress)
        progress_finish(&rs->bar);
    char advice[1024];
    resume_advice(rs, p.watermark, advice, sizeof advice);
    report("%s; stopped at byte %" PRIu64 " without draining; %s", why,
           p.watermark, advice);
    _exit(128 + signo);
}

/* The cancelled job did not drain in time (a dead server holding requests,
 * or a stuck layer): a single SIGTERM, e.g. from timeout(1), must still end
 * the process. */
static void cancel_overdue(void *opaque)
{
    struct run_state *rs = opaque;
    rs->grace_timer = 0;
    if (!rs->finished)
        exit_undrained(rs, "cancelled, but in-flight requests did not finish "
                       "within " CANCEL_GRACE_TEXT, rs->signo);
}

static int sig_get_fd(void *opaque)
{
    (void)opaque;
    return signal_pipe[0];
}

static int sig_events(void *opaque)
{
    (void)opaque;
    return POLLIN;
}

static int sig_service(void *opaque, int revents)
{
    struct run_state *rs = opaque;
    (void)revents;
    unsigned char b[16];
    ssize_t n;
    while ((n = read(signal_pipe[0], b, sizeof b)) > 0) {
        for (ssize_t i = 0; i < n; i++) {
            if (rs->finished)
                continue;
            if (rs->signo == 0) {
                rs->signo = b[i];
                copy_job_cancel(rs->job);
                int64_t t = loop_add_timer(rs->loop, CANCEL_GRACE_MS,
                                           cancel_overdue, rs);
                rs->grace_timer = t > 0 ? t : 0;
                continue;
            }
            /* A second signal: the user does not want to wait for the
             * in-flight requests to drain. */
            exit_undrained(rs, "interrupted again", b[i]);
        }
    }
    return 0;
}

static int install_signals(struct run_state *rs, struct errmsg *err)
{
    if (pipe2(signal_pipe, O_CLOEXEC | O_NONBLOCK) < 0) {
        errmsg_set(err, "pipe: %s", strerror(errno));
        return -errno;
    }
    struct sigaction sa = { .sa_handler = on_signal };
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    rs->signal_poller = (struct loop_poller){ .get_fd = sig_get_fd,
                                              .events = sig_events,
                                              .service = sig_service,
                                              .opaque = rs };
    loop_add_poller(rs->loop, &rs->signal_poller);
    return 0;
}

static void remove_signals(struct run_state *rs)
{
    loop_remove_poller(rs->loop, &rs->signal_poller);
    struct sigaction sa = { .sa_handler = SIG_DFL };
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    close(signal_pipe[0]);
    close(signal_pipe[1]);
    signal_pipe[0] = signal_pipe[1] = -1;
}

/* ---- running the job ------------------------------------------------- */

static void on_tick(void *opaque)
{
    struct run_state *rs = opaque;
    rs->timer = 0;
    if (rs->finished)
        return;
    struct copy_progress p;
    copy_job_progress(rs->job, &p);
    progress_update(&rs->bar, p.done, p.total, p.elapsed_ns);
    int64_t t = loop_add_timer(rs->loop, rs->tick_ms, on_tick, rs);
    rs->timer = t > 0 ? t : 0;
}

static void on_json_tick(void *opaque)
{
    struct run_state *rs = opaque;
    rs->json_timer = 0;
    if (rs->finished)
        return;
    struct copy_progress p;
    copy_job_progress(rs->job, &p);
    progress_json_line(rs->json, copy_state_name(p.state), p.done, p.total,
                       p.watermark, rs->rate_limit, p.elapsed_ns, NULL,
                       false);
    int64_t t = loop_add_timer(rs->loop, rs->json_ms, on_json_tick, rs);
    rs->json_timer = t > 0 ? t : 0;
}

static void on_done(void *opaque, const struct copy_progress *final)
{
    struct run_state *rs = opaque;
    rs->final = *final;
    rs->finished = true;
}

/* ---- the command ------------------------------------------------------ */

static int fail(const char *msg)
{
    report("%s", msg);
    return 1;
}

/* Does resuming a copy onto `target` need --overwrite?  (Files and NFS
 * files refuse non-empty targets without it; LUNs and null: do not care.) */
static bool target_is_file(const char *target)
{
    return strncmp(target, "iscsi://", 8) != 0 &&
           strncmp(target, "null:", 5) != 0;
}

static void print_summary(const struct copy_args *a,
                          const struct copy_progress *p)
{
    double secs = (double)p->elapsed_ns / 1e9;
    uint64_t bytes = p->total - a->spec.copy.start_offset;
    char human[32], rate[32];
    progress_format_bytes(human, sizeof human, (double)bytes);
    progress_format_bytes(rate, sizeof rate,
                          secs > 0 ? (double)bytes / secs : 0);
    printf("copied %" PRIu64 " bytes (%s) in %.2f s, %s/s%s\n", bytes, human,
           secs, rate, a->spec.copy.verify ? ", verified" : "");
    fflush(stdout);
}

/* Start the progress bar (-p) and JSON (--progress=json|fd:N) ticks of
 * `rs` on its loop as `a` asks; `json` is open when a->json_fd >= 0. */
static void start_ticks(struct run_state *rs, const struct copy_args *a,
                        struct progress_json *json)
{
    if (a->progress) {
        progress_init(&rs->bar, stderr, PREFIX, PROGRESS_AUTO);
        rs->tick_ms = rs->bar.style == PROGRESS_BAR ? 250 : 1000;
        int64_t t = loop_add_timer(rs->loop, rs->tick_ms, on_tick, rs);
        rs->timer = t > 0 ? t : 0;
    }
    if (a->json_fd >= 0) {
        rs->json = json;
        rs->json_ms = a->interval_ms;
        rs->rate_limit = a->spec.copy.rate;
        int64_t t = loop_add_timer(rs->loop, rs->json_ms, on_json_tick, rs);
        rs->json_timer = t > 0 ? t : 0;
    }
}

/* Cancel the timers of `rs` and restore the signal handlers. */
static void stop_ticks(struct run_state *rs)
{
    if (rs->timer)
        loop_cancel_timer(rs->loop, rs->timer);
    if (rs->json_timer)
        loop_cancel_timer(rs->loop, rs->json_timer);
    if (rs->grace_timer)
        loop_cancel_timer(rs->loop, rs->grace_timer);
    remove_signals(rs);
}

/* Write the final JSON line (the outcome: `status` 0 is done, else
 * `final`'s state with its error, or `why` when it has none) and close
 * `json`. */
static void finish_json(struct progress_json *json,
                        struct copy_progress *final, const struct copy_args *a,
                        int status, const char *why)
{
    if (status == 0)
        final->state = COPY_DONE;
    else if (final->state == COPY_DONE)
        final->state = COPY_FAILED;     /* closing or publishing failed */
    progress_json_line(json, copy_state_name(final->state), final->done,
                       final->total, final->watermark, a->spec.copy.rate,
                       final->elapsed_ns, status == 0 ? NULL
                       : final->error[0] ? final->error : why, true);
    progress_json_close(json);
}

int cmd_copy(int argc, char **argv)
{
    struct copy_args a;
    struct errmsg err = { "" };
    if (copy_args_parse(argc, argv, &a, &err) < 0) {
        report("%s", err.text);
        return 2;
    }
    if (a.help) {
        copy_args_usage(stdout);
        return 0;
    }
    struct copy_keeper kept;        /* --state FILE (copy-state.h) */
    if (copy_keeper_prepare(&kept, &a, &err) < 0) {
        report("%s", err.text);
        return 2;
    }

    /* The final JSON line: the outcome, whatever stops the copy. */
    struct progress_json json;
    struct copy_progress jfinal = { .state = COPY_FAILED };
    if (a.json_fd >= 0 && progress_json_open(&json, a.json_fd, NULL) < 0) {
        report("--progress=fd:%d: descriptor %d is not open for writing",
               a.json_fd, a.json_fd);
        return 2;
    }
    jfinal.watermark = a.spec.copy.start_offset;    /* size unknown yet */
    if (a.json_fd >= 0)
        json.first_done = a.spec.copy.start_offset;
    int status = 1;

    struct loop *loop = loop_new();
    if (!loop) {
        snprintf(err.text, sizeof err.text, "creating the event loop: %s",
                 strerror(errno));
        fail(err.text);
        goto out_json;
    }
    struct copy_session cs = { 0 };
    const struct copy_endpoints ep = {
        .source_url = a.spec.source,
        .target_url = a.spec.target,
        .create = a.create,
        .overwrite = a.spec.overwrite,
    };
    if (copy_open(loop, &a.spec, &ep, &cs, &err) < 0) {
        fail(err.text);
        goto out;
    }
    struct copy_job *job = cs.job;

    struct run_state rs = { .job = job, .loop = loop,
                            .show_progress = a.progress,
                            .argc = argc, .argv = argv,
                            .publish = &cs.publish,
                            .in_place_file = target_is_file(a.spec.target),
                            .state_path = a.state_path };
    if (install_signals(&rs, &err) < 0) {
        fail(err.text);
        goto out;
    }
    start_ticks(&rs, &a, &json);
    copy_job_start(job, on_done, &rs);
    copy_keeper_start(&kept, loop, job, cs.dst);
    int lr = loop_run_until(loop, &rs.finished);
    stop_ticks(&rs);
    if (lr < 0) {
        snprintf(err.text, sizeof err.text, "event loop failed: %s",
                 strerror(-lr));
        fail(err.text);
        goto out;
    }
    if (a.progress) {
        if (rs.final.state == COPY_DONE)
            progress_update(&rs.bar, rs.final.total, rs.final.total,
                            rs.final.elapsed_ns);
        progress_finish(&rs.bar);
    }

    const struct copy_progress *p = &rs.final;
    jfinal = rs.final;
    copy_keeper_stop(&kept, p);
    char advice[1024];
    resume_advice(&rs, p->watermark, advice, sizeof advice);
    if (p->state == COPY_CANCELLED) {
        report("cancelled at byte %" PRIu64 "; %s", p->watermark, advice);
        status = 128 + (rs.signo ? rs.signo : SIGINT);
        goto out;
    }
    if (p->state != COPY_DONE) {
        if (p->watermark == 0)
            report("%s (watermark 0: nothing to resume)",
                   p->error[0] ? p->error : strerror(-p->err));
        else if (p->watermark < p->total)
            report("%s (bytes before %" PRIu64 " are copied; %s)",
                   p->error[0] ? p->error : strerror(-p->err),
                   p->watermark, advice);
        else
            report("%s", p->error[0] ? p->error : strerror(-p->err));
        goto out;
    }

    /* Close now: closing the target may still write (qcow2 metadata) and
     * its failure fails the copy; then a created target gets its name. */
    if (copy_session_publish(&cs, &err) < 0) {
        fail(err.text);
        goto out;
    }
    status = 0;
    copy_keeper_done(&kept);
    if (!a.quiet && a.json_fd != 1)
        print_summary(&a, p);

out:
    copy_session_close(&cs, NULL);
    loop_free(loop);
out_json:
    if (a.json_fd >= 0)
        finish_json(&json, &jfinal, &a, status, err.text);
    return status;
}
