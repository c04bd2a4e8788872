/* Child processes for cmocka tests that run real Alma binaries: start a service daemon (the common settings
 * of common/daemon: loopback ports picked by the kernel, the dev PKI, a ready-file), wait until it serves,
 * call it, stop it with SIGTERM or kill it with SIGKILL, start it again; and run a command line tool to its
 * end with its output captured.
 *
 * Use testproc_setup and testproc_teardown as the test's setup and teardown (or call them from your own):
 * setup makes a private work directory under /tmp for the test's files (ready-files, captured stdout and
 * stderr); teardown SIGKILLs and reaps every child still running, so a failing test leaves no process
 * behind, then removes the directory with everything in it.
 *
 * Processes are started with fork/execve (no shell) and an explicit environment: the parent's, minus every
 * ALMA_* variable, plus what the test adds. A developer's own ALMA_* settings cannot change a result, while
 * sanitizer options (ASAN_OPTIONS, LSAN_OPTIONS, ...) still reach the children. A child is also SIGKILLed
 * when the thread that started it ends (PR_SET_PDEATHSIG), so even an aborted test leaves none behind:
 * start children from the thread that runs the test.
 *
 * Every wait is bounded. A helper that cannot do its job fails the running test (cmocka fail_msg) with a
 * message that says why, e.g. a daemon that exits before it is ready fails the test with the tail of its
 * stderr. Exit statuses are the process's exit code, or 128+N when signal N ended it; -1 means it did not
 * exit in time (it was then SIGKILLed and reaped).
 *
 * Not thread-safe except where noted: call these from the thread that runs the test. */
#ifndef ALMA_TESTPROC_H
#define ALMA_TESTPROC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Default bounds: for a daemon's ready-file and for output waits; for a process to exit (after SIGTERM, or
 * by itself). */
#define TESTPROC_READY_TIMEOUT_MS 10000
#define TESTPROC_EXIT_TIMEOUT_MS  15000
/* Capacities: argv entries of one command line (program included); "K=V" entries a test adds to a
 * daemon's environment; paths of files in the work directory. */
#define TESTPROC_MAX_ARGS      64
#define TESTPROC_MAX_EXTRA_ENV 16
#define TESTPROC_PATH_MAX      256

/* ------------------------------------------------------------------ the test's work directory */

/* cmocka setup / teardown (state is not used). Setup fails (returns -1) if no directory can be made. */
int testproc_setup(void **state);
int testproc_teardown(void **state);

/* The work directory of the running test, and "<workdir>/<name>". The returned path lives in one of 8
 * rotating per-thread buffers: copy it if you keep it longer. */
const char *testproc_work_dir(void);
const char *testproc_work_path(const char *name);

/* ------------------------------------------------------------------ time and files */

int64_t testproc_now_ms(void); /* CLOCK_MONOTONIC */
void testproc_sleep_ms(int ms);
bool testproc_file_exists(const char *path);
/* The whole file, malloc'd and NUL-terminated; "" when it does not exist (yet). Free the result. */
char *testproc_read_or_empty(const char *path);
/* Wait until the file holds `needle`: true when it did within timeout_ms. Thread-safe. */
bool testproc_file_wait_for(const char *path, const char *needle, int timeout_ms);

/* ------------------------------------------------------------------ any process */

/* The environment for a child: ours without ALMA_*, then `extra` ("K=V" strings, NULL-terminated; may be
 * NULL). The array is static per thread and valid until the next call; the strings are not copied. */
char **testproc_env(const char *const *extra);

/* fork + execve of argv[0] (a path: no PATH search, no shell) with testproc_env(extra_env), stdin from
 * /dev/null, stdout and stderr into the given files (created or truncated). The child is tracked: teardown
 * kills it if it is still running. A program that cannot be executed exits 127 with the reason in its
 * stderr file. */
pid_t testproc_spawn(const char *const *argv, const char *const *extra_env, const char *out_path,
                     const char *err_path);

/* Wait for a child of testproc_spawn to exit: its exit status, or -1 when it had not exited within
 * timeout_ms (it is then SIGKILLed and reaped). */
int testproc_wait_exit(pid_t pid, int timeout_ms);

/* Run a program to its end (bounded by TESTPROC_EXIT_TIMEOUT_MS): its exit status, with its stdout and
 * stderr in malloc'd strings (free them; pass NULL for what you do not want). Each run has its own files in
 * the work directory. */
int testproc_run(const char *const *argv, const char *const *extra_env, char **ret_out, char **ret_err);

/* ------------------------------------------------------------------ a service daemon */

/* One service binary and its command line, started (and restarted) with the same settings. Fields above
 * the line may be read by tests; the rest is private. Large (about 14 KiB): fine on a test's stack. */
typedef struct testproc_daemon {
    pid_t pid;               /* while running; 0 once stopped, killed or reaped */
    int api, admin, metrics; /* ports from the ready-file; admin or metrics is 0 when that port is off */
    char api_addr[32];       /* "127.0.0.1:<api>" */
    char admin_addr[32];     /* "127.0.0.1:<admin>", or "" when off */
    char metrics_addr[32];   /* "127.0.0.1:<metrics>", or "" when off */
    char ready_path[TESTPROC_PATH_MAX], out_path[TESTPROC_PATH_MAX], err_path[TESTPROC_PATH_MAX];
    int ready_timeout_ms; /* bounds; set to the defaults by init, a test may raise them before start */
    int exit_timeout_ms;
    /* ---- private */
    int argc, envc;
    const char *argv[TESTPROC_MAX_ARGS + 1];
    const char *env[TESTPROC_MAX_EXTRA_ENV + 1];
    char strings[12288];
    size_t used;
} testproc_daemon;

/* Set up `d` (nothing is started): the command line
 *   BINARY --api-addr 127.0.0.1:0 --admin-addr 127.0.0.1:0 --metrics-addr 127.0.0.1:0
 *          [--tls-cert <svc>.pem --tls-key <svc>-key.pem --tls-ca ca.pem]   (dev PKI, when tls_service)
 *          --ready-file <ready_path>  ARGS...
 * (later flags win, so ARGS may override any of these), run with testproc_env(env). tls_service is the
 * name of the service's dev certificate ("echo", "audit"), or NULL for no TLS settings. args and env are
 * NULL-terminated (each may be NULL); every string is copied into `d`. The files of `d` are named after
 * the binary and numbered per test: <workdir>/<binary>-<n>.ready, .out, .err. */
void testproc_daemon_init(testproc_daemon *d, const char *binary, const char *tls_service,
                          const char *const *args, const char *const *env);

/* Start the daemon and wait for its ready-file (bounded by ready_timeout_ms), then fill in the ports and
 * addresses. Fails the test, with the tail of the daemon's stderr, when it exits first or is not ready in
 * time. Also restarts a daemon that was stopped or killed: same command line, new ports (the kernel picks
 * them again), stdout and stderr files truncated (read its log first if you need the last run's). */
void testproc_daemon_start(testproc_daemon *d);

/* SIGTERM, then the exit status (bounded by exit_timeout_ms; -1 if it did not exit). */
int testproc_daemon_stop(testproc_daemon *d);
/* SIGKILL, then the exit status (128 + SIGKILL): the crash of a daemon, for restart tests. */
int testproc_daemon_kill(testproc_daemon *d);
/* Wait for a daemon that was told to stop some other way (e.g. kill(d->pid, SIGTERM) while calls run):
 * its exit status, or -1 (then killed) when it did not exit within timeout_ms. */
int testproc_daemon_wait(testproc_daemon *d, int timeout_ms);

/* Run the command line to its end instead (bounded by exit_timeout_ms): for start-up failures, --help and
 * the like. The exit status, with stdout and stderr as in testproc_run. */
int testproc_daemon_run(testproc_daemon *d, char **ret_out, char **ret_err);

/* The daemon's stderr (its log) so far, malloc'd ("" before it wrote anything). Free the result. */
char *testproc_daemon_log(const testproc_daemon *d);
/* Wait until the daemon's log holds `needle`: true when it did within timeout_ms. Thread-safe. */
bool testproc_daemon_log_wait(const testproc_daemon *d, const char *needle, int timeout_ms);

#endif
