"""``statefulctl``: the command line over the public gRPC API."""
