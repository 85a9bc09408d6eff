/* ayla-sim: the local stand-in for the Ayla Datastream Service. */
#include "sim.h"
#include "sim_cloud.h"
#include "util.h"

#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t stop_requested;
static void on_signal(int sig)
{
	(void)sig;
	stop_requested = 1;
}

static void usage(FILE *out)
{
	fputs("usage: ayla-sim [options]\n"
	      "A local Ayla cloud on one port: the Datastream Service (DSS) WebSocket at\n"
	      "/stream and the user, device and subscription REST services, with a fleet\n"
	      "of digital twins.\n\n"
	      "  -p, --port N             listen port (default 0: any free port)\n"
	      "      --host ADDR          bind address (default 127.0.0.1)\n"
	      "  -k, --key KEY            the accepted stream key (default: random)\n"
	      "      --heartbeat SECONDS  heartbeat interval (default 30)\n"
	      "      --misses N           drop a client after N unanswered heartbeats (default 2)\n"
	      "  -s, --scenario FILE      JSONL events to play once a client connects\n"
	      "  -i, --interval SECONDS   seconds between scenario events (default 1)\n"
	      "  -l, --loop               replay the scenario forever\n"
	      "      --cert FILE --tls-key FILE   serve wss:// with this certificate\n"
	      "      --flood N            send N datapoint events once the first client connects\n"
	      "      --fleet FILE         the fleet as JSON (default: a built-in demo fleet)\n"
	      "      --token-lifetime S   seconds an access token lives (default 86400)\n"
	      "      --ack-delay S        seconds before an ack-enabled device acks (default 0.2)\n"
	      "      --behave S           a scripted device event every S seconds (default: none)\n"
	      "      --seed N             the scripted behaviour's seed (default 1)\n"
	      "  -h, --help\n\n"
	      "Commands on standard input, one per line, act on connected clients:\n"
	      "  emit JSON | drop | stall SECONDS | withhold SECONDS | fragment N |\n"
	      "  garble KIND | flood N | stats |\n"
	      "  rest 5xx|429|slow|refresh_200 COUNT [SECONDS] | expire | behave N\n"
	      "  (garble kinds: no_separator bad_prefix empty_payload not_object\n"
	      "   truncated trailing_data binary)\n",
	      out);
}

static void print_stats(struct ayla_sim *sim)
{
	struct ayla_sim_stats st;
	ayla_sim_stats(sim, &st);
	printf("clients %llu connections %llu rejected %llu heartbeats %llu replies %llu "
	       "heartbeat_drops %llu events %llu flood %llu raw %llu faults %llu last_seq %llu\n",
	       (unsigned long long)st.clients, (unsigned long long)st.connections,
	       (unsigned long long)st.rejected, (unsigned long long)st.heartbeats_sent,
	       (unsigned long long)st.heartbeat_replies, (unsigned long long)st.heartbeat_drops,
	       (unsigned long long)st.events_sent, (unsigned long long)st.flood_sent,
	       (unsigned long long)st.raw_sent, (unsigned long long)st.faults,
	       (unsigned long long)st.last_seq);
	fflush(stdout);
}

/* The value of a numeric option, or exit 2 saying which option and why. */
static double number_option(const char *option, const char *text, double min, double max)
{
	double x;
	if (ayla_parse_number(text, min, max, &x)) {
		fprintf(stderr, "ayla-sim: --%s takes a number from %.15g to %.15g, not '%.40s'\n",
			option, min, max, text);
		exit(2);
	}
	return x;
}

/* The same for a count, a port or a seed: a whole number. */
static double whole_option(const char *option, const char *text, double min, double max)
{
	double x = number_option(option, text, min, max);
	if (x != (double)(long long)x) {
		fprintf(stderr, "ayla-sim: --%s takes a whole number, not '%.40s'\n", option, text);
		exit(2);
	}
	return x;
}

static void command(struct ayla_sim *sim, char *line)
{
	line[strcspn(line, "\r\n")] = '\0';
	char *arg = strchr(line, ' ');
	if (arg)
		*arg++ = '\0';
	double x = 0;
	if (arg && ayla_parse_number(arg, -1e15, 1e15, &x))
		x = 0; /* not a number: only commands taking text accept it */
	int rc = 0;
	if (!strcmp(line, "emit") && arg)
		rc = ayla_sim_emit(sim, arg, strlen(arg));
	else if (!strcmp(line, "drop"))
		rc = ayla_sim_fault(sim, AYLA_FAULT_DROP, 0);
	else if (!strcmp(line, "stall") && x > 0)
		rc = ayla_sim_fault(sim, AYLA_FAULT_STALL, x);
	else if (!strcmp(line, "withhold") && x > 0)
		rc = ayla_sim_fault(sim, AYLA_FAULT_WITHHOLD, x);
	else if (!strcmp(line, "fragment") && x >= 2)
		rc = ayla_sim_fault(sim, AYLA_FAULT_FRAGMENT, x);
	else if (!strcmp(line, "garble") && arg)
		rc = ayla_sim_garble(sim, arg);
	else if (!strcmp(line, "flood") && x >= 1)
		rc = ayla_sim_flood(sim, (uint64_t)x);
	else if (!strcmp(line, "stats"))
		print_stats(sim);
	else if (!strcmp(line, "expire"))
		rc = ayla_sim_expire_tokens(sim);
	else if (!strcmp(line, "behave") && x >= 1)
		rc = ayla_sim_behave(sim, (unsigned)x);
	else if (!strcmp(line, "rest") && arg) {
		char kind[16];
		unsigned count = 0;
		double seconds = 1;
		if (sscanf(arg, "%15s %u %lf", kind, &count, &seconds) < 2) // NOLINT(cert-err34-c)
			rc = -1;
		else
			rc = ayla_sim_rest_fault(sim, kind, count, seconds);
	} else if (line[0])
		rc = -1;
	if (rc)
		fprintf(stderr, "ayla-sim: cannot do '%.60s%s%.60s' (see --help)\n", line,
			arg ? " " : "", arg ? arg : "");
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"port", required_argument, NULL, 'p'},
		{"host", required_argument, NULL, 'H'},
		{"key", required_argument, NULL, 'k'},
		{"heartbeat", required_argument, NULL, 'b'},
		{"misses", required_argument, NULL, 'm'},
		{"scenario", required_argument, NULL, 's'},
		{"interval", required_argument, NULL, 'i'},
		{"loop", no_argument, NULL, 'l'},
		{"cert", required_argument, NULL, 'c'},
		{"tls-key", required_argument, NULL, 'K'},
		{"flood", required_argument, NULL, 'f'},
		{"help", no_argument, NULL, 'h'},
		{"fleet", required_argument, NULL, 'F'},
		{"token-lifetime", required_argument, NULL, 'T'},
		{"ack-delay", required_argument, NULL, 'A'},
		{"behave", required_argument, NULL, 'B'},
		{"seed", required_argument, NULL, 'S'},
		{NULL, 0, NULL, 0},
	};
	struct ayla_sim_config cfg = {.heartbeat_interval = 30,
				      .heartbeat_misses = 2,
				      .event_interval = 1,
				      .history = 10000};
	long flood = 0;
	int c;
	while ((c = getopt_long(argc, argv, "p:k:s:i:lh", longopts, NULL)) != -1) {
		switch (c) {
		case 'p':
			cfg.port = (int)whole_option("port", optarg, 0, 65535);
			break;
		case 'H':
			cfg.host = optarg;
			break;
		case 'k':
			cfg.key = optarg;
			break;
		case 'b':
			cfg.heartbeat_interval = number_option("heartbeat", optarg, 0.001, 86400);
			break;
		case 'm':
			cfg.heartbeat_misses = (int)whole_option("misses", optarg, 1, 1000);
			break;
		case 's':
			cfg.scenario = optarg;
			break;
		case 'i':
			cfg.event_interval = number_option("interval", optarg, 0, 86400);
			break;
		case 'l':
			cfg.loop = 1;
			break;
		case 'c':
			cfg.cert_file = optarg;
			break;
		case 'K':
			cfg.key_file = optarg;
			break;
		case 'f':
			flood = (long)whole_option("flood", optarg, 0, 1e12);
			break;
		case 'F':
			cfg.fleet = optarg;
			break;
		case 'T':
			cfg.token_lifetime = number_option("token-lifetime", optarg, 0, 1e9);
			break;
		case 'A':
			cfg.ack_delay = number_option("ack-delay", optarg, 0, 86400);
			break;
		case 'B':
			cfg.behaviour_interval = number_option("behave", optarg, 0, 86400);
			break;
		case 'S':
			cfg.seed = (unsigned long)whole_option("seed", optarg, 0, 4294967295.0);
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (!cfg.cert_file != !cfg.key_file) {
		fprintf(stderr,
			"ayla-sim: --cert and --tls-key go together (a certificate and its key)\n");
		return 2;
	}
	if (optind < argc || cfg.heartbeat_interval <= 0) {
		usage(stderr);
		return 2;
	}

	char err[256];
	struct ayla_sim *sim = ayla_sim_start(&cfg, err, sizeof err);
	if (!sim) {
		fprintf(stderr, "ayla-sim: %s\n", err);
		return 1;
	}
	/* The key is printed because this is a local test server: that is
	 * the point of it. Real keys never pass through here. */
	printf("ayla-sim: url %s://%s:%d/stream\n", ayla_sim_tls(sim) ? "wss" : "ws",
	       cfg.host ? cfg.host : "127.0.0.1", ayla_sim_port(sim));
	printf("ayla-sim: key %s\n", ayla_sim_key(sim));
	printf("ayla-sim: rest %s://%s:%d (user, device and subscription services)\n",
	       ayla_sim_tls(sim) ? "https" : "http", cfg.host ? cfg.host : "127.0.0.1",
	       ayla_sim_port(sim));
	printf("ayla-sim: sign in as %s / %s with app_id %s, app_secret %s\n", SIM_DEMO_EMAIL,
	       SIM_DEMO_PASSWORD, SIM_DEMO_APP_ID, SIM_DEMO_APP_SECRET);
	fflush(stdout);

	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_signal;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);

	int flooded = 0;
	static char buf[65536]; /* stdin, read raw: stdio would hide buffered lines from poll */
	size_t have = 0;
	int stdin_open = 1;
	while (!stop_requested) {
		if (flood && !flooded) {
			struct ayla_sim_stats st;
			ayla_sim_stats(sim, &st);
			if (st.clients) {
				ayla_sim_flood(sim, (uint64_t)flood);
				flooded = 1;
			}
		}
		struct pollfd in = {.fd = 0, .events = POLLIN};
		if (poll(&in, stdin_open ? 1 : 0, 100) <= 0)
			continue;
		ssize_t n = read(0, buf + have, sizeof buf - 1 - have);
		if (n <= 0) {
			stdin_open = 0;
			continue;
		}
		have += (size_t)n;
		char *line = buf, *nl;
		while ((nl = memchr(line, '\n', have - (size_t)(line - buf)))) {
			*nl = '\0';
			command(sim, line);
			line = nl + 1;
		}
		have -= (size_t)(line - buf);
		memmove(buf, line, have);
		if (have == sizeof buf - 1)
			have = 0; /* a line longer than the buffer: drop it */
	}
	ayla_sim_stop(sim);
	return 0;
}
