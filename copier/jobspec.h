/* jobspec.h — the job file format (DESIGN.md "Job file").
 *
 *   # comment
 *   source        = templates/debian-12.qcow2
 *   target        = lun0
 *   source-format = auto         # auto | raw | qcow2
 *   target-format = raw          # raw | qcow2
 *   order         = pipelined    # strict | pipelined | any
 *   requests      = 16           # pins the depth (default: adaptive)
 *   request-size  = 1M
 *   memory        = 64M          # buffer limit of the adaptive depth
 *   sparse        = 4K           # 0: write every byte
 *   rate          = 50M          # bytes/s of data writes, 0: unlimited
 *                                # (copier/rate.h; changed live through
 *                                # control/NAME.rate in a mount)
 *   compress      = no           # qcow2 targets
 *   cluster-size  = 64K          # qcow2 targets
 *   backing       = flatten      # flatten | keep
 *   verify        = no
 *   resume        = no
 *   overwrite     = no
 *   target-is-zero = no
 *   allow-backing = nfs://filer/vol/base/   # may repeat (up to 8)
 *
 * `key = value` per line; `#` starts a comment anywhere; blank lines are
 * ignored; keys may appear once, except allow-backing.  source and target
 * are required.
 *
 * allow-backing: a prefix of backing-file names (resolved URLs or paths)
 * that qcow2 sources may open beyond the confined ones (same export, same
 * directory tree; see backends/image-open.h), like imgfs copy
 * --allow-backing.
 */
#ifndef IMGFS_JOBSPEC_H
#define IMGFS_JOBSPEC_H

#include <stdbool.h>
#include <stddef.h>

#include "backends/image-open.h"
#include "engine.h"

#define JOB_MAX_ALLOW_BACKING 8
#define JOB_PATH_MAX 1024

struct copy_spec {
    char source[JOB_PATH_MAX];
    char target[JOB_PATH_MAX];
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
    /* allow-backing prefixes, in the order given */
    char allow_backing[JOB_MAX_ALLOW_BACKING][JOB_PATH_MAX];
    unsigned n_allow_backing;
};

/* How copy_spec_check names settings in its messages. */
enum copy_spec_style {
    COPY_SPEC_FILE,     /* job-file keys: "compress needs target-format = qcow2" */
    COPY_SPEC_CLI,      /* options: "--compress needs --target-format qcow2" */
};

/* Fill `spec` with defaults (empty source/target). */
void copy_spec_init(struct copy_spec *spec);

/* Parse `len` bytes of job text into `spec` (initialised first).  Returns
 * 0, or -EINVAL with `err` naming the line and the problem, e.g.
 * "line 4: unknown key 'ordr'", "line 6: request-size: '3X' is not a
 * size", "missing 'target'". */
int copy_spec_parse(const char *text, size_t len, struct copy_spec *spec,
                    struct errmsg *err);

/* Check the combinations of settings that no single key can: qcow2-only
 * settings (compress, cluster-size, backing = keep) without a qcow2
 * target, keep-backing with verify or target-is-zero, sparse larger than
 * request-size.  Sets copy.skip_backing from keep_backing.  Returns 0 or
 * -EINVAL with `err` naming the settings in `style`. */
int copy_spec_check(struct copy_spec *spec, enum copy_spec_style style,
                    struct errmsg *err);

/* Add an allow-backing prefix.  Returns 0, or -EINVAL when the list is
 * full, the prefix is empty or too long, or it holds control characters. */
int copy_spec_allow_backing(struct copy_spec *spec, const char *prefix);

/* Parse yes/no/true/false/on/off/1/0.  Returns 0 or -EINVAL. */
int copy_spec_parse_bool(const char *s, bool *out);

#endif
