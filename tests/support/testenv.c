#include "testenv.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void testenv_die(const char *what)
{
    fprintf(stderr, "test environment: %s (run the test through ctest so the harness starts it)\n", what);
    abort();
}

static const char *testenv_dir(const char *var)
{
    const char *d = getenv(var);
    if (!d || !*d)
        testenv_die(var);
    return d;
}

char *testenv_read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "test environment: cannot open %s\n", path);
        abort();
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    if (n < 0 || n > (16L << 20))
        testenv_die("file too large");
    char *buf = malloc((size_t)n + 1);
    if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n)
        testenv_die("read failed");
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static const char *testenv_file_line(const char *name)
{
    static _Thread_local char line[4][512];
    static _Thread_local int slot;
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", testenv_dir("ALMA_TESTENV"), name);
    char *s = testenv_read_file(path);
    char *out = line[slot++ % 4];
    snprintf(out, sizeof line[0], "%s", s);
    free(s);
    out[strcspn(out, "\r\n")] = '\0';
    if (!*out)
        testenv_die(name);
    return out;
}

const char *testenv_pg_uri(void)
{
    return testenv_file_line("pg.uri");
}

const char *testenv_redis_host(void)
{
    return "127.0.0.1";
}

int testenv_redis_port(void)
{
    const char *p = testenv_file_line("redis.port");
    char *end;
    long v = strtol(p, &end, 10);
    if (*end || v <= 0 || v > 65535)
        testenv_die("redis.port");
    return (int)v;
}

static const char *testenv_join(const char *var, const char *rel)
{
    static _Thread_local char buf[8][1024];
    static _Thread_local int slot;
    char *out = buf[slot++ % 8];
    snprintf(out, sizeof buf[0], "%s/%s", testenv_dir(var), rel);
    return out;
}

const char *testenv_pki(const char *file)
{
    return testenv_join("ALMA_TEST_PKI", file);
}

const char *testenv_source_path(const char *rel)
{
    return testenv_join("ALMA_SOURCE_DIR", rel);
}

const char *testenv_binary_path(const char *rel)
{
    return testenv_join("ALMA_BINARY_DIR", rel);
}

int testenv_closed_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        testenv_die("socket");
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || getsockname(fd, (struct sockaddr *)&a, &len) != 0)
        testenv_die("cannot bind a loopback port");
    close(fd);
    return ntohs(a.sin_port);
}
