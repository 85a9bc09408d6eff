/* Asynchronous HTTP/1.1 requests on the module's I/O thread; see http.h. */
#include "http.h"

#include "io.h"
#include "resolve.h"
#include "util.h"

#include <libwebsockets.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct ayla_http {
	struct ayla_io_conn conn; /* first: the hub writes TLS refusals here */
	struct ayla_io *io;
	char *method, *host, *path, *authorization, *content_type, *ca_file, *body;
	size_t body_len, max_response;
	int port, tls, verify;
	double timeout;

	/* I/O thread only */
	struct lws *wsi;
	struct lws_vhost *vh;
	struct ayla_lookup *lookup; /* a host-name lookup under way */
	lws_sorted_usec_list_t sul_timeout;

	/* the outcome: written once on the I/O thread, under mu */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	enum ayla_http_state state;
	unsigned status;
	char *resp;
	size_t resp_len, resp_cap;
	double retry_after;
	char error[256];
};

/* I/O thread: records the outcome once and wakes every waiter. */
static void finish(struct ayla_http *h, enum ayla_http_state state, const char *error)
{
	lws_sul_cancel(&h->sul_timeout);
	pthread_mutex_lock(&h->mu);
	if (h->state == AYLA_HTTP_PENDING) {
		h->state = state;
		if (error)
			snprintf(h->error, sizeof h->error, "%s", error);
		pthread_cond_broadcast(&h->cv);
	}
	pthread_mutex_unlock(&h->mu);
	ayla_io_notify(h->io);
}

static int append(struct ayla_http *h, const char *data, size_t len)
{
	if (h->resp_len + len > h->max_response)
		return -1;
	if (!h->resp || h->resp_len + len + 1 > h->resp_cap) {
		size_t cap = h->resp_cap ? h->resp_cap : 4096;
		while (cap < h->resp_len + len + 1)
			cap *= 2;
		char *grown = realloc(h->resp, cap);
		if (!grown)
			return -1;
		h->resp = grown;
		h->resp_cap = cap;
	}
	memcpy(h->resp + h->resp_len, data, len);
	h->resp_len += len;
	h->resp[h->resp_len] = '\0';
	return 0;
}

static void timed_out(lws_sorted_usec_list_t *sul)
{
	struct ayla_http *h = lws_container_of(sul, struct ayla_http, sul_timeout);
	char why[96];
	snprintf(why, sizeof why, "no complete answer within %.1f s (timeout)", h->timeout);
	finish(h, AYLA_HTTP_FAILED, why);
	ayla_lookup_cancel(h->lookup);
	h->lookup = NULL;
	if (h->wsi)
		lws_set_timeout(h->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
}

static int add_header(struct lws *wsi, const char *name, const char *value, unsigned char **p,
		      unsigned char *end)
{
	return lws_add_http_header_by_name(wsi, (const unsigned char *)name,
					   (const unsigned char *)value, (int)strlen(value), p,
					   end);
}

int ayla_http_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
		       size_t len)
{
	struct ayla_http *h = user;
	if (!h)
		return 0;

	switch (reason) {
	case LWS_CALLBACK_CLIENT_APPEND_HANDSHAKE_HEADER: {
		unsigned char **p = (unsigned char **)in, *end = (*p) + len;
		if (add_header(wsi, "accept:", "application/json", p, end) ||
		    (h->authorization &&
		     add_header(wsi, "authorization:", h->authorization, p, end)) ||
		    (h->content_type && add_header(wsi, "content-type:", h->content_type, p, end)))
			return -1;
		if (h->body_len) {
			char length[24];
			snprintf(length, sizeof length, "%zu", h->body_len);
			if (add_header(wsi, "content-length:", length, p, end))
				return -1;
			lws_client_http_body_pending(wsi, 1);
			lws_callback_on_writable(wsi);
		}
		break;
	}
	case LWS_CALLBACK_CLIENT_HTTP_WRITEABLE: {
		if (!h->body_len || !h->body)
			break; /* unrequested, or already sent */
		unsigned char *buf = malloc(LWS_PRE + h->body_len);
		if (!buf)
			return -1;
		memcpy(buf + LWS_PRE, h->body, h->body_len);
		int n = lws_write(wsi, buf + LWS_PRE, h->body_len, LWS_WRITE_HTTP_FINAL);
		free(buf);
		if (n < (int)h->body_len)
			return -1;
		free(h->body);
		h->body = NULL;
		lws_client_http_body_pending(wsi, 0);
		break;
	}
	case LWS_CALLBACK_ESTABLISHED_CLIENT_HTTP: {
		char ra[32];
		h->status = lws_http_client_http_response(wsi);
		if (lws_hdr_copy(wsi, ra, sizeof ra, WSI_TOKEN_HTTP_RETRY_AFTER) > 0) {
			char *rest;
			double v = strtod(ra, &rest);
			h->retry_after =
				rest != ra && v >= 0 ? v : 1; /* an HTTP date: wait a bit */
		}
		break;
	}
	case LWS_CALLBACK_RECEIVE_CLIENT_HTTP: {
		char buf[LWS_PRE + 8192], *p = buf + LWS_PRE;
		int n = (int)sizeof buf - LWS_PRE;
		if (lws_http_client_read(wsi, &p, &n) < 0)
			return -1;
		break;
	}
	case LWS_CALLBACK_RECEIVE_CLIENT_HTTP_READ:
		if (append(h, in, len)) {
			finish(h, AYLA_HTTP_FAILED, "the response is larger than max_response");
			return -1;
		}
		break;
	case LWS_CALLBACK_COMPLETED_CLIENT_HTTP:
		if (!h->resp && append(h, "", 0))
			return -1;
		finish(h, AYLA_HTTP_DONE, NULL);
		break;
	case LWS_CALLBACK_CLIENT_CONNECTION_ERROR: {
		char why[200];
		if (h->conn.tls_error[0])
			snprintf(why, sizeof why, "TLS: the certificate of %s was refused: %s",
				 h->host, h->conn.tls_error);
		else
			snprintf(why, sizeof why, "cannot reach %s:%d: %.*s", h->host, h->port,
				 (int)(in ? strnlen(in, 120) : 7),
				 in ? (const char *)in : "unknown");
		finish(h, AYLA_HTTP_FAILED, why);
		h->wsi = NULL;
		break;
	}
	case LWS_CALLBACK_CLOSED_CLIENT_HTTP:
		finish(h, AYLA_HTTP_FAILED,
		       "the connection closed before the response was complete");
		h->wsi = NULL;
		break;
	case LWS_CALLBACK_WSI_DESTROY:
		h->wsi = NULL; /* the last callback of the connection */
		break;
	default:
		break;
	}
	return 0;
}

static void connect_to(struct ayla_http *h, const char *address)
{
	struct lws_client_connect_info i;
	memset(&i, 0, sizeof i);
	i.context = ayla_io_context(h->io);
	i.vhost = h->vh;
	i.address = address;
	i.port = h->port;
	i.path = h->path;
	i.host = h->host;
	i.origin = h->host;
	i.method = h->method;
	i.alpn = "http/1.1";
	i.protocol = "ayla-http";
	i.local_protocol_name = "ayla-http";
	i.userdata = h;
	i.pwsi = &h->wsi;
	i.ssl_connection = LCCSCF_HTTP_NO_FOLLOW_REDIRECT | ayla_io_tls_flags(h->tls, h->verify);
	if (!lws_client_connect_via_info(&i)) {
		h->wsi = NULL;
		char why[300];
		snprintf(why, sizeof why, "cannot reach %s:%d", h->host, h->port);
		finish(h, AYLA_HTTP_FAILED, why);
	}
}

static void on_resolved(void *owner, const char *address, const char *error)
{
	struct ayla_http *h = owner;
	h->lookup = NULL;
	if (!address)
		finish(h, AYLA_HTTP_FAILED, error);
	else if (h->state == AYLA_HTTP_PENDING) /* not timed out meanwhile */
		connect_to(h, address);
}

struct start_call {
	struct ayla_http *h;
	char *err;
	size_t errlen;
	int ok;
};

static void start_on_io(void *arg)
{
	struct start_call *call = arg;
	struct ayla_http *h = call->h;
	h->vh = ayla_io_vhost(h->io, h->ca_file, call->err, call->errlen);
	if (!h->vh)
		return;
	call->ok = 1;
	/* The timeout covers the name lookup too. */
	lws_sul_schedule(ayla_io_context(h->io), 0, &h->sul_timeout, timed_out,
			 (lws_usec_t)(h->timeout * LWS_USEC_PER_SEC));
	char address[64];
	struct ayla_resolver *r = ayla_io_resolver(h->io);
	if (ayla_resolve_now(r, h->host, address, sizeof address)) {
		connect_to(h, address);
		return;
	}
	h->lookup = ayla_resolve(r, h->host, on_resolved, h); /* off this thread */
	if (!h->lookup)
		finish(h, AYLA_HTTP_FAILED, "out of memory");
}

static void cancel_on_io(void *arg)
{
	struct ayla_http *h = arg;
	lws_sul_cancel(&h->sul_timeout);
	ayla_lookup_cancel(h->lookup); /* its answer will not reach h */
	h->lookup = NULL;
	if (h->wsi) /* runs the connection's last callbacks right here */
		lws_set_timeout(h->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_SYNC);
	h->wsi = NULL;
}

static char *dup_or_null(const char *s)
{
	return s ? strdup(s) : NULL;
}

static void free_fields(struct ayla_http *h)
{
	free(h->method);
	free(h->host);
	free(h->path);
	if (h->authorization) /* a token: do not leave it in freed memory */
		memset(h->authorization, 0, strlen(h->authorization));
	free(h->authorization);
	free(h->content_type);
	free(h->ca_file);
	free(h->body);
	free(h->resp);
	pthread_cond_destroy(&h->cv);
	pthread_mutex_destroy(&h->mu);
	free(h);
}

struct ayla_http *ayla_http_start(struct ayla_io *io, const struct ayla_http_request *req,
				  char *err, size_t errlen)
{
	struct ayla_http *h = calloc(1, sizeof *h);
	if (!h) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	pthread_mutex_init(&h->mu, NULL);
	ayla_cond_init(&h->cv);
	h->method = dup_or_null(req->method ? req->method : "GET");
	h->host = dup_or_null(req->host);
	h->path = dup_or_null(req->path ? req->path : "/");
	h->authorization = dup_or_null(req->authorization);
	h->content_type = dup_or_null(req->content_type);
	h->ca_file = dup_or_null(req->ca_file);
	if (req->body_len) {
		h->body = malloc(req->body_len);
		if (h->body)
			memcpy(h->body, req->body, req->body_len);
	}
	h->body_len = req->body_len;
	h->port = req->port;
	h->tls = req->tls;
	h->verify = req->verify;
	h->timeout = req->timeout > 0 ? req->timeout : 30;
	h->max_response = req->max_response ? req->max_response : 16u << 20;
	h->retry_after = -1;
	if (!h->method || !h->host || !h->path || (req->authorization && !h->authorization) ||
	    (req->content_type && !h->content_type) || (req->ca_file && !h->ca_file) ||
	    (req->body_len && !h->body)) {
		snprintf(err, errlen, "out of memory");
		free_fields(h);
		return NULL;
	}
	h->io = io;
	ayla_io_ref(io);
	struct start_call call = {h, err, errlen, 0};
	ayla_io_call(io, start_on_io, &call);
	if (!call.ok) {
		ayla_io_unref(io);
		free_fields(h);
		return NULL;
	}
	return h;
}

int ayla_http_wait(struct ayla_http *h, double seconds)
{
	struct timespec until = ayla_deadline(seconds);
	pthread_mutex_lock(&h->mu);
	while (h->state == AYLA_HTTP_PENDING)
		if (pthread_cond_timedwait(&h->cv, &h->mu, &until) != 0)
			break;
	int done = h->state != AYLA_HTTP_PENDING;
	pthread_mutex_unlock(&h->mu);
	return done;
}

void ayla_http_result(struct ayla_http *h, struct ayla_http_result *out)
{
	pthread_mutex_lock(&h->mu);
	out->state = h->state;
	out->status = h->status;
	out->body = h->state == AYLA_HTTP_DONE ? h->resp : NULL;
	out->body_len = h->state == AYLA_HTTP_DONE ? h->resp_len : 0;
	out->retry_after = h->retry_after;
	out->error = h->state == AYLA_HTTP_FAILED ? h->error : NULL;
	pthread_mutex_unlock(&h->mu);
}

void ayla_http_free(struct ayla_http *h)
{
	if (!h)
		return;
	ayla_io_call(h->io, cancel_on_io, h);
	ayla_io_unref(h->io);
	free_fields(h);
}
