/*
 * Asynchronous HTTP/1.1 requests on the module's I/O thread (io.h), for the
 * Ayla REST services. Each request is its own libwebsockets client
 * connection with its own timeout; any number may be in flight. The caller
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

#endif
