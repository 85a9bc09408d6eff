/*
 * Asynchronous HTTP/1.1 requests on the module's I/O thread (io.h), for the
 * Ayla REST services. Each request has its own timeout; any number may be in
 * flight. Requests to the same host and port share a small pool of kept-alive
 * connections (one request at a time on each; see http.c). The caller
 * polls or waits for completion; ayla_io_wait() wakes on any completion, so
 * one thread can wait for many requests.
 *
 * Nothing here knows about Lua, JSON or Ayla: policy (tokens, retries,
 * error bodies) lives in lua/ayla/cloud.lua.
 */
#ifndef AYLA_HTTP_H
#define AYLA_HTTP_H

#include <stddef.h>

struct ayla_io;

struct ayla_http_request {
	const char *method; /* "GET", "POST", "PUT", "DELETE" */
	const char *host;
	int port;
	int tls;
	int verify;                /* certificate and host name, when tls */
	const char *ca_file;       /* NULL: the system store */
	const char *path;          /* with the query, already encoded */
	const char *authorization; /* the Authorization header's value, or NULL */
	const char *content_type;  /* for the body, or NULL */
	const char *body;
	size_t body_len;
	double timeout;      /* seconds for the whole exchange */
	size_t max_response; /* bytes of body kept; more fails the request */
};

enum ayla_http_state {
	AYLA_HTTP_PENDING,
	AYLA_HTTP_DONE,
	AYLA_HTTP_FAILED
};

struct ayla_http_result {
	enum ayla_http_state state;
	unsigned status;  /* DONE: the HTTP status */
	const char *body; /* DONE: the response body (NUL-terminated) */
	size_t body_len;
	double retry_after; /* seconds from a Retry-After header, or -1 */
	const char *error;  /* FAILED: why */
};

/* The hub's connection pool, counted since the hub started. */
struct ayla_http_stats {
	unsigned long long requests;    /* started */
	unsigned long long connections; /* opened (attempts) */
	unsigned long long reused;      /* requests sent on a connection used before */
	unsigned long long retries;     /* requests sent again after a stale connection */
	unsigned open, idle;            /* connections now: open or opening, and idle */
};

struct ayla_http_pool;
/* The hub's pool (io.c owns it): created with the hub, freed after the lws
 * context is destroyed. */
struct ayla_http_pool *ayla_http_pool_new(void);
void ayla_http_pool_free(struct ayla_http_pool *pool);

struct ayla_http;

/* Starts a request (strings are copied). NULL with err set on failure. */
struct ayla_http *ayla_http_start(struct ayla_io *io, const struct ayla_http_request *req,
				  char *err, size_t errlen);
/* Waits up to `seconds` for the request to finish; returns 1 if it has. */
int ayla_http_wait(struct ayla_http *h, double seconds);
/* The outcome so far; the pointers stay valid until ayla_http_free. */
void ayla_http_result(struct ayla_http *h, struct ayla_http_result *out);
/* Cancels the request if it is still running and frees it. */
void ayla_http_free(struct ayla_http *h);
/* The hub the request runs on. */
struct ayla_io *ayla_http_io(struct ayla_http *h);
/* A snapshot of the counters of the hub's pool. Any thread. */
void ayla_http_stats(struct ayla_io *io, struct ayla_http_stats *out);

#endif
