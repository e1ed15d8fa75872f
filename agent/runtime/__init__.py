"""Runtime: the agent, its pipeline wiring, engine threads, worker processes, replay and privilege handling."""
