/*
 * The cloud model behind ayla-sim's REST services (PROTOCOL.md sections 2-4):
 * a user with tokens, a fleet of devices whose properties are digital twins,
 * datapoints, and DSS subscriptions. It knows nothing of sockets: sim.c hands
 * it requests and gives it two hooks, one to publish events to the streams
 * and one to run something later (a device's ack).
 *
 * Runs on the simulator's thread only.
 */
#ifndef AYLA_SIM_CLOUD_H
#define AYLA_SIM_CLOUD_H

#include <stddef.h>

struct sim_cloud;

struct sim_cloud_hooks {
	void *ud;
	/* Publishes one DSS event object (JSON text, without seq). */
	void (*emit)(void *ud, const char *json, size_t len);
	/* Runs fn(cloud, arg) after `seconds`, on the simulator's thread; fn
	 * owns arg. */
	void (*later)(void *ud, double seconds, void (*fn)(struct sim_cloud *, void *), void *arg);
	/* A subscription's stream key stopped being valid. */
	void (*revoked)(void *ud, const char *stream_key);
};

struct sim_cloud_config {
	const char *fleet_file; /* JSON fleet; NULL: the built-in demo fleet */
	const char *email, *password, *app_id, *app_secret; /* NULL: the demo user */
	double token_lifetime;                              /* seconds; default 86400 */
	double ack_delay;   /* a device's ack delay in seconds; default 0.2 */
	unsigned long seed; /* scripted behaviour's random sequence; 0: 1 */
};

/* The demo credentials, printed by ayla-sim so that nothing is secret. */
#define SIM_DEMO_EMAIL      "demo@ayla-sim.local"
#define SIM_DEMO_PASSWORD   "demo-password"
#define SIM_DEMO_APP_ID     "ayla-sim-app"
#define SIM_DEMO_APP_SECRET "ayla-sim-secret"

struct sim_cloud *sim_cloud_new(const struct sim_cloud_config *cfg,
				const struct sim_cloud_hooks *hooks, char *err, size_t errlen);
void sim_cloud_free(struct sim_cloud *c);

struct sim_response {
	unsigned status;
	char *body;           /* malloc'd JSON text, or NULL for no body */
	unsigned retry_after; /* seconds, sent when non-zero */
};

/* Answers one REST request. path excludes the query. */
void sim_cloud_handle(struct sim_cloud *c, const char *method, const char *path,
		      const char *authorization, const char *body, size_t body_len,
		      struct sim_response *out);

/* REST faults, each for the next `count` requests (0 clears it). */
enum sim_rest_fault {
	SIM_FAULT_5XX,
	SIM_FAULT_429,
	SIM_FAULT_SLOW,
	SIM_FAULT_REFRESH_200, /* a refresh answered 200 with an error body (seen live) */
	SIM_FAULT_COUNT
};
void sim_cloud_fault(struct sim_cloud *c, enum sim_rest_fault fault, unsigned count, double arg);
/* How long to hold the current response (SIM_FAULT_SLOW), consumed once. */
double sim_cloud_take_delay(struct sim_cloud *c);
/* Every access token expires now (refresh tokens stay valid). */
void sim_cloud_expire_tokens(struct sim_cloud *c);

/* One step of scripted device behaviour, drawn from the seeded sequence:
 * sensor drift or a button press on an output property (datapoint), a
 * device going offline or online (connectivity), a location update, or an
 * unregistration followed later by a registration. Returns what it did. */
const char *sim_cloud_behave(struct sim_cloud *c);

/* 1 if key is a live subscription's stream key. */
int sim_cloud_key_valid(struct sim_cloud *c, const char *key);
/* 1 if the event (JSON text) matches the subscription with this key. */
int sim_cloud_key_matches(struct sim_cloud *c, const char *key, const char *json, size_t len);
/* Calls fn for every live subscription's stream key. */
void sim_cloud_each_key(struct sim_cloud *c, void (*fn)(void *ud, const char *key), void *ud);

#endif
