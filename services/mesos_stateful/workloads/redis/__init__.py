"""The Redis workload service: master/replica Redis with promotion on master loss.

Kept import-light on purpose: the readiness probe (``python -m mesos_stateful.workloads.redis.probe``)
imports this package and should not pay for grpc.
"""
