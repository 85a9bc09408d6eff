/*
 * The I/O thread: one OS thread that runs lws_service() on one context until
 * told to stop. It never touches a lua_State. Other threads talk to the code
 * running on it only through their own locked state plus ayla_iothread_wake()
 * (lws_cancel_service, the one lws call that is thread-safe).
 */
#ifndef AYLA_IOTHREAD_H
#define AYLA_IOTHREAD_H

#include <libwebsockets.h>
#include <pthread.h>
#include <stdatomic.h>

struct ayla_iothread {
	struct lws_context *ctx;
	pthread_t thread;
	atomic_int stop;
	int started;
};

static inline struct lws_context *ayla_iothread_context(struct ayla_iothread *io)
{
	return io->ctx;
}

/* Takes ownership of ctx and starts servicing it; returns 0 or an errno. */
int ayla_iothread_start(struct ayla_iothread *io, struct lws_context *ctx);
/* Makes the service loop return soon and deliver EVENT_WAIT_CANCELLED. */
void ayla_iothread_wake(struct ayla_iothread *io);
/* Stops the loop, joins the thread, destroys the context. Idempotent; must
 * not be called from the I/O thread itself. */
void ayla_iothread_stop(struct ayla_iothread *io);

#endif
