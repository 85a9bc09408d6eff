/*
 * A bounded FIFO of received event payloads. Not thread-safe by itself: the
 * owner (stream.c) holds its lock around every call.
 *
 * Policy when full (by count or by bytes): DROP_OLDEST discards the oldest
 * queued events to make room, so a slow reader sees the newest state;
 * DROP_NEWEST refuses the incoming event, so what was queued stays intact.
 * Every discarded event is counted in `dropped`.
 */
#ifndef AYLA_QUEUE_H
#define AYLA_QUEUE_H

#include <stddef.h>
#include <stdint.h>

enum ayla_drop_policy {
	AYLA_DROP_OLDEST,
	AYLA_DROP_NEWEST
};

struct ayla_msg {
	struct ayla_msg *next;
	size_t len;
	char data[]; /* len bytes plus a NUL */
};

struct ayla_queue {
	struct ayla_msg *head, *tail;
	size_t count, bytes;
	size_t max_count, max_bytes;
	size_t peak_count;
	uint64_t dropped;
	enum ayla_drop_policy policy;
};

void ayla_queue_init(struct ayla_queue *q, size_t max_count, size_t max_bytes,
		     enum ayla_drop_policy policy);
/* Copies data in; returns 1 if queued, 0 if dropped by policy, -1 on ENOMEM. */
int ayla_queue_push(struct ayla_queue *q, const char *data, size_t len);
/* Detaches the oldest message (caller frees it with free()), or NULL. */
struct ayla_msg *ayla_queue_pop(struct ayla_queue *q);
void ayla_queue_clear(struct ayla_queue *q);

#endif
