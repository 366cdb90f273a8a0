"""A small read-only web console of the suite: instances, members, plans, recent events and a
plan's timeline, from the public gRPC API (through the gateway) only."""
