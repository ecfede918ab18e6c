"""The judge's statistics on numpy/scipy, pure: anytime-valid count tests (counts, rates,
bursts), latency bounds and the distribution test, sample-ratio mismatch, threshold checks,
classic fixed-horizon tests (advisory), and Wald's bounds (power). docs/statistics.md says what
each guarantees."""
