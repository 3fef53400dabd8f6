/* nfs-id.h — what an NFS file is on the wire, for image identity
 * (image-id.h) and for the mount's inode numbers.
 *
 * Two spellings of one server (a name and its address, `localhost` and
 * `127.0.0.1`, URLs with and without ?nfsport=) reach the same server
 * address; NFSv3 file handles and (fsid, fileid) pairs are unique per
 * server whatever export or path led to the file.
 */
#ifndef IMGFS_NFS_ID_H
#define IMGFS_NFS_ID_H

#include <stddef.h>
#include <stdint.h>

struct nfs_context;
struct nfsfh;

/* The numeric address of the server `nfs` (a mounted context) talks to:
 * the peer of its socket, else `host` resolved with getaddrinfo (IPv4
 * first).  IPv4-mapped IPv6 addresses are written as IPv4.  Fills `buf`
 * (at least 64 bytes) and returns 0, or -EHOSTUNREACH when neither
 * works. */
int nfs_server_address(struct nfs_context *nfs, const char *host, char *buf,
                       size_t size);

/* The NFSv3 file handle of `fh` in lower-case hex into `buf`; a handle
 * longer than fits is cut (handles are at most 64 bytes: 129 bytes hold
 * any).  Returns 0, or -EINVAL when libnfs has no handle for `fh`. */
int nfs_fh_hex(struct nfsfh *fh, char *buf, size_t size);

/* A 64-bit key of the server `address` and file system `fsid`, to mix
 * into inode numbers: equal inputs give equal keys. */
uint64_t nfs_fs_key(const char *address, uint64_t fsid);

#endif
