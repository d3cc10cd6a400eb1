//! roost-storage: durable state (issue #3). Not yet built.
