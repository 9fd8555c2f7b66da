//! The Device Shadow service of AWS IoT, for the home network: `document`, the document
//! model (pure and synchronous, tested against AWS's documented documents), and `service`,
//! the requests and answers over MQTT with each shadow kept as a file.

pub mod document;
pub mod service;

pub use service::{Shadows, FILTERS};
