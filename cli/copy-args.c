/* copy-args.c — parse and validate `imgfs copy` options.  See
 * copy-args.h. */
#include "copy-args.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "copier/rate.h"

void copy_args_usage(FILE *f)
{
    fprintf(f,
        "usage: imgfs copy [options] SOURCE TARGET\n"
        "\n"
        "Copy image SOURCE onto image TARGET with many requests in flight.\n"
        "Images: nfs://server/export/path[?nfsport=N&mountport=M],\n"
        "        iscsi://[user@]host[:port]/iqn/lun, null:, zero:SIZE, local paths.\n"
        "\n"
        "Options:\n"
        "  --requests N           a fixed number of requests in flight (1-%u);\n"
        "                         default: the copy finds it (from latency and\n"
        "                         throughput of both sides) within --memory\n"
        "  --request-size SIZE    bytes per request (default 1M, at most 64M)\n"
        "  --memory SIZE          buffer memory the copy may use (default %lluM)\n"
        "  --order MODE           target write order: strict, pipelined (default)\n"
        "                         or any\n"
        "  --sparse SIZE          zero runs of at least SIZE bytes become zero\n"
        "                         writes or holes (default 4K; 0 writes every byte;\n"
        "                         a multiple of 512)\n"
        "  --target-is-zero       the target already reads as zeroes: skip zeroes\n"
        "  --verify               read both images again and compare after copying\n"
        "  --create               create TARGET (local or NFS file, mode 0600) with\n"
        "                         the size of SOURCE; a new file (and every qcow2\n"
        "                         target) is written as .NAME.imgfs-partial next\n"
        "                         to it and renamed to TARGET only when the copy\n"
        "                         is complete; an existing raw file is written\n"
        "                         in place (to keep the old one until the new\n"
        "                         one is complete, copy to a new name)\n"
        "  --overwrite            allow replacing an existing non-empty file;\n"
        "                         with --create a raw one is truncated and\n"
        "                         written in place, a qcow2 one replaced when\n"
        "                         the copy is complete\n"
        "  --source-format FMT    auto (default), raw or qcow2\n"
        "  --target-format FMT    raw (default) or qcow2\n"
        "  --cluster-size SIZE    qcow2 target cluster size (default 64K)\n"
        "  --compress             compress qcow2 target clusters\n"
        "  --allow-backing PREFIX a qcow2 SOURCE may open backing files whose\n"
        "                         resolved name starts with PREFIX (repeatable);\n"
        "                         without it only backing files in the image's\n"
        "                         own export (NFS) or directory tree (local)\n"
        "  --keep-backing         copy only SOURCE's top qcow2 layer; the qcow2\n"
        "                         target records SOURCE's backing file (its stored\n"
        "                         name if it resolves to the same file from TARGET,\n"
        "                         else an absolute path or URL)\n"
        "  --resume-from OFFSET   continue a failed or cancelled copy at the byte\n"
        "                         offset it reported (nothing is truncated; with\n"
        "                         --create, the partial file of a new raw TARGET\n"
        "                         is continued; created qcow2 targets restart\n"
        "                         from 0: rerun without it)\n"
        "  --state FILE           keep the copy's durable watermark in FILE while\n"
        "                         it runs; if FILE names the same SOURCE and\n"
        "                         TARGET, resume there; removed on success\n"
        "  --rate RATE            write at most RATE bytes/s of data (e.g. 50M;\n"
        "                         0: unlimited, the default; zero ranges are\n"
        "                         free; bursts last at most 100 ms)\n"
        "  -p, --progress         show progress (bar with rate and ETA on a\n"
        "                         terminal, a line every 10%% otherwise)\n"
        "  --progress=json        progress as JSON lines on stdout, one every\n"
        "                         interval and a final one with the final state\n"
        "                         (no summary line); keys: state, bytes_done,\n"
        "                         bytes_total, watermark, rate, rate_limit, eta_s,\n"
        "                         error, time\n"
        "  --progress=fd:N        the same JSON lines on file descriptor N\n"
        "  --interval SECONDS     JSON progress interval (default 1, 0.1-3600)\n"
        "  -q                     quiet: no summary line\n"
        "  -h, --help             this text\n"
        "\n"
        "SIZE and OFFSET take K, M, G, T suffixes (powers of 1024).\n"
        "Ctrl-C cancels cleanly and prints the offset to resume from.\n"
        "Exit status: 0 copied, 1 failed, 2 bad arguments, 130/143 interrupted.\n",
        COPY_MAX_REQUESTS, COPY_DEFAULT_MEMORY >> 20);
}

/* Options that take a value. */
enum opt_id {
    O_REQUESTS, O_REQUEST_SIZE, O_ORDER, O_SPARSE, O_SOURCE_FORMAT,
    O_TARGET_FORMAT, O_CLUSTER_SIZE, O_RESUME_FROM, O_ALLOW_BACKING,
    O_STATE, O_RATE, O_INTERVAL, O_MEMORY,
    /* flags */
    O_TARGET_IS_ZERO, O_VERIFY, O_CREATE, O_OVERWRITE, O_COMPRESS,
    O_KEEP_BACKING, O_PROGRESS, O_QUIET, O_HELP,
};

struct opt_def {
    const char *name;
    enum opt_id id;
    bool has_value;
    bool optional_value;        /* a value only as --name=VALUE */
};

static const struct opt_def opt_defs[] = {
    { "--requests", O_REQUESTS, true },
    { "--request-size", O_REQUEST_SIZE, true },
    { "--memory", O_MEMORY, true },
    { "--order", O_ORDER, true },
    { "--sparse", O_SPARSE, true },
    { "--source-format", O_SOURCE_FORMAT, true },
    { "--target-format", O_TARGET_FORMAT, true },
    { "--cluster-size", O_CLUSTER_SIZE, true },
    { "--resume-from", O_RESUME_FROM, true },
    { "--allow-backing", O_ALLOW_BACKING, true },
    { "--state", O_STATE, true },
    { "--rate", O_RATE, true },
    { "--interval", O_INTERVAL, true },
    { "--target-is-zero", O_TARGET_IS_ZERO, false },
    { "--verify", O_VERIFY, false },
    { "--create", O_CREATE, false },
    { "--overwrite", O_OVERWRITE, false },
    { "--compress", O_COMPRESS, false },
    { "--keep-backing", O_KEEP_BACKING, false },
    { "-p", O_PROGRESS, false },
    { "--progress", O_PROGRESS, false, true },
    { "-q", O_QUIET, false },
    { "--quiet", O_QUIET, false },
    { "-h", O_HELP, false },
    { "--help", O_HELP, false },
};

static const struct opt_def *find_opt(const char *arg, size_t namelen)
{
    for (size_t i = 0; i < sizeof opt_defs / sizeof opt_defs[0]; i++) {
        if (strlen(opt_defs[i].name) == namelen &&
            strncmp(opt_defs[i].name, arg, namelen) == 0)
            return &opt_defs[i];
    }
    return NULL;
}

static int bad(struct errmsg *err, const char *fmt, const char *opt,
               const char *val)
{
    errmsg_set(err, fmt, opt, val);
    return -EINVAL;
}

/* -p / --progress[=bar|json|fd:N]. */
static int apply_progress(struct copy_args *a, const struct opt_def *d,
                          const char *val, struct errmsg *err)
{
    if (!val || strcmp(val, "bar") == 0) {
        a->progress = true;
        return 0;
    }
    if (strcmp(val, "json") == 0) {
        a->json_fd = 1;
        return 0;
    }
    if (strncmp(val, "fd:", 3) == 0 && val[3] >= '0' && val[3] <= '9') {
        char *end;
        errno = 0;
        long fd = strtol(val + 3, &end, 10);
        if (!errno && !*end && fd >= 0 && fd <= 65535) {
            a->json_fd = (int)fd;
            return 0;
        }
    }
    return bad(err, "%s: '%s' is not bar, json or fd:N", d->name, val);
}

/* Apply one option with its value (NULL for flags). */
static int apply(struct copy_args *a, const struct opt_def *d,
                 const char *val, struct errmsg *err)
{
    uint64_t v;
    switch (d->id) {
    case O_REQUESTS: {
        char *end;
        errno = 0;
        unsigned long n = strtoul(val, &end, 10);
        if (errno || end == val || *end || val[0] == '-' || n < 1 ||
            n > COPY_MAX_REQUESTS) {
            errmsg_set(err, "%s: '%s' is not a number from 1 to %u",
                       d->name, val, COPY_MAX_REQUESTS);
            return -EINVAL;
        }
        a->spec.copy.requests = (unsigned)n;
        a->spec.copy.adaptive = false;
        return 0;
    }
    case O_MEMORY:
        if (image_parse_size(val, &v) < 0)
            return bad(err, "%s: '%s' is not a size", d->name, val);
        if (v < 4096 || v > (1ull << 40))
            return bad(err, "%s: '%s' is out of range (4K to 1T)", d->name,
                       val);
        a->spec.copy.memory = v;
        return 0;
    case O_REQUEST_SIZE:
        if (image_parse_size(val, &v) < 0)
            return bad(err, "%s: '%s' is not a size", d->name, val);
        if (v == 0 || v > COPY_MAX_REQUEST_SIZE) {
            errmsg_set(err, "%s: '%s' is out of range (1 byte to %u MiB)",
                       d->name, val, COPY_MAX_REQUEST_SIZE >> 20);
            return -EINVAL;
        }
        a->spec.copy.request_size = (size_t)v;
        return 0;
    case O_ORDER:
        if (copy_order_parse(val, &a->spec.copy.order) < 0)
            return bad(err, "%s: '%s' is not strict, pipelined or any",
                       d->name, val);
        return 0;
    case O_SPARSE:
        if (image_parse_size(val, &v) < 0)
            return bad(err, "%s: '%s' is not a size", d->name, val);
        if (v % 512)
            return bad(err, "%s: '%s' must be 0 or a multiple of 512",
                       d->name, val);
        a->spec.copy.sparse = v;
        return 0;
    case O_SOURCE_FORMAT:
        if (image_format_parse(val, true, &a->spec.source_format) < 0)
            return bad(err, "%s: '%s' is not auto, raw or qcow2", d->name, val);
        return 0;
    case O_TARGET_FORMAT:
        if (image_format_parse(val, false, &a->spec.target_format) < 0)
            return bad(err, "%s: '%s' is not raw or qcow2", d->name, val);
        return 0;
    case O_CLUSTER_SIZE:
        if (image_parse_size(val, &v) < 0)
            return bad(err, "%s: '%s' is not a size", d->name, val);
        if (v < 512 || v > 2 * 1024 * 1024 || (v & (v - 1)))
            return bad(err, "%s: '%s' is not a power of two from 512 to 2M",
                       d->name, val);
        a->spec.cluster_size = (uint32_t)v;
        return 0;
    case O_RESUME_FROM:
        if (image_parse_size(val, &v) < 0)
            return bad(err, "%s: '%s' is not a byte offset", d->name, val);
        a->spec.copy.start_offset = v;
        return 0;
    case O_ALLOW_BACKING:
        if (copy_spec_allow_backing(&a->spec, val) < 0) {
            errmsg_set(err, "%s: '%.64s' is not a prefix of fewer than %u "
                       "bytes without control characters, or more than %u "
                       "were given", d->name, val, JOB_PATH_MAX,
                       JOB_MAX_ALLOW_BACKING);
            return -EINVAL;
        }
        return 0;
    case O_RATE:
        switch (rate_parse(val, &v)) {
        case 0:
            a->spec.copy.rate = v;
            return 0;
        case -ERANGE:
            errmsg_set(err, "%s: '%s' is out of range (0 for unlimited, or "
                       "1K to 1T bytes/s)", d->name, val);
            return -EINVAL;
        default:
            return bad(err, "%s: '%s' is not a rate (bytes/s, e.g. 50M; 0 "
                       "for unlimited)", d->name, val);
        }
    case O_INTERVAL: {
        char *end;
        errno = 0;
        double secs = strtod(val, &end);
        if (errno || end == val || *end || !(secs >= 0.1 && secs <= 3600))
            return bad(err, "%s: '%s' is not a number of seconds from 0.1 "
                       "to 3600", d->name, val);
        a->interval_ms = (unsigned)(secs * 1000.0 + 0.5);
        return 0;
    }
    case O_STATE:
        if (!val[0])
            return bad(err, "%s: '%s' is not a file name", d->name, val);
        a->state_path = val;
        return 0;
    case O_TARGET_IS_ZERO: a->spec.copy.target_is_zero = true; return 0;
    case O_VERIFY: a->spec.copy.verify = true; return 0;
    case O_CREATE: a->create = true; return 0;
    case O_OVERWRITE: a->spec.overwrite = true; return 0;
    case O_COMPRESS: a->spec.compress = true; return 0;
    case O_KEEP_BACKING: a->spec.keep_backing = true; return 0;
    case O_PROGRESS:
        return apply_progress(a, d, val, err);
    case O_QUIET: a->quiet = true; return 0;
    case O_HELP: a->help = true; return 0;
    }
    return -EINVAL;
}

/* Checks that involve several options. */
static int validate(struct copy_args *a, bool sparse_given,
                    struct errmsg *err)
{
    /* The default zero-run size shrinks with a small --request-size; an
     * explicit --sparse larger than a request could never match. */
    if (!sparse_given && a->spec.copy.sparse > a->spec.copy.request_size)
        a->spec.copy.sparse = a->spec.copy.request_size / 512 * 512;
    int r = copy_spec_check(&a->spec, COPY_SPEC_CLI, err);
    if (r < 0)
        return r;
    /* --resume-from with --create continues the partial file of a raw
     * target (copy-open.h); a created qcow2 target is a new file each
     * time. */
    if (a->spec.copy.start_offset && a->create &&
        a->spec.target_format == IMAGE_FORMAT_QCOW2) {
        errmsg_set(err, "--resume-from cannot be combined with --create and "
                   "--target-format qcow2: a created qcow2 target restarts "
                   "from 0 (rerun the command without --resume-from)");
        return -EINVAL;
    }
    if (a->progress && a->quiet) {
        errmsg_set(err, "-p and -q exclude each other");
        return -EINVAL;
    }
    return 0;
}

int copy_args_parse(int argc, char **argv, struct copy_args *out,
                    struct errmsg *err)
{
    struct copy_args a = { 0 };
    a.json_fd = -1;
    a.interval_ms = 1000;
    copy_spec_init(&a.spec);
    const char *operands[2];
    int noperands = 0;
    bool options_done = false;
    bool sparse_given = false;

    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (options_done || arg[0] != '-' || arg[1] == '\0') {
            if (noperands == 2) {
                errmsg_set(err, "unexpected argument '%s': expected only "
                           "SOURCE and TARGET", arg);
                return -EINVAL;
            }
            operands[noperands++] = arg;
            continue;
        }
        if (strcmp(arg, "--") == 0) {
            options_done = true;
            continue;
        }
        const char *eq = arg[1] == '-' ? strchr(arg, '=') : NULL;
        size_t namelen = eq ? (size_t)(eq - arg) : strlen(arg);
        const struct opt_def *d = find_opt(arg, namelen);
        if (!d) {
            errmsg_set(err, "unknown option '%.*s' (see imgfs copy --help)",
                       (int)namelen, arg);
            return -EINVAL;
        }
        const char *val = NULL;
        if (d->has_value) {
            if (eq)
                val = eq + 1;
            else if (i + 1 < argc)
                val = argv[++i];
            else {
                errmsg_set(err, "%s needs a value", d->name);
                return -EINVAL;
            }
        } else if (eq && d->optional_value) {
            val = eq + 1;
        } else if (eq) {
            errmsg_set(err, "%s takes no value", d->name);
            return -EINVAL;
        }
        if (d->id == O_SPARSE)
            sparse_given = true;
        int r = apply(&a, d, val, err);
        if (r < 0)
            return r;
        if (a.help) {
            *out = a;
            return 0;
        }
    }
    if (noperands != 2) {
        errmsg_set(err, "expected SOURCE and TARGET (see imgfs copy --help)");
        return -EINVAL;
    }
    for (int k = 0; k < 2; k++) {
        char *dst = k ? a.spec.target : a.spec.source;
        if (strlen(operands[k]) >= JOB_PATH_MAX) {
            errmsg_set(err, "%s is longer than %u bytes",
                       k ? "TARGET" : "SOURCE", JOB_PATH_MAX - 1);
            return -EINVAL;
        }
        strcpy(dst, operands[k]);
    }
    int r = validate(&a, sparse_given, err);
    if (r < 0)
        return r;
    *out = a;
    return 0;
}
