/* rate.h — rate limits: a token bucket that paces a copy's writes, the
 * fair share of a mount-wide limit among running jobs, and the parser of
 * rate values.
 *
 * The bucket is pure arithmetic on a clock the caller passes in
 * (nanoseconds, monotonic; the engine uses loop_now_ns()), so tests drive
 * it with a fake clock.  It holds credit in byte·nanoseconds (exact
 * integers, no rounding drift): credit grows by `rate` per nanosecond and
 * is capped at RATE_BURST_MS worth of bytes; taking N bytes costs
 * N × 10^9.  A take is granted whenever the credit is not negative and may
 * drive it below zero (a write is never split), so
 *   - the average rate over any long interval is at most `rate`;
 *   - in any interval of T seconds at most rate × (T + RATE_BURST_MS/1000)
 *     bytes + one take are granted: bursts beyond the rate last at most
 *     100 ms, or one request when a request is larger than that;
 *   - after a debt (a take larger than the credit) the next take waits
 *     until the debt is paid at the current rate.
 * Rate 0 means unlimited: every take is granted and nothing accrues.
 *
 * Not thread-safe: one owner thread (the job's loop thread).
 */
#ifndef IMGFS_RATE_H
#define IMGFS_RATE_H

#include <stddef.h>
#include <stdint.h>

/* Credit never exceeds this much time at the current rate. */
#define RATE_BURST_MS 100u
/* Accepted limits: 0 (unlimited) or RATE_MIN .. RATE_MAX bytes/s. */
#define RATE_MIN 1024ull
#define RATE_MAX (1ull << 40)

struct rate_bucket {
    uint64_t rate;              /* bytes per second, 0: unlimited */
    __int128 credit;            /* byte·ns; may be negative (a debt) */
    uint64_t last_ns;           /* clock of the last refill */
};

/* Start a bucket at `now_ns` with `rate` and no credit (the first take
 * is granted, then the rate applies). */
void rate_init(struct rate_bucket *b, uint64_t rate, uint64_t now_ns);

/* Change the rate at `now_ns`: credit earned so far at the old rate is
 * kept (capped at the new burst), a debt is then paid at the new rate.
 * Setting 0 makes the bucket unlimited; leaving 0 starts with no
 * credit. */
void rate_set(struct rate_bucket *b, uint64_t rate, uint64_t now_ns);

/* Ask for `bytes` at `now_ns`.  Returns 0 when granted (charged), else the
 * nanoseconds to wait before asking again (nothing charged). */
uint64_t rate_take(struct rate_bucket *b, uint64_t bytes, uint64_t now_ns);

/* Fair share of a total limit among `n` jobs (max-min fairness): each
 * job gets at most its own limit own[i] (0: none), and what a job with a
 * lower limit leaves is shared equally by the others.  total == 0 (no
 * common limit): out[i] = own[i].  Otherwise every out[i] is > 0 and
 * their sum is at most `total` (plus rounding of at most n bytes/s). */
void rate_fair_share(uint64_t total, const uint64_t *own, size_t n,
                     uint64_t *out);

/* Parse a rate: "0" (unlimited) or a size as image_parse_size takes it (K, M,
 * G, T suffixes, powers of 1024), optionally followed by "/s";
 * surrounding blanks and a final newline are ignored ("50M\n" from
 * echo).  Returns 0, or -EINVAL when it is not a rate, -ERANGE when
 * outside 0 or RATE_MIN..RATE_MAX. */
int rate_parse(const char *s, uint64_t *out);

/* Format a rate for people and for rate_parse: "0" or bytes with the
 * largest exact binary suffix ("50M", "1536K", "1000"). */
char *rate_format(char *buf, size_t len, uint64_t rate);

#endif
