/* vec.c — the growable-array helper.  See vec.h. */
#include "vec.h"

#include <stdint.h>
#include <stdlib.h>

void *vec_room(void *v, size_t n, size_t *cap, size_t elem_size,
               size_t first_cap)
{
    if (n < *cap)
        return v;
    size_t want = *cap ? *cap : first_cap;
    if (*cap) {
        if (*cap > SIZE_MAX / 2)
            return NULL;
        want = *cap * 2;
    }
    if (elem_size && want > SIZE_MAX / elem_size)
        return NULL;
    void *grown = realloc(v, want * elem_size);
    if (!grown)
        return NULL;
    *cap = want;
    return grown;
}
