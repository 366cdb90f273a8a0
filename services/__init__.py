"""mesos-stateful: stateful workloads on Apache Mesos as gRPC microservices."""
