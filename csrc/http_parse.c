/* An incremental HTTP/1.1 response parser; see http_parse.h.
 *
 * It reads what a server sends on a connection that may carry the next
 * request, so it is strict where a lax reading could shift the response
 * boundary: Content-Length is digits only (no sign, no overflow; a list of
 * one repeated value is accepted), a chunk size is hex digits only (at most
 * 15 significant), a chunk ends with exactly CRLF (or LF), NUL bytes, bare
 * CRs and header lines without a "name:" are errors. Lines may end with LF
 * alone; an obs-fold (a header line starting with a space or tab) continues
 * the line before it, as RFC 9112 asks of a user agent.
 */
#include "http_parse.h"

#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum phase {
	P_HEAD,       /* status line and headers */
	P_BODY_LEN,   /* `left` bytes of body */
	P_BODY_CLOSE, /* body up to the close */
	P_CHUNK_SIZE, /* a chunk-size line */
	P_CHUNK_DATA, /* `left` bytes of a chunk */
	P_CHUNK_END,  /* the CRLF after a chunk */
	P_TRAILER,    /* trailer lines up to an empty one */
};

#define LENGTH_MAX       (1ULL << 62) /* a larger Content-Length is an error */
#define CHUNK_DIGITS_MAX 15           /* significant hex digits of a chunk size */

void http_parse_init(struct http_parser *p, int head_only)
{
	p->head_done = 0;
	p->status = 0;
	p->keep = 0;
	p->retry_after = -1;
	p->framing = HTTP_FRAMING_NONE;
	p->declared = 0;
	p->body = 0;
	p->head_only = head_only;
	p->phase = P_HEAD;
	p->final = HTTP_PARSE_MORE;
	p->left = 0;
	p->line_len = 0;
	p->trailer_len = 0;
	p->line[0] = '\0';
}

/* ---- the head ---- */

static int is_ows(char ch)
{
	return ch == ' ' || ch == '\t';
}

static const char *skip_ows(const char *s)
{
	while (is_ows(*s))
		s++;
	return s;
}

/* The value of a header line "name: value" if its name is `name`. */
static const char *header_value(const char *line, const char *name)
{
	size_t n = strlen(name);
	if (strncasecmp(line, name, n) || line[n] != ':')
		return NULL;
	return skip_ows(line + n + 1);
}

static int has_token(const char *value, const char *token)
{
	size_t n = strlen(token);
	for (const char *p = value; *p;) {
		while (*p == ' ' || *p == '\t' || *p == ',')
			p++;
		if (!strncasecmp(p, token, n) &&
		    (!p[n] || p[n] == ',' || p[n] == ' ' || p[n] == '\t' || p[n] == ';'))
			return 1;
		while (*p && *p != ',')
			p++;
	}
	return 0;
}

/* Is the last coding of a Transfer-Encoding value "chunked"? */
static int chunked_is_last(const char *value)
{
	const char *last = NULL;
	for (const char *p = value; *p;) {
		while (*p == ' ' || *p == '\t' || *p == ',')
			p++;
		if (*p)
			last = p;
		while (*p && *p != ',')
			p++;
	}
	if (!last || strncasecmp(last, "chunked", 7))
		return 0;
	last = skip_ows(last + 7);
	return !*last || *last == ',';
}

/* Content-Length: 1*DIGIT, or a list of one value repeated ("5, 5").
 * Returns 0 and the value, or -1. */
static int parse_length(const char *v, unsigned long long *out)
{
	int have = 0;
	unsigned long long value = 0;
	while (1) {
		v = skip_ows(v);
		if (!isdigit((unsigned char)*v))
			return -1;
		unsigned long long n = 0;
		for (; isdigit((unsigned char)*v); v++) {
			if (n > LENGTH_MAX / 10) /* before n * 10 can wrap */
				return -1;
			n = n * 10 + (unsigned)(*v - '0');
		}
		if (have && n != value)
			return -1;
		value = n;
		have = 1;
		v = skip_ows(v);
		if (!*v)
			break;
		if (*v++ != ',')
			return -1;
	}
	*out = value;
	return 0;
}

/* Checks the raw head in p->line (NUL, bare CR), joins obs-folds and splits
 * it into NUL-terminated lines in place. Returns the number of lines or -1. */
static int split_head(struct http_parser *p, char **lines, int max)
{
	char *s = p->line;
	size_t len = p->line_len;
	size_t first_end = 0;
	for (size_t i = 0; i < len; i++) {
		if (s[i] == '\0' || (s[i] == '\r' && (i + 1 >= len || s[i + 1] != '\n')))
			return -1;
		if (s[i] != '\n')
			continue;
		if (!first_end) {
			first_end = i;
			if (i + 1 < len && is_ows(s[i + 1]))
				return -1; /* whitespace before the first header */
		} else if (i + 1 < len && is_ows(s[i + 1])) {
			s[i] = ' '; /* obs-fold: CRLF and the indent become spaces */
			if (s[i - 1] == '\r')
				s[i - 1] = ' ';
		}
	}
	int n = 0;
	for (char *line = s; *line;) {
		char *nl = strchr(line, '\n');
		if (!nl)
			return -1;
		*nl = '\0';
		if (nl > line && nl[-1] == '\r')
			nl[-1] = '\0';
		if (!*line) /* the empty line that ends the head */
			break;
		if (n == max)
			return -1;
		lines[n++] = line;
		line = nl + 1;
	}
	return n;
}

/* Parses the status line and headers in p->line. Returns 0, 1 for an
 * interim (1xx) response to skip, or -1. */
static int parse_head(struct http_parser *p)
{
	char *lines[512];
	int count = split_head(p, lines, (int)(sizeof lines / sizeof *lines));
	if (count < 1)
		return -1;
	/* "HTTP/1.x SSS reason", the reason may be missing */
	const char *line = lines[0];
	if (strncmp(line, "HTTP/1.", 7) || !isdigit((unsigned char)line[7]) || line[8] != ' ' ||
	    !isdigit((unsigned char)line[9]) || !isdigit((unsigned char)line[10]) ||
	    !isdigit((unsigned char)line[11]) || (line[12] && line[12] != ' '))
		return -1;
	unsigned minor = (unsigned)(line[7] - '0');
	unsigned status =
		(unsigned)((line[9] - '0') * 100 + (line[10] - '0') * 10 + (line[11] - '0'));
	if (status < 100)
		return -1;
	if (status < 200)
		return 1;
	int have_length = 0, have_te = 0, chunked = 0, close = minor == 0;
	unsigned long long length = 0;
	double retry_after = -1;
	for (int k = 1; k < count; k++) {
		line = lines[k];
		size_t name = strcspn(line, ": \t");
		if (!name || line[name] != ':')
			return -1; /* no "name:" */
		const char *v;
		if ((v = header_value(line, "content-length"))) {
			unsigned long long n;
			if (parse_length(v, &n) || (have_length && n != length))
				return -1;
			length = n;
			have_length = 1;
		} else if ((v = header_value(line, "transfer-encoding"))) {
			have_te = 1;
			chunked = chunked_is_last(v); /* the last header's last coding counts */
		} else if ((v = header_value(line, "connection"))) {
			if (has_token(v, "close"))
				close = 1;
		} else if ((v = header_value(line, "retry-after"))) {
			char *rest;
			double n = strtod(v, &rest);
			/* an HTTP date (or nonsense): wait a bit */
			retry_after = rest != v && isfinite(n) && n >= 0 ? n : 1;
		}
	}
	p->status = status;
	p->retry_after = retry_after;
	p->keep = !close;
	p->head_done = 1;
	if (p->head_only || status == 204 || status == 304) {
		p->framing = HTTP_FRAMING_NONE;
		/* A 204 cannot announce a body (RFC 9110, 8.6): one that does
		 * may send it too, late, where the next answer should be. */
		if (status == 204 && !p->head_only && (have_te || (have_length && length)))
			p->keep = 0;
	} else if (have_te) {
		/* Transfer-Encoding wins over Content-Length; with both, the
		 * connection is not reused (RFC 9112, 6.3). */
		if (have_length)
			p->keep = 0;
		if (chunked) {
			p->framing = HTTP_FRAMING_CHUNKED;
			p->phase = P_CHUNK_SIZE;
		} else { /* an encoding we do not know: read to the close */
			p->framing = HTTP_FRAMING_CLOSE;
			p->phase = P_BODY_CLOSE;
			p->keep = 0;
		}
	} else if (have_length) {
		p->framing = HTTP_FRAMING_LENGTH;
		p->phase = P_BODY_LEN;
		p->left = length;
		p->declared = length;
	} else {
		p->framing = HTTP_FRAMING_CLOSE;
		p->phase = P_BODY_CLOSE;
		p->keep = 0;
	}
	return 0;
}

/* ---- lines ---- */

/* Collects one line into p->line; returns 1 when it is complete (with its
 * line end), 0 for more, -1 if too long. Consumes from *data. until_blank:
 * collect lines up to an empty one (the head). */
static int take_line(struct http_parser *p, const char **data, size_t *len, int until_blank)
{
	while (*len) {
		const char *nl = memchr(*data, '\n', *len);
		size_t n = nl ? (size_t)(nl - *data) + 1 : *len;
		if (p->line_len + n + 1 >= sizeof p->line)
			return -1;
		memcpy(p->line + p->line_len, *data, n);
		p->line_len += n;
		p->line[p->line_len] = '\0';
		*data += n;
		*len -= n;
		if (!nl)
			return 0;
		if (!until_blank)
			return 1;
		/* the head ends with an empty line */
		const char *l = p->line;
		size_t ll = p->line_len;
		if (ll == 1 || (ll == 2 && l[0] == '\r') || l[ll - 2] == '\n' ||
		    (ll >= 3 && !memcmp(l + ll - 3, "\n\r\n", 3)))
			return 1;
	}
	return 0;
}

/* An empty line: LF or CRLF. */
static int line_is_empty(const struct http_parser *p)
{
	return p->line_len == 1 || (p->line_len == 2 && p->line[0] == '\r');
}

/* chunk-size [ BWS ";" chunk-ext ] CRLF. Returns 0 and the size, or -1. */
static int parse_chunk_size(const struct http_parser *p, unsigned long long *out)
{
	const char *s = p->line, *end = p->line + p->line_len - 1; /* at the LF */
	if (end > s && end[-1] == '\r')
		end--;
	if (memchr(s, '\0', (size_t)(end - s)) || memchr(s, '\r', (size_t)(end - s)))
		return -1;
	unsigned long long size = 0;
	int digits = 0, significant = 0;
	for (; s < end && isxdigit((unsigned char)*s); s++, digits++) {
		unsigned d = isdigit((unsigned char)*s)
				     ? (unsigned)(*s - '0')
				     : (unsigned)(tolower((unsigned char)*s) - 'a' + 10);
		if (size || d)
			significant++;
		if (significant > CHUNK_DIGITS_MAX)
			return -1;
		size = size * 16 + d;
	}
	if (!digits)
		return -1;
	while (s < end && is_ows(*s))
		s++;
	if (s < end && *s != ';')
		return -1;
	*out = size;
	return 0;
}

/* ---- feeding ---- */

static enum http_parse_result deliver(struct http_parser *p, const char **data, size_t *len,
				      http_body_fn on_body, void *ud)
{
	size_t n = *len < p->left ? *len : (size_t)p->left;
	if (n && on_body(ud, *data, n))
		return HTTP_PARSE_STOPPED;
	*data += n;
	*len -= n;
	p->left -= n;
	p->body += n;
	return HTTP_PARSE_MORE;
}

static enum http_parse_result step(struct http_parser *p, const char **data, size_t *len,
				   http_body_fn on_body, void *ud)
{
	while (1) {
		int r;
		switch (p->phase) {
		case P_HEAD:
			r = take_line(p, data, len, 1);
			if (r <= 0)
				return r < 0 ? HTTP_PARSE_ERROR : HTTP_PARSE_MORE;
			if (line_is_empty(p)) { /* blank lines before a status line */
				p->line_len = 0;
				continue;
			}
			r = parse_head(p);
			p->line_len = 0;
			if (r < 0)
				return HTTP_PARSE_ERROR;
			if (r == 0 && p->framing == HTTP_FRAMING_NONE)
				return HTTP_PARSE_DONE;
			continue; /* 1xx: the real answer follows */
		case P_BODY_LEN:
			if (deliver(p, data, len, on_body, ud) != HTTP_PARSE_MORE)
				return HTTP_PARSE_STOPPED;
			return p->left ? HTTP_PARSE_MORE : HTTP_PARSE_DONE;
		case P_BODY_CLOSE:
			if (*len && on_body(ud, *data, *len))
				return HTTP_PARSE_STOPPED;
			p->body += *len;
			*data += *len;
			*len = 0;
			return HTTP_PARSE_MORE;
		case P_CHUNK_SIZE:
			r = take_line(p, data, len, 0);
			if (r <= 0)
				return r < 0 ? HTTP_PARSE_ERROR : HTTP_PARSE_MORE;
			if (parse_chunk_size(p, &p->left))
				return HTTP_PARSE_ERROR;
			p->line_len = 0;
			p->declared += p->left;
			p->phase = p->left ? P_CHUNK_DATA : P_TRAILER;
			continue;
		case P_CHUNK_DATA:
			if (deliver(p, data, len, on_body, ud) != HTTP_PARSE_MORE)
				return HTTP_PARSE_STOPPED;
			if (p->left)
				return HTTP_PARSE_MORE;
			p->phase = P_CHUNK_END;
			continue;
		case P_CHUNK_END:
			r = take_line(p, data, len, 0);
			if (r <= 0)
				return r < 0 ? HTTP_PARSE_ERROR : HTTP_PARSE_MORE;
			if (!line_is_empty(p))
				return HTTP_PARSE_ERROR;
			p->line_len = 0;
			p->phase = P_CHUNK_SIZE;
			continue;
		case P_TRAILER:
		default:
			r = take_line(p, data, len, 0);
			if (r <= 0)
				return r < 0 ? HTTP_PARSE_ERROR : HTTP_PARSE_MORE;
			p->trailer_len += p->line_len;
			if (p->trailer_len >= HTTP_HEAD_MAX)
				return HTTP_PARSE_ERROR;
			if (line_is_empty(p))
				return HTTP_PARSE_DONE;
			p->line_len = 0;
			continue;
		}
	}
}

enum http_parse_result http_parse_feed(struct http_parser *p, const char *data, size_t len,
				       size_t *used, http_body_fn on_body, void *ud)
{
	*used = 0;
	if (p->final != HTTP_PARSE_MORE)
		return p->final;
	const char *start = data;
	enum http_parse_result r = step(p, &data, &len, on_body, ud);
	*used = (size_t)(data - start);
	p->final = r;
	return r;
}

enum http_parse_result http_parse_close(struct http_parser *p)
{
	if (p->final == HTTP_PARSE_MORE)
		p->final = p->phase == P_BODY_CLOSE ? HTTP_PARSE_DONE : HTTP_PARSE_ERROR;
	return p->final;
}
