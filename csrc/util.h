/* Small helpers shared by the C core: clocks, jitter, secret redaction, logs. */
#ifndef AYLA_UTIL_H
#define AYLA_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include <pthread.h>
#include <time.h>

double ayla_now(void); /* wall clock, seconds since the epoch */

/* The CLOCK_MONOTONIC time `seconds` from now, for pthread_cond_timedwait
 * (negative or NaN: now; clamped to a million seconds). */
struct timespec ayla_deadline(double seconds);
/* A condition variable whose timed waits use CLOCK_MONOTONIC. */
void ayla_cond_init(pthread_cond_t *cv);
double ayla_monotime(void); /* monotonic seconds, for intervals */

/* A uniform random number in [0, 1) from a per-object xorshift state. */
double ayla_random(uint64_t *state);
uint64_t ayla_random_seed(void);

/* Copies src to dst with every "stream_key=VALUE" shown as its first 4
 * characters and its length, "stream_key=abcd…(32)" (only the length for
 * keys of 8 characters or fewer). */
void ayla_redact_url(const char *src, char *dst, size_t dstlen);

/* Reads text as one whole finite number within [min, max] into *out.
 * Returns 0, or -1 (and leaves *out alone) for anything else: "", "12abc", "nan", out of range. */
int ayla_parse_number(const char *text, double min, double max, double *out);

/* Routes libwebsockets' own log lines to stderr, redacted, at the level in
 * AYLA_LWS_LOG (an lws LLL_ bit mask, e.g. 7; default: silent). Idempotent. */
void ayla_lws_logging(void);

#endif
