/* The REST services' HTTP transport on the simulator's port, and the timers
 * the cloud model asks for; see sim_internal.h. */
#include "sim_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the cloud model's hooks ---- */

static void hook_emit(void *ud, const char *json, size_t len)
{
	sim_feed_broadcast(ud, json, len);
}

static void timer_fires(lws_sorted_usec_list_t *sul)
{
	struct sim_timer *t = lws_container_of(sul, struct sim_timer, sul);
	struct ayla_sim *sim = t->sim;
	for (struct sim_timer **pp = &sim->timers; *pp; pp = &(*pp)->next)
		if (*pp == t) {
			*pp = t->next;
			break;
		}
	t->fn(sim->cloud, t->arg);
	free(t);
}

static void hook_later(void *ud, double seconds, void (*fn)(struct sim_cloud *, void *), void *arg)
{
	struct ayla_sim *sim = ud;
	struct sim_timer *t = calloc(1, sizeof *t);
	if (!t) {
		free(arg);
		return;
	}
	t->sim = sim;
	t->fn = fn;
	t->arg = arg;
	t->next = sim->timers;
	sim->timers = t;
	lws_sul_schedule(sim->io.ctx, 0, &t->sul, timer_fires,
			 (lws_usec_t)(seconds * LWS_USEC_PER_SEC));
}

static void hook_revoked(void *ud, const char *key)
{
	sim_feed_revoke(ud, key);
}

void sim_rest_hooks(struct ayla_sim *sim, struct sim_cloud_hooks *hooks)
{
	hooks->ud = sim;
	hooks->emit = hook_emit;
	hooks->later = hook_later;
	hooks->revoked = hook_revoked;
}

void sim_timers_free(struct ayla_sim *sim)
{
	while (sim->timers) {
		struct sim_timer *t = sim->timers;
		sim->timers = t->next;
		lws_sul_cancel(&t->sul);
		free(t->arg);
		free(t);
	}
}

/* ---- one exchange ---- */

static void reset(struct sim_rest_conn *r)
{
	lws_sul_cancel(&r->sul_delay);
	free(r->body);
	free(r->resp.body);
	memset(r, 0, sizeof *r);
}

static const char *method_of(struct lws *wsi)
{
	if (lws_hdr_total_length(wsi, WSI_TOKEN_POST_URI))
		return "POST";
	if (lws_hdr_total_length(wsi, WSI_TOKEN_GET_URI))
		return "GET";
	if (lws_hdr_total_length(wsi, WSI_TOKEN_DELETE_URI))
		return "DELETE";
	if (lws_hdr_total_length(wsi, WSI_TOKEN_PUT_URI))
		return "PUT";
	return "OTHER";
}

static void delay_over(lws_sorted_usec_list_t *sul)
{
	struct sim_rest_conn *r = lws_container_of(sul, struct sim_rest_conn, sul_delay);
	struct sim_client *c = lws_container_of(r, struct sim_client, rest);
	r->ready = 1;
	lws_callback_on_writable(c->wsi);
}

static void answer(struct ayla_sim *sim, struct sim_client *c)
{
	struct sim_rest_conn *r = &c->rest;
	sim_cloud_handle(sim->cloud, r->method, r->path,
			 r->authorization[0] ? r->authorization : NULL, r->body, r->body_len,
			 &r->resp);
	pthread_mutex_lock(&sim->mu);
	sim->st.rest_requests++;
	pthread_mutex_unlock(&sim->mu);
	double delay = sim_cloud_take_delay(sim->cloud);
	if (delay > 0) { /* an injected slow response */
		lws_sul_schedule(sim->io.ctx, 0, &r->sul_delay, delay_over,
				 (lws_usec_t)(delay * LWS_USEC_PER_SEC));
		return;
	}
	r->ready = 1;
	lws_callback_on_writable(c->wsi);
}

static int write_response(struct ayla_sim *sim, struct lws *wsi, struct sim_rest_conn *r)
{
	size_t n = r->resp.body ? strlen(r->resp.body) : 0;
	unsigned char head[LWS_PRE + 1024], *start = head + LWS_PRE, *p = start,
					    *end = head + sizeof head - 1;
	if (lws_add_http_common_headers(wsi, r->resp.status, "application/json; charset=utf-8",
					(lws_filepos_t)n, &p, end))
		return -1;
	if (r->resp.retry_after) {
		char ra[16];
		int len = snprintf(ra, sizeof ra, "%u", r->resp.retry_after);
		if (lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_RETRY_AFTER,
						 (unsigned char *)ra, len, &p, end))
			return -1;
	}
	if (lws_finalize_write_http_header(wsi, start, &p, end))
		return -1;
	if (n) {
		unsigned char *buf = malloc(LWS_PRE + n);
		if (!buf)
			return -1;
		memcpy(buf + LWS_PRE, r->resp.body, n);
		int w = lws_write(wsi, buf + LWS_PRE, n, LWS_WRITE_HTTP_FINAL);
		free(buf);
		if (w < (int)n)
			return -1;
	}
	(void)sim;
	reset(r);
	return lws_http_transaction_completed(wsi) ? -1 : 0;
}

int sim_rest_callback(struct ayla_sim *sim, struct lws *wsi, enum lws_callback_reasons reason,
		      struct sim_client *c, void *in, size_t len)
{
	if (!c)
		return 0; /* a connection that ended before it had any state (a TLS failure) */
	struct sim_rest_conn *r = &c->rest;
	switch (reason) {
	case LWS_CALLBACK_HTTP:
		reset(r);
		c->wsi = wsi;
		snprintf(r->method, sizeof r->method, "%s", method_of(wsi));
		snprintf(r->path, sizeof r->path, "%s", (const char *)in);
		if (lws_hdr_copy(wsi, r->authorization, sizeof r->authorization,
				 WSI_TOKEN_HTTP_AUTHORIZATION) < 0)
			r->authorization[0] = '\0';
		/* A body follows for POST and PUT when there is a length. */
		if ((!strcmp(r->method, "POST") || !strcmp(r->method, "PUT")) &&
		    lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_CONTENT_LENGTH))
			return 0;
		answer(sim, c);
		return 0;
	case LWS_CALLBACK_HTTP_BODY:
		if (r->body_len + len > (1u << 20))
			return -1; /* nothing the API takes is this big */
		if (r->body_len + len > r->body_cap) {
			size_t cap = r->body_cap ? r->body_cap * 2 : 1024;
			while (cap < r->body_len + len)
				cap *= 2;
			char *grown = realloc(r->body, cap);
			if (!grown)
				return -1;
			r->body = grown;
			r->body_cap = cap;
		}
		memcpy(r->body + r->body_len, in, len);
		r->body_len += len;
		return 0;
	case LWS_CALLBACK_HTTP_BODY_COMPLETION:
		answer(sim, c);
		return 0;
	case LWS_CALLBACK_HTTP_WRITEABLE:
		return r->ready ? write_response(sim, wsi, r) : 0;
	case LWS_CALLBACK_CLOSED_HTTP:
		reset(r);
		return 0;
	default:
		return 0;
	}
}
