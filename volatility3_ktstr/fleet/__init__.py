"""Fleet triage: many dumps in, one table and a report out (ktstr-triage; docs in README)."""
