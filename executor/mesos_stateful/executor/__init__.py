"""The Mesos executor: runs one member (process or Docker), checks its health, reports status."""
