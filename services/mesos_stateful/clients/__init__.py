"""Clients of the suite's own services, the layer between ``common`` and the services.

- ``state``: ``StateClient``, the one typed async client of the state service;
- ``records``: a kind's protobuf message, name and etcd key (shared with the state service);
- ``endpoints``: the addresses of the state service as a gRPC target;
- ``leadership``: leader election and fencing terms through the state service.

Layers (checked by import-linter in ``make lint``): api -> common -> clients -> the services.
"""
