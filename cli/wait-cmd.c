/* wait-cmd.c — `imgfs wait MOUNT/control/x.job`: follow a job through its
 * status file until it ends.  Exit 0 when done; 1 with the error when it
 * failed or was cancelled, or is interrupted (the previous mount ended
 * while it ran: the message says how to resume it); 2 on usage errors or
 * a missing status file. */
#include "commands.h"
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

int cmd_wait(int argc, char **argv)
{
    if (argc != 2 || argv[1][0] == '-') {
        bool help = argc == 2 && (!strcmp(argv[1], "-h") ||
                                  !strcmp(argv[1], "--help"));
        fprintf(help ? stdout : stderr,
                "usage: imgfs wait MOUNT/control/NAME.job\n"
                "Follow job NAME until it ends.\n"
                "Exit status: 0 done, 1 failed, cancelled or interrupted, "
                "2 bad arguments or no status file.\n");
        return help ? 0 : 2;
    }
    const char *job = argv[1];
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
        if (!strcmp(s.state, "running"))
            progress_update(&prog, s.done, s.total,
                            (uint64_t)(s.elapsed * 1e9));
        if (!strcmp(s.state, "done")) {
            progress_finish(&prog);
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
