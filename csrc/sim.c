/* ayla-sim's server: WebSocket clients, heartbeats, commands and faults;
 * see sim.h for the API and sim_internal.h for how the parts fit. */
#include "sim_internal.h"

#include "frame.h"
#include "util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- frames ---- */

struct sim_frame *sim_frame_new(const char *data, size_t len, int binary, uint64_t seq)
{
	struct sim_frame *f = malloc(sizeof *f + len);
	if (!f)
		return NULL;
	f->refs = 1;
	f->binary = binary;
	f->fragments = 1;
	f->seq = seq;
	f->len = len;
	memcpy(f->data, data, len);
	return f;
}

void sim_frame_unref(struct sim_frame *f)
{
	if (f && --f->refs == 0)
		free(f);
}

/* ---- per-client output ---- */

void sim_enqueue(struct sim_client *c, struct sim_frame *f)
{
	struct out_node *n = malloc(sizeof *n);
	if (!n)
		return;
	n->next = NULL;
	n->f = f;
	f->refs++;
	if (c->tail)
		c->tail->next = n;
	else
		c->head = n;
	c->tail = n;
	lws_callback_on_writable(c->wsi);
}

static void drop_head(struct sim_client *c)
{
	struct out_node *n = c->head;
	c->head = n->next;
	if (!c->head)
		c->tail = NULL;
	sim_frame_unref(n->f);
	free(n);
	c->sent_of_head = 0;
}

static int stalled(const struct ayla_sim *sim)
{
	return ayla_monotime() < sim->stall_until;
}

static unsigned char *scratch(struct ayla_sim *sim, size_t len)
{
	if (LWS_PRE + len > sim->scratch_cap) {
		size_t cap = LWS_PRE + len + 1024;
		unsigned char *p = realloc(sim->scratch, cap);
		if (!p)
			return NULL;
		sim->scratch = p;
		sim->scratch_cap = cap;
	}
	return sim->scratch + LWS_PRE;
}

static int write_msg(struct ayla_sim *sim, struct lws *wsi, const char *data, size_t len,
		     int binary, int first, int final)
{
	unsigned char *p = scratch(sim, len);
	if (!p)
		return -1;
	memcpy(p, data, len);
	int proto = binary ? LWS_WRITE_BINARY : LWS_WRITE_TEXT;
	int flags = lws_write_ws_flags(proto, first, final);
	return lws_write(wsi, p, len, (enum lws_write_protocol)flags) < (int)len ? -1 : 0;
}

static size_t flood_event(char *buf, size_t cap, uint64_t seq, uint64_t k)
{
	/* The shape and size (about 480 bytes) of the seed's datapoint event.
	 * The datapoint id comes from seq, so that it is unique on the client's
	 * stream across floods, as a real datapoint's is (ayla.app skips a
	 * datapoint id it has seen); dsn and value come from k. */
	char body[600];
	int n = snprintf(body, sizeof body,
			 "{\"seq\":\"%llu\",\"metadata\":{\"oem_id\":\"0dfc7900\",\"oem_model\":"
			 "\"linuxevb\",\"dsn\":\"AC000W%09llu\",\"property_name\":\"Blue_LED\","
			 "\"display_name\":\"Blue_LED\",\"base_type\":\"boolean\","
			 "\"resource_tags\":[],\"event_type\":\"datapoint\"},\"datapoint\":{"
			 "\"id\":\"1ff9b91c-bfe4-11e8-%04llx-%012llx\",\"created_at_from_device\":"
			 "null,\"updated_at\":\"2018-09-24T10:25:14Z\",\"created_at\":"
			 "\"2018-09-24T10:25:14Z\",\"user_uuid\":\"00000000-0000-0000-0000-"
			 "000000000000\",\"echo\":false,\"closed\":false,\"value\":%d,"
			 "\"metadata\":{}}}",
			 (unsigned long long)seq, (unsigned long long)(k % 1000),
			 (unsigned long long)(seq & 0xffff), (unsigned long long)seq, (int)(k & 1));
	return (size_t)snprintf(buf, cap, "%d|%s", n, body);
}

/* ---- heartbeat round trips ---- */

static unsigned rtt_bucket(uint64_t us)
{
	if (us < 8)
		return (unsigned)us;
	unsigned e = 3; /* us >> e is 1 */
	while (us >> (e + 1))
		e++;
	unsigned idx = 8 + (e - 3) * 8 + (unsigned)((us >> (e - 3)) & 7);
	return idx < AYLA_SIM_RTT_BUCKETS ? idx : AYLA_SIM_RTT_BUCKETS - 1;
}

/* The largest value that falls in bucket idx. */
static uint64_t rtt_bucket_top(unsigned idx)
{
	if (idx < 8)
		return idx;
	unsigned e = 3 + (idx - 8) / 8, sub = (idx - 8) % 8;
	return (((uint64_t)9 + sub) << (e - 3)) - 1;
}

uint64_t ayla_sim_rtt_percentile(const struct ayla_sim_rtt *h, double p)
{
	if (!h->count)
		return 0;
	double want = p / 100.0 * (double)h->count;
	uint64_t rank = (uint64_t)want;
	if ((double)rank < want)
		rank++; /* the ceiling: the smallest value with p% at or below it */
	if (rank < 1)
		rank = 1;
	if (rank > h->count)
		rank = h->count;
	uint64_t seen = 0;
	for (unsigned k = 0; k < AYLA_SIM_RTT_BUCKETS; k++) {
		seen += h->buckets[k];
		if (seen >= rank) {
			uint64_t top = rtt_bucket_top(k);
			return top < h->max_us ? top : h->max_us;
		}
	}
	return h->max_us;
}

/* A heartbeat went out: remember when, if there is room. */
static void hb_timing_start(struct sim_client *c)
{
	if (c->hb_timed_len == SIM_HB_TIMED)
		return; /* eight unanswered: this one goes untimed */
	c->hb_sent_at[(c->hb_timed_first + c->hb_timed_len) % SIM_HB_TIMED] = ayla_monotime();
	c->hb_timed_len++;
}

/* A reply came in: the round trip of the oldest unanswered heartbeat, added
 * to the histogram. Called with sim->mu held. */
static void hb_timing_end(struct sim_client *c, struct ayla_sim_rtt *h)
{
	if (!c->hb_timed_len)
		return; /* a reply nobody asked for */
	double rtt = ayla_monotime() - c->hb_sent_at[c->hb_timed_first];
	c->hb_timed_first = (c->hb_timed_first + 1) % SIM_HB_TIMED;
	c->hb_timed_len--;
	uint64_t us = rtt > 0 ? (uint64_t)(rtt * 1e6 + 0.5) : 0;
	h->count++;
	h->sum_us += us;
	if (us > h->max_us)
		h->max_us = us;
	h->buckets[rtt_bucket(us)]++;
}

static int client_writeable(struct sim_client *c)
{
	struct ayla_sim *sim = c->sim;
	if (stalled(sim))
		return 0;

	if (c->head && c->sent_of_head > 0) {
		/* finish a fragmented message before anything else */
	} else if (c->hb_due) {
		c->hb_due = 0;
		c->hb_outstanding++;
		if (write_msg(sim, c->wsi, "1|Z", 3, 0, 1, 1))
			return -1;
		hb_timing_start(c);
		pthread_mutex_lock(&sim->mu);
		sim->st.heartbeats_sent++;
		pthread_mutex_unlock(&sim->mu);
		goto more;
	}

	if (c->head) {
		struct sim_frame *f = c->head->f;
		size_t chunk = f->len, off = c->sent_of_head;
		if (f->fragments > 1) {
			chunk = (f->len + f->fragments - 1) / f->fragments;
			if (chunk == 0)
				chunk = 1;
			if (off + chunk > f->len)
				chunk = f->len - off;
		}
		int first = off == 0, final = off + chunk >= f->len;
		if (write_msg(sim, c->wsi, f->data + off, chunk, f->binary, first, final))
			return -1;
		if (final) {
			pthread_mutex_lock(&sim->mu);
			if (f->seq)
				sim->st.events_sent++;
			else
				sim->st.raw_sent++;
			pthread_mutex_unlock(&sim->mu);
			drop_head(c);
		} else {
			c->sent_of_head = off + chunk;
		}
	} else if (c->flood_left && c->feed) {
		char buf[700];
		uint64_t seq = ++c->feed->seq; /* flood events are not kept in the history */
		size_t n = flood_event(buf, sizeof buf, seq, c->flood_left);
		if (write_msg(sim, c->wsi, buf, n, 0, 1, 1))
			return -1;
		c->flood_left--;
		pthread_mutex_lock(&sim->mu);
		sim->st.flood_sent++;
		pthread_mutex_unlock(&sim->mu);
	}
more:
	if (c->head || c->hb_due || (c->flood_left && c->feed))
		lws_callback_on_writable(c->wsi);
	return 0;
}

/* ---- heartbeats ---- */

static void heartbeat_tick(lws_sorted_usec_list_t *sul)
{
	struct sim_client *c = lws_container_of(sul, struct sim_client, sul_hb);
	struct ayla_sim *sim = c->sim;
	double now = ayla_monotime();
	lws_sul_schedule(lws_get_context(c->wsi), 0, &c->sul_hb, heartbeat_tick,
			 (lws_usec_t)(sim->cfg.heartbeat_interval * LWS_USEC_PER_SEC));
	if (now < sim->withhold_until || now < sim->stall_until)
		return;
	if (c->hb_outstanding >= sim->cfg.heartbeat_misses) {
		/* Like the real DSS: a client that stops answering is dropped. */
		pthread_mutex_lock(&sim->mu);
		sim->st.heartbeat_drops++;
		pthread_mutex_unlock(&sim->mu);
		lws_sul_cancel(&c->sul_hb);
		lws_set_timeout(c->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
		return;
	}
	c->hb_due = 1;
	lws_callback_on_writable(c->wsi);
}

/* ---- scripted device behaviour ---- */

static void behave_tick(lws_sorted_usec_list_t *sul)
{
	struct ayla_sim *sim = lws_container_of(sul, struct ayla_sim, sul_behave);
	sim_cloud_behave(sim->cloud);
	lws_sul_schedule(sim->io.ctx, 0, &sim->sul_behave, behave_tick,
			 (lws_usec_t)(sim->cfg.behaviour_interval * LWS_USEC_PER_SEC));
}

/* ---- the scenario ---- */

static void scenario_tick(lws_sorted_usec_list_t *sul)
{
	struct ayla_sim *sim = lws_container_of(sul, struct ayla_sim, sul_scenario);
	if (sim->line_at >= sim->nlines) {
		if (!sim->cfg.loop || !sim->nlines)
			return;
		sim->line_at = 0;
	}
	const char *line = sim->lines[sim->line_at++];
	sim_feed_broadcast(sim, line, strlen(line));
	lws_sul_schedule(sim->io.ctx, 0, &sim->sul_scenario, scenario_tick,
			 (lws_usec_t)(sim->cfg.event_interval * LWS_USEC_PER_SEC));
}

static void resume_all(lws_sorted_usec_list_t *sul)
{
	struct ayla_sim *sim = lws_container_of(sul, struct ayla_sim, sul_resume);
	for (struct sim_client *c = sim->clients; c; c = c->next) {
		lws_rx_flow_control(c->wsi, 1);
		lws_callback_on_writable(c->wsi);
	}
}

static void apply_fault(struct ayla_sim *sim, enum ayla_sim_fault fault, double arg)
{
	switch (fault) {
	case AYLA_FAULT_DROP:
		for (struct sim_client *c = sim->clients; c; c = c->next)
			lws_set_timeout(c->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
		break;
	case AYLA_FAULT_STALL:
		sim->stall_until = ayla_monotime() + arg;
		for (struct sim_client *c = sim->clients; c; c = c->next)
			lws_rx_flow_control(c->wsi, 0);
		lws_sul_schedule(sim->io.ctx, 0, &sim->sul_resume, resume_all,
				 (lws_usec_t)(arg * LWS_USEC_PER_SEC));
		break;
	case AYLA_FAULT_WITHHOLD:
		sim->withhold_until = ayla_monotime() + arg;
		break;
	case AYLA_FAULT_FRAGMENT:
		sim->fragment_next = arg >= 2 ? (unsigned)arg : 2;
		break;
	}
	pthread_mutex_lock(&sim->mu);
	sim->st.faults++;
	pthread_mutex_unlock(&sim->mu);
}

static void run_commands(struct ayla_sim *sim)
{
	pthread_mutex_lock(&sim->mu);
	struct sim_cmd *cmd = sim->cmd_head;
	sim->cmd_head = sim->cmd_tail = NULL;
	pthread_mutex_unlock(&sim->mu);
	while (cmd) {
		struct sim_cmd *next = cmd->next;
		switch (cmd->type) {
		case CMD_EMIT:
			sim_feed_broadcast(sim, cmd->data, cmd->len);
			break;
		case CMD_RAW: {
			struct sim_frame *f = sim_frame_new(cmd->data, cmd->len, cmd->binary, 0);
			if (f) {
				for (struct sim_client *c = sim->clients; c; c = c->next)
					sim_enqueue(c, f);
				sim_frame_unref(f);
			}
			break;
		}
		case CMD_FAULT:
			apply_fault(sim, cmd->fault, cmd->arg);
			break;
		case CMD_REST_FAULT:
			sim_cloud_fault(sim->cloud, (enum sim_rest_fault)cmd->fault,
					(unsigned)cmd->n, cmd->arg);
			break;
		case CMD_EXPIRE:
			sim_cloud_expire_tokens(sim->cloud);
			break;
		case CMD_BEHAVE:
			for (uint64_t k = 0; k < cmd->n; k++)
				sim_cloud_behave(sim->cloud);
			break;
		case CMD_FLOOD:
			for (struct sim_client *c = sim->clients; c; c = c->next) {
				c->flood_left += cmd->n;
				lws_callback_on_writable(c->wsi);
			}
			break;
		}
		free(cmd);
		cmd = next;
	}
}

/* ---- the handshake ---- */

static int refuse(struct lws *wsi, unsigned status, const char *why)
{
	/* A plain HTTP answer instead of the upgrade: what the real DSS does
	 * with a stale key. */
	unsigned char buf[LWS_PRE + 512], *start = buf + LWS_PRE, *p = start,
					  *end = buf + sizeof buf - 1;
	size_t n = strlen(why);
	if (lws_add_http_common_headers(wsi, status, "text/plain", (lws_filepos_t)n, &p, end) ||
	    lws_finalize_write_http_header(wsi, start, &p, end)) /* writes the headers */
		return -1;
	memcpy(start, why, n); /* then the body, from the same LWS_PRE-padded buffer */
	lws_write(wsi, start, n, LWS_WRITE_HTTP_FINAL);
	return -1;
}

static int check_handshake(struct ayla_sim *sim, struct lws *wsi)
{
	char uri[256] = "", buf[512];
	lws_hdr_copy(wsi, uri, sizeof uri, WSI_TOKEN_GET_URI);
	if (strcmp(uri, "/stream") != 0)
		return 404;
	const char *key = lws_get_urlarg_by_name(wsi, "stream_key=", buf, sizeof buf);
	if (!key || !sim_feed_for(sim, key))
		return 401;
	return 0;
}

static uint64_t requested_seq_start(struct lws *wsi)
{
	char v[512]; /* lws stops at the first argument that does not fit */
	const char *s = lws_get_urlarg_by_name(wsi, "seq_start=", v, sizeof v);
	return s ? strtoull(s, NULL, 10) : 0;
}

static int callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
		    size_t len)
{
	struct ayla_sim *sim = lws_context_user(lws_get_context(wsi));
	struct sim_client *c = user;

	switch (reason) {
	case LWS_CALLBACK_EVENT_WAIT_CANCELLED:
		if (sim)
			run_commands(sim);
		break;
	case LWS_CALLBACK_HTTP:
	case LWS_CALLBACK_HTTP_BODY:
	case LWS_CALLBACK_HTTP_BODY_COMPLETION:
	case LWS_CALLBACK_HTTP_WRITEABLE:
	case LWS_CALLBACK_CLOSED_HTTP:
		return sim_rest_callback(sim, wsi, reason, c, in, len);
	case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION: {
		int status = check_handshake(sim, wsi);
		if (status) {
			pthread_mutex_lock(&sim->mu);
			sim->st.rejected++;
			pthread_mutex_unlock(&sim->mu);
			return refuse(wsi, (unsigned)status,
				      status == 401 ? "unknown stream key\n" : "not found\n");
		}
		/* The query is gone once the upgrade is done: keep what we need. */
		memset(c, 0, sizeof *c);
		c->seq_start = requested_seq_start(wsi);
		{
			char buf[512];
			const char *key =
				lws_get_urlarg_by_name(wsi, "stream_key=", buf, sizeof buf);
			snprintf(c->key, sizeof c->key, "%s", key ? key : "");
		}
		break;
	}
	case LWS_CALLBACK_ESTABLISHED: {
		c->wsi = wsi;
		c->sim = sim;
		c->feed = sim_feed_for(sim, c->key);
		c->next = sim->clients;
		sim->clients = c;
		if (c->seq_start)
			sim_feed_replay(sim, c, c->seq_start);
		lws_sul_schedule(lws_get_context(wsi), 0, &c->sul_hb, heartbeat_tick,
				 (lws_usec_t)(sim->cfg.heartbeat_interval * LWS_USEC_PER_SEC));
		pthread_mutex_lock(&sim->mu);
		sim->st.connections++;
		sim->st.clients++;
		pthread_mutex_unlock(&sim->mu);
		if (sim->nlines && !sim->scenario_started) {
			sim->scenario_started = 1;
			lws_sul_schedule(sim->io.ctx, 0, &sim->sul_scenario, scenario_tick,
					 (lws_usec_t)(sim->cfg.event_interval * LWS_USEC_PER_SEC));
		}
		break;
	}
	case LWS_CALLBACK_SERVER_WRITEABLE:
		return client_writeable(c);
	case LWS_CALLBACK_RECEIVE:
		if ((len == 1 && ((const char *)in)[0] == 'Z') ||
		    (len == 3 && memcmp(in, "1|Z", 3) == 0)) {
			c->hb_outstanding = 0;
			pthread_mutex_lock(&sim->mu);
			sim->st.heartbeat_replies++;
			hb_timing_end(c, &sim->st.heartbeat_rtt);
			pthread_mutex_unlock(&sim->mu);
		} else {
			pthread_mutex_lock(&sim->mu);
			sim->st.client_messages_other++;
			pthread_mutex_unlock(&sim->mu);
		}
		break;
	case LWS_CALLBACK_CLOSED: {
		if (!c || !c->wsi)
			break; /* never established */
		lws_sul_cancel(&c->sul_hb);
		while (c->head)
			drop_head(c);
		for (struct sim_client **pp = &sim->clients; *pp; pp = &(*pp)->next)
			if (*pp == c) {
				*pp = c->next;
				break;
			}
		pthread_mutex_lock(&sim->mu);
		sim->st.clients--;
		pthread_mutex_unlock(&sim->mu);
		break;
	}
	default:
		break;
	}
	return lws_callback_http_dummy(wsi, reason, user, in, len);
}

static const struct lws_protocols protocols[] = {
	{"ayla-dss", callback, sizeof(struct sim_client), 4096, 0, NULL, 0},
	{NULL, NULL, 0, 0, 0, NULL, 0},
};

/* ---- the public API ---- */

static int post(struct ayla_sim *sim, struct sim_cmd *cmd)
{
	cmd->next = NULL;
	pthread_mutex_lock(&sim->mu);
	if (sim->cmd_tail)
		sim->cmd_tail->next = cmd;
	else
		sim->cmd_head = cmd;
	sim->cmd_tail = cmd;
	pthread_mutex_unlock(&sim->mu);
	ayla_iothread_wake(&sim->io);
	return 0;
}

static struct sim_cmd *cmd_new(enum cmd_type type, const char *data, size_t len)
{
	struct sim_cmd *cmd = calloc(1, sizeof *cmd + len + 1);
	if (!cmd)
		return NULL;
	cmd->type = type;
	cmd->len = len;
	if (len)
		memcpy(cmd->data, data, len);
	return cmd;
}

int ayla_sim_emit(struct ayla_sim *sim, const char *json, size_t len)
{
	if (!memchr(json, '{', len))
		return -1; /* not an object: nothing could be framed */
	struct sim_cmd *cmd = cmd_new(CMD_EMIT, json, len);
	return cmd ? post(sim, cmd) : -1;
}

int ayla_sim_send_raw(struct ayla_sim *sim, const char *msg, size_t len, int binary)
{
	struct sim_cmd *cmd = cmd_new(CMD_RAW, msg, len);
	if (!cmd)
		return -1;
	cmd->binary = binary;
	return post(sim, cmd);
}

int ayla_sim_fault(struct ayla_sim *sim, enum ayla_sim_fault fault, double arg)
{
	struct sim_cmd *cmd = cmd_new(CMD_FAULT, NULL, 0);
	if (!cmd)
		return -1;
	cmd->fault = (int)fault;
	cmd->arg = arg;
	return post(sim, cmd);
}

int ayla_sim_rest_fault(struct ayla_sim *sim, const char *kind, unsigned count, double arg)
{
	static const char *const kinds[] = {"5xx", "429", "slow", "refresh_200"};
	for (int k = 0; k < SIM_FAULT_COUNT; k++)
		if (!strcmp(kind, kinds[k])) {
			struct sim_cmd *cmd = cmd_new(CMD_REST_FAULT, NULL, 0);
			if (!cmd)
				return -1;
			cmd->fault = k; /* the order of enum sim_rest_fault */
			cmd->n = count;
			cmd->arg = arg;
			return post(sim, cmd);
		}
	return -1;
}

int ayla_sim_expire_tokens(struct ayla_sim *sim)
{
	struct sim_cmd *cmd = cmd_new(CMD_EXPIRE, NULL, 0);
	return cmd ? post(sim, cmd) : -1;
}

int ayla_sim_behave(struct ayla_sim *sim, unsigned n)
{
	struct sim_cmd *cmd = cmd_new(CMD_BEHAVE, NULL, 0);
	if (!cmd)
		return -1;
	cmd->n = n;
	return post(sim, cmd);
}

int ayla_sim_flood(struct ayla_sim *sim, uint64_t n)
{
	struct sim_cmd *cmd = cmd_new(CMD_FLOOD, NULL, 0);
	if (!cmd)
		return -1;
	cmd->n = n;
	return post(sim, cmd);
}

/* Each malformed class of frame.h, as a server could send it. */
const char *const ayla_sim_garble_kinds[] = {
	"no_separator", "bad_prefix",    "empty_payload", "not_object",
	"truncated",    "trailing_data", "binary",        NULL,
};

int ayla_sim_garble(struct ayla_sim *sim, const char *kind)
{
	static const char *const texts[] = {
		"garbage without a separator",
		"4x8|{\"seq\":\"1\"}",
		"12|",
		"5|[1,2]",
		"200|{\"seq\":\"1\",\"metadata\":{\"event_type\":\"datapoint\"",
		"2|{}}junk",
		"\x01\x02 binary",
	};
	for (int k = 0; ayla_sim_garble_kinds[k]; k++)
		if (strcmp(kind, ayla_sim_garble_kinds[k]) == 0)
			return ayla_sim_send_raw(sim, texts[k], strlen(texts[k]),
						 strcmp(kind, "binary") == 0);
	return -1;
}

int ayla_sim_port(const struct ayla_sim *sim)
{
	return sim->port;
}
const char *ayla_sim_key(const struct ayla_sim *sim)
{
	return sim->key;
}
int ayla_sim_tls(const struct ayla_sim *sim)
{
	return sim->cfg.cert_file != NULL;
}

void ayla_sim_stats(struct ayla_sim *sim, struct ayla_sim_stats *out)
{
	pthread_mutex_lock(&sim->mu);
	*out = sim->st;
	pthread_mutex_unlock(&sim->mu);
}

static int load_scenario(struct ayla_sim *sim, char *err, size_t errlen)
{
	FILE *f = fopen(sim->cfg.scenario, "r");
	if (!f) {
		snprintf(err, errlen, "cannot open scenario %s: %s", sim->cfg.scenario,
			 strerror(errno));
		return -1;
	}
	char *line = NULL;
	size_t cap = 0, lineno = 0;
	ssize_t n;
	int rc = 0;
	while ((n = getline(&line, &cap, f)) >= 0) {
		lineno++;
		while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r' || line[n - 1] == ' '))
			line[--n] = '\0';
		size_t k = strspn(line, " \t");
		if (line[k] == '\0' || line[k] == '#')
			continue; /* blank lines and comments */
		if (line[k] != '{') {
			snprintf(err, errlen, "%s:%zu: expected one JSON event object per line",
				 sim->cfg.scenario, lineno);
			rc = -1;
			break;
		}
		char **grown = realloc(sim->lines, (sim->nlines + 1) * sizeof *grown);
		if (grown)
			sim->lines = grown; /* the old block is gone either way */
		char *copy = grown ? strdup(line + k) : NULL;
		if (!copy) {
			snprintf(err, errlen, "out of memory reading %s", sim->cfg.scenario);
			rc = -1;
			break;
		}
		sim->lines[sim->nlines++] = copy;
	}
	free(line);
	fclose(f);
	return rc;
}

static void free_sim(struct ayla_sim *sim)
{
	sim_timers_free(sim);
	sim_feeds_free(sim);
	sim_cloud_free(sim->cloud);
	for (size_t k = 0; k < sim->nlines; k++)
		free(sim->lines[k]);
	free(sim->lines);
	while (sim->cmd_head) {
		struct sim_cmd *next = sim->cmd_head->next;
		free(sim->cmd_head);
		sim->cmd_head = next;
	}
	free(sim->scratch);
	SSL_CTX_free(sim->unused_client_ctx);
	free((char *)sim->cfg.host);
	free((char *)sim->cfg.cert_file);
	free((char *)sim->cfg.key_file);
	free((char *)sim->cfg.scenario);
	free((char *)sim->cfg.fleet);
	pthread_mutex_destroy(&sim->mu);
	free(sim);
}

struct ayla_sim *ayla_sim_start(const struct ayla_sim_config *cfg, char *err, size_t errlen)
{
	struct ayla_sim *sim = calloc(1, sizeof *sim);
	if (!sim) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	pthread_mutex_init(&sim->mu, NULL);
	sim->cfg = *cfg;
	sim->cfg.host = strdup(cfg->host ? cfg->host : "127.0.0.1");
	sim->cfg.cert_file = cfg->cert_file ? strdup(cfg->cert_file) : NULL;
	sim->cfg.key_file = cfg->key_file ? strdup(cfg->key_file) : NULL;
	sim->cfg.scenario = cfg->scenario ? strdup(cfg->scenario) : NULL;
	sim->cfg.fleet = cfg->fleet ? strdup(cfg->fleet) : NULL;
	sim->cfg.key = NULL;
	if (sim->cfg.heartbeat_interval <= 0)
		sim->cfg.heartbeat_interval = 30;
	if (sim->cfg.heartbeat_misses <= 0)
		sim->cfg.heartbeat_misses = 2;
	if (sim->cfg.event_interval <= 0)
		sim->cfg.event_interval = 1;
	if (cfg->key && strlen(cfg->key) >= sizeof sim->key) {
		snprintf(err, errlen, "the stream key may have at most %zu characters",
			 sizeof sim->key - 1);
		free_sim(sim);
		return NULL;
	}
	if (cfg->key) {
		snprintf(sim->key, sizeof sim->key, "%s", cfg->key);
	} else {
		uint64_t rng = ayla_random_seed();
		for (int k = 0; k < 32; k++)
			sim->key[k] = "0123456789abcdef"[(int)(ayla_random(&rng) * 16)];
	}
	if (!sim->cfg.host || (cfg->fleet && !sim->cfg.fleet)) {
		snprintf(err, errlen, "out of memory");
		free_sim(sim);
		return NULL;
	}
	struct sim_cloud_config cc = {.fleet_file = sim->cfg.fleet,
				      .token_lifetime = cfg->token_lifetime,
				      .ack_delay = cfg->ack_delay,
				      .seed = cfg->seed};
	struct sim_cloud_hooks hooks;
	sim_rest_hooks(sim, &hooks);
	sim->cloud = sim_cloud_new(&cc, &hooks, err, errlen);
	if (!sim->cloud) {
		free_sim(sim);
		return NULL;
	}
	if (sim->cfg.scenario && load_scenario(sim, err, errlen)) {
		free_sim(sim);
		return NULL;
	}

	ayla_lws_logging();
	struct lws_context_creation_info info;
	memset(&info, 0, sizeof info);
	info.port = cfg->port;
	info.iface = sim->cfg.host;
	info.protocols = protocols;
	info.user = sim;
	info.options = LWS_SERVER_OPTION_VALIDATE_UTF8;
	if (sim->cfg.cert_file && sim->cfg.key_file) {
		info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
		info.ssl_cert_filepath = sim->cfg.cert_file;
		info.ssl_private_key_filepath = sim->cfg.key_file;
		/* The sim never connects out, but lws gives every TLS vhost a
		 * client SSL_CTX and, in 4.1, leaks it when another TLS context
		 * (the module's hub) exists: hand it one we free ourselves. */
		sim->unused_client_ctx = SSL_CTX_new(TLS_client_method());
		info.provided_client_ssl_ctx = sim->unused_client_ctx;
	}
	struct lws_context *ctx = lws_create_context(&info);
	if (!ctx) {
		snprintf(err, errlen, "cannot listen on %s:%d%s", sim->cfg.host, cfg->port,
			 sim->cfg.cert_file ? " (or cannot load the TLS certificate/key)" : "");
		free_sim(sim);
		return NULL;
	}
	sim->port = lws_get_vhost_listen_port(lws_get_vhost_by_name(ctx, "default"));
	if (sim->cfg.behaviour_interval > 0) /* safe: the thread has not started */
		lws_sul_schedule(ctx, 0, &sim->sul_behave, behave_tick,
				 (lws_usec_t)(sim->cfg.behaviour_interval * LWS_USEC_PER_SEC));
	int rc = ayla_iothread_start(&sim->io, ctx);
	if (rc) {
		snprintf(err, errlen, "cannot start the sim thread: %s", strerror(rc));
		free_sim(sim);
		return NULL;
	}
	return sim;
}

void ayla_sim_stop(struct ayla_sim *sim)
{
	if (!sim)
		return;
	ayla_iothread_stop(&sim->io);
	free_sim(sim);
}
