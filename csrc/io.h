/*
 * The module's I/O hub: one libwebsockets client context and one I/O thread
 * shared by every stream (and later every HTTP request) of a module instance.
 *
 * Other threads reach the I/O thread only through ayla_io_call(), which runs a
 * function there and waits for it; the only lws call made from outside is
 * lws_cancel_service(). The hub is reference counted: the thread ends with
 * the last reference.
 *
 * TLS: the hub owns one OpenSSL client SSL_CTX per CA setting (system store,
 * or a ca_file) and hands it to lws as provided_client_ssl_ctx on a vhost of
 * its own. lws 4.1 otherwise tracks its client SSL_CTX through an OpenSSL
 * ex-data index that every TLS context in the process re-allocates, and
 * leaks it when two such contexts overlap (seen with valgrind).
 */
#ifndef AYLA_IO_H
#define AYLA_IO_H

#include <libwebsockets.h>
#include <stddef.h>

/* The first member of every object bound to a client wsi as its userdata,
 * so the hub can tell it why a server certificate was refused. */
struct ayla_io_conn {
	char tls_error[128];
};

struct ayla_io;

struct ayla_io *ayla_io_new(char *err, size_t errlen);
void ayla_io_ref(struct ayla_io *io);
void ayla_io_unref(struct ayla_io *io); /* the last one stops the thread */

struct lws_context *ayla_io_context(struct ayla_io *io);

/* Runs fn(arg) on the I/O thread and returns when it has run. Must not be
 * called from the I/O thread. */
void ayla_io_call(struct ayla_io *io, void (*fn)(void *arg), void *arg);

/* Runs fn(arg) on the I/O thread soon, without waiting. Any thread. If the
 * hub stops first, fn still runs once, on the stopping thread. */
void ayla_io_post(struct ayla_io *io, void (*fn)(void *arg), void *arg);

/* The hub's host-name resolver (resolve.h). */
struct ayla_resolver *ayla_io_resolver(struct ayla_io *io);

/* The vhost whose client connections trust ca_file (NULL: the system's CA
 * store), created on first use. I/O thread only. NULL with err set if the
 * CA file cannot be loaded. */
struct lws_vhost *ayla_io_vhost(struct ayla_io *io, const char *ca_file, char *err, size_t errlen);

/* The OpenSSL client context (SSL_CTX) the hub made for the vhost vh, or
 * NULL. I/O thread only. */
struct ssl_ctx_st;
struct ssl_ctx_st *ayla_io_ssl_ctx(struct ayla_io *io, const struct lws_vhost *vh);

/* 1 if the vhost for ca_file exists already, so that ayla_io_vhost cannot
 * fail for it. Any thread. */
int ayla_io_vhost_known(struct ayla_io *io, const char *ca_file);

/* The hub's pool of kept-alive HTTP connections (http.c). Its lists belong
 * to the I/O thread; its counters may be read from any thread. */
struct ayla_http_pool;
struct ayla_http_pool *ayla_io_http_pool(struct ayla_io *io);

/* Something finished on the I/O thread (a request, a queued event): wakes
 * every ayla_io_wait. Any thread. */
void ayla_io_notify(struct ayla_io *io);

/* Waits until a notification newer than *seen, or `seconds`; returns 1 if
 * one came, and updates *seen. For a scheduler waiting on many things. */
int ayla_io_wait(struct ayla_io *io, double seconds, unsigned long long *seen);

/* The lws client-connection flags for TLS: none for plain connections;
 * with verify off, every certificate check is skipped (tests only). */
int ayla_io_tls_flags(int tls, int verify);

/* The protocol callbacks of the DSS client (stream.c) and of HTTP requests
 * (http.c), listed by the hub. */
int ayla_stream_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
			 size_t len);
int ayla_http_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
		       size_t len);

#endif
