/* progress.h — a progress display for long copies, shared by `imgfs copy`
 * and `imgfs wait`.
 *
 * On a terminal it redraws one line in place:
 *   " 42.0% [############                ] 1.2 GiB / 2.9 GiB  310 MiB/s  ETA 0:06"
 * Elsewhere (a log file, a pipe) it prints a plain line each time another
 * 10% is done, so logs stay short:
 *   "imgfs copy: 40% (1.2 GiB of 2.9 GiB, 310 MiB/s)"
 *
 * The caller feeds it numbers (bytes done, total, elapsed time); it keeps no
 * reference to any job, so it works from a copy_progress snapshot as well as
 * from a parsed .status file.  Not thread-safe: one caller thread.
 */
#ifndef IMGFS_PROGRESS_H
#define IMGFS_PROGRESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum progress_style {
    PROGRESS_AUTO,      /* BAR if `out` is a terminal, else LINES */
    PROGRESS_BAR,       /* redraw one line with \r */
    PROGRESS_LINES,     /* a line per 10% */
};

struct progress {
    /* private; set up by progress_init */
    FILE *out;
    const char *label;          /* prefix of LINES output, e.g. "imgfs copy" */
    enum progress_style style;
    bool drawn;                 /* BAR: a partial line is on screen */
    int last_decile;            /* LINES: last 10% step printed */
    uint64_t last_done;         /* for the rate */
    uint64_t last_ns;
    double rate;                /* smoothed bytes/s, 0 until known */
};

/* Prepare `p` to write to `out` (usually stderr).  `label` (kept by
 * pointer) prefixes LINES output. */
void progress_init(struct progress *p, FILE *out, const char *label,
                   enum progress_style style);

/* Show `done` of `total` bytes after `elapsed_ns`.  Call as often as you
 * like (a few times a second); LINES output only prints on a new 10%
 * step.  `done` may start above 0 (a resumed copy). */
void progress_update(struct progress *p, uint64_t done, uint64_t total,
                     uint64_t elapsed_ns);

/* End the display: BAR erases the line so the next message starts on a
 * clean line.  Safe to call when nothing was drawn. */
void progress_finish(struct progress *p);

/* ---- JSON lines (copier/status-json.h) -------------------------------
 *
 * `imgfs copy --progress=json|fd:N` and `imgfs wait --json` print one
 * status object per interval and a final one with the final state.  The
 * "rate" key is the rate since the previous line (the average over the
 * whole run on the first and on the final line); "eta_s" is computed from
 * it while running, 0 when done, null otherwise. */
struct progress_json {
    /* private; set up by progress_json_open */
    FILE *out;
    bool own;                   /* out is a dup of the caller's fd */
    const char *job;            /* "job" key (kept by pointer), or NULL */
    uint64_t first_done;        /* bytes done when the run started (a
                                 * resume offset): the caller may set it
                                 * after progress_json_open */
    uint64_t last_done, last_ns;
    bool have_last;
};

/* Write to descriptor `fd` (1: stdout itself; another: a duplicate, so
 * the caller's descriptor stays as it is).  Returns 0, or -EBADF when
 * `fd` is not open for writing. */
int progress_json_open(struct progress_json *pj, int fd, const char *job);

/* Print one line: `state` (copy_state_name or a status file's word),
 * counters, the limit in force (0: none), `elapsed_ns` since the run
 * started, `error` (NULL or ""). `final` marks the last line (average
 * rate).  Flushed at once. */
void progress_json_line(struct progress_json *pj, const char *state,
                        uint64_t done, uint64_t total, uint64_t watermark,
                        uint64_t rate_limit, uint64_t elapsed_ns,
                        const char *error, bool final);

/* Close what progress_json_open opened (never stdout). */
void progress_json_close(struct progress_json *pj);

/* Format helpers (also used for summaries).  They write into `buf` and
 * return it. */
/* Bytes with a binary unit: "512 B", "1.5 KiB", "2.0 GiB". */
char *progress_format_bytes(char *buf, size_t len, double bytes);
/* Duration: "0:07", "12:34", "1:02:03" (h:mm:ss); "--:--" if unknown. */
char *progress_format_duration(char *buf, size_t len, double seconds);

#endif
