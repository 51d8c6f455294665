//! Memory helpers behind safe interfaces, for crates that forbid unsafe code.
//!
//! - [`prefetch`]: a software prefetch taking a reference. The dataplane forbids unsafe
//!   code, and Rust's prefetch hint is still unstable (`core::hint::prefetch_read`,
//!   rust-lang/rust#146941); the x86 intrinsic takes a raw pointer.
//! - [`HugeAlloc`]: a global allocator that asks for transparent huge pages for every
//!   allocation of 2 MiB or more (the flow table, the express lane, the NAT tables),
//!   so that their random accesses do not each miss the TLB.

#![deny(unsafe_op_in_unsafe_fn)]

pub mod prefetch;

mod huge;
pub use huge::{HugeAlloc, HUGE_PAGE};
