/* A minimal check macro for the C unit tests: counts, reports, goes on. */
#ifndef AYLA_TEST_CHECK_H
#define AYLA_TEST_CHECK_H

#include <stdio.h>

static int failures, checks;

#define CHECK(cond)                                                                              \
	do {                                                                                     \
		checks++;                                                                        \
		if (!(cond)) {                                                                   \
			failures++;                                                              \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
		}                                                                                \
	} while (0)

/* The last line of a test program, in the form ./dev counts. */
#define CHECK_REPORT(name) \
	(printf("%s: %d passed, %d failed\n", name, checks - failures, failures), failures != 0)

#endif
