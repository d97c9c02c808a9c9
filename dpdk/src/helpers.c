/* Accessors for DPDK macros, declared in helpers.h. */
#include "helpers.h"

int sluice_rte_errno(void)
{
	return rte_errno;
}

void *sluice_pktmbuf_data(struct rte_mbuf *m)
{
	return rte_pktmbuf_mtod(m, void *);
}

uint16_t sluice_pktmbuf_data_len(const struct rte_mbuf *m)
{
	return rte_pktmbuf_data_len(m);
}
