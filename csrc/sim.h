/*
 * ayla-sim: a local stand-in for the Ayla cloud on one port. The DSS
 * WebSocket at /stream follows PROTOCOL.md section 1; the user, device and
 * subscription REST services (sections 2-4) answer from sim_cloud.c. It serves the WebSocket at /stream on
 * its own I/O thread, refuses unknown stream keys with HTTP 401, sends "1|Z"
 * heartbeats and drops clients that miss them, numbers events with seq and
 * keeps a history for seq_start, replays JSONL scenarios, floods for
 * benchmarks and injects faults on request.
 *
 * Every function except ayla_sim_start's internals is safe to call from any
 * thread: requests are queued and carried out on the sim's I/O thread.
 */
#ifndef AYLA_SIM_H
#define AYLA_SIM_H

#include <stddef.h>
#include <stdint.h>

struct ayla_sim_config {
	const char *host;          /* bind address; default 127.0.0.1 */
	int port;                  /* 0: an ephemeral port */
	const char *key;           /* accepted stream key; NULL: a random one */
	double heartbeat_interval; /* seconds; default 30 */
	int heartbeat_misses;      /* unanswered heartbeats before a drop; default 2 */
	const char *cert_file;     /* TLS when both are set */
	const char *key_file;
	const char *scenario;      /* JSONL file of events, played once a client is connected */
	double event_interval;     /* seconds between scenario events; default 1 */
	int loop;                  /* replay the scenario forever */
	size_t history;            /* events kept per stream key for seq_start; default 10000 */
	const char *fleet;         /* JSON fleet file; NULL: the built-in demo fleet */
	double token_lifetime;     /* seconds an access token lives; default 86400 */
	double ack_delay;          /* seconds before an ack-enabled device acks; default 0.2 */
	double behaviour_interval; /* seconds between scripted device events; 0: none */
	unsigned long seed;        /* of the scripted behaviour: same seed, same story */
};

enum ayla_sim_fault {
	AYLA_FAULT_DROP,     /* close every client socket abruptly */
	AYLA_FAULT_STALL,    /* send and read nothing for arg seconds */
	AYLA_FAULT_WITHHOLD, /* send no heartbeats for arg seconds */
	AYLA_FAULT_FRAGMENT, /* send the next event in arg WebSocket fragments */
};

/* Heartbeat round trips as the server sees them: from writing a "1|Z" to
 * reading the reply that answers it, in microseconds. A fixed log-linear
 * histogram: buckets 0..7 hold 0..7 us exactly, then 8 buckets per power of
 * two, each at most 1/8 of its lower bound wide (12.5%), up to 2^32 us; the
 * last bucket also holds anything longer. */
#define AYLA_SIM_RTT_BUCKETS 240

struct ayla_sim_rtt {
	uint64_t count;  /* replies timed */
	uint64_t sum_us; /* for the mean */
	uint64_t max_us; /* exact */
	uint64_t buckets[AYLA_SIM_RTT_BUCKETS];
};

struct ayla_sim_stats {
	uint64_t connections, rejected, clients;
	uint64_t heartbeats_sent, heartbeat_replies, heartbeat_drops;
	uint64_t events_emitted, events_sent, raw_sent, flood_sent;
	uint64_t faults, client_messages_other;
	uint64_t last_seq; /* of the sim's own key */
	uint64_t rest_requests;
	struct ayla_sim_rtt heartbeat_rtt;
};

struct ayla_sim;

struct ayla_sim *ayla_sim_start(const struct ayla_sim_config *cfg, char *err, size_t errlen);
int ayla_sim_port(const struct ayla_sim *sim);
const char *ayla_sim_key(const struct ayla_sim *sim); /* the accepted key */
int ayla_sim_tls(const struct ayla_sim *sim);

/* Broadcasts one event object: the sim sets its "seq" and frames it. */
int ayla_sim_emit(struct ayla_sim *sim, const char *json, size_t len);
/* Sends one message exactly as given (text, or binary if binary != 0). */
int ayla_sim_send_raw(struct ayla_sim *sim, const char *msg, size_t len, int binary);
/* Sends a malformed message of a named class (see ayla_sim_garble_kinds). */
int ayla_sim_garble(struct ayla_sim *sim, const char *kind);
extern const char *const ayla_sim_garble_kinds[]; /* NULL-terminated */
int ayla_sim_fault(struct ayla_sim *sim, enum ayla_sim_fault fault, double arg);
/* Sends n datapoint events of about 480 bytes to each client, as fast as the
 * socket takes them. */
int ayla_sim_flood(struct ayla_sim *sim, uint64_t n);

/* REST faults for the next `count` requests: "5xx" (503), "429" (with
 * Retry-After: arg seconds), "slow" (answer after arg seconds), or
 * "refresh_200" (the next refreshes answer 200 with an error body). */
int ayla_sim_rest_fault(struct ayla_sim *sim, const char *kind, unsigned count, double arg);
/* Every access token expires now (as if their lifetime had passed). */
int ayla_sim_expire_tokens(struct ayla_sim *sim);
/* Runs n steps of scripted device behaviour now (see sim_cloud_behave). */
int ayla_sim_behave(struct ayla_sim *sim, unsigned n);

void ayla_sim_stats(struct ayla_sim *sim, struct ayla_sim_stats *out);
/* The p-th percentile (0 < p <= 100) of the round trips in h, in
 * microseconds: the upper bound of the bucket that holds it, never above
 * max_us. 0 when nothing was timed. */
uint64_t ayla_sim_rtt_percentile(const struct ayla_sim_rtt *h, double p);
/* Stops serving and frees everything. */
void ayla_sim_stop(struct ayla_sim *sim);

#endif
