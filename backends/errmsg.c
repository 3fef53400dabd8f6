/* errmsg.c — see errmsg.h. */
#include "errmsg.h"

#include <stdio.h>
#include <string.h>

void errmsg_set(struct errmsg *e, const char *fmt, ...)
{
    if (!e)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->text, sizeof e->text, fmt, ap);
    va_end(ap);
}

void errmsg_prefix(struct errmsg *e, const char *fmt, ...)
{
    if (!e)
        return;
    char old[sizeof e->text];
    memcpy(old, e->text, sizeof old);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(e->text, sizeof e->text, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof e->text - 2)
        return;
    size_t used = (size_t)n;
    memcpy(e->text + used, ": ", 2);
    used += 2;
    size_t room = sizeof e->text - used - 1;
    size_t oldlen = strnlen(old, room);
    memcpy(e->text + used, old, oldlen);
    e->text[used + oldlen] = '\0';
}

void errmsg_clear(struct errmsg *e)
{
    if (e)
        e->text[0] = '\0';
}
