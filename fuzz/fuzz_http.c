/*
 * libFuzzer target: the HTTP/1.1 response parser of the connection pool
 * (csrc/http_parse.c). Each input is what a server sends on a connection,
 * fed as the answer to a GET and to a HEAD, each three ways: whole, a byte
 * at a time, and in pieces whose sizes come from a hash of the input. The
 * end of the input is the connection's close.
 *
 * Beyond "no crash", it aborts when: body bytes are delivered beyond the
 * Content-Length or the chunk sizes declared, or without a body; a complete
 * response's body is not exactly what was declared; a feed consumes more
 * than it was given, or less without being final; a final result (complete,
 * error, stopped) is followed by progress (bytes consumed, body delivered,
 * another result); the three splits disagree on the result, status, keep,
 * framing, Retry-After or body, or (complete) on where the response ended;
 * a body limit does not stop the parser exactly when the body passes it.
 */
#include "http_parse.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                           \
	do {                                                                                  \
		if (!(cond)) {                                                                \
			fprintf(stderr, "fuzz_http: invariant broken: %s (line %d)\n", #cond, \
				__LINE__);                                                    \
			abort();                                                              \
		}                                                                             \
	} while (0)

struct run {
	struct http_parser p; /* large: static below, not on the stack */
	enum http_parse_result result;
	int final_seen; /* a feed returned a final result */
	size_t consumed;
	char *body;
	size_t body_len;
	size_t limit; /* stop once the body would pass it; SIZE_MAX: never */
};

static int on_body(void *ud, const char *data, size_t len)
{
	struct run *r = ud;
	const struct http_parser *p = &r->p;
	CHECK(!r->final_seen);
	CHECK(len > 0);
	CHECK(p->head_done);
	CHECK(p->framing != HTTP_FRAMING_NONE);
	CHECK(p->body == r->body_len);
	if (p->framing != HTTP_FRAMING_CLOSE)
		CHECK(p->body + len <= p->declared);
	if (r->body_len + len > r->limit)
		return 1;
	memcpy(r->body + r->body_len, data, len);
	r->body_len += len;
	return 0;
}

static uint64_t next_rand(uint64_t *state)
{
	*state = *state * 6364136223846793005ULL + 1442695040888963407ULL;
	return *state >> 33;
}

/* mode 0: whole; 1: a byte at a time; 2: pieces from the seed */
static void run_one(struct run *r, const uint8_t *data, size_t size, int head_only, int mode,
		    uint64_t seed)
{
	http_parse_init(&r->p, head_only);
	r->result = HTTP_PARSE_MORE;
	r->final_seen = 0;
	r->consumed = 0;
	r->body_len = 0;
	size_t at = 0;
	do {
		size_t piece = size - at;
		if (mode == 1 && piece > 1)
			piece = 1;
		else if (mode == 2 && piece > 1) {
			size_t most = next_rand(&seed) % 2 && piece > 16 ? 16 : piece;
			piece = 1 + (size_t)(next_rand(&seed) % most);
		}
		size_t used = 99;
		enum http_parse_result res =
			http_parse_feed(&r->p, (const char *)data + at, piece, &used, on_body, r);
		CHECK(used <= piece);
		if (r->final_seen) { /* no progress past a final result */
			CHECK(res == r->result && used == 0);
		} else if (res == HTTP_PARSE_MORE) {
			CHECK(used == piece);
		} else {
			r->final_seen = 1;
			r->result = res;
		}
		r->consumed += used;
		at += piece;
	} while (at < size);
	if (!r->final_seen) {
		enum http_parse_result res = http_parse_close(&r->p);
		CHECK(res == HTTP_PARSE_DONE || res == HTTP_PARSE_ERROR);
		CHECK(res == HTTP_PARSE_ERROR || r->p.framing == HTTP_FRAMING_CLOSE);
		r->result = res;
		r->final_seen = 1;
	}
	/* still final, with nothing more consumed or delivered */
	size_t used = 99;
	CHECK(http_parse_feed(&r->p, "HTTP/1.1 200 OK\r\n\r\n", 19, &used, on_body, r) ==
	      r->result);
	CHECK(used == 0);
	CHECK(http_parse_close(&r->p) == r->result);

	const struct http_parser *p = &r->p;
	CHECK(p->body == r->body_len || r->result == HTTP_PARSE_STOPPED);
	CHECK(r->body_len <= r->consumed);
	if (p->head_done) {
		CHECK(p->status >= 200 && p->status <= 999);
		CHECK(p->keep == 0 || p->keep == 1);
		CHECK(p->retry_after == -1 || (isfinite(p->retry_after) && p->retry_after >= 0));
		if (p->framing == HTTP_FRAMING_CLOSE)
			CHECK(!p->keep);
	}
	if (r->result == HTTP_PARSE_DONE) {
		CHECK(p->head_done);
		if (p->framing == HTTP_FRAMING_NONE)
			CHECK(r->body_len == 0);
		else if (p->framing != HTTP_FRAMING_CLOSE)
			CHECK(r->body_len == p->declared);
		else
			CHECK(r->consumed == size);
		if (head_only)
			CHECK(p->framing == HTTP_FRAMING_NONE);
	}
}

static void same(const struct run *a, const struct run *b)
{
	CHECK(a->result == b->result);
	CHECK(a->p.head_done == b->p.head_done);
	CHECK(a->p.status == b->p.status);
	CHECK(a->p.keep == b->p.keep);
	CHECK(a->p.framing == b->p.framing);
	CHECK(a->p.retry_after == b->p.retry_after ||
	      (isnan(a->p.retry_after) && isnan(b->p.retry_after)));
	CHECK(a->body_len == b->body_len && !memcmp(a->body, b->body, a->body_len));
	if (a->result == HTTP_PARSE_DONE)
		CHECK(a->consumed == b->consumed);
}

static struct run runs[4];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint64_t seed = 14695981039346656037ULL; /* FNV-1a of the input */
	for (size_t i = 0; i < size; i++)
		seed = (seed ^ data[i]) * 1099511628211ULL;
	char *bodies = malloc(4 * (size + 1));
	CHECK(bodies);
	for (int k = 0; k < 4; k++) {
		runs[k].body = bodies + (size_t)k * (size + 1);
		runs[k].limit = SIZE_MAX;
	}
	for (int head_only = 0; head_only < 2; head_only++) {
		for (int mode = 0; mode < 3; mode++)
			run_one(&runs[mode], data, size, head_only, mode,
				seed + (uint64_t)head_only);
		same(&runs[0], &runs[1]);
		same(&runs[0], &runs[2]);
		/* a body limit (max_response) stops it exactly when passed */
		runs[3].limit = (size_t)(seed % 64);
		run_one(&runs[3], data, size, head_only, 2, seed >> 7);
		if (runs[0].body_len > runs[3].limit)
			CHECK(runs[3].result == HTTP_PARSE_STOPPED);
		else
			CHECK(runs[3].result == runs[0].result);
		runs[3].limit = SIZE_MAX;
	}
	free(bodies);
	return 0;
}
