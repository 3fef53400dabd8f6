/* nfs-id.c — server address and file handle of NFS files.  See nfs-id.h. */
#include "nfs-id.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include <nfsc/libnfs.h>
#include <nfsc/libnfs-raw.h>

/* libnfs-raw.h declares nfs_get_fh() returning struct nfs_fh but leaves
 * the struct opaque; this is its layout in libnfs 4.x (a length and the
 * handle bytes). */
struct nfs_fh {
    int len;
    char *val;
};

/* Write the numeric form of `sa` into `buf`; IPv4-mapped IPv6 as IPv4. */
static int format_address(const struct sockaddr *sa, char *buf, size_t size)
{
    const void *a;
    int family = sa->sa_family;
    struct in_addr v4;
    if (family == AF_INET) {
        a = &((const struct sockaddr_in *)sa)->sin_addr;
    } else if (family == AF_INET6) {
        const struct in6_addr *v6 = &((const struct sockaddr_in6 *)sa)->sin6_addr;
        if (IN6_IS_ADDR_V4MAPPED(v6)) {
            memcpy(&v4, v6->s6_addr + 12, sizeof v4);
            a = &v4;
            family = AF_INET;
        } else {
            a = v6;
        }
    } else {
        return -EAFNOSUPPORT;
    }
    return inet_ntop(family, a, buf, (socklen_t)size) ? 0 : -errno;
}

int nfs_server_address(struct nfs_context *nfs, const char *host, char *buf,
                       size_t size)
{
    int fd = nfs ? nfs_get_fd(nfs) : -1;
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (fd >= 0 && getpeername(fd, (struct sockaddr *)&ss, &len) == 0 &&
        format_address((struct sockaddr *)&ss, buf, size) == 0)
        return 0;
    if (!host)
        return -EHOSTUNREACH;
    /* Not connected: resolve, IPv4 first so that a name maps to one
     * address the same way every time. */
    static const int families[] = { AF_INET, AF_INET6 };
    for (int i = 0; i < 2; i++) {
        struct addrinfo hints = { .ai_family = families[i],
                                  .ai_socktype = SOCK_STREAM }, *ai;
        if (getaddrinfo(host, NULL, &hints, &ai) != 0)
            continue;
        int r = format_address(ai->ai_addr, buf, size);
        freeaddrinfo(ai);
        if (r == 0)
            return 0;
    }
    return -EHOSTUNREACH;
}

int nfs_fh_hex(struct nfsfh *fh, char *buf, size_t size)
{
    struct nfs_fh *h = fh ? nfs_get_fh(fh) : NULL;
    if (!h || h->len <= 0 || !h->val || size < 3)
        return -EINVAL;
    size_t n = (size_t)h->len;
    if (n > (size - 1) / 2)
        n = (size - 1) / 2;
    for (size_t i = 0; i < n; i++)
        snprintf(buf + 2 * i, 3, "%02x", (unsigned char)h->val[i]);
    buf[2 * n] = '\0';
    return 0;
}

uint64_t nfs_fs_key(const char *address, uint64_t fsid)
{
    /* FNV-1a over the address, then the fsid's bytes. */
    uint64_t h = 0xcbf29ce484222325ull;
    for (const unsigned char *p = (const unsigned char *)address; *p; p++)
        h = (h ^ *p) * 0x100000001b3ull;
    for (int i = 0; i < 8; i++)
        h = (h ^ ((fsid >> (8 * i)) & 0xff)) * 0x100000001b3ull;
    return h;
}
