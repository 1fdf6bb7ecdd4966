//! What switchyard-loadtest's two binaries share: the load tool
//! (`switchyard-loadtest`, `main.rs`) signs requests with [`signer`], and the
//! bare reference server (`switchyard-reference`, `bin/reference.rs`)
//! verifies them with the same code, so the two cannot disagree on a
//! signature.

#![forbid(unsafe_code)]

pub mod signer;
