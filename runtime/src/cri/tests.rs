//! CRI service tests against fakes.
