"""Test support: real etcd, state service, local cluster and workload processes for tests."""
