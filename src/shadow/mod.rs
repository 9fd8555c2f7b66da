//! The Device Shadow service of AWS IoT, for the home network (issue 12). So far its
//! document model, `document`: pure and synchronous, tested against AWS's documented
//! documents. Not yet wired to MQTT topics, to disk or to `get_thing_shadow()`: no
//! behaviour of `run` depends on it.

pub mod document;
