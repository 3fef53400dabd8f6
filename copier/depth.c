/* depth.c — the copy's in-flight depth controller.  See depth.h. */
#include "depth.h"

#include <string.h>

/* Intervals without a latency near the base before the controller drains
 * to the floor to measure it again (a full queue hides the base). */

static unsigned clampu(unsigned v, unsigned lo, unsigned hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

void depth_init(struct depth_ctl *c, unsigned floor, unsigned ceiling,
                unsigned start, uint64_t now_ns)
{
    memset(c, 0, sizeof *c);
    c->floor = floor ? floor : 1;
    c->ceiling = ceiling < c->floor ? c->floor : ceiling;
    c->depth = clampu(start, c->floor, c->ceiling);
    c->startup = true;
    c->interval_start_ns = now_ns;
}

void depth_init_pinned(struct depth_ctl *c, unsigned depth)
{
    memset(c, 0, sizeof *c);
    c->floor = c->ceiling = c->depth = depth ? depth : 1;
    c->pinned = true;
}

void depth_sample(struct depth_ctl *c, enum depth_side side,
                  uint64_t latency_ns)
{
    if (c->pinned)
        return;
    struct depth_side_stats *s = &c->side[side];
    if (latency_ns == 0)
        latency_ns = 1;
    if (s->min_ns == 0 || latency_ns < s->min_ns)
        s->min_ns = latency_ns;
}

/* Fold this interval's minimum into the side's window; true when it came
 * near the base (the base is still being observed). */
static bool side_roll(struct depth_side_stats *s, unsigned slot)
{
    uint64_t seen = s->min_ns;
    s->hist[slot] = seen;
    s->min_ns = 0;
    s->base_ns = 0;
    for (unsigned i = 0; i < DEPTH_BASE_WINDOW; i++)
        if (s->hist[i] && (s->base_ns == 0 || s->hist[i] < s->base_ns))
            s->base_ns = s->hist[i];
    return seen == 0 || seen <= s->base_ns + s->base_ns / 4;
}

static void set_depth(struct depth_ctl *c, unsigned d)
{
    d = clampu(d, c->floor, c->ceiling);
    if (d != c->depth)
        c->changes++;
    c->depth = d;
}

/* Leave the probe once what was queued before it drained and the floor's
 * own requests went through. */
static bool probe_step(struct depth_ctl *c, uint64_t now_ns)
{
    if (c->probe_cycles < c->probe_saved + 2 * c->floor)
        return false;
    c->probing = false;
    set_depth(c, c->probe_saved);
    /* The rate is measured afresh; the probe's latencies are kept. */
    c->interval_start_ns = now_ns;
    c->cycles = 0;
    return true;
}

/* Whether the window shows that depth pays: its best rate at the current
 * depth or above beats its best rate below it by DEPTH_CLIMB_GAIN. */
static bool depth_pays(const struct depth_ctl *c)
{
    double lo = 0, hi = 0;
    for (unsigned i = 0; i < DEPTH_RATE_WINDOW; i++) {
        if (!c->depth_hist[i])
            continue;
        double *m = c->depth_hist[i] < c->depth ? &lo : &hi;
        if (c->rate_hist[i] > *m)
            *m = c->rate_hist[i];
    }
    return lo > 0 && hi >= lo * DEPTH_CLIMB_GAIN;
}

/* Where the depth should go now: DEPTH_GAIN × bdp + DEPTH_PROBE, raised
 * by the hill climb while depth pays, within the ceiling. */
static unsigned depth_target(const struct depth_ctl *c)
{
    uint64_t base = c->side[DEPTH_READ].base_ns + c->side[DEPTH_WRITE].base_ns;
    double bdp = c->rate_max * (double)base;
    double t = bdp * DEPTH_GAIN + DEPTH_PROBE + 0.999;
    /* Hill climb: a server that serves more with more in flight (while
     * its latency grows) is not seen by the base latency; while the last
     * step up paid, step up again. */
    if (depth_pays(c)) {
        unsigned up = c->depth / 8 > DEPTH_PROBE ? c->depth / 8 : DEPTH_PROBE;
        if (c->depth + up > t)
            t = c->depth + up;
    }
    /* A queue inflates the base latency (a link at its rate never
     * drains), and so bdp: the depth may only grow where the window shows
     * that depth pays.  `enough` is the smallest depth of the window that
     * reached 95 % of its best rate: above it more depth only queued
     * (stay within DEPTH_PROBE of it); at it, the rate followed the depth
     * (grow by a quarter); with nothing below the current depth to
     * compare, try DEPTH_PROBE more once every DEPTH_BASE_WINDOW
     * intervals. */
    unsigned enough = 0;
    bool lower = false;
    for (unsigned i = 0; i < DEPTH_RATE_WINDOW; i++) {
        unsigned d = c->depth_hist[i];
        if (!d)
            continue;
        if (d < c->depth)
            lower = true;
        if (c->rate_hist[i] >= c->rate_max * 0.95 && (!enough || d < enough))
            enough = d;
    }
    double cap;
    if (!enough)
        cap = t;
    else if (lower && enough < c->depth)
        cap = enough + DEPTH_PROBE;
    else if (lower)
        cap = c->depth + c->depth / 4 + DEPTH_PROBE;
    else
        cap = c->depth + (c->intervals % DEPTH_BASE_WINDOW == 0 ? DEPTH_PROBE : 0);
    if (t > cap)
        t = cap;
    return t > c->ceiling ? c->ceiling : (unsigned)t;
}

static void startup_step(struct depth_ctl *c, double rate)
{
    if (c->startup_best == 0) {
        /* The first interval includes filling the pipeline: it is only
         * the reference the next ones must beat (a path the depth does not
         * speed up may still double once or twice on it; the drain at the
         * end of startup undoes that). */
        c->startup_best = rate;
        return;
    }
    if (rate > c->startup_best * 1.25) {
        c->startup_best = rate;
        c->flat = 0;
        set_depth(c, c->depth * 2);
    } else {
        c->flat++;
    }
    if (c->flat >= DEPTH_STARTUP_FLAT || c->depth == c->ceiling) {
        c->startup = false;
        /* Drain what startup queued in one step (the rate stopped
         * following the depth), not a quarter per interval. */
        unsigned target = depth_target(c);
        if (target < c->depth)
            set_depth(c, target);
    }
}

static void steady_step(struct depth_ctl *c, double rate)
{
    if (c->startup) {
        startup_step(c, rate);
        return;
    }
    unsigned target = depth_target(c);
    if (target > c->depth) {
        /* No queue: bdp ≈ depth, so this grows by about the gain. */
        set_depth(c, target);
    } else if (target < c->depth) {
        unsigned step = c->depth / 4 ? c->depth / 4 : 1;
        unsigned d = c->depth - step;
        set_depth(c, d > target ? d : target);
    }
}

bool depth_cycle(struct depth_ctl *c, uint64_t now_ns)
{
    if (c->pinned)
        return false;
    unsigned before = c->depth;
    c->cycles++;
    if (c->probing) {
        c->probe_cycles++;
        return probe_step(c, now_ns);
    }
    uint64_t base = c->side[DEPTH_READ].base_ns + c->side[DEPTH_WRITE].base_ns;
    uint64_t min_len = 4 * base > DEPTH_MIN_INTERVAL_NS
                           ? 4 * base : DEPTH_MIN_INTERVAL_NS;
    uint64_t elapsed = now_ns - c->interval_start_ns;
    unsigned min_cycles = c->depth > 4 ? c->depth : 4;
    if (elapsed < min_len || c->cycles < min_cycles)
        return c->depth != before;

    double rate = (double)c->cycles / (double)elapsed;
    unsigned slot = c->intervals % DEPTH_RATE_WINDOW;
    c->rate_hist[slot] = rate;
    c->depth_hist[slot] = c->depth;
    c->rate_max = 0;
    for (unsigned i = 0; i < DEPTH_RATE_WINDOW; i++)
        if (c->rate_hist[i] > c->rate_max)
            c->rate_max = c->rate_hist[i];
    unsigned bslot = c->intervals % DEPTH_BASE_WINDOW;
    bool near_r = side_roll(&c->side[DEPTH_READ], bslot);
    bool near_w = side_roll(&c->side[DEPTH_WRITE], bslot);
    c->intervals++;
    c->interval_start_ns = now_ns;
    c->cycles = 0;

    c->stale = near_r && near_w ? 0 : c->stale + 1;
    if (c->stale >= DEPTH_PROBE_AFTER && !c->startup && c->depth > c->floor) {
        c->stale = 0;
        c->probing = true;
        c->probe_saved = c->depth;
        c->probe_cycles = 0;
        set_depth(c, c->floor);
    } else {
        steady_step(c, rate);
    }
    return c->depth != before;
}
