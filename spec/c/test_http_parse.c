/* Unit tests for the HTTP/1.1 response parser of the connection pool
 * (csrc/http_parse.c). Every case is parsed whole and a byte at a time, and
 * both must agree. */
#include "http_parse.h"

#include "check.h"

#include <stdio.h>
#include <string.h>

struct res {
	enum http_parse_result r;
	unsigned status;
	int keep;
	double retry_after;
	enum http_framing framing;
	size_t used; /* bytes that belonged to the response */
	char body[256];
	size_t body_len;
	size_t limit;
};

static int collect(void *ud, const char *data, size_t len)
{
	struct res *s = ud;
	if (s->body_len + len > s->limit || s->body_len + len > sizeof s->body)
		return 1;
	memcpy(s->body + s->body_len, data, len);
	s->body_len += len;
	return 0;
}

static struct http_parser parser;

/* Feeds in pieces of `piece` bytes (0: whole), then closes if still MORE
 * and `close` is set. */
static struct res run(const char *in, size_t len, int head_only, size_t piece, int close)
{
	struct res s;
	memset(&s, 0, sizeof s);
	s.limit = sizeof s.body;
	http_parse_init(&parser, head_only);
	s.r = HTTP_PARSE_MORE;
	for (size_t at = 0; at < len && s.r == HTTP_PARSE_MORE;) {
		size_t n = piece && len - at > piece ? piece : len - at, used;
		s.r = http_parse_feed(&parser, in + at, n, &used, collect, &s);
		s.used += used;
		at += n;
	}
	if (s.r == HTTP_PARSE_MORE && close)
		s.r = http_parse_close(&parser);
	s.status = parser.status;
	s.keep = parser.keep;
	s.retry_after = parser.retry_after;
	s.framing = parser.framing;
	return s;
}

static struct res parse_opt(const char *in, int head_only, int close)
{
	size_t len = strlen(in);
	struct res whole = run(in, len, head_only, 0, close);
	struct res bytes = run(in, len, head_only, 1, close);
	CHECK(whole.r == bytes.r && whole.status == bytes.status && whole.keep == bytes.keep &&
	      whole.body_len == bytes.body_len && !memcmp(whole.body, bytes.body, whole.body_len));
	if (whole.r == HTTP_PARSE_DONE)
		CHECK(whole.used == bytes.used);
	return whole;
}

static struct res parse(const char *in)
{
	return parse_opt(in, 0, 0);
}

static int body_is(const struct res *s, const char *want)
{
	return s->body_len == strlen(want) && !memcmp(s->body, want, s->body_len);
}

static void test_valid(void)
{
	struct res s = parse("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello");
	CHECK(s.r == HTTP_PARSE_DONE && s.status == 200 && s.keep && body_is(&s, "hello"));
	CHECK(s.framing == HTTP_FRAMING_LENGTH && s.retry_after == -1);

	s = parse("HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\n"
		  "Content-Length: 2\r\n\r\n{}");
	CHECK(s.r == HTTP_PARSE_DONE && s.status == 401 && body_is(&s, "{}"));

	s = parse("HTTP/1.1 429 Too Many Requests\r\nRetry-After: 7\r\nContent-Length: 0\r\n\r\n");
	CHECK(s.r == HTTP_PARSE_DONE && s.status == 429 && s.retry_after == 7 && s.body_len == 0);
	s = parse("HTTP/1.1 503 x\r\nRetry-After: Wed, 21 Oct 2015 07:28:00 GMT\r\n"
		  "Content-Length: 0\r\n\r\n");
	CHECK(s.r == HTTP_PARSE_DONE && s.retry_after == 1);
	s = parse("HTTP/1.1 503 x\r\nRetry-After: inf\r\nContent-Length: 0\r\n\r\n");
	CHECK(s.r == HTTP_PARSE_DONE && s.retry_after == 1);

	s = parse("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
	CHECK(s.r == HTTP_PARSE_DONE && s.keep && s.body_len == 0);

	/* chunked, with extensions and trailers */
	s = parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
		  "5;name=\"v\"\r\nhello\r\n6 ; x\r\n world\r\nA\r\n0123456789\r\n"
		  "0\r\nX-Trailer: 1\r\nX-Other: 2\r\n\r\n");
	CHECK(s.r == HTTP_PARSE_DONE && s.keep && s.framing == HTTP_FRAMING_CHUNKED &&
	      body_is(&s, "hello world0123456789"));
	s = parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
	CHECK(s.r == HTTP_PARSE_DONE && s.body_len == 0);

	/* HTTP/1.0 and Connection: close are not reused */
	s = parse("HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok");
	CHECK(s.r == HTTP_PARSE_DONE && !s.keep && body_is(&s, "ok"));
	s = parse(
		"HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\nContent-Length: 2\r\n\r\nok");
	CHECK(s.r == HTTP_PARSE_DONE && !s.keep);

	/* no length: up to the close */
	s = parse("HTTP/1.0 200 OK\r\n\r\nup to the close");
	CHECK(s.r == HTTP_PARSE_MORE && s.framing == HTTP_FRAMING_CLOSE && !s.keep);
	s = parse_opt("HTTP/1.0 200 OK\r\n\r\nup to the close", 0, 1);
	CHECK(s.r == HTTP_PARSE_DONE && body_is(&s, "up to the close"));

	/* bare LF line ends, and a status line without a reason */
	s = parse("HTTP/1.1 200 OK\nContent-Length: 2\n\nok");
	CHECK(s.r == HTTP_PARSE_DONE && body_is(&s, "ok"));
	s = parse("HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok");
	CHECK(s.r == HTTP_PARSE_DONE && s.status == 200);

	/* interim responses are skipped */
	s = parse("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
		  "HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok");
	CHECK(s.r == HTTP_PARSE_DONE && s.status == 201 && body_is(&s, "ok"));

	/* obs-fold continues the header before it */
	s = parse("HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 2\r\n\r\nok");
	CHECK(s.r == HTTP_PARSE_DONE && body_is(&s, "ok"));
	s = parse(
		"HTTP/1.1 200 OK\r\nConnection: keep-alive,\r\n\tclose\r\nContent-Length: 0\r\n\r\n");
	CHECK(s.r == HTTP_PARSE_DONE && !s.keep);

	/* a list of one repeated length */
	s = parse("HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\nContent-Length: 2\r\n\r\nok");
	CHECK(s.r == HTTP_PARSE_DONE && body_is(&s, "ok"));

	/* a NUL in the body is data */
	static const char nul_body[] = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\na\0b";
	s = run(nul_body, sizeof nul_body - 1, 0, 0, 0);
	CHECK(s.r == HTTP_PARSE_DONE && s.body_len == 3 && s.body[1] == '\0');
}

static void test_no_body(void)
{
	/* HEAD, 204 and 304 end with the head, whatever the headers say: what
	 * follows is not theirs (the pool does not reuse the connection) */
	const char *head = "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n";
	struct res s = parse_opt(head, 1, 0);
	CHECK(s.r == HTTP_PARSE_DONE && s.keep && s.body_len == 0 && s.used == strlen(head));
	const char *no_content = "HTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\nabc";
	s = parse(no_content);
	CHECK(s.r == HTTP_PARSE_DONE && s.status == 204 && s.body_len == 0 &&
	      s.used == strlen(no_content) - 3);
	CHECK(!s.keep); /* a 204 announcing a body: not reused */
	s = parse("HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n");
	CHECK(s.r == HTTP_PARSE_DONE && s.keep);
	s = parse("HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n");
	CHECK(s.r == HTTP_PARSE_DONE && s.status == 304 && s.body_len == 0 && s.keep);
}

static void test_framing(void)
{
	/* bytes after the response are not its own */
	const char *extra = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n";
	struct res s = parse(extra);
	CHECK(s.r == HTTP_PARSE_DONE && body_is(&s, "ok") && s.used == strlen(extra) - 17);

	/* both Content-Length and chunked: chunked wins, no reuse */
	s = parse("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
		  "2\r\nok\r\n0\r\n\r\n");
	CHECK(s.r == HTTP_PARSE_DONE && !s.keep && body_is(&s, "ok"));
	/* chunked not last: up to the close */
	s = parse(
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n2\r\nok\r\n0\r\n\r\n");
	CHECK(s.r == HTTP_PARSE_MORE && s.framing == HTTP_FRAMING_CLOSE && !s.keep);
	s = parse(
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n");
	CHECK(s.r == HTTP_PARSE_DONE && s.framing == HTTP_FRAMING_CHUNKED);

	/* the close in the middle of a body is an error, not a short body */
	s = parse_opt("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", 0, 1);
	CHECK(s.r == HTTP_PARSE_ERROR && body_is(&s, "short"));
	s = parse_opt("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", 0, 1);
	CHECK(s.r == HTTP_PARSE_ERROR);
	/* a head cut short */
	s = parse_opt("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n", 0, 1);
	CHECK(s.r == HTTP_PARSE_ERROR && s.status == 0);

	/* a body limit stops it */
	memset(&s, 0, sizeof s);
	s.limit = 3;
	http_parse_init(&parser, 0);
	const char *big = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
	size_t used;
	CHECK(http_parse_feed(&parser, big, strlen(big), &used, collect, &s) == HTTP_PARSE_STOPPED);
	CHECK(http_parse_feed(&parser, "x", 1, &used, collect, &s) == HTTP_PARSE_STOPPED && !used);

	/* final results stay: nothing consumed, nothing delivered */
	s = parse("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
	CHECK(http_parse_feed(&parser, "abc", 3, &used, collect, &s) == HTTP_PARSE_DONE && !used &&
	      s.body_len == 0);
	CHECK(http_parse_close(&parser) == HTTP_PARSE_DONE);
	s = parse("HTTP/1.1 2x0 OK\r\n\r\n");
	CHECK(s.r == HTTP_PARSE_ERROR);
	CHECK(http_parse_feed(&parser, "HTTP/1.1 200 OK\r\n\r\n", 19, &used, collect, &s) ==
		      HTTP_PARSE_ERROR &&
	      !used);
}

static void test_malformed(void)
{
	static const char *const bad[] = {
		/* Content-Length */
		"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello",
		"HTTP/1.1 200 OK\r\nContent-Length: 18446744073709551616\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 18446744073709551615\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 5abc\r\n\r\nhello",
		"HTTP/1.1 200 OK\r\nContent-Length: 0x5\r\n\r\nhello",
		"HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 2, 3\r\n\r\nok",
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
		/* chunk sizes */
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffffff\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n 5\r\nhello\r\n0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5x\r\nhello\r\n0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXY0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloX\n0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\rhello\r\n0\r\n\r\n",
		/* status lines */
		"HTTP/1.1 2000 OK\r\n\r\n",
		"HTTP/1.1 20 OK\r\n\r\n",
		"HTTP/1.1 099 Low\r\n\r\n",
		"HTTP/2 200 OK\r\n\r\n",
		"HTTP/1.1 200OK\r\n\r\n",
		"http/1.1 200 OK\r\n\r\n",
		"ICY 200 OK\r\n\r\n",
		/* header lines */
		"HTTP/1.1 200 OK\r\nContent-Length : 5\r\n\r\nhello",
		"HTTP/1.1 200 OK\r\nno colon here\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 200 OK\r\n: empty name\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 200 OK\r\n Content-Length: 0\r\n\r\n", /* fold after the status */
		"HTTP/1.1 200 OK\rContent-Length: 0\r\n\r\n",    /* bare CR */
		"HTTP/1.1 200 OK\r\nX: a\rb\r\nContent-Length: 0\r\n\r\n",
	};
	for (size_t k = 0; k < sizeof bad / sizeof *bad; k++) {
		struct res s = parse_opt(bad[k], 0, 1);
		if (s.r != HTTP_PARSE_ERROR)
			fprintf(stderr, "not an error: case %zu\n", k);
		CHECK(s.r == HTTP_PARSE_ERROR);
	}

	/* a NUL in the head (strings would stop at it and miss what follows) */
	static const char nul_head[] = "HTTP/1.1 200 OK\r\nX: a\0\r\nContent-Length: 2\r\n\r\nok";
	struct res s = run(nul_head, sizeof nul_head - 1, 0, 0, 1);
	CHECK(s.r == HTTP_PARSE_ERROR);
	s = run(nul_head, sizeof nul_head - 1, 0, 1, 1);
	CHECK(s.r == HTTP_PARSE_ERROR);

	/* a head or trailers past HTTP_HEAD_MAX */
	static char huge[HTTP_HEAD_MAX + 200];
	strcpy(huge, "HTTP/1.1 200 OK\r\nX: ");
	memset(huge + strlen(huge), 'a', HTTP_HEAD_MAX);
	strcpy(huge + HTTP_HEAD_MAX + 20, "\r\nContent-Length: 0\r\n\r\n");
	s = parse(huge);
	CHECK(s.r == HTTP_PARSE_ERROR);
	char *t = huge;
	t += sprintf(t, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n");
	while (t - huge < HTTP_HEAD_MAX + 50)
		t += sprintf(t, "X-T: 1\r\n");
	strcpy(t, "\r\n");
	s = parse(huge);
	CHECK(s.r == HTTP_PARSE_ERROR);

	/* a 15-digit chunk size is allowed (and the body is then short) */
	s = parse_opt("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
		      "00000fffffffffffffff\r\nabc",
		      0, 1);
	CHECK(s.r == HTTP_PARSE_ERROR && body_is(&s, "abc"));
	CHECK(parser.declared == 0xfffffffffffffffULL);
}

int main(void)
{
	test_valid();
	test_no_body();
	test_framing();
	test_malformed();
	return CHECK_REPORT("http_parse");
}
