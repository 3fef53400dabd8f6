/* jobspec.c — parse job files (see jobspec.h).
 *
 * Grammar, one item per line:  key = value   (# comment anywhere, blank
 * lines ignored, spaces/tabs/CR around tokens ignored).  A value cannot
 * contain '#'.  Every key but allow-backing may appear once; unknown keys, bad values, NUL
 * bytes and lines longer than JOB_LINE_MAX are errors naming the line.
 */
#include "jobspec.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "rate.h"

#define JOB_LINE_MAX 4096

void copy_spec_init(struct copy_spec *spec)
{
    memset(spec, 0, sizeof *spec);
    spec->source_format = IMAGE_FORMAT_AUTO;
    spec->target_format = IMAGE_FORMAT_RAW;
    copy_options_init(&spec->copy);
    /* Jobs find their depth within a memory limit unless requests pin it. */
    spec->copy.adaptive = true;
    spec->copy.memory = COPY_DEFAULT_MEMORY;
}

int copy_spec_parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = { "yes", "true", "on", "1" };
    static const char *const no[] = { "no", "false", "off", "0" };
    if (!s)
        return -EINVAL;
    for (unsigned i = 0; i < 4; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return -EINVAL;
}

/* Per-key value parsers: return NULL or a description of what the value
 * should have been (used as "line N: KEY: 'VALUE' is not DESCRIPTION"). */
typedef const char *(*value_parser)(const char *v, struct copy_spec *s);

static bool is_control(char c)
{
    return (unsigned char)c < 0x20 || c == 0x7f;
}

/* True if `path` has a ".." component ("..", "../x", "x/..", "x/../y"). */
static bool has_dotdot(const char *path)
{
    while (*path) {
        size_t len = strcspn(path, "/");
        if (len == 2 && path[0] == '.' && path[1] == '.')
            return true;
        path += len;
        path += *path == '/';
    }
    return false;
}

/* source and target name images inside the mount: no control characters
 * (they would reach status files and logs) and no ".." component (it would
 * leave the directory the mount was given, up to the NFS server's export). */
static const char *set_path(const char *v, char *dst, size_t cap)
{
    size_t n = strlen(v);
    if (n >= cap)
        return "a path of fewer than 1024 bytes";
    for (size_t i = 0; i < n; i++)
        if (is_control(v[i]))
            return "a path without control characters";
    if (has_dotdot(v))
        return "a path without '..' components";
    memcpy(dst, v, n + 1);
    return NULL;
}

static const char *p_source(const char *v, struct copy_spec *s)
{
    return set_path(v, s->source, sizeof s->source);
}

static const char *p_target(const char *v, struct copy_spec *s)
{
    return set_path(v, s->target, sizeof s->target);
}

static const char *p_source_format(const char *v, struct copy_spec *s)
{
    if (image_format_parse(v, true, &s->source_format) < 0)
        return "auto, raw or qcow2";
    return NULL;
}

static const char *p_target_format(const char *v, struct copy_spec *s)
{
    if (image_format_parse(v, false, &s->target_format) < 0)
        return "raw or qcow2";
    return NULL;
}

static const char *p_order(const char *v, struct copy_spec *s)
{
    if (copy_order_parse(v, &s->copy.order) < 0)
        return "strict, pipelined or any";
    return NULL;
}

static const char *p_requests(const char *v, struct copy_spec *s)
{
    char *end;
    if (!isdigit((unsigned char)v[0]))
        return "a number of requests (1..1024)";
    errno = 0;
    unsigned long n = strtoul(v, &end, 10);
    if (errno || *end || n < 1 || n > COPY_MAX_REQUESTS)
        return "a number of requests (1..1024)";
    s->copy.requests = (unsigned)n;
    s->copy.adaptive = false;       /* a fixed pool, whatever `memory` */
    return NULL;
}

static const char *p_memory(const char *v, struct copy_spec *s)
{
    uint64_t n;
    if (image_parse_size(v, &n) < 0 || n < 4096 || n > (1ull << 40))
        return "a size between 4K and 1T";
    s->copy.memory = n;
    return NULL;
}

static const char *p_request_size(const char *v, struct copy_spec *s)
{
    uint64_t n;
    if (image_parse_size(v, &n) < 0)
        return "a size";
    if (n == 0 || n > COPY_MAX_REQUEST_SIZE)
        return "a size between 1 and 64M";
    s->copy.request_size = (size_t)n;
    return NULL;
}

static const char *p_sparse(const char *v, struct copy_spec *s)
{
    if (image_parse_size(v, &s->copy.sparse) < 0)
        return "a size";
    return NULL;
}

static const char *p_rate(const char *v, struct copy_spec *s)
{
    if (rate_parse(v, &s->copy.rate) < 0)
        return "a rate (0 for unlimited, or 1K to 1T bytes/s, e.g. 50M)";
    return NULL;
}

static const char *p_cluster_size(const char *v, struct copy_spec *s)
{
    uint64_t n;
    if (image_parse_size(v, &n) < 0)
        return "a size";
    if (n < 512 || n > 2 * 1024 * 1024 || (n & (n - 1)))
        return "a power of two between 512 and 2M";
    s->cluster_size = (unsigned)n;
    return NULL;
}

static const char *p_backing(const char *v, struct copy_spec *s)
{
    if (strcmp(v, "flatten") == 0)
        s->keep_backing = false;
    else if (strcmp(v, "keep") == 0)
        s->keep_backing = true;
    else
        return "flatten or keep";
    s->copy.skip_backing = s->keep_backing;
    return NULL;
}

static const char *p_allow_backing(const char *v, struct copy_spec *s)
{
    if (s->n_allow_backing >= JOB_MAX_ALLOW_BACKING)
        return "allowed: at most 8 allow-backing lines";
    if (copy_spec_allow_backing(s, v) < 0)
        return "a URL or path prefix of fewer than 1024 bytes";
    return NULL;
}

#define BOOL_PARSER(fn, field)                                           \
    static const char *fn(const char *v, struct copy_spec *s)             \
    {                                                                    \
        return copy_spec_parse_bool(v, &s->field) < 0 ? "yes or no" : NULL;        \
    }
BOOL_PARSER(p_compress, compress)
BOOL_PARSER(p_verify, copy.verify)
BOOL_PARSER(p_resume, resume)
BOOL_PARSER(p_overwrite, overwrite)
BOOL_PARSER(p_target_is_zero, copy.target_is_zero)

static const struct {
    const char *key;
    value_parser parse;
    bool repeats;           /* may be given more than once */
} keys[] = {
    { "source", p_source },
    { "target", p_target },
    { "source-format", p_source_format },
    { "target-format", p_target_format },
    { "order", p_order },
    { "requests", p_requests },
    { "request-size", p_request_size },
    { "memory", p_memory },
    { "sparse", p_sparse },
    { "rate", p_rate },
    { "compress", p_compress },
    { "cluster-size", p_cluster_size },
    { "backing", p_backing },
    { "verify", p_verify },
    { "resume", p_resume },
    { "overwrite", p_overwrite },
    { "target-is-zero", p_target_is_zero },
    { "allow-backing", p_allow_backing, true },
};
#define NKEYS (sizeof keys / sizeof *keys)

static bool is_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

/* Trim blanks at both ends of [b, e) in place; returns the start. */
static char *trim(char *b, char *e)
{
    while (b < e && is_blank(*b))
        b++;
    while (e > b && is_blank(e[-1]))
        e--;
    *e = '\0';
    return b;
}

/* At most 64 bytes of `v` for an error message, control characters
 * written as \xNN so that the message stays one printable line. */
#define SHOWN_MAX (64 * 4 + 1)
static const char *shown(const char *v, char out[SHOWN_MAX])
{
    size_t o = 0;
    for (size_t i = 0; v[i] && i < 64; i++) {
        if (is_control(v[i]))
            o += (size_t)snprintf(out + o, SHOWN_MAX - o, "\\x%02x",
                                  (unsigned char)v[i]);
        else
            out[o++] = v[i];
    }
    out[o] = '\0';
    return out;
}

/* Parse one line (NUL-terminated copy, comment already cut). */
static int parse_line(char *line, unsigned lineno, bool seen[NKEYS],
                      struct copy_spec *spec, struct errmsg *err)
{
    char *end = line + strlen(line);
    char *eq = strchr(line, '=');
    char buf[SHOWN_MAX];
    if (!eq) {
        char *text = trim(line, end);
        if (!*text)
            return 0;
        errmsg_set(err, "line %u: expected 'key = value', got '%s'",
                   lineno, shown(text, buf));
        return -EINVAL;
    }
    char *key = trim(line, eq);
    char *value = trim(eq + 1, end);
    if (!*key) {
        errmsg_set(err, "line %u: missing key before '='", lineno);
        return -EINVAL;
    }
    for (size_t i = 0; i < NKEYS; i++) {
        if (strcmp(key, keys[i].key) != 0)
            continue;
        if (seen[i] && !keys[i].repeats) {
            errmsg_set(err, "line %u: '%s' given twice", lineno, key);
            return -EINVAL;
        }
        seen[i] = true;
        if (!*value) {
            errmsg_set(err, "line %u: '%s' has no value", lineno, key);
            return -EINVAL;
        }
        const char *want = keys[i].parse(value, spec);
        if (want) {
            errmsg_set(err, "line %u: %s: '%s' is not %s", lineno, key,
                       shown(value, buf), want);
            return -EINVAL;
        }
        return 0;
    }
    errmsg_set(err, "line %u: unknown key '%s'", lineno, shown(key, buf));
    return -EINVAL;
}

int copy_spec_parse(const char *text, size_t len, struct copy_spec *spec,
                    struct errmsg *err)
{
    copy_spec_init(spec);
    bool seen[NKEYS] = { false };
    char line[JOB_LINE_MAX + 1];
    unsigned lineno = 0;
    size_t pos = 0;

    if (!text && len)
        return -EINVAL;
    while (pos < len) {
        lineno++;
        const char *start = text + pos;
        const char *nl = memchr(start, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - start) : len - pos;
        pos += n + (nl ? 1 : 0);
        if (memchr(start, '\0', n)) {
            errmsg_set(err, "line %u: NUL byte in job text (not a text "
                       "file?)", lineno);
            return -EINVAL;
        }
        if (n > JOB_LINE_MAX) {
            errmsg_set(err, "line %u: line too long (%zu bytes; at most %u)",
                       lineno, n, JOB_LINE_MAX);
            return -EINVAL;
        }
        memcpy(line, start, n);
        line[n] = '\0';
        char *hash = strchr(line, '#');
        if (hash)
            *hash = '\0';
        int r = parse_line(line, lineno, seen, spec, err);
        if (r < 0)
            return r;
    }
    if (!seen[0]) {
        errmsg_set(err, "missing 'source'");
        return -EINVAL;
    }
    if (!seen[1]) {
        errmsg_set(err, "missing 'target'");
        return -EINVAL;
    }
    return 0;
}

int copy_spec_allow_backing(struct copy_spec *spec, const char *prefix)
{
    size_t n = strlen(prefix);
    if (spec->n_allow_backing >= JOB_MAX_ALLOW_BACKING || n == 0 ||
        n >= JOB_PATH_MAX)
        return -EINVAL;
    for (size_t i = 0; i < n; i++)
        if (iscntrl((unsigned char)prefix[i]))
            return -EINVAL;
    memcpy(spec->allow_backing[spec->n_allow_backing++], prefix, n + 1);
    return 0;
}

/* A setting's name in messages: the job-file key, or "--key". */
#define SETTING(style, key) ((style) == COPY_SPEC_CLI ? "--" key : key)

int copy_spec_check(struct copy_spec *spec, enum copy_spec_style style,
                    struct errmsg *err)
{
    bool cli = style == COPY_SPEC_CLI;
    if (spec->copy.adaptive && spec->copy.memory < spec->copy.request_size) {
        errmsg_set(err, "%s (%llu) must be at least %s (%zu)",
                   SETTING(style, "memory"),
                   (unsigned long long)spec->copy.memory,
                   SETTING(style, "request-size"), spec->copy.request_size);
        return -EINVAL;
    }
    if (spec->copy.sparse > spec->copy.request_size) {
        errmsg_set(err, "%s (%llu) must not exceed %s (%zu)",
                   SETTING(style, "sparse"),
                   (unsigned long long)spec->copy.sparse,
                   SETTING(style, "request-size"), spec->copy.request_size);
        return -EINVAL;
    }
    if (spec->target_format != IMAGE_FORMAT_QCOW2) {
        const char *what = spec->compress ? SETTING(style, "compress")
                         : spec->cluster_size ? SETTING(style, "cluster-size")
                         : spec->keep_backing
                             ? (cli ? "--keep-backing" : "backing = keep")
                             : NULL;
        if (what) {
            errmsg_set(err, "%s needs %s", what,
                       cli ? "--target-format qcow2" : "target-format = qcow2");
            return -EINVAL;
        }
    }
    if (spec->keep_backing &&
        (spec->copy.verify || spec->copy.target_is_zero)) {
        errmsg_set(err, "%s cannot be combined with %s",
                   cli ? "--keep-backing" : "backing = keep",
                   spec->copy.verify
                   ? (cli ? "--verify (the target reads its backing where "
                            "the copied layer is unallocated; compare with "
                            "qemu-img compare)"
                          : "verify (compare with qemu-img compare)")
                   : (cli ? "--target-is-zero (the target reads its backing "
                            "file)"
                          : "target-is-zero"));
        return -EINVAL;
    }
    spec->copy.skip_backing = spec->keep_backing;
    return 0;
}
