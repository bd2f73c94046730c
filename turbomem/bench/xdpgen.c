/*
 * xdpgen - the traffic generator of `python -m turbomem bench xdp`.
 *
 *   xdpgen IFACE DST_MAC SRC_MAC SRC_IP DST_IP SIZE SECONDS [COUNT]
 *
 * Sends UDP/IPv4 frames of SIZE bytes (Ethernet header included, no FCS) to
 * DST_IP:9999 out of IFACE as fast as it can for SECONDS, with sendmmsg on an
 * AF_PACKET socket that bypasses the qdisc, and prints how many frames the
 * kernel accepted.  The source port cycles over 64 values (one flow per port).
 * Run it inside the far namespace of the veth pair; it is the load, not a
 * contender, so it is plain C.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#define BATCH 64

static int parse_mac(const char *s, unsigned char *mac)
{
    return sscanf(s, "%hhx:%hhx:%hhx:%hhx:%hhx:%hhx", &mac[0], &mac[1], &mac[2], &mac[3],
                  &mac[4], &mac[5]) == 6 ? 0 : -1;
}

static uint16_t csum16(const void *data, size_t len)
{
    const uint8_t *p = data;
    uint32_t sum = 0;
    for (size_t i = 0; i + 1 < len; i += 2)
        sum += (uint32_t)(p[i] << 8 | p[i + 1]);
    while (sum >> 16)
        sum = (sum & 0xFFFF) + (sum >> 16);
    return (uint16_t)~sum;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
    if (argc != 8 && argc != 9) {
        fprintf(stderr, "usage: xdpgen IFACE DST_MAC SRC_MAC SRC_IP DST_IP SIZE SECONDS [COUNT]\n");
        return 2;
    }
    unsigned char dst[6], src[6];
    struct in_addr sip, dip;
    int size = atoi(argv[6]);
    double seconds = atof(argv[7]);
    unsigned long long limit = argc == 9 ? strtoull(argv[8], NULL, 10) : ~0ULL;
    if (parse_mac(argv[2], dst) || parse_mac(argv[3], src) || !inet_aton(argv[4], &sip)
        || !inet_aton(argv[5], &dip) || size < 60 || size > 9000 || seconds <= 0) {
        fprintf(stderr, "xdpgen: bad arguments\n");
        return 2;
    }
    int ifindex = if_nametoindex(argv[1]);
    if (!ifindex) {
        perror("if_nametoindex");
        return 1;
    }
    int fd = socket(AF_PACKET, SOCK_RAW, 0);
    if (fd < 0) {
        perror("socket");
        return 1;
    }
    int one = 1;
    setsockopt(fd, SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof one);
    struct sockaddr_ll sll = {.sll_family = AF_PACKET, .sll_ifindex = ifindex,
                              .sll_protocol = htons(ETH_P_IP), .sll_halen = 6};
    memcpy(sll.sll_addr, dst, 6);

    static unsigned char frames[BATCH][9000];
    struct iovec iov[BATCH];
    struct mmsghdr msgs[BATCH];
    memset(msgs, 0, sizeof msgs);
    for (int i = 0; i < BATCH; i++) {
        unsigned char *f = frames[i];
        memcpy(f, dst, 6);
        memcpy(f + 6, src, 6);
        f[12] = 0x08, f[13] = 0x00;
        unsigned char *ip = f + 14;
        int iplen = size - 14, udplen = iplen - 20;
        ip[0] = 0x45, ip[1] = 0;
        ip[2] = iplen >> 8, ip[3] = iplen & 0xFF;
        ip[4] = 0, ip[5] = i, ip[6] = 0x40, ip[7] = 0, ip[8] = 64, ip[9] = 17;
        memcpy(ip + 12, &sip, 4);
        memcpy(ip + 16, &dip, 4);
        ip[10] = ip[11] = 0;
        uint16_t c = csum16(ip, 20);
        ip[10] = c >> 8, ip[11] = c & 0xFF;
        unsigned char *udp = ip + 20;
        int sport = 10000 + i;
        udp[0] = sport >> 8, udp[1] = sport & 0xFF, udp[2] = 9999 >> 8, udp[3] = 9999 & 0xFF;
        udp[4] = udplen >> 8, udp[5] = udplen & 0xFF, udp[6] = udp[7] = 0;  /* no UDP checksum */
        for (int k = 8; k < udplen; k++)
            udp[k] = (unsigned char)(k + i);
        iov[i].iov_base = f;
        iov[i].iov_len = size;
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
        msgs[i].msg_hdr.msg_name = &sll;
        msgs[i].msg_hdr.msg_namelen = sizeof sll;
    }
    unsigned long long sent = 0, failed = 0;
    double end = now() + seconds;
    unsigned loops = 0;
    for (;;) {
        if ((++loops & 63) == 0 && now() >= end)
            break;
        if (sent >= limit)
            break;
        unsigned want = limit - sent < BATCH ? (unsigned)(limit - sent) : BATCH;
        int r = sendmmsg(fd, msgs, want, 0);
        if (r > 0)
            sent += r;
        else if (errno == ENOBUFS || errno == EAGAIN)
            failed++;
        else if (r < 0) {
            perror("sendmmsg");
            return 1;
        }
    }
    printf("%llu %llu\n", sent, failed);
    return 0;
}
