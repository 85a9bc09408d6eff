/* The I/O thread: see iothread.h. */
#include "iothread.h"

#include <signal.h>
#include <time.h>

static void *service_loop(void *arg)
{
	struct ayla_iothread *io = arg;
	/* Never leave early: callers wait on this thread (ayla_io_call). */
	while (!atomic_load(&io->stop))
		if (lws_service(io->ctx, 0) < 0) {
			struct timespec pause = {0, 1000000};
			nanosleep(&pause, NULL);
		}
	return NULL;
}

int ayla_iothread_start(struct ayla_iothread *io, struct lws_context *ctx)
{
	io->ctx = ctx;
	atomic_store(&io->stop, 0);

	/* Signals belong to the host program (the Lua REPL's Ctrl-C, the
	 * runner's SIGHUP): the I/O thread blocks them all. */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	int rc = pthread_create(&io->thread, NULL, service_loop, io);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc) {
		lws_context_destroy(ctx);
		io->ctx = NULL;
		return rc;
	}
	io->started = 1;
	return 0;
}

void ayla_iothread_wake(struct ayla_iothread *io)
{
	if (io->ctx)
		lws_cancel_service(io->ctx);
}

void ayla_iothread_stop(struct ayla_iothread *io)
{
	if (!io->started)
		return;
	atomic_store(&io->stop, 1);
	lws_cancel_service(io->ctx);
	pthread_join(io->thread, NULL);
	io->started = 0;
	/* Destroying calls our protocol callbacks on this thread; they touch
	 * only C state guarded by their owner's lock. */
	lws_context_destroy(io->ctx);
	io->ctx = NULL;
}
