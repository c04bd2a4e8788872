#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "testproc.h"

#include "testenv.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define TESTPROC_MAX_CHILDREN 32
#define TESTPROC_MAX_ENV      1024
#define TESTPROC_TAIL_BYTES   2000

/* ------------------------------------------------------------------ time and files */

int64_t testproc_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void testproc_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

bool testproc_file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

char *testproc_read_or_empty(const char *path)
{
    if (testproc_file_exists(path))
        return testenv_read_file(path);
    char *s = strdup("");
    assert_non_null(s);
    return s;
}

bool testproc_file_wait_for(const char *path, const char *needle, int timeout_ms)
{
    int64_t until = testproc_now_ms() + timeout_ms;
    for (;;) {
        char *seen = testproc_read_or_empty(path);
        bool found = strstr(seen, needle) != NULL;
        free(seen);
        if (found)
            return true;
        if (testproc_now_ms() > until)
            return false;
        testproc_sleep_ms(10);
    }
}

/* The last TESTPROC_TAIL_BYTES of a file into buf (for failure messages). */
static void testproc_tail(const char *path, char *buf, size_t size)
{
    char *all = testproc_read_or_empty(path);
    size_t n = strlen(all);
    size_t from = n > TESTPROC_TAIL_BYTES ? n - TESTPROC_TAIL_BYTES : 0;
    snprintf(buf, size, "%s%s", from ? "..." : "", all + from);
    free(all);
}

/* ------------------------------------------------------------------ children */

/* Children still running when a test ends are killed by its teardown. */
static pthread_mutex_t testproc_children_lock = PTHREAD_MUTEX_INITIALIZER;
static pid_t testproc_children[TESTPROC_MAX_CHILDREN];

static bool testproc_child_add(pid_t pid)
{
    bool added = false;
    pthread_mutex_lock(&testproc_children_lock);
    for (int i = 0; i < TESTPROC_MAX_CHILDREN && !added; i++) {
        if (testproc_children[i] == 0) {
            testproc_children[i] = pid;
            added = true;
        }
    }
    pthread_mutex_unlock(&testproc_children_lock);
    return added;
}

static void testproc_child_forget(pid_t pid)
{
    pthread_mutex_lock(&testproc_children_lock);
    for (int i = 0; i < TESTPROC_MAX_CHILDREN; i++)
        if (testproc_children[i] == pid)
            testproc_children[i] = 0;
    pthread_mutex_unlock(&testproc_children_lock);
}

static void testproc_kill_children(void)
{
    pthread_mutex_lock(&testproc_children_lock);
    for (int i = 0; i < TESTPROC_MAX_CHILDREN; i++) {
        if (testproc_children[i] > 0) {
            kill(testproc_children[i], SIGKILL);
            while (waitpid(testproc_children[i], NULL, 0) < 0 && errno == EINTR)
                ;
            testproc_children[i] = 0;
        }
    }
    pthread_mutex_unlock(&testproc_children_lock);
}

static int testproc_decode_status(int status)
{
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* ------------------------------------------------------------------ the work directory */

static char testproc_workdir[128];
static int testproc_daemon_serial, testproc_run_serial;

int testproc_setup(void **state)
{
    (void)state;
    snprintf(testproc_workdir, sizeof testproc_workdir, "/tmp/alma-%.40s-XXXXXX",
             program_invocation_short_name);
    testproc_daemon_serial = 0;
    testproc_run_serial = 0;
    if (!mkdtemp(testproc_workdir)) {
        fprintf(stderr, "testproc: cannot make a work directory: %s\n", strerror(errno));
        testproc_workdir[0] = '\0';
        return -1;
    }
    return 0;
}

static int testproc_remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    if (remove(path) != 0)
        fprintf(stderr, "testproc: cannot remove %s: %s\n", path, strerror(errno));
    return 0; /* go on with the rest */
}

int testproc_teardown(void **state)
{
    (void)state;
    testproc_kill_children();
    /* Only ever a directory that testproc_setup made. */
    if (strncmp(testproc_workdir, "/tmp/alma-", 10) == 0)
        nftw(testproc_workdir, testproc_remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    testproc_workdir[0] = '\0';
    return 0;
}

const char *testproc_work_dir(void)
{
    if (!testproc_workdir[0])
        fail_msg("testproc: no work directory (testproc_setup did not run for this test)");
    return testproc_workdir;
}

const char *testproc_work_path(const char *name)
{
    static _Thread_local char buf[8][TESTPROC_PATH_MAX];
    static _Thread_local int slot;
    char *out = buf[slot++ % 8];
    int n = snprintf(out, sizeof buf[0], "%s/%s", testproc_work_dir(), name);
    if (n < 0 || (size_t)n >= sizeof buf[0])
        fail_msg("testproc: work path too long: %s", name);
    return out;
}

/* ------------------------------------------------------------------ any process */

char **testproc_env(const char *const *extra)
{
    static _Thread_local char *env[TESTPROC_MAX_ENV + 1];
    int n = 0;
    for (char **e = environ; *e; e++) {
        if (strncmp(*e, "ALMA_", 5) == 0)
            continue;
        if (n >= TESTPROC_MAX_ENV)
            fail_msg("testproc: more than %d environment variables", TESTPROC_MAX_ENV);
        env[n++] = *e;
    }
    for (int i = 0; extra && extra[i]; i++) {
        if (n >= TESTPROC_MAX_ENV)
            fail_msg("testproc: more than %d environment variables", TESTPROC_MAX_ENV);
        env[n++] = (char *)extra[i];
    }
    env[n] = NULL;
    return env;
}

pid_t testproc_spawn(const char *const *argv, const char *const *extra_env, const char *out_path,
                     const char *err_path)
{
    assert_non_null(argv);
    assert_non_null(argv[0]);
    char **envp = testproc_env(extra_env);
    /* Everything the child needs is prepared here: after fork it makes only async-signal-safe calls. */
    char exec_failed[600];
    int exec_failed_len = snprintf(exec_failed, sizeof exec_failed, "testproc: cannot execute %s\n", argv[0]);
    if (exec_failed_len < 0 || (size_t)exec_failed_len >= sizeof exec_failed)
        exec_failed_len = (int)strlen(exec_failed);
    pid_t parent = getpid();
    sigset_t none;
    sigemptyset(&none);

    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        /* Killed with the thread that started it, even if the test aborts before its teardown. */
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent)
            _exit(126);
        sigprocmask(SIG_SETMASK, &none, NULL); /* the test's blocked signals are not the child's */
        int in = open("/dev/null", O_RDONLY);
        int out = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        int err = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (in < 0 || out < 0 || err < 0 || dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(err, 2) < 0)
            _exit(126);
        execve(argv[0], (char *const *)argv, envp);
        ssize_t w = write(2, exec_failed, (size_t)exec_failed_len);
        (void)w;
        _exit(127);
    }
    if (!testproc_child_add(pid)) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        fail_msg("testproc: more than %d child processes at once", TESTPROC_MAX_CHILDREN);
    }
    return pid;
}

int testproc_wait_exit(pid_t pid, int timeout_ms)
{
    int64_t until = testproc_now_ms() + timeout_ms;
    for (;;) {
        int status = 0;
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid) {
            testproc_child_forget(pid);
            return testproc_decode_status(status);
        }
        if (r < 0 && errno == EINTR)
            continue;
        if (r != 0)
            fail_msg("testproc: waitpid(%d): %s", (int)pid, strerror(errno));
        if (testproc_now_ms() > until) {
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
            testproc_child_forget(pid);
            return -1;
        }
        testproc_sleep_ms(10);
    }
}

/* Run to the end with output in the given files; the exit status, and the files' contents if wanted. */
static int testproc_run_files(const char *const *argv, const char *const *extra_env, const char *out_path,
                              const char *err_path, int timeout_ms, char **ret_out, char **ret_err)
{
    pid_t pid = testproc_spawn(argv, extra_env, out_path, err_path);
    int code = testproc_wait_exit(pid, timeout_ms);
    if (ret_out)
        *ret_out = testproc_read_or_empty(out_path);
    if (ret_err)
        *ret_err = testproc_read_or_empty(err_path);
    return code;
}

int testproc_run(const char *const *argv, const char *const *extra_env, char **ret_out, char **ret_err)
{
    char out_name[32], err_name[32], out_path[TESTPROC_PATH_MAX], err_path[TESTPROC_PATH_MAX];
    int n = ++testproc_run_serial;
    snprintf(out_name, sizeof out_name, "run-%d.out", n);
    snprintf(err_name, sizeof err_name, "run-%d.err", n);
    snprintf(out_path, sizeof out_path, "%s", testproc_work_path(out_name));
    snprintf(err_path, sizeof err_path, "%s", testproc_work_path(err_name));
    return testproc_run_files(argv, extra_env, out_path, err_path, TESTPROC_EXIT_TIMEOUT_MS, ret_out,
                              ret_err);
}

/* ------------------------------------------------------------------ a service daemon */

/* A copy of s in d's string space. */
static const char *testproc_daemon_keep(testproc_daemon *d, const char *s)
{
    size_t n = strlen(s) + 1;
    if (n > sizeof d->strings - d->used)
        fail_msg("testproc: the command line of %s is too long", d->argv[0] ? d->argv[0] : s);
    char *p = d->strings + d->used;
    memcpy(p, s, n);
    d->used += n;
    return p;
}

static void testproc_daemon_arg(testproc_daemon *d, const char *s)
{
    if (d->argc >= TESTPROC_MAX_ARGS)
        fail_msg("testproc: more than %d arguments for %s", TESTPROC_MAX_ARGS, d->argv[0]);
    d->argv[d->argc++] = testproc_daemon_keep(d, s);
    d->argv[d->argc] = NULL;
}

void testproc_daemon_init(testproc_daemon *d, const char *binary, const char *tls_service,
                          const char *const *args, const char *const *env)
{
    assert_non_null(d);
    assert_non_null(binary);
    memset(d, 0, sizeof *d);
    d->ready_timeout_ms = TESTPROC_READY_TIMEOUT_MS;
    d->exit_timeout_ms = TESTPROC_EXIT_TIMEOUT_MS;

    const char *base = strrchr(binary, '/');
    base = base ? base + 1 : binary;
    char name[80];
    int serial = ++testproc_daemon_serial;
    snprintf(name, sizeof name, "%.40s-%d.ready", base, serial);
    snprintf(d->ready_path, sizeof d->ready_path, "%s", testproc_work_path(name));
    snprintf(name, sizeof name, "%.40s-%d.out", base, serial);
    snprintf(d->out_path, sizeof d->out_path, "%s", testproc_work_path(name));
    snprintf(name, sizeof name, "%.40s-%d.err", base, serial);
    snprintf(d->err_path, sizeof d->err_path, "%s", testproc_work_path(name));

    testproc_daemon_arg(d, binary);
    testproc_daemon_arg(d, "--api-addr");
    testproc_daemon_arg(d, "127.0.0.1:0");
    testproc_daemon_arg(d, "--admin-addr");
    testproc_daemon_arg(d, "127.0.0.1:0");
    testproc_daemon_arg(d, "--metrics-addr");
    testproc_daemon_arg(d, "127.0.0.1:0");
    if (tls_service) {
        char file[128];
        snprintf(file, sizeof file, "%s.pem", tls_service);
        testproc_daemon_arg(d, "--tls-cert");
        testproc_daemon_arg(d, testenv_pki(file));
        snprintf(file, sizeof file, "%s-key.pem", tls_service);
        testproc_daemon_arg(d, "--tls-key");
        testproc_daemon_arg(d, testenv_pki(file));
        testproc_daemon_arg(d, "--tls-ca");
        testproc_daemon_arg(d, testenv_pki("ca.pem"));
    }
    testproc_daemon_arg(d, "--ready-file");
    testproc_daemon_arg(d, d->ready_path);
    for (int i = 0; args && args[i]; i++)
        testproc_daemon_arg(d, args[i]);

    for (int i = 0; env && env[i]; i++) {
        if (d->envc >= TESTPROC_MAX_EXTRA_ENV)
            fail_msg("testproc: more than %d environment entries for %s", TESTPROC_MAX_EXTRA_ENV, binary);
        d->env[d->envc++] = testproc_daemon_keep(d, env[i]);
    }
    d->env[d->envc] = NULL;
}

/* The value of `key` (e.g. "api=") in the ready-file line; -1 when it is missing or not a port. */
static int testproc_ready_port(const char *text, const char *key)
{
    const char *p = strstr(text, key);
    if (!p)
        return -1;
    p += strlen(key);
    char *end = NULL;
    long v = strtol(p, &end, 10);
    return end != p && v >= 0 && v < 65536 ? (int)v : -1;
}

static void testproc_addr(char *buf, size_t size, int port)
{
    if (port > 0)
        snprintf(buf, size, "127.0.0.1:%d", port);
    else
        buf[0] = '\0';
}

void testproc_daemon_start(testproc_daemon *d)
{
    assert_non_null(d->argv[0]); /* testproc_daemon_init ran */
    if (d->pid != 0)
        fail_msg("testproc: %s is still running (pid %d): stop or kill it first", d->argv[0], (int)d->pid);
    d->api = d->admin = d->metrics = 0;
    d->api_addr[0] = d->admin_addr[0] = d->metrics_addr[0] = '\0';
    unlink(d->ready_path);

    d->pid = testproc_spawn(d->argv, d->env, d->out_path, d->err_path);
    int64_t until = testproc_now_ms() + d->ready_timeout_ms;
    static char tail[TESTPROC_TAIL_BYTES + 8];
    while (!testproc_file_exists(d->ready_path)) {
        int status = 0;
        pid_t r = waitpid(d->pid, &status, WNOHANG);
        if (r == d->pid) {
            testproc_child_forget(d->pid);
            d->pid = 0;
            testproc_tail(d->err_path, tail, sizeof tail);
            fail_msg("%s exited before it was ready (exit status %d); its stderr:\n%s", d->argv[0],
                     testproc_decode_status(status), tail);
        }
        if (testproc_now_ms() > until) {
            testproc_tail(d->err_path, tail, sizeof tail);
            fail_msg("%s wrote no ready-file within %d ms; its stderr:\n%s", d->argv[0], d->ready_timeout_ms,
                     tail);
        }
        testproc_sleep_ms(20);
    }

    /* The daemon writes the file under another name and renames it: what exists is complete. */
    char *ready = testenv_read_file(d->ready_path);
    d->api = testproc_ready_port(ready, "api=");
    d->admin = testproc_ready_port(ready, "admin=");
    d->metrics = testproc_ready_port(ready, "metrics=");
    bool ok = d->api > 0 && d->admin >= 0 && d->metrics >= 0;
    snprintf(tail, sizeof tail, "%s", ready);
    free(ready);
    if (!ok)
        fail_msg("%s wrote a ready-file that does not parse: %s", d->argv[0], tail);
    testproc_addr(d->api_addr, sizeof d->api_addr, d->api);
    testproc_addr(d->admin_addr, sizeof d->admin_addr, d->admin);
    testproc_addr(d->metrics_addr, sizeof d->metrics_addr, d->metrics);
}

int testproc_daemon_wait(testproc_daemon *d, int timeout_ms)
{
    if (d->pid == 0)
        fail_msg("testproc: %s is not running", d->argv[0] ? d->argv[0] : "daemon");
    int code = testproc_wait_exit(d->pid, timeout_ms);
    d->pid = 0;
    return code;
}

int testproc_daemon_stop(testproc_daemon *d)
{
    if (d->pid == 0)
        fail_msg("testproc: %s is not running", d->argv[0] ? d->argv[0] : "daemon");
    assert_int_equal(kill(d->pid, SIGTERM), 0);
    return testproc_daemon_wait(d, d->exit_timeout_ms);
}

int testproc_daemon_kill(testproc_daemon *d)
{
    if (d->pid == 0)
        fail_msg("testproc: %s is not running", d->argv[0] ? d->argv[0] : "daemon");
    assert_int_equal(kill(d->pid, SIGKILL), 0);
    return testproc_daemon_wait(d, d->exit_timeout_ms);
}

int testproc_daemon_run(testproc_daemon *d, char **ret_out, char **ret_err)
{
    assert_non_null(d->argv[0]); /* testproc_daemon_init ran */
    if (d->pid != 0)
        fail_msg("testproc: %s is still running (pid %d)", d->argv[0], (int)d->pid);
    return testproc_run_files(d->argv, d->env, d->out_path, d->err_path, d->exit_timeout_ms, ret_out,
                              ret_err);
}

char *testproc_daemon_log(const testproc_daemon *d)
{
    return testproc_read_or_empty(d->err_path);
}

bool testproc_daemon_log_wait(const testproc_daemon *d, const char *needle, int timeout_ms)
{
    return testproc_file_wait_for(d->err_path, needle, timeout_ms);
}
