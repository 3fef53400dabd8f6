/* io-timeouts.h — how long the network backends (nfs, iscsi) ride
 * through faults, one policy for both protocols.
 *
 *   IMGFS_RECONNECT_TIMEOUT  seconds a connection may stay lost (no
 *                            session, or no answer to anything) before
 *                            the requests in flight and every later one
 *                            fail; default 120, 0 = keep trying forever.
 *                            IMGFS_ISCSI_RECONNECT_TIMEOUT is a
 *                            deprecated alias (used when the new name is
 *                            unset).
 *   IMGFS_REQUEST_TIMEOUT    seconds a request may go unanswered before
 *                            the connection counts as lost (reconnect and
 *                            re-send); default 30, 0 = never.
 *
 * A value that is not a whole number of seconds (empty, "abc", "-1",
 * "5s") is ignored in favour of the default.
 */
#ifndef IMGFS_IO_TIMEOUTS_H
#define IMGFS_IO_TIMEOUTS_H

#define IO_DEFAULT_RECONNECT_TIMEOUT_S 120
#define IO_DEFAULT_REQUEST_TIMEOUT_S 30

/* The reconnect timeout in seconds (environment read at each call). */
unsigned image_reconnect_timeout_s(void);

/* The request timeout in seconds (environment read at each call). */
unsigned image_request_timeout_s(void);

#endif
