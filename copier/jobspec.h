/* jobspec.h — the job file format (DESIGN.md "Job file").
 *
 *   # comment
 *   source        = templates/debian-12.qcow2
 *   target        = lun0
 *   source-format = auto         # auto | raw | qcow2
 *   target-format = raw          # raw | qcow2
 *   order         = pipelined    # strict | pipelined | any
 *   requests      = 16
 *   request-size  = 1M
 *   sparse        = 4K           # 0: write every byte
 *   compress      = no           # qcow2 targets
 *   cluster-size  = 64K          # qcow2 targets
 *   backing       = flatten      # flatten | keep
 *   verify        = no
 *   resume        = no
 *   overwrite     = no
 *   target-is-zero = no
 *
 * `key = value` per line; `#` starts a comment anywhere; blank lines are
 * ignored; keys may appear once.  source and target are required.
 */
#ifndef IMGFS_JOBSPEC_H
#define IMGFS_JOBSPEC_H

#include <stdbool.h>
#include <stddef.h>

#include "../backends/image-open.h"
#include "engine.h"

struct job_spec {
    char source[1024];
    char target[1024];
    enum image_format source_format;    /* AUTO by default */
    enum image_format target_format;    /* RAW by default */
    struct copy_options copy;
    bool compress;
    unsigned cluster_size;              /* 0: default */
    bool keep_backing;                  /* backing = keep: the runner opens
                                         * the source with no_backing, the
                                         * qcow2 target with its backing
                                         * name; copy.skip_backing is set
                                         * to match */
    bool resume;
    bool overwrite;
};

/* Fill `spec` with defaults (empty source/target). */
void job_spec_init(struct job_spec *spec);

/* Parse `len` bytes of job text into `spec` (initialised first).  Returns
 * 0, or -EINVAL with `err` naming the line and the problem, e.g.
 * "line 4: unknown key 'ordr'", "line 6: request-size: '3X' is not a
 * size", "missing 'target'". */
int job_spec_parse(const char *text, size_t len, struct job_spec *spec,
                   struct errmsg *err);

/* Parse yes/no/true/false/on/off/1/0.  Returns 0 or -EINVAL. */
int parse_bool(const char *s, bool *out);

#endif
