// SPDX-License-Identifier: GPL-2.0
/*
 * zcopy.ko - /dev/zcopy: an arena of module-owned pages mapped into user
 * space, page-granular write protection ("sealing") with copy-on-write of
 * pages that are in flight, and a send ioctl that hands sealed arena pages
 * to sock_sendmsg() by reference (MSG_ZEROCOPY with a module-owned
 * ubuf_info), copying everything else.  The user-space ABI is in
 * include/uapi/zcopy_kmod.h.
 *
 * How write protection works (no VM_PFNMAP/VM_MIXEDMAP):
 *  - Every context has its own struct address_space (file->f_mapping), so
 *    unmap_mapping_range() reaches exactly the mappings of this context.
 *  - The arena VMA is a shared file mapping with ->fault and ->page_mkwrite.
 *    ->fault returns the slot's page (allocated zeroed on first touch);
 *    because ->page_mkwrite exists, the core maps it read-only first and
 *    calls ->page_mkwrite on the first write ("write notify").
 *  - SEAL marks pages sealed and zaps their PTEs with unmap_mapping_range()
 *    while holding each page's lock; the fault paths hold the same page lock
 *    from ->page_mkwrite until the writable PTE is installed, so a write
 *    can never slip past a seal.  After the zap, reads re-fault read-only
 *    and writes go through ->page_mkwrite again.
 *  - ->page_mkwrite on a page with no send in flight just clears `sealed`.
 *    On a page in flight it copies the page into a fresh one, puts the copy
 *    in the slot, zaps the old PTEs and returns VM_FAULT_NOPAGE; the retried
 *    fault maps the copy writable.  The old page is kept alive by the
 *    references of the sends that use it.  The writer never waits.
 *
 * Sends: sealed arena pages go as bio_vecs of the module's pages (each send
 * holds a get_page() reference and counts the page in flight); the rest is
 * copied into freshly allocated kernel pages.  One sock_sendmsg() with
 * MSG_ZEROCOPY in msg_flags and msg_ubuf pointing at the send's ubuf_info
 * (SKBFL_ZEROCOPY_FRAG | SKBFL_DONT_ORPHAN).  The ubuf_info is completed on
 * its reference count (the callback is called once per reference put, on
 * 6.1 and 6.12 alike), then the in-flight counters (kernel side and the
 * read-only status area) are decremented at once and the page references
 * are dropped from a work item.
 *
 * Lifetime: the file holds one context reference, every send in flight
 * holds one; the context holds a module reference until its last reference
 * is gone, so rmmod is refused while anything is in flight.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/miscdevice.h>
#include <linux/fs.h>
#include <linux/mm.h>
#include <linux/mman.h>
#include <linux/pagemap.h>
#include <linux/highmem.h>
#include <linux/slab.h>
#include <linux/vmalloc.h>
#include <linux/net.h>
#include <linux/socket.h>
#include <linux/skbuff.h>
#include <linux/uio.h>
#include <linux/bvec.h>
#include <linux/hashtable.h>
#include <linux/cred.h>
#include <linux/uidgid.h>
#include <linux/workqueue.h>
#include <linux/version.h>
#include <linux/overflow.h>
#include <linux/kref.h>
#include <linux/mutex.h>
#include <linux/spinlock.h>
#include <linux/uaccess.h>
#include <linux/rcupdate.h>
#include <linux/sched.h>
#include <linux/sched/signal.h>
#include <net/sock.h>

#include "include/uapi/zcopy_kmod.h"

/* ------------------------------------------------------------------ */
/* kernel version differences                                          */

#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 3, 0)
#define zc_vm_flags_set(vma, f)		vm_flags_set(vma, f)
#define zc_vm_flags_clear(vma, f)	vm_flags_clear(vma, f)
#else
static inline void zc_vm_flags_set(struct vm_area_struct *vma, unsigned long f)
{
	vma->vm_flags |= f;
}

static inline void zc_vm_flags_clear(struct vm_area_struct *vma, unsigned long f)
{
	vma->vm_flags &= ~f;
}
#endif

/* struct ubuf_info: ->callback up to 6.9, ->ops (complete, link_skb) since */
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 10, 0)
#define ZC_UBUF_HAS_OPS 1
#endif

#ifndef ITER_SOURCE
#define ITER_SOURCE WRITE
#endif

/* ------------------------------------------------------------------ */
/* parameters and constants                                            */

static unsigned int user_cap_mb = 1024;
module_param(user_cap_mb, uint, 0644);
MODULE_PARM_DESC(user_cap_mb, "Arena bytes (MiB) one uid may reserve in all (default 1024)");

/*
 * Leak accounting, read-only in /sys/module/zcopy/parameters/:
 * pages_owned: pages the module allocated and still owns (arena pages,
 * copy-on-write pages, copy buffers); send_refs: page references held by
 * sends not yet completed.  Both are 0 once every context is gone.
 */
static atomic_long_t zc_pages_owned = ATOMIC_LONG_INIT(0);
static atomic_long_t zc_send_refs = ATOMIC_LONG_INIT(0);

static int zc_get_counter(char *buf, const struct kernel_param *kp)
{
	return sysfs_emit(buf, "%ld\n", atomic_long_read((atomic_long_t *)kp->arg));
}

static const struct kernel_param_ops zc_counter_ops = {
	.get = zc_get_counter,
};
module_param_cb(pages_owned, &zc_counter_ops, &zc_pages_owned, 0444);
MODULE_PARM_DESC(pages_owned, "Pages the module owns now (read-only)");
module_param_cb(send_refs, &zc_counter_ops, &zc_send_refs, 0444);
MODULE_PARM_DESC(send_refs, "Page references held by sends in flight (read-only)");

static struct page *zc_alloc_page(gfp_t gfp)
{
	struct page *p = alloc_page(gfp);

	if (p)
		atomic_long_inc(&zc_pages_owned);
	return p;
}

static void zc_free_page(struct page *p)
{
	atomic_long_dec(&zc_pages_owned);
	put_page(p);
}

#define ZC_STATUS_HDR		256
#define ZC_STATUS_PGOFF		(ZCOPY_STATUS_OFFSET >> PAGE_SHIFT)
#define ZC_SEAL_BATCH		256
#define ZC_MSG_FLAGS		(MSG_DONTWAIT | MSG_NOSIGNAL | MSG_MORE | MSG_EOR)

static_assert(sizeof(struct zcopy_status) == ZC_STATUS_HDR);
static_assert(sizeof(struct zcopy_info) == 80);
static_assert(sizeof(struct zcopy_setup) == 48);
static_assert(sizeof(struct zcopy_range) == 24);
static_assert(sizeof(struct zcopy_iovec) == 16);
static_assert(sizeof(struct zcopy_send) == 64);

/* ------------------------------------------------------------------ */
/* per-user reservation                                                */

struct zc_user {
	struct hlist_node node;
	kuid_t uid;
	unsigned long pages;
	unsigned int refs;
};

static DEFINE_HASHTABLE(zc_users, 6);
static DEFINE_SPINLOCK(zc_users_lock);

static unsigned long zc_cap_pages(void)
{
	return (unsigned long)READ_ONCE(user_cap_mb) << (20 - PAGE_SHIFT);
}

static struct zc_user *zc_user_find(kuid_t uid)
{
	struct zc_user *u;

	hash_for_each_possible(zc_users, u, node, __kuid_val(uid))
		if (uid_eq(u->uid, uid))
			return u;
	return NULL;
}

static int zc_user_charge(kuid_t uid, unsigned long n, struct zc_user **out)
{
	struct zc_user *u, *fresh = kzalloc(sizeof(*fresh), GFP_KERNEL);
	unsigned long cap = zc_cap_pages();
	int ret = 0;

	spin_lock(&zc_users_lock);
	u = zc_user_find(uid);
	if (!u) {
		if (!fresh) {
			ret = -ENOMEM;
			goto out;
		}
		u = fresh;
		fresh = NULL;
		u->uid = uid;
		hash_add(zc_users, &u->node, __kuid_val(uid));
	}
	if (n > cap || u->pages > cap - n) {
		if (!u->refs) {
			hash_del(&u->node);
			fresh = u;	/* freed below */
		}
		ret = -ENOMEM;
		goto out;
	}
	u->pages += n;
	u->refs++;
	*out = u;
out:
	spin_unlock(&zc_users_lock);
	kfree(fresh);
	return ret;
}

static void zc_user_uncharge(struct zc_user *u, unsigned long n)
{
	bool last;

	spin_lock(&zc_users_lock);
	u->pages -= n;
	last = --u->refs == 0;
	if (last)
		hash_del(&u->node);
	spin_unlock(&zc_users_lock);
	if (last)
		kfree(u);
}

static unsigned long zc_user_used_pages(kuid_t uid)
{
	struct zc_user *u;
	unsigned long n = 0;

	spin_lock(&zc_users_lock);
	u = zc_user_find(uid);
	if (u)
		n = u->pages;
	spin_unlock(&zc_users_lock);
	return n;
}

/* ------------------------------------------------------------------ */
/* context                                                             */

struct zc_slot {
	struct page *page;	/* current page of this arena slot, or NULL */
	unsigned int inflight;	/* sends referencing *this* page */
	unsigned int sealed;
};

struct zc_ctx {
	struct kref ref;
	struct address_space mapping;	/* file->f_mapping: our VMAs only */
	struct mutex setup_lock;	/* SETUP; serialises SEAL */
	spinlock_t lock;		/* slots[], status counters */
	bool ready;			/* SETUP done (release/acquire) */
	unsigned long npages;
	unsigned int block_shift;	/* log2(pages per block) */
	u32 nr_blocks;
	struct zc_slot *slots;
	struct zcopy_status *status;	/* vmalloc, mapped read-only */
	u64 *done;			/* status->done[] (ABI 1.1) */
	unsigned long status_npages;
	struct zc_user *user;
	unsigned long charged;
	u64 send_seq;
};

static struct workqueue_struct *zc_wq;
static const struct address_space_operations zc_aops;

static void zc_ctx_free(struct kref *ref)
{
	struct zc_ctx *ctx = container_of(ref, struct zc_ctx, ref);
	unsigned long i;

	if (ctx->slots) {
		for (i = 0; i < ctx->npages; i++)
			if (ctx->slots[i].page)
				zc_free_page(ctx->slots[i].page);
		kvfree(ctx->slots);
	}
	vfree(ctx->status);
	if (ctx->user)
		zc_user_uncharge(ctx->user, ctx->charged);
	kfree(ctx);
	module_put(THIS_MODULE);
}

static void zc_ctx_put(struct zc_ctx *ctx)
{
	kref_put(&ctx->ref, zc_ctx_free);
}

/* status counters: called with ctx->lock held */
static inline void zc_stat_add(u64 *field, s64 v)
{
	WRITE_ONCE(*field, *field + v);
}

static inline void zc_stat_bump(struct zc_ctx *ctx)
{
	smp_wmb();
	WRITE_ONCE(ctx->status->seq, ctx->status->seq + 1);
}

static inline u32 zc_block_of(struct zc_ctx *ctx, unsigned long idx)
{
	return (u32)(idx >> ctx->block_shift);
}

/* The slot's page with a reference; allocated (zeroed, accounted) if
 * missing and @alloc.  NULL if missing and !@alloc, or on ENOMEM. */
static struct page *zc_slot_get(struct zc_ctx *ctx, unsigned long idx, bool alloc)
{
	struct page *page, *fresh;
	unsigned long fl;

	spin_lock_irqsave(&ctx->lock, fl);
	page = ctx->slots[idx].page;
	if (page)
		get_page(page);
	spin_unlock_irqrestore(&ctx->lock, fl);
	if (page || !alloc)
		return page;

	fresh = zc_alloc_page(GFP_KERNEL_ACCOUNT | __GFP_ZERO);
	if (!fresh)
		return NULL;
	spin_lock_irqsave(&ctx->lock, fl);
	page = ctx->slots[idx].page;
	if (!page) {
		page = fresh;
		ctx->slots[idx].page = fresh;
		fresh = NULL;
	}
	get_page(page);
	spin_unlock_irqrestore(&ctx->lock, fl);
	if (fresh)
		zc_free_page(fresh);
	return page;
}

static void zc_zap(struct zc_ctx *ctx, unsigned long idx, unsigned long n)
{
	unmap_mapping_range(&ctx->mapping, (loff_t)idx << PAGE_SHIFT,
			    (loff_t)n << PAGE_SHIFT, 1);
}

/* ------------------------------------------------------------------ */
/* arena mapping                                                       */

static vm_fault_t zc_arena_fault(struct vm_fault *vmf)
{
	struct zc_ctx *ctx = vmf->vma->vm_private_data;
	unsigned long idx = vmf->pgoff;
	struct page *page;

	if (idx >= ctx->npages)
		return VM_FAULT_SIGBUS;
	for (;;) {
		page = zc_slot_get(ctx, idx, true);
		if (!page)
			return VM_FAULT_OOM;
		lock_page(page);
		/* a copy-on-write replaces the page under its lock */
		if (READ_ONCE(ctx->slots[idx].page) == page)
			break;
		unlock_page(page);
		put_page(page);
	}
	vmf->page = page;
	return VM_FAULT_LOCKED;
}

static vm_fault_t zc_arena_mkwrite(struct vm_fault *vmf)
{
	struct zc_ctx *ctx = vmf->vma->vm_private_data;
	unsigned long idx = vmf->pgoff;
	struct page *page = vmf->page, *copy;
	struct zc_slot *s;
	unsigned long fl;

	if (idx >= ctx->npages)
		return VM_FAULT_SIGBUS;
	s = &ctx->slots[idx];
	lock_page(page);
	spin_lock_irqsave(&ctx->lock, fl);
	if (s->page != page) {
		/* stale mapping of a page replaced by copy-on-write */
		spin_unlock_irqrestore(&ctx->lock, fl);
		unlock_page(page);
		zc_zap(ctx, idx, 1);
		return VM_FAULT_NOPAGE;
	}
	if (!s->inflight) {
		if (s->sealed) {
			s->sealed = 0;
			zc_stat_add(&ctx->status->unseal_faults, 1);
			zc_stat_bump(ctx);
		}
		spin_unlock_irqrestore(&ctx->lock, fl);
		return VM_FAULT_LOCKED;
	}
	spin_unlock_irqrestore(&ctx->lock, fl);

	/* in flight: the writer gets a private copy now */
	copy = zc_alloc_page(GFP_KERNEL_ACCOUNT);
	if (!copy) {
		unlock_page(page);
		return VM_FAULT_OOM;
	}
	copy_highpage(copy, page);

	spin_lock_irqsave(&ctx->lock, fl);
	/* s->page is still page: only a holder of its lock replaces it */
	if (!s->inflight) {
		/* the sends completed meanwhile */
		if (s->sealed) {
			s->sealed = 0;
			zc_stat_add(&ctx->status->unseal_faults, 1);
			zc_stat_bump(ctx);
		}
		spin_unlock_irqrestore(&ctx->lock, fl);
		zc_free_page(copy);
		return VM_FAULT_LOCKED;
	}
	s->page = copy;
	s->sealed = 0;
	s->inflight = 0;
	zc_stat_add(&ctx->status->cow_faults, 1);
	zc_stat_bump(ctx);
	spin_unlock_irqrestore(&ctx->lock, fl);

	zc_zap(ctx, idx, 1);	/* no PTE may keep pointing at the old page */
	unlock_page(page);
	zc_free_page(page);	/* the arena's reference; sends hold theirs */
	return VM_FAULT_NOPAGE;	/* retry: the fault now maps the copy */
}

static const struct vm_operations_struct zc_arena_vm_ops = {
	.fault = zc_arena_fault,
	.page_mkwrite = zc_arena_mkwrite,
};

static vm_fault_t zc_status_fault(struct vm_fault *vmf)
{
	struct zc_ctx *ctx = vmf->vma->vm_private_data;
	unsigned long i;
	struct page *page;

	if (vmf->pgoff < ZC_STATUS_PGOFF)
		return VM_FAULT_SIGBUS;
	i = vmf->pgoff - ZC_STATUS_PGOFF;
	if (i >= ctx->status_npages)
		return VM_FAULT_SIGBUS;
	page = vmalloc_to_page((char *)ctx->status + (i << PAGE_SHIFT));
	if (!page)
		return VM_FAULT_SIGBUS;
	get_page(page);
	vmf->page = page;
	return 0;
}

static const struct vm_operations_struct zc_status_vm_ops = {
	.fault = zc_status_fault,
};

static int zc_mmap(struct file *file, struct vm_area_struct *vma)
{
	struct zc_ctx *ctx = file->private_data;
	unsigned long pgoff = vma->vm_pgoff, n = vma_pages(vma);

	if (!smp_load_acquire(&ctx->ready))
		return -EINVAL;
	if (pgoff >= ZC_STATUS_PGOFF) {
		unsigned long i = pgoff - ZC_STATUS_PGOFF;

		if (i >= ctx->status_npages || n > ctx->status_npages - i)
			return -EINVAL;
		if (vma->vm_flags & VM_WRITE)
			return -EACCES;
		zc_vm_flags_clear(vma, VM_MAYWRITE);
		zc_vm_flags_set(vma, VM_DONTEXPAND);
		vma->vm_ops = &zc_status_vm_ops;
	} else {
		if (!(vma->vm_flags & VM_MAYSHARE))
			return -EINVAL;	/* MAP_PRIVATE would bypass sealing */
		if (pgoff >= ctx->npages || n > ctx->npages - pgoff)
			return -EINVAL;
		/* VM_DONTEXPAND: no mremap growth; also keeps mlock away */
		zc_vm_flags_set(vma, VM_DONTEXPAND);
		vma->vm_ops = &zc_arena_vm_ops;
	}
	vma->vm_private_data = ctx;
	return 0;
}

/* ------------------------------------------------------------------ */
/* open / release                                                      */

static int zc_open(struct inode *inode, struct file *file)
{
	struct zc_ctx *ctx = kzalloc(sizeof(*ctx), GFP_KERNEL_ACCOUNT);

	if (!ctx)
		return -ENOMEM;
	kref_init(&ctx->ref);
	address_space_init_once(&ctx->mapping);
	ctx->mapping.host = inode;
	ctx->mapping.a_ops = &zc_aops;
	mutex_init(&ctx->setup_lock);
	spin_lock_init(&ctx->lock);
	__module_get(THIS_MODULE);	/* dropped by zc_ctx_free() */
	file->private_data = ctx;
	file->f_mapping = &ctx->mapping;
	return 0;
}

static int zc_release(struct inode *inode, struct file *file)
{
	struct zc_ctx *ctx = file->private_data;
	unsigned long i, fl;
	struct page *page;

	/* no VMA is left (each holds the file); drop the arena's pages now,
	 * sends in flight keep their own references */
	if (smp_load_acquire(&ctx->ready)) {
		for (i = 0; i < ctx->npages; i++) {
			spin_lock_irqsave(&ctx->lock, fl);
			page = ctx->slots[i].page;
			ctx->slots[i].page = NULL;
			ctx->slots[i].sealed = 0;
			spin_unlock_irqrestore(&ctx->lock, fl);
			if (page)
				zc_free_page(page);
			if ((i & 1023) == 1023)
				cond_resched();
		}
	}
	zc_ctx_put(ctx);
	return 0;
}

/* ------------------------------------------------------------------ */
/* ioctls                                                              */

static long zc_ioc_info(struct zc_ctx *ctx, void __user *arg)
{
	struct zcopy_info info;

	memset(&info, 0, sizeof(info));
	info.abi_version = ZCOPY_ABI_VERSION;
	info.features = ZCOPY_FEAT_ARENA | ZCOPY_FEAT_SEAL | ZCOPY_FEAT_COW |
			ZCOPY_FEAT_SEND | ZCOPY_FEAT_STATUS | ZCOPY_FEAT_SEND_ADDR |
			ZCOPY_FEAT_DONE_RING;
	info.page_size = PAGE_SIZE;
	info.iov_max = ZCOPY_IOV_MAX;
	info.send_max = ZCOPY_SEND_MAX;
	info.user_cap = (u64)zc_cap_pages() << PAGE_SHIFT;
	info.user_used = (u64)zc_user_used_pages(current_uid()) << PAGE_SHIFT;
	if (copy_to_user(arg, &info, sizeof(info)))
		return -EFAULT;
	return 0;
}

static long zc_ioc_setup(struct zc_ctx *ctx, void __user *arg)
{
	struct zcopy_setup su;
	unsigned int bshift;
	unsigned long npages, nblocks, ssize, doff;
	struct zc_slot *slots = NULL;
	struct zcopy_status *st = NULL;
	struct zc_user *user = NULL;
	long ret;

	if (copy_from_user(&su, arg, sizeof(su)))
		return -EFAULT;
	if (su.flags || su.reserved)
		return -EINVAL;
	if (!su.arena_size || su.arena_size & ~PAGE_MASK ||
	    su.arena_size > ZCOPY_STATUS_OFFSET)
		return -EINVAL;
	if (su.block_shift == 0)
		su.block_shift = PAGE_SHIFT;
	if (su.block_shift < PAGE_SHIFT || su.block_shift > ZCOPY_BLOCK_SHIFT_MAX)
		return -EINVAL;
	bshift = su.block_shift - PAGE_SHIFT;
	npages = su.arena_size >> PAGE_SHIFT;
	nblocks = (npages + (1UL << bshift) - 1) >> bshift;
	if (nblocks > (U32_MAX - ZC_STATUS_HDR - 8) / sizeof(u32))
		return -EINVAL;
	/* header, block_inflight[], then the done ring (8-byte aligned) */
	doff = ALIGN(ZC_STATUS_HDR + nblocks * sizeof(u32), 8);
	ssize = PAGE_ALIGN(doff + ZCOPY_DONE_SLOTS * sizeof(u64));

	mutex_lock(&ctx->setup_lock);
	ret = -EBUSY;
	if (ctx->ready)
		goto out;
	ret = zc_user_charge(current_uid(), npages, &user);
	if (ret)
		goto out;
	ret = -ENOMEM;
	slots = kvcalloc(npages, sizeof(*slots), GFP_KERNEL_ACCOUNT);
	if (!slots)
		goto out_uncharge;
	st = __vmalloc(ssize, GFP_KERNEL_ACCOUNT | __GFP_ZERO);
	if (!st)
		goto out_uncharge;
	st->abi_version = ZCOPY_ABI_VERSION;
	st->block_shift = su.block_shift;
	st->nr_blocks = (u32)nblocks;
	st->done_offset = (u32)doff;
	st->done_slots = ZCOPY_DONE_SLOTS;

	su.arena_offset = ZCOPY_ARENA_OFFSET;
	su.status_offset = ZCOPY_STATUS_OFFSET;
	su.status_size = ssize;
	su.nr_blocks = (u32)nblocks;
	ret = -EFAULT;
	if (copy_to_user(arg, &su, sizeof(su)))
		goto out_uncharge;

	ctx->npages = npages;
	ctx->block_shift = bshift;
	ctx->nr_blocks = (u32)nblocks;
	ctx->slots = slots;
	ctx->status = st;
	ctx->done = (u64 *)((char *)st + doff);
	ctx->status_npages = ssize >> PAGE_SHIFT;
	ctx->user = user;
	ctx->charged = npages;
	smp_store_release(&ctx->ready, true);
	mutex_unlock(&ctx->setup_lock);
	return 0;

out_uncharge:
	vfree(st);
	kvfree(slots);
	zc_user_uncharge(user, npages);
out:
	mutex_unlock(&ctx->setup_lock);
	return ret;
}

static long zc_ioc_range(struct zc_ctx *ctx, void __user *arg, bool seal)
{
	struct zcopy_range r;
	unsigned long first, n, i, j, fl, cnt;
	struct page **pages;
	long ret = 0;

	if (copy_from_user(&r, arg, sizeof(r)))
		return -EFAULT;
	if (r.flags || r.reserved)
		return -EINVAL;
	if (!smp_load_acquire(&ctx->ready))
		return -EINVAL;
	if (!r.length || (r.offset | r.length) & ~PAGE_MASK)
		return -EINVAL;
	if (r.offset >= ((u64)ctx->npages << PAGE_SHIFT) ||
	    r.length > ((u64)ctx->npages << PAGE_SHIFT) - r.offset)
		return -EINVAL;
	first = r.offset >> PAGE_SHIFT;
	n = r.length >> PAGE_SHIFT;

	if (!seal) {
		/* pages in flight stay write-protected: a write copies them */
		for (i = first; i < first + n; i++) {
			spin_lock_irqsave(&ctx->lock, fl);
			ctx->slots[i].sealed = 0;
			spin_unlock_irqrestore(&ctx->lock, fl);
		}
		return 0;
	}

	pages = kmalloc_array(ZC_SEAL_BATCH, sizeof(*pages), GFP_KERNEL);
	if (!pages)
		return -ENOMEM;
	mutex_lock(&ctx->setup_lock);
	for (i = first; i < first + n; i += cnt) {
		cnt = min_t(unsigned long, ZC_SEAL_BATCH, first + n - i);
		/* lock every page of the batch (ascending); a fault that is
		 * about to make one writable holds its lock until the PTE
		 * is in place, and the zap below removes it */
		for (j = 0; j < cnt; j++) {
			for (;;) {
				pages[j] = zc_slot_get(ctx, i + j, true);
				if (!pages[j])
					break;
				lock_page(pages[j]);
				if (READ_ONCE(ctx->slots[i + j].page) == pages[j])
					break;
				unlock_page(pages[j]);
				put_page(pages[j]);
			}
			if (!pages[j]) {
				ret = -ENOMEM;
				break;
			}
		}
		if (!ret) {
			spin_lock_irqsave(&ctx->lock, fl);
			for (j = 0; j < cnt; j++)
				ctx->slots[i + j].sealed = 1;
			spin_unlock_irqrestore(&ctx->lock, fl);
			zc_zap(ctx, i, cnt);
		}
		while (j--) {
			unlock_page(pages[j]);
			put_page(pages[j]);
		}
		if (ret)
			break;
		cond_resched();
	}
	mutex_unlock(&ctx->setup_lock);
	kfree(pages);
	return ret;
}

/* ---- send ---- */

struct zc_ref {
	struct page *page;
	unsigned long idx;
};

struct zc_send {
	struct ubuf_info ubuf;		/* first: container_of */
	struct zc_ctx *ctx;
	struct work_struct work;
	bool used;			/* an skb completed without copying */
	bool copied;			/* an skb's frags were copied */
	bool aborted;			/* never reached sock_sendmsg() */
	u64 id;				/* send_id, 0 while aborted */
	unsigned int nzc;		/* entries used in zc[] */
	unsigned int ncopy;		/* pages in copy[] */
	struct page **copy;
	struct zc_ref zc[];
};

enum { ZC_SEG_COPY, ZC_SEG_ARENA };

struct zc_seg {
	unsigned long uaddr;
	unsigned long idx;		/* arena page (ARENA) */
	struct page *page;		/* referenced arena page, once taken */
	unsigned int off;		/* offset in that page */
	unsigned int len;
	unsigned int kind;
};

static void zc_send_cleanup(struct work_struct *work)
{
	struct zc_send *s = container_of(work, struct zc_send, work);
	struct zc_ctx *ctx = s->ctx;
	unsigned int i;

	for (i = 0; i < s->nzc; i++)
		put_page(s->zc[i].page);
	atomic_long_sub(s->nzc, &zc_send_refs);
	for (i = 0; i < s->ncopy; i++)
		zc_free_page(s->copy[i]);
	kvfree(s->copy);
	kvfree(s);
	zc_ctx_put(ctx);	/* may free the context and drop the module */
}

/* all references to the ubuf_info are gone */
static void zc_send_done(struct zc_send *s)
{
	struct zc_ctx *ctx = s->ctx;
	struct zcopy_status *st = ctx->status;
	unsigned long fl;
	unsigned int i;

	spin_lock_irqsave(&ctx->lock, fl);
	for (i = 0; i < s->nzc; i++) {
		struct zc_slot *slot = &ctx->slots[s->zc[i].idx];
		u32 b = zc_block_of(ctx, s->zc[i].idx);

		if (slot->page == s->zc[i].page && slot->inflight)
			slot->inflight--;
		WRITE_ONCE(st->block_inflight[b], st->block_inflight[b] - 1);
	}
	zc_stat_add(&st->pages_inflight, -(s64)s->nzc);
	if (!s->aborted)
		zc_stat_add(&st->completions, 1);
	if (s->nzc && !s->aborted) {
		if (READ_ONCE(s->copied) || !READ_ONCE(s->used))
			zc_stat_add(&st->completions_copied, 1);
		else
			zc_stat_add(&st->completions_zerocopy, 1);
	}
	if (!s->aborted && s->id) {
		bool copied = s->nzc && (READ_ONCE(s->copied) || !READ_ONCE(s->used));

		/* after the counters above: a reader that sees the entry
		 * sees the pages released in block_inflight[] too */
		smp_store_release(&ctx->done[s->id % ZCOPY_DONE_SLOTS],
				  ZCOPY_DONE_ENTRY(s->id, copied));
	}
	zc_stat_bump(ctx);
	spin_unlock_irqrestore(&ctx->lock, fl);

	/* page and memory release may not run in every context the network
	 * stack calls us from; the work item also holds the module */
	rcu_read_lock();
	queue_work(zc_wq, &s->work);
	rcu_read_unlock();
}

static void zc_ubuf_complete(struct sk_buff *skb, struct ubuf_info *uarg,
			     bool success)
{
	struct zc_send *s = container_of(uarg, struct zc_send, ubuf);

	if (!success)
		WRITE_ONCE(s->copied, true);
	else if (skb)
		WRITE_ONCE(s->used, true);
	if (refcount_dec_and_test(&uarg->refcnt))
		zc_send_done(s);
}

#ifdef ZC_UBUF_HAS_OPS
static const struct ubuf_info_ops zc_ubuf_ops = {
	.complete = zc_ubuf_complete,
};
#endif

static long zc_ioc_send(struct zc_ctx *ctx, struct zcopy_send __user *arg)
{
	struct zcopy_send sd;
	struct zcopy_iovec *iov = NULL;
	struct zc_seg *segs = NULL;
	struct bio_vec *bv = NULL;
	struct zc_send *s = NULL;
	struct sockaddr_storage addr;
	struct socket *sock;
	struct msghdr msg;
	unsigned long total = 0, maxsegs = 0, copy_bytes = 0, zc_bytes = 0;
	unsigned int nsegs = 0, narena = 0, nbv = 0, i, cp;
	bool stream, no_zc, corked;
	unsigned long fl;
	long ret;
	int err;

	if (copy_from_user(&sd, arg, sizeof(sd)))
		return -EFAULT;
	if (sd.flags & ~ZCOPY_SEND_FLAGS || sd.reserved ||
	    sd.msg_flags & ~ZC_MSG_FLAGS)
		return -EINVAL;
	if (!sd.iovcnt || sd.iovcnt > ZCOPY_IOV_MAX)
		return -EINVAL;
	if (sd.addr ? (!sd.addrlen || sd.addrlen > sizeof(addr)) : sd.addrlen)
		return -EINVAL;
	if (!smp_load_acquire(&ctx->ready))
		return -EINVAL;
	/* out fields must be writable before anything is sent */
	sd.zc_bytes = 0;
	sd.copied_bytes = 0;
	sd.send_id = 0;
	if (copy_to_user(&arg->zc_bytes, &sd.zc_bytes,
			 sizeof(sd) - offsetof(struct zcopy_send, zc_bytes)))
		return -EFAULT;
	if (sd.addr && copy_from_user(&addr, u64_to_user_ptr(sd.addr), sd.addrlen))
		return -EFAULT;

	sock = sockfd_lookup(sd.fd, &err);
	if (!sock)
		return err;
	stream = sock->type == SOCK_STREAM;
	/* a corked datagram (MSG_MORE) may be appended to by a later call with
	 * another ubuf_info, which UDP refuses: send corked pieces as plain
	 * copies, without msg_ubuf */
	corked = !stream && (sd.msg_flags & MSG_MORE);
	no_zc = (sd.flags & ZCOPY_SEND_F_NO_ZC) || corked;

	iov = kvmalloc_array(sd.iovcnt, sizeof(*iov), GFP_KERNEL);
	ret = -ENOMEM;
	if (!iov)
		goto out;
	ret = -EFAULT;
	if (copy_from_user(iov, u64_to_user_ptr(sd.iov), sd.iovcnt * sizeof(*iov)))
		goto out;
	ret = -EINVAL;
	for (i = 0; i < sd.iovcnt; i++) {
		unsigned long len = iov[i].len;

		if (iov[i].len > MAX_RW_COUNT || iov[i].base + iov[i].len < iov[i].base)
			goto out;
		if (total + len > ZCOPY_SEND_MAX) {
			if (!stream) {
				ret = -EMSGSIZE;
				goto out;
			}
			len = ZCOPY_SEND_MAX - total;	/* short write */
			iov[i].len = len;
			sd.iovcnt = i + 1;
		}
		total += len;
		maxsegs += ((iov[i].base & ~PAGE_MASK) + len + PAGE_SIZE - 1) >> PAGE_SHIFT;
		maxsegs += 1;
	}

	ret = -ENOMEM;
	segs = kvmalloc_array(maxsegs, sizeof(*segs), GFP_KERNEL);
	if (!segs)
		goto out;

	/* 1. split into arena page pieces and copied pieces */
	mmap_read_lock(current->mm);
	for (i = 0; i < sd.iovcnt; i++) {
		unsigned long a = iov[i].base, rem = iov[i].len;

		while (rem) {
			struct vm_area_struct *vma = no_zc ? NULL : vma_lookup(current->mm, a);

			if (vma && vma->vm_ops == &zc_arena_vm_ops &&
			    vma->vm_private_data == ctx &&
			    vma->vm_pgoff + vma_pages(vma) <= ctx->npages) {
				while (rem && a < vma->vm_end) {
					unsigned long off = a & ~PAGE_MASK;
					unsigned long n = min(rem, PAGE_SIZE - off);
					struct zc_seg *g = &segs[nsegs++];

					g->kind = ZC_SEG_ARENA;
					g->uaddr = a;
					g->idx = vma->vm_pgoff + ((a - vma->vm_start) >> PAGE_SHIFT);
					g->off = off;
					g->len = n;
					g->page = NULL;
					narena++;
					a += n;
					rem -= n;
				}
			} else {
				struct zc_seg *g = &segs[nsegs++];

				g->kind = ZC_SEG_COPY;
				g->uaddr = a;
				g->len = rem;
				g->page = NULL;
				a += rem;
				rem = 0;
			}
		}
	}
	mmap_read_unlock(current->mm);

	/* a datagram must fit the frags of one skb */
	if (!stream && narena) {
		unsigned long est = narena;

		for (i = 0; i < nsegs; i++)
			if (segs[i].kind == ZC_SEG_COPY)
				est += (segs[i].len >> PAGE_SHIFT) + 2;
		if (est > MAX_SKB_FRAGS - 1)
			for (i = 0; i < nsegs; i++)
				segs[i].kind = ZC_SEG_COPY;
	}

	s = kvzalloc(struct_size(s, zc, narena), GFP_KERNEL_ACCOUNT);
	if (!s)
		goto out;
	s->ctx = ctx;
	s->aborted = true;
	INIT_WORK(&s->work, zc_send_cleanup);
	refcount_set(&s->ubuf.refcnt, 1);
	s->ubuf.flags = SKBFL_ZEROCOPY_FRAG | SKBFL_DONT_ORPHAN;
#ifdef ZC_UBUF_HAS_OPS
	s->ubuf.ops = &zc_ubuf_ops;
#else
	s->ubuf.callback = zc_ubuf_complete;
#endif

	/* 2. take sealed arena pages by reference; the rest is copied */
	kref_get(&ctx->ref);
	spin_lock_irqsave(&ctx->lock, fl);
	for (i = 0; i < nsegs; i++) {
		struct zc_seg *g = &segs[i];
		struct zc_slot *slot;
		u32 b;

		if (g->kind != ZC_SEG_ARENA)
			continue;
		slot = &ctx->slots[g->idx];
		/* only sealed pages go by reference; a page someone pinned
		 * (GUP/DMA, e.g. O_DIRECT into the arena) may be written
		 * through the pin despite the seal, so it is copied */
		if (!slot->sealed || !slot->page || folio_maybe_dma_pinned(page_folio(slot->page))) {
			g->kind = ZC_SEG_COPY;
			continue;
		}
		g->page = slot->page;
		get_page(g->page);
		slot->inflight++;
		b = zc_block_of(ctx, g->idx);
		WRITE_ONCE(ctx->status->block_inflight[b], ctx->status->block_inflight[b] + 1);
		s->zc[s->nzc].page = g->page;
		s->zc[s->nzc].idx = g->idx;
		s->nzc++;
		zc_bytes += g->len;
	}
	zc_stat_add(&ctx->status->pages_inflight, s->nzc);
	zc_stat_bump(ctx);
	spin_unlock_irqrestore(&ctx->lock, fl);
	atomic_long_add(s->nzc, &zc_send_refs);
	/* from here on, errors finish through the ubuf reference */

	for (i = 0; i < nsegs; i++)
		if (segs[i].kind == ZC_SEG_COPY)
			copy_bytes += segs[i].len;

	/* 3. copy the rest into kernel pages, packed */
	cp = DIV_ROUND_UP(copy_bytes, PAGE_SIZE);
	ret = -ENOMEM;
	if (cp) {
		s->copy = kvcalloc(cp, sizeof(*s->copy), GFP_KERNEL);
		if (!s->copy)
			goto out_put;
		for (; s->ncopy < cp; s->ncopy++) {
			s->copy[s->ncopy] = zc_alloc_page(GFP_KERNEL_ACCOUNT);
			if (!s->copy[s->ncopy])
				goto out_put;
		}
	}
	bv = kvmalloc_array(nsegs + cp, sizeof(*bv), GFP_KERNEL);
	if (!bv)
		goto out_put;
	{
		unsigned long pos = 0;	/* in the packed copy buffer */

		for (i = 0; i < nsegs; i++) {
			struct zc_seg *g = &segs[i];
			unsigned long done = 0;

			if (g->kind == ZC_SEG_ARENA) {
				bvec_set_page(&bv[nbv++], g->page, g->len, g->off);
				continue;
			}
			while (done < g->len) {
				struct page *p = s->copy[pos >> PAGE_SHIFT];
				unsigned int off = pos & ~PAGE_MASK;
				unsigned int n = min_t(unsigned long, g->len - done,
						       PAGE_SIZE - off);
				void *kaddr = kmap_local_page(p);
				unsigned long left;

				left = copy_from_user(kaddr + off,
						      (const void __user *)(g->uaddr + done), n);
				kunmap_local(kaddr);
				if (left) {
					ret = -EFAULT;
					goto out_put;
				}
				if (nbv && bv[nbv - 1].bv_page == p &&
				    bv[nbv - 1].bv_offset + bv[nbv - 1].bv_len == off)
					bv[nbv - 1].bv_len += n;
				else
					bvec_set_page(&bv[nbv++], p, n, off);
				done += n;
				pos += n;
			}
			if (fatal_signal_pending(current)) {
				ret = -EINTR;
				goto out_put;
			}
		}
	}

	/* 4. one sendmsg */
	memset(&msg, 0, sizeof(msg));
	msg.msg_flags = sd.msg_flags;
	if (sock->file->f_flags & O_NONBLOCK)
		msg.msg_flags |= MSG_DONTWAIT;
	if (sd.addr) {
		msg.msg_name = &addr;
		msg.msg_namelen = sd.addrlen;
	}
	if (!corked) {
		msg.msg_flags |= MSG_ZEROCOPY;
		msg.msg_ubuf = &s->ubuf;
	}
	iov_iter_bvec(&msg.msg_iter, ITER_SOURCE, bv, nbv, total);

	s->aborted = false;
	spin_lock_irqsave(&ctx->lock, fl);
	sd.send_id = ++ctx->send_seq;
	s->id = sd.send_id;
	zc_stat_add(&ctx->status->sends, 1);
	zc_stat_add(&ctx->status->bytes_zerocopy, zc_bytes);
	zc_stat_add(&ctx->status->bytes_copied, copy_bytes);
	zc_stat_bump(ctx);
	spin_unlock_irqrestore(&ctx->lock, fl);

	ret = sock_sendmsg(sock, &msg);

	sd.zc_bytes = zc_bytes;
	sd.copied_bytes = copy_bytes;
	if (copy_to_user(&arg->zc_bytes, &sd.zc_bytes,
			 sizeof(sd) - offsetof(struct zcopy_send, zc_bytes)) && ret >= 0)
		ret = -EFAULT;	/* checked writable above; only on a racing munmap */
out_put:
	zc_ubuf_complete(NULL, &s->ubuf, true);	/* drop our reference */
	s = NULL;
out:
	kvfree(bv);
	kvfree(segs);
	kvfree(iov);
	sockfd_put(sock);
	return ret;
}

static long zc_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	struct zc_ctx *ctx = file->private_data;
	void __user *uarg = (void __user *)arg;

	switch (cmd) {
	case ZCOPY_IOC_INFO:
		return zc_ioc_info(ctx, uarg);
	case ZCOPY_IOC_SETUP:
		return zc_ioc_setup(ctx, uarg);
	case ZCOPY_IOC_SEAL:
		return zc_ioc_range(ctx, uarg, true);
	case ZCOPY_IOC_UNSEAL:
		return zc_ioc_range(ctx, uarg, false);
	case ZCOPY_IOC_SEND:
		return zc_ioc_send(ctx, uarg);
	default:
		return -ENOTTY;
	}
}

static const struct file_operations zc_fops = {
	.owner = THIS_MODULE,
	.open = zc_open,
	.release = zc_release,
	.mmap = zc_mmap,
	.unlocked_ioctl = zc_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
	.llseek = noop_llseek,
};

static struct miscdevice zc_misc = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "zcopy",
	.fops = &zc_fops,
	.mode = 0666,
};

static int __init zc_init(void)
{
	int ret;

	zc_wq = alloc_workqueue("zcopy", WQ_UNBOUND, 0);
	if (!zc_wq)
		return -ENOMEM;
	ret = misc_register(&zc_misc);
	if (ret) {
		destroy_workqueue(zc_wq);
		return ret;
	}
	pr_info("loaded, ABI %u.%u, user_cap_mb=%u\n", ZCOPY_ABI_MAJOR,
		ZCOPY_ABI_MINOR, user_cap_mb);
	return 0;
}

static void __exit zc_exit(void)
{
	misc_deregister(&zc_misc);
	destroy_workqueue(zc_wq);	/* waits for a last cleanup still returning */
}

module_init(zc_init);
module_exit(zc_exit);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("zcopy: zero-copy send from a protected user arena");
MODULE_VERSION("1.1");
