/* Host-name lookups off the I/O thread; see resolve.h. */
#include "resolve.h"

#include "util.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define CACHE_SIZE    16
#define CACHE_SECONDS 60

struct ayla_lookup {
	struct ayla_lookup *next; /* in the resolver's queue */
	struct ayla_resolver *r;
	ayla_resolved_fn fn;
	void *owner;
	int cancelled; /* I/O thread only */
	char host[256];
	char address[INET6_ADDRSTRLEN];
	char error[400];
};

struct cache_entry {
	char host[256];
	char address[INET6_ADDRSTRLEN];
	double expires; /* monotonic; 0 = empty */
};

struct ayla_resolver {
	ayla_post_fn post;
	void *post_ctx;
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct ayla_lookup *head, *tail;      /* waiting for the thread, under mu */
	int stop;                             /* under mu */
	struct cache_entry cache[CACHE_SIZE]; /* I/O thread only */
	unsigned cache_next;
};

/* The thread's work: one getaddrinfo, preferring IPv4 (a server that binds
 * 127.0.0.1 only is common for "localhost"). */
static void look_up(struct ayla_lookup *l)
{
	struct addrinfo hints, *res = NULL;
	memset(&hints, 0, sizeof hints);
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	int rc = getaddrinfo(l->host, NULL, &hints, &res);
	if (rc || !res) {
		snprintf(l->error, sizeof l->error, "cannot resolve %s: %s", l->host,
			 rc ? gai_strerror(rc) : "no address");
		return;
	}
	const struct addrinfo *pick = res;
	for (const struct addrinfo *a = res; a; a = a->ai_next)
		if (a->ai_family == AF_INET) {
			pick = a;
			break;
		}
	const void *raw =
		pick->ai_family == AF_INET
			? (const void *)&((struct sockaddr_in *)pick->ai_addr)->sin_addr
			: (const void *)&((struct sockaddr_in6 *)pick->ai_addr)->sin6_addr;
	if (!inet_ntop(pick->ai_family, raw, l->address, sizeof l->address))
		snprintf(l->error, sizeof l->error, "cannot resolve %s: bad address", l->host);
	freeaddrinfo(res);
}

/* On the I/O thread: the answer goes to its owner unless it was cancelled. */
static void deliver(void *arg)
{
	struct ayla_lookup *l = arg;
	if (!l->cancelled) {
		struct ayla_resolver *r = l->r;
		if (l->address[0]) {
			struct cache_entry *e = &r->cache[r->cache_next++ % CACHE_SIZE];
			snprintf(e->host, sizeof e->host, "%s", l->host);
			snprintf(e->address, sizeof e->address, "%s", l->address);
			e->expires = ayla_monotime() + CACHE_SECONDS;
		}
		l->fn(l->owner, l->address[0] ? l->address : NULL, l->error);
	}
	free(l);
}

static void *resolver_loop(void *arg)
{
	struct ayla_resolver *r = arg;
	pthread_mutex_lock(&r->mu);
	for (;;) {
		while (!r->head && !r->stop)
			pthread_cond_wait(&r->cv, &r->mu);
		if (r->stop)
			break;
		struct ayla_lookup *l = r->head;
		r->head = l->next;
		if (!r->head)
			r->tail = NULL;
		pthread_mutex_unlock(&r->mu);
		look_up(l);
		r->post(r->post_ctx, deliver, l);
		pthread_mutex_lock(&r->mu);
	}
	pthread_mutex_unlock(&r->mu);
	return NULL;
}

struct ayla_resolver *ayla_resolver_new(ayla_post_fn post, void *post_ctx)
{
	struct ayla_resolver *r = calloc(1, sizeof *r);
	if (!r)
		return NULL;
	r->post = post;
	r->post_ctx = post_ctx;
	pthread_mutex_init(&r->mu, NULL);
	pthread_cond_init(&r->cv, NULL);
	if (pthread_create(&r->thread, NULL, resolver_loop, r)) {
		pthread_cond_destroy(&r->cv);
		pthread_mutex_destroy(&r->mu);
		free(r);
		return NULL;
	}
	return r;
}

void ayla_resolver_free(struct ayla_resolver *r)
{
	if (!r)
		return;
	pthread_mutex_lock(&r->mu);
	r->stop = 1;
	pthread_cond_broadcast(&r->cv);
	pthread_mutex_unlock(&r->mu);
	pthread_join(r->thread, NULL); /* a lookup under way finishes first */
	while (r->head) {
		struct ayla_lookup *l = r->head;
		r->head = l->next;
		free(l);
	}
	pthread_cond_destroy(&r->cv);
	pthread_mutex_destroy(&r->mu);
	free(r);
}

int ayla_resolve_now(struct ayla_resolver *r, const char *host, char *out, size_t outlen)
{
	unsigned char buf[sizeof(struct in6_addr)];
	if (inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1) {
		snprintf(out, outlen, "%s", host);
		return 1;
	}
	double now = ayla_monotime();
	for (unsigned k = 0; k < CACHE_SIZE; k++)
		if (r->cache[k].expires > now && !strcmp(r->cache[k].host, host)) {
			snprintf(out, outlen, "%s", r->cache[k].address);
			return 1;
		}
	return 0;
}

struct ayla_lookup *ayla_resolve(struct ayla_resolver *r, const char *host, ayla_resolved_fn fn,
				 void *owner)
{
	struct ayla_lookup *l = calloc(1, sizeof *l);
	if (!l)
		return NULL;
	l->r = r;
	l->fn = fn;
	l->owner = owner;
	snprintf(l->host, sizeof l->host, "%s", host);
	pthread_mutex_lock(&r->mu);
	if (r->tail)
		r->tail->next = l;
	else
		r->head = l;
	r->tail = l;
	pthread_cond_signal(&r->cv);
	pthread_mutex_unlock(&r->mu);
	return l;
}

void ayla_lookup_cancel(struct ayla_lookup *l)
{
	if (l)
		l->cancelled = 1; /* freed when its answer comes back */
}
