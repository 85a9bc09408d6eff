/*
 * DSS text-message parser: pure C, no libwebsockets, no Lua.
 *
 * A DSS message is one of
 *   "1|Z"          heartbeat (exact text; answered by the I/O thread)
 *   "1|X"          keep-alive of mobile streams (exact text; ignored)
 *   "LEN|{json}"   an event; several may stand back to back in one message
 * Anything else is malformed and is reported with a reason, never fatal.
 * See PROTOCOL.md section 1 for why LEN is only checked, never trusted.
 */
#ifndef AYLA_FRAME_H
#define AYLA_FRAME_H

#include <stddef.h>
#include <stdint.h>

enum dss_kind {
	DSS_HEARTBEAT,
	DSS_KEEPALIVE,
	DSS_EVENT,
	DSS_MALFORMED,
};

/* Why a record was malformed; dss_malformed_name() gives the stats key. */
enum dss_malformed {
	DSS_BAD_NONE = 0,
	DSS_BAD_NO_SEPARATOR, /* no '|' at all */
	DSS_BAD_PREFIX,       /* text before '|' is not a decimal LEN */
	DSS_BAD_EMPTY,        /* nothing after '|' */
	DSS_BAD_NOT_OBJECT,   /* payload does not start with '{' */
	DSS_BAD_TRUNCATED,    /* payload is not a complete JSON object */
	DSS_BAD_TRAILING,     /* junk after an event that is not another record */
	DSS_BAD_COUNT         /* number of reasons above, keep last */
};

struct dss_record {
	enum dss_kind kind;
	enum dss_malformed reason; /* DSS_MALFORMED only */
	const char *json;          /* DSS_EVENT: the object, not NUL-terminated */
	size_t json_len;
	int len_mismatch; /* DSS_EVENT: LEN matches neither bytes nor characters */
};

typedef void (*dss_record_fn)(const struct dss_record *rec, void *ud);

/* Calls fn for every record in msg[0..len); returns how many it found. */
size_t dss_frame_parse(const char *msg, size_t len, dss_record_fn fn, void *ud);

const char *dss_malformed_name(enum dss_malformed reason);

/*
 * A tolerant JSON scanner for routing keys, so the I/O thread can count
 * events by type and track seq without building a document.
 *
 * dss_json_lookup finds the value at a key path (for example "metadata",
 * "event_type") inside the object json[0..len). On success it stores the
 * value's span in *val and *val_len (strings without their quotes, escapes left
 * as they are) and returns 1; returns 0 if absent or the text is not JSON.
 */
int dss_json_lookup(const char *json, size_t len, const char *const *path, size_t depth,
		    const char **val, size_t *val_len);

/* The top-level "seq" as an integer ("13" or 13); returns 0 if absent. */
int dss_json_seq(const char *json, size_t len, uint64_t *seq);

#endif
