/*
 * An incremental parser for one HTTP/1.1 response, as a client reads it
 * (csrc/http.c, on a pooled connection). No I/O: feed it the bytes as they
 * come, in pieces of any size. Once the head is parsed, `status`, `keep`,
 * `retry_after` and the framing are set; body bytes go to a callback as
 * they arrive; the result says when the response is complete (and how many
 * of the bytes fed belong to it) or malformed. DONE and ERROR are final:
 * later feeds consume nothing and deliver nothing.
 *
 * Interim (1xx) responses are skipped. A response to HEAD, a 204 and a 304
 * have no body whatever their headers say. Transfer-Encoding wins over
 * Content-Length (and then the connection is not reused); a body with
 * neither, or with an encoding other than a final "chunked", runs to the
 * close (http_parse_close).
 */
#ifndef AYLA_HTTP_PARSE_H
#define AYLA_HTTP_PARSE_H

#include <stddef.h>

#define HTTP_HEAD_MAX 16384 /* bytes of a status line and headers, or of trailers */

enum http_parse_result {
	HTTP_PARSE_MORE,    /* needs more bytes */
	HTTP_PARSE_DONE,    /* the response is complete */
	HTTP_PARSE_ERROR,   /* not a valid response */
	HTTP_PARSE_STOPPED, /* the body callback said stop */
};

enum http_framing {
	HTTP_FRAMING_NONE,    /* no body (HEAD, 204, 304) */
	HTTP_FRAMING_LENGTH,  /* Content-Length */
	HTTP_FRAMING_CHUNKED, /* Transfer-Encoding: chunked */
	HTTP_FRAMING_CLOSE,   /* up to the close */
};

/* Body bytes as they arrive; nonzero stops the parser (HTTP_PARSE_STOPPED). */
typedef int (*http_body_fn)(void *ud, const char *data, size_t len);

struct http_parser {
	/* set once the (final) head is parsed */
	int head_done;
	unsigned status;
	int keep;           /* the connection may carry another request after this */
	double retry_after; /* seconds from Retry-After, or -1 */
	enum http_framing framing;
	unsigned long long
		declared;        /* body bytes announced so far: Content-Length or chunk sizes */
	unsigned long long body; /* body bytes delivered */

	/* private */
	int head_only;
	int phase;
	enum http_parse_result final; /* MORE until DONE, ERROR or STOPPED */
	unsigned long long left;
	size_t line_len, trailer_len;
	char line[HTTP_HEAD_MAX];
};

/* Ready for the response to a request; head_only for HEAD (no body). */
void http_parse_init(struct http_parser *p, int head_only);
/* Feeds len bytes; *used says how many belong to this response (all of them
 * unless DONE, when the rest follow it on the connection). */
enum http_parse_result http_parse_feed(struct http_parser *p, const char *data, size_t len,
				       size_t *used, http_body_fn on_body, void *ud);
/* The connection closed: DONE if that ends the body (HTTP_FRAMING_CLOSE),
 * ERROR if the response was incomplete (DONE/ERROR already reported stay). */
enum http_parse_result http_parse_close(struct http_parser *p);

#endif
