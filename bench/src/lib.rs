//! imgate benchmarks: load generator and micro-benchmarks.
#![forbid(unsafe_code)]
