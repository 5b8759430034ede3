/*
 * udprate: a paced UDP sender and a counting receiver for bench/tun_nat.py.
 *
 *   udprate send HOST PORT RATE COUNT DURATION_MS PAYLOAD TAG TICK_US
 *   udprate recv PORT COUNT DEADLINE_MS IDLE_MS TAG
 *
 * The sender sends COUNT datagrams of PAYLOAD bytes (16..1400) from one
 * connected socket, paced at RATE datagrams per second (0: as fast as it
 * can, in sendmmsg batches of 64), and stops early at DURATION_MS. Pacing
 * follows a schedule (datagram i leaves at i/RATE s): it sleeps with
 * clock_nanosleep (timer slack 1 us) until TICK_US worth of datagrams are
 * due (at least one), then sends what is due with one sendmmsg. It never
 * busy-waits, so on a small machine it leaves the CPU to the NAT under
 * test; a wake-up costs far more than a datagram in a VM, hence the tick
 * (at 40k/s and 200 us: bursts of 8 every 200 us).
 * Each datagram carries the 64-bit TAG and its sequence number.
 *
 * The receiver binds 0.0.0.0:PORT, prints "ready" once it can receive, and
 * counts datagrams carrying TAG until it has all COUNT sequence numbers, or
 * IDLE_MS pass without one after the first, or DEADLINE_MS pass in all.
 * Duplicates, reordering (a sequence number below the highest seen) and
 * foreign datagrams are counted apart. It also reports the growth of the
 * namespace's UDP RcvbufErrors (/proc/net/snmp) during the run, so losses at
 * its own socket are not blamed on the NAT.
 *
 * Both are bounded in count and time and print one JSON object on stdout.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH 64
#define RX_SIZE 2048
#define MAX_COUNT 50000000ULL

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

static void sleep_until(double t) {
    struct timespec ts;
    ts.tv_sec = (time_t)t;
    ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
    if (ts.tv_nsec >= 1000000000L) ts.tv_nsec = 999999999L;
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    }
}

static void put64(uint8_t *p, uint64_t v) {
    for (int i = 7; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

static uint64_t get64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v = (v << 8) | p[i];
    return v;
}

/* UDP RcvbufErrors of this network namespace, or -1. */
static long long rcvbuf_errors(void) {
    FILE *f = fopen("/proc/net/snmp", "r");
    if (f == NULL) return -1;
    char names[1024], values[1024];
    long long result = -1;
    while (fgets(names, sizeof names, f) != NULL) {
        if (strncmp(names, "Udp: ", 5) != 0) continue;
        if (fgets(values, sizeof values, f) == NULL) break;
        char *sn, *sv, *n = strtok_r(names, " \n", &sn), *v = strtok_r(values, " \n", &sv);
        while (n != NULL && v != NULL) {
            if (strcmp(n, "RcvbufErrors") == 0) result = atoll(v);
            n = strtok_r(NULL, " \n", &sn);
            v = strtok_r(NULL, " \n", &sv);
        }
        break;
    }
    fclose(f);
    return result;
}

static int do_send(char **argv) {
    const char *host = argv[0];
    int port = atoi(argv[1]);
    double rate = atof(argv[2]);
    unsigned long long count = strtoull(argv[3], NULL, 10);
    double duration = atof(argv[4]) / 1000.0;
    int payload = atoi(argv[5]);
    uint64_t tag = strtoull(argv[6], NULL, 10);
    double tick = atof(argv[7]) / 1e6;
    if (port <= 0 || port > 65535 || rate < 0 || count < 1 || count > MAX_COUNT ||
        duration <= 0 || duration > 600 || payload < 16 || payload > 1400 || tick < 0 ||
        tick > 0.1) {
        fprintf(stderr, "udprate send: argument out of range\n");
        return 2;
    }
    struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &dst.sin_addr) != 1) {
        fprintf(stderr, "udprate send: %s is not an IPv4 address\n", host);
        return 2;
    }
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&dst, sizeof dst) < 0) {
        perror("udprate send: socket/connect");
        return 1;
    }
    int sndbuf = 4 * 1024 * 1024;
    setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &sndbuf, sizeof sndbuf);
    prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);

    static uint8_t buf[BATCH][1400];
    struct mmsghdr msgs[BATCH];
    struct iovec iov[BATCH];
    memset(msgs, 0, sizeof msgs);
    for (int i = 0; i < BATCH; i++) {
        for (int j = 16; j < payload; j++) buf[i][j] = (uint8_t)j;
        put64(buf[i], tag);
        iov[i] = (struct iovec){.iov_base = buf[i], .iov_len = (size_t)payload};
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    unsigned long long burst = (unsigned long long)(rate * tick);
    if (burst < 1) burst = 1;
    if (burst > BATCH) burst = BATCH;
    unsigned long long sent = 0, errors = 0, calls = 0;
    double cpu0 = cpu_s(), t0 = now_s(), t_end = t0 + duration, t = t0;
    while (sent < count) {
        t = now_s();
        if (t >= t_end) break;
        unsigned long long want = count - sent;
        if (rate > 0) {
            unsigned long long due = (unsigned long long)((t - t0) * rate) + 1;
            if (due > count) due = count;
            if (due <= sent) {
                sleep_until(t0 + (double)(sent + burst - 1) / rate);
                continue;
            }
            want = due - sent;
        }
        if (want > BATCH) {
            want = BATCH;
        }
        for (unsigned long long i = 0; i < want; i++) put64(buf[i] + 8, sent + i);
        int n = sendmmsg(fd, msgs, (unsigned)want, 0);
        calls++;
        if (n < 0) {
            if (errno != ENOBUFS && errno != EAGAIN && errno != ECONNREFUSED) {
                perror("udprate send: sendmmsg");
                return 1;
            }
            /* The datagram is gone as on a congested link; count it as sent. */
            errors++;
            n = 1;
        }
        sent += (unsigned long long)n;
    }
    double elapsed = now_s() - t0;
    printf("{\"sent\": %llu, \"send_errors\": %llu, \"elapsed_s\": %.6f, \"rate\": %.1f, "
           "\"offered_rate\": %.1f, \"burst\": %llu, \"syscalls\": %llu, \"cpu_s\": %.6f}\n",
           sent, errors, elapsed, elapsed > 0 ? (double)sent / elapsed : 0.0, rate,
           rate > 0 ? burst : (unsigned long long)BATCH, calls,
           cpu_s() - cpu0);
    close(fd);
    return 0;
}

static int do_recv(char **argv) {
    int port = atoi(argv[0]);
    unsigned long long count = strtoull(argv[1], NULL, 10);
    double deadline = atof(argv[2]) / 1000.0, idle = atof(argv[3]) / 1000.0;
    uint64_t tag = strtoull(argv[4], NULL, 10);
    if (port <= 0 || port > 65535 || count < 1 || count > MAX_COUNT || deadline <= 0 ||
        deadline > 600 || idle <= 0) {
        fprintf(stderr, "udprate recv: argument out of range\n");
        return 2;
    }
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    struct sockaddr_in me = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (fd < 0 || bind(fd, (struct sockaddr *)&me, sizeof me) < 0) {
        perror("udprate recv: socket/bind");
        return 1;
    }
    int rcvbuf = 8 * 1024 * 1024;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf);
    uint8_t *seen = calloc((size_t)(count / 8 + 1), 1);
    static uint8_t buf[BATCH][RX_SIZE];
    struct mmsghdr msgs[BATCH];
    struct iovec iov[BATCH];
    if (seen == NULL) return 1;
    memset(msgs, 0, sizeof msgs);
    for (int i = 0; i < BATCH; i++) {
        iov[i] = (struct iovec){.iov_base = buf[i], .iov_len = RX_SIZE};
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    long long drops0 = rcvbuf_errors();
    printf("ready\n");
    fflush(stdout);

    unsigned long long received = 0, unique = 0, dups = 0, reordered = 0, foreign = 0;
    unsigned long long highest = 0;
    int any = 0;
    const char *why = "deadline";
    double cpu0 = cpu_s(), t0 = now_s(), first = 0, last = 0;
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    for (;;) {
        double t = now_s();
        if (unique >= count) {
            why = "complete";
            break;
        }
        if (t - t0 >= deadline) break;
        if (any && t - last >= idle) {
            why = "idle";
            break;
        }
        double left = any ? last + idle - t : t0 + deadline - t;
        if (t0 + deadline - t < left) left = t0 + deadline - t;
        int r = recvmmsg(fd, msgs, BATCH, MSG_DONTWAIT, NULL);
        if (r <= 0) {
            if (r < 0 && errno != EAGAIN && errno != EINTR) {
                perror("udprate recv: recvmmsg");
                return 1;
            }
            int ms = (int)(left * 1000.0) + 1;
            poll(&pfd, 1, ms > 50 ? 50 : ms);
            continue;
        }
        t = now_s();
        for (int i = 0; i < r; i++) {
            received++;
            if (msgs[i].msg_len < 16 || get64(buf[i]) != tag) {
                foreign++;
                continue;
            }
            uint64_t seq = get64(buf[i] + 8);
            if (seq >= count) {
                foreign++;
                continue;
            }
            if (!any) {
                any = 1;
                first = t;
            }
            last = t;
            if (seen[seq / 8] & (1u << (seq % 8))) {
                dups++;
                continue;
            }
            seen[seq / 8] |= (uint8_t)(1u << (seq % 8));
            unique++;
            if (unique > 1 && seq < highest) reordered++;
            if (seq > highest) highest = seq;
        }
    }
    long long drops1 = rcvbuf_errors();
    double span = any ? last - first : 0.0;
    printf("{\"received\": %llu, \"unique\": %llu, \"duplicates\": %llu, \"reordered\": %llu, "
           "\"foreign\": %llu, \"span_s\": %.6f, \"rate\": %.1f, \"rcvbuf_errors\": %lld, "
           "\"stopped\": \"%s\", \"elapsed_s\": %.6f, \"cpu_s\": %.6f}\n",
           received, unique, dups, reordered, foreign, span,
           span > 0 ? (double)(unique > 1 ? unique - 1 : 0) / span : 0.0,
           drops0 >= 0 && drops1 >= 0 ? drops1 - drops0 : -1LL, why, now_s() - t0,
           cpu_s() - cpu0);
    free(seen);
    close(fd);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 10 && strcmp(argv[1], "send") == 0) return do_send(argv + 2);
    if (argc == 7 && strcmp(argv[1], "recv") == 0) return do_recv(argv + 2);
    fprintf(stderr,
            "usage: %s send HOST PORT RATE COUNT DURATION_MS PAYLOAD TAG TICK_US\n"
            "       %s recv PORT COUNT DEADLINE_MS IDLE_MS TAG\n",
            argv[0], argv[0]);
    return 2;
}
