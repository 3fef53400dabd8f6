/* depth.h — how many requests a copy keeps in flight, found from what it
 * observes (a BBR-like controller; pure arithmetic, no clock of its own).
 *
 * The engine reports, with timestamps it takes itself:
 *   - the latency of every full-size data read (source) and data write
 *     (target): depth_sample;
 *   - every request slot that went through a whole cycle (read, wait for
 *     its turn, write): depth_cycle.
 * Once per interval (at least 4 × the base latencies, DEPTH_MIN_INTERVAL_NS,
 * and as many cycles as the depth) the controller estimates
 *   rate  = the highest cycle rate of the last DEPTH_RATE_WINDOW intervals,
 *   base  = per side, the lowest latency of the last DEPTH_BASE_WINDOW
 *           intervals (a request's time on a server with no queue),
 *   bdp   = rate × (base_read + base_write): the slots the two servers can
 *           keep busy (Little's law), queueing excluded,
 * and moves the depth toward  target = DEPTH_GAIN × bdp + DEPTH_PROBE (the
 * gain, as BBR's window gain, covers what the minimum latency leaves out:
 * jitter, a request's wait for its turn to write, worker-thread time):
 *   - startup: the first interval (the pipeline filling) sets the
 *     reference rate; then the depth doubles every interval while the rate
 *     still grows by a quarter over the best so far; startup ends after
 *     DEPTH_STARTUP_FLAT intervals without such growth (or at the
 *     ceiling), and the depth then drops to the target at once (what the
 *     doubling queued on a path it did not speed up);
 *   - then: to the target when below it (with no queue bdp ≈ depth, so
 *     the depth grows by the gain + DEPTH_PROBE per interval while
 *     the rate follows, and stops where it no longer does), and toward the
 *     target, at most a quarter per interval, when above it (the latency
 *     rose without the rate following);
 *   - hill climb: a server that serves more with more in flight while its
 *     latency grows (batching) is not seen by the base latency, so while
 *     the window's best rate at the current depth or above beats its best
 *     rate below it by DEPTH_CLIMB_GAIN, the depth steps up by an eighth
 *     (at least DEPTH_PROBE) whatever the target says.
 * A slow target (few parallel lanes) shows a rate that stops rising and a
 * latency that grows with depth: it settles near its lanes + a few.  A fast
 * one far away keeps base latency while the rate grows: it climbs to the
 * ceiling.  A change of latency is followed once the windows forget.
 * A queue that never drains hides the base latency: after
 * DEPTH_PROBE_AFTER intervals in which some side never came within a
 * quarter of its base,
 * the depth drops to the floor until what was queued has drained and a few
 * requests went through alone, then returns (like BBR's ProbeRTT).
 *
 * The depth stays within [floor, ceiling]; the caller derives the ceiling
 * from its memory limit.  A pinned controller never moves.
 */
#ifndef IMGFS_DEPTH_H
#define IMGFS_DEPTH_H

#include <stdbool.h>
#include <stdint.h>

#define DEPTH_RATE_WINDOW   8u      /* intervals the rate maximum covers */
#define DEPTH_BASE_WINDOW   32u     /* intervals the latency minimum covers */
#define DEPTH_STARTUP_FLAT  3u
#define DEPTH_PROBE         2u
#define DEPTH_GAIN          2.0
#define DEPTH_CLIMB_GAIN    1.15    /* a deeper queue "pays" */
#define DEPTH_MIN_INTERVAL_NS 2000000ull    /* 2 ms */
/* Where the engine starts (within [floor, ceiling]): the fixed pool of
 * 16 requests that served well before the depth was adaptive, so a short
 * copy or a long round trip pays no ramp from a small depth; the
 * controller moves from there (down for a slow target, up while it pays). */
#define DEPTH_START         16u
#define DEPTH_PROBE_AFTER   16u

enum depth_side { DEPTH_READ, DEPTH_WRITE };

struct depth_side_stats {
    uint64_t min_ns;                /* this interval's lowest latency */
    uint64_t hist[DEPTH_BASE_WINDOW];   /* per-interval minima, 0: none */
    uint64_t base_ns;               /* minimum over hist, 0: unknown */
};

struct depth_ctl {
    unsigned floor, ceiling, depth;
    bool pinned, startup;
    unsigned flat;                  /* startup intervals without growth */
    uint64_t interval_start_ns;
    uint64_t cycles;                /* completed this interval */
    double rate_hist[DEPTH_RATE_WINDOW];    /* cycles per ns */
    unsigned depth_hist[DEPTH_RATE_WINDOW]; /* the depth it was seen at */
    double rate_max, startup_best;
    unsigned intervals;             /* completed so far */
    struct depth_side_stats side[2];
    unsigned stale;                 /* intervals without a near-base
                                       latency on some side */
    bool probing;                   /* drained to the floor to see base */
    unsigned probe_saved;           /* depth to return to */
    uint64_t probe_cycles;
    unsigned changes;               /* times the depth moved (tests) */
};

/* Start at min(ceiling, max(floor, start)); floor >= 1, ceiling >= floor
 * (clamped otherwise).  `now_ns` begins the first interval. */
void depth_init(struct depth_ctl *c, unsigned floor, unsigned ceiling,
                unsigned start, uint64_t now_ns);

/* A controller that keeps `depth` forever (--requests). */
void depth_init_pinned(struct depth_ctl *c, unsigned depth);

/* One operation of `side` completed after `latency_ns`. */
void depth_sample(struct depth_ctl *c, enum depth_side side,
                  uint64_t latency_ns);

/* One request slot completed its cycle at `now_ns`.  Ends the interval
 * when it is long enough and decides; returns true when the depth
 * changed. */
bool depth_cycle(struct depth_ctl *c, uint64_t now_ns);

/* The depth to keep in flight now. */
static inline unsigned depth_current(const struct depth_ctl *c)
{
    return c->depth;
}

#endif
