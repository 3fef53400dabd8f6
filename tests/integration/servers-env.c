/* servers-env.c — see servers-env.h. */
#include "servers-env.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_VARS 128

static struct { char *key, *value; } vars[MAX_VARS];
static int nvars = -1;

static void load(void)
{
    if (nvars >= 0)
        return;
    nvars = 0;
    const char *root = getenv("IMGFS_TEST_ROOT");
    char path[4096];
    snprintf(path, sizeof path, "%s/servers.env", root ? root : "/tmp/imgfs-test");
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    char line[4096];
    while (nvars < MAX_VARS && fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = '\0';
        char *eq = strchr(line, '=');
        if (line[0] == '#' || !eq)
            continue;
        *eq = '\0';
        vars[nvars].key = strdup(line);
        vars[nvars].value = strdup(eq + 1);
        nvars++;
    }
    fclose(f);
}

const char *servers_env_get(const char *key)
{
    load();
    for (int i = 0; i < nvars; i++)
        if (strcmp(vars[i].key, key) == 0)
            return vars[i].value;
    return NULL;
}

void servers_env_require(void)
{
    if (!servers_env_get("NFS_URL") || !servers_env_get("ISCSI_PORTAL")) {
        fprintf(stderr, "test servers not running (scripts/test-servers start); skipping\n");
        exit(77);
    }
}
