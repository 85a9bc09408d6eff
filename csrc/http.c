/* Asynchronous HTTP/1.1 requests on the module's I/O thread; see http.h.
 *
 * Connection reuse. Each hub keeps a pool of HTTP/1.1 connections per
 * (vhost, host, port, tls, verify): at most POOL_PER_HOST of them, each
 * carrying one request at a time; requests beyond that wait in the host's
 * queue, in order. A connection whose response was complete and reusable
 * (HTTP/1.1, no "Connection: close", a known length, no extra bytes) goes
 * idle and carries the next request; an idle one is closed after
 * POOL_IDLE_SECONDS, or as soon as the server closes it.
 *
 * lws 4.1's own client keep-alive (LCCSCF_PIPELINE) is not used: it queues
 * every request for a host on one connection (no concurrency), ties the
 * queued requests' fate to the first one's, and its error paths on a
 * shared connection are hard to control. Instead each pooled connection is
 * an lws raw client socket (method "RAW"), and this file writes the requests
 * and reads the responses with http_parse.c (status line, headers,
 * Content-Length, chunked, or up to the close). lws 4.1.6 cannot start TLS
 * on a raw client socket, so TLS is done here with the hub's SSL_CTX and the checks lws makes (see
 * tls_start).
 *
 * Retry rule for a stale keep-alive connection (the server closed an idle
 * connection just as a request was given to it): the request is sent again,
 * once, on a fresh connection only if all of these hold:
 *  - the connection had carried an earlier request (a first use is never
 *    retried: its failure is the server's answer to this request);
 *  - not one byte of a response arrived for this request;
 *  - the method is idempotent (GET, HEAD, PUT, DELETE, OPTIONS), or the
 *    request had not been written to the socket yet (for POST: the close
 *    was seen before the write, so the server cannot have processed it).
 * Otherwise the request fails as it did before keep-alive ("the connection
 * closed before the response was complete"). The request's own timeout
 * still covers the whole exchange, retry included.
 */
#include "http.h"

#include "http_parse.h"
#include "io.h"
#include "resolve.h"
#include "util.h"

#include <arpa/inet.h>
#include <libwebsockets.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define POOL_PER_HOST     6  /* connections per host, busy or idle */
#define POOL_IDLE_SECONDS 30 /* an idle connection is closed after this */

struct pool_host;
struct pool_conn;

struct ayla_http {
	struct ayla_io *io;
	char *method, *host, *path, *authorization, *content_type, *ca_file, *body;
	size_t body_len, max_response;
	int port, tls, verify;
	double timeout;

	/* I/O thread only */
	struct pool_host *ph;         /* once started */
	struct pool_conn *conn;       /* the connection carrying it */
	struct ayla_http *queue_next; /* in ph's queue */
	int queued;
	int retried;                /* sent again after a stale connection */
	int holds_slot;             /* a connection slot for its lookup */
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

enum conn_state {
	CONN_OPENING,
	CONN_BUSY,
	CONN_IDLE,
	CONN_DEAD
};

struct pool_conn {
	/* first, as for every wsi's userdata: the hub would write a TLS refusal
	 * here, though lws does no TLS on these raw sockets */
	// cppcheck-suppress unusedStructMember
	struct ayla_io_conn conn;
	struct pool_conn *next; /* every connection of the pool, until its wsi is gone */
	struct ayla_http_pool *pool;
	struct pool_host *ph;
	struct lws *wsi;
	enum conn_state state;
	int in_connect; /* inside lws_client_connect_via_info */
	int gone;       /* its wsi was destroyed */
	unsigned uses;  /* requests given to it */
	struct ayla_http *req;
	int written; /* the request is on the wire */
	SSL *ssl;    /* TLS, done here (see tls_start) */
	BIO *rbio, *wbio;
	int tls_ready;    /* the handshake is done (or plain) */
	int close_notify; /* the server ended TLS properly */
	lws_sorted_usec_list_t sul_idle;

	/* the response being read */
	size_t got; /* bytes received for this request */
	struct http_parser parser;
};

struct pool_host {
	struct pool_host *next;
	struct lws_vhost *vh;
	char *name;
	int port, tls, verify;
	SSL_CTX *ssl_ctx; /* the hub's, for this host's vhost */
	unsigned slots;   /* connections open or opening, and lookups for new ones */
	struct ayla_http *queue, *queue_tail;
};

struct ayla_http_pool {
	struct pool_host *hosts; /* I/O thread */
	struct pool_conn *conns; /* I/O thread */
	atomic_ullong requests, connections, reused, retries;
	atomic_uint open, idle;
};

static void pump(struct pool_host *ph);
static int conn_send(struct pool_conn *c, const unsigned char *data, size_t len);
static void conn_free(struct pool_conn *c);
static void conn_failed(struct pool_conn *c, const char *why);

/* ---- the pool's lifetime (io.c) ---- */

struct ayla_http_pool *ayla_http_pool_new(void)
{
	struct ayla_http_pool *pool = calloc(1, sizeof *pool);
	if (!pool)
		return NULL;
	atomic_init(&pool->requests, 0);
	atomic_init(&pool->connections, 0);
	atomic_init(&pool->reused, 0);
	atomic_init(&pool->retries, 0);
	atomic_init(&pool->open, 0);
	atomic_init(&pool->idle, 0);
	return pool;
}

void ayla_http_pool_free(struct ayla_http_pool *pool)
{
	if (!pool)
		return;
	/* The context is gone: lws will not call back about these again. */
	while (pool->conns) {
		struct pool_conn *c = pool->conns;
		pool->conns = c->next;
		conn_free(c);
	}
	while (pool->hosts) {
		struct pool_host *ph = pool->hosts;
		pool->hosts = ph->next;
		free(ph->name);
		free(ph);
	}
	free(pool);
}

struct ayla_io *ayla_http_io(struct ayla_http *h)
{
	return h->io;
}

void ayla_http_stats(struct ayla_io *io, struct ayla_http_stats *out)
{
	struct ayla_http_pool *pool = ayla_io_http_pool(io);
	out->requests = atomic_load(&pool->requests);
	out->connections = atomic_load(&pool->connections);
	out->reused = atomic_load(&pool->reused);
	out->retries = atomic_load(&pool->retries);
	out->open = atomic_load(&pool->open);
	out->idle = atomic_load(&pool->idle);
}

/* ---- a request's outcome ---- */

static void unqueue(struct ayla_http *h)
{
	if (!h->queued)
		return;
	struct pool_host *ph = h->ph;
	struct ayla_http *prev = NULL;
	for (struct ayla_http *q = ph->queue; q; prev = q, q = q->queue_next)
		if (q == h) {
			if (prev)
				prev->queue_next = h->queue_next;
			else
				ph->queue = h->queue_next;
			if (ph->queue_tail == h)
				ph->queue_tail = prev;
			break;
		}
	h->queue_next = NULL;
	h->queued = 0;
}

/* I/O thread: drops every reference the I/O thread holds to h (timer, queue,
 * lookup, connection); the caller decides what becomes of the connection.
 * Returns the host whose queue may now move. */
static struct pool_host *detach(struct ayla_http *h)
{
	lws_sul_cancel(&h->sul_timeout);
	unqueue(h);
	if (h->lookup) {
		ayla_lookup_cancel(h->lookup); /* its answer will not reach h */
		h->lookup = NULL;
	}
	struct pool_host *ph = h->ph;
	if (h->holds_slot) {
		h->holds_slot = 0;
		ph->slots--;
	}
	if (h->conn) {
		h->conn->req = NULL;
		h->conn = NULL;
	}
	return ph;
}

/* I/O thread: records the outcome once and wakes every waiter. After this the
 * I/O thread never touches h again: the Lua thread may free it at once. */
static void finish(struct ayla_http *h, enum ayla_http_state state, const char *error)
{
	detach(h);
	struct ayla_io *io = h->io;
	pthread_mutex_lock(&h->mu);
	if (h->state == AYLA_HTTP_PENDING) {
		h->state = state;
		if (error)
			snprintf(h->error, sizeof h->error, "%s", error);
		pthread_cond_broadcast(&h->cv);
	}
	pthread_mutex_unlock(&h->mu);
	ayla_io_notify(io);
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

/* ---- connections ---- */

static void set_idle(struct pool_conn *c, int idle)
{
	if ((c->state == CONN_IDLE) == !!idle)
		return;
	if (idle)
		atomic_fetch_add(&c->pool->idle, 1);
	else
		atomic_fetch_sub(&c->pool->idle, 1);
}

/* The connection will carry nothing more: it leaves its host's count and is
 * closed (asynchronously: this may run inside one of its callbacks). */
static void conn_retire(struct pool_conn *c)
{
	if (c->state == CONN_DEAD)
		return;
	set_idle(c, 0);
	c->state = CONN_DEAD;
	c->ph->slots--;
	atomic_fetch_sub(&c->pool->open, 1);
	lws_sul_cancel(&c->sul_idle);
	if (c->wsi)
		lws_set_timeout(c->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
}

static void idle_over(lws_sorted_usec_list_t *sul)
{
	struct pool_conn *c = lws_container_of(sul, struct pool_conn, sul_idle);
	struct pool_host *ph = c->ph;
	conn_retire(c);
	pump(ph);
}

static void reset_response(struct pool_conn *c, const struct ayla_http *h)
{
	http_parse_init(&c->parser, !strcmp(h->method, "HEAD"));
	c->got = 0;
	c->written = 0;
}

/* Gives the connection its next request. */
static void conn_assign(struct pool_conn *c, struct ayla_http *h)
{
	set_idle(c, 0);
	lws_sul_cancel(&c->sul_idle);
	if (c->state != CONN_OPENING)
		c->state = CONN_BUSY;
	reset_response(c, h);
	c->req = h;
	h->conn = c;
	if (c->uses++)
		atomic_fetch_add(&c->pool->reused, 1);
	if (c->state == CONN_BUSY)
		lws_callback_on_writable(c->wsi);
}

/* The connection finished a request and may carry another. */
static void conn_release(struct pool_conn *c)
{
	struct pool_host *ph = c->ph;
	c->req = NULL;
	if (c->state == CONN_DEAD)
		return;
	if (ph->queue) {
		struct ayla_http *next = ph->queue;
		unqueue(next);
		conn_assign(c, next);
		return;
	}
	if (!c->wsi) {
		conn_retire(c);
		return;
	}
	set_idle(c, 1);
	c->state = CONN_IDLE;
	lws_sul_schedule(lws_get_context(c->wsi), 0, &c->sul_idle, idle_over,
			 (lws_usec_t)POOL_IDLE_SECONDS * LWS_USEC_PER_SEC);
}

static void conn_open(struct ayla_http *h, const char *address)
{
	struct pool_host *ph = h->ph;
	struct ayla_http_pool *pool = ayla_io_http_pool(h->io);
	struct pool_conn *c = calloc(1, sizeof *c);
	if (!c) {
		finish(h, AYLA_HTTP_FAILED, "out of memory");
		pump(ph);
		return;
	}
	/* The slot the lookup held passes to the connection. */
	if (h->holds_slot)
		h->holds_slot = 0;
	else
		ph->slots++;
	c->pool = pool;
	c->ph = ph;
	c->state = CONN_OPENING;
	c->next = pool->conns;
	pool->conns = c;
	atomic_fetch_add(&pool->connections, 1);
	atomic_fetch_add(&pool->open, 1);
	conn_assign(c, h);

	struct lws_client_connect_info i;
	memset(&i, 0, sizeof i);
	i.context = ayla_io_context(h->io);
	i.vhost = ph->vh;
	i.address = address;
	i.port = ph->port;
	i.path = "";
	i.host = ph->name; /* for SNI and the certificate's host-name check */
	i.origin = ph->name;
	i.method = "RAW";
	i.protocol = "ayla-http";
	i.local_protocol_name = "ayla-http";
	i.userdata = c;
	i.pwsi = &c->wsi;
	i.ssl_connection = 0; /* TLS is done here: see tls_start */
	c->in_connect = 1;
	struct lws *wsi = lws_client_connect_via_info(&i);
	c->in_connect = 0;
	if (!wsi || c->gone) {
		c->wsi = NULL;
		/* lws may have reported the failure already (then h is finished). */
		if (c->req) {
			char why[300];
			snprintf(why, sizeof why, "cannot reach %s:%d", ph->name, ph->port);
			finish(c->req, AYLA_HTTP_FAILED, why);
		}
		conn_retire(c);
		c->gone = 1;
		/* no wsi: nothing will call back about c */
		for (struct pool_conn **pp = &pool->conns; *pp; pp = &(*pp)->next)
			if (*pp == c) {
				*pp = c->next;
				break;
			}
		conn_free(c);
		pump(ph);
	}
}

static void on_resolved(void *owner, const char *address, const char *error)
{
	struct ayla_http *h = owner;
	h->lookup = NULL;
	if (!address) {
		struct pool_host *ph = h->ph;
		finish(h, AYLA_HTTP_FAILED, error); /* gives its slot back */
		pump(ph);
	} else if (h->state == AYLA_HTTP_PENDING) { /* not timed out meanwhile */
		conn_open(h, address);
	}
}

/* Starts a new connection for h: its slot is counted from now. */
static void open_for(struct ayla_http *h)
{
	struct pool_host *ph = h->ph;
	char address[64];
	struct ayla_resolver *r = ayla_io_resolver(h->io);
	if (ayla_resolve_now(r, ph->name, address, sizeof address)) {
		conn_open(h, address);
		return;
	}
	ph->slots++;
	h->holds_slot = 1;
	h->lookup = ayla_resolve(r, ph->name, on_resolved, h); /* off this thread */
	if (!h->lookup) {
		finish(h, AYLA_HTTP_FAILED, "out of memory");
		pump(ph);
	}
}

static struct pool_conn *idle_conn(const struct ayla_http_pool *pool, const struct pool_host *ph)
{
	for (struct pool_conn *c = pool->conns; c; c = c->next)
		if (c->ph == ph && c->state == CONN_IDLE)
			return c;
	return NULL;
}

/* Moves the host's queue: idle connections first, then new ones up to the cap. */
static void pump(struct pool_host *ph)
{
	while (ph->queue) {
		struct ayla_http *h = ph->queue;
		struct pool_conn *c = idle_conn(ayla_io_http_pool(h->io), ph);
		if (!c && ph->slots >= POOL_PER_HOST)
			return;
		unqueue(h);
		if (c)
			conn_assign(c, h);
		else
			open_for(h);
	}
}

/* ---- writing a request ---- */

static int is_idempotent(const char *method)
{
	return !strcmp(method, "GET") || !strcmp(method, "HEAD") || !strcmp(method, "PUT") ||
	       !strcmp(method, "DELETE") || !strcmp(method, "OPTIONS");
}

static int write_request(struct pool_conn *c, struct ayla_http *h)
{
	struct pool_host *ph = c->ph;
	char hostport[300];
	int v6 = strchr(ph->name, ':') != NULL;
	int default_port = ph->port == (ph->tls ? 443 : 80);
	if (default_port)
		snprintf(hostport, sizeof hostport, v6 ? "[%s]" : "%s", ph->name);
	else
		snprintf(hostport, sizeof hostport, v6 ? "[%s]:%d" : "%s:%d", ph->name, ph->port);
	size_t cap = 256 + strlen(h->method) + strlen(h->path) + strlen(hostport) +
		     (h->authorization ? strlen(h->authorization) : 0) +
		     (h->content_type ? strlen(h->content_type) : 0) + h->body_len;
	unsigned char *buf = malloc(LWS_PRE + cap);
	if (!buf)
		return -1;
	char *p = (char *)buf + LWS_PRE;
	int n = snprintf(p, cap,
			 "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: ayla-lua\r\n"
			 "Accept: application/json\r\n%s%s%s%s%s%s",
			 h->method, h->path, hostport, h->authorization ? "Authorization: " : "",
			 h->authorization ? h->authorization : "", h->authorization ? "\r\n" : "",
			 h->content_type ? "Content-Type: " : "",
			 h->content_type ? h->content_type : "", h->content_type ? "\r\n" : "");
	if (n < 0 || (size_t)n >= cap)
		goto fail;
	size_t len = (size_t)n;
	if (h->body_len)
		len += (size_t)snprintf(p + len, cap - len, "Content-Length: %zu\r\n", h->body_len);
	len += (size_t)snprintf(p + len, cap - len, "\r\n");
	if (len + h->body_len > cap)
		goto fail;
	if (h->body_len)
		memcpy(p + len, h->body, h->body_len);
	len += h->body_len;
	/* lws keeps whatever the socket does not take now and sends it later. */
	int rc = conn_send(c, (unsigned char *)p, len);
	if (h->authorization) /* the token: do not leave it in freed memory */
		memset(p, 0, len);
	free(buf);
	return rc;
fail:
	free(buf);
	return -1;
}

/* ---- reading a response (the parser is http_parse.c) ---- */

static int body_to_request(void *ud, const char *data, size_t len)
{
	return append(ud, data, len);
}

/* The request on c is answered: hand the answer over, then reuse or close c. */
static void response_done(struct pool_conn *c, int reusable)
{
	struct ayla_http *h = c->req;
	struct pool_host *ph = c->ph;
	int ok = h->resp || !append(h, "", 0);
	h->status = c->parser.status;
	h->retry_after = c->parser.retry_after;
	/* The connection's fate first, so that the pool's counters are up to
	 * date when the request's owner wakes. */
	c->req = NULL;
	h->conn = NULL;
	if (!reusable || !ok)
		conn_retire(c);
	conn_release(c);
	finish(h, ok ? AYLA_HTTP_DONE : AYLA_HTTP_FAILED, ok ? NULL : "out of memory");
	pump(ph);
}

/* The connection ended (closed, or failed to open) with a request on it. */
static void conn_failed(struct pool_conn *c, const char *why)
{
	struct ayla_http *h = c->req;
	struct pool_host *ph = c->ph;
	int was_reused = c->uses > 1;
	int retry = h && was_reused && !c->got && !h->retried &&
		    (is_idempotent(h->method) || !c->written);
	conn_retire(c);
	if (h && c->parser.framing == HTTP_FRAMING_CLOSE && c->parser.head_done) {
		/* The close ends this body, unless TLS ended without close_notify:
		 * then the body may have been cut short by an attacker. */
		if (!c->ssl || c->close_notify) {
			if (http_parse_close(&c->parser) == HTTP_PARSE_DONE) {
				response_done(c, 0);
				return;
			}
		} else {
			why = "the TLS connection closed without close_notify: the response may be "
			      "truncated";
		}
	}
	if (h) {
		c->req = NULL;
		h->conn = NULL;
		if (retry) {
			/* A stale keep-alive connection (see the rule at the top). */
			h->retried = 1;
			atomic_fetch_add(&c->pool->retries, 1);
			open_for(h); /* a fresh one: c's slot was just given back */
		} else {
			finish(h, AYLA_HTTP_FAILED, why);
		}
	}
	pump(ph);
}

/* ---- TLS ----
 *
 * lws 4.1.6 cannot start TLS on a raw client socket (it tries before the
 * socket exists: "tls start fail"), so on a pooled connection TLS is done
 * here with OpenSSL over memory BIOs, on the plain raw socket lws gives us.
 * The checks are the ones lws makes for its own client connections, with
 * the same SSL_CTX (the hub's, with the same CA store): the peer's
 * certificate is verified (SSL_VERIFY_PEER) and must match the host name
 * (X509_VERIFY_PARAM_set1_host, no partial wildcards) or, for a numeric
 * host, its address (X509_VERIFY_PARAM_set1_ip_asc); SNI names the host.
 * With verify off, nothing is checked (tests only, as ayla_io_tls_flags). */

static int tls_start(struct pool_conn *c)
{
	struct pool_host *ph = c->ph;
	ERR_clear_error();
	if (!ph->ssl_ctx || !(c->ssl = SSL_new(ph->ssl_ctx)))
		return -1;
	BIO *r = BIO_new(BIO_s_mem()), *w = BIO_new(BIO_s_mem());
	if (!r || !w) {
		BIO_free(r);
		BIO_free(w);
		return -1;
	}
	SSL_set_bio(c->ssl, r, w); /* the SSL owns them now */
	c->rbio = r;
	c->wbio = w;
	SSL_set_connect_state(c->ssl);
	if (ph->verify) {
		SSL_set_verify(c->ssl, SSL_VERIFY_PEER, NULL);
		X509_VERIFY_PARAM *param = SSL_get0_param(c->ssl);
		X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
		if (!X509_VERIFY_PARAM_set1_ip_asc(param, ph->name) &&
		    !X509_VERIFY_PARAM_set1_host(param, ph->name, 0))
			return -1;
	} else {
		SSL_set_verify(c->ssl, SSL_VERIFY_NONE, NULL);
	}
	unsigned char ip[16];
	if (inet_pton(AF_INET, ph->name, ip) != 1 && inet_pton(AF_INET6, ph->name, ip) != 1)
		SSL_set_tlsext_host_name(c->ssl, ph->name);
	static const unsigned char alpn[] = "\x08http/1.1";
	SSL_set_alpn_protos(c->ssl, alpn, sizeof alpn - 1);
	ERR_clear_error();
	int n = SSL_do_handshake(c->ssl);
	if (n <= 0 && SSL_get_error(c->ssl, n) != SSL_ERROR_WANT_READ)
		return -1;
	lws_callback_on_writable(c->wsi); /* the ClientHello */
	return 0;
}

/* Why the handshake failed, in the words lws' own connections use. */
static void tls_failure(struct pool_conn *c, char *why, size_t len)
{
	long vr = c->ssl ? SSL_get_verify_result(c->ssl) : X509_V_OK;
	if (c->ph->verify && vr != X509_V_OK) {
		snprintf(why, len, "TLS: the certificate of %s was refused: %s", c->ph->name,
			 X509_verify_cert_error_string(vr));
		return;
	}
	char reason[160];
	unsigned long e = ERR_get_error();
	if (e)
		ERR_error_string_n(e, reason, sizeof reason);
	else
		snprintf(reason, sizeof reason, "the server ended it");
	snprintf(why, len, "cannot reach %s:%d: TLS handshake failed: %s", c->ph->name, c->ph->port,
		 reason);
	ERR_clear_error();
}

/* Sends whatever OpenSSL has produced, in one write. */
static int tls_flush(struct pool_conn *c)
{
	size_t pending = BIO_ctrl_pending(c->wbio);
	if (!pending)
		return 0;
	unsigned char *buf = malloc(LWS_PRE + pending);
	if (!buf)
		return -1;
	int n = BIO_read(c->wbio, buf + LWS_PRE, (int)pending);
	int w = n > 0 ? lws_write(c->wsi, buf + LWS_PRE, (size_t)n, LWS_WRITE_RAW) : 0;
	free(buf);
	return n > 0 && w < n ? -1 : 0;
}

static void conn_free(struct pool_conn *c)
{
	SSL_free(c->ssl); /* and its BIOs */
	free(c);
}

/* Sends request bytes, through TLS when the connection has it. */
static int conn_send(struct pool_conn *c, const unsigned char *data, size_t len)
{
	if (!c->ssl)
		return lws_write(c->wsi, (unsigned char *)data, len, LWS_WRITE_RAW) < (int)len ? -1
											       : 0;
	ERR_clear_error();
	if (SSL_write(c->ssl, data, (int)len) != (int)len) /* a memory BIO takes it all */
		return -1;
	return tls_flush(c);
}

/* Response bytes (decrypted, if TLS) for the connection. */
static void plain_rx(struct pool_conn *c, const char *in, size_t len)
{
	if (c->state == CONN_DEAD || !len)
		return;
	if (!c->req || !c->written) { /* nothing was asked: a server's goodbye */
		conn_retire(c);
		pump(c->ph);
		return;
	}
	size_t used = 0;
	c->got += len;
	enum http_parse_result r =
		http_parse_feed(&c->parser, in, len, &used, body_to_request, c->req);
	if (r == HTTP_PARSE_MORE)
		return;
	if (r == HTTP_PARSE_DONE) {
		/* Reused only if nothing follows the response and all of the request
		 * went out: the rest of a request answered early would otherwise
		 * reach the server as the start of the next one. */
		response_done(c, c->parser.keep && used == len && c->wsi &&
					 !lws_partial_buffered(c->wsi));
		return;
	}
	finish(c->req, AYLA_HTTP_FAILED,
	       r == HTTP_PARSE_STOPPED ? "the response is larger than max_response"
				       : "the server's answer is not valid HTTP/1.1");
	conn_retire(c); /* closed later: c stays valid here */
	pump(c->ph);
}

/* Received TLS records: the handshake, then decrypted response bytes.
 * Returns -1 to close the connection. */
static int tls_rx(struct pool_conn *c, const char *in, size_t len)
{
	if (BIO_write(c->rbio, in, (int)len) != (int)len)
		return -1;
	ERR_clear_error();
	if (!c->tls_ready) {
		int n = SSL_do_handshake(c->ssl);
		if (n <= 0) {
			int e = SSL_get_error(c->ssl, n);
			if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
				char why[256];
				tls_failure(c, why, sizeof why);
				conn_failed(c, why);
				return -1;
			}
			if (BIO_ctrl_pending(c->wbio))
				lws_callback_on_writable(c->wsi);
			return 0;
		}
		c->tls_ready = 1;
		lws_callback_on_writable(c->wsi); /* the request, or the handshake's end */
	}
	char buf[16384];
	while (1) {
		int n = SSL_read(c->ssl, buf, sizeof buf);
		if (n > 0) {
			plain_rx(c, buf, (size_t)n);
			continue;
		}
		int e = SSL_get_error(c->ssl, n);
		if (e == SSL_ERROR_WANT_READ)
			break;
		if (e == SSL_ERROR_ZERO_RETURN)
			c->close_notify = 1;
		ERR_clear_error();
		return -1; /* the server's close_notify, or an error: closed below */
	}
	if (BIO_ctrl_pending(c->wbio))
		lws_callback_on_writable(c->wsi);
	return 0;
}

int ayla_http_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
		       size_t len)
{
	struct pool_conn *c = user;
	(void)wsi;
	if (!c)
		return 0;

	switch (reason) {
	case LWS_CALLBACK_RAW_CONNECTED:
		if (c->state != CONN_OPENING)
			break;
		c->state = CONN_BUSY;
		if (c->ph->tls) {
			if (tls_start(c)) {
				char why[256];
				tls_failure(c, why, sizeof why);
				conn_failed(c, why);
				return -1;
			}
			break;
		}
		c->tls_ready = 1;
		if (c->req)
			lws_callback_on_writable(wsi);
		else
			conn_release(c);
		break;
	case LWS_CALLBACK_RAW_WRITEABLE:
		if (c->ssl && tls_flush(c)) {
			conn_failed(c, "the connection closed before the response was complete");
			return -1;
		}
		if (c->state == CONN_BUSY && c->tls_ready && !c->req) {
			conn_release(c); /* its request went while TLS was starting */
			break;
		}
		if (c->state != CONN_BUSY || !c->tls_ready || !c->req || c->written)
			break;
		c->written = 1;
		if (write_request(c, c->req)) {
			c->written = 0; /* nothing reliable went out */
			conn_failed(c, "the connection closed before the response was complete");
			return -1;
		}
		break;
	case LWS_CALLBACK_RAW_RX:
		if (c->ssl)
			return tls_rx(c, in, len);
		plain_rx(c, in, len);
		break;
	case LWS_CALLBACK_CLIENT_CONNECTION_ERROR: {
		char why[256];
		snprintf(why, sizeof why, "cannot reach %s:%d: %.*s", c->ph->name, c->ph->port,
			 (int)(in ? strnlen(in, 120) : 7), in ? (const char *)in : "unknown");
		c->wsi = NULL;
		conn_failed(c, why);
		break;
	}
	case LWS_CALLBACK_RAW_CLOSE:
		if (c->ssl && !c->tls_ready) {
			char why[256];
			tls_failure(c, why, sizeof why);
			conn_failed(c, why);
		} else {
			conn_failed(c, "the connection closed before the response was complete");
		}
		c->wsi = NULL;
		break;
	case LWS_CALLBACK_WSI_DESTROY: {
		/* the last callback of the connection */
		if (c->state != CONN_DEAD || c->req)
			conn_failed(c, "the connection closed before the response was complete");
		c->wsi = NULL;
		c->gone = 1;
		if (c->in_connect)
			break; /* conn_open frees it */
		struct ayla_http_pool *pool = c->pool;
		for (struct pool_conn **pp = &pool->conns; *pp; pp = &(*pp)->next)
			if (*pp == c) {
				*pp = c->next;
				break;
			}
		conn_free(c);
		break;
	}
	default:
		break;
	}
	return 0;
}

/* ---- starting and cancelling ---- */

static void timed_out(lws_sorted_usec_list_t *sul)
{
	struct ayla_http *h = lws_container_of(sul, struct ayla_http, sul_timeout);
	char why[96];
	snprintf(why, sizeof why, "no complete answer within %.1f s (timeout)", h->timeout);
	struct pool_conn *c = h->conn;
	struct pool_host *ph = h->ph;
	finish(h, AYLA_HTTP_FAILED, why);
	if (c) /* an answer may still be coming: the connection cannot be reused */
		conn_retire(c);
	if (ph)
		pump(ph);
}

static struct pool_host *host_for(struct ayla_http_pool *pool, struct lws_vhost *vh,
				  const struct ayla_http *h)
{
	for (struct pool_host *ph = pool->hosts; ph; ph = ph->next)
		if (ph->vh == vh && ph->port == h->port && ph->tls == h->tls &&
		    ph->verify == h->verify && !strcmp(ph->name, h->host))
			return ph;
	struct pool_host *ph = calloc(1, sizeof *ph);
	if (!ph || !(ph->name = strdup(h->host))) {
		free(ph);
		return NULL;
	}
	ph->vh = vh;
	ph->ssl_ctx = ayla_io_ssl_ctx(h->io, vh);
	ph->port = h->port;
	ph->tls = h->tls;
	ph->verify = h->verify;
	ph->next = pool->hosts;
	pool->hosts = ph;
	return ph;
}

struct start_call {
	struct ayla_http *h;
	char *err;
	size_t errlen;
	int ok;
};

/* I/O thread: finds the host's pool and gives h a connection, or queues it. */
static int start_request(struct ayla_http *h, char *err, size_t errlen)
{
	struct lws_vhost *vh = ayla_io_vhost(h->io, h->ca_file, err, errlen);
	if (!vh)
		return -1;
	struct ayla_http_pool *pool = ayla_io_http_pool(h->io);
	h->ph = host_for(pool, vh, h);
	if (!h->ph) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	atomic_fetch_add(&pool->requests, 1);
	/* The timeout covers the wait for a connection and the name lookup too. */
	lws_sul_schedule(ayla_io_context(h->io), 0, &h->sul_timeout, timed_out,
			 (lws_usec_t)(h->timeout * LWS_USEC_PER_SEC));
	if (h->ph->queue_tail)
		h->ph->queue_tail->queue_next = h;
	else
		h->ph->queue = h;
	h->ph->queue_tail = h;
	h->queued = 1;
	pump(h->ph);
	return 0;
}

static void start_on_io(void *arg)
{
	struct start_call *call = arg;
	call->ok = !start_request(call->h, call->err, call->errlen);
}

/* Posted (nobody waits): the CA setting's vhost exists already, so the only
 * failure left is running out of memory, reported as the request's outcome. */
static void start_posted(void *arg)
{
	struct ayla_http *h = arg;
	char err[256];
	if (start_request(h, err, sizeof err))
		finish(h, AYLA_HTTP_FAILED, err);
}

static void cancel_on_io(void *arg)
{
	struct ayla_http *h = arg;
	if (h->state != AYLA_HTTP_PENDING)
		return; /* finished meanwhile: nothing refers to it any more */
	struct pool_conn *c = h->conn;
	struct pool_host *ph = h->ph ? detach(h) : NULL;
	if (c) /* a request half done: the connection cannot be reused */
		conn_retire(c);
	if (ph)
		pump(ph);
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

/* Header values and the request line cannot carry line breaks. */
static int has_line_break(const char *s)
{
	return s && strpbrk(s, "\r\n") != NULL;
}

struct ayla_http *ayla_http_start(struct ayla_io *io, const struct ayla_http_request *req,
				  char *err, size_t errlen)
{
	if (has_line_break(req->method) || has_line_break(req->host) || has_line_break(req->path) ||
	    has_line_break(req->authorization) || has_line_break(req->content_type) ||
	    (req->path && strchr(req->path, ' ')) || (req->method && strchr(req->method, ' '))) {
		snprintf(err, errlen, "a line break or space in the method, path or a header");
		return NULL;
	}
	struct ayla_http *h = calloc(1, sizeof *h);
	if (!h) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	pthread_mutex_init(&h->mu, NULL);
	ayla_cond_init(&h->cv);
	h->method = dup_or_null(req->method ? req->method : "GET");
	h->host = dup_or_null(req->host);
	h->path = dup_or_null(req->path && req->path[0] ? req->path : "/");
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
	if (ayla_io_vhost_known(io, h->ca_file)) {
		/* The common case: no need to wait for the I/O thread. Posts run
		 * in order and before any later ayla_io_call (a cancel). */
		ayla_io_post(io, start_posted, h);
		return h;
	}
	/* A new CA setting: wait, so that an unreadable ca_file fails here. */
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
	/* written by the I/O thread before the state, not under mu */
	int over = h->state != AYLA_HTTP_PENDING;
	out->status = over ? h->status : 0;
	out->body = h->state == AYLA_HTTP_DONE ? h->resp : NULL;
	out->body_len = h->state == AYLA_HTTP_DONE ? h->resp_len : 0;
	out->retry_after = over ? h->retry_after : -1;
	out->error = h->state == AYLA_HTTP_FAILED ? h->error : NULL;
	pthread_mutex_unlock(&h->mu);
}

void ayla_http_free(struct ayla_http *h)
{
	if (!h)
		return;
	pthread_mutex_lock(&h->mu);
	int pending = h->state == AYLA_HTTP_PENDING;
	pthread_mutex_unlock(&h->mu);
	/* A finished request is no longer known to the I/O thread (finish). */
	if (pending)
		ayla_io_call(h->io, cancel_on_io, h);
	ayla_io_unref(h->io);
	free_fields(h);
}
