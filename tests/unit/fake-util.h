/* fake-util.h — helpers shared by the engine tests (test-engine.c,
 * test-verify.c): a seeded random generator, filling and checking fake
 * image contents, and a source/target pair of fakes on one loop. */
#ifndef IMGFS_TEST_FAKE_UTIL_H
#define IMGFS_TEST_FAKE_UTIL_H

#include <stdbool.h>
#include <stdint.h>

#include "copier/engine.h"
#include "fake-image.h"

/* xorshift64: the same sequence for the same seed (seed != 0). */
void rng_seed(uint64_t seed);
uint64_t rng(void);

/* Set [off, off+len) of `f` to the byte `v`. */
void fill_pattern(struct fake_image *f, uint64_t off, uint64_t len,
                  unsigned char v);
/* Whether [off, off+len) of `f` is all zero bytes. */
bool is_zero_range(struct fake_image *f, uint64_t off, uint64_t len);
/* First offset in [off, off+len) where `a` and `b` differ, or -1. */
int64_t first_diff(struct fake_image *a, struct fake_image *b, uint64_t off,
                   uint64_t len);
/* Fail the test (naming the offset) unless [off, off+len) is equal. */
void assert_same(struct fake_image *a, struct fake_image *b, uint64_t off,
                 uint64_t len);

/* A source and a target fake on a new loop; pair_close checks both have
 * nothing in flight and frees everything. */
struct pair {
    struct loop *loop;
    struct fake_image *src, *dst;
};
void pair_open(struct pair *p, const struct fake_config *sc,
               const struct fake_config *dc);
void pair_close(struct pair *p);

/* Run a job from copy_job_new to its end on the images' loop, calling
 * `tick(opaque, progress)` about every `tick_ms` ms (tick may be NULL).
 * Returns 0 when the job is DONE, else the job's -errno with `err` set;
 * `final` (may be NULL) receives the final progress.  The harness the
 * engine tests drive jobs with. */
int copy_run(struct image *src, struct image *dst,
             const struct copy_options *opts,
             void (*tick)(void *opaque, const struct copy_progress *p),
             void *opaque, unsigned tick_ms, struct copy_progress *final,
             struct errmsg *err);

#endif
