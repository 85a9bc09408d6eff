/* Unit tests for the bounded event queue and its drop policies (csrc/queue.c). */
#include "queue.h"

#include "check.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void push_n(struct ayla_queue *q, int from, int to)
{
	char buf[16];
	for (int i = from; i <= to; i++) {
		int n = snprintf(buf, sizeof buf, "%d", i);
		ayla_queue_push(q, buf, (size_t)n);
	}
}

static int pop_int(struct ayla_queue *q)
{
	struct ayla_msg *m = ayla_queue_pop(q);
	if (!m)
		return -1;
	int v = atoi(m->data);
	CHECK(m->data[m->len] == '\0');
	free(m);
	return v;
}

static void test_fifo(void)
{
	struct ayla_queue q;
	ayla_queue_init(&q, 10, 0, AYLA_DROP_OLDEST);
	CHECK(ayla_queue_pop(&q) == NULL);
	push_n(&q, 1, 3);
	CHECK(q.count == 3 && q.bytes == 3);
	CHECK(pop_int(&q) == 1 && pop_int(&q) == 2 && pop_int(&q) == 3);
	CHECK(pop_int(&q) == -1 && q.count == 0 && q.bytes == 0 && !q.head && !q.tail);
	push_n(&q, 4, 4); /* usable again after running empty */
	CHECK(pop_int(&q) == 4);
}

static void test_drop_oldest(void)
{
	struct ayla_queue q;
	ayla_queue_init(&q, 3, 0, AYLA_DROP_OLDEST);
	push_n(&q, 1, 5);
	CHECK(q.count == 3 && q.dropped == 2 && q.peak_count == 3);
	CHECK(pop_int(&q) == 3 && pop_int(&q) == 4 && pop_int(&q) == 5);
}

static void test_drop_newest(void)
{
	struct ayla_queue q;
	ayla_queue_init(&q, 3, 0, AYLA_DROP_NEWEST);
	push_n(&q, 1, 5);
	CHECK(q.count == 3 && q.dropped == 2);
	CHECK(pop_int(&q) == 1 && pop_int(&q) == 2 && pop_int(&q) == 3);
}

static void test_byte_budget(void)
{
	struct ayla_queue q;
	ayla_queue_init(&q, 100, 10, AYLA_DROP_OLDEST);
	push_n(&q, 10, 15); /* six 2-byte messages: 12 bytes > 10 */
	CHECK(q.bytes <= 10 && q.count == 5 && q.dropped == 1);
	CHECK(pop_int(&q) == 11);
	char big[32];
	memset(big, 'x', sizeof big);
	CHECK(ayla_queue_push(&q, big, sizeof big) == 0); /* can never fit */
	CHECK(q.dropped == 2 && q.count == 4);
	ayla_queue_clear(&q);
	CHECK(q.count == 0 && q.bytes == 0);
}

int main(void)
{
	test_fifo();
	test_drop_oldest();
	test_drop_newest();
	test_byte_budget();
	return CHECK_REPORT("queue");
}
