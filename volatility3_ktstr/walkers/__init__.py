"""Walkers over a Reader and a Layout: local storage, sdt_alloc, arena, sched_ext."""
