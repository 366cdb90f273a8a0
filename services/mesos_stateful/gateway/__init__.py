"""The gateway: the public ``stateful.v1.InstanceService`` (validation, auth, desired state)."""
