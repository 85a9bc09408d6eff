/* The module's I/O hub; see io.h. */
#include "io.h"

#include "http.h"
#include "iothread.h"
#include "resolve.h"
#include "util.h"

#include <errno.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <math.h>

struct io_call {
	struct io_call *next;
	void (*fn)(void *arg);
	void *arg;
	int done;
};

/* A client vhost per CA setting, with the SSL_CTX the hub owns. */
struct io_vhost {
	struct io_vhost *next;
	char *ca_file; /* NULL: the system store */
	SSL_CTX *ssl_ctx;
	struct lws_vhost *vh;
};

struct ayla_io {
	struct ayla_iothread thread;
	atomic_int refs;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct io_call *calls; /* order does not matter: each caller waits for its own */
	struct io_call *posts, *posts_tail; /* in order; nobody waits for them */
	struct ayla_resolver *resolver;
	struct io_vhost *vhosts; /* written on the I/O thread under mu (and the teardown) */
	struct ayla_http_pool *http_pool;
	unsigned long long notified; /* under mu: count of ayla_io_notify calls */
	unsigned vhost_count;
};

static void post_to_io(void *ctx, void (*fn)(void *arg), void *arg)
{
	ayla_io_post(ctx, fn, arg);
}

static void run_posts(struct ayla_io *io)
{
	pthread_mutex_lock(&io->mu);
	struct io_call *p = io->posts;
	io->posts = io->posts_tail = NULL;
	pthread_mutex_unlock(&io->mu);
	while (p) {
		struct io_call *next = p->next;
		p->fn(p->arg);
		free(p);
		p = next;
	}
}

static void run_calls(struct ayla_io *io)
{
	run_posts(io);
	pthread_mutex_lock(&io->mu);
	struct io_call *c = io->calls;
	io->calls = NULL;
	pthread_mutex_unlock(&io->mu);
	while (c) {
		struct io_call *next = c->next; /* c lives on its caller's stack */
		c->fn(c->arg);
		pthread_mutex_lock(&io->mu);
		c->done = 1;
		pthread_cond_broadcast(&io->cv);
		pthread_mutex_unlock(&io->mu);
		c = next;
	}
}

static int hub_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
			size_t len)
{
	struct ayla_io *io = lws_context_user(lws_get_context(wsi));
	(void)in;
	switch (reason) {
	case LWS_CALLBACK_EVENT_WAIT_CANCELLED:
		if (io)
			run_calls(io);
		break;
	case LWS_CALLBACK_OPENSSL_PERFORM_SERVER_CERT_VERIFICATION: {
		/* Sent to protocols[0] whatever the connection: keep OpenSSL's
		 * reason on the connection's object for its error message. */
		struct ayla_io_conn *conn = wsi ? lws_wsi_user(wsi) : NULL;
		if (!len && user && conn)
			snprintf(conn->tls_error, sizeof conn->tls_error, "%s",
				 X509_verify_cert_error_string(
					 X509_STORE_CTX_get_error((X509_STORE_CTX *)user)));
		break;
	}
	default:
		break;
	}
	return 0;
}

static const struct lws_protocols protocols[] = {
	{"ayla-io", hub_callback, 0, 0, 0, NULL, 0},
	{"ayla-dss", ayla_stream_callback, 0, 0, 0, NULL, 0},
	{"ayla-http", ayla_http_callback, 0, 0, 0, NULL, 0},
	{NULL, NULL, 0, 0, 0, NULL, 0},
};

static SSL_CTX *new_client_ssl_ctx(const char *ca_file, char *err, size_t errlen)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	if (!ctx) {
		snprintf(err, errlen, "cannot create a TLS context");
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_mode(ctx, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS);
	int ok = ca_file ? SSL_CTX_load_verify_locations(ctx, ca_file, NULL)
			 : SSL_CTX_set_default_verify_paths(ctx);
	if (ok != 1) {
		char why[120];
		ERR_error_string_n(ERR_get_error(), why, sizeof why);
		snprintf(err, errlen, "cannot load %s: %s",
			 ca_file ? ca_file : "the system CA store", why);
		SSL_CTX_free(ctx);
		return NULL;
	}
	/* lws sets SSL_VERIFY_PEER and the host name on each connection. */
	return ctx;
}

struct lws_vhost *ayla_io_vhost(struct ayla_io *io, const char *ca_file, char *err, size_t errlen)
{
	for (struct io_vhost *v = io->vhosts; v; v = v->next)
		if ((!v->ca_file && !ca_file) ||
		    (v->ca_file && ca_file && !strcmp(v->ca_file, ca_file)))
			return v->vh;

	struct io_vhost *v = calloc(1, sizeof *v);
	if (!v || (ca_file && !(v->ca_file = strdup(ca_file)))) {
		snprintf(err, errlen, "out of memory");
		free(v);
		return NULL;
	}
	v->ssl_ctx = new_client_ssl_ctx(ca_file, err, errlen);
	if (!v->ssl_ctx) {
		free(v->ca_file);
		free(v);
		return NULL;
	}
	char name[32];
	snprintf(name, sizeof name, "client-%u", io->vhost_count++);
	struct lws_context_creation_info info;
	memset(&info, 0, sizeof info);
	info.port = CONTEXT_PORT_NO_LISTEN;
	info.protocols = protocols;
	info.vhost_name = name;
	info.options = LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
	info.provided_client_ssl_ctx = v->ssl_ctx;
	v->vh = lws_create_vhost(ayla_iothread_context(&io->thread), &info);
	if (!v->vh) {
		snprintf(err, errlen, "cannot create a libwebsockets vhost");
		SSL_CTX_free(v->ssl_ctx);
		free(v->ca_file);
		free(v);
		return NULL;
	}
	pthread_mutex_lock(&io->mu); /* ayla_io_vhost_known reads the list from other threads */
	v->next = io->vhosts;
	io->vhosts = v;
	pthread_mutex_unlock(&io->mu);
	return v->vh;
}

SSL_CTX *ayla_io_ssl_ctx(struct ayla_io *io, const struct lws_vhost *vh)
{
	for (struct io_vhost *v = io->vhosts; v; v = v->next)
		if (v->vh == vh)
			return v->ssl_ctx;
	return NULL;
}

int ayla_io_vhost_known(struct ayla_io *io, const char *ca_file)
{
	int known = 0;
	pthread_mutex_lock(&io->mu);
	for (struct io_vhost *v = io->vhosts; v && !known; v = v->next)
		known = (!v->ca_file && !ca_file) ||
			(v->ca_file && ca_file && !strcmp(v->ca_file, ca_file));
	pthread_mutex_unlock(&io->mu);
	return known;
}

struct ayla_http_pool *ayla_io_http_pool(struct ayla_io *io)
{
	return io->http_pool;
}

struct ayla_io *ayla_io_new(char *err, size_t errlen)
{
	struct ayla_io *io = calloc(1, sizeof *io);
	if (!io) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	atomic_init(&io->refs, 1);
	io->http_pool = ayla_http_pool_new();
	if (!io->http_pool) {
		snprintf(err, errlen, "out of memory");
		free(io);
		return NULL;
	}
	pthread_mutex_init(&io->mu, NULL);
	ayla_cond_init(&io->cv);

	ayla_lws_logging();
	struct lws_context_creation_info info;
	memset(&info, 0, sizeof info);
	info.port = CONTEXT_PORT_NO_LISTEN;
	info.protocols = protocols;
	info.options = LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT | LWS_SERVER_OPTION_EXPLICIT_VHOSTS;
	info.user = io;
	struct lws_context *ctx = lws_create_context(&info);
	if (!ctx) {
		snprintf(err, errlen, "cannot create the libwebsockets context");
		ayla_http_pool_free(io->http_pool);
		pthread_cond_destroy(&io->cv);
		pthread_mutex_destroy(&io->mu);
		free(io);
		return NULL;
	}
	/* A vhost with protocols[0] must exist for EVENT_WAIT_CANCELLED to be
	 * delivered; the system-store vhost is the one most streams use.
	 * Safe here: the thread is not servicing ctx yet. */
	io->thread.ctx = ctx;
	if (!ayla_io_vhost(io, NULL, err, errlen)) {
		lws_context_destroy(ctx);
		ayla_http_pool_free(io->http_pool);
		pthread_cond_destroy(&io->cv);
		pthread_mutex_destroy(&io->mu);
		free(io);
		return NULL;
	}
	io->resolver = ayla_resolver_new(post_to_io, io);
	int rc = io->resolver ? ayla_iothread_start(&io->thread, ctx) : ENOMEM;
	if (!io->resolver)
		lws_context_destroy(ctx);
	if (rc) {
		snprintf(err, errlen, "cannot start the I/O thread: %s", strerror(rc));
		io->thread.ctx = NULL; /* destroyed by the failed start */
		ayla_resolver_free(io->resolver);
		while (io->vhosts) {
			struct io_vhost *v = io->vhosts;
			io->vhosts = v->next;
			SSL_CTX_free(v->ssl_ctx);
			free(v->ca_file);
			free(v);
		}
		ayla_http_pool_free(io->http_pool);
		pthread_cond_destroy(&io->cv);
		pthread_mutex_destroy(&io->mu);
		free(io);
		return NULL;
	}
	return io;
}

struct lws_context *ayla_io_context(struct ayla_io *io)
{
	return ayla_iothread_context(&io->thread);
}

void ayla_io_ref(struct ayla_io *io)
{
	atomic_fetch_add(&io->refs, 1);
}

void ayla_io_unref(struct ayla_io *io)
{
	if (!io || atomic_fetch_sub(&io->refs, 1) != 1)
		return;
	ayla_iothread_stop(&io->thread);  /* joins, then destroys the context */
	ayla_resolver_free(io->resolver); /* joins; a last answer may be posted */
	run_posts(io);                    /* single-threaded now: owners are gone */
	/* After the context: closing the idle connections called into the pool. */
	ayla_http_pool_free(io->http_pool);
	while (io->vhosts) {
		struct io_vhost *v = io->vhosts;
		io->vhosts = v->next;
		SSL_CTX_free(v->ssl_ctx); /* after the context: lws no longer uses it */
		free(v->ca_file);
		free(v);
	}
	pthread_cond_destroy(&io->cv);
	pthread_mutex_destroy(&io->mu);
	free(io);
}

void ayla_io_post(struct ayla_io *io, void (*fn)(void *arg), void *arg)
{
	struct io_call *p = calloc(1, sizeof *p);
	if (!p) {
		fn(arg); /* out of memory: run it here rather than lose it */
		return;
	}
	p->fn = fn;
	p->arg = arg;
	pthread_mutex_lock(&io->mu);
	if (io->posts_tail)
		io->posts_tail->next = p;
	else
		io->posts = p;
	io->posts_tail = p;
	pthread_mutex_unlock(&io->mu);
	ayla_iothread_wake(&io->thread);
}

struct ayla_resolver *ayla_io_resolver(struct ayla_io *io)
{
	return io->resolver;
}

int ayla_io_tls_flags(int tls, int verify)
{
	if (!tls)
		return 0;
	if (verify)
		return LCCSCF_USE_SSL;
	return LCCSCF_USE_SSL | LCCSCF_ALLOW_SELFSIGNED | LCCSCF_SKIP_SERVER_CERT_HOSTNAME_CHECK |
	       LCCSCF_ALLOW_EXPIRED | LCCSCF_ALLOW_INSECURE;
}

void ayla_io_notify(struct ayla_io *io)
{
	pthread_mutex_lock(&io->mu);
	io->notified++;
	pthread_cond_broadcast(&io->cv);
	pthread_mutex_unlock(&io->mu);
}

int ayla_io_wait(struct ayla_io *io, double seconds, unsigned long long *seen)
{
	struct timespec until = ayla_deadline(seconds);
	pthread_mutex_lock(&io->mu);
	while (io->notified == *seen)
		if (pthread_cond_timedwait(&io->cv, &io->mu, &until) != 0)
			break;
	int woke = io->notified != *seen;
	*seen = io->notified;
	pthread_mutex_unlock(&io->mu);
	return woke;
}

void ayla_io_call(struct ayla_io *io, void (*fn)(void *arg), void *arg)
{
	struct io_call c = {.fn = fn, .arg = arg};
	pthread_mutex_lock(&io->mu);
	c.next = io->calls;
	/* The record lives on this stack until the I/O thread marks it done below. */
	// cppcheck-suppress autoVariables
	io->calls = &c;
	pthread_mutex_unlock(&io->mu);
	ayla_iothread_wake(&io->thread);
	pthread_mutex_lock(&io->mu);
	while (!c.done)
		pthread_cond_wait(&io->cv, &io->mu);
	pthread_mutex_unlock(&io->mu);
}
