//! roost-cluster: clustering on ractor_cluster (issue #4). Not yet built.
