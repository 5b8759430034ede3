/* rtpload: G.711-shaped RTP calls through a media relay, for bench/media_relay.py.
 *
 * usage: rtpload SPEC_FILE FD_A FD_B PACKET_BYTES PPS DURATION_MS WARMUP_MS DRAIN_MS TAG
 *
 * FD_A, FD_B: two inherited UDP sockets bound on 127.0.0.1, the A and the B
 * side of every call (a relay latches per call on the source address, so
 * calls may share a source; the relay's own ports stay per call and per leg).
 * SPEC_FILE: one line per call, "PORT_A PORT_B": the call's A stream goes
 * from FD_A to 127.0.0.1:PORT_A (the relay's port for leg A, or FD_B's own
 * port for a direct run) and must arrive at FD_B; its B stream goes from
 * FD_B to PORT_B and must arrive at FD_A. Sharing two sockets lets the
 * generator batch its system calls (sendmmsg/recvmmsg), so it takes a small
 * share of the CPU the relay needs.
 *
 * Each of the 2 x calls streams sends PPS packets per second of PACKET_BYTES
 * (RTP header, then tag, stream, send time, a measured flag), the streams
 * evenly phased. The generator wakes every 1 ms (clock_nanosleep, no
 * busy-waiting: the relay needs the CPU), sends what is due in sendmmsg
 * batches and reads what arrived in recvmmsg batches. The one-way latency
 * is the kernel's receive timestamp (SO_TIMESTAMPNS) minus the send time,
 * both CLOCK_REALTIME: when the packet landed, not when the generator woke.
 * Packets sent after WARMUP_MS count; the run sends for WARMUP_MS +
 * DURATION_MS, then waits DRAIN_MS for late packets. Prints one JSON
 * object: sent/received (measured), loss, misdelivered (arrived at the
 * wrong socket, or another run's tag), reordered, one-way latency
 * percentiles in microseconds, and the generator's own CPU time.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    struct sockaddr_in dest;
    uint32_t ssrc;
    uint32_t seq;
    int64_t highest;    /* highest seq received, -1 none */
} stream_t;

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int64_t real_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static double cpu_s(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

#define HDR 12
#define BODY 25 /* tag 4, stream 4, time 8, measured 1, pad */
#define BATCH 64

typedef struct {
    int fd;
    int n;
    struct mmsghdr msgs[BATCH];
    struct iovec iov[BATCH];
    unsigned char bufs[BATCH][1500];
} outq_t;

static uint64_t send_errors = 0;

static void flush(outq_t *q) {
    int off = 0;
    while (off < q->n) {
        int r = sendmmsg(q->fd, q->msgs + off, q->n - off, 0);
        if (r <= 0) { send_errors += q->n - off; break; }
        off += r;
    }
    q->n = 0;
}

int main(int argc, char **argv) {
    if (argc != 10) {
        fprintf(stderr, "usage: rtpload SPEC FD_A FD_B PACKET_BYTES PPS DURATION_MS WARMUP_MS DRAIN_MS TAG\n");
        return 2;
    }
    int fds[2] = {atoi(argv[2]), atoi(argv[3])};
    int size = atoi(argv[4]);
    double pps = atof(argv[5]);
    int64_t duration = atoll(argv[6]) * 1000000LL, warmup = atoll(argv[7]) * 1000000LL;
    int64_t drain = atoll(argv[8]) * 1000000LL;
    uint32_t tag = (uint32_t)strtoul(argv[9], NULL, 10);
    if (size < HDR + BODY || size > 1500 || pps <= 0) {
        fprintf(stderr, "bad packet size or rate\n");
        return 2;
    }
    FILE *spec = fopen(argv[1], "r");
    if (!spec) { perror("spec"); return 2; }
    int cap = 1024, calls = 0;
    stream_t *streams = malloc(sizeof(stream_t) * 2 * cap);
    int pa, pb;
    while (fscanf(spec, "%d %d", &pa, &pb) == 2) {
        if (calls == cap) { cap *= 2; streams = realloc(streams, sizeof(stream_t) * 2 * cap); }
        stream_t *s = &streams[2 * calls];
        for (int k = 0; k < 2; k++) {
            memset(&s[k], 0, sizeof(stream_t));
            s[k].dest.sin_family = AF_INET;
            s[k].dest.sin_port = htons(k == 0 ? pa : pb);
            s[k].dest.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            s[k].ssrc = tag ^ (uint32_t)(2 * calls + k) * 2654435761u;
            s[k].highest = -1;
        }
        calls++;
    }
    fclose(spec);
    int nstreams = 2 * calls;
    if (nstreams == 0) { fprintf(stderr, "no calls\n"); return 2; }
    /* stream 2i goes A -> B (sent on fds[0], arrives at fds[1]); 2i+1 the other way. */
    for (int k = 0; k < 2; k++) {
        int on = 1;
        if (setsockopt(fds[k], SOL_SOCKET, SO_TIMESTAMPNS, &on, sizeof on) != 0) {
            perror("SO_TIMESTAMPNS");
            return 2;
        }
    }
    static outq_t out[2];
    for (int k = 0; k < 2; k++) {
        out[k].fd = fds[k];
        out[k].n = 0;
        for (int i = 0; i < BATCH; i++) {
            memset(out[k].bufs[i], 0, 1500);
            out[k].iov[i].iov_base = out[k].bufs[i];
            out[k].iov[i].iov_len = size;
            memset(&out[k].msgs[i], 0, sizeof(struct mmsghdr));
            out[k].msgs[i].msg_hdr.msg_iov = &out[k].iov[i];
            out[k].msgs[i].msg_hdr.msg_iovlen = 1;
            out[k].msgs[i].msg_hdr.msg_namelen = sizeof(struct sockaddr_in);
        }
    }
    static unsigned char rbufs[BATCH][2048];
    static unsigned char cbufs[BATCH][CMSG_SPACE(sizeof(struct timespec)) + 64];
    static struct mmsghdr rmsgs[BATCH];
    static struct iovec riov[BATCH];
    for (int i = 0; i < BATCH; i++) {
        riov[i].iov_base = rbufs[i];
        riov[i].iov_len = sizeof rbufs[i];
        rmsgs[i].msg_hdr.msg_iov = &riov[i];
        rmsgs[i].msg_hdr.msg_iovlen = 1;
        rmsgs[i].msg_hdr.msg_control = cbufs[i];
    }
    double interval = 1e9 / (pps * nstreams); /* ns between consecutive packets, all streams */
    uint64_t total = (uint64_t)((warmup + duration) / interval);
    uint64_t cap_samples = (uint64_t)(duration / interval) + 16;
    uint32_t *lat = malloc(sizeof(uint32_t) * cap_samples);
    uint64_t nlat = 0;
    uint64_t sent = 0, sent_measured = 0, recv_measured = 0, misdelivered = 0, reordered = 0;
    uint64_t recv_total = 0;
    double cpu0 = cpu_s();
    int64_t t0 = now_ns() + 1000000LL;
    int64_t end_send = t0 + warmup + duration, deadline = end_send + drain;
    uint64_t k = 0;
    for (;;) {
        int64_t now = now_ns();
        /* send everything due (1 ms ticks), batched per socket */
        while (k < total && t0 + (int64_t)(k * interval) <= now) {
            uint32_t stream_id = (uint32_t)(k % nstreams);
            stream_t *s = &streams[stream_id];
            outq_t *q = &out[stream_id & 1];
            int64_t due = t0 + (int64_t)(k * interval);
            unsigned char *pkt = q->bufs[q->n];
            pkt[0] = 0x80; pkt[1] = 0;
            pkt[2] = s->seq >> 8; pkt[3] = s->seq & 0xff;
            uint32_t ts = htonl(s->seq * 160), ssrc = htonl(s->ssrc);
            memcpy(pkt + 4, &ts, 4); memcpy(pkt + 8, &ssrc, 4);
            int64_t stamp = real_ns();
            memcpy(pkt + HDR, &tag, 4);
            memcpy(pkt + HDR + 4, &stream_id, 4);
            memcpy(pkt + HDR + 8, &stamp, 8);
            int measured = due >= t0 + warmup;
            pkt[HDR + 16] = (unsigned char)measured;
            q->msgs[q->n].msg_hdr.msg_name = &s->dest;
            if (++q->n == BATCH) flush(q);
            s->seq++;
            sent++;
            if (measured) sent_measured++;
            k++;
        }
        flush(&out[0]);
        flush(&out[1]);
        if (k >= total && now >= deadline) break;
        if (k >= total && recv_measured >= sent_measured) break;
        int64_t tick = (now / 1000000LL + 1) * 1000000LL; /* wake every 1 ms */
        struct timespec to = {.tv_sec = tick / 1000000000LL, .tv_nsec = tick % 1000000000LL};
        clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &to, NULL);
        for (int side = 0; side < 2; side++) { /* 1: B's socket, receives even streams */
            for (;;) {
                for (int m = 0; m < BATCH; m++)
                    rmsgs[m].msg_hdr.msg_controllen = sizeof cbufs[m];
                int got = recvmmsg(fds[side], rmsgs, BATCH, MSG_DONTWAIT, NULL);
                if (got <= 0) break;
                int64_t woke = real_ns();
                for (int m = 0; m < got; m++) {
                    unsigned char *buf = rbufs[m];
                    unsigned len = rmsgs[m].msg_len;
                    int64_t arrived = woke;
                    for (struct cmsghdr *c = CMSG_FIRSTHDR(&rmsgs[m].msg_hdr); c;
                         c = CMSG_NXTHDR(&rmsgs[m].msg_hdr, c)) {
                        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_TIMESTAMPNS) {
                            struct timespec kt;
                            memcpy(&kt, CMSG_DATA(c), sizeof kt);
                            arrived = (int64_t)kt.tv_sec * 1000000000LL + kt.tv_nsec;
                        }
                    }
                    recv_total++;
                    if (len < HDR + BODY) { misdelivered++; continue; }
                    uint32_t rtag, rstream; int64_t stamp;
                    memcpy(&rtag, buf + HDR, 4); memcpy(&rstream, buf + HDR + 4, 4);
                    memcpy(&stamp, buf + HDR + 8, 8);
                    if (rtag != tag || rstream >= (uint32_t)nstreams || (int)(rstream & 1) == side) {
                        misdelivered++;
                        continue;
                    }
                    stream_t *s = &streams[rstream];
                    int64_t seq = (buf[2] << 8) | buf[3];
                    if (s->highest >= 0 && seq <= s->highest && s->highest - seq < 30000) reordered++;
                    else s->highest = seq;
                    if (buf[HDR + 16]) {
                        recv_measured++;
                        if (nlat < cap_samples) {
                            int64_t us = (arrived - stamp) / 1000;
                            lat[nlat++] = us < 0 ? 0 : (uint32_t)us;
                        }
                    }
                }
                if (got < BATCH) break;
            }
        }
    }
    double elapsed = (now_ns() - t0) / 1e9;
    double gen_cpu = cpu_s() - cpu0;
    qsort(lat, nlat, sizeof(uint32_t), cmp_u32);
#define PCT(p) (nlat ? lat[(uint64_t)((nlat - 1) * (p))] : 0)
    double loss = sent_measured ? 1.0 - (double)recv_measured / (double)sent_measured : 0.0;
    if (loss < 0) loss = 0;
    printf("{\"calls\": %d, \"streams\": %d, \"offered_pps\": %.1f, \"sent\": %llu, "
           "\"sent_measured\": %llu, \"received_measured\": %llu, \"received_total\": %llu, "
           "\"loss\": %.6f, \"delivered_pps\": %.1f, \"misdelivered\": %llu, \"reordered\": %llu, "
           "\"send_errors\": %llu, \"latency_us\": {\"p50\": %u, \"p90\": %u, \"p99\": %u, \"max\": %u}, "
           "\"elapsed_s\": %.4f, \"generator_cpu_s\": %.4f}\n",
           calls, nstreams, pps * nstreams, (unsigned long long)sent,
           (unsigned long long)sent_measured, (unsigned long long)recv_measured,
           (unsigned long long)recv_total, loss, recv_measured / (duration / 1e9),
           (unsigned long long)misdelivered, (unsigned long long)reordered,
           (unsigned long long)send_errors, PCT(0.5), PCT(0.9), PCT(0.99),
           nlat ? lat[nlat - 1] : 0, elapsed, gen_cpu);
    return 0;
}
