/* wait-cmd.c — `imgfs wait MOUNT/control/x.job`: follow a job through its
 * status file until it ends.  Exit 0 when done; 1 with the error when it
 * failed or was cancelled, or is interrupted (the previous mount ended
 * while it ran: the message says how to resume it); 2 on usage errors or
 * a missing status file.  With --json, stdout carries only JSON lines
 * (copier/status-json.h, with "job"): one per --interval (default 1 s)
 * and a final one with the final state. */
#include "commands.h"
#include "copier/rate.h"
#include "progress.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Polling interval: at most POLL_MAX_MS, and about half the time the job
 * still needs at its current rate (at least POLL_MIN_MS), so a short job
 * is not reported up to a whole interval late. */
#define POLL_MAX_MS 200
#define POLL_MIN_MS 5

struct status {
    char state[32];
    char phase[32];             /* flushing, verifying or "" */
    uint64_t rate_limit;        /* bytes/s, 0: none */
    uint64_t resumed_from;
    char error[1024];
    uint64_t total, done, watermark;
    double elapsed;             /* seconds */
};

/* Read and parse the status file; returns 0 or -errno. */
static int read_status(const char *path, struct status *s)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return -errno;
    memset(s, 0, sizeof *s);
    char line[1200];
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = '\0';
        char *colon = strstr(line, ": ");
        if (!colon)
            continue;
        *colon = '\0';
        const char *v = colon + 2;
        if (!strcmp(line, "state"))
            snprintf(s->state, sizeof s->state, "%s", v);
        else if (!strcmp(line, "error"))
            snprintf(s->error, sizeof s->error, "%s", v);
        else if (!strcmp(line, "bytes-total"))
            s->total = strtoull(v, NULL, 10);
        else if (!strcmp(line, "bytes-done"))
            s->done = strtoull(v, NULL, 10);
        else if (!strcmp(line, "watermark"))
            s->watermark = strtoull(v, NULL, 10);
        else if (!strcmp(line, "elapsed"))
            s->elapsed = strtod(v, NULL);
        else if (!strcmp(line, "phase"))
            snprintf(s->phase, sizeof s->phase, "%s", v);
        else if (!strcmp(line, "resumed-from"))
            s->resumed_from = strtoull(v, NULL, 10);
        else if (!strcmp(line, "rate-limit")) {
            /* "50M", "50M (share of ...)" or "unlimited" */
            char word[64];
            snprintf(word, sizeof word, "%.*s", (int)strcspn(v, " "), v);
            if (rate_parse(word, &s->rate_limit) < 0)
                s->rate_limit = 0;
        }
    }
    fclose(f);
    return s->state[0] ? 0 : -EINVAL;
}

/* Milliseconds to sleep before reading the status again. */
static long poll_ms(const struct status *s)
{
    if (strcmp(s->state, "running") || s->elapsed <= 0 || s->done == 0)
        return 20;      /* starting, or no rate yet */
    double rate = (double)s->done / s->elapsed;            /* bytes/s */
    double left_ms = s->total > s->done
                   ? (double)(s->total - s->done) / rate * 1000.0 : 0.0;
    double ms = left_ms / 2;
    if (ms > POLL_MAX_MS)
        ms = POLL_MAX_MS;
    if (ms < POLL_MIN_MS)
        ms = POLL_MIN_MS;
    return (long)ms;
}

/* Parse --interval's value into *ms; false if it is not 0.1..3600 s. */
static bool parse_interval(const char *v, unsigned *ms)
{
    char *end;
    errno = 0;
    double secs = strtod(v, &end);
    if (errno || end == v || *end || !(secs >= 0.1 && secs <= 3600))
        return false;
    *ms = (unsigned)(secs * 1000.0 + 0.5);
    return true;
}

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* One JSON line for status `s` of job `name`. */
static void json_line(struct progress_json *pj, const struct status *s,
                      bool final)
{
    const char *state = s->phase[0] && !strcmp(s->state, "running")
                      ? s->phase : s->state;
    progress_json_line(pj, state, s->done, s->total, s->watermark,
                       s->rate_limit, (uint64_t)(s->elapsed * 1e9),
                       strcmp(s->error, "-") ? s->error : NULL, final);
}

int cmd_wait(int argc, char **argv)
{
    const char *job = NULL;
    bool json = false, help = false, bad = false;
    unsigned interval_ms = 1000;
    for (int i = 1; i < argc && !bad; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help"))
            help = true;
        else if (!strcmp(a, "--json"))
            json = true;
        else if (!strncmp(a, "--interval=", 11))
            bad = !parse_interval(a + 11, &interval_ms);
        else if (!strcmp(a, "--interval"))
            bad = i + 1 >= argc || !parse_interval(argv[++i], &interval_ms);
        else if (a[0] == '-' || job)
            bad = true;
        else
            job = a;
    }
    if (help || bad || !job) {
        fprintf(help ? stdout : stderr,
                "usage: imgfs wait [--json [--interval SECONDS]] "
                "MOUNT/control/NAME.job\n"
                "Follow job NAME until it ends.\n"
                "  --json            JSON lines on stdout instead of the "
                "progress bar: one\n"
                "                    every interval and a final one with "
                "the final state\n"
                "                    (keys: job, state, bytes_done, "
                "bytes_total, watermark,\n"
                "                    rate, rate_limit, eta_s, error, time)\n"
                "  --interval SECONDS  JSON interval (default 1, 0.1-3600)\n"
                "Exit status: 0 done, 1 failed, cancelled or interrupted, "
                "2 bad arguments or no status file.\n");
        return help ? 0 : 2;
    }
    size_t len = strlen(job);
    char *path;
    if (len > 4 && !strcmp(job + len - 4, ".job")) {
        if (asprintf(&path, "%.*s.status", (int)(len - 4), job) < 0)
            return 2;
    } else if (len > 7 && !strcmp(job + len - 7, ".status")) {
        path = strdup(job);
    } else {
        fprintf(stderr, "imgfs wait: %s: expected a .job path\n", job);
        return 2;
    }
    /* The job's name for JSON: the path's last component without .job. */
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    char name[256];
    snprintf(name, sizeof name, "%.*s", (int)(strlen(base) - 7), base);
    struct progress_json pj;
    if (json)
        progress_json_open(&pj, 1, name);
    uint64_t next_json = 0;
    bool first = true;
    struct progress prog;
    progress_init(&prog, stderr, "imgfs wait", PROGRESS_AUTO);
    struct status s;
    int rc;
    for (;;) {
        int r = read_status(path, &s);
        if (r < 0) {
            progress_finish(&prog);
            fprintf(stderr, "imgfs wait: %s: %s\n", path,
                    r == -EINVAL ? "not a job status file" : strerror(-r));
            rc = 2;
            break;
        }
        bool over = strcmp(s.state, "running") && strcmp(s.state, "queued");
        if (json) {
            if (first)
                pj.first_done = s.resumed_from;
            first = false;
            uint64_t now = mono_ms();
            if (over || now >= next_json) {
                json_line(&pj, &s, over);
                next_json = now + interval_ms;
            }
        } else if (!strcmp(s.state, "running"))
            progress_update(&prog, s.done, s.total,
                            (uint64_t)(s.elapsed * 1e9));
        if (!strcmp(s.state, "done")) {
            progress_finish(&prog);
            if (!json)
                printf("%s: done, %llu bytes\n", job,
                       (unsigned long long)s.total);
            rc = 0;
            break;
        }
        if (!strcmp(s.state, "interrupted")) {
            progress_finish(&prog);
            fprintf(stderr, "imgfs wait: %s: interrupted at watermark %llu "
                    "(%s); resume with: touch %.*s.job\n", job,
                    (unsigned long long)s.watermark, s.error,
                    (int)(strlen(path) - 7), path);
            rc = 1;
            break;
        }
        if (!strcmp(s.state, "failed") || !strcmp(s.state, "cancelled")) {
            progress_finish(&prog);
            fprintf(stderr, "imgfs wait: %s: %s at watermark %llu: %s\n", job,
                    s.state, (unsigned long long)s.watermark, s.error);
            rc = 1;
            break;
        }
        struct timespec ts = { 0, poll_ms(&s) * 1000000L };
        nanosleep(&ts, NULL);
    }
    free(path);
    return rc;
}
