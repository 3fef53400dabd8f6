/* connect-shim.so — an LD_PRELOAD object that redirects TCP connects to
 * loopback ports (benchmarks).
 *
 *   IMGFS_CONNECT_MAP="111:40111,20048:40048,2049:42049" \
 *   LD_PRELOAD=/path/to/connect-shim.so qemu-img convert nfs://127.0.0.1/...
 *
 * qemu's nfs driver cannot be told a port: libnfs asks the portmapper on
 * port 111 for the MOUNT port, mounts, asks it again for the NFS port (2049)
 * and connects there.  With the map above every connect() of the process
 * to a loopback address (127.0.0.0/8, ::1, ::ffff:127.x) on port FROM goes
 * over TCP goes to the same address on port TO instead, e.g. to scripts/delay-proxy
 * listeners in front of rpcbind, mountd and nfsd.
 *
 * IMGFS_CONNECT_MAP is a comma separated list of FROM:TO port pairs (at
 * most 16); a malformed entry is reported once on stderr and ignored.
 * IMGFS_CONNECT_DEBUG=1 prints each redirection on stderr.  Connects to
 * other addresses or ports pass through unchanged.
 */
#include <dlfcn.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define MAX_PAIRS 16

typedef int (*connect_fn)(int, const struct sockaddr *, socklen_t);

static struct { unsigned short from, to; } pairs[MAX_PAIRS];
static int npairs;
static bool debug;
static connect_fn real_connect;
static pthread_once_t once = PTHREAD_ONCE_INIT;

/* Load the map from the environment and find libc's connect. */
static void shim_init(void)
{
    real_connect = (connect_fn)dlsym(RTLD_NEXT, "connect");
    const char *dbg = getenv("IMGFS_CONNECT_DEBUG");
    debug = dbg && *dbg && strcmp(dbg, "0") != 0;

    const char *map = getenv("IMGFS_CONNECT_MAP");
    if (!map)
        return;
    const char *p = map;
    while (*p && npairs < MAX_PAIRS) {
        char *end;
        unsigned long from = strtoul(p, &end, 10);
        unsigned long to = 0;
        bool ok = end != p && *end == ':' && from > 0 && from < 65536;
        if (ok) {
            const char *q = end + 1;
            to = strtoul(q, &end, 10);
            ok = end != q && to > 0 && to < 65536 &&
                 (*end == ',' || *end == '\0');
        }
        if (!ok) {
            fprintf(stderr, "connect-shim: bad IMGFS_CONNECT_MAP entry "
                    "in \"%s\" (want FROM:TO,...)\n", map);
            return;
        }
        pairs[npairs].from = (unsigned short)from;
        pairs[npairs].to = (unsigned short)to;
        npairs++;
        p = *end == ',' ? end + 1 : end;
    }
}

/* The redirected port for loopback port `port` (host order), or 0. */
static unsigned short mapped_port(unsigned short port)
{
    for (int i = 0; i < npairs; i++)
        if (pairs[i].from == port)
            return pairs[i].to;
    return 0;
}

static bool is_loopback6(const struct in6_addr *a)
{
    static const unsigned char v4mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0,
                                                0, 0, 0xff, 0xff };
    if (IN6_IS_ADDR_LOOPBACK(a))
        return true;
    return memcmp(a->s6_addr, v4mapped, 12) == 0 && a->s6_addr[12] == 127;
}

/* Only TCP is redirected (the proxy speaks TCP); UDP passes through. */
static bool is_stream(int fd)
{
    int type = 0;
    socklen_t tlen = sizeof(type);
    return getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tlen) == 0 &&
           type == SOCK_STREAM;
}

int connect(int fd, const struct sockaddr *addr, socklen_t len)
{
    pthread_once(&once, shim_init);
    if (!real_connect) {
        errno = ENOSYS;
        return -1;
    }
    if (!addr || npairs == 0 || !is_stream(fd))
        return real_connect(fd, addr, len);

    if (addr->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
        struct sockaddr_in sin;
        memcpy(&sin, addr, sizeof(sin));
        unsigned short to = mapped_port(ntohs(sin.sin_port));
        if (to && (ntohl(sin.sin_addr.s_addr) >> 24) == 127) {
            if (debug)
                fprintf(stderr, "connect-shim: port %u -> %u\n",
                        ntohs(sin.sin_port), to);
            sin.sin_port = htons(to);
            return real_connect(fd, (struct sockaddr *)&sin, sizeof(sin));
        }
    } else if (addr->sa_family == AF_INET6 &&
               len >= sizeof(struct sockaddr_in6)) {
        struct sockaddr_in6 sin6;
        memcpy(&sin6, addr, sizeof(sin6));
        unsigned short to = mapped_port(ntohs(sin6.sin6_port));
        if (to && is_loopback6(&sin6.sin6_addr)) {
            if (debug)
                fprintf(stderr, "connect-shim: port %u -> %u\n",
                        ntohs(sin6.sin6_port), to);
            sin6.sin6_port = htons(to);
            return real_connect(fd, (struct sockaddr *)&sin6, sizeof(sin6));
        }
    }
    return real_connect(fd, addr, len);
}
