/* Bounded FIFO of event payloads; see queue.h for the drop policy. */
#include "queue.h"

#include <stdlib.h>
#include <string.h>

void ayla_queue_init(struct ayla_queue *q, size_t max_count, size_t max_bytes,
		     enum ayla_drop_policy policy)
{
	memset(q, 0, sizeof *q);
	q->max_count = max_count ? max_count : 1;
	q->max_bytes = max_bytes;
	q->policy = policy;
}

static int full(const struct ayla_queue *q, size_t incoming)
{
	return q->count >= q->max_count || (q->max_bytes && q->bytes + incoming > q->max_bytes);
}

int ayla_queue_push(struct ayla_queue *q, const char *data, size_t len)
{
	/* One message larger than the whole byte budget can never fit. */
	if (q->max_bytes && len > q->max_bytes) {
		q->dropped++;
		return 0;
	}
	if (full(q, len)) {
		if (q->policy == AYLA_DROP_NEWEST) {
			q->dropped++;
			return 0;
		}
		while (q->head && full(q, len)) {
			free(ayla_queue_pop(q));
			q->dropped++;
		}
	}
	struct ayla_msg *m = malloc(sizeof *m + len + 1);
	if (!m)
		return -1;
	m->next = NULL;
	m->len = len;
	memcpy(m->data, data, len);
	m->data[len] = '\0';
	if (q->tail)
		q->tail->next = m;
	else
		q->head = m;
	q->tail = m;
	q->count++;
	q->bytes += len;
	if (q->count > q->peak_count)
		q->peak_count = q->count;
	return 1;
}

struct ayla_msg *ayla_queue_pop(struct ayla_queue *q)
{
	struct ayla_msg *m = q->head;
	if (!m)
		return NULL;
	q->head = m->next;
	if (!q->head)
		q->tail = NULL;
	q->count--;
	q->bytes -= m->len;
	m->next = NULL;
	return m;
}

void ayla_queue_clear(struct ayla_queue *q)
{
	struct ayla_msg *m;
	while ((m = ayla_queue_pop(q)))
		free(m);
}
