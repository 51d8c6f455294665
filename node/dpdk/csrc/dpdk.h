/* The DPDK headers dpfleet-dpdk binds to, plus declarations of the hand-written shims
 * in shim.c (for things bindgen cannot wrap: macros and thread-local variables). */
#ifndef DPFLEET_DPDK_H
#define DPFLEET_DPDK_H

#include <rte_config.h>
#include <rte_common.h>
#include <rte_errno.h>
#include <rte_eal.h>
#include <rte_launch.h>
#include <rte_lcore.h>
#include <rte_cycles.h>
#include <rte_mempool.h>
#include <rte_mbuf.h>
#include <rte_ether.h>
#include <rte_ethdev.h>

/* Value of the thread-local rte_errno of the calling thread. */
int dpfleet_rte_errno(void);

/* rte_pktmbuf_mtod(m, void *): start of the packet data in the first segment. */
void *dpfleet_pktmbuf_mtod(struct rte_mbuf *m);

#endif
