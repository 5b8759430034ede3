/*
 * turnrelay: the data plane of bench/turn_relay.py, a paced ChannelData
 * generator with its own echo peer.
 *
 *   turnrelay PAYLOAD RATE DURATION_MS WARMUP_MS DRAIN_MS TAG PEER_FD FD:CHANNEL...
 *
 * The Python side does the control plane (Allocate with long-term
 * credentials, CreatePermission, ChannelBind) on connected UDP sockets and
 * hands them over as inherited descriptors: each FD is a client socket
 * connected to the TURN server with CHANNEL bound to the peer, and PEER_FD is
 * the peer's unconnected socket. CHANNEL 0 means "no server": the socket is
 * connected straight to the peer and sends the bare payload, which measures
 * the round trip the server adds to.
 *
 * Clients send RATE datagrams per second in all (round robin, sendmmsg
 * batches of at most 16), on a schedule (datagram i is due at i/RATE s) kept
 * by busy-polling, so a slow server cannot slow the offered rate: datagrams
 * the kernel refuses (EAGAIN) stay due and leave late. The peer echoes every
 * datagram it receives to where it came from (the relayed address), so each
 * one crosses the server twice: client -> relay -> peer -> relay -> client.
 * Each payload carries TAG, a sequence number and its send time; a client
 * that receives its echo (ChannelData with its channel number, or the bare
 * payload) records the round trip.
 *
 * Only datagrams sent after WARMUP_MS count; sending stops at
 * WARMUP_MS + DURATION_MS, and echoes are awaited for at most DRAIN_MS more.
 * Bounded in time and count (RATE x seconds, at most 20 million). Prints one
 * JSON object on stdout.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_CLIENTS 256
#define BATCH 32
#define SEND_BATCH 16
#define MAX_PAYLOAD 1400
#define HDR 24 /* tag u32, client u32, seq u64, sent_ns u64 */
#define MAX_COUNT 20000000ULL

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static double cpu_s(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

static double pct(const uint32_t *v, uint64_t n, double p) {
    if (n == 0) return -1.0;
    uint64_t i = (uint64_t)(p * (double)(n - 1) + 0.5);
    return (double)v[i] / 1000.0; /* ns -> us */
}

static int usage(void) {
    fprintf(stderr,
            "usage: turnrelay PAYLOAD RATE DURATION_MS WARMUP_MS DRAIN_MS TAG PEER_FD "
            "FD:CHANNEL...\n");
    return 2;
}

int main(int argc, char **argv) {
    if (argc < 9) return usage();
    int payload = atoi(argv[1]);
    double rate = atof(argv[2]);
    uint64_t duration_ns = (uint64_t)atoll(argv[3]) * 1000000ULL;
    uint64_t warmup_ns = (uint64_t)atoll(argv[4]) * 1000000ULL;
    uint64_t drain_ns = (uint64_t)atoll(argv[5]) * 1000000ULL;
    uint32_t tag = (uint32_t)strtoul(argv[6], NULL, 10);
    int peer_fd = atoi(argv[7]);
    int nclients = argc - 8;
    if (payload < HDR || payload > MAX_PAYLOAD || rate <= 0 || nclients > MAX_CLIENTS ||
        duration_ns == 0)
        return usage();
    int fds[MAX_CLIENTS];
    unsigned chans[MAX_CLIENTS];
    for (int c = 0; c < nclients; c++) {
        if (sscanf(argv[8 + c], "%d:%u", &fds[c], &chans[c]) != 2) return usage();
    }

    uint64_t total = (uint64_t)(rate * (double)(warmup_ns + duration_ns) / 1e9);
    if (total > MAX_COUNT) total = MAX_COUNT;
    /* received[seq]: 1 once echoed (duplicates are counted apart) */
    uint8_t *seen = calloc(total + 1, 1);
    uint32_t *rtts = malloc(sizeof(uint32_t) * (total + 1));
    if (!seen || !rtts) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }

    static uint8_t txbuf[SEND_BATCH][4 + MAX_PAYLOAD];
    static uint8_t rxbuf[BATCH][2048];
    struct mmsghdr rx[BATCH], tx[SEND_BATCH], echo[BATCH];
    struct iovec rxiov[BATCH], txiov[SEND_BATCH], echoiov[BATCH];
    struct sockaddr_storage from[BATCH];
    for (int i = 0; i < BATCH; i++) {
        rxiov[i].iov_base = rxbuf[i];
        rxiov[i].iov_len = sizeof(rxbuf[i]);
    }

    /* Throw away whatever an earlier run left in the sockets. */
    for (int c = 0; c <= nclients; c++) {
        int fd = c < nclients ? fds[c] : peer_fd;
        for (;;) {
            ssize_t n = recv(fd, rxbuf[0], sizeof(rxbuf[0]), MSG_DONTWAIT);
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
            if (n < 0 && errno != ECONNREFUSED) break;
        }
    }

    uint64_t sent = 0, sent_measured = 0, received = 0, received_measured = 0;
    uint64_t duplicates = 0, invalid = 0, foreign = 0, echoed = 0, send_errors = 0;
    uint64_t eagain = 0, echo_errors = 0, nrtt = 0;
    uint64_t first_measured = UINT64_MAX;
    int next_client = 0;
    double cpu0 = cpu_s();
    uint64_t t0 = now_ns();
    uint64_t t_measure = t0 + warmup_ns, t_stop = t_measure + duration_ns;
    uint64_t t_end = t_stop + drain_ns;

    for (;;) {
        uint64_t now = now_ns();
        if (now >= t_end) break;
        if (now >= t_stop && received_measured >= sent_measured) break;
        /* send what the schedule says is due */
        if (now < t_stop && sent < total) {
            uint64_t due = (uint64_t)((double)(now - t0) * rate / 1e9) + 1;
            if (due > total) due = total;
            int rounds = 0;
            while (sent < due && rounds++ < nclients) {
                int c = next_client;
                next_client = (next_client + 1) % nclients;
                uint64_t want = due - sent;
                int b = want > SEND_BATCH ? SEND_BATCH : (int)want;
                int off = chans[c] ? 4 : 0;
                uint64_t stamp = now_ns();
                for (int i = 0; i < b; i++) {
                    uint8_t *p = txbuf[i];
                    if (off) {
                        p[0] = (uint8_t)(chans[c] >> 8);
                        p[1] = (uint8_t)chans[c];
                        p[2] = (uint8_t)(payload >> 8);
                        p[3] = (uint8_t)payload;
                    }
                    uint8_t *q = p + off;
                    uint32_t cc = (uint32_t)c;
                    uint64_t seq = sent + (uint64_t)i;
                    memcpy(q, &tag, 4);
                    memcpy(q + 4, &cc, 4);
                    memcpy(q + 8, &seq, 8);
                    memcpy(q + 16, &stamp, 8);
                    txiov[i].iov_base = p;
                    txiov[i].iov_len = (size_t)(off + payload);
                    memset(&tx[i], 0, sizeof(tx[i]));
                    tx[i].msg_hdr.msg_iov = &txiov[i];
                    tx[i].msg_hdr.msg_iovlen = 1;
                }
                int n = sendmmsg(fds[c], tx, (unsigned)b, MSG_DONTWAIT);
                if (n < 0) {
                    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS)
                        eagain++;
                    else
                        send_errors++;
                    continue;
                }
                if (stamp >= t_measure) {
                    if (first_measured == UINT64_MAX) first_measured = sent;
                    sent_measured += (uint64_t)n;
                }
                sent += (uint64_t)n;
            }
        }
        /* the peer: echo everything to its source (the relayed address) */
        for (int i = 0; i < BATCH; i++) {
            memset(&rx[i].msg_hdr, 0, sizeof(rx[i].msg_hdr));
            rx[i].msg_hdr.msg_iov = &rxiov[i];
            rx[i].msg_hdr.msg_iovlen = 1;
            rx[i].msg_hdr.msg_name = &from[i];
            rx[i].msg_hdr.msg_namelen = sizeof(from[i]);
        }
        int n = recvmmsg(peer_fd, rx, BATCH, MSG_DONTWAIT, NULL);
        if (n > 0) {
            for (int i = 0; i < n; i++) {
                echoiov[i].iov_base = rxbuf[i];
                echoiov[i].iov_len = rx[i].msg_len;
                memset(&echo[i], 0, sizeof(echo[i]));
                echo[i].msg_hdr.msg_iov = &echoiov[i];
                echo[i].msg_hdr.msg_iovlen = 1;
                echo[i].msg_hdr.msg_name = &from[i];
                echo[i].msg_hdr.msg_namelen = rx[i].msg_hdr.msg_namelen;
            }
            int done = 0;
            while (done < n) {
                int m = sendmmsg(peer_fd, echo + done, (unsigned)(n - done), 0);
                if (m <= 0) {
                    echo_errors += (uint64_t)(n - done);
                    break;
                }
                done += m;
            }
            echoed += (uint64_t)done;
        }
        /* the clients: receive echoes */
        for (int c = 0; c < nclients; c++) {
            for (int i = 0; i < BATCH; i++) {
                memset(&rx[i].msg_hdr, 0, sizeof(rx[i].msg_hdr));
                rx[i].msg_hdr.msg_iov = &rxiov[i];
                rx[i].msg_hdr.msg_iovlen = 1;
            }
            int r = recvmmsg(fds[c], rx, BATCH, MSG_DONTWAIT, NULL);
            if (r <= 0) continue;
            uint64_t t = now_ns();
            for (int i = 0; i < r; i++) {
                const uint8_t *p = rxbuf[i];
                size_t len = rx[i].msg_len;
                int off = chans[c] ? 4 : 0;
                if (len < (size_t)(off + payload)) {
                    invalid++;
                    continue;
                }
                if (off && (((unsigned)p[0] << 8 | p[1]) != chans[c] ||
                            ((unsigned)p[2] << 8 | p[3]) != (unsigned)payload)) {
                    invalid++;
                    continue;
                }
                const uint8_t *q = p + off;
                uint32_t rtag, rc;
                uint64_t seq, stamp;
                memcpy(&rtag, q, 4);
                memcpy(&rc, q + 4, 4);
                memcpy(&seq, q + 8, 8);
                memcpy(&stamp, q + 16, 8);
                if (rtag != tag) {
                    foreign++;
                    continue;
                }
                if (rc != (uint32_t)c || seq >= sent) {
                    invalid++;
                    continue;
                }
                if (seen[seq]) {
                    duplicates++;
                    continue;
                }
                seen[seq] = 1;
                received++;
                if (stamp >= t_measure && stamp < t_stop) {
                    received_measured++;
                    uint64_t d = t - stamp;
                    rtts[nrtt++] = d > UINT32_MAX ? UINT32_MAX : (uint32_t)d;
                }
            }
        }
    }
    uint64_t t_done = now_ns();
    double cpu = cpu_s() - cpu0;
    qsort(rtts, nrtt, sizeof(uint32_t), cmp_u32);
    double mean = 0;
    for (uint64_t i = 0; i < nrtt; i++) mean += (double)rtts[i];
    mean = nrtt ? mean / (double)nrtt / 1000.0 : -1.0;
    double measured_s = (double)duration_ns / 1e9;
    uint64_t lost = sent_measured > received_measured ? sent_measured - received_measured : 0;
    printf("{\"payload\": %d, \"clients\": %d, \"offered_rate\": %.1f, \"sent\": %llu, "
           "\"sent_measured\": %llu, \"received\": %llu, \"received_measured\": %llu, "
           "\"lost\": %llu, \"loss\": %.6f, \"sent_rate\": %.1f, \"delivered_rate\": %.1f, "
           "\"duplicates\": %llu, \"invalid\": %llu, \"foreign\": %llu, \"echoed\": %llu, "
           "\"eagain\": %llu, \"send_errors\": %llu, \"echo_errors\": %llu, "
           "\"rtt_us\": {\"p50\": %.1f, \"p90\": %.1f, \"p99\": %.1f, \"max\": %.1f, "
           "\"mean\": %.1f}, \"measured_s\": %.3f, \"elapsed_s\": %.3f, "
           "\"generator_cpu_s\": %.3f}\n",
           payload, nclients, rate, (unsigned long long)sent,
           (unsigned long long)sent_measured, (unsigned long long)received,
           (unsigned long long)received_measured, (unsigned long long)lost,
           sent_measured ? (double)lost / (double)sent_measured : 0.0,
           (double)sent_measured / measured_s, (double)received_measured / measured_s,
           (unsigned long long)duplicates, (unsigned long long)invalid,
           (unsigned long long)foreign, (unsigned long long)echoed, (unsigned long long)eagain,
           (unsigned long long)send_errors, (unsigned long long)echo_errors,
           pct(rtts, nrtt, 0.5), pct(rtts, nrtt, 0.9), pct(rtts, nrtt, 0.99),
           pct(rtts, nrtt, 1.0), mean, measured_s, (double)(t_done - t0) / 1e9, cpu);
    free(seen);
    free(rtts);
    return 0;
}
