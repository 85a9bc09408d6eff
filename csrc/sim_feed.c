/* Per-key event feeds of the simulator: seq numbering, history for
 * seq_start, and which subscriptions an event goes to; see sim_internal.h. */
#include "sim_internal.h"

#include "frame.h"

#include <stdlib.h>
#include <string.h>

/* Returns "LEN|json" with json's top-level "seq" set to seq (replaced or
 * inserted), as a new frame. */
static struct sim_frame *event_frame(const char *json, size_t len, uint64_t seq)
{
	static const char *const path[] = {"seq"};
	const char *v;
	size_t vlen;
	char seqtxt[32];
	int seqlen = snprintf(seqtxt, sizeof seqtxt, "\"%llu\"", (unsigned long long)seq);

	const char *pre, *post;
	size_t prelen, postlen;
	const char *sep = "";
	if (dss_json_lookup(json, len, path, 1, &v, &vlen)) {
		size_t cut_from = (size_t)(v - json);
		size_t cut_to = cut_from + vlen;
		if (cut_from > 0 && json[cut_from - 1] == '"') { /* a string value */
			cut_from--;
			cut_to++;
		}
		pre = json;
		prelen = cut_from;
		post = json + cut_to;
		postlen = len - cut_to;
	} else {
		const char *brace = memchr(json, '{', len);
		if (!brace)
			return NULL;
		size_t at = (size_t)(brace - json) + 1;
		pre = json;
		prelen = at;
		post = json + at;
		postlen = len - at;
		/* "seq" goes first; a comma unless the object is empty */
		size_t k = 0;
		while (k < postlen &&
		       (post[k] == ' ' || post[k] == '\n' || post[k] == '\t' || post[k] == '\r'))
			k++;
		sep = (k < postlen && post[k] == '}') ? "" : ",";
	}
	const char *key = (pre == json && prelen > 0 && json[prelen - 1] == '{') ? "\"seq\":" : "";
	size_t body = prelen + strlen(key) + (size_t)seqlen + strlen(sep) + postlen;
	char lenbuf[24];
	int lenlen = snprintf(lenbuf, sizeof lenbuf, "%zu|", body);
	struct sim_frame *f = malloc(sizeof *f + (size_t)lenlen + body);
	if (!f)
		return NULL;
	f->refs = 1;
	f->binary = 0;
	f->fragments = 1;
	f->seq = seq;
	f->len = (size_t)lenlen + body;
	char *o = f->data;
	memcpy(o, lenbuf, (size_t)lenlen), o += lenlen;
	memcpy(o, pre, prelen), o += prelen;
	memcpy(o, key, strlen(key)), o += strlen(key);
	memcpy(o, seqtxt, (size_t)seqlen), o += seqlen;
	memcpy(o, sep, strlen(sep)), o += strlen(sep);
	memcpy(o, post, postlen);
	return f;
}

static struct sim_feed *feed_new(struct ayla_sim *sim, const char *key, int firehose)
{
	struct sim_feed *f = calloc(1, sizeof *f);
	if (!f)
		return NULL;
	if (sim->cfg.history) {
		/* an array of frame pointers */
		f->history = calloc(sim->cfg.history, sizeof(struct sim_frame *));
		if (!f->history) {
			free(f);
			return NULL;
		}
	}
	snprintf(f->key, sizeof f->key, "%s", key);
	f->firehose = firehose;
	f->next = sim->feeds;
	sim->feeds = f;
	return f;
}

struct sim_feed *sim_feed_for(struct ayla_sim *sim, const char *key)
{
	for (struct sim_feed *f = sim->feeds; f; f = f->next)
		if (!strcmp(f->key, key))
			return f;
	if (!strcmp(key, sim->key))
		return feed_new(sim, key, 1);
	if (sim->cloud && sim_cloud_key_valid(sim->cloud, key))
		return feed_new(sim, key, 0);
	return NULL;
}

static void history_add(struct ayla_sim *sim, struct sim_feed *feed, struct sim_frame *f)
{
	if (!sim->cfg.history)
		return;
	struct sim_frame **slot = &feed->history[feed->hist_next];
	sim_frame_unref(*slot);
	*slot = f;
	f->refs++;
	feed->hist_next = (feed->hist_next + 1) % sim->cfg.history;
	if (feed->hist_count < sim->cfg.history)
		feed->hist_count++;
}

static void feed_event(struct ayla_sim *sim, struct sim_feed *feed, const char *json, size_t len,
		       unsigned fragments)
{
	struct sim_frame *f = event_frame(json, len, feed->seq + 1);
	if (!f)
		return;
	feed->seq++;
	f->fragments = fragments > 1 ? fragments : 1;
	history_add(sim, feed, f);
	for (struct sim_client *c = sim->clients; c; c = c->next)
		if (c->feed == feed)
			sim_enqueue(c, f);
	sim_frame_unref(f);
}

struct each_ctx {
	struct ayla_sim *sim;
};

static void ensure_feed(void *ud, const char *key)
{
	struct each_ctx *e = ud;
	sim_feed_for(e->sim, key); /* a subscription's feed exists before anyone connects */
}

void sim_feed_broadcast(struct ayla_sim *sim, const char *json, size_t len)
{
	unsigned fragments = sim->fragment_next;
	sim->fragment_next = 0;
	if (sim->cloud) {
		struct each_ctx e = {sim};
		sim_cloud_each_key(sim->cloud, ensure_feed, &e);
	}
	sim_feed_for(sim, sim->key);
	uint64_t firehose_seq = 0;
	for (struct sim_feed *f = sim->feeds; f; f = f->next) {
		if (f->firehose ||
		    (sim->cloud && sim_cloud_key_matches(sim->cloud, f->key, json, len)))
			feed_event(sim, f, json, len, fragments);
		if (f->firehose)
			firehose_seq = f->seq;
	}
	pthread_mutex_lock(&sim->mu);
	sim->st.events_emitted++;
	sim->st.last_seq = firehose_seq;
	pthread_mutex_unlock(&sim->mu);
}

void sim_feed_replay(struct ayla_sim *sim, struct sim_client *c, uint64_t from)
{
	struct sim_feed *feed = c->feed;
	if (!feed || !sim->cfg.history)
		return;
	size_t oldest = (feed->hist_next + sim->cfg.history - feed->hist_count) % sim->cfg.history;
	for (size_t k = 0; k < feed->hist_count; k++) {
		struct sim_frame *f = feed->history[(oldest + k) % sim->cfg.history];
		if (f->seq >= from)
			sim_enqueue(c, f);
	}
}

static void feed_free(struct ayla_sim *sim, struct sim_feed *f)
{
	for (size_t k = 0; f->history && k < sim->cfg.history; k++)
		sim_frame_unref(f->history[k]);
	free(f->history);
	free(f);
}

void sim_feed_revoke(struct ayla_sim *sim, const char *key)
{
	for (struct sim_feed **pp = &sim->feeds; *pp; pp = &(*pp)->next) {
		struct sim_feed *f = *pp;
		if (strcmp(f->key, key) || f->firehose)
			continue;
		for (struct sim_client *c = sim->clients; c; c = c->next)
			if (c->feed == f) { /* its subscription is gone: so is the socket */
				c->feed = NULL;
				lws_set_timeout(c->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
			}
		*pp = f->next;
		feed_free(sim, f);
		return;
	}
}

void sim_feeds_free(struct ayla_sim *sim)
{
	while (sim->feeds) {
		struct sim_feed *f = sim->feeds;
		sim->feeds = f->next;
		feed_free(sim, f);
	}
}
