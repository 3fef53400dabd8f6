/* image-id.c — image identity keys.  See image-id.h. */
#include "image-id.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "errmsg.h"
#include "image.h"

void image_id_add(struct image_id *id, const char *fmt, ...)
{
    for (int i = 0; i < IMAGE_ID_KEYS; i++) {
        if (id->key[i][0])
            continue;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(id->key[i], sizeof id->key[i], fmt, ap);
        va_end(ap);
        return;
    }
}

bool image_id_same(const struct image_id *a, const struct image_id *b)
{
    for (int i = 0; i < IMAGE_ID_KEYS; i++) {
        if (!a->key[i][0])
            continue;
        for (int k = 0; k < IMAGE_ID_KEYS; k++)
            if (b->key[k][0] && strcmp(a->key[i], b->key[k]) == 0)
                return true;
    }
    return false;
}

bool image_id_empty(const struct image_id *id)
{
    for (int i = 0; i < IMAGE_ID_KEYS; i++)
        if (id->key[i][0])
            return false;
    return true;
}

const struct image *image_chain_find(const struct image *chain,
                                     const struct image_id *id)
{
    for (const struct image *i = chain; i; i = i->backing)
        if (image_id_same(&i->id, id))
            return i;
    return NULL;
}

int image_id_check_distinct(const struct image_id *id, const char *name,
                            const struct image *source, struct errmsg *err)
{
    if (!source || image_id_empty(id))
        return 0;
    const struct image *hit = image_chain_find(source, id);
    if (!hit)
        return 0;
    if (hit == source || image_id_same(&hit->id, &source->id))
        errmsg_set(err, "%s and %s are the same image", name, source->name);
    else
        errmsg_set(err, "%s is the backing file %s of %s", name, hit->name,
                   source->name);
    return -EINVAL;
}
