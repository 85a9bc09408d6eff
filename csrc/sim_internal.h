/*
 * The simulator's private types, shared by its parts:
 *   sim.c        the server: WebSocket clients, heartbeats, commands, faults
 *   sim_feed.c   per-key event feeds: seq, history for seq_start, framing
 *   sim_rest.c   the REST services' HTTP transport, timers for the model
 *   sim_cloud.c  the cloud model behind the REST services
 * Everything here runs on the simulator's thread unless it says otherwise.
 */
#ifndef AYLA_SIM_INTERNAL_H
#define AYLA_SIM_INTERNAL_H

#include "iothread.h"
#include "sim.h"
#include "sim_cloud.h"

#include <libwebsockets.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdint.h>

/* An outgoing message, shared by every client it is queued for. */
struct sim_frame {
	unsigned refs;
	int binary;
	unsigned fragments; /* 1: one WebSocket frame */
	uint64_t seq;       /* 0 for heartbeats and raw messages */
	size_t len;
	char data[];
};

struct out_node {
	struct out_node *next;
	struct sim_frame *f;
};

/* The events of one stream key: the sim's own key (every event) or a
 * subscription's (the events that match it). */
struct sim_feed {
	struct sim_feed *next;
	char key[65];
	int firehose;
	uint64_t seq;
	struct sim_frame **history; /* ring of cfg.history frames */
	size_t hist_next, hist_count;
};

/* One REST exchange on an HTTP connection. */
struct sim_rest_conn {
	char method[8];
	char path[512];
	char authorization[512];
	char *body;
	size_t body_len, body_cap;
	struct sim_response resp;
	int ready; /* resp is complete and may be written */
	lws_sorted_usec_list_t sul_delay;
};

/* Heartbeats per client whose round trip can be timed at once; a client
 * that lets more go unanswered is about to be dropped anyway. */
#define SIM_HB_TIMED 8

/* Per connection (WebSocket or HTTP); lws allocates it zeroed. */
struct sim_client {
	struct sim_client *next;
	struct lws *wsi;
	struct ayla_sim *sim;
	struct sim_feed *feed;
	struct out_node *head, *tail;
	size_t sent_of_head; /* bytes of head already sent as fragments */
	int hb_due;          /* a heartbeat waits to be written */
	int hb_outstanding;  /* sent and not answered */
	/* send times (monotonic) of heartbeats not yet answered, oldest first,
	 * for the round-trip histogram; a reply is matched to the oldest */
	double hb_sent_at[SIM_HB_TIMED];
	unsigned hb_timed_first, hb_timed_len;
	uint64_t flood_left;
	uint64_t seq_start; /* from the handshake: replay history from here */
	char key[65];       /* from the handshake */
	lws_sorted_usec_list_t sul_hb;
	struct sim_rest_conn rest;
};

enum cmd_type {
	CMD_EMIT,
	CMD_RAW,
	CMD_FAULT,
	CMD_FLOOD,
	CMD_REST_FAULT,
	CMD_EXPIRE,
	CMD_BEHAVE
};

struct sim_cmd {
	struct sim_cmd *next;
	enum cmd_type type;
	int fault; /* enum ayla_sim_fault, or enum sim_rest_fault */
	double arg;
	uint64_t n;
	int binary;
	size_t len;
	char data[];
};

struct sim_timer {
	struct sim_timer *next;
	lws_sorted_usec_list_t sul;
	struct ayla_sim *sim;
	void (*fn)(struct sim_cloud *, void *);
	void *arg;
};

struct ayla_sim {
	struct ayla_sim_config cfg; /* strings owned */
	struct ayla_iothread io;
	int port;
	char key[65];

	pthread_mutex_t mu; /* guards cmds and stats (any thread) */
	struct sim_cmd *cmd_head, *cmd_tail;
	struct ayla_sim_stats st;

	/* the simulator's thread only */
	struct sim_client *clients; /* WebSocket clients */
	struct sim_feed *feeds;
	struct sim_cloud *cloud;
	struct sim_timer *timers;
	unsigned fragment_next;
	double stall_until, withhold_until; /* monotonic */
	lws_sorted_usec_list_t sul_resume, sul_scenario, sul_behave;
	char **lines; /* the scenario */
	size_t nlines, line_at;
	int scenario_started;
	SSL_CTX *unused_client_ctx; /* see ayla_sim_start */
	unsigned char *scratch;     /* LWS_PRE + message, for lws_write */
	size_t scratch_cap;
};

/* sim.c */
void sim_enqueue(struct sim_client *c, struct sim_frame *f);
void sim_frame_unref(struct sim_frame *f);
struct sim_frame *sim_frame_new(const char *data, size_t len, int binary, uint64_t seq);

/* sim_feed.c */
struct sim_feed *sim_feed_for(struct ayla_sim *sim, const char *key); /* NULL if unknown */
void sim_feed_broadcast(struct ayla_sim *sim, const char *json, size_t len);
void sim_feed_replay(struct ayla_sim *sim, struct sim_client *c, uint64_t from);
void sim_feed_revoke(struct ayla_sim *sim, const char *key);
void sim_feeds_free(struct ayla_sim *sim);

/* sim_rest.c */
int sim_rest_callback(struct ayla_sim *sim, struct lws *wsi, enum lws_callback_reasons reason,
		      struct sim_client *c, void *in, size_t len);
void sim_rest_hooks(struct ayla_sim *sim, struct sim_cloud_hooks *hooks);
void sim_timers_free(struct ayla_sim *sim);

#endif
