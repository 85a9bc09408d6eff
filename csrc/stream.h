/*
 * The DSS WebSocket client. It runs on the module's I/O thread (io.h):
 * connects, answers heartbeats, watches for silence, reconnects with backoff
 * and jitter, resumes by seq, parses messages (frame.h) and queues complete
 * event payloads (queue.h) for the Lua thread, which only pops and waits.
 *
 * Nothing here knows about Lua.
 */
#ifndef AYLA_STREAM_H
#define AYLA_STREAM_H

#include "frame.h"
#include "queue.h"

#include <stddef.h>
#include <stdint.h>

struct ayla_stream_config {
	const char *host;
	int port;
	const char *path; /* without query: "/stream" */
	int tls;
	const char *key;             /* the stream key: a secret */
	const char *heartbeat_reply; /* "Z" (Ayla's docs) or "1|Z" (Ayla's SDKs) */
	int verify;                  /* verify certificate and host name */
	const char *ca_file;         /* NULL: the system's CA store */
	double idle_timeout;         /* seconds without any message: dead; 0 = off */
	double connect_timeout;      /* seconds for TCP, TLS and the upgrade to finish */
	double backoff_min, backoff_max;
	int resume;         /* reconnect with seq_start = last seq + 1 */
	int reconnect;      /* 0: a lost connection ends the stream (AYLA_ENDED) */
	uint64_t seq_start; /* first connection's seq_start; 0 = none */
	size_t queue_max;   /* events */
	size_t queue_max_bytes;
	enum ayla_drop_policy drop_policy;
	size_t max_message; /* bytes of one reassembled message */
};

enum ayla_stream_state {
	AYLA_CONNECTING,
	AYLA_OPEN,
	AYLA_BACKOFF, /* waiting to reconnect */
	AYLA_REFUSED, /* the server refused the key: no more attempts */
	AYLA_CLOSED,  /* closed by the user */
	AYLA_ENDED,   /* the connection ended and reconnect is off */
};

enum ayla_event_type {
	AYLA_EV_CONNECTIVITY,
	AYLA_EV_DATAPOINT,
	AYLA_EV_DATAPOINTACK,
	AYLA_EV_LOCATION,
	AYLA_EV_REGISTRATION,
	AYLA_EV_OTHER,
	AYLA_EV_COUNT
};

struct ayla_stream_stats {
	uint64_t messages, bytes;
	uint64_t events, by_type[AYLA_EV_COUNT];
	uint64_t heartbeats, heartbeats_answered, keepalives;
	uint64_t malformed[DSS_BAD_COUNT]; /* by frame.h reason */
	uint64_t oversize, binary, len_mismatch;
	uint64_t connects, disconnects, connect_failures, idle_timeouts;
	uint64_t seq_gaps, seq_missing, seq_repeats, duplicates, seq_resets;
	uint64_t last_seq;
	int have_seq;
	/* queue */
	uint64_t dropped;
	size_t queued, queued_bytes, queue_peak;
	/* times: wall clock seconds, 0 = never */
	double started_at, connected_at, last_message_at, last_event_at, last_heartbeat_at;
	double heartbeat_reply_last, heartbeat_reply_max; /* seconds */
	double next_attempt_in; /* seconds until the next connect, in BACKOFF */
	double next_attempt_at; /* monotonic time of it (internal) */
	unsigned attempts;      /* failed attempts since the last good connection */
};

struct ayla_stream;
struct ayla_io;

/* Starts the first connection attempt on io's thread (the stream holds a
 * reference to io until it is closed). On failure returns NULL with a
 * message in err. Strings in cfg are copied. */
struct ayla_stream *ayla_stream_open(struct ayla_io *io, const struct ayla_stream_config *cfg,
				     char *err, size_t errlen);

/* Detaches the oldest queued event payload (free() it), or NULL. Reader
 * side: call it, ayla_stream_wait and ayla_stream_snapshot from one thread. */
struct ayla_msg *ayla_stream_pop(struct ayla_stream *s);

/* Waits up to `seconds` for an event or a final state; returns 1 when an
 * event is queued, 0 otherwise. */
int ayla_stream_wait(struct ayla_stream *s, double seconds);

/* A consistent copy of the counters, the state and the last error text. */
enum ayla_stream_state ayla_stream_snapshot(struct ayla_stream *s, struct ayla_stream_stats *st,
					    char *last_error, size_t errlen);

const char *ayla_stream_state_name(enum ayla_stream_state state);
const char *ayla_event_type_name(enum ayla_event_type type);

/* Readable while events are queued (an eventfd), for foreign event loops. */
int ayla_stream_fd(struct ayla_stream *s);

/* Closes the socket and stops reconnecting; events still queued stay
 * poppable. Idempotent. Must not be called from the I/O thread. */
void ayla_stream_close(struct ayla_stream *s);

/* Closes if needed and frees everything. */
void ayla_stream_free(struct ayla_stream *s);

#endif
