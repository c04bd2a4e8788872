/* Absolute times for pthread_cond_timedwait and friends. */
#ifndef ALMA_BASE_CLOCK_H
#define ALMA_BASE_CLOCK_H

#include <stdint.h>
#include <time.h>

/* Now on `clock` plus `ms` milliseconds (ms >= 0), normalised. Use the clock the condition variable
 * waits on: CLOCK_REALTIME by default, CLOCK_MONOTONIC where pthread_condattr_setclock chose it. */
struct timespec base_time_after_ms(clockid_t clock, int64_t ms);

#endif
