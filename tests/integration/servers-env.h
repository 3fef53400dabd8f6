/* servers-env.h — read $IMGFS_TEST_ROOT/servers.env (written by
 * scripts/test-servers start) from C integration tests.
 *
 * The file holds plain KEY=VALUE lines.  servers_env_get returns the value
 * of KEY (static storage, valid until the next call with the same key is
 * irrelevant: values are loaded once and kept), or NULL when the file or the
 * key is missing.  Tests call servers_env_require() first: it exits with
 * status 77 (meson's "skipped") when the servers are not running. */
#ifndef IMGFS_SERVERS_ENV_H
#define IMGFS_SERVERS_ENV_H

const char *servers_env_get(const char *key);
void servers_env_require(void);

#endif
