"""The state service (etcd-backed store, cache, watches) and StateClient."""
