/* vec.h — the one growable-array helper.
 *
 * An array here is three things its owner keeps wherever it likes: a
 * pointer to the elements, the number in use and the capacity.  vec_room
 * makes room for one more element, doubling the capacity when it is full;
 * the owner then stores the element and counts it:
 *
 *     struct item *v = vec_room(a->v, a->n, &a->cap, sizeof *v, 16);
 *     if (!v)
 *         return -ENOMEM;          // a->v, a->n, a->cap untouched
 *     a->v = v;
 *     a->v[a->n++] = item;
 *
 * The elements are freed by the owner with free(a->v).  Nothing here
 * locks: the owner guards the array as it guards its other fields.
 */
#ifndef IMGFS_VEC_H
#define IMGFS_VEC_H

#include <stddef.h>

/* Return an array with room for at least n + 1 elements of `elem_size`
 * bytes: `v` itself when n < *cap, else `v` reallocated to twice *cap
 * (`first_cap` when *cap is 0) with *cap updated and the first n
 * elements kept.  Returns NULL when memory (or size_t) runs out; `v`,
 * its elements and *cap are then unchanged and still the caller's.
 * `v` may be NULL when *cap is 0.  first_cap must be >= 1. */
void *vec_room(void *v, size_t n, size_t *cap, size_t elem_size,
               size_t first_cap);

#endif
