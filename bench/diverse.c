/* A load generator for the traffic resolvers send: every query carries another client network
 * in its EDNS Client Subnet option, taken round-robin from a list (bench/clients.py makes one
 * from a real City database with a fixed seed). Batched with sendmmsg/recvmmsg on one thread,
 * at most WINDOW queries outstanding, for DURATION seconds; then it prints one line of figures:
 *   sent, answered, lost, qps, latency p50/p99/max (us), the mean ECS scope of the answers and
 *   the share of answers at /16 or wider (IPv6: /32), and the response codes.
 * With --survey it asks each of the first N networks once, one at a time, and prints
 * "network answer scope" per line, so two servers' answers can be compared.
 *   cc -O2 -o diverse bench/diverse.c
 *   ./diverse PORT NETWORKS_FILE [DURATION [WINDOW]]      # load
 *   ./diverse PORT NETWORKS_FILE --survey N               # answers
 * Only 127.0.0.1 is ever asked. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#define BATCH 32
#define MAX_PACKET 512
#define IDS 65536

struct client {
    int family; /* 1: IPv4, 2: IPv6 (RFC 7871) */
    int prefix;
    uint8_t address[16];
};

static struct client *clients;
static size_t client_count;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void read_clients(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) {
        perror(path);
        exit(1);
    }
    size_t cap = 1024;
    clients = malloc(cap * sizeof *clients);
    char line[128];
    while (fgets(line, sizeof line, f)) {
        char *slash = strchr(line, '/');
        if (!slash)
            continue;
        *slash = 0;
        struct client c = {0};
        c.prefix = atoi(slash + 1);
        if (inet_pton(AF_INET, line, c.address) == 1)
            c.family = 1;
        else if (inet_pton(AF_INET6, line, c.address) == 1)
            c.family = 2;
        else
            continue;
        if (client_count == cap)
            clients = realloc(clients, (cap *= 2) * sizeof *clients);
        clients[client_count++] = c;
    }
    fclose(f);
    if (!client_count) {
        fprintf(stderr, "%s: no networks\n", path);
        exit(1);
    }
}

/* api.llm.example.com A, EDNS 1232 with the client's subnet; returns the length. */
static int query(uint8_t *p, uint16_t id, const struct client *c) {
    static const uint8_t name[] = "\3api\3llm\7example\3com";
    int n = 0;
    p[n++] = id >> 8, p[n++] = id & 0xff;
    p[n++] = 0, p[n++] = 0;                       /* flags: no recursion wanted */
    p[n++] = 0, p[n++] = 1, p[n++] = 0, p[n++] = 0; /* one question */
    p[n++] = 0, p[n++] = 0, p[n++] = 0, p[n++] = 1; /* one additional: the OPT */
    memcpy(p + n, name, sizeof name), n += sizeof name;
    p[n++] = 0, p[n++] = 1, p[n++] = 0, p[n++] = 1; /* A, IN */
    int octets = (c->prefix + 7) / 8;
    p[n++] = 0, p[n++] = 0, p[n++] = 41;          /* root, OPT */
    p[n++] = 1232 >> 8, p[n++] = 1232 & 0xff;
    p[n++] = 0, p[n++] = 0, p[n++] = 0, p[n++] = 0; /* rcode, version, flags */
    int rdlen = 4 + 4 + octets;
    p[n++] = rdlen >> 8, p[n++] = rdlen & 0xff;
    p[n++] = 0, p[n++] = 8;                       /* ECS */
    p[n++] = (4 + octets) >> 8, p[n++] = (4 + octets) & 0xff;
    p[n++] = 0, p[n++] = c->family, p[n++] = c->prefix, p[n++] = 0;
    memcpy(p + n, c->address, octets), n += octets;
    return n;
}

/* Skips a name; returns the offset after it, or -1. */
static int skip_name(const uint8_t *p, int len, int at) {
    while (at < len) {
        if (p[at] == 0)
            return at + 1;
        if ((p[at] & 0xc0) == 0xc0)
            return at + 2;
        at += p[at] + 1;
    }
    return -1;
}

struct reply {
    int rcode;
    int scope; /* -1: no ECS */
    char answer[64];
};

static void parse(const uint8_t *p, int len, struct reply *r) {
    r->rcode = len >= 4 ? p[3] & 0x0f : -1;
    r->scope = -1;
    strcpy(r->answer, "-");
    if (len < 12)
        return;
    int an = p[6] << 8 | p[7], ns = p[8] << 8 | p[9], ar = p[10] << 8 | p[11];
    int at = skip_name(p, len, 12);
    if (at < 0)
        return;
    at += 4;
    for (int i = 0; i < an + ns + ar && at >= 0 && at + 10 <= len; i++) {
        at = skip_name(p, len, at);
        if (at < 0 || at + 10 > len)
            return;
        int type = p[at] << 8 | p[at + 1], rdlen = p[at + 8] << 8 | p[at + 9];
        const uint8_t *rd = p + at + 10;
        if (at + 10 + rdlen > len)
            return;
        if (i < an && type == 1 && rdlen == 4 && r->answer[0] == '-')
            inet_ntop(AF_INET, rd, r->answer, sizeof r->answer);
        if (type == 41) {
            for (int o = 0; o + 4 <= rdlen;) {
                int code = rd[o] << 8 | rd[o + 1], olen = rd[o + 2] << 8 | rd[o + 3];
                if (code == 8 && olen >= 4 && o + 4 + olen <= rdlen)
                    r->scope = rd[o + 4 + 3];
                o += 4 + olen;
            }
        }
        at += 10 + rdlen;
    }
}

static int open_socket(int port, struct sockaddr_in *server) {
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    *server = (struct sockaddr_in){.sin_family = AF_INET, .sin_port = htons(port)};
    server->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int size = 8 << 20;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
    if (fd < 0 || connect(fd, (struct sockaddr *)server, sizeof *server) < 0) {
        perror("socket");
        exit(1);
    }
    return fd;
}

static void network_text(const struct client *c, char *out, size_t size) {
    char address[INET6_ADDRSTRLEN];
    inet_ntop(c->family == 1 ? AF_INET : AF_INET6, c->address, address, sizeof address);
    snprintf(out, size, "%s/%d", address, c->prefix);
}

static int survey(int port, size_t count) {
    struct sockaddr_in server;
    int fd = open_socket(port, &server);
    uint8_t out[MAX_PACKET], in[MAX_PACKET];
    for (size_t i = 0; i < count && i < client_count; i++) {
        struct reply r = {.rcode = -1, .scope = -1};
        strcpy(r.answer, "timeout");
        int n = query(out, (uint16_t)i, &clients[i]);
        for (int attempt = 0; attempt < 3 && r.rcode < 0; attempt++) {
            send(fd, out, n, 0);
            struct pollfd pfd = {fd, POLLIN, 0};
            while (poll(&pfd, 1, 1000) > 0) {
                int got = recv(fd, in, sizeof in, 0);
                if (got >= 2 && (in[0] << 8 | in[1]) == (uint16_t)i) {
                    parse(in, got, &r);
                    break;
                }
            }
        }
        char network[64];
        network_text(&clients[i], network, sizeof network);
        printf("%s %s %d\n", network, r.answer, r.scope);
    }
    return 0;
}

static int compare_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s PORT NETWORKS_FILE [DURATION [WINDOW]] | --survey N\n", argv[0]);
        return 2;
    }
    int port = atoi(argv[1]);
    read_clients(argv[2]);
    if (argc > 4 && strcmp(argv[3], "--survey") == 0)
        return survey(port, strtoul(argv[4], NULL, 10));
    double duration = argc > 3 ? atof(argv[3]) : 10;
    int window = argc > 4 ? atoi(argv[4]) : 200;
    if (window > IDS / 2)
        window = IDS / 2;

    struct sockaddr_in server;
    int fd = open_socket(port, &server);
    static double sent_at[IDS];
    static uint8_t outstanding[IDS];
    static uint8_t out[BATCH][MAX_PACKET], in[BATCH][MAX_PACKET];
    struct iovec out_iov[BATCH], in_iov[BATCH];
    struct mmsghdr out_msgs[BATCH], in_msgs[BATCH];
    size_t latency_cap = 1 << 20, latency_count = 0;
    double *latencies = malloc(latency_cap * sizeof *latencies);
    uint64_t sent = 0, answered = 0, lost = 0, rcodes[16] = {0}, scope_sum = 0, scoped = 0, wide = 0;
    int in_flight = 0;
    uint16_t next_id = 0;
    size_t next_client = 0;
    double start = now(), end = start + duration, last_sweep = start;

    while (now() < end || in_flight > 0) {
        double t = now();
        int batch = 0;
        while (t < end && in_flight + batch < window && batch < BATCH) {
            while (outstanding[next_id])
                next_id++;
            const struct client *c = &clients[next_client++ % client_count];
            int n = query(out[batch], next_id, c);
            out_iov[batch] = (struct iovec){out[batch], n};
            out_msgs[batch] = (struct mmsghdr){.msg_hdr = {.msg_iov = &out_iov[batch], .msg_iovlen = 1}};
            outstanding[next_id] = 1;
            sent_at[next_id] = t;
            next_id++;
            batch++;
        }
        if (batch) {
            int n = sendmmsg(fd, out_msgs, batch, 0);
            n = n < 0 ? 0 : n;
            for (int i = n; i < batch; i++) /* not sent: free their ids */
                outstanding[out[i][0] << 8 | out[i][1]] = 0;
            in_flight += n;
            sent += n;
        }
        for (int i = 0; i < BATCH; i++) {
            in_iov[i] = (struct iovec){in[i], MAX_PACKET};
            in_msgs[i] = (struct mmsghdr){.msg_hdr = {.msg_iov = &in_iov[i], .msg_iovlen = 1}};
        }
        struct pollfd pfd = {fd, POLLIN, 0};
        if (in_flight >= window || t >= end)
            poll(&pfd, 1, 5);
        int got = recvmmsg(fd, in_msgs, BATCH, MSG_DONTWAIT, NULL);
        t = now();
        for (int i = 0; i < got; i++) {
            int len = in_msgs[i].msg_len;
            if (len < 12)
                continue;
            uint16_t id = in[i][0] << 8 | in[i][1];
            if (!outstanding[id])
                continue;
            outstanding[id] = 0;
            in_flight--;
            answered++;
            if (latency_count == latency_cap)
                latencies = realloc(latencies, (latency_cap *= 2) * sizeof *latencies);
            latencies[latency_count++] = (t - sent_at[id]) * 1e6;
            struct reply r;
            parse(in[i], len, &r);
            rcodes[r.rcode & 15]++;
            if (r.scope >= 0) {
                scope_sum += r.scope, scoped++;
                wide += r.scope <= (clients[0].family == 1 ? 16 : 32);
            }
        }
        if (t - last_sweep > 0.1) { /* a query unanswered for a second is lost */
            for (int id = 0; id < IDS; id++)
                if (outstanding[id] && t - sent_at[id] > 1.0) {
                    outstanding[id] = 0;
                    in_flight--;
                    lost++;
                }
            last_sweep = t;
        }
        if (t > end + 2)
            break;
    }
    double elapsed = now() - start;
    qsort(latencies, latency_count, sizeof *latencies, compare_double);
    double p50 = latency_count ? latencies[latency_count / 2] : 0;
    double p99 = latency_count ? latencies[latency_count * 99 / 100] : 0;
    double max = latency_count ? latencies[latency_count - 1] : 0;
    printf("sent %llu answered %llu lost %llu qps %.0f p50 %.0f p99 %.0f max %.0f scope %.1f wide %.2f rcodes",
           (unsigned long long)sent, (unsigned long long)answered, (unsigned long long)lost,
           answered / (duration < elapsed ? duration : elapsed), p50, p99, max,
           scoped ? (double)scope_sum / scoped : -1.0, scoped ? (double)wide / scoped : 0.0);
    for (int i = 0; i < 16; i++)
        if (rcodes[i])
            printf(" %d:%llu", i, (unsigned long long)rcodes[i]);
    printf("\n");
    return 0;
}
