/* copy-args.h — command-line options of `imgfs copy`, parsed and
 * validated without touching any image (so bad input changes nothing). */
#ifndef IMGFS_COPY_ARGS_H
#define IMGFS_COPY_ARGS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "backends/errmsg.h"
#include "backends/image-open.h"
#include "copier/engine.h"

struct copy_args {
    const char *source;             /* URL or path (points into argv) */
    const char *target;
    struct copy_options copy;       /* engine options; start_offset is
                                     * --resume-from */
    bool create;                    /* --create */
    bool overwrite;                 /* --overwrite */
    enum image_format source_format;    /* --source-format, AUTO default */
    enum image_format target_format;    /* --target-format, RAW default */
    uint32_t cluster_size;          /* --cluster-size, 0: qcow2 default */
    bool compress;                  /* --compress */
    bool keep_backing;              /* --keep-backing (sets
                                     * copy.skip_backing; refused with
                                     * --verify, --target-is-zero) */
    bool progress;                  /* -p */
    bool quiet;                     /* -q */
    bool help;                      /* --help / -h: print usage, nothing else */
};

/* Parse `argv` (argv[0] is the subcommand name, "copy").  Options and the
 * two operands may come in any order; "--" ends the options.  Values are
 * given as "--name VALUE" or "--name=VALUE".
 *
 * Returns 0 with *out filled (engine defaults for what is not given), or
 * -EINVAL with `err` holding one line naming the option and the problem,
 * e.g. "--requests: '0' is not a number from 1 to 1024",
 * "unknown option '--fast'", "expected SOURCE and TARGET".  With --help,
 * returns 0 and sets out->help without checking the rest. */
int copy_args_parse(int argc, char **argv, struct copy_args *out,
                    struct errmsg *err);

/* Print the `imgfs copy --help` text to `f`. */
void copy_args_usage(FILE *f);

#endif
