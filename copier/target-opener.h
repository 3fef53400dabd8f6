/* target-opener.h — open a target image in another thread while this one
 * opens the source.
 *
 * Opening is a run of round trips (mount, lookup, login, inquiries...);
 * the target's need not wait for the source's.  A target opener opens one
 * image on a loop of its own in a thread of its own; joining it waits for
 * the open, moves the image's pollers, timers and calls onto the caller's
 * loop (loop_adopt, image_move_loop) and ends the thread.  Only protocols
 * whose images can move between loops qualify (image_move_loop: nfs://,
 * iscsi://), and only opens that write nothing: the caller decides. */
#ifndef IMGFS_TARGET_OPENER_H
#define IMGFS_TARGET_OPENER_H

#include "backends/errmsg.h"
#include "backends/image-open.h"

struct target_opener;

/* Start image_open(url, opts) on a private loop in a new thread.  `url`
 * and everything `opts` points to must stay valid until the join.
 * Returns the opener, or NULL (errno set) when no thread or loop could be
 * made: nothing was started, the caller opens the image itself. */
struct target_opener *target_opener_start(const char *url,
                                          const struct image_open_opts *opts);

/* Wait for the open started by `t` and free `t`; no thread of it remains.
 * On success the image is moved onto `loop` (the caller's thread must be
 * the one that runs `loop`, or none does), *img is it and 0 is returned.
 * Else image_open's -errno is returned with `err` set as image_open set
 * it, and *img is NULL.  An image that cannot move (image_move_loop) is
 * closed and -ENOTSUP returned. */
int target_opener_join(struct target_opener *t, struct loop *loop,
                       struct image **img, struct errmsg *err);

#endif
