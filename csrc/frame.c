/* DSS text-message parser; see frame.h for the grammar. */
#include "frame.h"

#include <string.h>

static const char *const malformed_names[DSS_BAD_COUNT] = {
	[DSS_BAD_NONE] = "none",
	[DSS_BAD_NO_SEPARATOR] = "no_separator",
	[DSS_BAD_PREFIX] = "bad_prefix",
	[DSS_BAD_EMPTY] = "empty_payload",
	[DSS_BAD_NOT_OBJECT] = "not_object",
	[DSS_BAD_TRUNCATED] = "truncated",
	[DSS_BAD_TRAILING] = "trailing_data",
};

const char *dss_malformed_name(enum dss_malformed reason)
{
	if (reason < 0 || reason >= DSS_BAD_COUNT)
		return "unknown";
	return malformed_names[reason];
}

static int is_digit(char c)
{
	return c >= '0' && c <= '9';
}
static int is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static size_t skip_space(const char *s, size_t i, size_t n)
{
	while (i < n && is_space(s[i]))
		i++;
	return i;
}

/* s[i] is '"'; returns the index after the closing quote, or n if unterminated. */
static size_t skip_string(const char *s, size_t i, size_t n)
{
	for (i++; i < n; i++) {
		if (s[i] == '\\')
			i++;
		else if (s[i] == '"')
			return i + 1;
	}
	return n + 1;
}

/*
 * Returns the index after the JSON value starting at s[i], or n + 1 when the
 * value does not end inside the text. Containers are matched by bracket depth
 * outside strings; scalars run to the next delimiter. It checks structure
 * only as far as routing needs: lua-cjson validates the whole event later.
 */
static size_t skip_value(const char *s, size_t i, size_t n)
{
	if (i >= n)
		return n + 1;
	if (s[i] == '"')
		return skip_string(s, i, n);
	if (s[i] == '{' || s[i] == '[') {
		/* The outer pair must match, so "{...]" is not taken for an object. */
		char close = s[i] == '{' ? '}' : ']';
		size_t depth = 0;
		while (i < n) {
			char c = s[i];
			if (c == '"') {
				i = skip_string(s, i, n);
				continue;
			}
			if (c == '{' || c == '[')
				depth++;
			else if ((c == '}' || c == ']') && --depth == 0)
				return c == close ? i + 1 : n + 1;
			i++;
		}
		return n + 1;
	}
	while (i < n && s[i] != ',' && s[i] != '}' && s[i] != ']' && !is_space(s[i]))
		i++;
	return i;
}

static size_t utf8_chars(const char *s, size_t n)
{
	size_t chars = 0;
	for (size_t i = 0; i < n; i++)
		chars += ((unsigned char)s[i] & 0xC0) != 0x80;
	return chars;
}

static void emit_bad(dss_record_fn fn, void *ud, enum dss_malformed reason)
{
	struct dss_record rec = {.kind = DSS_MALFORMED, .reason = reason};
	fn(&rec, ud);
}

/* Is s[i..n) the start of another "LEN|" record? */
static int starts_record(const char *s, size_t i, size_t n)
{
	size_t j = i;
	while (j < n && is_digit(s[j]))
		j++;
	return j > i && j < n && s[j] == '|';
}

size_t dss_frame_parse(const char *msg, size_t len, dss_record_fn fn, void *ud)
{
	if (len == 3 && msg[0] == '1' && msg[1] == '|' && (msg[2] == 'Z' || msg[2] == 'X')) {
		struct dss_record rec = {.kind = msg[2] == 'Z' ? DSS_HEARTBEAT : DSS_KEEPALIVE};
		fn(&rec, ud);
		return 1;
	}

	size_t found = 0, i = 0;
	do {
		/* LEN: decimal digits, at most 18 so it cannot overflow. */
		size_t start = i;
		uint64_t declared = 0;
		while (i < len && is_digit(msg[i]) && i - start < 18)
			declared = declared * 10 + (uint64_t)(msg[i++] - '0');
		if (i == len || msg[i] != '|') {
			int has_bar = memchr(msg + start, '|', len - start) != NULL;
			emit_bad(fn, ud, has_bar ? DSS_BAD_PREFIX : DSS_BAD_NO_SEPARATOR);
			return found + 1;
		}
		if (i == start) {
			emit_bad(fn, ud, DSS_BAD_PREFIX);
			return found + 1;
		}
		i++; /* the '|' */

		size_t body = i;
		if (body == len) {
			emit_bad(fn, ud, DSS_BAD_EMPTY);
			return found + 1;
		}
		size_t obj = skip_space(msg, body, len);
		if (obj == len || msg[obj] != '{') {
			emit_bad(fn, ud, obj == len ? DSS_BAD_EMPTY : DSS_BAD_NOT_OBJECT);
			return found + 1;
		}
		size_t end = skip_value(msg, obj, len);
		if (end > len) {
			emit_bad(fn, ud, DSS_BAD_TRUNCATED);
			return found + 1;
		}
		size_t next = skip_space(msg, end, len);

		/* LEN may count the object alone or with its surrounding blanks,
		 * in bytes or in characters: any of those four is a match. */
		size_t obj_bytes = end - obj, rec_bytes = next - body;
		int matches = declared == obj_bytes || declared == rec_bytes;
		if (!matches && (declared < obj_bytes || declared < rec_bytes))
			matches = declared == utf8_chars(msg + obj, obj_bytes) ||
				  declared == utf8_chars(msg + body, rec_bytes);

		struct dss_record rec = {
			.kind = DSS_EVENT,
			.json = msg + obj,
			.json_len = obj_bytes,
			.len_mismatch = !matches,
		};
		fn(&rec, ud);
		found++;

		i = next;
		if (i < len && !starts_record(msg, i, len)) {
			emit_bad(fn, ud, DSS_BAD_TRAILING);
			return found + 1;
		}
	} while (i < len);
	return found;
}

/* Finds key (not NUL-terminated in the text) among the members of the object
 * at s[i]; returns the index of its value, or n + 1. */
static size_t find_member(const char *s, size_t i, size_t n, const char *key)
{
	size_t klen = strlen(key);
	i = skip_space(s, i, n);
	if (i >= n || s[i] != '{')
		return n + 1;
	i++;
	for (;;) {
		i = skip_space(s, i, n);
		if (i >= n || s[i] != '"')
			return n + 1;
		size_t kstart = i + 1, kend = skip_string(s, i, n);
		if (kend > n)
			return n + 1;
		i = skip_space(s, kend, n);
		if (i >= n || s[i] != ':')
			return n + 1;
		i = skip_space(s, i + 1, n);
		if (kend - 1 - kstart == klen && memcmp(s + kstart, key, klen) == 0)
			return i;
		i = skip_space(s, skip_value(s, i, n), n);
		if (i >= n || s[i] != ',')
			return n + 1;
		i++;
	}
}

int dss_json_lookup(const char *json, size_t len, const char *const *path, size_t depth,
		    const char **val, size_t *val_len)
{
	size_t i = 0;
	for (size_t d = 0; d < depth; d++) {
		i = find_member(json, i, len, path[d]);
		if (i > len)
			return 0;
	}
	size_t end = skip_value(json, i, len);
	if (end > len || end == i)
		return 0;
	if (json[i] == '"') {
		*val = json + i + 1;
		*val_len = end - i - 2;
	} else {
		*val = json + i;
		*val_len = end - i;
	}
	return 1;
}

int dss_json_seq(const char *json, size_t len, uint64_t *seq)
{
	static const char *const path[] = {"seq"};
	const char *v;
	size_t vlen;
	if (!dss_json_lookup(json, len, path, 1, &v, &vlen) || vlen == 0 || vlen > 19)
		return 0;
	uint64_t n = 0;
	for (size_t k = 0; k < vlen; k++) {
		if (!is_digit(v[k]))
			return 0;
		n = n * 10 + (uint64_t)(v[k] - '0');
	}
	*seq = n;
	return 1;
}
