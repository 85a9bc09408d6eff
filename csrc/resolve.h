/*
 * Host-name lookups off the I/O thread. Debian's libwebsockets 4.1 resolves
 * with a blocking getaddrinfo() on its service thread, so a slow resolver
 * would stall every stream's heartbeats. The hub's resolver thread looks
 * names up instead; the result comes back on the I/O thread, where the
 * connection is made to the numeric address (the name still goes in the
 * Host header and TLS checks). Recent answers are cached for a minute.
 *
 * Every function here except ayla_resolver_new/free runs on the I/O thread.
 */
#ifndef AYLA_RESOLVE_H
#define AYLA_RESOLVE_H

#include <stddef.h>

struct ayla_resolver;
struct ayla_lookup;

/* Runs fn(arg) later on the I/O thread (ayla_io_post). */
typedef void (*ayla_post_fn)(void *ctx, void (*fn)(void *arg), void *arg);

/* address is NULL on failure, with error saying why. */
typedef void (*ayla_resolved_fn)(void *owner, const char *address, const char *error);

struct ayla_resolver *ayla_resolver_new(ayla_post_fn post, void *post_ctx);
/* Joins the thread. Lookups still pending deliver nothing. */
void ayla_resolver_free(struct ayla_resolver *r);

/* 1 with the numeric address in out if host is an address already or was
 * looked up recently; 0 if a lookup is needed. */
int ayla_resolve_now(struct ayla_resolver *r, const char *host, char *out, size_t outlen);

/* Starts a lookup; fn runs later on the I/O thread unless cancelled first.
 * NULL if out of memory. */
struct ayla_lookup *ayla_resolve(struct ayla_resolver *r, const char *host, ayla_resolved_fn fn,
				 void *owner);
void ayla_lookup_cancel(struct ayla_lookup *l);

#endif
