/* The DSS WebSocket client on its I/O thread; see stream.h. */
#include "stream.h"

#include "io.h"
#include "resolve.h"
#include "util.h"

#include <errno.h>
#include <stdarg.h>
#include <libwebsockets.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#define HB_RING   16   /* heartbeats awaiting a reply whose arrival time we keep */
#define SEEN_RING 4096 /* hashes of recently delivered events, to tell replays */

struct ayla_stream {
	struct ayla_io_conn conn;      /* first: the hub writes TLS refusals here */
	struct ayla_stream_config cfg; /* strings owned (strdup) */
	struct ayla_io *io;            /* held from open to close */
	struct lws_vhost *vh;
	int efd;

	/* Shared between the threads, under mu. */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct ayla_queue queue;
	enum ayla_stream_state state;
	struct ayla_stream_stats st;
	char last_error[256];
	int efd_set;

	/* Lua thread only: events taken from the queue in one locked batch. */
	struct ayla_msg *batch;
	size_t batch_count;

	/* I/O thread only. */
	struct lws *wsi;
	lws_sorted_usec_list_t sul_connect, sul_watchdog, sul_handshake;
	int attempt_over; /* connection_lost ran for the current attempt */
	uint64_t attempt_seq_start;
	struct ayla_lookup *lookup; /* a host-name lookup under way */
	uint64_t seen[SEEN_RING];
	unsigned seen_next;
	int destroying; /* set on the I/O thread by close: no more reconnects */
	unsigned attempts;
	int resumed;     /* this connection asked for seq_start */
	int got_message; /* this connection delivered something */
	int idle_killed; /* the watchdog ended this connection */
	uint64_t rng;
	double last_rx; /* monotonic */
	char *rx;
	size_t rx_len, rx_cap;
	int rx_oversize, rx_binary;
	unsigned replies_due;
	double hb_at[HB_RING]; /* monotonic receipt times, FIFO */
	unsigned hb_head;
	unsigned char *tx; /* LWS_PRE + reply */
};

static const char *const state_names[] = {
	[AYLA_CONNECTING] = "connecting", [AYLA_OPEN] = "open",     [AYLA_BACKOFF] = "backoff",
	[AYLA_REFUSED] = "refused",       [AYLA_CLOSED] = "closed", [AYLA_ENDED] = "ended",
};

static const char *const type_names[AYLA_EV_COUNT] = {
	[AYLA_EV_CONNECTIVITY] = "connectivity", [AYLA_EV_DATAPOINT] = "datapoint",
	[AYLA_EV_DATAPOINTACK] = "datapointack", [AYLA_EV_LOCATION] = "location",
	[AYLA_EV_REGISTRATION] = "registration", [AYLA_EV_OTHER] = "other",
};

const char *ayla_stream_state_name(enum ayla_stream_state state)
{
	return state_names[state];
}
const char *ayla_event_type_name(enum ayla_event_type type)
{
	return type_names[type];
}

/* ---- helpers on shared state (caller holds mu unless noted) ---- */

static void set_error(struct ayla_stream *s, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void set_error(struct ayla_stream *s, const char *fmt, ...)
{
	char raw[sizeof s->last_error];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(raw, sizeof raw, fmt, ap);
	va_end(ap);
	/* Anything that came from lws may quote the request URL. */
	ayla_redact_url(raw, s->last_error, sizeof s->last_error);
}

static void set_state(struct ayla_stream *s, enum ayla_stream_state state)
{
	s->state = state;
	pthread_cond_broadcast(&s->cv);
}

static void wake_fd(struct ayla_stream *s)
{
	if (!s->efd_set) {
		uint64_t one = 1;
		if (write(s->efd, &one, sizeof one) == (ssize_t)sizeof one)
			s->efd_set = 1;
	}
}

/* Returns 1 when the queue just became non-empty (the hub is told after
 * the lock is released). */
static int signal_readable(struct ayla_stream *s)
{
	if (!s->efd_set && s->queue.head) {
		wake_fd(s);
		pthread_cond_broadcast(&s->cv);
		return 1;
	}
	return 0;
}

static enum ayla_event_type classify(const char *json, size_t len)
{
	static const char *const path[] = {"metadata", "event_type"};
	const char *v;
	size_t vlen;
	if (dss_json_lookup(json, len, path, 2, &v, &vlen))
		for (int t = 0; t < AYLA_EV_OTHER; t++)
			if (strlen(type_names[t]) == vlen && memcmp(type_names[t], v, vlen) == 0)
				return (enum ayla_event_type)t;
	return AYLA_EV_OTHER;
}

/* ---- reconnect scheduling (I/O thread) ---- */

static void connect_now(lws_sorted_usec_list_t *sul);
static void connection_lost(struct ayla_stream *s);
static void handshake_timeout(lws_sorted_usec_list_t *sul);
static void connect_to(struct ayla_stream *s, const char *address);

static void schedule_connect(struct ayla_stream *s)
{
	double base = s->cfg.backoff_min * pow(2.0, s->attempts);
	if (base > s->cfg.backoff_max)
		base = s->cfg.backoff_max;
	/* Equal jitter: half fixed, half random, so a fleet of clients that
	 * lost the server together does not come back together. */
	double delay = base * (0.5 + 0.5 * ayla_random(&s->rng));
	s->attempts++;
	pthread_mutex_lock(&s->mu);
	s->st.attempts = s->attempts;
	s->st.next_attempt_at = ayla_monotime() + delay;
	set_state(s, AYLA_BACKOFF);
	pthread_mutex_unlock(&s->mu);
	lws_sul_schedule(ayla_io_context(s->io), 0, &s->sul_connect, connect_now,
			 (lws_usec_t)(delay * LWS_USEC_PER_SEC));
}

static void percent_encode(const char *in, char *out, size_t outlen)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t o = 0;
	for (; *in && o + 4 < outlen; in++) {
		unsigned char c = (unsigned char)*in;
		if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		    c == '-' || c == '_' || c == '.' || c == '~') {
			out[o++] = (char)c;
		} else {
			out[o++] = '%';
			out[o++] = hex[c >> 4];
			out[o++] = hex[c & 15];
		}
	}
	out[o] = '\0';
}

/* Opens the connection to a numeric address (the name stays in the Host
 * header and the TLS checks). */
static void connect_to(struct ayla_stream *s, const char *address)
{
	char key[512], path[1024];
	percent_encode(s->cfg.key, key, sizeof key);
	if (s->attempt_seq_start)
		snprintf(path, sizeof path, "%s?stream_key=%s&seq_start=%llu", s->cfg.path, key,
			 (unsigned long long)s->attempt_seq_start);
	else
		snprintf(path, sizeof path, "%s?stream_key=%s", s->cfg.path, key);

	struct lws_client_connect_info i;
	memset(&i, 0, sizeof i);
	i.context = ayla_io_context(s->io);
	i.vhost = s->vh;
	i.address = address;
	i.port = s->cfg.port;
	i.path = path;
	i.host = s->cfg.host;
	i.origin = s->cfg.host;
	i.local_protocol_name = "ayla-dss";
	i.userdata = s;
	i.pwsi = &s->wsi;
	i.ssl_connection = ayla_io_tls_flags(s->cfg.tls, s->cfg.verify);
	struct lws *started = lws_client_connect_via_info(&i);
	memset(key, 0, sizeof key); /* the key does not linger on the stack */
	memset(path, 0, sizeof path);
	if (!started) {
		s->wsi = NULL;
		pthread_mutex_lock(&s->mu);
		s->st.connect_failures++;
		set_error(s, "cannot connect to %s:%d", s->cfg.host, s->cfg.port);
		pthread_mutex_unlock(&s->mu);
		connection_lost(s);
	}
}

static void on_resolved(void *owner, const char *address, const char *error)
{
	struct ayla_stream *s = owner;
	s->lookup = NULL;
	if (s->destroying || s->attempt_over)
		return;
	if (address) {
		connect_to(s, address);
		return;
	}
	pthread_mutex_lock(&s->mu);
	s->st.connect_failures++;
	set_error(s, "%s", error);
	pthread_mutex_unlock(&s->mu);
	connection_lost(s);
}

static void connect_now(lws_sorted_usec_list_t *sul)
{
	struct ayla_stream *s = lws_container_of(sul, struct ayla_stream, sul_connect);
	if (s->destroying)
		return;

	pthread_mutex_lock(&s->mu);
	uint64_t seq_start = 0;
	if (s->cfg.resume && s->st.have_seq)
		seq_start = s->st.last_seq + 1;
	else if (!s->st.have_seq)
		seq_start = s->cfg.seq_start;
	set_state(s, AYLA_CONNECTING);
	s->st.next_attempt_at = 0;
	pthread_mutex_unlock(&s->mu);
	s->attempt_seq_start = seq_start;
	s->resumed = seq_start != 0;
	s->got_message = 0;
	s->idle_killed = 0;
	s->attempt_over = 0;
	s->conn.tls_error[0] = '\0';

	/* One deadline for the name lookup, TCP, TLS and the upgrade: lws 4.1
	 * gives up on a server that never answers the upgrade without telling us. */
	if (s->cfg.connect_timeout > 0)
		lws_sul_schedule(ayla_io_context(s->io), 0, &s->sul_handshake, handshake_timeout,
				 (lws_usec_t)(s->cfg.connect_timeout * LWS_USEC_PER_SEC));
	char address[64];
	struct ayla_resolver *r = ayla_io_resolver(s->io);
	if (ayla_resolve_now(r, s->cfg.host, address, sizeof address)) {
		connect_to(s, address);
		return;
	}
	s->lookup = ayla_resolve(r, s->cfg.host, on_resolved, s); /* off this thread */
	if (!s->lookup)
		on_resolved(s, NULL, "out of memory");
}

static void handshake_timeout(lws_sorted_usec_list_t *sul)
{
	struct ayla_stream *s = lws_container_of(sul, struct ayla_stream, sul_handshake);
	if (s->destroying || s->attempt_over)
		return;
	pthread_mutex_lock(&s->mu);
	s->st.connect_failures++;
	if (s->lookup)
		set_error(s, "looking up %s took longer than %.1f s (connect_timeout)", s->cfg.host,
			  s->cfg.connect_timeout);
	else
		set_error(s,
			  "no answer to the connection from %s:%d within %.1f s (connect_timeout)",
			  s->cfg.host, s->cfg.port, s->cfg.connect_timeout);
	pthread_mutex_unlock(&s->mu);
	if (s->wsi) /* any close callbacks run now; the guard keeps it one attempt */
		lws_set_timeout(s->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_SYNC);
	connection_lost(s);
}

static void watchdog(lws_sorted_usec_list_t *sul)
{
	struct ayla_stream *s = lws_container_of(sul, struct ayla_stream, sul_watchdog);
	if (s->destroying || !s->wsi)
		return;
	double silent = ayla_monotime() - s->last_rx;
	if (silent > s->cfg.idle_timeout) {
		pthread_mutex_lock(&s->mu);
		s->st.idle_timeouts++;
		set_error(s, "no message from the server for %.1f s (idle_timeout %.1f s)%s",
			  silent, s->cfg.idle_timeout, s->cfg.reconnect ? ": reconnecting" : "");
		pthread_mutex_unlock(&s->mu);
		s->idle_killed = 1;
		lws_set_timeout(s->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
		return;
	}
	double next = s->cfg.idle_timeout - silent;
	lws_sul_schedule(ayla_io_context(s->io), 0, &s->sul_watchdog, watchdog,
			 (lws_usec_t)((next > 0.01 ? next : 0.01) * LWS_USEC_PER_SEC) + 1000);
}

/* ---- receiving (I/O thread) ---- */

struct parse_ctx {
	struct ayla_stream *s;
	double now;
};

static uint64_t fnv1a(const char *p, size_t n)
{
	uint64_t h = 0xcbf29ce484222325ull;
	for (size_t k = 0; k < n; k++)
		h = (h ^ (unsigned char)p[k]) * 0x100000001b3ull;
	return h;
}

static int seen_before(const struct ayla_stream *s, uint64_t h)
{
	for (unsigned k = 0; k < SEEN_RING; k++)
		if (s->seen[k] == h)
			return 1;
	return 0;
}

static void track_seq(struct ayla_stream *s, uint64_t seq, uint64_t hash, int *drop)
{
	struct ayla_stream_stats *st = &s->st;
	*drop = 0;
	if (st->have_seq) {
		if (seq > st->last_seq + 1) {
			st->seq_gaps++;
			st->seq_missing += seq - st->last_seq - 1;
		} else if (seq <= st->last_seq && s->resumed && seen_before(s, hash)) {
			/* Asked to resume after last_seq and this very event was
			 * delivered: a replay. */
			st->duplicates++;
			*drop = 1;
			return;
		} else if (seq <= st->last_seq && s->resumed) {
			/* A new event numbered below what we have seen: the server
			 * restarted its numbering. Follow it rather than drop it. */
			st->seq_resets++;
			st->last_seq = seq;
		} else if (seq <= st->last_seq) {
			st->seq_repeats++;
		}
	}
	if (!st->have_seq || seq > st->last_seq)
		st->last_seq = seq; /* the highest seen: resume asks for what follows it */
	st->have_seq = 1;
}

static void on_record(const struct dss_record *rec, void *ud)
{
	struct parse_ctx *pc = ud;
	struct ayla_stream *s = pc->s;

	switch (rec->kind) {
	case DSS_HEARTBEAT:
		s->st.heartbeats++;
		s->st.last_heartbeat_at = pc->now;
		s->hb_at[(s->hb_head + s->replies_due) % HB_RING] = ayla_monotime();
		if (s->replies_due < HB_RING)
			s->replies_due++;
		lws_callback_on_writable(s->wsi);
		break;
	case DSS_KEEPALIVE:
		s->st.keepalives++;
		break;
	case DSS_MALFORMED:
		s->st.malformed[rec->reason]++;
		set_error(s, "malformed message (%s) skipped", dss_malformed_name(rec->reason));
		break;
	case DSS_EVENT: {
		uint64_t seq, hash = fnv1a(rec->json, rec->json_len);
		int drop = 0;
		if (dss_json_seq(rec->json, rec->json_len, &seq))
			track_seq(s, seq, hash, &drop);
		if (drop)
			break;
		s->seen[s->seen_next++ % SEEN_RING] = hash;
		if (rec->len_mismatch)
			s->st.len_mismatch++;
		s->st.events++;
		s->st.by_type[classify(rec->json, rec->json_len)]++;
		s->st.last_event_at = pc->now;
		if (ayla_queue_push(&s->queue, rec->json, rec->json_len) < 0)
			s->queue.dropped++; /* out of memory: counted like a drop */
		break;
	}
	}
}

static void handle_message(struct ayla_stream *s, const char *msg, size_t len)
{
	struct parse_ctx pc = {s, ayla_now()};
	if (!s->got_message) {
		s->got_message = 1;
		s->attempts = 0; /* the connection proved itself: reset the backoff */
	}
	pthread_mutex_lock(&s->mu);
	s->st.messages++;
	s->st.bytes += len;
	s->st.last_message_at = pc.now;
	s->st.attempts = 0;
	dss_frame_parse(msg, len, on_record, &pc);
	int became_readable = signal_readable(s);
	pthread_mutex_unlock(&s->mu);
	if (became_readable)
		ayla_io_notify(s->io);
}

static void count_skipped(struct ayla_stream *s, uint64_t *counter, const char *what)
{
	pthread_mutex_lock(&s->mu);
	(*counter)++;
	set_error(s, "%s", what);
	pthread_mutex_unlock(&s->mu);
}

static int on_receive(struct ayla_stream *s, struct lws *wsi, const char *in, size_t len)
{
	int first = lws_is_first_fragment(wsi);
	int final = lws_is_final_fragment(wsi) && !lws_remaining_packet_payload(wsi);

	s->last_rx = ayla_monotime(); /* any bytes prove the server is alive */
	lws_validity_confirmed(wsi);
	if (first) {
		s->rx_len = 0;
		s->rx_oversize = 0;
		s->rx_binary = lws_frame_is_binary(wsi);
	}
	if (first && final && !s->rx_binary) { /* the common case: no copy */
		if (len > s->cfg.max_message)
			count_skipped(s, &s->st.oversize, "oversize message skipped");
		else
			handle_message(s, in, len);
		return 0;
	}
	if (!s->rx_oversize && !s->rx_binary) {
		if (s->rx_len + len > s->cfg.max_message) {
			s->rx_oversize = 1;
		} else {
			if (s->rx_len + len > s->rx_cap) {
				size_t cap = s->rx_cap ? s->rx_cap : 4096;
				while (cap < s->rx_len + len)
					cap *= 2;
				char *grown = realloc(s->rx, cap);
				if (!grown)
					return -1;
				s->rx = grown;
				s->rx_cap = cap;
			}
			memcpy(s->rx + s->rx_len, in, len);
			s->rx_len += len;
		}
	}
	if (final) {
		if (s->rx_binary)
			count_skipped(s, &s->st.binary, "binary message skipped (DSS sends text)");
		else if (s->rx_oversize)
			count_skipped(s, &s->st.oversize, "oversize message skipped");
		else
			handle_message(s, s->rx, s->rx_len);
		s->rx_len = 0;
		if (s->rx_cap > 65536) {
			free(s->rx); /* do not keep a rare huge buffer forever */
			s->rx = NULL;
			s->rx_cap = 0;
		}
	}
	return 0;
}

static int send_reply(struct ayla_stream *s, struct lws *wsi)
{
	if (!s->replies_due)
		return 0; /* an unrequested WRITEABLE: nothing to say */
	size_t n = strlen(s->cfg.heartbeat_reply);
	memcpy(s->tx + LWS_PRE, s->cfg.heartbeat_reply, n);
	if (lws_write(wsi, s->tx + LWS_PRE, n, LWS_WRITE_TEXT) < (int)n)
		return -1;
	double latency = ayla_monotime() - s->hb_at[s->hb_head];
	s->hb_head = (s->hb_head + 1) % HB_RING;
	s->replies_due--;
	pthread_mutex_lock(&s->mu);
	s->st.heartbeats_answered++;
	s->st.heartbeat_reply_last = latency;
	if (latency > s->st.heartbeat_reply_max)
		s->st.heartbeat_reply_max = latency;
	pthread_mutex_unlock(&s->mu);
	if (s->replies_due)
		lws_callback_on_writable(wsi);
	return 0;
}

/* ---- the protocol callback (I/O thread) ---- */

static void connection_lost(struct ayla_stream *s)
{
	s->wsi = NULL;
	s->replies_due = 0;
	lws_sul_cancel(&s->sul_watchdog);
	lws_sul_cancel(&s->sul_handshake);
	ayla_lookup_cancel(s->lookup);
	s->lookup = NULL;
	if (s->attempt_over)
		return; /* already handled for this attempt */
	s->attempt_over = 1;
	if (s->destroying)
		return;
	int refused;
	pthread_mutex_lock(&s->mu);
	refused = s->state == AYLA_REFUSED;
	if (!refused && !s->cfg.reconnect) { /* the owner renews the stream itself */
		set_state(s, AYLA_ENDED);
		wake_fd(s);
	}
	pthread_mutex_unlock(&s->mu);
	if (!refused && s->cfg.reconnect)
		schedule_connect(s);
}

int ayla_stream_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
			 size_t len)
{
	struct ayla_stream *s = user; /* the connect info's userdata */
	if (!s)
		return 0; /* vhost-wide reasons: nothing of ours */

	switch (reason) {
	case LWS_CALLBACK_CLIENT_CONNECTION_ERROR: {
		unsigned status = lws_http_client_http_response(wsi);
		const char *why = in ? (const char *)in : "unknown error";
		pthread_mutex_lock(&s->mu);
		s->st.connect_failures++;
		if (status == 401 || strstr(why, "unauthorized")) {
			/* Retrying a refused key cannot help and hammers the
			 * service: stop and say what to do. */
			set_error(s, "stream key refused by the server (HTTP 401): the "
				     "subscription is unknown or was deleted; create a new "
				     "subscription and use its stream_key");
			set_state(s, AYLA_REFUSED);
			wake_fd(s); /* an event loop must learn of it: next() says why */
		} else if (s->conn.tls_error[0]) {
			set_error(s,
				  "TLS: the certificate of %s was refused: %s (give ca_file = "
				  "the CA's PEM file if the server uses a private CA)",
				  s->cfg.host, s->conn.tls_error);
		} else if (status) {
			set_error(s, "connection to %s:%d refused with HTTP %u", s->cfg.host,
				  s->cfg.port, status);
		} else {
			set_error(s, "cannot connect to %s:%d: %.*s", s->cfg.host, s->cfg.port,
				  (int)(len && len < 160 ? len : strnlen(why, 160)), why);
		}
		pthread_mutex_unlock(&s->mu);
		connection_lost(s);
		break;
	}
	case LWS_CALLBACK_CLIENT_ESTABLISHED:
		lws_sul_cancel(&s->sul_handshake);
		s->last_rx = ayla_monotime();
		s->rx_len = 0;
		pthread_mutex_lock(&s->mu);
		s->st.connects++;
		s->st.connected_at = ayla_now();
		if (!s->cfg.resume)
			s->st.have_seq = 0; /* a fresh stream may number from anywhere */
		set_state(s, AYLA_OPEN);
		pthread_mutex_unlock(&s->mu);
		if (s->cfg.idle_timeout > 0)
			lws_sul_schedule(ayla_io_context(s->io), 0, &s->sul_watchdog, watchdog,
					 (lws_usec_t)(s->cfg.idle_timeout * LWS_USEC_PER_SEC));
		break;
	case LWS_CALLBACK_CLIENT_RECEIVE:
		return on_receive(s, wsi, in, len);
	case LWS_CALLBACK_CLIENT_RECEIVE_PONG:
		s->last_rx = ayla_monotime();
		break;
	case LWS_CALLBACK_CLIENT_WRITEABLE:
		return send_reply(s, wsi);
	case LWS_CALLBACK_CLIENT_CLOSED:
		pthread_mutex_lock(&s->mu);
		s->st.disconnects++;
		if (!s->destroying && !s->idle_killed)
			set_error(s, "connection to %s:%d lost%s", s->cfg.host, s->cfg.port,
				  s->cfg.reconnect ? "; reconnecting" : "");
		pthread_mutex_unlock(&s->mu);
		connection_lost(s);
		break;
	default:
		break;
	}
	return 0;
}

/* ---- the Lua-thread side ---- */

static char *dup_or_null(const char *s)
{
	return s ? strdup(s) : NULL;
}

static void free_config(struct ayla_stream_config *c)
{
	free((char *)c->host);
	free((char *)c->path);
	if (c->key) /* secrets do not linger in freed memory */
		memset((char *)c->key, 0, strlen(c->key));
	free((char *)c->key);
	free((char *)c->heartbeat_reply);
	free((char *)c->ca_file);
}

struct start_call {
	struct ayla_stream *s;
	char *err;
	size_t errlen;
	int ok;
};

/* On the I/O thread: pick the vhost for the stream's CA and connect. */
static void start_on_io(void *arg)
{
	struct start_call *call = arg;
	struct ayla_stream *s = call->s;
	s->vh = ayla_io_vhost(s->io, s->cfg.ca_file, call->err, call->errlen);
	if (!s->vh)
		return;
	lws_sul_schedule(ayla_io_context(s->io), 0, &s->sul_connect, connect_now, 1);
	call->ok = 1;
}

/* On the I/O thread: end the connection now; no callback for s after this. */
static void stop_on_io(void *arg)
{
	struct ayla_stream *s = arg;
	s->destroying = 1;
	lws_sul_cancel(&s->sul_connect);
	lws_sul_cancel(&s->sul_watchdog);
	lws_sul_cancel(&s->sul_handshake);
	ayla_lookup_cancel(s->lookup); /* its answer will not reach s */
	s->lookup = NULL;
	if (s->wsi) /* runs CLIENT_CLOSED for s right here */
		lws_set_timeout(s->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_SYNC);
	s->wsi = NULL;
}

struct ayla_stream *ayla_stream_open(struct ayla_io *io, const struct ayla_stream_config *cfg,
				     char *err, size_t errlen)
{
	struct ayla_stream *s = calloc(1, sizeof *s);
	if (!s) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	s->cfg = *cfg;
	s->cfg.host = dup_or_null(cfg->host);
	s->cfg.path = dup_or_null(cfg->path ? cfg->path : "/stream");
	s->cfg.key = dup_or_null(cfg->key);
	s->cfg.heartbeat_reply = dup_or_null(cfg->heartbeat_reply ? cfg->heartbeat_reply : "Z");
	s->cfg.ca_file = dup_or_null(cfg->ca_file);
	s->tx = malloc(LWS_PRE + strlen(s->cfg.heartbeat_reply ? s->cfg.heartbeat_reply : "") + 1);
	s->rng = ayla_random_seed();
	s->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	pthread_mutex_init(&s->mu, NULL);
	ayla_cond_init(&s->cv);
	ayla_queue_init(&s->queue, cfg->queue_max, cfg->queue_max_bytes, cfg->drop_policy);
	s->st.started_at = ayla_now();
	s->state = AYLA_CONNECTING;
	if (!s->cfg.host || !s->cfg.path || !s->cfg.key || !s->cfg.heartbeat_reply || !s->tx ||
	    s->efd < 0 || (cfg->ca_file && !s->cfg.ca_file)) {
		snprintf(err, errlen, "cannot allocate the stream: %s", strerror(errno));
		ayla_stream_free(s);
		return NULL;
	}

	ayla_io_ref(io);
	s->io = io;
	struct start_call call = {s, err, errlen, 0};
	ayla_io_call(io, start_on_io, &call);
	if (!call.ok) {
		ayla_stream_free(s);
		return NULL;
	}
	return s;
}

/* Events move to the reader in batches of up to this many, so the two
 * threads meet on the lock once per batch rather than once per event. */
#define POP_BATCH 64

/* With mu held: the eventfd stops being readable once nothing is pending. */
static void clear_readable(struct ayla_stream *s)
{
	if (!s->batch && !s->queue.head && s->efd_set && s->state != AYLA_REFUSED &&
	    s->state != AYLA_ENDED) {
		uint64_t v;
		if (read(s->efd, &v, sizeof v) == (ssize_t)sizeof v || errno == EAGAIN)
			s->efd_set = 0;
	}
}

struct ayla_msg *ayla_stream_pop(struct ayla_stream *s)
{
	if (!s->batch) {
		pthread_mutex_lock(&s->mu);
		struct ayla_msg **tail = &s->batch;
		while (s->batch_count < POP_BATCH && (*tail = ayla_queue_pop(&s->queue))) {
			tail = &(*tail)->next;
			s->batch_count++;
		}
		clear_readable(s);
		pthread_mutex_unlock(&s->mu);
	}
	struct ayla_msg *m = s->batch;
	if (!m)
		return NULL;
	s->batch = m->next;
	s->batch_count--;
	m->next = NULL;
	if (!s->batch) { /* the batch's last event: is anything else pending? */
		pthread_mutex_lock(&s->mu);
		clear_readable(s);
		pthread_mutex_unlock(&s->mu);
	}
	return m;
}

int ayla_stream_wait(struct ayla_stream *s, double seconds)
{
	struct timespec until = ayla_deadline(seconds); /* negative or NaN: do not wait */
	if (s->batch)
		return 1;
	pthread_mutex_lock(&s->mu);
	while (!s->queue.head && s->state != AYLA_REFUSED && s->state != AYLA_CLOSED &&
	       s->state != AYLA_ENDED)
		if (pthread_cond_timedwait(&s->cv, &s->mu, &until) != 0)
			break;
	int ready = s->queue.head != NULL;
	pthread_mutex_unlock(&s->mu);
	return ready;
}

enum ayla_stream_state ayla_stream_snapshot(struct ayla_stream *s, struct ayla_stream_stats *st,
					    char *last_error, size_t errlen)
{
	pthread_mutex_lock(&s->mu);
	enum ayla_stream_state state = s->state;
	if (st) {
		*st = s->st;
		st->next_attempt_in = s->st.next_attempt_at > 0 && s->state == AYLA_BACKOFF
					      ? s->st.next_attempt_at - ayla_monotime()
					      : 0;
		if (st->next_attempt_in < 0)
			st->next_attempt_in = 0;
		st->dropped = s->queue.dropped;
		st->queued = s->queue.count + s->batch_count;
		st->queued_bytes = s->queue.bytes;
		for (struct ayla_msg *m = s->batch; m; m = m->next)
			st->queued_bytes += m->len;
		st->queue_peak = s->queue.peak_count;
	}
	if (last_error)
		snprintf(last_error, errlen, "%s", s->last_error);
	pthread_mutex_unlock(&s->mu);
	return state;
}

int ayla_stream_fd(struct ayla_stream *s)
{
	return s->efd;
}

void ayla_stream_close(struct ayla_stream *s)
{
	if (!s->io)
		return;
	ayla_io_call(s->io, stop_on_io, s);
	ayla_io_unref(s->io);
	s->io = NULL;
	pthread_mutex_lock(&s->mu);
	set_state(s, AYLA_CLOSED);
	pthread_mutex_unlock(&s->mu);
}

void ayla_stream_free(struct ayla_stream *s)
{
	if (!s)
		return;
	ayla_stream_close(s);
	while (s->batch) {
		struct ayla_msg *next = s->batch->next;
		free(s->batch);
		s->batch = next;
	}
	ayla_queue_clear(&s->queue);
	free(s->rx);
	free(s->tx);
	if (s->efd >= 0)
		close(s->efd);
	pthread_cond_destroy(&s->cv);
	pthread_mutex_destroy(&s->mu);
	free_config(&s->cfg);
	free(s);
}
