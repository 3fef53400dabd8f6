/* itest-util.h — small helpers shared by the C integration tests. */
#ifndef IMGFS_ITEST_UTIL_H
#define IMGFS_ITEST_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* Fill `buf` with `len` deterministic pseudo-random bytes (xorshift64*)
 * derived from `seed`: the same seed always gives the same bytes. */
void fill_random(uint8_t *buf, size_t len, uint64_t seed);

/* Run a shell command built printf-style; return its exit status, or -1
 * when it did not exit normally. */
int run(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
