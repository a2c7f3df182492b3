/* The floor of a UDP DNS server on this machine: answers every datagram with itself (QR set),
 * moving 32 at a time with recvmmsg/sendmmsg, on one thread. bench/vs-gdnsd.sh runs it the
 * way it runs the servers, so the kernel's share of a query's cost can be told apart.
 *   cc -O2 -o echo bench/echo.c && ./echo 5395 */
#define _GNU_SOURCE
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define BATCH 32
#define SIZE 4096

int main(int argc, char **argv) {
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(atoi(argc > 1 ? argv[1] : "5395"))};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
        perror("bind");
        return 1;
    }
    static char bufs[BATCH][SIZE];
    struct sockaddr_in peers[BATCH];
    struct iovec iov[BATCH];
    struct mmsghdr msgs[BATCH];
    for (;;) {
        memset(msgs, 0, sizeof msgs);
        for (int i = 0; i < BATCH; i++) {
            iov[i] = (struct iovec){bufs[i], SIZE};
            msgs[i].msg_hdr = (struct msghdr){.msg_name = &peers[i], .msg_namelen = sizeof peers[i], .msg_iov = &iov[i], .msg_iovlen = 1};
        }
        int n = recvmmsg(fd, msgs, BATCH, MSG_WAITFORONE, NULL);
        if (n <= 0)
            continue;
        for (int i = 0; i < n; i++) {
            iov[i].iov_len = msgs[i].msg_len;
            if (msgs[i].msg_len > 2)
                bufs[i][2] |= 0x80;
        }
        sendmmsg(fd, msgs, n, 0);
    }
}
