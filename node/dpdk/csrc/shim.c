/* Hand-written shims for DPDK macros and thread-locals (see dpdk.h). */
#include "dpdk.h"

int dpfleet_rte_errno(void)
{
	return rte_errno;
}

void *dpfleet_pktmbuf_mtod(struct rte_mbuf *m)
{
	return rte_pktmbuf_mtod(m, void *);
}
