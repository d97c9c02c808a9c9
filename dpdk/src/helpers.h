/* The DPDK API Sluice uses, plus the few accessors that DPDK defines as macros (which
 * bindgen cannot see). Everything here is wrapped by bindgen; static inline functions get
 * out-of-line C wrappers generated at build time. */
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_lcore.h>
#include <rte_mempool.h>
#include <rte_mbuf.h>
#include <rte_ethdev.h>
#include <rte_dev.h>

/* rte_errno is a per-lcore (thread-local) variable behind a macro. */
int sluice_rte_errno(void);

/* rte_pktmbuf_mtod and rte_pktmbuf_data_len are macros. */
void *sluice_pktmbuf_data(struct rte_mbuf *m);
uint16_t sluice_pktmbuf_data_len(const struct rte_mbuf *m);
