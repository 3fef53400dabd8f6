/* fuzz-qcow2.c — libFuzzer target: open and read a qcow2 image held in
 * memory (see qcow2-fuzz-one.c).  Built with -Dfuzz=true and clang;
 * scripts/fuzz-smoke runs it. */
#include <stddef.h>
#include <stdint.h>

#include "qcow2-fuzz-one.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    qcow2_fuzz_one(data, size);
    return 0;
}
