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
#include "copier/jobspec.h"

struct copy_args {
    /* What to copy, as a job file would say it: source/target are the
     * operands; copy.start_offset is --resume-from; --keep-backing sets
     * keep_backing (and copy.skip_backing), --allow-backing adds to
     * allow_backing.  copy_spec_check has passed. */
    struct copy_spec spec;
    bool create;                    /* --create */
    const char *state_path;         /* --state FILE (in argv), or NULL */
    bool progress;                  /* -p, --progress[=bar]: terminal bar */
    /* --progress=json: JSON lines (copier/status-json.h) on stdout, and
     * no summary line; --progress=fd:N: on descriptor N.  -1: none. */
    int json_fd;
    unsigned interval_ms;           /* --interval SECONDS (default 1 s) */
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
