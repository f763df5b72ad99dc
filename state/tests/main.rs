//! The store's tests against real backends: one test binary, a module per
//! area.

mod conformance;
mod locks;
