/* errmsg.h — a fixed-size error message carried back to the caller.
 *
 * Functions that can fail in ways a user must understand take a
 * `struct errmsg *` and fill it; they never print.  The top level (CLI,
 * FUSE control files) decides where the text goes.
 */
#ifndef IMGFS_ERRMSG_H
#define IMGFS_ERRMSG_H

#include <stdarg.h>

struct errmsg {
    char text[512];
};

/* Format a message into `e` (printf-style).  `e` may be NULL (ignored).
 * Callers still return their own -errno; the text is the explanation. */
void errmsg_set(struct errmsg *e, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Prepend "prefix: " to the message already in `e`. */
void errmsg_prefix(struct errmsg *e, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Clear `e` (empty string). */
void errmsg_clear(struct errmsg *e);

#endif
