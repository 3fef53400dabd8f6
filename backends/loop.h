/* loop.h — the event loop that owns connections and runs completions.
 *
 * One loop runs on one thread.  Everything attached to a loop (pollers,
 * timers, deferred calls, images and their completions) is touched only
 * from that thread, with one exception: loop_post() may be called from any
 * thread and is how other threads (FUSE workers, compression workers) hand
 * work to the loop.
 *
 * libnfs and libiscsi contexts attach as *pollers*: before every wait the
 * loop asks each poller for its current fd and events (both can change, e.g.
 * on reconnect) and re-arms epoll when they differ; when the fd is ready it
 * calls the poller's service function with the revents.
 */
#ifndef IMGFS_LOOP_H
#define IMGFS_LOOP_H

#include <stdbool.h>
#include <stdint.h>

struct loop;

/* A connection driven by the loop.  All three callbacks run on the loop
 * thread.  get_fd returns -1 when there is currently no fd (the poller is
 * then skipped for this round).  events returns a poll(2) mask (POLLIN,
 * POLLOUT).  service is called with poll(2)-style revents (POLLIN, POLLOUT,
 * POLLERR, POLLHUP); it returns 0, or -1 on a fatal error (the poller stays
 * attached; the owner decides what to do). */
struct loop_poller {
    int (*get_fd)(void *opaque);
    int (*events)(void *opaque);
    int (*service)(void *opaque, int revents);
    void *opaque;
    /* private to the loop */
    int armed_fd;
    int armed_events;
    struct loop_poller *next;
};

typedef void (*loop_fn)(void *opaque);

/* Create a loop.  Returns NULL with errno set on failure. */
struct loop *loop_new(void);

/* Destroy a loop.  Pollers and timers must have been removed; pending
 * deferred and posted calls are dropped without running. */
void loop_free(struct loop *loop);

/* Attach / detach a poller (loop thread only).  The poller memory is owned
 * by the caller and must stay valid until loop_remove_poller. */
void loop_add_poller(struct loop *loop, struct loop_poller *p);
void loop_remove_poller(struct loop *loop, struct loop_poller *p);

/* Run `fn(opaque)` on the loop thread on the next iteration (loop thread
 * only; no locking).  Used by backends that complete immediately, so that a
 * completion callback never runs inside the call that issued the request.
 * Returns 0, or -ENOMEM. */
int loop_defer(struct loop *loop, loop_fn fn, void *opaque);

/* A deferred call in memory the caller provides (loop_defer_call). */
struct loop_call {
    loop_fn fn;
    void *opaque;
    struct loop_call *next;     /* private to the loop */
};

/* Run `call->fn(call->opaque)` on the loop thread on the next iteration,
 * like loop_defer, but this cannot fail: when the loop's queue has no
 * room (out of memory), `call` itself is linked in.  So a completion that
 * must not run inside the call that issued it (image.h) can always be
 * deferred.  Set fn and opaque; `call` must stay valid until fn runs, and
 * fn may free or reuse it.  Loop thread only.
 *
 * Order: calls deferred by loop_defer and loop_defer_call run in the order
 * they were deferred, except that calls which had to be linked in run
 * after the others of their round.  Like loop_defer's, a call deferred
 * from a deferred call runs on a later iteration; loop_free drops calls
 * that have not run. */
void loop_defer_call(struct loop *loop, struct loop_call *call);

/* Run `fn(opaque)` on the loop thread soon.  Safe from any thread; wakes
 * the loop.  Returns 0, or -ENOMEM. */
int loop_post(struct loop *loop, loop_fn fn, void *opaque);

/* One-shot timer: call `fn(opaque)` after `ms` milliseconds (loop thread
 * only).  Returns a timer id > 0, or -ENOMEM. */
int64_t loop_add_timer(struct loop *loop, unsigned ms, loop_fn fn, void *opaque);

/* Cancel a timer that has not fired yet (no-op if it has). */
void loop_cancel_timer(struct loop *loop, int64_t id);

/* Run one iteration: wait up to `timeout_ms` (-1: until something happens)
 * for I/O, timers or posted work, then dispatch everything ready.
 * Returns 0, or -errno if epoll itself failed. */
int loop_run_once(struct loop *loop, int timeout_ms);

/* Run iterations until `*done` becomes true (checked after each iteration).
 * Returns 0, or -errno on loop failure. */
int loop_run_until(struct loop *loop, const bool *done);

/* Run until loop_stop() is called (from any thread).  Returns 0 or -errno. */
int loop_run(struct loop *loop);
void loop_stop(struct loop *loop);

/* True if the caller is running on this loop's thread (the thread that is
 * inside loop_run*). */
bool loop_on_thread(struct loop *loop);

/* Move everything attached to `src` onto `dst`, so that an image opened
 * on a private loop (e.g. by another thread, in parallel with an open on
 * `dst`) can go on on `dst`:
 *   - pollers: taken off src's epoll, armed on dst's at its next round;
 *   - timers: same ids (ids are unique across loops) and deadlines;
 *   - deferred calls (loop_defer, loop_defer_call): queued after dst's
 *     own, in their order;
 *   - posted calls: posted to dst.
 * Afterwards `src` holds nothing and may be freed.  Called on dst's
 * thread (or before any thread runs dst) while no thread runs `src` or
 * will post to it again.  The caller updates every owner's own loop
 * pointer (image->loop: image_move_loop in image.h).  Cannot fail (waits
 * for memory when there is none). */
void loop_adopt(struct loop *dst, struct loop *src);

/* Monotonic clock in nanoseconds. */
uint64_t loop_now_ns(void);

#endif
