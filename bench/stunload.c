/*
 * stunload: a STUN Binding load generator for bench/stun_server.py.
 *
 * One connected UDP socket keeps at most WINDOW requests outstanding,
 * sending and receiving in batches (sendmmsg/recvmmsg). Every response is
 * validated: a Binding success response (0x0101) whose length matches the
 * datagram, with the magic cookie, a transaction id that this run sent and
 * has not yet seen answered, and an XOR-MAPPED-ADDRESS equal to this
 * socket's own address. When nothing has arrived for LOSS_TIMEOUT ms, the
 * outstanding requests are written off as lost so a dropped datagram cannot
 * stall the window.
 *
 * Bounded in time and count: it stops at the earlier of WARMUP+DURATION ms
 * and MAX_REQUESTS requests, then drains late answers for at most 100 ms.
 * Only answers received during the DURATION phase count toward the rate.
 *
 * Usage: stunload HOST PORT DURATION_MS WARMUP_MS WINDOW MAX_REQUESTS [LOSS_TIMEOUT_MS]
 * Output: one JSON object on stdout.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH 64
#define RX_SIZE 1500
#define COOKIE 0x2112A442u

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double cpu_s(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static uint16_t be16(const uint8_t *p) { return (uint16_t)((p[0] << 8) | p[1]); }

static uint32_t be32(const uint8_t *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static uint64_t be64(const uint8_t *p) { return ((uint64_t)be32(p) << 32) | be32(p + 4); }

static void put64(uint8_t *p, uint64_t v) {
    for (int i = 7; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

static uint32_t salt;
static uint32_t local_ip;   /* host byte order */
static uint16_t local_port; /* host byte order */

/* Returns 1 and the sequence number for a well-formed Binding success
 * response to one of our requests that maps us correctly, 0 otherwise. */
static int validate(const uint8_t *p, size_t n, uint64_t *seq) {
    if (n < 20 || be16(p) != 0x0101 || be32(p + 4) != COOKIE || be32(p + 8) != salt) return 0;
    size_t len = be16(p + 2);
    if (len % 4 != 0 || 20 + len != n) return 0;
    int mapped_ok = 0;
    size_t off = 20;
    while (off + 4 <= n) {
        uint16_t type = be16(p + off), alen = be16(p + off + 2);
        if (off + 4 + alen > n) return 0;
        if (type == 0x0020 && alen == 8 && p[off + 5] == 0x01) {
            uint16_t port = be16(p + off + 6) ^ (uint16_t)(COOKIE >> 16);
            uint32_t ip = be32(p + off + 8) ^ COOKIE;
            mapped_ok = port == local_port && ip == local_ip;
        }
        off += 4 + (((size_t)alen + 3) & ~(size_t)3);
    }
    if (!mapped_ok) return 0;
    *seq = be64(p + 12);
    return 1;
}

int main(int argc, char **argv) {
    if (argc < 7) {
        fprintf(stderr,
                "usage: %s HOST PORT DURATION_MS WARMUP_MS WINDOW MAX_REQUESTS [LOSS_TIMEOUT_MS]\n",
                argv[0]);
        return 2;
    }
    const char *host = argv[1];
    int port = atoi(argv[2]);
    double duration = atof(argv[3]) / 1000.0, warmup = atof(argv[4]) / 1000.0;
    long window = atol(argv[5]);
    unsigned long long max_requests = strtoull(argv[6], NULL, 10);
    double loss_timeout = (argc > 7 ? atof(argv[7]) : 20.0) / 1000.0;
    if (port <= 0 || port > 65535 || duration <= 0 || warmup < 0 || window < 1 ||
        window > 65536 || max_requests < 1 || duration > 600 || warmup > 60) {
        fprintf(stderr, "stunload: argument out of range\n");
        return 2;
    }

    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        perror("socket");
        return 1;
    }
    int buf = 4 * 1024 * 1024;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof buf);
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buf, sizeof buf);
    struct sockaddr_in srv = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &srv.sin_addr) != 1) {
        fprintf(stderr, "stunload: %s is not an IPv4 address\n", host);
        return 2;
    }
    struct sockaddr_in me = {.sin_family = AF_INET, .sin_addr = srv.sin_addr};
    socklen_t melen = sizeof me;
    if (bind(fd, (struct sockaddr *)&me, sizeof me) < 0 ||
        connect(fd, (struct sockaddr *)&srv, sizeof srv) < 0 ||
        getsockname(fd, (struct sockaddr *)&me, &melen) < 0) {
        perror("bind/connect");
        return 1;
    }
    local_ip = ntohl(me.sin_addr.s_addr);
    local_port = ntohs(me.sin_port);
    srand((unsigned)(time(NULL) ^ getpid()));
    salt = ((uint32_t)rand() << 16) ^ (uint32_t)rand();

    /* slot[seq % ring] holds seq + 1 while seq is outstanding. */
    size_t ring = 1;
    while (ring < (size_t)window * 4) ring <<= 1;
    uint64_t *slot = calloc(ring, sizeof *slot);
    static uint8_t txbuf[BATCH][20], rxbuf[BATCH][RX_SIZE];
    struct mmsghdr txm[BATCH], rxm[BATCH];
    struct iovec txv[BATCH], rxv[BATCH];
    if (slot == NULL) return 1;
    memset(txm, 0, sizeof txm);
    memset(rxm, 0, sizeof rxm);
    for (int i = 0; i < BATCH; i++) {
        txbuf[i][0] = 0x00; /* Binding request, no attributes */
        txbuf[i][1] = 0x01;
        txbuf[i][2] = txbuf[i][3] = 0;
        txbuf[i][4] = 0x21, txbuf[i][5] = 0x12, txbuf[i][6] = 0xA4, txbuf[i][7] = 0x42;
        txbuf[i][8] = (uint8_t)(salt >> 24), txbuf[i][9] = (uint8_t)(salt >> 16);
        txbuf[i][10] = (uint8_t)(salt >> 8), txbuf[i][11] = (uint8_t)salt;
        txv[i] = (struct iovec){.iov_base = txbuf[i], .iov_len = 20};
        txm[i].msg_hdr.msg_iov = &txv[i];
        txm[i].msg_hdr.msg_iovlen = 1;
        rxv[i] = (struct iovec){.iov_base = rxbuf[i], .iov_len = RX_SIZE};
        rxm[i].msg_hdr.msg_iov = &rxv[i];
        rxm[i].msg_hdr.msg_iovlen = 1;
    }

    unsigned long long seq = 0, sent = 0, answered = 0, invalid = 0, stale = 0, lost = 0;
    unsigned long long sent_measured = 0, answered_measured = 0, late = 0, send_errors = 0;
    long inflight = 0;
    double t0 = now_s(), t_measure = t0 + warmup, t_end = t_measure + duration;
    double last_progress = t0, cpu0 = cpu_s(), t_stop = t0;
    int draining = 0;
    double drain_end = 0;

    for (;;) {
        double t = now_s();
        if (!draining && (t >= t_end || sent >= max_requests)) {
            draining = 1;
            t_stop = t;
            drain_end = t + 0.1;
        }
        if (draining && (inflight == 0 || t >= drain_end)) break;
        int measuring = !draining && t >= t_measure;

        long room = draining ? 0 : window - inflight;
        if (room > BATCH) room = BATCH;
        if ((unsigned long long)room > max_requests - sent) room = (long)(max_requests - sent);
        if (room > 0) {
            for (long i = 0; i < room; i++) put64(txbuf[i] + 12, seq + (uint64_t)i);
            int n = sendmmsg(fd, txm, (unsigned)room, 0);
            if (n < 0) {
                if (errno != EAGAIN && errno != ENOBUFS && errno != ECONNREFUSED) {
                    perror("sendmmsg");
                    return 1;
                }
                send_errors++;
                n = 0;
            }
            if (inflight == 0 && n > 0) last_progress = t;
            for (int i = 0; i < n; i++) {
                uint64_t s = seq++;
                slot[s & (ring - 1)] = s + 1;
            }
            inflight += n;
            sent += (unsigned long long)n;
            if (measuring) sent_measured += (unsigned long long)n;
        }

        int r = recvmmsg(fd, rxm, BATCH, MSG_DONTWAIT, NULL);
        if (r > 0) {
            for (int i = 0; i < r; i++) {
                uint64_t s;
                if (!validate(rxbuf[i], rxm[i].msg_len, &s)) {
                    invalid++;
                } else if (slot[s & (ring - 1)] != s + 1) {
                    stale++; /* a duplicate, or an answer to a request written off */
                } else {
                    slot[s & (ring - 1)] = 0;
                    inflight--;
                    answered++;
                    if (measuring) answered_measured++;
                    else if (draining) late++;
                    last_progress = t;
                }
            }
            continue;
        }
        if (r < 0 && errno != EAGAIN && errno != ECONNREFUSED) {
            perror("recvmmsg");
            return 1;
        }
        if (inflight > 0 && t - last_progress >= loss_timeout) {
            for (size_t i = 0; i < ring; i++) slot[i] = 0;
            lost += (unsigned long long)inflight;
            inflight = 0;
            last_progress = t;
            continue;
        }
        /* No poll(): the generator busy-waits on its own core, so a server's
         * send never pays for waking it (cross-CPU wake-ups are costly in VMs). */
    }
    double t_done = now_s();
    double measured = (t_stop < t_measure ? 0.0 : t_stop - t_measure);
    lost += (unsigned long long)inflight;
    printf("{\"sent\": %llu, \"answered\": %llu, \"sent_measured\": %llu, "
           "\"answered_measured\": %llu, \"measured_s\": %.6f, \"rate\": %.1f, "
           "\"invalid\": %llu, \"stale\": %llu, \"lost\": %llu, \"late\": %llu, "
           "\"send_errors\": %llu, \"window\": %ld, \"elapsed_s\": %.6f, "
           "\"generator_cpu_s\": %.6f}\n",
           sent, answered, sent_measured, answered_measured, measured,
           measured > 0 ? (double)answered_measured / measured : 0.0, invalid, stale, lost, late,
           send_errors, window, t_done - t0, cpu_s() - cpu0);
    free(slot);
    close(fd);
    return 0;
}
