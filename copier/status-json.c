/* status-json.c — status lines in JSON.  See status-json.h. */
#include "status-json.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <time.h>

/* Length of the valid UTF-8 sequence at `p` (1..4), or 0 if invalid. */
static size_t utf8_len(const unsigned char *p)
{
    unsigned char c = p[0];
    size_t n;
    unsigned char lo = 0x80, hi = 0xbf;     /* range of the second byte */
    if (c >= 0xc2 && c <= 0xdf)
        n = 2;
    else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        if (c == 0xe0)
            lo = 0xa0;                      /* no overlong forms */
        if (c == 0xed)
            hi = 0x9f;                      /* no surrogates */
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        if (c == 0xf0)
            lo = 0x90;
        if (c == 0xf4)
            hi = 0x8f;                      /* nothing above U+10FFFF */
    } else
        return 0;
    if (p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++)
        if (p[i] < 0x80 || p[i] > 0xbf)
            return 0;
    return n;
}

void json_write_string(FILE *f, const char *text)
{
    const unsigned char *p = (const unsigned char *)text;
    fputc('"', f);
    while (*p) {
        unsigned char c = *p;
        if (c == '"' || c == '\\') {
            fputc('\\', f);
            fputc(c, f);
            p++;
        } else if (c == '\n') {
            fputs("\\n", f);
            p++;
        } else if (c == '\t') {
            fputs("\\t", f);
            p++;
        } else if (c == '\r') {
            fputs("\\r", f);
            p++;
        } else if (c < 0x20 || c == 0x7f) {
            fprintf(f, "\\u%04x", c);
            p++;
        } else if (c < 0x80) {
            fputc(c, f);
            p++;
        } else {
            size_t n = utf8_len(p);
            if (n == 0) {
                fputs("\\ufffd", f);
                p++;
            } else {
                fwrite(p, 1, n, f);
                p += n;
            }
        }
    }
    fputc('"', f);
}

static double now_unix(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int status_json_write(FILE *f, const struct status_json *s)
{
    fputc('{', f);
    if (s->job) {
        fputs("\"job\":", f);
        json_write_string(f, s->job);
        fputc(',', f);
    }
    fputs("\"state\":", f);
    json_write_string(f, s->state ? s->state : "unknown");
    double rate = isfinite(s->rate) && s->rate > 0 ? s->rate : 0;
    fprintf(f, ",\"bytes_done\":%llu,\"bytes_total\":%llu,\"watermark\":%llu"
            ",\"rate\":%.0f,\"rate_limit\":%llu,\"eta_s\":",
            (unsigned long long)s->bytes_done,
            (unsigned long long)s->bytes_total,
            (unsigned long long)s->watermark, rate,
            (unsigned long long)s->rate_limit);
    if (isfinite(s->eta_s) && s->eta_s >= 0 && s->eta_s < 1e15)
        fprintf(f, "%.0f", s->eta_s);
    else
        fputs("null", f);
    fputs(",\"error\":", f);
    if (s->error && s->error[0])
        json_write_string(f, s->error);
    else
        fputs("null", f);
    fprintf(f, ",\"time\":%.3f}\n", s->time > 0 ? s->time : now_unix());
    return ferror(f) ? -EIO : 0;
}

char *status_json_format(const struct status_json *s)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        return NULL;
    int r = status_json_write(f, s);
    if (fclose(f) != 0 || r < 0) {
        free(buf);
        return NULL;
    }
    return buf;
}
