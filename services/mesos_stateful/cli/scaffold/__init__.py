"""Templates and rendering of ``statefulctl new-workload``: a Python workload service skeleton."""
