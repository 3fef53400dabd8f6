/* io-timeouts.c — the reconnect and request timeouts from the
 * environment (see io-timeouts.h).
 */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>

#include "io-timeouts.h"

/* A whole number of seconds in $name, or -1 when unset or malformed. */
static long env_seconds(const char *name)
{
    const char *v = getenv(name);
    if (!v || !*v)
        return -1;
    for (const char *p = v; *p; p++)
        if (!isdigit((unsigned char)*p))
            return -1;
    errno = 0;
    long s = strtol(v, NULL, 10);
    if (errno || s > 1000000)
        return -1;
    return s;
}

unsigned image_reconnect_timeout_s(void)
{
    long s = env_seconds("IMGFS_RECONNECT_TIMEOUT");
    if (s < 0)
        s = env_seconds("IMGFS_ISCSI_RECONNECT_TIMEOUT");
    return s < 0 ? IO_DEFAULT_RECONNECT_TIMEOUT_S : (unsigned)s;
}

unsigned image_request_timeout_s(void)
{
    long s = env_seconds("IMGFS_REQUEST_TIMEOUT");
    return s < 0 ? IO_DEFAULT_REQUEST_TIMEOUT_S : (unsigned)s;
}
