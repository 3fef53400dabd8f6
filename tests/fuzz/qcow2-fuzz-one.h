/* qcow2-fuzz-one.h — run one fuzz input through the qcow2 layer: parse
 * the header, open it from memory (backing file names are parsed but not
 * followed, so inputs never reach the file system or the network), read
 * and block-status a bounded set of ranges.  Shared by the libFuzzer
 * target and the regression unit test.  Returns 0 if the image opened,
 * else the open error (both are fine; only crashes, hangs, leaks and
 * sanitizer reports are findings). */
#ifndef IMGFS_QCOW2_FUZZ_ONE_H
#define IMGFS_QCOW2_FUZZ_ONE_H

#include <stddef.h>
#include <stdint.h>

int qcow2_fuzz_one(const uint8_t *data, size_t size);

#endif
