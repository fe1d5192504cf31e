/**
 * @file list.h
 * An intrusive doubly linked list with both ends, for least-recently-used orders (the cache's
 * shards, the per-client table): O(1) unlink, push to the front, and a tail to evict from. The
 * node lives inside the element; dg_list_entry() gets the element back.
 */
#ifndef DOHGATE_LIST_H
#define DOHGATE_LIST_H

#include <stddef.h>

struct dg_lnode {
    struct dg_lnode *prev, *next; /* prev: towards the front (most recent) */
};

struct dg_list {
    struct dg_lnode *head, *tail;
};

/** The element holding @p node (NULL for NULL). */
#define dg_list_entry(node, type, member)                                                          \
    ((node) ? (type *)(void *)((char *)(node)-offsetof(type, member)) : (type *)NULL)

static inline void dg_list_unlink(struct dg_list *l, struct dg_lnode *n)
{
    if (n->prev)
        n->prev->next = n->next;
    else
        l->head = n->next;
    if (n->next)
        n->next->prev = n->prev;
    else
        l->tail = n->prev;
    n->prev = n->next = NULL;
}

static inline void dg_list_push_front(struct dg_list *l, struct dg_lnode *n)
{
    n->prev = NULL;
    n->next = l->head;
    if (l->head)
        l->head->prev = n;
    else
        l->tail = n;
    l->head = n;
}

#endif
