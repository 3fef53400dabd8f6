/* progress.c — progress bar / progress lines.  See progress.h. */
#include "progress.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "copier/status-json.h"

#define BAR_WIDTH 28

char *progress_format_bytes(char *buf, size_t len, double bytes)
{
    static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB",
                                         "PiB", "EiB" };
    size_t u = 0;
    while (bytes >= 1024 && u + 1 < sizeof units / sizeof units[0]) {
        bytes /= 1024;
        u++;
    }
    if (u == 0)
        snprintf(buf, len, "%.0f B", bytes);
    else
        snprintf(buf, len, "%.1f %s", bytes, units[u]);
    return buf;
}

char *progress_format_duration(char *buf, size_t len, double seconds)
{
    if (!(seconds >= 0) || seconds > 1e8) {
        snprintf(buf, len, "--:--");
        return buf;
    }
    unsigned long s = (unsigned long)(seconds + 0.5);
    if (s >= 3600)
        snprintf(buf, len, "%lu:%02lu:%02lu", s / 3600, s / 60 % 60, s % 60);
    else
        snprintf(buf, len, "%lu:%02lu", s / 60, s % 60);
    return buf;
}

void progress_init(struct progress *p, FILE *out, const char *label,
                   enum progress_style style)
{
    *p = (struct progress){ .out = out, .label = label, .style = style,
                            .last_decile = 0 };
    if (style == PROGRESS_AUTO)
        p->style = isatty(fileno(out)) ? PROGRESS_BAR : PROGRESS_LINES;
}

/* Update the smoothed rate from the bytes done since the last update. */
static void update_rate(struct progress *p, uint64_t done, uint64_t now_ns)
{
    if (p->last_ns == 0 || done < p->last_done) {
        p->last_ns = now_ns;
        p->last_done = done;
        return;
    }
    uint64_t dt = now_ns - p->last_ns;
    if (dt < 200000000u)        /* measure over at least 0.2 s */
        return;
    double inst = (double)(done - p->last_done) * 1e9 / (double)dt;
    p->rate = p->rate > 0 ? 0.7 * p->rate + 0.3 * inst : inst;
    p->last_ns = now_ns;
    p->last_done = done;
}

void progress_update(struct progress *p, uint64_t done, uint64_t total,
                     uint64_t elapsed_ns)
{
    if (done > total)
        done = total;
    update_rate(p, done, elapsed_ns ? elapsed_ns : 1);
    double frac = total ? (double)done / (double)total : 1.0;
    char d[32], t[32], r[32], eta[32];
    progress_format_bytes(d, sizeof d, (double)done);
    progress_format_bytes(t, sizeof t, (double)total);
    /* Until a smoothed rate exists, use the average so far. */
    double rate = p->rate > 0 ? p->rate
                : elapsed_ns ? (double)done * 1e9 / (double)elapsed_ns : 0;
    if (rate > 0)
        progress_format_bytes(r, sizeof r, rate);
    else
        snprintf(r, sizeof r, "-");

    if (p->style == PROGRESS_LINES) {
        int decile = (int)(frac * 10.0);
        if (decile <= p->last_decile)
            return;
        p->last_decile = decile;
        fprintf(p->out, "%s: %d%% (%s of %s, %s/s)\n", p->label, decile * 10,
                d, t, r);
        fflush(p->out);
        return;
    }

    char bar[BAR_WIDTH + 1];
    int fill = (int)(frac * BAR_WIDTH);
    for (int i = 0; i < BAR_WIDTH; i++)
        bar[i] = i < fill ? '#' : ' ';
    bar[BAR_WIDTH] = '\0';
    progress_format_duration(eta, sizeof eta,
                             rate > 0 ? (double)(total - done) / rate : -1);
    fprintf(p->out, "\r%5.1f%% [%s] %s / %s  %s/s  ETA %s\033[K",
            frac * 100.0, bar, d, t, r, eta);
    fflush(p->out);
    p->drawn = true;
}

void progress_finish(struct progress *p)
{
    if (p->style == PROGRESS_BAR && p->drawn) {
        fprintf(p->out, "\r\033[K");
        fflush(p->out);
    }
    p->drawn = false;
}

/* ---- JSON lines ------------------------------------------------------- */

int progress_json_open(struct progress_json *pj, int fd, const char *job)
{
    *pj = (struct progress_json){ .out = stdout, .job = job };
    if (fd == 1)
        return 0;
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || (flags & O_ACCMODE) == O_RDONLY)
        return -EBADF;
    int d = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    FILE *f = d >= 0 ? fdopen(d, "w") : NULL;
    if (!f) {
        if (d >= 0)
            close(d);
        return -EBADF;
    }
    pj->out = f;
    pj->own = true;
    return 0;
}

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void progress_json_line(struct progress_json *pj, const char *state,
                        uint64_t done, uint64_t total, uint64_t watermark,
                        uint64_t rate_limit, uint64_t elapsed_ns,
                        const char *error, bool final)
{
    uint64_t now = mono_ns();
    uint64_t base = done >= pj->first_done ? done - pj->first_done : 0;
    double avg = elapsed_ns ? (double)base * 1e9 / (double)elapsed_ns : 0;
    double rate = avg;
    if (!final && pj->have_last && now > pj->last_ns && done >= pj->last_done)
        rate = (double)(done - pj->last_done) * 1e9 /
               (double)(now - pj->last_ns);
    pj->last_done = done;
    pj->last_ns = now;
    pj->have_last = true;
    double eta = -1;
    if (!strcmp(state, "done"))
        eta = 0;
    else if (!final && rate > 0 && total >= done)
        eta = (double)(total - done) / rate;
    struct status_json s = {
        .job = pj->job, .state = state, .bytes_done = done,
        .bytes_total = total, .watermark = watermark, .rate = rate,
        .rate_limit = rate_limit, .eta_s = eta, .error = error,
    };
    status_json_write(pj->out, &s);
    fflush(pj->out);
}

void progress_json_close(struct progress_json *pj)
{
    if (pj->own && pj->out)
        fclose(pj->out);
    pj->out = NULL;
    pj->own = false;
}
