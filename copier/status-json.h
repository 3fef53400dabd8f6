/* status-json.h — a copy job's status as one line of JSON, the format of
 * `imgfs copy --progress=json`, `imgfs wait --json` and control/NAME.json.
 *
 * One object per line, always the same keys in this order:
 *   {"job":"NAME",                 only when a job name is given
 *    "state":"running",            queued running flushing verifying done
 *                                  failed cancelled interrupted
 *    "bytes_done":N,"bytes_total":N,"watermark":N,
 *    "rate":N,                     bytes/s measured (integer)
 *    "rate_limit":N,               bytes/s in force, 0: unlimited
 *    "eta_s":N|null,               whole seconds, null when unknown
 *    "error":null|"text",
 *    "time":UNIX_SECONDS}          wall clock, with fractions
 * Strings are escaped as RFC 8259 asks (quote, backslash, control
 * characters, DEL as \u007f); bytes that are not valid UTF-8 become
 * \ufffd, so every line is valid JSON in UTF-8 whatever the error text.
 */
#ifndef IMGFS_STATUS_JSON_H
#define IMGFS_STATUS_JSON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

struct status_json {
    const char *job;            /* NULL: no "job" key */
    const char *state;
    uint64_t bytes_done, bytes_total, watermark;
    double rate;                /* bytes/s, rounded to an integer */
    uint64_t rate_limit;
    double eta_s;               /* < 0 (or not finite): null */
    const char *error;          /* NULL or "": null */
    double time;                /* 0: now (CLOCK_REALTIME) */
};

/* Write `s` to `f` as one JSON object followed by "\n".  Returns 0 or
 * -EIO when the stream failed. */
int status_json_write(FILE *f, const struct status_json *s);

/* The same line in a malloc'd string (NULL on ENOMEM). */
char *status_json_format(const struct status_json *s);

/* Write `text` (NUL-terminated) as a JSON string with its quotes. */
void json_write_string(FILE *f, const char *text);

#endif
