/* Clocks, jitter, redaction and log routing for the C core. */
#include "util.h"

#include <errno.h>
#include <libwebsockets.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

double ayla_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

double ayla_monotime(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

uint64_t ayla_random_seed(void)
{
	uint64_t seed = 0;
	if (getrandom(&seed, sizeof seed, 0) != (ssize_t)sizeof seed)
		seed = (uint64_t)(ayla_monotime() * 1e9);
	return seed ? seed : 0x9E3779B97F4A7C15ull;
}

struct timespec ayla_deadline(double seconds)
{
	if (!(seconds > 0))
		seconds = 0;
	if (seconds > 1e6)
		seconds = 1e6;
	struct timespec until;
	clock_gettime(CLOCK_MONOTONIC, &until);
	double whole = (double)(long long)seconds;
	until.tv_sec += (time_t)whole;
	until.tv_nsec += (long)((seconds - whole) * 1e9);
	if (until.tv_nsec >= 1000000000L) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000L;
	}
	return until;
}

void ayla_cond_init(pthread_cond_t *cv)
{
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(cv, &ca);
	pthread_condattr_destroy(&ca);
}

double ayla_random(uint64_t *state)
{
	uint64_t x = *state ? *state : 0x9E3779B97F4A7C15ull;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	*state = x;
	return (double)(x >> 11) / 9007199254740992.0; /* 2^53 */
}

void ayla_redact_url(const char *src, char *dst, size_t dstlen)
{
	static const char marker[] = "stream_key=";
	size_t o = 0;
	if (!dstlen)
		return;
	while (*src && o + 1 < dstlen) {
		if (strncmp(src, marker, sizeof marker - 1) == 0) {
			src += sizeof marker - 1;
			size_t k = strcspn(src, "&# \t\r\n\"'");
			char shown[40];
			if (k <= 8)
				snprintf(shown, sizeof shown, "…(%zu)", k);
			else
				snprintf(shown, sizeof shown, "%.4s…(%zu)", src, k);
			int w = snprintf(dst + o, dstlen - o, "%s%s", marker, shown);
			o += w > 0 ? (size_t)w : 0;
			if (o >= dstlen)
				o = dstlen - 1;
			src += k;
			continue;
		}
		dst[o++] = *src++;
	}
	dst[o] = '\0';
}

static void emit_redacted(int level, const char *line)
{
	char buf[1024];
	(void)level;
	ayla_redact_url(line, buf, sizeof buf);
	fprintf(stderr, "ayla: lws: %s", buf);
}

static void setup_logging(void)
{
	const char *env = getenv("AYLA_LWS_LOG");
	double level = 0; /* silent: failures reach the user through status() */
	if (env && ayla_parse_number(env, 0, 0xffff, &level))
		fprintf(stderr,
			"ayla: AYLA_LWS_LOG takes an lws log bit mask (e.g. 7), not '%.20s'\n",
			env);
	lws_set_log_level((int)level, emit_redacted);
}

void ayla_lws_logging(void)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;
	pthread_once(&once, setup_logging);
}

int ayla_parse_number(const char *text, double min, double max, double *out)
{
	if (!text || !*text)
		return -1;
	char *end;
	errno = 0;
	double x = strtod(text, &end);
	if (errno || *end || !isfinite(x) || x < min || x > max)
		return -1;
	*out = x;
	return 0;
}
