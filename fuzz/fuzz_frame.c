/*
 * libFuzzer target: the DSS frame parser and routing-key scanner (csrc/frame.c).
 *
 * The input is one raw WebSocket text message. Besides not crashing, the
 * parser must keep the invariants its callers rely on (stream.c indexes
 * stats by reason, queues json spans, resumes from seq); a broken one
 * aborts, so libFuzzer reports it like a crash.
 */
#include "frame.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_SEEN 64

struct walk {
	const char *msg;
	size_t len;
	size_t calls;
	size_t pos;    /* end of the last event span: records never overlap */
	int ended;     /* a malformed record or heartbeat ends the message */
	size_t events; /* the first MAX_SEEN events, checked again after the walk */
	struct dss_record ev[MAX_SEEN];
};

static void fail(const char *what)
{
	fprintf(stderr, "fuzz_frame: invariant broken: %s\n", what);
	abort();
}

#define ENSURE(cond)                 \
	do {                         \
		if (!(cond))         \
			fail(#cond); \
	} while (0)

static int is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static void on_record(const struct dss_record *rec, void *ud)
{
	struct walk *w = ud;
	ENSURE(!w->ended); /* nothing follows the end */
	w->calls++;
	switch (rec->kind) {
	case DSS_HEARTBEAT:
	case DSS_KEEPALIVE:
		/* Exact text only: never found inside a longer message. */
		ENSURE(w->len == 3 && w->calls == 1);
		ENSURE(memcmp(w->msg, rec->kind == DSS_HEARTBEAT ? "1|Z" : "1|X", 3) == 0);
		w->ended = 1;
		break;
	case DSS_MALFORMED:
		/* stream.c does st.malformed[rec->reason]++ */
		ENSURE(rec->reason > DSS_BAD_NONE && rec->reason < DSS_BAD_COUNT);
		ENSURE(strcmp(dss_malformed_name(rec->reason), "unknown") != 0);
		w->ended = 1;
		break;
	case DSS_EVENT:
		ENSURE(rec->reason == DSS_BAD_NONE);
		ENSURE(rec->json && rec->json >= w->msg + w->pos);
		ENSURE(rec->json_len >= 2 && rec->json_len <= w->len);
		ENSURE((size_t)(rec->json - w->msg) + rec->json_len <= w->len);
		ENSURE(rec->json[0] == '{' && rec->json[rec->json_len - 1] == '}');
		ENSURE(rec->len_mismatch == 0 || rec->len_mismatch == 1);
		/* Every event sits right after "digits|" and optional blanks. */
		ENSURE(rec->json > w->msg);
		w->pos = (size_t)(rec->json - w->msg) + rec->json_len;
		if (w->events < MAX_SEEN)
			w->ev[w->events] = *rec;
		w->events++;
		break;
	default:
		fail("unknown record kind");
	}
}

/* The span dss_json_lookup returns lies inside the object. */
static void check_lookup(const char *json, size_t len, const char *const *path, size_t depth)
{
	const char *v = NULL;
	size_t vlen = 0;
	if (dss_json_lookup(json, len, path, depth, &v, &vlen)) {
		ENSURE(v && v >= json && v <= json + len);
		ENSURE(vlen <= len && (size_t)(v - json) + vlen <= len);
	}
}

/* dss_json_seq agrees with the span of "seq" read digit by digit. */
static void check_seq(const char *json, size_t len)
{
	static const char *const path[] = {"seq"};
	uint64_t seq = 0;
	if (!dss_json_seq(json, len, &seq))
		return;
	const char *v;
	size_t vlen;
	ENSURE(dss_json_lookup(json, len, path, 1, &v, &vlen));
	ENSURE(vlen >= 1 && vlen <= 19);
	char digits[20];
	for (size_t k = 0; k < vlen; k++)
		ENSURE(is_digit(v[k]));
	memcpy(digits, v, vlen);
	digits[vlen] = '\0';
	ENSURE(strtoull(digits, NULL, 10) == seq);
}

/* An event re-framed as "LEN|json" with its exact byte count parses back
 * to that one event, LEN matching. */
static void check_reframe(const struct dss_record *ev)
{
	size_t cap = ev->json_len + 24;
	char *buf = malloc(cap);
	if (!buf)
		return;
	int n = snprintf(buf, cap, "%zu|", ev->json_len);
	memcpy(buf + n, ev->json, ev->json_len);

	struct walk w = {.msg = buf, .len = (size_t)n + ev->json_len};
	size_t found = dss_frame_parse(buf, w.len, on_record, &w);
	ENSURE(found == w.calls && found == 1 && w.events == 1);
	ENSURE(w.ev[0].json == buf + n && w.ev[0].json_len == ev->json_len);
	ENSURE(!w.ev[0].len_mismatch);
	free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* An exact-size copy, so ASan sees any read past the message. */
	char *msg = malloc(size ? size : 1);
	if (!msg)
		return 0;
	if (size)
		memcpy(msg, data, size);

	struct walk w = {.msg = msg, .len = size};
	size_t found = dss_frame_parse(msg, size, on_record, &w);
	ENSURE(found == w.calls && found >= 1); /* every message is something */

	static const char *const type_path[] = {"metadata", "event_type"};
	static const char *const seq_path[] = {"seq"};
	for (size_t k = 0; k < w.events && k < MAX_SEEN; k++) {
		const struct dss_record *ev = &w.ev[k];
		check_lookup(ev->json, ev->json_len, type_path, 2);
		check_lookup(ev->json, ev->json_len, seq_path, 1);
		check_seq(ev->json, ev->json_len);
		check_reframe(ev);
	}
	/* The scanner also meets text that is not an object (sim_cloud.c). */
	check_lookup(msg, size, type_path, 2);
	check_seq(msg, size);

	free(msg);
	return 0;
}
