/* Unit tests for the DSS frame parser and routing-key scanner (csrc/frame.c). */
#include "frame.h"

#include "check.h"

#include <stdio.h>
#include <string.h>

#define MAX_RECS 8
struct seen {
	size_t n;
	struct dss_record rec[MAX_RECS];
};

static void collect(const struct dss_record *rec, void *ud)
{
	struct seen *s = ud;
	if (s->n < MAX_RECS)
		s->rec[s->n] = *rec;
	s->n++;
}

static struct seen parse(const char *msg)
{
	struct seen s = {0};
	size_t found = dss_frame_parse(msg, strlen(msg), collect, &s);
	CHECK(found == s.n);
	return s;
}

static int json_is(const struct dss_record *r, const char *want)
{
	return r->kind == DSS_EVENT && r->json_len == strlen(want) &&
	       memcmp(r->json, want, r->json_len) == 0;
}

static void test_heartbeat_and_keepalive(void)
{
	struct seen s = parse("1|Z");
	CHECK(s.n == 1 && s.rec[0].kind == DSS_HEARTBEAT);
	s = parse("1|X");
	CHECK(s.n == 1 && s.rec[0].kind == DSS_KEEPALIVE);
	/* Only the exact text is a heartbeat: never detect one by substring. */
	s = parse("1|Zz");
	CHECK(s.n == 1 && s.rec[0].kind == DSS_MALFORMED && s.rec[0].reason == DSS_BAD_NOT_OBJECT);
	s = parse("11|{\"v\":\"1|Z\"}");
	CHECK(s.n == 1 && json_is(&s.rec[0], "{\"v\":\"1|Z\"}") && !s.rec[0].len_mismatch);
}

static void test_event_and_len(void)
{
	struct seen s = parse("9|{\"a\":\"b\"}");
	CHECK(s.n == 1 && json_is(&s.rec[0], "{\"a\":\"b\"}") && !s.rec[0].len_mismatch);
	/* A '|' inside a string value must not split the payload. */
	s = parse("13|{\"a\":\"x|y|z\"}");
	CHECK(s.n == 1 && json_is(&s.rec[0], "{\"a\":\"x|y|z\"}"));
	/* LEN counted in characters for non-ASCII text is accepted. */
	s = parse("9|{\"a\":\"\xc3\xa9\"}");
	CHECK(s.n == 1 && s.rec[0].kind == DSS_EVENT && !s.rec[0].len_mismatch);
	s = parse("10|{\"a\":\"\xc3\xa9\"}");
	CHECK(s.n == 1 && s.rec[0].kind == DSS_EVENT && !s.rec[0].len_mismatch);
	/* A wrong LEN is flagged but the event is still delivered. */
	s = parse("481|{\"a\":1}");
	CHECK(s.n == 1 && json_is(&s.rec[0], "{\"a\":1}") && s.rec[0].len_mismatch);
	/* Blanks around the object (pretty-printed JSON) are tolerated. */
	s = parse("11|{\n \"a\":1\n}\n");
	CHECK(s.n == 1 && s.rec[0].kind == DSS_EVENT && !s.rec[0].len_mismatch);
	/* Escaped quotes and braces inside strings. */
	s = parse("17|{\"a\":\"\\\"}{\\\\\"}");
	CHECK(s.n == 1 && json_is(&s.rec[0], "{\"a\":\"\\\"}{\\\\\"}"));
}

static void test_back_to_back(void)
{
	struct seen s = parse("7|{\"a\":1}7|{\"a\":2}7|{\"a\":3}");
	CHECK(s.n == 3);
	CHECK(json_is(&s.rec[0], "{\"a\":1}") && json_is(&s.rec[1], "{\"a\":2}") &&
	      json_is(&s.rec[2], "{\"a\":3}"));
	s = parse("7|{\"a\":1}\n7|{\"a\":2}");
	CHECK(s.n == 2 && json_is(&s.rec[1], "{\"a\":2}"));
}

static void test_malformed(void)
{
	static const struct {
		const char *msg;
		enum dss_malformed reason;
	} cases[] = {
		{"", DSS_BAD_NO_SEPARATOR},
		{"hello", DSS_BAD_NO_SEPARATOR},
		{"481", DSS_BAD_NO_SEPARATOR},
		{"|{}", DSS_BAD_PREFIX},
		{"4a|{}", DSS_BAD_PREFIX},
		{"-2|{}", DSS_BAD_PREFIX},
		{"1234567890123456789012|{}", DSS_BAD_PREFIX},
		{"5|", DSS_BAD_EMPTY},
		{"5|   ", DSS_BAD_EMPTY},
		{"5|[1,2]", DSS_BAD_NOT_OBJECT},
		{"5|\"str\"", DSS_BAD_NOT_OBJECT},
		{"9|{\"a\":\"b\"", DSS_BAD_TRUNCATED},
		{"9|{\"a\":\"b}", DSS_BAD_TRUNCATED},
		/* found by fuzzing: fuzz/regressions/frame/event-closed-by-bracket */
		{"7|{\"a\":1]", DSS_BAD_TRUNCATED},
	};
	for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
		struct seen s = parse(cases[k].msg);
		CHECK(s.n == 1 && s.rec[0].kind == DSS_MALFORMED);
		if (s.rec[0].reason != cases[k].reason)
			fprintf(stderr, "  case \"%s\": got %s\n", cases[k].msg,
				dss_malformed_name(s.rec[0].reason));
		CHECK(s.rec[0].reason == cases[k].reason);
	}
	/* An event followed by junk: the event survives, the junk is reported. */
	struct seen s = parse("7|{\"a\":1}garbage");
	CHECK(s.n == 2 && json_is(&s.rec[0], "{\"a\":1}"));
	CHECK(s.rec[1].kind == DSS_MALFORMED && s.rec[1].reason == DSS_BAD_TRAILING);
	CHECK(strcmp(dss_malformed_name(DSS_BAD_TRUNCATED), "truncated") == 0);
	CHECK(strcmp(dss_malformed_name(DSS_BAD_COUNT), "unknown") == 0);
}

static const char seed_datapoint[] =
	"{\"seq\": \"13\", \"metadata\": {\"oem_id\": \"0dfc7900\", \"oem_model\": \"linuxevb\","
	" \"dsn\": \"AC000W005606115\", \"property_name\": \"Blue_LED\", \"display_name\":"
	" \"Blue_LED\", \"base_type\": \"boolean\", \"resource_tags\": [], \"event_type\":"
	" \"datapoint\"}, \"datapoint\": {\"id\": \"1ff9b91c\", \"value\": 0, \"metadata\": {}}}";

static int lookup_is(const char *json, const char *a, const char *b, const char *want)
{
	const char *path[] = {a, b};
	const char *v;
	size_t vlen;
	if (!dss_json_lookup(json, strlen(json), path, b ? 2 : 1, &v, &vlen))
		return want == NULL;
	return want && vlen == strlen(want) && memcmp(v, want, vlen) == 0;
}

static void test_lookup(void)
{
	CHECK(lookup_is(seed_datapoint, "metadata", "event_type", "datapoint"));
	CHECK(lookup_is(seed_datapoint, "metadata", "dsn", "AC000W005606115"));
	CHECK(lookup_is(seed_datapoint, "metadata", "resource_tags", "[]"));
	CHECK(lookup_is(seed_datapoint, "datapoint", "value", "0"));
	CHECK(lookup_is(seed_datapoint, "seq", NULL, "13"));
	CHECK(lookup_is(seed_datapoint, "metadata", "nope", NULL));
	CHECK(lookup_is(seed_datapoint, "nope", NULL, NULL));
	/* A key inside a nested object is not a top-level key. */
	CHECK(lookup_is("{\"a\":{\"seq\":\"1\"}}", "seq", NULL, NULL));
	/* A key-like string inside a value is not a key. */
	CHECK(lookup_is("{\"x\":\"\\\"seq\\\":\",\"seq\":\"7\"}", "seq", NULL, "7"));
	CHECK(lookup_is("{\"a\":", "a", NULL, NULL));
	CHECK(lookup_is("not json", "a", NULL, NULL));

	uint64_t seq = 0;
	CHECK(dss_json_seq(seed_datapoint, strlen(seed_datapoint), &seq) && seq == 13);
	CHECK(dss_json_seq("{\"seq\":42}", 10, &seq) && seq == 42);
	CHECK(!dss_json_seq("{\"seq\":\"4x\"}", 12, &seq));
	CHECK(!dss_json_seq("{\"seq\":\"\"}", 10, &seq));
	CHECK(!dss_json_seq("{}", 2, &seq));
}

int main(void)
{
	test_heartbeat_and_keepalive();
	test_event_and_len();
	test_back_to_back();
	test_malformed();
	test_lookup();
	return CHECK_REPORT("frame");
}
