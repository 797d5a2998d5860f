//! imgate wire protocol v1: frame layout, protobuf messages, LZ4 compression; no I/O.
#![forbid(unsafe_code)]
