/* rate.c — token bucket, fair share and rate values.  See rate.h. */
#include "rate.h"

#include <ctype.h>
#include <stdbool.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "backends/image-open.h"

#define NS_PER_S 1000000000ll

static __int128 burst_of(uint64_t rate)
{
    return (__int128)rate * RATE_BURST_MS * 1000000;
}

/* Add the credit earned since the last refill, capped at the burst. */
static void refill(struct rate_bucket *b, uint64_t now_ns)
{
    if (now_ns > b->last_ns) {
        b->credit += (__int128)b->rate * (now_ns - b->last_ns);
        __int128 cap = burst_of(b->rate);
        if (b->credit > cap)
            b->credit = cap;
    }
    if (now_ns > b->last_ns)
        b->last_ns = now_ns;
}

void rate_init(struct rate_bucket *b, uint64_t rate, uint64_t now_ns)
{
    b->rate = rate;
    b->credit = 0;
    b->last_ns = now_ns;
}

void rate_set(struct rate_bucket *b, uint64_t rate, uint64_t now_ns)
{
    if (b->rate == 0) {
        /* Unlimited until now: nothing earned, nothing owed. */
        rate_init(b, rate, now_ns);
        return;
    }
    refill(b, now_ns);
    b->rate = rate;
    if (rate == 0) {
        b->credit = 0;
        return;
    }
    __int128 cap = burst_of(rate);
    if (b->credit > cap)
        b->credit = cap;
}

uint64_t rate_take(struct rate_bucket *b, uint64_t bytes, uint64_t now_ns)
{
    if (b->rate == 0)
        return 0;
    refill(b, now_ns);
    if (b->credit >= 0) {
        b->credit -= (__int128)bytes * NS_PER_S;
        return 0;
    }
    /* Wait until the debt is paid: ceil(-credit / rate) ns. */
    __int128 wait = (-b->credit + b->rate - 1) / b->rate;
    return wait > (__int128)UINT64_MAX ? UINT64_MAX : (uint64_t)wait;
}

void rate_fair_share(uint64_t total, const uint64_t *own, size_t n,
                     uint64_t *out)
{
    if (total == 0) {
        for (size_t i = 0; i < n; i++)
            out[i] = own[i];
        return;
    }
    for (size_t i = 0; i < n; i++)
        out[i] = 0;                 /* 0: not settled yet */
    uint64_t left = total;
    size_t open = n;
    /* Water-filling: jobs whose own limit is below the equal share of
     * what is left keep their limit; repeat until none is. */
    for (bool capped = true; capped && open > 0;) {
        capped = false;
        uint64_t share = left / open;
        for (size_t i = 0; i < n; i++) {
            if (out[i] == 0 && own[i] && own[i] <= share) {
                out[i] = own[i];
                left -= own[i];
                open--;
                capped = true;
            }
        }
    }
    if (open == 0)
        return;
    uint64_t share = left / open;
    if (share == 0)
        share = 1;
    for (size_t i = 0; i < n; i++)
        if (out[i] == 0)
            out[i] = share;
}

int rate_parse(const char *s, uint64_t *out)
{
    if (!s)
        return -EINVAL;
    char buf[64];
    size_t n = strlen(s);
    while (n > 0 && isspace((unsigned char)s[n - 1]))
        n--;
    if (n >= sizeof buf)
        return -EINVAL;
    memcpy(buf, s, n);
    buf[n] = '\0';
    if (n >= 2 && buf[n - 2] == '/' && (buf[n - 1] == 's' || buf[n - 1] == 'S'))
        buf[n - 2] = '\0';
    uint64_t v;
    if (image_parse_size(buf, &v) < 0)
        return -EINVAL;
    if (v != 0 && (v < RATE_MIN || v > RATE_MAX))
        return -ERANGE;
    *out = v;
    return 0;
}

char *rate_format(char *buf, size_t len, uint64_t rate)
{
    static const char suffix[] = "KMGT";
    int u = -1;
    while (rate && rate % 1024 == 0 && u < 3) {
        rate /= 1024;
        u++;
    }
    if (u < 0)
        snprintf(buf, len, "%llu", (unsigned long long)rate);
    else
        snprintf(buf, len, "%llu%c", (unsigned long long)rate, suffix[u]);
    return buf;
}
