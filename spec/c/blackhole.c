/* A test peer that accepts TCP connections on 127.0.0.1 and never answers:
 * what a hung proxy looks like. Prints its port, then lives for the given
 * number of seconds (default 30). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	int seconds = argc > 1 ? atoi(argv[1]) : 30;
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof a;
	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) || listen(fd, 16) ||
	    getsockname(fd, (struct sockaddr *)&a, &len)) {
		perror("blackhole");
		return 1;
	}
	printf("%d\n", ntohs(a.sin_port));
	fflush(stdout);
	time_t end = time(NULL) + seconds;
	int held[64], n = 0;
	while (time(NULL) < end) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		if (poll(&p, 1, 100) > 0 && n < 64) {
			int c = accept(fd, NULL, NULL);
			if (c >= 0)
				held[n++] = c; /* held open, never read, never written */
		}
	}
	for (int k = 0; k < n; k++)
		close(held[k]);
	close(fd);
	return 0;
}
